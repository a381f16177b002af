import CharRNN
import Foundation
import Testing

/// Protects exact resume, --init-from, --keep and the refusal of bad resumes.
@Suite("Resume")
struct ResumeTests {
    static let corpus = Corpus(text: sampleText(length: 600))  // 12 training batches per epoch

    static func options(maxIterations: Int, saveEvery: Int, cell: Cell = .lstm, precision: Precision = .float32) -> TrainingOptions {
        var options = TrainerTests.smallOptions()
        options.cell = cell
        options.precision = precision
        options.keepProbability = 0.6  // dropout on, so the per-iteration seeds matter
        options.maxIterations = maxIterations
        options.saveEvery = saveEvery
        return options
    }

    /// Runs `trainer`, returning each iteration's (number, batch loss, running loss).
    static func losses(_ trainer: Trainer) throws -> [(Int, Float, Float)] {
        var losses: [(Int, Float, Float)] = []
        try trainer.run { if case .iteration(let r) = $0 { losses.append((r.iteration, r.batchLoss, r.runningLoss)) } }
        return losses
    }

    @Test(
        "N iterations, then resuming for N more, equal 2N in one go, bit for bit, for every cell and precision",
        arguments: Cell.allCases, [(7, Precision.float32), (12, .float32), (7, .bfloat16)])
    func resumeIsExact(cell: Cell, run: (n: Int, precision: Precision)) throws {
        let (n, precision) = run
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let whole = try Trainer(
            corpus: Self.corpus, options: Self.options(maxIterations: 2 * n, saveEvery: n, cell: cell, precision: precision),
            outputDirectory: directory.file("whole"))
        let wholeLosses = try Self.losses(whole)

        let first = try Trainer(
            corpus: Self.corpus, options: Self.options(maxIterations: n, saveEvery: n, cell: cell, precision: precision),
            outputDirectory: directory.file("part"))
        let firstLosses = try Self.losses(first)
        let checkpoint = try Checkpoint(
            contentsOf: directory.file("part").appendingPathComponent(
                try FileManager.default.contentsOfDirectory(atPath: directory.file("part").path).first { $0.hasPrefix("i\(n)_") }!))
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.corpus, outputDirectory: directory.file("part"), maxIterations: 2 * n)
        let resumedLosses = try Self.losses(resumed)

        #expect(checkpoint.configuration.cell == cell && resumed.model.configuration.cell == cell)
        #expect(checkpoint.trainingOptions?.precision == precision, "the checkpoint records the products' precision")
        #expect(resumed.options.precision == precision)
        #expect(resumedLosses.first?.0 == n + 1, "the log continues at N + 1")
        let joined = firstLosses + resumedLosses
        #expect(joined.map(\.0) == wholeLosses.map(\.0))
        #expect(joined.map(\.1.bitPattern) == wholeLosses.map(\.1.bitPattern), "batch losses")
        #expect(joined.map(\.2.bitPattern) == wholeLosses.map(\.2.bitPattern), "running means")
        #expect(resumed.model.parameters.toArray().map(\.bitPattern) == whole.model.parameters.toArray().map(\.bitPattern))
        #expect(resumed.model.optimizerState.toArray() == whole.model.optimizerState.toArray())
        #expect(resumed.model.optimizerStep == whole.model.optimizerStep)
    }

    @Test("A checkpoint round-trips its resume state exactly")
    func resumeStateRoundTrips() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let trainer = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 5, saveEvery: 5), outputDirectory: directory.url)
        try trainer.run()
        let checkpoint = try Checkpoint(contentsOf: directory.file("best.safetensors"))
        let resume = try #require(checkpoint.resumeState)
        #expect(resume.optimizerStep == 5)
        #expect(resume.optimizerState == trainer.model.optimizerState.toArray())
        #expect(resume.carriedState.batchSize == 4)
        #expect(resume.carriedState.values.contains { $0 != 0 })
        #expect(checkpoint.metadata["iteration"] == "5")
    }

    @Test("Resuming on a corpus with another vocabulary is refused, saying what differs")
    func otherVocabularyIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 3, saveEvery: 3), outputDirectory: directory.url).run()
        let checkpoint = try Checkpoint(contentsOf: directory.file("best.safetensors"))
        let other = Corpus(text: sampleText(length: 599) + "Z")
        #expect {
            try Trainer(resuming: checkpoint, corpus: other, outputDirectory: directory.url)
        } throws: { error in
            "\(error)".contains("only in the corpus ('Z' (U+005A))")
        }
        let sameVocabularyOtherText = Corpus(text: String(sampleText(length: 600).reversed()))
        #expect {
            try Trainer(resuming: checkpoint, corpus: sameVocabularyOtherText, outputDirectory: directory.url)
        } throws: { error in
            "\(error)".contains("trained on another text")
        }
    }

    @Test("A weights-only checkpoint cannot resume and points to --init-from, which starts a new run from its weights")
    func weightsOnlyAndInitFrom() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let source = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 3, saveEvery: 3), outputDirectory: nil)
        try source.run()
        let weightsOnly = Checkpoint(model: source.model, vocabulary: source.vocabulary)
        #expect(weightsOnly.resumeState == nil)
        #expect(throws: TrainingError.incompatible(.weightsOnly, resuming: true)) {
            try Trainer(resuming: weightsOnly, corpus: Self.corpus, outputDirectory: nil)
        }
        let started = try Trainer(
            corpus: Self.corpus, options: Self.options(maxIterations: 2, saveEvery: 5),
            outputDirectory: nil, initialWeights: weightsOnly)
        #expect(started.model.parameters.toArray() == source.model.parameters.toArray())
        #expect(started.model.optimizerStep == 0)
        let losses = try Self.losses(started)
        #expect(losses.map(\.0) == [1, 2])
    }

    @Test("--keep N keeps the N checkpoints with the lowest validation loss, the latest, and best.safetensors")
    func keepPrunes() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        var options = Self.options(maxIterations: 12, saveEvery: 2)
        options.keepBest = 2
        var saved: [(String, Float)] = []
        var lastLoss: Float = 0
        try Trainer(corpus: Self.corpus, options: options, outputDirectory: directory.url).run { event in
            if case .validated(_, let loss, _) = event { lastLoss = loss }
            if case .checkpointSaved(let url, _) = event { saved.append((url.lastPathComponent, lastLoss)) }
        }
        #expect(saved.count == 6)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: directory.url.path).filter { $0.hasSuffix(".safetensors") })
        let expected = saved.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 > $1.0 }.prefix(2).map(\.0)
        #expect(files == Set(expected + [saved.last!.0, "best.safetensors"]), "the two lowest, the latest (the resume point) and the best")
    }

    @Test("A run that diverges stops with a message and writes no checkpoint with non-finite weights")
    func divergenceStops() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        var options = Self.options(maxIterations: 200, saveEvery: 1)
        options.learningRate = 3e38
        options.gradientClip = 1e30
        #expect {
            try Trainer(corpus: Self.corpus, options: options, outputDirectory: directory.url).run()
        } throws: { error in
            guard case .diverged = error as? TrainingError else { return false }
            return "\(error)".contains("training diverged")
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.url.path) where name.hasSuffix(".safetensors") {
            let checkpoint = try Checkpoint(contentsOf: directory.file(name))  // the loader refuses non-finite weights
            #expect(checkpoint.parameters.allSatisfy { $0.isFinite })
        }
    }
}
