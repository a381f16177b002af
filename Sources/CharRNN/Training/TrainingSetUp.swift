import Foundation

/// Everything a trainer starts from, and the checks that come before any
/// training: the options, the corpus's survey and batching, the memory the
/// run will take, and the model, new or restored from a checkpoint.
///
/// A set-up is made on every member of a process group; member 0 also opens
/// the run directory (`RunDirectory.openForNewRun` or `openForResume`), which
/// it hands back through `run` even when a later check fails, so the caller
/// can abandon it once the members have agreed (`ProcessGroupStep.agree`).
struct TrainingSetUp {
    /// The run's options, with the cosine schedule's end fixed.
    var options: TrainingOptions
    /// The corpus's alphabet.
    var vocabulary: Vocabulary
    /// This member's streams of the corpus, in batches.
    var batches: BatchedCorpus
    /// The model, its optimizer state restored when resuming.
    var model: Model
    /// Characters in the corpus.
    var corpusLength: Int
    /// The run's identity.
    var runID: String
    /// The whole corpus's fingerprint.
    var corpusFingerprint: String
    /// Where the run stands.
    var progress: Trainer.Progress

    /// A new run (see `Trainer.init(corpus:options:outputDirectory:initialWeights:group:)`).
    static func newRun(
        corpus: some TrainingText, options: TrainingOptions, outputDirectory: URL?, initialWeights: Checkpoint?,
        group: any ProcessGroup, run: inout RunDirectory?
    ) throws(TrainingError) -> TrainingSetUp {
        var options = options
        try options.validate()
        try checkShare(options.batchSize, group)
        if group.rank == 0 {
            run = try open(outputDirectory) { url throws(RunDirectoryError) in try RunDirectory.openForNewRun(at: url) }
        }
        let survey = try survey(corpus)
        let vocabulary = survey.vocabulary
        let configuration = ModelConfiguration(
            vocabularySize: vocabulary.count, hiddenSize: options.hiddenSize, layerCount: options.layerCount,
            cell: options.cell)
        if let initialWeights {
            guard initialWeights.vocabulary == vocabulary else {
                throw .incompatible(.vocabulary(corpus: vocabulary, checkpoint: initialWeights.vocabulary), resuming: false)
            }
            guard initialWeights.configuration == configuration else {
                throw .incompatible(.shape(checkpoint: initialWeights.configuration, requested: configuration), resuming: false)
            }
        }
        let (batches, fingerprint) = try batch(corpus, survey, options, group, configuration)
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
            throw .model(error)
        }
        return TrainingSetUp(
            options: options, vocabulary: vocabulary, batches: batches, model: model,
            corpusLength: survey.characterCount, runID: run?.runID ?? RunProgress.newRunID(),
            corpusFingerprint: fingerprint,
            progress: Trainer.Progress(carried: RecurrentState(configuration: configuration, batchSize: batches.streams.count)))
    }

    /// A run continued from `checkpoint` (see `Trainer.init(resuming:corpus:outputDirectory:maxIterations:keepBest:patience:group:)`).
    static func resuming(
        _ checkpoint: Checkpoint, corpus: some TrainingText, outputDirectory: URL?, maxIterations: Int?, keepBest: Int?,
        patience: Int?, group: any ProcessGroup, run: inout RunDirectory?
    ) throws(TrainingError) -> TrainingSetUp {
        guard let resume = checkpoint.resumeState, var options = checkpoint.trainingOptions, let saved = checkpoint.progress else {
            throw .incompatible(.weightsOnly, resuming: true)
        }
        options.maxIterations = maxIterations ?? options.maxIterations
        options.keepBest = keepBest ?? options.keepBest
        options.patience = patience ?? options.patience
        try options.validate()
        try checkShare(options.batchSize, group)
        if let patience = options.patience, let waited = saved.validationsSinceBest, waited >= patience {
            throw .patienceExhausted(iteration: saved.iteration, validations: waited, patience: patience)
        }
        let identity = saved.runIdentity(options: checkpoint.trainingOptions ?? options)
        if group.rank == 0 {
            run = try open(outputDirectory) { url throws(RunDirectoryError) in
                try RunDirectory.openForResume(at: url, runIdentity: identity)
            }
        }
        let survey = try survey(corpus)
        let vocabulary = survey.vocabulary
        guard vocabulary == checkpoint.vocabulary else {
            throw .incompatible(.vocabulary(corpus: vocabulary, checkpoint: checkpoint.vocabulary), resuming: true)
        }
        let (batches, fingerprint) = try batch(corpus, survey, options, group, checkpoint.configuration)
        guard saved.trainingBatches == batches.trainingBatchCount, saved.corpusCharacters == survey.characterCount,
            saved.corpusFingerprint == fingerprint
        else {
            throw .incompatible(
                .otherText(
                    runCharacters: saved.corpusCharacters, runBatches: saved.trainingBatches,
                    corpusCharacters: survey.characterCount, corpusBatches: batches.trainingBatchCount), resuming: true)
        }
        let total = options.totalIterations(trainingBatches: batches.trainingBatchCount)
        guard total > saved.iteration else {
            throw .alreadyFinished(iteration: saved.iteration, totalIterations: total)
        }
        let model: Model
        do throws(ModelError) {
            model = try checkpoint.makeModel()
            try model.restoreOptimizer(state: resume.optimizerState, step: resume.optimizerStep)
        } catch {
            throw .model(error)
        }
        guard resume.carriedState.batchSize == options.batchSize else {
            throw .incompatible(.carriedState(streams: resume.carriedState.batchSize, batchSize: options.batchSize), resuming: true)
        }
        let progress = Trainer.Progress(
            iteration: saved.iteration, epochLossSum: saved.epochLossSum, bestValidation: saved.bestValidationLoss,
            carried: resume.carriedState.streams(batches.streams, configuration: model.configuration),
            resumedFrom: saved.iteration, validationsSinceBest: saved.validationsSinceBest ?? 0)
        return TrainingSetUp(
            options: options, vocabulary: vocabulary, batches: batches, model: model, corpusLength: survey.characterCount,
            runID: saved.runID ?? identity, corpusFingerprint: fingerprint, progress: progress)
    }

    // MARK: - Checks

    /// Opens the output directory with `opening`, if there is one.
    private static func open(_ url: URL?, _ opening: (URL) throws(RunDirectoryError) -> RunDirectory) throws(TrainingError)
        -> RunDirectory?
    {
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
            try checkMemory(
                configuration, options, streams: streams.count,
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
    private static func checkMemory(_ configuration: ModelConfiguration, _ options: TrainingOptions, streams: Int, tokenBytes: Int)
        throws(TrainingError)
    {
        do {
            try configuration.validate()
            let needed = MemoryBudget.sum(
                try configuration.trainingBytes(batchSize: streams, steps: options.steps, precision: options.precision),
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
}
