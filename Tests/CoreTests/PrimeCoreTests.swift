import CCharRNN
import Foundation
import Testing

/// Protects feeding a prime in one call: the state and scores it leaves are
/// stepping's, and they do not depend on how the prime is cut into calls or
/// on the thread count (the server's cached prime states rely on that).
@Suite("Priming in the core")
struct PrimeCoreTests {
    /// One stream's state and scores after `tokens` fed one charrnn_step at a time.
    static func stepped(_ harness: CoreHarness, _ tokens: [Int32]) -> (state: [Float], logits: [Float]) {
        var config = harness.config
        var state = [Float](repeating: 0, count: harness.initialState.count)
        var scratchCount = 0
        _ = charrnn_step_scratch_count(&config, 1, &scratchCount)
        var scratch = [Float](repeating: 0, count: scratchCount)
        var logits = [Float](repeating: 0, count: Int(config.vocab_size))
        for token in tokens {
            let status = charrnn_step(&config, harness.parameters, 1, [token], &state, &scratch, &logits)
            precondition(status == CHARRNN_OK, "charrnn_step: \(status)")
        }
        return (state, logits)
    }

    /// The state and scores after `tokens` fed through charrnn_prime in
    /// calls of the given lengths (the scores from the last call), on a
    /// thread of its own whose OpenMP team has `threads` threads.
    static func primed(_ harness: CoreHarness, _ tokens: [Int32], cuts: [Int], threads: Int32) -> (state: [Float], logits: [Float]) {
        onThread(withTeamOf: threads) {
            var config = harness.config
            var state = [Float](repeating: 0, count: harness.initialState.count)
            var scratchCount = 0
            precondition(charrnn_prime_scratch_count(&config, Int32(cuts.max()!), &scratchCount) == CHARRNN_OK)
            // NaN: the prime must write every scratch value it reads.
            var scratch = [Float](repeating: .nan, count: scratchCount)
            var logits = [Float](repeating: .nan, count: Int(config.vocab_size))
            var start = 0
            for (index, length) in cuts.enumerated() {
                let piece = Array(tokens[start..<start + length])
                let last = index == cuts.count - 1
                let status =
                    last
                    ? charrnn_prime(&config, harness.parameters, Int32(length), piece, &state, &scratch, &logits)
                    : charrnn_prime(&config, harness.parameters, Int32(length), piece, &state, &scratch, nil)
                precondition(status == CHARRNN_OK, "charrnn_prime: \(status)")
                start += length
            }
            precondition(start == tokens.count, "the cuts cover the prime")
            return (state, logits)
        }
    }

    static func tokens(_ count: Int, vocabularySize: Int) -> [Int32] {
        (0..<count).map { Int32(($0 * 11 + $0 / 3 + 2) % vocabularySize) }
    }

    @Test(
        "A prime fed in one call leaves the state and scores of stepping it, for every cell (to the bit with one layer)",
        arguments: ReferenceModel.Cell.allCases, [1, 3])
    func primeMatchesStepping(_ cell: ReferenceModel.Cell, layers: Int) {
        // H = 37: the products' k run past the last full eight.
        let harness = CoreHarness(vocabularySize: 11, hiddenSize: 37, layerCount: layers, batchSize: 1, steps: 1, cell: cell)
        let tokens = Self.tokens(45, vocabularySize: 11)
        let stepped = Self.stepped(harness, tokens)
        let primed = Self.primed(harness, tokens, cuts: [45], threads: 2)
        if layers == 1 {
            // Layer 0's input term is a table row in both: the same arithmetic in the same order.
            #expect(primed.state == stepped.state)
            #expect(primed.logits == stepped.logits)
        } else {
            #expect(mismatches(primed.state, stepped.state.map(Double.init), absolute: 1e-6, relative: 1e-5).isEmpty)
            #expect(mismatches(primed.logits, stepped.logits.map(Double.init), absolute: 1e-6, relative: 1e-5).isEmpty)
            #expect(primed.state != Self.stepped(harness, Array(tokens.dropLast())).state, "the last character is in the state")
        }
    }

    @Test("A prime cut into calls anywhere, on one thread or two, gives the bits of one call", arguments: ReferenceModel.Cell.allCases)
    func cutsAndThreadsGiveTheSameBits(_ cell: ReferenceModel.Cell) {
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 50, layerCount: 2, batchSize: 1, steps: 1, cell: cell)
        let tokens = Self.tokens(77, vocabularySize: 13)
        let whole = Self.primed(harness, tokens, cuts: [77], threads: 2)
        for (cuts, threads) in [([77], Int32(1)), ([1, 76], 2), ([76, 1], 1), ([33, 1, 2, 41], 2), ([64, 13], 3)] {
            let other = Self.primed(harness, tokens, cuts: cuts, threads: threads)
            #expect(other.state == whole.state, "cut \(cuts), \(threads) threads")
            #expect(other.logits == whole.logits, "cut \(cuts), \(threads) threads")
        }
    }

    @Test("A prime with a bad token, length or pointer returns a status and leaves the state alone")
    func primeBadArguments() {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 4, layerCount: 1, batchSize: 1, steps: 1)
        var config = harness.config
        var scratchCount = 0
        #expect(charrnn_prime_scratch_count(&config, 0, &scratchCount) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_prime_scratch_count(&config, 2, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_prime_scratch_count(&config, 2, &scratchCount) == CHARRNN_OK)
        var state = [Float](repeating: 0.25, count: 8)
        var scratch = [Float](repeating: 0, count: scratchCount)
        var logits = [Float](repeating: 0, count: 5)
        #expect(charrnn_prime(&config, harness.parameters, 2, [1, 5], &state, &scratch, &logits) == CHARRNN_ERR_TOKEN_OUT_OF_RANGE)
        #expect(charrnn_prime(&config, harness.parameters, 0, [1], &state, &scratch, &logits) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_prime(&config, harness.parameters, 1, nil, &state, &scratch, &logits) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_prime(&config, nil, 1, [1], &state, &scratch, &logits) == CHARRNN_ERR_NULL_POINTER)
        #expect(state.allSatisfy { $0 == 0.25 })
    }
}
