import CCharRNN
import Testing

/// Protects the backward pass: analytic gradients against central differences.
@Suite("Gradients")
struct GradientTests {
    /// Central differences of the core's own float32 loss, for every parameter
    /// of a 2-layer model with a non-zero initial state and seeded dropout.
    /// Step 1e-2; float32 loss resolution and the O(step²) error make
    /// |numeric - analytic| <= 1e-3 + 2e-2 |analytic| the stated tolerance;
    /// a wrong sign, index or factor breaks it by orders of magnitude.
    @Test(
        "Every tensor's analytic gradient matches central differences of the loss, for every cell",
        arguments: ReferenceModel.Cell.allCases)
    func coreGradientMatchesNumerical(_ cell: ReferenceModel.Cell) {
        var harness = CoreHarness(vocabularySize: 6, hiddenSize: 5, layerCount: 2, batchSize: 3, steps: 4, cell: cell)
        let (_, _, analytic) = harness.run(keep: 0.7, seed: 99)
        let step: Float = 1e-2
        var failures: [String] = []
        for tensor in harness.tensors() {
            var worst = 0.0
            for index in tensor.offset..<(tensor.offset + tensor.count) {
                let original = harness.parameters[index]
                harness.parameters[index] = original + step
                let plus = harness.run(keep: 0.7, seed: 99, gradients: false).loss
                harness.parameters[index] = original - step
                let minus = harness.run(keep: 0.7, seed: 99, gradients: false).loss
                harness.parameters[index] = original
                let numeric = Double(plus - minus) / Double(2 * step)
                let error = abs(numeric - Double(analytic[index]))
                if error > 1e-3 + 2e-2 * abs(Double(analytic[index])) {
                    failures.append("\(tensor.name)[\(index - tensor.offset)]: numeric \(numeric) analytic \(analytic[index])")
                }
                worst = max(worst, abs(Double(analytic[index])))
            }
            #expect(worst > 1e-4, "\(tensor.name) has an all-zero gradient; the check would be vacuous")
        }
        #expect(failures.isEmpty, "\(failures.count) mismatches, first: \(failures.prefix(5))")
    }

    /// The Swift reference's own gradient in double precision, so the
    /// cross-language check compares against something known to be right.
    @Test(
        "The Swift reference's gradient matches central differences in double precision, for every cell",
        arguments: ReferenceModel.Cell.allCases)
    func referenceGradientMatchesNumerical(_ cell: ReferenceModel.Cell) {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 3, layerCount: 2, batchSize: 2, steps: 3, cell: cell)
        let reference = harness.reference()
        var parameters = harness.parameters.map(Double.init)
        let state = harness.initialState.map(Double.init)
        func loss(_ p: [Double]) -> Double {
            reference.run(
                parameters: p, inputs: harness.inputs, targets: harness.targets, batchSize: 2, steps: 3,
                initialState: state, keep: 0.6, seed: 7, wantGradients: false
            ).loss
        }
        let analytic = reference.run(
            parameters: parameters, inputs: harness.inputs, targets: harness.targets,
            batchSize: 2, steps: 3, initialState: state, keep: 0.6, seed: 7
        ).gradients
        var worstError = 0.0
        for index in parameters.indices {
            let original = parameters[index]
            parameters[index] = original + 1e-6
            let plus = loss(parameters)
            parameters[index] = original - 1e-6
            let minus = loss(parameters)
            parameters[index] = original
            worstError = max(worstError, abs((plus - minus) / 2e-6 - analytic[index]))
        }
        #expect(worstError < 1e-7, "largest gradient error \(worstError)")
    }
}
