import CCharRNN
import CharRNN
import Foundation
import Testing

/// Protects what `charrnn trace` shows: the hidden values and cell state a
/// trace records after each character are the independent Swift model's
/// state after the same characters, for every cell.
@Suite("Traces against the reference model")
struct TraceReferenceTests {
    @Test("A trace's activations after each character equal the reference model's state, for every cell", arguments: ReferenceModel.Cell.allCases)
    func activationsMatchTheReference(cell: ReferenceModel.Cell) throws {
        let text = Array("ab\"ca\" b.".unicodeScalars)
        let vocabulary = try Vocabulary(scalars: Array(Set(text)).sorted { $0.value < $1.value })
        let harness = CoreHarness(vocabularySize: vocabulary.count, hiddenSize: 5, layerCount: 2, batchSize: 1, steps: 1, cell: cell)
        let configuration = ModelConfiguration(
            vocabularySize: vocabulary.count, hiddenSize: 5, layerCount: 2, cell: Cell(rawValue: cell.rawValue)!)
        let model = try Model(configuration: configuration, parameters: harness.parameters, purpose: .inference)
        let tokens = try vocabulary.encode(text)
        var trace = try TextTrace(generator: TextGenerator(model: model, vocabulary: vocabulary), tokens: tokens, options: TraceOptions(units: .all))
        let reference = harness.reference()
        let parameters = harness.parameters.map(Double.init)
        for length in 1...tokens.count {
            let traced = try #require(try trace.next())
            let expected = reference.run(
                parameters: parameters, inputs: Array(tokens[0..<length]), targets: [Int32](repeating: 0, count: length), batchSize: 1,
                steps: length, initialState: nil, keep: 1, seed: 0, wantGradients: false
            ).finalState
            // finalState is [S, L, 1, H]: every layer's h, then (LSTM) every c.
            let recorded: [Float] = Array(traced.hidden.joined()) + Array(traced.cell.joined())
            #expect(recorded.count == expected.count)
            #expect(mismatches(Array(recorded), expected, absolute: 1e-5, relative: 1e-4).isEmpty, "after \(length) characters")
        }
    }
}
