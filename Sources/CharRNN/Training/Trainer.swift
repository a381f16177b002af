import Foundation

/// Runs the original notebook's training loop on a corpus.
///
/// Per epoch the carried recurrent state starts at zero and passes from batch to
/// batch; every `saveEvery` iterations (and at the last one) the validation
/// split is evaluated from a zero state carried through its batches, without
/// dropout, and a checkpoint is written to the run's `RunDirectory`, which
/// keeps `best.safetensors` as the lowest validation loss so far. Each
/// checkpoint also holds what is needed to continue the run exactly (see
/// `init(resuming:corpus:outputDirectory:maxIterations:keepBest:patience:)`).
/// Each iteration runs at the rate the options' schedule gives it, and the
/// run can end early for want of a new best (`TrainingOptions.patience`).
/// Progress goes to the event callback, and with a run directory also to
/// its metrics file and loss chart; the trainer prints nothing.
///
/// Data-parallel training: given a `ProcessGroup` of N members, each member
/// holds its share of every batch's streams and the members take the same
/// step together, so N members train as one process does, up to the order
/// of summation (see `ProcessGroupStep`, which owns every collective call).
///
/// The parts, each with one job: `TrainingSetUp` checks the options, the
/// corpus and the memory and builds the model; this type's `run` is the
/// loop (iterations, the schedule of validations, patience, events); a
/// `TrainingStep` takes each step and validation (`SingleProcessStep`, or
/// `ProcessGroupStep` for a member of a group); a `RunRecorder` writes what
/// the run leaves behind (metrics, chart, checkpoints, pruning).
public final class Trainer {
    /// The run's options.
    public let options: TrainingOptions
    /// The corpus's alphabet.
    public let vocabulary: Vocabulary
    /// The corpus split into training and validation batches.
    public let batches: BatchedCorpus
    /// The model being trained.
    public let model: Model
    /// Characters in the corpus.
    public let corpusLength: Int
    /// Where checkpoints go (locked for this trainer's lifetime); `nil` writes none.
    public let runDirectory: RunDirectory?
    /// The run's directory; `nil` writes no checkpoints.
    public var outputDirectory: URL? { runDirectory?.url }
    /// The run's identity, written into every checkpoint.
    public let runID: String
    /// The processes training this model together (`SingleProcess` alone).
    public let group: any ProcessGroup

    /// Where the run stands; restored from a checkpoint when resuming.
    private var progress: Progress
    /// The step, single-process or a group member's.
    private let step: any TrainingStep
    /// What the run leaves behind (metrics, chart, checkpoints).
    private let recorder: RunRecorder

    /// The position in the run and the values that carry across iterations.
    struct Progress {
        /// Iterations done.
        var iteration = 0
        /// Sum of this epoch's batch losses (the notebook's running mean is sum / batches).
        var epochLossSum = 0.0
        /// Lowest validation loss so far.
        var bestValidation = Float.infinity
        /// The state carried into the next training batch.
        var carried: RecurrentState
        /// The iteration this run was resumed from, if it was.
        var resumedFrom: Int? = nil
        /// Validations in a row without a new lowest loss (for `patience`).
        var validationsSinceBest = 0
    }

    /// Checks everything and builds the model for a new run. With an output
    /// directory, it is created, locked and test-written first (see
    /// `RunDirectory.openForNewRun`), and removed again if it was created
    /// here and a later check fails.
    /// - Parameters:
    ///   - corpus: the text (`Corpus` in memory, or `CorpusFile` streamed).
    ///   - initialWeights: start from this checkpoint's weights (only) instead
    ///     of a fresh initialisation; its vocabulary must be the corpus's and
    ///     its shape the options'.
    ///   - group: the processes training together; member 0 alone opens
    ///     `outputDirectory`. Every member calls this initialiser.
    /// - Throws: `TrainingError` naming the first problem (an option out of
    ///   range, an unusable output directory, a corpus too short, a model
    ///   too large for the memory the process may take, a batch the group
    ///   cannot share equally); `.otherProcessFailed` on the members whose
    ///   own set-up succeeded when another's failed.
    public convenience init(
        corpus: some TrainingText, options: TrainingOptions, outputDirectory: URL?, initialWeights: Checkpoint? = nil,
        group: any ProcessGroup = SingleProcess()
    ) throws(TrainingError) {
        var run: RunDirectory? = nil
        let prepared = Result { () throws(TrainingError) in
            try TrainingSetUp.newRun(
                corpus: corpus, options: options, outputDirectory: outputDirectory, initialWeights: initialWeights, group: group,
                run: &run)
        }
        self.init(try ProcessGroupStep.agree(on: prepared, group: group, run: run), runDirectory: run, group: group)
    }

    /// Continues the run a checkpoint was written by, exactly where it
    /// stopped: weights, Adam's moments and step, the carried recurrent state, the
    /// iteration (and so the epoch, the position in the batch stream and the
    /// dropout seeds), the best validation loss and the log's running mean.
    /// Hyperparameters come from the checkpoint; `maxIterations` and
    /// `keepBest` and `patience` too, unless given. Iterations count from the
    /// start of the run, so `maxIterations` is a total, not a number more; the
    /// learning rate of every iteration is the one the run would have had
    /// uninterrupted. The output directory is opened for the checkpoint's run
    /// (see `RunDirectory.openForResume`) by member 0 of `group`, whose size
    /// need not be the one the checkpoint was written with (any that divides
    /// the batch): each member takes its streams' rows of the carried state.
    /// - Throws: `TrainingError.incompatible` if the checkpoint has no
    ///   training state, or the corpus is not the one the run used (its
    ///   vocabulary, length or content differ); `.alreadyFinished` if the run
    ///   has made all the iterations asked for; `.patienceExhausted` if it
    ///   stopped for want of a new best and `patience` does not allow more;
    ///   `.otherProcessFailed` as for a new run.
    public convenience init(
        resuming checkpoint: Checkpoint, corpus: some TrainingText, outputDirectory: URL?, maxIterations: Int? = nil,
        keepBest: Int? = nil, patience: Int? = nil, group: any ProcessGroup = SingleProcess()
    ) throws(TrainingError) {
        var run: RunDirectory? = nil
        let prepared = Result { () throws(TrainingError) in
            try TrainingSetUp.resuming(
                checkpoint, corpus: corpus, outputDirectory: outputDirectory, maxIterations: maxIterations, keepBest: keepBest,
                patience: patience, group: group, run: &run)
        }
        self.init(try ProcessGroupStep.agree(on: prepared, group: group, run: run), runDirectory: run, group: group)
    }

    private init(_ setUp: TrainingSetUp, runDirectory: RunDirectory?, group: any ProcessGroup) {
        self.options = setUp.options
        self.vocabulary = setUp.vocabulary
        self.batches = setUp.batches
        self.model = setUp.model
        self.corpusLength = setUp.corpusLength
        self.runDirectory = runDirectory
        self.runID = setUp.runID
        self.progress = setUp.progress
        self.group = group
        let local = SingleProcessStep(model: setUp.model, batches: setUp.batches, options: setUp.options)
        self.step = group.size > 1 ? ProcessGroupStep(local: local, group: group) : local
        self.recorder = RunRecorder(directory: runDirectory, setUp: setUp)
    }

    /// Iterations the run will make in all: all epochs, or `maxIterations` if fewer.
    public var totalIterations: Int { options.totalIterations(trainingBatches: batches.trainingBatchCount) }

    /// Trains to the end, or until `stop` is raised: then it finishes the
    /// iteration it is in, validates, writes a checkpoint at that iteration
    /// (an exact resume point) and returns a summary whose `interrupted` is
    /// true. Reports through `onEvent`. The run directory's lock is held while
    /// this runs (taken again if released) and released when it returns or throws.
    @discardableResult
    public func run(stop: StopSignal? = nil, onEvent: (TrainingEvent) -> Void = { _ in }) throws(TrainingError) -> TrainingSummary {
        let total = totalIterations
        let perEpoch = batches.trainingBatchCount
        onEvent(.started(plan))
        try step.recording { () throws(TrainingError) in
            try recorder.begin(after: progress.iteration)
        }
        defer { recorder.end() }
        var lastValidation = Float.nan
        var stepSeconds: [Double] = []
        func summary(interrupted: Bool) -> TrainingSummary {
            TrainingSummary(
                iterations: progress.iteration, finalValidationLoss: lastValidation,
                bestValidationLoss: progress.bestValidation, medianSecondsPerBatch: Self.median(stepSeconds),
                interrupted: interrupted, lastCheckpoint: recorder.lastCheckpoint,
                stoppedByPatience: options.patience.map { progress.validationsSinceBest >= $0 } ?? false)
        }
        while progress.iteration < total {
            let index = progress.iteration % perEpoch
            let epoch = progress.iteration / perEpoch + 1
            if index == 0 {
                progress.carried.reset()
                progress.epochLossSum = 0
            }
            progress.iteration += 1
            let iteration = progress.iteration
            let learningRate = options.learningRate(atIteration: iteration, trainingBatches: perEpoch)
            let start = ContinuousClock.now
            let outcome = try step.train(
                on: batches.trainingBatch(index), iteration: iteration, learningRate: learningRate, carried: &progress.carried)
            let seconds = (ContinuousClock.now - start).seconds
            stepSeconds.append(seconds)
            progress.epochLossSum += Double(outcome.loss)
            let runningLoss = Float(progress.epochLossSum / Double(index + 1))
            let report = IterationReport(
                epoch: epoch, epochs: options.epochs, iteration: iteration, totalIterations: total,
                batchLoss: outcome.loss, runningLoss: runningLoss, gradientNorm: outcome.gradientNorm,
                learningRate: learningRate, secondsPerBatch: seconds, characters: options.batchSize * options.steps,
                communicationSeconds: outcome.communicationSeconds)
            onEvent(.iteration(report))
            var records = [
                MetricsRecord.iteration(
                    iteration, epoch: epoch, loss: outcome.loss, runningLoss: runningLoss, gradientNorm: outcome.gradientNorm,
                    learningRate: learningRate, seconds: seconds, characters: report.characters,
                    communicationSeconds: outcome.communicationSeconds)
            ]

            let stopping = try step.stopRequested(stop?.isRequested == true) && iteration < total
            // The extra validation of a stop request is not one the run
            // would have made uninterrupted, so patience does not count it.
            let scheduled = iteration % options.saveEvery == 0 || iteration == total
            var outOfPatience = false
            var checkpointState: RecurrentState? = nil
            if scheduled || stopping {
                do {
                    lastValidation = try step.validationLoss()
                } catch .model(.nonFinite(let value)) {
                    throw .diverged(iteration: iteration, value)
                }
                checkpointState = try step.checkpointState(of: progress.carried, iteration: iteration)
                let isBest = lastValidation < progress.bestValidation
                if scheduled { progress.validationsSinceBest = isBest ? 0 : progress.validationsSinceBest + 1 }
                progress.bestValidation = min(progress.bestValidation, lastValidation)
                onEvent(.validated(iteration: iteration, loss: lastValidation, isBest: isBest))
                records.append(.validation(iteration, epoch: epoch, loss: lastValidation, isBest: isBest))
                outOfPatience = options.patience.map { progress.validationsSinceBest >= $0 } ?? false
            }
            try step.recording { () throws(TrainingError) in
                try recorder.append(records)
                guard let checkpointState else { return }
                let position = recorder.progress(
                    progress, epoch: epoch, validationLoss: lastValidation, trainingLoss: runningLoss, learningRate: learningRate)
                if let saved = try recorder.checkpoint(model, progress: position, carried: checkpointState) {
                    onEvent(.checkpointSaved(url: saved.url, isBest: saved.isBest))
                }
            }
            if stopping {
                let result = summary(interrupted: true)
                onEvent(.stopped(result))
                return result
            }
            if outOfPatience { break }
        }
        let result = summary(interrupted: false)
        onEvent(.finished(result))
        return result
    }

    /// What the run is about to do, as its first event reports it.
    private var plan: TrainingPlan {
        TrainingPlan(
            corpusLength: corpusLength, vocabularySize: vocabulary.count, parameterCount: model.parameterCount, options: options,
            trainingBatches: batches.trainingBatchCount, validationBatches: batches.validationBatchCount,
            totalIterations: totalIterations, resumedFromIteration: progress.resumedFrom,
            bestValidationLoss: progress.bestValidation.isFinite ? progress.bestValidation : nil, runtime: ComputeRuntime.current,
            processCount: step.processCount)
    }

    /// Mean loss over the validation split: zero initial state carried
    /// through all validation batches, no dropout. With a group of several
    /// processes, every member calls it: each evaluates its own streams and
    /// the group averages them (the shares are equal, so this is the mean
    /// over all streams).
    public func validationLoss() throws(TrainingError) -> Float { try step.validationLoss() }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) * 1e-18
    }
}
