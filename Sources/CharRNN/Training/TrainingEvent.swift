import Foundation

/// What a `Trainer` reports as it runs, in order: `started`, then per
/// iteration `iteration`, and at every validation `validated` followed by
/// `checkpointSaved` (when writing to a directory), and finally `finished`,
/// or `stopped` when a `StopSignal` ended the run early.
public enum TrainingEvent: Sendable {
    /// The run is set up.
    case started(TrainingPlan)
    /// One training batch is done.
    case iteration(IterationReport)
    /// The validation split was evaluated; `isBest` if the loss is the run's lowest so far.
    case validated(iteration: Int, loss: Float, isBest: Bool)
    /// A checkpoint was written (and `best.safetensors` replaced if `isBest`).
    case checkpointSaved(url: URL, isBest: Bool)
    /// The run made all its iterations, or ran out of patience (see
    /// `TrainingSummary.stoppedByPatience`).
    case finished(TrainingSummary)
    /// The run stopped early at a `StopSignal`, after writing a checkpoint at
    /// its last iteration.
    case stopped(TrainingSummary)
}

/// The shape of a run, known before the first iteration.
public struct TrainingPlan: Sendable {
    /// Characters in the corpus.
    public let corpusLength: Int
    /// Distinct characters.
    public let vocabularySize: Int
    /// Trainable parameters.
    public let parameterCount: Int
    /// The run's options.
    public let options: TrainingOptions
    /// Training batches per epoch.
    public let trainingBatches: Int
    /// Validation batches.
    public let validationBatches: Int
    /// Iterations the run will make in all (counted from the start of the run).
    public let totalIterations: Int
    /// The iteration a resumed run continues from, or `nil` for a new run.
    public let resumedFromIteration: Int?
    /// The lowest validation loss before this start (a resumed run's), or `nil`.
    public let bestValidationLoss: Float?
    /// Where the core computes (BLAS kernels and threads).
    public let runtime: ComputeRuntime
    /// Processes training together (1 for one process).
    public let processCount: Int
}

/// One iteration, with the notebook's log fields.
public struct IterationReport: Sendable {
    /// Epoch, counting from 1.
    public let epoch: Int
    /// Epochs in the run.
    public let epochs: Int
    /// Iteration, counting from 1 over the whole run.
    public let iteration: Int
    /// Iterations the run will make.
    public let totalIterations: Int
    /// This batch's loss.
    public let batchLoss: Float
    /// Mean training loss over this epoch's batches so far (what the notebook printed).
    public let runningLoss: Float
    /// Gradient norm before clipping.
    public let gradientNorm: Float
    /// The learning rate of this step.
    public let learningRate: Float
    /// Wall time of the training step.
    public let secondsPerBatch: Double
    /// Characters in the batch (streams × steps).
    public let characters: Int
    /// The part of the step spent summing the gradient and loss over the
    /// processes; `nil` for one process.
    public let communicationSeconds: Double?
}

/// How a run ended.
public struct TrainingSummary: Sendable {
    /// Iterations made.
    public let iterations: Int
    /// The last validation loss.
    public let finalValidationLoss: Float
    /// The lowest validation loss seen.
    public let bestValidationLoss: Float
    /// Median seconds per training batch.
    public let medianSecondsPerBatch: Double
    /// Whether a `StopSignal` ended the run before its last iteration.
    public let interrupted: Bool
    /// The last checkpoint written, if any.
    public let lastCheckpoint: URL?
    /// Whether the run ended early because `TrainingOptions.patience`
    /// validations in a row brought no new best.
    public let stoppedByPatience: Bool
}
