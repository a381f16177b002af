import CharRNN
import Foundation
import Testing

/// Protects the training loop: events, validation and checkpoint files.
@Suite("Trainer")
struct TrainerTests {
    static func smallOptions() -> TrainingOptions {
        var options = TrainingOptions()
        options.hiddenSize = 16
        options.layerCount = 2
        options.batchSize = 4
        options.steps = 10
        options.epochs = 2
        options.saveEvery = 5
        options.seed = 9
        return options
    }

    @Test("A run reports every iteration, validates every save-every and at the end, and writes named checkpoints")
    func runWritesCheckpoints() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let corpus = Corpus(text: sampleText(length: 600))  // 599 // 40 = 14 blocks: 12 training, 2 validation
        let out = directory.file("run")
        let trainer = try Trainer(corpus: corpus, options: Self.smallOptions(), outputDirectory: out)
        #expect(trainer.batches.trainingBatchCount == 12)
        #expect(trainer.totalIterations == 24)

        var iterations: [Int] = []
        var validations: [(Int, Float)] = []
        var saved: [(String, Bool)] = []
        var runningLosses: [Float] = []
        try trainer.run { event in
            switch event {
            case .iteration(let report):
                iterations.append(report.iteration)
                runningLosses.append(report.runningLoss)
                #expect(report.epoch == (report.iteration - 1) / 12 + 1)
            case .validated(let iteration, let loss, _): validations.append((iteration, loss))
            case .checkpointSaved(let url, let isBest): saved.append((url.lastPathComponent, isBest))
            default: break
            }
        }
        #expect(iterations == Array(1...24))
        #expect(validations.map(\.0) == [5, 10, 15, 20, 24])
        #expect(saved.count == 5)
        for ((iteration, loss), (name, _)) in zip(validations, saved) {
            #expect(name == String(format: "i%d_l16_v%.3f.safetensors", iteration, loss))
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(name).path))
        }
        // best.safetensors holds the lowest validation loss seen.
        let best = try Checkpoint(contentsOf: out.appendingPathComponent("best.safetensors"))
        let lowest = validations.map(\.1).min()!
        #expect(Float(best.metadata["val_loss"] ?? "") == lowest)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix(".") && $0 != ".charrnn-lock" }
        #expect(leftovers.isEmpty, "no temporary files remain")
    }

    @Test("max-iterations stops the run early and still validates at the end")
    func maxIterationsStopsEarly() throws {
        var options = Self.smallOptions()
        options.maxIterations = 7
        let trainer = try Trainer(corpus: Corpus(text: sampleText(length: 600)), options: options, outputDirectory: nil)
        var validated: [Int] = []
        let summary = try trainer.run { if case .validated(let i, _, _) = $0 { validated.append(i) } }
        #expect(summary.iterations == 7)
        #expect(validated == [5, 7])
    }

    @Test("The same seed trains to the same weights; training changes them; another seed trains to others")
    func runsAreReproducible() throws {
        var options = Self.smallOptions()
        options.maxIterations = 6
        let corpus = Corpus(text: sampleText(length: 600))
        let first = try Trainer(corpus: corpus, options: options, outputDirectory: nil)
        let initial = first.model.parameters.toArray()
        try first.run()
        let second = try Trainer(corpus: corpus, options: options, outputDirectory: nil)
        try second.run()
        #expect(first.model.parameters.toArray() == second.model.parameters.toArray())
        #expect(first.model.parameters.toArray() != initial, "six steps of training moved the weights")
        #expect(first.model.optimizerStep == 6)
        options.seed += 1
        let other = try Trainer(corpus: corpus, options: options, outputDirectory: nil)
        try other.run()
        #expect(other.model.parameters.toArray() != first.model.parameters.toArray(), "the seed matters")
    }

    @Test("Bad options, a short corpus and an output path that is a file are refused before anything is written")
    func badInputIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let corpus = Corpus(text: sampleText(length: 600))
        var options = Self.smallOptions()
        options.keepProbability = 0
        #expect(throws: TrainingError.self) { try Trainer(corpus: corpus, options: options, outputDirectory: nil) }
        options = Self.smallOptions()
        options.batchSize = 100
        #expect(throws: TrainingError.batching(.corpusTooShort(length: 600, required: 2001, batchSize: 100, steps: 10))) {
            try Trainer(corpus: corpus, options: options, outputDirectory: directory.file("never"))
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("never").path))
        let file = directory.file("file.txt")
        try Data("x".utf8).write(to: file)
        #expect(throws: TrainingError.runDirectory(.notADirectory(path: file.path))) {
            try Trainer(corpus: corpus, options: Self.smallOptions(), outputDirectory: file)
        }
    }
}

/// Protects training with bf16 products through the library: a different
/// run from fp32's (the option is not ignored), within bf16's reach of it.
@Suite("Training in bf16")
struct BF16TrainingTests {
    @Test("A bf16 run is not fp32's run, but its losses stay within 1 % of fp32's")
    func bf16RunStaysCloseToFP32() throws {
        let corpus = Corpus(text: sampleText(length: 600))
        func losses(_ precision: Precision) throws -> (losses: [Float], weights: [Float]) {
            let directory = try TemporaryDirectory()
            defer { directory.cleanUp() }
            var options = TrainerTests.smallOptions()
            options.precision = precision
            options.maxIterations = 8
            let trainer = try Trainer(corpus: corpus, options: options, outputDirectory: directory.url)
            var losses: [Float] = []
            try trainer.run { if case .iteration(let r) = $0 { losses.append(r.batchLoss) } }
            return (losses, trainer.model.parameters.toArray())
        }
        let fp32 = try losses(.float32)
        let bf16 = try losses(.bfloat16)
        #expect(fp32.losses.count == 8 && bf16.losses.count == 8)
        #expect(bf16.weights != fp32.weights, "bf16 products trained the fp32 run's weights")
        for (a, b) in zip(bf16.losses, fp32.losses) {
            #expect(abs(a - b) <= 0.01 * b, "bf16 \(a) against fp32 \(b)")
        }
    }
}
