import CharRNN
import Testing

/// Protects the notebook's batching and train/validation split.
@Suite("Batching")
struct BatchingTests {
    /// Tokens 0..<41 with B = 2, T = 5: n_batches = 41 // 10 = 4, so each of
    /// the 2 rows holds 20 characters (row 0: 0..19, row 1: 20..39; targets
    /// shifted by one); int(4 * 0.9) = 3 training blocks, 1 validation block.
    @Test("Streams, blocks and the split match the notebook's split_data by hand")
    func matchesHandComputedSplit() throws {
        let batches = try BatchedCorpus(tokens: (0..<41).map(Int32.init), batchSize: 2, steps: 5, validationFraction: 0.1)
        #expect(batches.batchCount == 4)
        #expect(batches.trainingBatchCount == 3)
        #expect(batches.validationBatchCount == 1)
        let first = batches.trainingBatch(0)
        #expect(first.inputs == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24])
        #expect(first.targets == [1, 2, 3, 4, 5, 21, 22, 23, 24, 25])
        let second = batches.trainingBatch(1)
        #expect(second.inputs == [5, 6, 7, 8, 9, 25, 26, 27, 28, 29])
        #expect(second.targets == [6, 7, 8, 9, 10, 26, 27, 28, 29, 30])
        let validation = batches.validationBatch(0)
        #expect(validation.inputs == [15, 16, 17, 18, 19, 35, 36, 37, 38, 39])
        #expect(validation.targets == [16, 17, 18, 19, 20, 36, 37, 38, 39, 40])
    }

    @Test("The split truncates as Python's int(): 198 blocks give 178 training, as for Anna Karenina")
    func splitTruncatesLikePython() throws {
        let batches = try BatchedCorpus(tokens: [Int32](repeating: 0, count: 1_985_223), batchSize: 100, steps: 100, validationFraction: 0.1)
        #expect(batches.batchCount == 198)
        #expect(batches.trainingBatchCount == 178)
        #expect(batches.validationBatchCount == 20)
    }

    @Test("A text of exactly n blocks uses one block fewer, so every input has a target")
    func exactMultipleDropsABlock() throws {
        let batches = try BatchedCorpus(tokens: (0..<40).map(Int32.init), batchSize: 2, steps: 5, validationFraction: 0.1)
        #expect(batches.batchCount == 3)
        #expect(batches.validationBatch(0).targets.last == 30)  // row 1 is 15..29; its last target is 30
    }

    @Test("A text too short for one training and one validation batch says how long it must be")
    func tooShortSaysRequiredLength() {
        #expect(BatchedCorpus.minimumLength(batchSize: 100, steps: 100, validationFraction: 0.1) == 20_001)
        #expect(throws: BatchingError.corpusTooShort(length: 20_000, required: 20_001, batchSize: 100, steps: 100)) {
            try BatchedCorpus(tokens: [Int32](repeating: 0, count: 20_000), batchSize: 100, steps: 100, validationFraction: 0.1)
        }
        #expect(
            BatchingError.corpusTooShort(length: 812, required: 20_001, batchSize: 100, steps: 100).description
                .contains("at least 20001"))
    }

    @Test("Zero or negative sizes and a fraction outside (0, 1) are refused")
    func invalidSizes() {
        let tokens = [Int32](repeating: 0, count: 1000)
        #expect(throws: BatchingError.invalidBatchSize(0)) { try BatchedCorpus(tokens: tokens, batchSize: 0, steps: 5, validationFraction: 0.1) }
        #expect(throws: BatchingError.invalidSteps(-2)) { try BatchedCorpus(tokens: tokens, batchSize: 2, steps: -2, validationFraction: 0.1) }
        #expect(throws: BatchingError.invalidValidationFraction(1)) {
            try BatchedCorpus(tokens: tokens, batchSize: 2, steps: 5, validationFraction: 1)
        }
        #expect(throws: BatchingError.batchShapeMismatch(expected: 6, inputs: 5, targets: 6)) {
            try Batch(batchSize: 2, steps: 3, inputs: [0, 0, 0, 0, 0], targets: [0, 0, 0, 0, 0, 0])
        }
    }
}
