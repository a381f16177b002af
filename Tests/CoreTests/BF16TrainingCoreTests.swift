import CCharRNN
import Foundation
import Testing

/// Protects training with bf16 products (charrnn_forward_bf16,
/// charrnn_backward_bf16): every product of both passes rounds its inputs
/// to bf16 and nothing else does (the Swift reference, told to round the
/// same inputs, agrees with the core far more closely than the fp32
/// reference does), the result stays within bf16's reach of fp32's, and it
/// does not depend on the thread count.
@Suite("bf16 training passes in the core")
struct BF16TrainingCoreTests {
    typealias Case = CrossLanguageTests.Case

    static let cases = [
        Case(vocabulary: 7, hidden: 8, layers: 2, batch: 3, steps: 5, keep: 0.5),
        Case(vocabulary: 11, hidden: 21, layers: 3, batch: 2, steps: 4, keep: 1),  // odd widths: a padded pair in every product
        Case(vocabulary: 5, hidden: 6, layers: 1, batch: 17, steps: 3, keep: 0.8),  // a block of rows split between work blocks
    ]

    /// The reference's product inputs rounded as the core rounds them: to
    /// float, then to bf16.
    static func bf16(_ x: Double) -> Double { Double(BF16CoreTests.bf16(Float(x))) }

    /// How far the core is from a reference: the loss's difference, and
    /// the median of the gradients' differences, both in units of
    /// the reference's magnitude. The median, not the largest: an input
    /// whose fp32 value in the core and double value in the reference lie
    /// on either side of a bf16 midpoint rounds to the other neighbour (a
    /// few such flips are expected, more where the build fuses no
    /// multiply-adds), and it moves the gradients downstream of it.
    static func distance(_ core: (loss: Float, state: [Float], gradients: [Float]), _ reference: ReferenceModel.Result) -> Double {
        let scale = max(reference.gradients.map(abs).max() ?? 0, 1e-30)
        let differences = zip(core.gradients, reference.gradients).map { abs(Double($0) - $1) / scale }.sorted()
        let typical = differences.isEmpty ? 0 : differences[differences.count / 2]
        return max(abs(Double(core.loss) - reference.loss) / max(reference.loss, 1), typical)
    }

    @Test(
        "bf16 passes round exactly the products' inputs: the reference rounding them agrees several times closer than fp32's, for every cell",
        arguments: ReferenceModel.Cell.allCases, cases)
    func bf16PassesRoundEveryProductInput(_ cell: ReferenceModel.Cell, _ c: Case) {
        let harness = CoreHarness(
            vocabularySize: c.vocabulary, hiddenSize: c.hidden, layerCount: c.layers, batchSize: c.batch,
            steps: c.steps, cell: cell)
        let core = harness.run(keep: c.keep, seed: 99, bf16: true)
        func reference(_ product: (Double) -> Double) -> ReferenceModel.Result {
            harness.reference().run(
                parameters: harness.parameters.map(Double.init), inputs: harness.inputs, targets: harness.targets,
                batchSize: c.batch, steps: c.steps, initialState: harness.initialState.map(Double.init),
                keep: Double(c.keep), seed: 99, product: product)
        }
        let roundedReference = reference(Self.bf16)
        let rounded = Self.distance(core, roundedReference)
        let exact = Self.distance(core, reference { $0 })
        // fp32 sums against double ones (about 1e-7) and the few flipped
        // roundings; fp32's reference is 4e-5 to 3e-3 away.
        #expect(rounded < 1e-4, "bf16 core against the bf16 reference: \(rounded)")
        // At least 4x in every build: above 1000x where the build fuses
        // multiply-adds; 6x for the 3-layer LSTM case in one that does not
        // (target clones off, as ThreadSanitizer's), where more inputs flip.
        #expect(exact > 4 * rounded, "against the fp32 reference \(exact), the bf16 one \(rounded): the products are not all rounded")
        #expect(exact < 5e-2, "bf16 stays within its rounding of fp32: \(exact)")
        // And the final state, which the recurrent products alone reach.
        let state = zip(core.state, roundedReference.finalState).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(state < 5e-4, "final state against the bf16 reference: \(state)")
    }

    @Test("bf16 passes give the same bits with 1, 2 and 4 threads, at sizes that split unevenly", arguments: ReferenceModel.Cell.allCases)
    func bf16PassesIgnoreTheThreadCount(_ cell: ReferenceModel.Cell) {
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 100, layerCount: 2, batchSize: 30, steps: 6, cell: cell)
        func run(threads: Int32) -> [UInt32] {
            onThread(withTeamOf: threads) {
                let out = harness.run(keep: 0.5, seed: 7, bf16: true)
                return [out.loss.bitPattern] + out.state.map(\.bitPattern) + out.gradients.map(\.bitPattern)
            }
        }
        let one = run(threads: 1)
        #expect(run(threads: 2) == one)
        #expect(run(threads: 4) == one)
        #expect(harness.run(keep: 0.5, seed: 7).gradients.map(\.bitPattern) != Array(one.suffix(harness.parameterCount)), "bf16 is not fp32")
    }

    @Test("The bf16 activation block is the fp32 one and the products' room; a bad shape is refused")
    func bf16ActivationCount() {
        let harness = CoreHarness(vocabularySize: 83, hiddenSize: 64, layerCount: 2, batchSize: 10, steps: 20)
        var config = harness.config
        var fp32 = 0
        var bf16 = 0
        #expect(charrnn_activation_count(&config, 10, 20, &fp32) == CHARRNN_OK)
        #expect(charrnn_activation_count_bf16(&config, 10, 20, &bf16) == CHARRNN_OK)
        // The widest product: dW_ih's op(A), dG^T [4H, N], and op(B), Y^T [H, N] packed, in bf16 (two to a float).
        let n = 10 * 20
        #expect(bf16 >= fp32 - 4 * 64 * 64 + (4 * 64 * n + 64 * n) / 2, "fp32 \(fp32), bf16 \(bf16)")
        #expect(charrnn_activation_count_bf16(&config, 0, 20, &bf16) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_activation_count_bf16(&config, 10, 20, nil) == CHARRNN_ERR_NULL_POINTER)
    }
}
