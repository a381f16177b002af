/// Everything that defines a training run. The defaults are the original
/// notebook's: 2 layers of 512, batch 100 × 100 steps, 20 epochs, Adam
/// 0.001, keep probability 0.5, clip 5, validation every 200 iterations.
public struct TrainingOptions: Sendable, Equatable, Codable {
    /// Units per LSTM layer.
    public var hiddenSize = 512
    /// Stacked LSTM layers.
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
    /// validation loss (`best.safetensors` is always kept); all when `nil`.
    public var keepBest: Int? = nil

    /// The notebook's defaults.
    public init() {}

    /// Throws `TrainingError.invalidOption` naming the first value out of range.
    public func validate() throws(TrainingError) {
        func require(_ condition: Bool, _ message: String) throws(TrainingError) {
            if !condition { throw .invalidOption(message) }
        }
        try require(hiddenSize >= 1 && hiddenSize <= 16384, "--hidden must be between 1 and 16384 (got \(hiddenSize))")
        try require(layerCount >= 1 && layerCount <= 64, "--layers must be between 1 and 64 (got \(layerCount))")
        try require(batchSize >= 1, "--batch must be at least 1 (got \(batchSize))")
        try require(steps >= 1, "--steps must be at least 1 (got \(steps))")
        try require(batchSize <= (1 << 26) / steps, "--batch × --steps must be at most 67108864")
        try require(epochs >= 1, "--epochs must be at least 1 (got \(epochs))")
        try require(learningRate > 0 && learningRate.isFinite, "--learning-rate must be positive (got \(learningRate))")
        try require(keepProbability > 0 && keepProbability <= 1, "--keep-prob must be in (0, 1] (got \(keepProbability))")
        try require(gradientClip > 0 && gradientClip.isFinite, "--grad-clip must be positive (got \(gradientClip))")
        try require(validationFraction > 0 && validationFraction < 1,
                    "--val-frac must be between 0 and 1, exclusive (got \(validationFraction))")
        try require(saveEvery >= 1, "--save-every must be at least 1 (got \(saveEvery))")
        if let maxIterations { try require(maxIterations >= 1, "--max-iterations must be at least 1 (got \(maxIterations))") }
        if let keepBest { try require(keepBest >= 1, "--keep must be at least 1 (got \(keepBest))") }
    }

    /// The hyperparameters as checkpoint metadata entries.
    var metadata: [String: String] {
        [
            "hidden_size": String(hiddenSize), "num_layers": String(layerCount),
            "batch_size": String(batchSize), "steps": String(steps), "epochs": String(epochs),
            "learning_rate": String(learningRate), "keep_prob": String(keepProbability),
            "grad_clip": String(gradientClip), "val_frac": String(validationFraction),
            "save_every": String(saveEvery), "seed": String(seed),
        ]
    }

    /// The hyperparameters a checkpoint was trained with, read from its metadata.
    /// Throws naming the first entry that is missing or unreadable.
    public init(checkpointMetadata metadata: [String: String]) throws(TrainingError) {
        func value<T: LosslessStringConvertible>(_ key: String, as: T.Type) throws(TrainingError) -> T {
            guard let text = metadata[key], let value = T(text) else {
                throw .cannotResume("its metadata has no valid '\(key)'")
            }
            return value
        }
        hiddenSize = try value("hidden_size", as: Int.self)
        layerCount = try value("num_layers", as: Int.self)
        batchSize = try value("batch_size", as: Int.self)
        steps = try value("steps", as: Int.self)
        epochs = try value("epochs", as: Int.self)
        learningRate = try value("learning_rate", as: Float.self)
        keepProbability = try value("keep_prob", as: Float.self)
        gradientClip = try value("grad_clip", as: Float.self)
        validationFraction = try value("val_frac", as: Double.self)
        saveEvery = try value("save_every", as: Int.self)
        seed = try value("seed", as: UInt64.self)
    }
}
