import Foundation

/// Everything that defines a training run. The defaults are the original
/// notebook's: 2 layers of 512, batch 100 × 100 steps, 20 epochs, Adam
/// 0.001 (constant), keep probability 0.5, clip 5, validation every 200
/// iterations.
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
    /// Adam's step size: the constant rate, or the peak of a schedule.
    public var learningRate: Float = 0.001
    /// How the rate changes over the run (see `learningRate(atIteration:trainingBatches:)`).
    public var learningRateSchedule: LearningRateSchedule = .constant
    /// Iterations over which the rate rises linearly to the schedule's value
    /// (iteration i of the first N runs at i / N of it); 0 for none.
    public var warmupIterations = 0
    /// `.step`: the factor the rate is multiplied by at the end of each epoch
    /// from `learningRateDecayAfter` on (char-rnn's `-learning_rate_decay`), in (0, 1].
    public var learningRateDecay: Float = 0.97
    /// `.step`: the epoch after which the decay starts (char-rnn's
    /// `-learning_rate_decay_after`), at least 0.
    public var learningRateDecayAfter = 10
    /// `.cosine`: the rate the curve ends at, in [0, learningRate).
    public var minimumLearningRate: Float = 0
    /// `.cosine`: the iteration the curve reaches `minimumLearningRate`,
    /// fixed when the run starts (its total iterations, unless set), so a
    /// resumed run with another `maxIterations` keeps its rates.
    public var scheduleIterations: Int? = nil
    /// Stop after this many validations in a row without a new lowest
    /// validation loss (the best checkpoint is kept), if set. The extra
    /// validation a stop request makes is not counted.
    public var patience: Int? = nil
    /// Dropout keep probability on every layer's output, in (0, 1].
    public var keepProbability: Float = 0.5
    /// Global gradient-norm clip.
    public var gradientClip: Float = 5
    /// The arithmetic of the training passes' matrix products: fp32, or
    /// bf16 inputs with fp32 sums (faster where the CPU multiplies bf16).
    /// Weights, gradients, Adam and validation stay fp32 either way.
    public var precision: Precision = .float32
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
        case cell, hiddenSize, layerCount, batchSize, steps, epochs, learningRate, learningRateSchedule
        case warmupIterations, learningRateDecay, learningRateDecayAfter, minimumLearningRate, scheduleIterations
        case patience, keepProbability, gradientClip, validationFraction, saveEvery, seed, maxIterations, keepBest
    }

    /// The largest number of characters in one batch (B × T), as the core
    /// states it: keeps every dimension it hands to BLAS far inside 32 bits.
    public static var maximumBatchCharacters: Int { ModelConfiguration.maximumBatchCharacters }

    /// Throws `TrainingError.invalidOption` naming the first value out of range.
    public func validate() throws(TrainingError) {
        func require(_ condition: Bool, _ option: Option, _ value: CustomStringConvertible, _ requirement: String) throws(TrainingError) {
            if !condition { throw .invalidOption(option, value: value.description, requirement: requirement) }
        }
        let hidden = ModelConfiguration.maximumHiddenSize
        let layers = ModelConfiguration.maximumLayerCount
        try require((1...hidden).contains(hiddenSize), .hiddenSize, hiddenSize, "between 1 and \(hidden)")
        try require((1...layers).contains(layerCount), .layerCount, layerCount, "between 1 and \(layers)")
        try require(batchSize >= 1, .batchSize, batchSize, "at least 1")
        try require(steps >= 1, .steps, steps, "at least 1")
        if batchSize > Self.maximumBatchCharacters / steps {
            throw .batchTooLarge(batchSize: batchSize, steps: steps, limit: Self.maximumBatchCharacters)
        }
        try require(epochs >= 1, .epochs, epochs, "at least 1")
        try require(learningRate > 0 && learningRate.isFinite, .learningRate, learningRate, "positive and finite")
        try require(warmupIterations >= 0, .warmupIterations, warmupIterations, "at least 0")
        try require(learningRateDecay > 0 && learningRateDecay <= 1, .learningRateDecay, learningRateDecay, "in (0, 1]")
        try require(learningRateDecayAfter >= 0, .learningRateDecayAfter, learningRateDecayAfter, "at least 0")
        try require(
            minimumLearningRate >= 0 && minimumLearningRate < learningRate, .minimumLearningRate,
            minimumLearningRate, "at least 0 and below the learning rate \(learningRate)")
        if let scheduleIterations {
            try require(scheduleIterations >= 1, .scheduleIterations, scheduleIterations, "at least 1")
        }
        if let patience { try require(patience >= 1, .patience, patience, "at least 1") }
        try require(keepProbability > 0 && keepProbability <= 1, .keepProbability, keepProbability, "in (0, 1]")
        try require(gradientClip > 0 && gradientClip.isFinite, .gradientClip, gradientClip, "positive and finite")
        try require(
            validationFraction > 0 && validationFraction < 1, .validationFraction, validationFraction,
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

    /// The rate of iteration `iteration` (counted from 1 over the whole run)
    /// for `trainingBatches` batches per epoch: a pure function of the
    /// options and the iteration, so a resumed run takes the same rates.
    ///
    /// - `.constant`: `learningRate`.
    /// - `.step`: `learningRate × learningRateDecay^max(0, epoch − learningRateDecayAfter)`,
    ///   the epoch counted from 1 (char-rnn: the rate is multiplied at the end
    ///   of every epoch from `learningRateDecayAfter` on).
    /// - `.cosine`: from `learningRate` at the first iteration after the
    ///   warm-up down along half a cosine towards `minimumLearningRate`,
    ///   which it reaches one iteration after `scheduleIterations` (the
    ///   run's total unless set), and flat after that.
    ///
    /// Warm-up then scales the first `warmupIterations` linearly.
    public func learningRate(atIteration iteration: Int, trainingBatches: Int) -> Float {
        let peak = Double(learningRate)
        var rate: Double
        switch learningRateSchedule {
        case .constant:
            rate = peak
        case .step:
            let epoch = (iteration - 1) / max(trainingBatches, 1) + 1
            rate = peak * pow(Double(learningRateDecay), Double(max(0, epoch - learningRateDecayAfter)))
        case .cosine:
            // The first iteration after the warm-up runs at the peak; the
            // curve would reach the floor one iteration after `end` (as
            // PyTorch's CosineAnnealingLR), so no iteration of the run is wasted at 0.
            let end = scheduleIterations ?? totalIterations(trainingBatches: trainingBatches)
            let span = Double(max(end - warmupIterations, 1))
            let done = min(max(Double(iteration - warmupIterations - 1) / span, 0), 1)
            let floor = Double(minimumLearningRate)
            rate = floor + (peak - floor) * 0.5 * (1 + cos(Double.pi * done))
        }
        if iteration < warmupIterations {
            rate *= Double(max(iteration, 0)) / Double(warmupIterations)
        }
        return Float(rate)
    }

    /// The model and the schedule in a few words, for legends and logs:
    /// "2 × 512 LSTM, Adam 0.003 cosine (warm-up 100), keep 0.5".
    public var summary: String {
        "\(layerCount) × \(hiddenSize) \(cell.displayName), Adam \(learningRate) \(scheduleSummary), keep \(keepProbability)"
    }

    /// The schedule in a few words: "constant", "step ×0.97 after epoch 10",
    /// "cosine to 0.0 (warm-up 100)".
    public var scheduleSummary: String {
        var text: String
        switch learningRateSchedule {
        case .constant: text = "constant"
        case .step: text = "step ×\(learningRateDecay) after epoch \(learningRateDecayAfter)"
        case .cosine:
            text = "cosine to \(minimumLearningRate)" + (scheduleIterations.map { " at \($0)" } ?? "")
        }
        if warmupIterations > 0 { text += " (warm-up \(warmupIterations))" }
        return text
    }

    /// The names under which the options are stored in checkpoint metadata.
    enum CodingKeys: String, CodingKey {
        case cell
        case hiddenSize = "hidden_size"
        case layerCount = "num_layers"
        case batchSize = "batch_size"
        case steps, epochs
        case learningRate = "learning_rate"
        case learningRateSchedule = "lr_schedule"
        case warmupIterations = "warmup"
        case learningRateDecay = "lr_decay"
        case learningRateDecayAfter = "lr_decay_after"
        case minimumLearningRate = "lr_min"
        case scheduleIterations = "lr_schedule_iterations"
        case patience
        case keepProbability = "keep_prob"
        case gradientClip = "grad_clip"
        case precision
        case validationFraction = "val_frac"
        case saveEvery = "save_every"
        case seed
        case maxIterations = "max_iterations"
        case keepBest = "keep"
    }

    /// Keys added after the first checkpoints were written, with the value
    /// that those checkpoints' runs used: a checkpoint without one of them
    /// trained with that value.
    static let laterKeys: [CodingKeys: String] = {
        let defaults = TrainingOptions().metadata
        let keys: [CodingKeys] = [
            .cell, .learningRateSchedule, .warmupIterations, .learningRateDecay,
            .learningRateDecayAfter, .minimumLearningRate, .precision,
        ]
        return Dictionary(uniqueKeysWithValues: keys.map { ($0, defaults[$0.rawValue] ?? "") })
    }()

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
        case .learningRateSchedule: key = .learningRateSchedule
        case .warmupIterations: key = .warmupIterations
        case .learningRateDecay: key = .learningRateDecay
        case .learningRateDecayAfter: key = .learningRateDecayAfter
        case .minimumLearningRate: key = .minimumLearningRate
        case .scheduleIterations: key = .scheduleIterations
        case .patience: key = .patience
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
    /// Checkpoints written before there was a choice of cell or schedule
    /// have no `cell` or `lr_schedule` entries: their runs trained an LSTM
    /// at a constant rate (see `laterKeys`).
    public init(checkpointMetadata metadata: [String: String]) throws(CheckpointProblem) {
        var metadata = metadata
        for (key, value) in Self.laterKeys where metadata[key.rawValue] == nil { metadata[key.rawValue] = value }
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

/// How the learning rate changes over a run (see
/// `TrainingOptions.learningRate(atIteration:trainingBatches:)`).
public enum LearningRateSchedule: String, Sendable, Codable, CaseIterable, LosslessStringConvertible {
    /// The same rate throughout (the notebook).
    case constant
    /// Multiplied by a factor at the end of every epoch after a given one (char-rnn).
    case step
    /// Half a cosine from the peak down to a floor at the end of the run.
    case cosine

    /// The schedule named `description` (`constant`, `step`, `cosine`).
    public init?(_ description: String) { self.init(rawValue: description) }

    /// The schedule's name.
    public var description: String { rawValue }
}
