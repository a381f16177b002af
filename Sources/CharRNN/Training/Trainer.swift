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

    /// Where the run stands; restored from a checkpoint when resuming.
    private var progress: Progress
    private let corpusFingerprint: String

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
    ///   - initialWeights: start from this checkpoint's weights (only) instead
    ///     of a fresh initialisation; its vocabulary must be the corpus's and
    ///     its shape the options'.
    /// - Throws: `TrainingError` naming the first problem (an option out of
    ///   range, an unusable output directory, a corpus too short, a model
    ///   too large for the memory the process may take).
    public convenience init(corpus: Corpus, options: TrainingOptions, outputDirectory: URL?, initialWeights: Checkpoint? = nil) throws(TrainingError) {
        var options = options
        try options.validate()
        let run = try Self.open(outputDirectory) { url throws(RunDirectoryError) in try RunDirectory.openForNewRun(at: url) }
        do throws(TrainingError) {
            let vocabulary = Vocabulary(corpus: corpus.scalars)
            let configuration = ModelConfiguration(
                vocabularySize: vocabulary.count, hiddenSize: options.hiddenSize, layerCount: options.layerCount,
                cell: options.cell)
            if let initialWeights {
                guard initialWeights.vocabulary == vocabulary else {
                    throw TrainingError.incompatible(.vocabulary(corpus: vocabulary, checkpoint: initialWeights.vocabulary), resuming: false)
                }
                guard initialWeights.configuration == configuration else {
                    throw TrainingError.incompatible(.shape(checkpoint: initialWeights.configuration, requested: configuration), resuming: false)
                }
            }
            try Self.checkMemory(configuration, options, corpusLength: corpus.count)
            let tokens = Self.encode(corpus, vocabulary)
            let batches = try Self.batch(tokens, options)
            if options.learningRateSchedule == .cosine && options.scheduleIterations == nil {
                // The curve's end is fixed now, so a resumed run with another
                // `maxIterations` keeps the rates it started with.
                options.scheduleIterations = options.totalIterations(trainingBatches: batches.trainingBatchCount)
            }
            let model: Model
            do throws(ModelError) {
                if let initialWeights {
                    model = try initialWeights.makeModel()
                } else {
                    model = try Model(configuration: configuration, seed: options.seed)
                }
            } catch {
                throw TrainingError.model(error)
            }
            self.init(options: options, vocabulary: vocabulary, batches: batches, model: model, corpusLength: corpus.count,
                      runDirectory: run, runID: run?.runID ?? RunProgress.newRunID(), corpusFingerprint: Self.fingerprint(tokens),
                      progress: Progress(carried: RecurrentState(configuration: configuration, batchSize: options.batchSize)))
        } catch {
            run?.abandon()
            throw error
        }
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
    /// (see `RunDirectory.openForResume`).
    /// - Throws: `TrainingError.incompatible` if the checkpoint has no
    ///   training state, or the corpus is not the one the run used (its
    ///   vocabulary, length or content differ); `.alreadyFinished` if the run
    ///   has made all the iterations asked for; `.patienceExhausted` if it
    ///   stopped for want of a new best and `patience` does not allow more.
    public convenience init(resuming checkpoint: Checkpoint, corpus: Corpus, outputDirectory: URL?, maxIterations: Int? = nil,
                            keepBest: Int? = nil, patience: Int? = nil) throws(TrainingError) {
        guard let resume = checkpoint.resumeState, var options = checkpoint.trainingOptions, let saved = checkpoint.progress else {
            throw .incompatible(.weightsOnly, resuming: true)
        }
        options.maxIterations = maxIterations ?? options.maxIterations
        options.keepBest = keepBest ?? options.keepBest
        options.patience = patience ?? options.patience
        try options.validate()
        if let patience = options.patience, let waited = saved.validationsSinceBest, waited >= patience {
            throw .patienceExhausted(iteration: saved.iteration, validations: waited, patience: patience)
        }
        let identity = saved.runIdentity(options: checkpoint.trainingOptions ?? options)
        let run = try Self.open(outputDirectory) { url throws(RunDirectoryError) in
            try RunDirectory.openForResume(at: url, runIdentity: identity)
        }
        do throws(TrainingError) {
            let vocabulary = Vocabulary(corpus: corpus.scalars)
            guard vocabulary == checkpoint.vocabulary else {
                throw TrainingError.incompatible(.vocabulary(corpus: vocabulary, checkpoint: checkpoint.vocabulary), resuming: true)
            }
            try Self.checkMemory(checkpoint.configuration, options, corpusLength: corpus.count)
            let tokens = Self.encode(corpus, vocabulary)
            let batches = try Self.batch(tokens, options)
            guard saved.trainingBatches == batches.trainingBatchCount, saved.corpusCharacters == corpus.count,
                saved.corpusFingerprint == Self.fingerprint(tokens)
            else {
                throw TrainingError.incompatible(.otherText(
                    runCharacters: saved.corpusCharacters, runBatches: saved.trainingBatches,
                    corpusCharacters: corpus.count, corpusBatches: batches.trainingBatchCount), resuming: true)
            }
            let total = options.totalIterations(trainingBatches: batches.trainingBatchCount)
            guard total > saved.iteration else {
                throw TrainingError.alreadyFinished(iteration: saved.iteration, totalIterations: total)
            }
            let model: Model
            do throws(ModelError) {
                model = try checkpoint.makeModel()
                try model.restoreOptimizer(state: resume.optimizerState, step: resume.optimizerStep)
            } catch {
                throw TrainingError.model(error)
            }
            self.init(options: options, vocabulary: vocabulary, batches: batches, model: model, corpusLength: corpus.count,
                      runDirectory: run, runID: saved.runID ?? identity, corpusFingerprint: Self.fingerprint(tokens),
                      progress: Progress(iteration: saved.iteration, epochLossSum: saved.epochLossSum,
                                         bestValidation: saved.bestValidationLoss, carried: resume.carriedState,
                                         resumedFrom: saved.iteration, validationsSinceBest: saved.validationsSinceBest ?? 0))
        } catch {
            run?.abandon()
            throw error
        }
    }

    private init(options: TrainingOptions, vocabulary: Vocabulary, batches: BatchedCorpus, model: Model, corpusLength: Int,
                 runDirectory: RunDirectory?, runID: String, corpusFingerprint: String, progress: Progress) {
        self.options = options
        self.vocabulary = vocabulary
        self.batches = batches
        self.model = model
        self.corpusLength = corpusLength
        self.runDirectory = runDirectory
        self.runID = runID
        self.corpusFingerprint = corpusFingerprint
        self.progress = progress
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
        do { try runDirectory?.lock() } catch { throw .runDirectory(error) }
        defer { runDirectory?.close() }
        let total = totalIterations
        let perEpoch = batches.trainingBatchCount
        onEvent(.started(TrainingPlan(
            corpusLength: corpusLength, vocabularySize: vocabulary.count, parameterCount: model.parameterCount,
            options: options, trainingBatches: perEpoch, validationBatches: batches.validationBatchCount,
            totalIterations: total, resumedFromIteration: progress.resumedFrom,
            bestValidationLoss: progress.bestValidation.isFinite ? progress.bestValidation : nil, runtime: ComputeRuntime.current)))

        var history = LossHistory()
        do {
            for record in try runDirectory?.startMetrics(after: progress.iteration) ?? [] { history.add(record) }
        } catch {
            throw .runDirectory(error)
        }
        var lastValidation = Float.nan
        var lastCheckpoint: URL? = nil
        var stepSeconds: [Double] = []
        func summary(interrupted: Bool) -> TrainingSummary {
            TrainingSummary(
                iterations: progress.iteration, finalValidationLoss: lastValidation,
                bestValidationLoss: progress.bestValidation, medianSecondsPerBatch: Self.median(stepSeconds),
                interrupted: interrupted, lastCheckpoint: lastCheckpoint,
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
            let step: (loss: Float, gradientNorm: Float)
            do {
                step = try model.trainStep(
                    on: batches.trainingBatch(index), state: &progress.carried,
                    keepProbability: options.keepProbability, dropoutSeed: dropoutSeed(iteration: iteration),
                    clipNorm: options.gradientClip, adam: AdamOptions(learningRate: learningRate))
            } catch .nonFinite(let value) {
                throw .diverged(iteration: iteration, value)
            } catch {
                throw .model(error)
            }
            let seconds = (ContinuousClock.now - start).seconds
            stepSeconds.append(seconds)
            progress.epochLossSum += Double(step.loss)
            let runningLoss = Float(progress.epochLossSum / Double(index + 1))
            let report = IterationReport(
                epoch: epoch, epochs: options.epochs, iteration: iteration, totalIterations: total,
                batchLoss: step.loss, runningLoss: runningLoss, gradientNorm: step.gradientNorm,
                learningRate: learningRate, secondsPerBatch: seconds, characters: options.batchSize * options.steps)
            onEvent(.iteration(report))
            var records = [MetricsRecord.iteration(
                iteration, epoch: epoch, loss: step.loss, runningLoss: runningLoss, gradientNorm: step.gradientNorm,
                learningRate: learningRate, seconds: seconds, characters: report.characters)]

            let stopping = stop?.isRequested == true && iteration < total
            var outOfPatience = false
            if iteration % options.saveEvery == 0 || iteration == total || stopping {
                do {
                    lastValidation = try validationLoss()
                } catch .model(.nonFinite(let value)) {
                    throw .diverged(iteration: iteration, value)
                }
                let isBest = lastValidation < progress.bestValidation
                // The extra validation of a stop request is not one the run
                // would have made uninterrupted, so patience does not count it.
                let scheduled = iteration % options.saveEvery == 0 || iteration == total
                if scheduled { progress.validationsSinceBest = isBest ? 0 : progress.validationsSinceBest + 1 }
                progress.bestValidation = min(progress.bestValidation, lastValidation)
                onEvent(.validated(iteration: iteration, loss: lastValidation, isBest: isBest))
                records.append(.validation(iteration, epoch: epoch, loss: lastValidation, isBest: isBest))
                outOfPatience = options.patience.map { progress.validationsSinceBest >= $0 } ?? false
            }
            for record in records { history.add(record) }
            do { try runDirectory?.appendMetrics(records) } catch { throw .runDirectory(error) }
            if records.count > 1 {
                if let runDirectory {
                    let chart = LossChart(curves: [history.curve(name: options.summary)],
                                          title: "Loss: \(runDirectory.url.lastPathComponent)")
                    do { try runDirectory.writeChart(chart.svg()) } catch { throw .runDirectory(error) }
                    let saved = try saveCheckpoint(
                        in: runDirectory, epoch: epoch, validationLoss: lastValidation, trainingLoss: runningLoss,
                        learningRate: learningRate)
                    lastCheckpoint = saved.url
                    onEvent(.checkpointSaved(url: saved.url, isBest: saved.isBest))
                    if let keep = options.keepBest {
                        do { try runDirectory.prune(keeping: keep) } catch { throw .runDirectory(error) }
                    }
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

    /// Mean loss over the validation split: zero initial state carried
    /// through all validation batches, no dropout.
    public func validationLoss() throws(TrainingError) -> Float {
        do {
            return try Self.validationLoss(of: model, on: batches)
        } catch {
            throw .model(error)
        }
    }

    /// Mean loss of `model` over the validation split of `batches`, as training reports it.
    public static func validationLoss(of model: Model, on batches: BatchedCorpus) throws(ModelError) -> Float {
        var state = RecurrentState(configuration: model.configuration, batchSize: batches.batchSize)
        var sum: Double = 0
        for index in 0..<batches.validationBatchCount {
            sum += Double(try model.loss(on: batches.validationBatch(index), state: &state))
        }
        return Float(sum / Double(batches.validationBatchCount))
    }

    /// The dropout seed of an iteration: a pure function of the run's seed
    /// and the iteration number, so a run is reproducible and resumable.
    func dropoutSeed(iteration: Int) -> UInt64 {
        var z = options.seed &+ 0xD1B5_4A32_D192_ED03 &* UInt64(iteration)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    // MARK: - Checkpoints

    /// Writes a checkpoint at the current iteration, straight from the
    /// model's blocks (no copy of the model is made).
    private func saveCheckpoint(
        in runDirectory: RunDirectory, epoch: Int, validationLoss: Float, trainingLoss: Float, learningRate: Float
    ) throws(TrainingError) -> RunDirectory.Saved {
        // Never write weights that are not numbers (the step that would make
        // them so stops training first; this is the last line of defence).
        guard model.parametersAreFinite else { throw .diverged(iteration: progress.iteration, .weights) }
        let run = RunProgress(
            runID: runID, iteration: progress.iteration, epoch: epoch, validationLoss: validationLoss,
            trainingLoss: trainingLoss, bestValidationLoss: progress.bestValidation, epochLossSum: progress.epochLossSum,
            trainingBatches: batches.trainingBatchCount, corpusCharacters: corpusLength, corpusFingerprint: corpusFingerprint,
            learningRate: learningRate, validationsSinceBest: progress.validationsSinceBest)
        let metadata = Checkpoint.fullMetadata(
            options.metadata.merging(run.metadata) { _, new in new }, configuration: model.configuration,
            vocabulary: vocabulary, optimizerStep: model.optimizerStep)
        let carried = progress.carried
        let saved: Result<RunDirectory.Saved, RunDirectoryError> = carried.values.withUnsafeBufferPointer { values in
            let tensors = Checkpoint.tensors(
                configuration: model.configuration, parameters: UnsafeBufferPointer(model.parameters.buffer),
                moments: UnsafeBufferPointer(model.optimizerState.buffer), carried: (values, carried.batchSize))
            return Result { () throws(RunDirectoryError) in
                try runDirectory.save(progress: run, hiddenSize: options.hiddenSize) { (sink) throws(FileSink.Failure) in
                    try SafeTensors.write(tensors: tensors, metadata: metadata, to: sink)
                }
            }
        }
        do {
            return try saved.get()
        } catch {
            throw .runDirectory(error)
        }
    }

    // MARK: - Set-up helpers

    /// Opens the output directory with `opening`, if there is one.
    private static func open(_ url: URL?, _ opening: (URL) throws(RunDirectoryError) -> RunDirectory) throws(TrainingError) -> RunDirectory? {
        guard let url else { return nil }
        do { return try opening(url) } catch { throw .runDirectory(error) }
    }

    /// Refuses a run whose model, activations and corpus need more memory
    /// than the process may take, before any of it is allocated.
    private static func checkMemory(_ configuration: ModelConfiguration, _ options: TrainingOptions, corpusLength: Int) throws(TrainingError) {
        do {
            try configuration.validate()
            let needed = MemoryBudget.sum(
                try configuration.trainingBytes(batchSize: options.batchSize, steps: options.steps),
                MemoryBudget.floatBytes(corpusLength))  // the encoded corpus the batches hold
            try MemoryBudget.check(requiredBytes: needed)
        } catch let error as MemoryShortfall {
            throw .insufficientMemory(error)
        } catch let error as ModelError {
            throw .model(error)
        } catch {
            preconditionFailure("unexpected \(error)")
        }
    }

    private static func encode(_ corpus: Corpus, _ vocabulary: Vocabulary) -> [Int32] {
        guard let tokens = try? vocabulary.encode(corpus.scalars) else {
            preconditionFailure("a corpus always encodes with its own vocabulary")
        }
        return tokens
    }

    private static func batch(_ tokens: [Int32], _ options: TrainingOptions) throws(TrainingError) -> BatchedCorpus {
        do {
            return try BatchedCorpus(
                tokens: tokens, batchSize: options.batchSize, steps: options.steps,
                validationFraction: options.validationFraction)
        } catch {
            throw .batching(error)
        }
    }

    /// A 64-bit FNV-1a hash of the encoded corpus, to recognise the same text on resume.
    static func fingerprint(_ tokens: [Int32]) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for token in tokens {
            hash = (hash ^ UInt64(UInt32(bitPattern: token))) &* 0x0000_0100_0000_01B3
        }
        return String(hash, radix: 16)
    }

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
