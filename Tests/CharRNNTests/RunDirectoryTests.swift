import Foundation
import Testing

@testable import CharRNN

/// Protects a run's files: one run per directory, one writer at a time, the
/// best and the latest, pruning by exact loss, clean stops.
@Suite("Run directory")
struct RunDirectoryTests {
    static let corpus = Corpus(text: sampleText(length: 600))  // 12 training batches per epoch

    static func options(seed: UInt64 = 9, maxIterations: Int, saveEvery: Int) -> TrainingOptions {
        var options = TrainerTests.smallOptions()
        options.seed = seed
        options.keepProbability = 0.6
        options.maxIterations = maxIterations
        options.saveEvery = saveEvery
        return options
    }

    /// Every visible file of a directory with its bytes.
    static func contents(_ url: URL) throws -> [String: Data] {
        var result: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: url.path) where !name.hasPrefix(".") {
            result[name] = try Data(contentsOf: url.appendingPathComponent(name))
        }
        return result
    }

    @Test("A new run into a directory holding another run's checkpoints is refused, and the first run's files stay byte for byte")
    func anotherRunIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 4, saveEvery: 2), outputDirectory: directory.url).run()
        let before = try Self.contents(directory.url)
        #expect(before.count == 5, "two checkpoints, best, metrics.jsonl, loss.svg")
        var keepOne = Self.options(seed: 10, maxIterations: 4, saveEvery: 1)
        keepOne.keepBest = 1
        #expect {
            try Trainer(corpus: Self.corpus, options: keepOne, outputDirectory: directory.url)
        } throws: { error in
            guard case .runDirectory(.holdsAnotherRun(let path, let run)) = error as? TrainingError else { return false }
            return path == directory.url.path && run.checkpointCount == 3 && run.latestIteration == 4
        }
        #expect(try Self.contents(directory.url) == before)
    }

    @Test("A second writer on a locked directory is refused, naming the process that holds it")
    func lockedDirectoryIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let holder = try RunDirectory.openForNewRun(at: directory.url)
        #expect(throws: TrainingError.runDirectory(.locked(path: directory.url.path, processID: getpid()))) {
            try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 2, saveEvery: 2), outputDirectory: directory.url)
        }
        holder.close()
        let trainer = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 2, saveEvery: 2), outputDirectory: directory.url)
        try trainer.run()
        #expect(FileManager.default.fileExists(atPath: directory.file("best.safetensors").path))
    }

    @Test("best.safetensors is replaced only by a checkpoint of the same run with a lower exact loss")
    func bestOnlyImproves() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let run = try RunDirectory.openForNewRun(at: directory.url, runID: "r1")
        let options = Self.options(maxIterations: 10, saveEvery: 1)
        func save(_ iteration: Int, _ loss: Float) throws -> RunDirectory.Saved {
            let progress = RunProgress(
                runID: "r1", iteration: iteration, epoch: 1, validationLoss: loss, trainingLoss: 3,
                bestValidationLoss: loss, epochLossSum: 3, trainingBatches: 12, corpusCharacters: 600,
                corpusFingerprint: "f")
            let metadata = options.metadata.merging(progress.metadata) { _, new in new }.merging(["vocab": "[\"a\"]"]) { a, _ in a }
            return try run.save(progress: progress, hiddenSize: 16) { (sink) throws(FileSink.Failure) in
                try sink.write(SafeTensors.encode(tensors: [], metadata: metadata))
            }
        }
        #expect(try save(1, 2.0001).isBest)
        #expect(try !save(2, 2.0004).isBest, "worse by less than the name's rounding")
        #expect(try !save(3, 2.0009).isBest, "worse")
        #expect(try RunProgress(metadata: Checkpoint.metadata(of: directory.file("best.safetensors"))).iteration == 1)
        // Pruning ranks by the exact loss, never by the rounded name (by the
        // names, i1 and i2 tie at 2.000 and the later would stay): keep 1
        // leaves i1, the lowest, and i3, the latest (the resume point).
        let removed = try run.prune(keeping: 1)
        #expect(removed.map(\.lastPathComponent) == ["i2_l16_v2.000.safetensors"])
        #expect(try run.prune(keeping: 1).isEmpty, "pruning again removes nothing more")
        #expect(try !save(4, 2.0001).isBest, "equal is not better")
        #expect(try save(5, 1.5).isBest)
        #expect(try RunProgress(metadata: Checkpoint.metadata(of: directory.file("best.safetensors"))).iteration == 5)
    }

    @Test("The latest checkpoint is the run's highest iteration, best.safetensors included; a missing best is restored")
    func latestAndRepair() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 6, saveEvery: 3), outputDirectory: directory.url).run()
        let names = try Self.contents(directory.url).keys.sorted()
        let periodic = names.filter { $0.hasPrefix("i") }
        #expect(periodic.count == 2)
        #expect(try RunDirectory.latest(in: directory.url).progress.iteration == 6)

        // A kill between the two renames of a save: best is written, the periodic file is not.
        let latestFile = try #require(periodic.first { $0.hasPrefix("i6_") })
        let bestProgress = try RunProgress(metadata: Checkpoint.metadata(of: directory.file("best.safetensors")))
        if bestProgress.iteration == 6 {
            try FileManager.default.removeItem(at: directory.file(latestFile))
            let latest = try RunDirectory.latest(in: directory.url)
            #expect(latest.progress.iteration == 6 && latest.isBest, "the run continues from best, which is newer than every periodic file")
        }

        // The other order, as an older version could leave it: checkpoints but no best.
        try? FileManager.default.removeItem(at: directory.file("best.safetensors"))
        let fallback = try RunDirectory.best(in: directory.url)
        #expect(fallback.lastPathComponent.hasPrefix("i"), "readers fall back to the lowest-loss checkpoint")
        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.url).url)
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.corpus, outputDirectory: directory.url, maxIterations: 7)
        #expect(FileManager.default.fileExists(atPath: directory.file("best.safetensors").path), "restored when the run continues")
        try resumed.run()
    }

    @Test("A stop request ends the run after its iteration with a checkpoint there, from which resuming is exact")
    func stopWritesAnExactResumePoint() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let whole = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 9, saveEvery: 100), outputDirectory: nil)
        let wholeLosses = try ResumeTests.losses(whole)

        let stop = StopSignal()
        let first = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 9, saveEvery: 100), outputDirectory: directory.url)
        var firstLosses: [(Int, Float, Float)] = []
        let summary = try first.run(stop: stop) { event in
            if case .iteration(let r) = event {
                firstLosses.append((r.iteration, r.batchLoss, r.runningLoss))
                if r.iteration == 4 { stop.request() }
            }
        }
        #expect(summary.interrupted && summary.iterations == 4)
        let saved = try #require(summary.lastCheckpoint)
        #expect(saved.lastPathComponent.hasPrefix("i4_"))
        let latest = try RunDirectory.latest(in: directory.url)
        #expect(latest.progress.iteration == 4)

        let resumed = try Trainer(resuming: Checkpoint(contentsOf: latest.url), corpus: Self.corpus, outputDirectory: directory.url)
        #expect(resumed.totalIterations == 9, "the run's --max-iterations comes back from its checkpoint")
        let joined = firstLosses + (try ResumeTests.losses(resumed))
        #expect(joined.map(\.0) == wholeLosses.map(\.0))
        #expect(joined.map(\.1.bitPattern) == wholeLosses.map(\.1.bitPattern))
        #expect(joined.map(\.2.bitPattern) == wholeLosses.map(\.2.bitPattern))
        #expect(resumed.model.parameters.toArray() == whole.model.parameters.toArray())
    }

    @Test("A resumed run keeps the run's --keep unless given another")
    func resumeKeepsKeep() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        var options = Self.options(maxIterations: 4, saveEvery: 1)
        options.keepBest = 1
        try Trainer(corpus: Self.corpus, options: options, outputDirectory: directory.url).run()
        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.url).url)
        #expect(checkpoint.trainingOptions?.keepBest == 1)
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.corpus, outputDirectory: directory.url, maxIterations: 10)
        #expect(resumed.options.keepBest == 1)
        try resumed.run()
        let periodic = try Self.contents(directory.url).keys.filter { $0.hasPrefix("i") }
        #expect(periodic.count <= 2, "the lowest and the latest: \(periodic)")
    }

    @Test("Checkpoints of runs written before run identities belong to one run when its settings and corpus say so")
    func legacyIdentity() throws {
        var progress = RunProgress(
            runID: nil, iteration: 3, epoch: 1, validationLoss: 2, trainingLoss: 2, bestValidationLoss: 2,
            epochLossSum: 6, trainingBatches: 12, corpusCharacters: 600, corpusFingerprint: "abc")
        let options = Self.options(maxIterations: 9, saveEvery: 3)
        let identity = progress.runIdentity(options: options)
        #expect(identity.hasPrefix("legacy-"))
        var longer = options
        longer.maxIterations = 20
        #expect(progress.runIdentity(options: longer) == identity, "max-iterations and keep do not change the run")
        var reseeded = options
        reseeded.seed += 1
        #expect(progress.runIdentity(options: reseeded) != identity)
        progress.runID = "r"
        #expect(progress.runIdentity(options: options) == "r")
    }

    @Test("Run metadata that is out of range or inconsistent is refused, naming the entry")
    func runMetadataIsChecked() throws {
        let good = RunProgress(
            runID: "r", iteration: 13, epoch: 2, validationLoss: 2, trainingLoss: 2.5, bestValidationLoss: 1.9,
            epochLossSum: 2.5, trainingBatches: 12, corpusCharacters: 600, corpusFingerprint: "f"
        ).metadata
        #expect(try RunProgress(metadata: good).epoch == 2)
        let cases: [(String, String)] = [
            ("best_val_loss", "nan"), ("best_val_loss", "2.5"), ("epoch", "1"), ("iteration", "0"),
            ("iteration", "99999999999999999999"), ("val_loss", "inf"), ("training_batches", "0"),
        ]
        for (key, value) in cases {
            var bad = good
            bad[key] = value
            #expect(throws: CheckpointProblem.invalidMetadataValue(key: key, value: value), "\(key) = \(value)") {
                try RunProgress(metadata: bad)
            }
        }
    }

    @Test("generate() throws the core's error instead of returning shortened text")
    func generateThrows() throws {
        let vocabulary = Vocabulary(corpus: "abc".unicodeScalars)
        let configuration = ModelConfiguration(vocabularySize: 3, hiddenSize: 4, layerCount: 1)
        let huge = try Model(
            configuration: configuration, parameters: [Float](repeating: 3e38, count: configuration.parameterCount),
            purpose: .inference)
        let generator = try TextGenerator(model: huge, vocabulary: vocabulary)
        var options = SamplingOptions()
        options.seed = 1
        #expect(throws: SamplingError.model(.nonFinite(.logits))) {
            try generator.generate(prime: "a", length: 10, options: options)
        }
        var state = RecurrentState(configuration: configuration, batchSize: 1)
        let batch = try Batch(batchSize: 1, steps: 2, inputs: [0, 1], targets: [1, 2])
        #expect(throws: ModelError.self) { try huge.loss(on: batch, state: &state) }
    }
}

/// Protects the loader's limits: a model past the core's sizes is named as such.
@Suite("Checkpoint limits")
struct CheckpointLimitTests {
    @Test("A file whose tensors describe 65 layers is refused as past the limits, not as a malformed entry")
    func tooManyLayers() throws {
        let one: [Float] = [0, 0, 0, 0]
        one.withUnsafeBufferPointer { values in
            var tensors = (0..<65).map { SafeTensors.Tensor(name: "lstm.weight_ih_l\($0)", shape: [4, 1], values: values) }
            tensors.append(SafeTensors.Tensor(name: "fc.weight", shape: [1, 1], values: UnsafeBufferPointer(rebasing: values[0..<1])))
            let bytes = SafeTensors.encode(tensors: tensors, metadata: ["vocab": "[\"a\"]"])
            #expect(throws: CheckpointProblem.unsupportedModel(vocabularySize: 1, hiddenSize: 1, layerCount: 65)) {
                try Checkpoint(bytes: bytes)
            }
            let message = CheckpointProblem.unsupportedModel(vocabularySize: 1, hiddenSize: 1, layerCount: 65).description
            #expect(message.contains("65 layers") && message.contains("the most charrnn supports is 64 layers"))
        }
    }
}
