/// One batch: B streams of T steps, inputs and next-character targets,
/// each `[B, T]` row-major (row b is stream b).
public struct Batch: Sendable, Equatable {
    /// Number of streams (B).
    public let batchSize: Int
    /// Steps per stream (T).
    public let steps: Int
    /// Input indices, `[B, T]` row-major.
    public let inputs: [Int32]
    /// Target indices (each input's next character), `[B, T]` row-major.
    public let targets: [Int32]

    /// A batch from `[B, T]` row-major inputs and targets. Throws unless both
    /// hold exactly `batchSize * steps` indices and the sizes are positive.
    public init(batchSize: Int, steps: Int, inputs: [Int32], targets: [Int32]) throws(BatchingError) {
        guard batchSize >= 1 else { throw .invalidBatchSize(batchSize) }
        guard steps >= 1 else { throw .invalidSteps(steps) }
        guard inputs.count == batchSize * steps, targets.count == batchSize * steps else {
            throw .batchShapeMismatch(expected: batchSize * steps, inputs: inputs.count, targets: targets.count)
        }
        self.init(unchecked: batchSize, steps: steps, inputs: inputs, targets: targets)
    }

    init(unchecked batchSize: Int, steps: Int, inputs: [Int32], targets: [Int32]) {
        self.batchSize = batchSize
        self.steps = steps
        self.inputs = inputs
        self.targets = targets
    }
}

/// The original notebook's batching (`split_data` and `get_batch`), exactly:
///
/// - `batchCount = len // (B*T)`; `x = chars[:batchCount*B*T]`, `y = chars[1:batchCount*B*T+1]`;
/// - `x` and `y` are split into B equal rows: B long streams, each
///   `batchCount * T` characters;
/// - the first `int(batchCount * (1 - validationFraction))` blocks of T
///   columns are training, the rest validation;
/// - batch k of a split is columns `k*T ..< (k+1)*T` of every row.
///
/// One corner differs: when the text is exactly `batchCount*B*T` long, the
/// notebook's `y` is one character short and numpy fails; here one fewer
/// block is used instead.
public struct BatchedCorpus: Sendable {
    /// Streams per batch (B).
    public let batchSize: Int
    /// Steps per batch (T).
    public let steps: Int
    /// Blocks of T columns in all (the notebook's `n_batches`).
    public let batchCount: Int
    /// Blocks used for training (`int(n_batches * split_frac)`).
    public let trainingBatchCount: Int
    /// Blocks used for validation.
    public var validationBatchCount: Int { batchCount - trainingBatchCount }

    private let tokens: [Int32]
    private var rowLength: Int { batchCount * steps }

    /// Splits encoded text into streams and batches.
    /// - Parameters:
    ///   - tokens: the encoded corpus.
    ///   - batchSize: streams per batch (B), at least 1.
    ///   - steps: characters per stream per batch (T), at least 1.
    ///   - validationFraction: share of blocks held out, in (0, 1).
    /// - Throws: `BatchingError` when a size is out of range or the text is
    ///   too short for one training and one validation batch.
    public init(tokens: [Int32], batchSize: Int, steps: Int, validationFraction: Double) throws(BatchingError) {
        guard batchSize >= 1 else { throw .invalidBatchSize(batchSize) }
        guard steps >= 1 else { throw .invalidSteps(steps) }
        guard validationFraction > 0, validationFraction < 1 else {
            throw .invalidValidationFraction(validationFraction)
        }
        let slice = batchSize.multipliedReportingOverflow(by: steps)
        guard !slice.overflow else { throw .invalidBatchSize(batchSize) }
        var blocks = tokens.count / slice.partialValue
        if blocks > 0 && blocks * slice.partialValue + 1 > tokens.count { blocks -= 1 }
        let training = Int(Double(blocks) * (1 - validationFraction))
        guard training >= 1, blocks - training >= 1 else {
            throw .corpusTooShort(
                length: tokens.count,
                required: BatchedCorpus.minimumLength(
                    batchSize: batchSize, steps: steps, validationFraction: validationFraction),
                batchSize: batchSize, steps: steps)
        }
        self.batchSize = batchSize
        self.steps = steps
        self.batchCount = blocks
        self.trainingBatchCount = training
        self.tokens = tokens
    }

    /// The shortest text (in characters) that gives one training and one
    /// validation batch.
    public static func minimumLength(batchSize: Int, steps: Int, validationFraction: Double) -> Int {
        var blocks = 2
        while true {
            let training = Int(Double(blocks) * (1 - validationFraction))
            if training >= 1 && blocks - training >= 1 { break }
            blocks += 1
        }
        return blocks * batchSize * steps + 1
    }

    /// Training batch `index` in `0..<trainingBatchCount`.
    public func trainingBatch(_ index: Int) -> Batch {
        precondition(index >= 0 && index < trainingBatchCount, "training batch index out of range")
        return batch(block: index)
    }

    /// Validation batch `index` in `0..<validationBatchCount`.
    public func validationBatch(_ index: Int) -> Batch {
        precondition(index >= 0 && index < validationBatchCount, "validation batch index out of range")
        return batch(block: trainingBatchCount + index)
    }

    private func batch(block: Int) -> Batch {
        var inputs = [Int32](repeating: 0, count: batchSize * steps)
        var targets = inputs
        let column = block * steps
        tokens.withUnsafeBufferPointer { text in
            for row in 0..<batchSize {
                let start = row * rowLength + column
                for t in 0..<steps {
                    inputs[row * steps + t] = text[start + t]
                    targets[row * steps + t] = text[start + t + 1]
                }
            }
        }
        return Batch(unchecked: batchSize, steps: steps, inputs: inputs, targets: targets)
    }
}

/// Why a corpus could not be batched.
public enum BatchingError: Error, Equatable, CustomStringConvertible {
    case invalidBatchSize(Int)
    case invalidSteps(Int)
    case invalidValidationFraction(Double)
    case corpusTooShort(length: Int, required: Int, batchSize: Int, steps: Int)
    case batchShapeMismatch(expected: Int, inputs: Int, targets: Int)

    public var description: String {
        switch self {
        case .invalidBatchSize(let value): return "batch size must be at least 1 (got \(value))"
        case .invalidSteps(let value): return "steps must be at least 1 (got \(value))"
        case .invalidValidationFraction(let value):
            return "validation fraction must be between 0 and 1, exclusive (got \(value))"
        case .corpusTooShort(let length, let required, let batchSize, let steps):
            return "corpus has \(length) characters; batch \(batchSize) × steps \(steps) needs at least "
                + "\(required) for one training and one validation batch"
        case .batchShapeMismatch(let expected, let inputs, let targets):
            return "a batch needs \(expected) inputs and targets; got \(inputs) and \(targets)"
        }
    }
}
