import Foundation

/// Where a training run stood when it wrote a checkpoint: which run it is,
/// its position and its losses. Stored in the checkpoint's metadata under
/// the coding keys below (see docs/CHECKPOINT.md) and read back checked, so
/// no caller parses metadata strings.
public struct RunProgress: Sendable, Equatable, Codable {
    /// The run's identity, written into every checkpoint it makes; `nil` in
    /// checkpoints written before runs had one (see `runIdentity`).
    public var runID: String?
    /// Iterations done, counted from the start of the run.
    public var iteration: Int
    /// The epoch (from 1) the last iteration belonged to.
    public var epoch: Int
    /// The validation loss at this checkpoint.
    public var validationLoss: Float
    /// The epoch's running mean training loss.
    public var trainingLoss: Float
    /// The lowest validation loss of the run so far (this one included).
    public var bestValidationLoss: Float
    /// The sum of this epoch's batch losses, so the running mean continues exactly.
    public var epochLossSum: Double
    /// Training batches per epoch.
    public var trainingBatches: Int
    /// Characters in the corpus the run trains on.
    public var corpusCharacters: Int
    /// A hash of the encoded corpus, to recognise the same text on resume.
    public var corpusFingerprint: String
    /// The learning rate of the last iteration (from the run's schedule);
    /// `nil` in checkpoints written before schedules.
    public var learningRate: Float?
    /// Validations in a row, this one included, without a new lowest loss
    /// (0 when this one is the best), for `TrainingOptions.patience`; `nil`
    /// in checkpoints written before it was kept (read as 0).
    public var validationsSinceBest: Int?

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case iteration, epoch
        case validationLoss = "val_loss"
        case trainingLoss = "train_loss"
        case bestValidationLoss = "best_val_loss"
        case epochLossSum = "epoch_loss_sum"
        case trainingBatches = "training_batches"
        case corpusCharacters = "corpus_characters"
        case corpusFingerprint = "corpus_fingerprint"
        case learningRate = "lr"
        case validationsSinceBest = "validations_since_best"
    }

    /// Bundles the values.
    public init(
        runID: String?, iteration: Int, epoch: Int, validationLoss: Float, trainingLoss: Float,
        bestValidationLoss: Float, epochLossSum: Double, trainingBatches: Int, corpusCharacters: Int,
        corpusFingerprint: String, learningRate: Float? = nil, validationsSinceBest: Int? = nil
    ) {
        self.runID = runID
        self.iteration = iteration
        self.epoch = epoch
        self.validationLoss = validationLoss
        self.trainingLoss = trainingLoss
        self.bestValidationLoss = bestValidationLoss
        self.epochLossSum = epochLossSum
        self.trainingBatches = trainingBatches
        self.corpusCharacters = corpusCharacters
        self.corpusFingerprint = corpusFingerprint
        self.learningRate = learningRate
        self.validationsSinceBest = validationsSinceBest
    }

    /// A fresh run identity: 128 random bits in hex.
    public static func newRunID() -> String {
        (0..<2).map { _ in String(UInt64.random(in: 0...UInt64.max), radix: 16).leftPadded(16) }.joined()
    }

    /// Whom the checkpoint belongs to: its `runID`, or for a checkpoint
    /// written before runs had identities, one derived from what fixes a run
    /// (the settings, the seed and the corpus): two such checkpoints belong
    /// to one run exactly when that run, being deterministic, would have
    /// written both.
    public func runIdentity(options: TrainingOptions) -> String {
        if let runID { return runID }
        var settings = options
        settings.maxIterations = nil
        settings.keepBest = nil
        // Options added later are left out while they hold the value such runs
        // used, so an old checkpoint's identity does not change with new options.
        var entries = MetadataCoding.encode(settings)
        for (key, value) in TrainingOptions.laterKeys where entries[key.rawValue] == value { entries[key.rawValue] = nil }
        let text =
            entries.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            .joined(separator: ";") + ";corpus=\(corpusFingerprint);batches=\(trainingBatches)"
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return "legacy-" + String(hash, radix: 16).leftPadded(16)
    }

    /// The values as metadata entries.
    var metadata: [String: String] { MetadataCoding.encode(self) }

    /// Reads and checks the progress stored in `metadata`: every entry
    /// present and parsable, every value in range, and the entries consistent
    /// with each other (the epoch is the iteration's; the best loss is at most
    /// this one).
    init(metadata: [String: String]) throws(CheckpointProblem) {
        self = try MetadataCoding.decode(RunProgress.self, from: metadata)
        func require(_ condition: Bool, _ key: CodingKeys) throws(CheckpointProblem) {
            if !condition { throw .invalidMetadataValue(key: key.rawValue, value: metadata[key.rawValue]) }
        }
        try require(runID.map { !$0.isEmpty && $0.count <= 64 } ?? true, .runID)
        try require(iteration >= 1, .iteration)
        try require(trainingBatches >= 1, .trainingBatches)
        try require(epoch == (iteration - 1) / trainingBatches + 1, .epoch)
        for (value, key) in [
            (validationLoss, CodingKeys.validationLoss), (trainingLoss, .trainingLoss),
            (bestValidationLoss, .bestValidationLoss),
        ] {
            try require(value.isFinite && value >= 0, key)
        }
        try require(bestValidationLoss <= validationLoss, .bestValidationLoss)
        try require(epochLossSum.isFinite && epochLossSum >= 0, .epochLossSum)
        try require(corpusCharacters >= 1, .corpusCharacters)
        try require(learningRate.map { $0.isFinite && $0 >= 0 } ?? true, .learningRate)
        try require(validationsSinceBest.map { $0 >= 0 } ?? true, .validationsSinceBest)
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
