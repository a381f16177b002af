/// Measuring a model on a text, without dropout.
public enum Evaluation {
    /// The result of an evaluation.
    public struct Result: Sendable, Equatable {
        /// Mean cross-entropy per predicted character, natural log.
        public let meanLoss: Double
        /// Characters predicted.
        public let predictions: Int
        /// The same loss in bits per character.
        public var bitsPerCharacter: Double { meanLoss / 0.693_147_180_559_945_3 }
    }

    /// The text as one stream from a zero state: each character predicted
    /// from all before it (`tokens.count - 1` predictions), processed in
    /// chunks of `chunk` steps with the state carried across them.
    public static func wholeText(of model: Model, tokens: [Int32], chunk: Int = 1000) throws(ModelError) -> Result {
        precondition(chunk >= 1, "chunk must be positive")
        guard tokens.count >= 2 else { return Result(meanLoss: .nan, predictions: 0) }
        var state = RecurrentState(configuration: model.configuration, batchSize: 1)
        var total = 0.0
        var start = 0
        let predictions = tokens.count - 1
        while start < predictions {
            let steps = min(chunk, predictions - start)
            let batch = Batch(
                unchecked: 1, steps: steps, inputs: Array(tokens[start..<start + steps]),
                targets: Array(tokens[start + 1...start + steps]))
            total += Double(try model.loss(on: batch, state: &state)) * Double(steps)
            start += steps
        }
        return Result(meanLoss: total / Double(predictions), predictions: predictions)
    }

    /// The validation split of `batches`, as training reports it: a zero
    /// state carried through the validation batches.
    public static func validationSplit(of model: Model, batches: BatchedCorpus) throws(ModelError) -> Result {
        let loss = try Trainer.validationLoss(of: model, on: batches)
        return Result(
            meanLoss: Double(loss),
            predictions: batches.validationBatchCount * batches.batchSize * batches.steps)
    }
}
