import Foundation

/// Runs the original notebook's training loop on a corpus.
///
/// Per epoch the carried LSTM state starts at zero and passes from batch to
/// batch; every `saveEvery` iterations (and at the last one) the validation
/// split is evaluated from a zero state carried through its batches, without
/// dropout, and a checkpoint `i{iteration}_l{hidden}_v{loss}.safetensors` is
/// written, with `best.safetensors` kept as the lowest validation loss so
/// far. Each checkpoint also holds what is needed to continue the run
/// exactly (see `init(resuming:corpus:outputDirectory:maxIterations:keepBest:)`).
/// Progress goes to the event callback; the trainer prints nothing.
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
    /// Where checkpoints go; `nil` writes none.
    public let outputDirectory: URL?

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
    }

    /// Checks everything and builds the model; writes nothing.
    /// - Parameters:
    ///   - initialWeights: start from this checkpoint's weights (only) instead
    ///     of a fresh initialisation; its vocabulary must be the corpus's and
    ///     its shape the options'.
    /// - Throws: `TrainingError` naming the first problem (an option out of
    ///   range, an output path that is a file, a corpus too short).
    public convenience init(corpus: Corpus, options: TrainingOptions, outputDirectory: URL?, initialWeights: Checkpoint? = nil) throws(TrainingError) {
        try options.validate()
        try Self.checkOutput(outputDirectory)
        let vocabulary = Vocabulary(corpus: corpus.scalars)
        let tokens = Self.encode(corpus, vocabulary)
        let batches = try Self.batch(tokens, options)
        let configuration = ModelConfiguration(
            vocabularySize: vocabulary.count, hiddenSize: options.hiddenSize, layerCount: options.layerCount)
        if let initialWeights {
            try Self.checkCompatible(initialWeights, vocabulary: vocabulary, configuration: configuration)
        }
        let model: Model
        do {
            if let initialWeights {
                model = try initialWeights.makeModel()
            } else {
                model = try Model(configuration: configuration, seed: options.seed)
            }
        } catch {
            throw .model(error)
        }
        self.init(options: options, vocabulary: vocabulary, batches: batches, model: model, corpusLength: corpus.count,
                  outputDirectory: outputDirectory, corpusFingerprint: Self.fingerprint(tokens),
                  progress: Progress(carried: RecurrentState(configuration: configuration, batchSize: options.batchSize)))
    }

    /// Continues the run a checkpoint was written by, exactly where it
    /// stopped: weights, Adam's moments and step, the carried LSTM state, the
    /// iteration (and so the epoch, the position in the batch stream and the
    /// dropout seeds), the best validation loss and the log's running mean.
    /// Hyperparameters come from the checkpoint. Iterations count from the
    /// start of the run, so `maxIterations` is a total, not a number more.
    /// - Throws: `TrainingError.cannotResume` if the checkpoint has no
    ///   training state, or the corpus is not the one the run used (its
    ///   vocabulary, length or content differ).
    public convenience init(resuming checkpoint: Checkpoint, corpus: Corpus, outputDirectory: URL?, maxIterations: Int? = nil, keepBest: Int? = nil) throws(TrainingError) {
        guard let resume = checkpoint.resumeState else {
            throw .cannotResume("it holds weights only, no training state (use --init-from to start a new run from its weights)")
        }
        var options = try TrainingOptions(checkpointMetadata: checkpoint.metadata)
        options.maxIterations = maxIterations
        options.keepBest = keepBest
        try options.validate()
        try Self.checkOutput(outputDirectory)
        let vocabulary = Vocabulary(corpus: corpus.scalars)
        guard vocabulary == checkpoint.vocabulary else {
            throw .cannotResume(Self.describeDifference(corpus: vocabulary, checkpoint: checkpoint.vocabulary))
        }
        let tokens = Self.encode(corpus, vocabulary)
        let batches = try Self.batch(tokens, options)
        let meta = checkpoint.metadata
        guard let iteration = meta["iteration"].flatMap(Int.init), iteration >= 1,
            let lossSum = meta["epoch_loss_sum"].flatMap(Double.init),
            let best = meta["best_val_loss"].flatMap(Float.init),
            let savedBatches = meta["training_batches"].flatMap(Int.init)
        else {
            throw .cannotResume("its metadata lacks the run's position (iteration, epoch_loss_sum, best_val_loss, training_batches)")
        }
        guard savedBatches == batches.trainingBatchCount, meta["corpus_fingerprint"] == Self.fingerprint(tokens) else {
            throw .cannotResume("the run trained on another text (\(meta["corpus_characters"] ?? "?") characters, "
                + "\(savedBatches) training batches per epoch; this one has \(corpus.count) characters, "
                + "\(batches.trainingBatchCount) batches, or the same length with other content)")
        }
        guard resume.carriedState.batchSize == options.batchSize else {
            throw .cannotResume("its carried state is for \(resume.carriedState.batchSize) streams, its batch size is \(options.batchSize)")
        }
        let model: Model
        do {
            model = try checkpoint.makeModel()
            try model.restoreOptimizer(state: resume.optimizerState, step: resume.optimizerStep)
        } catch {
            throw .model(error)
        }
        self.init(options: options, vocabulary: vocabulary, batches: batches, model: model, corpusLength: corpus.count,
                  outputDirectory: outputDirectory, corpusFingerprint: Self.fingerprint(tokens),
                  progress: Progress(iteration: iteration, epochLossSum: lossSum, bestValidation: best,
                                     carried: resume.carriedState, resumedFrom: iteration))
        guard totalIterations > iteration else {
            throw .invalidOption("the run is already at iteration \(iteration) of \(totalIterations); "
                + "give --max-iterations above \(iteration) (iterations count from the start of the run)")
        }
    }

    private init(options: TrainingOptions, vocabulary: Vocabulary, batches: BatchedCorpus, model: Model, corpusLength: Int,
                 outputDirectory: URL?, corpusFingerprint: String, progress: Progress) {
        self.options = options
        self.vocabulary = vocabulary
        self.batches = batches
        self.model = model
        self.corpusLength = corpusLength
        self.outputDirectory = outputDirectory
        self.corpusFingerprint = corpusFingerprint
        self.progress = progress
    }

    /// Iterations the run will make in all: all epochs, or `maxIterations` if fewer.
    public var totalIterations: Int {
        min(options.epochs * batches.trainingBatchCount, options.maxIterations ?? Int.max)
    }

    /// Trains to the end, reporting through `onEvent`.
    @discardableResult
    public func run(onEvent: (TrainingEvent) -> Void = { _ in }) throws(TrainingError) -> TrainingSummary {
        if let outputDirectory {
            do {
                try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
            } catch {
                throw .cannotCreateOutput(path: outputDirectory.path, reason: (error as NSError).localizedDescription)
            }
            AtomicFile.removeStaleTemporaries(in: outputDirectory)
        }
        let total = totalIterations
        let perEpoch = batches.trainingBatchCount
        onEvent(.started(TrainingPlan(
            corpusLength: corpusLength, vocabularySize: vocabulary.count, parameterCount: model.parameterCount,
            options: options, trainingBatches: perEpoch, validationBatches: batches.validationBatchCount,
            totalIterations: total, resumedFromIteration: progress.resumedFrom, runtime: ComputeRuntime.current)))

        let adam = AdamOptions(learningRate: options.learningRate)
        var lastValidation = Float.nan
        var stepSeconds: [Double] = []
        while progress.iteration < total {
            let index = progress.iteration % perEpoch
            let epoch = progress.iteration / perEpoch + 1
            if index == 0 {
                progress.carried.reset()
                progress.epochLossSum = 0
            }
            progress.iteration += 1
            let iteration = progress.iteration
            let start = ContinuousClock.now
            let step: (loss: Float, gradientNorm: Float)
            do {
                step = try model.trainStep(
                    on: batches.trainingBatch(index), state: &progress.carried,
                    keepProbability: options.keepProbability, dropoutSeed: dropoutSeed(iteration: iteration),
                    clipNorm: options.gradientClip, adam: adam)
            } catch {
                throw .model(error)
            }
            let seconds = (ContinuousClock.now - start).seconds
            stepSeconds.append(seconds)
            progress.epochLossSum += Double(step.loss)
            let runningLoss = Float(progress.epochLossSum / Double(index + 1))
            onEvent(.iteration(IterationReport(
                epoch: epoch, epochs: options.epochs, iteration: iteration, totalIterations: total,
                batchLoss: step.loss, runningLoss: runningLoss, gradientNorm: step.gradientNorm,
                secondsPerBatch: seconds)))

            if iteration % options.saveEvery == 0 || iteration == total {
                lastValidation = try validationLoss()
                onEvent(.validated(iteration: iteration, loss: lastValidation))
                let isBest = lastValidation < progress.bestValidation
                progress.bestValidation = min(progress.bestValidation, lastValidation)
                if let outputDirectory {
                    let url = try saveCheckpoint(
                        in: outputDirectory, epoch: epoch, validationLoss: lastValidation,
                        trainingLoss: runningLoss, isBest: isBest)
                    onEvent(.checkpointSaved(url: url, isBest: isBest))
                    if let keep = options.keepBest { try pruneCheckpoints(in: outputDirectory, keeping: keep) }
                }
            }
        }
        let summary = TrainingSummary(
            iterations: progress.iteration, finalValidationLoss: lastValidation,
            bestValidationLoss: progress.bestValidation, medianSecondsPerBatch: Self.median(stepSeconds))
        onEvent(.finished(summary))
        return summary
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

    private func saveCheckpoint(
        in directory: URL, epoch: Int, validationLoss: Float, trainingLoss: Float, isBest: Bool
    ) throws(TrainingError) -> URL {
        // Never write weights that are not numbers (the step that would make
        // them so stops training first; this is the last line of defence).
        guard model.parametersAreFinite else {
            throw .model(.nonFinite(loss: trainingLoss, gradientNorm: .nan))
        }
        var metadata = options.metadata
        metadata["iteration"] = String(progress.iteration)
        metadata["epoch"] = String(epoch)
        metadata["val_loss"] = String(validationLoss)
        metadata["train_loss"] = String(trainingLoss)
        metadata["best_val_loss"] = String(progress.bestValidation)
        metadata["epoch_loss_sum"] = String(progress.epochLossSum)  // shortest exact round trip
        metadata["training_batches"] = String(batches.trainingBatchCount)
        metadata["corpus_characters"] = String(corpusLength)
        metadata["corpus_fingerprint"] = corpusFingerprint
        let resume = ResumeState(
            optimizerState: model.optimizerState.toArray(), optimizerStep: model.optimizerStep,
            carriedState: progress.carried)
        let checkpoint = Checkpoint(model: model, vocabulary: vocabulary, metadata: metadata, resumeState: resume)
        let url = directory.appendingPathComponent(
            String(format: "i%d_l%d_v%.3f.safetensors", progress.iteration, options.hiddenSize, validationLoss))
        do {
            let bytes = checkpoint.serialized()
            try AtomicFile.write(bytes, to: url)
            if isBest { try AtomicFile.write(bytes, to: directory.appendingPathComponent("best.safetensors")) }
        } catch {
            throw .checkpoint(error)
        }
        return url
    }

    /// Removes periodic checkpoints beyond the `keep` with the lowest
    /// validation loss (ties: the later iteration stays).
    private func pruneCheckpoints(in directory: URL, keeping keep: Int) throws(TrainingError) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let pattern = #/^i(\d+)_l\d+_v([0-9.]+|nan|inf)\.safetensors$/#
        let found = names.compactMap { name -> (name: String, iteration: Int, loss: Double)? in
            guard let match = name.wholeMatch(of: pattern), let iteration = Int(match.output.1) else { return nil }
            return (name, iteration, Double(match.output.2) ?? .infinity)
        }
        let ranked = found.sorted { $0.loss != $1.loss ? $0.loss < $1.loss : $0.iteration > $1.iteration }
        for stale in ranked.dropFirst(keep) {
            do {
                try FileManager.default.removeItem(at: directory.appendingPathComponent(stale.name))
            } catch {
                throw .checkpoint(CheckpointError(path: directory.appendingPathComponent(stale.name).path,
                                                  problem: .io("cannot remove: \((error as NSError).localizedDescription)")))
            }
        }
    }

    // MARK: - Set-up helpers

    private static func checkOutput(_ outputDirectory: URL?) throws(TrainingError) {
        guard let outputDirectory else { return }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: outputDirectory.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw .outputIsFile(path: outputDirectory.path)
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

    private static func checkCompatible(_ checkpoint: Checkpoint, vocabulary: Vocabulary, configuration: ModelConfiguration) throws(TrainingError) {
        guard checkpoint.vocabulary == vocabulary else {
            throw .cannotResume(describeDifference(corpus: vocabulary, checkpoint: checkpoint.vocabulary))
        }
        guard checkpoint.configuration == configuration else {
            let c = checkpoint.configuration
            throw .cannotResume("it is \(c.layerCount) layers of \(c.hiddenSize); the options ask for "
                + "\(configuration.layerCount) of \(configuration.hiddenSize) (pass --hidden \(c.hiddenSize) --layers \(c.layerCount))")
        }
    }

    /// Says which characters only one side has, or that the order differs.
    static func describeDifference(corpus: Vocabulary, checkpoint: Vocabulary) -> String {
        let mine = Set(corpus.scalars), theirs = Set(checkpoint.scalars)
        func list(_ scalars: [Unicode.Scalar]) -> String {
            scalars.prefix(10).map(Vocabulary.describe).joined(separator: ", ") + (scalars.count > 10 ? ", …" : "")
        }
        let onlyCorpus = corpus.scalars.filter { !theirs.contains($0) }
        let onlyCheckpoint = checkpoint.scalars.filter { !mine.contains($0) }
        var parts: [String] = []
        if !onlyCorpus.isEmpty { parts.append("\(onlyCorpus.count) only in the corpus (\(list(onlyCorpus)))") }
        if !onlyCheckpoint.isEmpty { parts.append("\(onlyCheckpoint.count) only in the checkpoint (\(list(onlyCheckpoint)))") }
        if parts.isEmpty { parts.append("the same characters in another order") }
        return "the corpus's vocabulary (\(corpus.count) characters) differs from the checkpoint's (\(checkpoint.count)): "
            + parts.joined(separator: "; ")
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
