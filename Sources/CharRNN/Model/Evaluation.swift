import Foundation

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

    /// The text as one stream from a zero state, as `wholeText`, but
    /// through generation's step (one character at a time) with its
    /// products in `precision`: the loss of what a generator in that
    /// precision predicts. In fp32 it equals `wholeText` to about 1e-6
    /// relative (the training pass sums its products in another order).
    public static func stepped(of model: Model, tokens: [Int32], precision: Precision) throws(ModelError) -> Result {
        guard tokens.count >= 2 else { return Result(meanLoss: .nan, predictions: 0) }
        var session = try InferenceSession(weights: InferenceWeights(model: model, precision: precision), streams: 1, options: SamplingOptions())
        var total = 0.0
        for index in 0..<(tokens.count - 1) {
            try session.feed([tokens[index]])
            total -= ScoreDistribution(logits: session.logits[...]).logprob(of: Int(tokens[index + 1]))
        }
        let predictions = tokens.count - 1
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
