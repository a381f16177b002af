import Foundation

/// Runs the original notebook's training loop on a corpus.
///
/// Per epoch the carried LSTM state starts at zero and passes from batch to
/// batch; every `saveEvery` iterations (and at the last one) the validation
/// split is evaluated from a zero state carried through its batches, without
/// dropout, and a checkpoint `i{iteration}_l{hidden}_v{loss}.safetensors` is
/// written, with `best.safetensors` kept as the lowest validation loss so
/// far. Progress goes to the event callback; the trainer prints nothing.
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

    /// Checks everything and builds the model; writes nothing.
    /// - Throws: `TrainingError` naming the first problem (an option out of
    ///   range, an output path that is a file, a corpus too short).
    public init(corpus: Corpus, options: TrainingOptions, outputDirectory: URL?) throws(TrainingError) {
        try options.validate()
        if let outputDirectory {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: outputDirectory.path, isDirectory: &isDirectory),
                !isDirectory.boolValue
            {
                throw .outputIsFile(path: outputDirectory.path)
            }
        }
        let vocabulary = Vocabulary(corpus: corpus.scalars)
        guard let tokens = try? vocabulary.encode(corpus.scalars) else {
            preconditionFailure("a corpus always encodes with its own vocabulary")
        }
        do {
            batches = try BatchedCorpus(
                tokens: tokens, batchSize: options.batchSize, steps: options.steps,
                validationFraction: options.validationFraction)
        } catch {
            throw .batching(error)
        }
        let configuration = ModelConfiguration(
            vocabularySize: vocabulary.count, hiddenSize: options.hiddenSize, layerCount: options.layerCount)
        do {
            model = try Model(configuration: configuration, seed: options.seed)
        } catch {
            throw .model(error)
        }
        self.options = options
        self.vocabulary = vocabulary
        self.corpusLength = corpus.count
        self.outputDirectory = outputDirectory
    }

    /// Iterations the run will make: all epochs, or `maxIterations` if fewer.
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
        }
        let total = totalIterations
        onEvent(.started(TrainingPlan(
            corpusLength: corpusLength, vocabularySize: vocabulary.count, parameterCount: model.parameterCount,
            options: options, trainingBatches: batches.trainingBatchCount,
            validationBatches: batches.validationBatchCount, totalIterations: total,
            runtime: ComputeRuntime.current)))

        let adam = AdamOptions(learningRate: options.learningRate)
        var state = RecurrentState(configuration: model.configuration, batchSize: options.batchSize)
        var iteration = 0
        var lastValidation = Float.nan
        var bestValidation = Float.infinity
        var stepSeconds: [Double] = []
        stepSeconds.reserveCapacity(total)

        epochs: for epoch in 1...options.epochs {
            state.reset()
            var lossSum: Double = 0
            for index in 0..<batches.trainingBatchCount {
                if iteration == total { break epochs }
                iteration += 1
                let batch = batches.trainingBatch(index)
                let start = ContinuousClock.now
                let step: (loss: Float, gradientNorm: Float)
                do {
                    step = try model.trainStep(
                        on: batch, state: &state, keepProbability: options.keepProbability,
                        dropoutSeed: dropoutSeed(iteration: iteration), clipNorm: options.gradientClip, adam: adam)
                } catch {
                    throw .model(error)
                }
                let seconds = (ContinuousClock.now - start).seconds
                stepSeconds.append(seconds)
                lossSum += Double(step.loss)
                onEvent(.iteration(IterationReport(
                    epoch: epoch, epochs: options.epochs, iteration: iteration, totalIterations: total,
                    batchLoss: step.loss, runningLoss: Float(lossSum / Double(index + 1)),
                    gradientNorm: step.gradientNorm, secondsPerBatch: seconds)))

                if iteration % options.saveEvery == 0 || iteration == total {
                    lastValidation = try validationLoss()
                    onEvent(.validated(iteration: iteration, loss: lastValidation))
                    let isBest = lastValidation < bestValidation
                    bestValidation = min(bestValidation, lastValidation)
                    if let outputDirectory {
                        let url = try saveCheckpoint(
                            in: outputDirectory, iteration: iteration, epoch: epoch,
                            validationLoss: lastValidation, trainingLoss: Float(lossSum / Double(index + 1)),
                            isBest: isBest)
                        onEvent(.checkpointSaved(url: url, isBest: isBest))
                    }
                }
            }
        }
        let summary = TrainingSummary(
            iterations: iteration, finalValidationLoss: lastValidation, bestValidationLoss: bestValidation,
            medianSecondsPerBatch: Self.median(stepSeconds))
        onEvent(.finished(summary))
        return summary
    }

    /// Mean loss over the validation split: zero initial state carried
    /// through all validation batches, no dropout.
    public func validationLoss() throws(TrainingError) -> Float {
        var state = RecurrentState(configuration: model.configuration, batchSize: options.batchSize)
        var sum: Double = 0
        for index in 0..<batches.validationBatchCount {
            do {
                sum += Double(try model.loss(on: batches.validationBatch(index), state: &state))
            } catch {
                throw .model(error)
            }
        }
        return Float(sum / Double(batches.validationBatchCount))
    }

    /// The dropout seed of an iteration: a pure function of the run's seed
    /// and the iteration number, so a run is reproducible (and resumable).
    func dropoutSeed(iteration: Int) -> UInt64 {
        var z = options.seed &+ 0xD1B5_4A32_D192_ED03 &* UInt64(iteration)
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private func saveCheckpoint(
        in directory: URL, iteration: Int, epoch: Int, validationLoss: Float, trainingLoss: Float, isBest: Bool
    ) throws(TrainingError) -> URL {
        let metadata: [String: String] = [
            "batch_size": String(options.batchSize),
            "steps": String(options.steps),
            "epochs": String(options.epochs),
            "learning_rate": String(options.learningRate),
            "keep_prob": String(options.keepProbability),
            "grad_clip": String(options.gradientClip),
            "val_frac": String(options.validationFraction),
            "save_every": String(options.saveEvery),
            "seed": String(options.seed),
            "iteration": String(iteration),
            "epoch": String(epoch),
            "val_loss": String(validationLoss),
            "train_loss": String(trainingLoss),
        ]
        let checkpoint = Checkpoint(model: model, vocabulary: vocabulary, metadata: metadata)
        let name = String(format: "i%d_l%d_v%.3f.safetensors", iteration, options.hiddenSize, validationLoss)
        let url = directory.appendingPathComponent(name)
        do {
            let bytes = checkpoint.serialized()
            try AtomicFile.write(bytes, to: url)
            if isBest { try AtomicFile.write(bytes, to: directory.appendingPathComponent("best.safetensors")) }
        } catch {
            throw .checkpoint(error)
        }
        return url
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
