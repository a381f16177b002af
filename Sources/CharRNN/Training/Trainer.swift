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
/// holds streams `group.streams(ofBatch: B)` of every batch (and only
/// their stretch of the text), computes the gradient of its streams, the
/// group sums the gradients, and every member divides by N, clips and takes
/// the same Adam step, so the weights stay identical (compared by hash at
/// every validation). Dropout masks are drawn by a stream's index in the
/// whole batch, so N members train as one process does, up to the order of
/// summation. Validation is shared out and summed the same way; member 0
/// alone owns the run directory, and its checkpoints hold the whole batch's
/// carried state, so a run resumes with any number of members that divides
/// B. Every failure is agreed on: a non-finite loss or gradient anywhere
/// stops every member at the same iteration with the same error, and a
/// member whose set-up or files fail makes the others stop with
/// `TrainingError.otherProcessFailed`.
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
    public convenience init(corpus: some TrainingText, options: TrainingOptions, outputDirectory: URL?,
                            initialWeights: Checkpoint? = nil, group: any ProcessGroup = SingleProcess()) throws(TrainingError) {
        var run: RunDirectory? = nil
        let prepared = Result { () throws(TrainingError) -> SetUp in
            var options = options
            try options.validate()
            try Self.checkShare(options.batchSize, group)
            if group.rank == 0 {
                run = try Self.open(outputDirectory) { url throws(RunDirectoryError) in try RunDirectory.openForNewRun(at: url) }
            }
            let survey = try Self.survey(corpus)
            let vocabulary = survey.vocabulary
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
            let (batches, fingerprint) = try Self.batch(corpus, survey, options, group, configuration)
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
            return SetUp(options: options, vocabulary: vocabulary, batches: batches, model: model,
                         corpusLength: survey.characterCount, runID: run?.runID ?? RunProgress.newRunID(),
                         corpusFingerprint: fingerprint,
                         progress: Progress(carried: RecurrentState(configuration: configuration, batchSize: batches.streams.count)))
        }
        let setUp = try Self.agree(on: prepared, group: group, run: run)
        self.init(setUp, runDirectory: run, group: group)
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
    public convenience init(resuming checkpoint: Checkpoint, corpus: some TrainingText, outputDirectory: URL?, maxIterations: Int? = nil,
                            keepBest: Int? = nil, patience: Int? = nil, group: any ProcessGroup = SingleProcess()) throws(TrainingError) {
        var run: RunDirectory? = nil
        let prepared = Result { () throws(TrainingError) -> SetUp in
            guard let resume = checkpoint.resumeState, var options = checkpoint.trainingOptions, let saved = checkpoint.progress else {
                throw .incompatible(.weightsOnly, resuming: true)
            }
            options.maxIterations = maxIterations ?? options.maxIterations
            options.keepBest = keepBest ?? options.keepBest
            options.patience = patience ?? options.patience
            try options.validate()
            try Self.checkShare(options.batchSize, group)
            if let patience = options.patience, let waited = saved.validationsSinceBest, waited >= patience {
                throw .patienceExhausted(iteration: saved.iteration, validations: waited, patience: patience)
            }
            let identity = saved.runIdentity(options: checkpoint.trainingOptions ?? options)
            if group.rank == 0 {
                run = try Self.open(outputDirectory) { url throws(RunDirectoryError) in
                    try RunDirectory.openForResume(at: url, runIdentity: identity)
                }
            }
            let survey = try Self.survey(corpus)
            let vocabulary = survey.vocabulary
            guard vocabulary == checkpoint.vocabulary else {
                throw TrainingError.incompatible(.vocabulary(corpus: vocabulary, checkpoint: checkpoint.vocabulary), resuming: true)
            }
            let (batches, fingerprint) = try Self.batch(corpus, survey, options, group, checkpoint.configuration)
            guard saved.trainingBatches == batches.trainingBatchCount, saved.corpusCharacters == survey.characterCount,
                saved.corpusFingerprint == fingerprint
            else {
                throw TrainingError.incompatible(.otherText(
                    runCharacters: saved.corpusCharacters, runBatches: saved.trainingBatches,
                    corpusCharacters: survey.characterCount, corpusBatches: batches.trainingBatchCount), resuming: true)
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
            guard resume.carriedState.batchSize == options.batchSize else {
                throw TrainingError.incompatible(.carriedState(streams: resume.carriedState.batchSize, batchSize: options.batchSize), resuming: true)
            }
            return SetUp(options: options, vocabulary: vocabulary, batches: batches, model: model,
                         corpusLength: survey.characterCount, runID: saved.runID ?? identity, corpusFingerprint: fingerprint,
                         progress: Progress(iteration: saved.iteration, epochLossSum: saved.epochLossSum,
                                            bestValidation: saved.bestValidationLoss,
                                            carried: resume.carriedState.streams(batches.streams, configuration: model.configuration),
                                            resumedFrom: saved.iteration, validationsSinceBest: saved.validationsSinceBest ?? 0))
        }
        let setUp = try Self.agree(on: prepared, group: group, run: run)
        self.init(setUp, runDirectory: run, group: group)
    }

    /// Everything a trainer starts from.
    private struct SetUp {
        var options: TrainingOptions
        var vocabulary: Vocabulary
        var batches: BatchedCorpus
        var model: Model
        var corpusLength: Int
        var runID: String
        var corpusFingerprint: String
        var progress: Progress
    }

    private init(_ setUp: SetUp, runDirectory: RunDirectory?, group: any ProcessGroup) {
        self.options = setUp.options
        self.vocabulary = setUp.vocabulary
        self.batches = setUp.batches
        self.model = setUp.model
        self.corpusLength = setUp.corpusLength
        self.runDirectory = runDirectory
        self.runID = setUp.runID
        self.corpusFingerprint = setUp.corpusFingerprint
        self.progress = setUp.progress
        self.group = group
    }

    /// Every member's set-up outcome, agreed: this member's own error if it
    /// failed, `.otherProcessFailed` if only another did. A run directory
    /// this member opened is abandoned on any failure.
    private static func agree(on outcome: Result<SetUp, TrainingError>, group: any ProcessGroup, run: RunDirectory?) throws(TrainingError) -> SetUp {
        do {
            try agree(failed: (try? outcome.get()) == nil, group: group)
            let setUp = try outcome.get()
            try agreeOnText(setUp, group: group)
            return setUp
        } catch {
            run?.abandon()
            throw error
        }
    }

    /// Every member must train on the same text (a copy of the corpus on
    /// each host): compares the fingerprints and lengths.
    /// - Throws: `.processesDisagreeOnText` naming the members whose text differs from member 0's.
    private static func agreeOnText(_ setUp: SetUp, group: any ProcessGroup) throws(TrainingError) {
        guard group.size > 1 else { return }
        var hash = FNV1a()
        hash.add(UInt32(truncatingIfNeeded: setUp.corpusLength))
        hash.add(UInt32(truncatingIfNeeded: setUp.corpusLength >> 32))
        for character in setUp.corpusFingerprint.utf8 { hash.add(UInt32(character)) }
        let differing: [Int]
        do { differing = try group.ranksDiffering(hash.hash) } catch { throw .processGroup(error) }
        if !differing.isEmpty { throw .processesDisagreeOnText(ranks: differing) }
    }

    /// Throws `.otherProcessFailed` on every member that did not fail when
    /// any member did (each then throws its own error); returns when none
    /// did. Every member calls it at the same point.
    private static func agree(failed: Bool, group: any ProcessGroup) throws(TrainingError) {
        let failures: Int
        do { failures = try group.countFailures(failed) } catch { throw .processGroup(error) }
        if failures > 0 && !failed { throw .otherProcessFailed(count: failures) }
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
            bestValidationLoss: progress.bestValidation.isFinite ? progress.bestValidation : nil, runtime: ComputeRuntime.current,
            processCount: group.size)))

        var history = LossHistory()
        try agreeOnFiles { () throws(TrainingError) in
            do throws(RunDirectoryError) {
                for record in try runDirectory?.startMetrics(after: progress.iteration) ?? [] { history.add(record) }
            } catch {
                throw .runDirectory(error)
            }
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
            let step = try trainStep(on: batches.trainingBatch(index), iteration: iteration, learningRate: learningRate)
            let seconds = (ContinuousClock.now - start).seconds
            stepSeconds.append(seconds)
            progress.epochLossSum += Double(step.loss)
            let runningLoss = Float(progress.epochLossSum / Double(index + 1))
            let report = IterationReport(
                epoch: epoch, epochs: options.epochs, iteration: iteration, totalIterations: total,
                batchLoss: step.loss, runningLoss: runningLoss, gradientNorm: step.gradientNorm,
                learningRate: learningRate, secondsPerBatch: seconds, characters: options.batchSize * options.steps,
                communicationSeconds: step.communicationSeconds)
            onEvent(.iteration(report))
            var records = [MetricsRecord.iteration(
                iteration, epoch: epoch, loss: step.loss, runningLoss: runningLoss, gradientNorm: step.gradientNorm,
                learningRate: learningRate, seconds: seconds, characters: report.characters,
                communicationSeconds: step.communicationSeconds)]

            let stopping = try anyMemberStopping(stop?.isRequested == true) && iteration < total
            var outOfPatience = false
            var wholeCarried: RecurrentState? = nil
            if iteration % options.saveEvery == 0 || iteration == total || stopping {
                do {
                    lastValidation = try validationLoss()
                } catch .model(.nonFinite(let value)) {
                    throw .diverged(iteration: iteration, value)
                }
                try checkWeightsAgree(iteration: iteration)
                wholeCarried = try gatherCarried()
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
            try agreeOnFiles { () throws(TrainingError) in
                do throws(RunDirectoryError) { try runDirectory?.appendMetrics(records) } catch { throw .runDirectory(error) }
                if let runDirectory, let wholeCarried {
                    let chart = LossChart(curves: [history.curve(name: options.summary)],
                                          title: "Loss: \(runDirectory.url.lastPathComponent)")
                    do throws(RunDirectoryError) { try runDirectory.writeChart(chart.svg()) } catch { throw .runDirectory(error) }
                    let saved = try saveCheckpoint(
                        in: runDirectory, epoch: epoch, validationLoss: lastValidation, trainingLoss: runningLoss,
                        learningRate: learningRate, carried: wholeCarried)
                    lastCheckpoint = saved.url
                    onEvent(.checkpointSaved(url: saved.url, isBest: saved.isBest))
                    if let keep = options.keepBest {
                        do throws(RunDirectoryError) { try runDirectory.prune(keeping: keep) } catch { throw .runDirectory(error) }
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
    /// through all validation batches, no dropout. With a group of several
    /// processes, every member calls it: each evaluates its own streams and
    /// the group averages them (the shares are equal, so this is the mean
    /// over all streams).
    public func validationLoss() throws(TrainingError) -> Float {
        let own: Float
        do {
            own = try Self.validationLoss(of: model, on: batches)
        } catch .nonFinite(.loss(let value)) {
            own = value
        } catch {
            throw .model(error)
        }
        let loss = try meanOverGroup(own)
        guard loss.isFinite else { throw .model(.nonFinite(.loss(loss))) }
        return loss
    }

    /// Mean loss of `model` over the validation split of the streams `batches` holds, as training reports it.
    public static func validationLoss(of model: Model, on batches: BatchedCorpus) throws(ModelError) -> Float {
        var state = RecurrentState(configuration: model.configuration, batchSize: batches.streams.count)
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

    // MARK: - One step across the group

    /// One training step on every member: the gradient of this member's
    /// streams, summed over the group and divided by its size (the mean
    /// gradient over the whole batch), then clipping and Adam, the same on
    /// every member. Returns the mean loss over the whole batch, the norm
    /// before clipping, and the time spent summing (several members only).
    /// - Throws: `.diverged` on every member alike when the loss or the
    ///   gradient is not finite on any of them.
    private func trainStep(on batch: Batch, iteration: Int, learningRate: Float) throws(TrainingError)
        -> (loss: Float, gradientNorm: Float, communicationSeconds: Double?)
    {
        let own: Float
        do {
            own = try model.computeGradients(
                on: batch, state: &progress.carried, keepProbability: options.keepProbability,
                dropoutSeed: dropoutSeed(iteration: iteration))
        } catch {
            throw .model(error)
        }
        var loss = own
        var communication: Double? = nil
        if group.size > 1 {
            let start = ContinuousClock.now
            do { try group.sum(model.gradients.buffer) } catch { throw .processGroup(error) }
            loss = try meanOverGroup(own)
            communication = (ContinuousClock.now - start).seconds
            let share = 1 / Float(group.size)
            for index in model.gradients.buffer.indices { model.gradients.buffer[index] *= share }
        }
        guard loss.isFinite else { throw .diverged(iteration: iteration, .loss(loss)) }
        do {
            let norm = try model.applyGradients(clipNorm: options.gradientClip, adam: AdamOptions(learningRate: learningRate))
            return (loss, norm, communication)
        } catch .nonFinite(.gradientNorm(let norm, _)) {
            throw .diverged(iteration: iteration, .gradientNorm(norm, loss: loss))
        } catch .nonFinite(let value) {
            throw .diverged(iteration: iteration, value)
        } catch {
            throw .model(error)
        }
    }

    /// Whether any member was asked to stop (a signal may reach one
    /// process of several, or reach them between two iterations).
    private func anyMemberStopping(_ requested: Bool) throws(TrainingError) -> Bool {
        guard group.size > 1 else { return requested }
        do { return try group.sum([requested ? 1 : 0])[0] > 0 } catch { throw .processGroup(error) }
    }

    /// The mean of `value` over the group's members.
    private func meanOverGroup(_ value: Float) throws(TrainingError) -> Float {
        guard group.size > 1 else { return value }
        do { return Float(try group.sum([Double(value)])[0] / Double(group.size)) } catch { throw .processGroup(error) }
    }

    /// Runs `write` (member 0's files: metrics, chart, checkpoints) and
    /// agrees on its outcome, so a member whose files fail does not leave
    /// the others waiting at the next step.
    private func agreeOnFiles(_ write: () throws(TrainingError) -> Void) throws(TrainingError) {
        var failure: TrainingError? = nil
        do { try write() } catch { failure = error }
        try Self.agree(failed: failure != nil, group: group)
        if let failure { throw failure }
    }

    /// Compares a hash of every member's weights; they must be identical
    /// (the same summed gradient, the same clip and Adam arithmetic).
    /// - Throws: `.processesDisagree` naming the members whose weights differ from member 0's.
    private func checkWeightsAgree(iteration: Int) throws(TrainingError) {
        guard group.size > 1 else { return }
        let differing: [Int]
        do { differing = try group.ranksDiffering(model.parameterHash) } catch { throw .processGroup(error) }
        if !differing.isEmpty { throw .processesDisagree(iteration: iteration, ranks: differing) }
    }

    /// The carried state of the whole batch, on member 0 (`nil` on the
    /// others), for a checkpoint.
    private func gatherCarried() throws(TrainingError) -> RecurrentState? {
        guard group.size > 1 else { return progress.carried }
        let values: [Float]
        do {
            values = try progress.carried.values.withUnsafeBufferPointer { (own) throws(ProcessGroupError) in try group.gather(own) }
        } catch {
            throw .processGroup(error)
        }
        guard group.rank == 0 else { return nil }
        let share = progress.carried.values.count
        let parts = (0..<group.size).map { member in
            RecurrentState(values: Array(values[member * share ..< (member + 1) * share]), batchSize: progress.carried.batchSize)
        }
        return RecurrentState(joining: parts, configuration: model.configuration)
    }

    // MARK: - Checkpoints

    /// Writes a checkpoint at the current iteration, straight from the
    /// model's blocks (no copy of the model is made).
    private func saveCheckpoint(
        in runDirectory: RunDirectory, epoch: Int, validationLoss: Float, trainingLoss: Float, learningRate: Float,
        carried: RecurrentState
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

    /// Refuses a batch the group cannot share out equally.
    private static func checkShare(_ batchSize: Int, _ group: any ProcessGroup) throws(TrainingError) {
        guard batchSize % group.size == 0 else { throw .batchNotShared(batchSize: batchSize, processes: group.size) }
    }

    /// The corpus's alphabet and length.
    private static func survey(_ corpus: some TrainingText) throws(TrainingError) -> TextSurvey {
        do { return try corpus.survey() } catch { throw .corpus(error) }
    }

    /// Lays the text out in batches, checks that the model, its activations
    /// and this member's stretch of the text fit in the memory the process
    /// may take, then encodes the stretch (and fingerprints the whole text).
    private static func batch(
        _ corpus: some TrainingText, _ survey: TextSurvey, _ options: TrainingOptions, _ group: any ProcessGroup,
        _ configuration: ModelConfiguration
    ) throws(TrainingError) -> (BatchedCorpus, fingerprint: String) {
        do {
            let streams = group.streams(ofBatch: options.batchSize)
            // The stretch is at most this member's share of the text, plus one.
            try checkMemory(configuration, options, streams: streams.count,
                            tokenBytes: (survey.characterCount / group.size + 1) * TokenStore(alphabetSize: survey.vocabulary.count).width)
            let layout = try BatchLayout(
                characterCount: survey.characterCount, batchSize: options.batchSize, steps: options.steps,
                validationFraction: options.validationFraction)
            let stretch = try layout.stretch(of: streams)
            let encoded: EncodedStretch
            do { encoded = try corpus.encode(stretch, with: survey.vocabulary) } catch { throw TrainingError.corpus(error) }
            return (try BatchedCorpus(layout: layout, streams: streams, tokens: encoded.tokens), encoded.fingerprint)
        } catch let error as BatchingError {
            throw .batching(error)
        } catch let error as TrainingError {
            throw error
        } catch {
            preconditionFailure("unexpected \(error)")
        }
    }

    /// Refuses a run whose model, activations and text need more memory
    /// than the process may take, before any of it is allocated.
    private static func checkMemory(_ configuration: ModelConfiguration, _ options: TrainingOptions, streams: Int, tokenBytes: Int) throws(TrainingError) {
        do {
            try configuration.validate()
            let needed = MemoryBudget.sum(
                try configuration.trainingBytes(batchSize: streams, steps: options.steps),
                tokenBytes)  // the stretch of the text the batches hold
            try MemoryBudget.check(requiredBytes: needed)
        } catch let error as MemoryShortfall {
            throw .insufficientMemory(error)
        } catch let error as ModelError {
            throw .model(error)
        } catch {
            preconditionFailure("unexpected \(error)")
        }
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
