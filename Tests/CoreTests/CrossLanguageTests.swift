import CCharRNN
import Testing

/// Protects the forward and backward passes: the C core against the
/// independent Swift reference (Double), same weights, same batch.
@Suite("C core against the Swift reference")
struct CrossLanguageTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let vocabulary, hidden, layers, batch, steps: Int
        let keep: Float
        var testDescription: String { "V\(vocabulary) H\(hidden) L\(layers) B\(batch) T\(steps) keep \(keep)" }
    }

    static let cases = [
        Case(vocabulary: 7, hidden: 8, layers: 2, batch: 3, steps: 5, keep: 1),
        Case(vocabulary: 7, hidden: 8, layers: 2, batch: 3, steps: 5, keep: 0.5),
        Case(vocabulary: 11, hidden: 40, layers: 3, batch: 2, steps: 4, keep: 0.8),  // H split unevenly across threads
        Case(vocabulary: 4, hidden: 6, layers: 1, batch: 5, steps: 2, keep: 1),
    ]

    /// float32 against double: sums of up to a few hundred terms of size
    /// about 1 differ by ~1e-6, the fast exp adds ~2e-7 relative; a
    /// transposition or wrong index differs at 1e-2 or more.
    static let absolute = 2e-5
    static let relative = 2e-3

    @Test(
        "The core's loss, final state and every gradient match the Swift reference, for every cell",
        arguments: ReferenceModel.Cell.allCases, cases)
    func coreMatchesReference(_ cell: ReferenceModel.Cell, _ c: Case) {
        let harness = CoreHarness(
            vocabularySize: c.vocabulary, hiddenSize: c.hidden, layerCount: c.layers, batchSize: c.batch,
            steps: c.steps, cell: cell)
        let core = harness.run(keep: c.keep, seed: 1234)
        let expected = harness.reference().run(
            parameters: harness.parameters.map(Double.init), inputs: harness.inputs, targets: harness.targets,
            batchSize: c.batch, steps: c.steps, initialState: harness.initialState.map(Double.init),
            keep: Double(c.keep), seed: 1234)

        #expect(abs(Double(core.loss) - expected.loss) <= 1e-5 * max(1, expected.loss), "loss \(core.loss) vs \(expected.loss)")
        #expect(mismatches(core.state, expected.finalState, absolute: Self.absolute, relative: Self.relative).isEmpty)
        for tensor in harness.tensors() {
            let range = tensor.offset..<(tensor.offset + tensor.count)
            let bad = mismatches(Array(core.gradients[range]), Array(expected.gradients[range]), absolute: Self.absolute, relative: Self.relative)
            #expect(bad.isEmpty, "\(tensor.name): \(bad.count) of \(tensor.count) differ, e.g. index \(bad.first ?? -1)")
            let coreSum = weightedChecksum(core.gradients[range])
            let referenceSum = weightedChecksum(expected.gradients[range])
            #expect(abs(coreSum - referenceSum) <= 1e-4 * max(1, abs(referenceSum)), "\(tensor.name) checksum")
        }
    }

    @Test(
        "The tensor table uses PyTorch's names, shapes and order, and tiles the block exactly",
        arguments: [(ReferenceModel.Cell.lstm, 64), (.gru, 48), (.rnn, 16)])
    func tensorTableFollowsPyTorch(_ cell: ReferenceModel.Cell, rows: Int) {
        let harness = CoreHarness(vocabularySize: 83, hiddenSize: 16, layerCount: 2, batchSize: 1, steps: 1, cell: cell)
        let tensors = harness.tensors()
        let p = cell.rawValue
        #expect(
            tensors.map(\.name) == [
                "\(p).weight_ih_l0", "\(p).weight_hh_l0", "\(p).bias_ih_l0", "\(p).bias_hh_l0",
                "\(p).weight_ih_l1", "\(p).weight_hh_l1", "\(p).bias_ih_l1", "\(p).bias_hh_l1",
                "fc.weight", "fc.bias",
            ])
        #expect(tensors.map(\.shape) == [[rows, 83], [rows, 16], [rows], [rows], [rows, 16], [rows, 16], [rows], [rows], [83, 16], [83]])
        var offset = 0
        for tensor in tensors {
            #expect(tensor.offset == offset, "\(tensor.name) offset")
            #expect(tensor.count == tensor.shape.reduce(1, *))
            offset += tensor.count
        }
        #expect(offset == harness.parameterCount)
        let layout = harness.reference().layout
        #expect(layout.total == harness.parameterCount, "the reference and the core agree on the block size")
    }
}
