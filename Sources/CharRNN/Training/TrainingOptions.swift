/// Everything that defines a training run. The defaults are the original
/// notebook's: 2 layers of 512, batch 100 × 100 steps, 20 epochs, Adam
/// 0.001, keep probability 0.5, clip 5, validation every 200 iterations.
///
/// Stored in every checkpoint's metadata under the coding keys below
/// (`hidden_size`, `num_layers`, …; see docs/CHECKPOINT.md).
public struct TrainingOptions: Sendable, Equatable, Codable {
    /// The recurrent cell of every layer.
    public var cell: Cell = .lstm
    /// Units per recurrent layer.
    public var hiddenSize = 512
    /// Stacked recurrent layers.
    public var layerCount = 2
    /// Streams per batch (B).
    public var batchSize = 100
    /// Steps per batch (T), the truncated back-propagation length.
    public var steps = 100
    /// Passes over the training split.
    public var epochs = 20
    /// Adam's step size.
    public var learningRate: Float = 0.001
    /// Dropout keep probability on every layer's output, in (0, 1].
    public var keepProbability: Float = 0.5
    /// Global gradient-norm clip.
    public var gradientClip: Float = 5
    /// Share of the batch blocks held out for validation, in (0, 1).
    public var validationFraction = 0.1
    /// Validate and write a checkpoint every this many iterations (and at the end).
    public var saveEvery = 200
    /// Seeds the initial weights and the dropout masks.
    public var seed: UInt64 = 0
    /// Stop after this many iterations in all (counted from the start of the run), if set.
    public var maxIterations: Int? = nil
    /// Keep only this many periodic checkpoints, those with the lowest
    /// validation loss, besides the latest (`best.safetensors` is always
    /// kept); all when `nil`.
    public var keepBest: Int? = nil

    /// The notebook's defaults.
    public init() {}

    /// The options, each named as its property (`hiddenSize`, …), for errors
    /// that say which one is out of range.
    public enum Option: String, Sendable, CaseIterable {
        case cell, hiddenSize, layerCount, batchSize, steps, epochs, learningRate, keepProbability, gradientClip
        case validationFraction, saveEvery, seed, maxIterations, keepBest
    }

    /// The largest number of characters in one batch (B × T): keeps every
    /// dimension the core hands to BLAS far inside 32 bits.
    public static let maximumBatchCharacters = 1 << 26

    /// Throws `TrainingError.invalidOption` naming the first value out of range.
    public func validate() throws(TrainingError) {
        func require(_ condition: Bool, _ option: Option, _ value: CustomStringConvertible, _ requirement: String) throws(TrainingError) {
            if !condition { throw .invalidOption(option, value: value.description, requirement: requirement) }
        }
        try require((1...16384).contains(hiddenSize), .hiddenSize, hiddenSize, "between 1 and 16384")
        try require((1...64).contains(layerCount), .layerCount, layerCount, "between 1 and 64")
        try require(batchSize >= 1, .batchSize, batchSize, "at least 1")
        try require(steps >= 1, .steps, steps, "at least 1")
        if batchSize > Self.maximumBatchCharacters / steps {
            throw .batchTooLarge(batchSize: batchSize, steps: steps, limit: Self.maximumBatchCharacters)
        }
        try require(epochs >= 1, .epochs, epochs, "at least 1")
        try require(learningRate > 0 && learningRate.isFinite, .learningRate, learningRate, "positive and finite")
        try require(keepProbability > 0 && keepProbability <= 1, .keepProbability, keepProbability, "in (0, 1]")
        try require(gradientClip > 0 && gradientClip.isFinite, .gradientClip, gradientClip, "positive and finite")
        try require(validationFraction > 0 && validationFraction < 1, .validationFraction, validationFraction,
                    "between 0 and 1, exclusive")
        try require(saveEvery >= 1, .saveEvery, saveEvery, "at least 1")
        if let maxIterations { try require(maxIterations >= 1, .maxIterations, maxIterations, "at least 1") }
        if let keepBest { try require(keepBest >= 1, .keepBest, keepBest, "at least 1") }
    }

    /// Iterations the run makes in all for `trainingBatches` batches per
    /// epoch: all epochs, or `maxIterations` if fewer. Saturates instead of
    /// overflowing, so any epoch count is safe.
    public func totalIterations(trainingBatches: Int) -> Int {
        let all = epochs.multipliedReportingOverflow(by: trainingBatches)
        return min(all.overflow ? Int.max : all.partialValue, maxIterations ?? Int.max)
    }

    /// The names under which the options are stored in checkpoint metadata.
    enum CodingKeys: String, CodingKey {
        case cell, hiddenSize = "hidden_size", layerCount = "num_layers", batchSize = "batch_size", steps, epochs
        case learningRate = "learning_rate", keepProbability = "keep_prob", gradientClip = "grad_clip"
        case validationFraction = "val_frac", saveEvery = "save_every", seed
        case maxIterations = "max_iterations", keepBest = "keep"
    }

    /// The metadata key an option is stored under.
    static func metadataKey(_ option: Option) -> String {
        let key: CodingKeys
        switch option {
        case .cell: key = .cell
        case .hiddenSize: key = .hiddenSize
        case .layerCount: key = .layerCount
        case .batchSize: key = .batchSize
        case .steps: key = .steps
        case .epochs: key = .epochs
        case .learningRate: key = .learningRate
        case .keepProbability: key = .keepProbability
        case .gradientClip: key = .gradientClip
        case .validationFraction: key = .validationFraction
        case .saveEvery: key = .saveEvery
        case .seed: key = .seed
        case .maxIterations: key = .maxIterations
        case .keepBest: key = .keepBest
        }
        return key.rawValue
    }

    /// The options as checkpoint metadata entries.
    var metadata: [String: String] { MetadataCoding.encode(self) }

    /// The options a checkpoint was trained with, read from its metadata and
    /// checked: every entry present and parsable, every value in range.
    /// Throws `CheckpointProblem.invalidMetadataValue` naming the first entry
    /// that is not (`Checkpoint.trainingOptions` holds the result for a
    /// checkpoint that can resume).
    /// Checkpoints written before there was a choice of cell have no `cell`
    /// entry: their runs trained an LSTM.
    public init(checkpointMetadata metadata: [String: String]) throws(CheckpointProblem) {
        var metadata = metadata
        if metadata[CodingKeys.cell.rawValue] == nil { metadata[CodingKeys.cell.rawValue] = Cell.lstm.rawValue }
        self = try MetadataCoding.decode(TrainingOptions.self, from: metadata)
        do {
            try validate()
        } catch {
            let key: String
            switch error {
            case .invalidOption(let option, _, _): key = Self.metadataKey(option)
            default: key = CodingKeys.batchSize.rawValue  // batch × steps too large
            }
            throw .invalidMetadataValue(key: key, value: metadata[key])
        }
    }
}
