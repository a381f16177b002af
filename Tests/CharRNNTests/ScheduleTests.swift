import Foundation
import Testing

@testable import CharRNN

/// Protects the learning-rate schedules, --patience, and their exactness under resume.
@Suite("Schedules and patience")
struct ScheduleTests {
    static let corpus = ResumeTests.corpus  // 12 training batches per epoch

    @Test("The constant schedule is the notebook's rate at every iteration")
    func constantIsFlat() {
        var options = TrainingOptions()
        options.learningRate = 0.002
        #expect((1...500).allSatisfy { options.learningRate(atIteration: $0, trainingBatches: 7) == 0.002 })
    }

    @Test("The step schedule multiplies the rate once per epoch after the given epoch, as char-rnn")
    func stepDecaysPerEpoch() {
        var options = TrainingOptions()
        options.learningRate = 0.002
        options.learningRateSchedule = .step
        options.learningRateDecay = 0.5
        options.learningRateDecayAfter = 2
        // 10 batches per epoch: epochs 1 and 2 at the peak, epoch 3 halved, epoch 4 quartered.
        let rates = [1, 10, 11, 20, 21, 30, 31].map { options.learningRate(atIteration: $0, trainingBatches: 10) }
        #expect(rates == [0.002, 0.002, 0.002, 0.002, 0.001, 0.001, 0.0005])
    }

    @Test("The cosine schedule starts at the peak after the warm-up, falls monotonically and stays at the floor after its end")
    func cosineFallsToTheFloor() {
        var options = TrainingOptions()
        options.learningRate = 0.004
        options.learningRateSchedule = .cosine
        options.warmupIterations = 10
        options.minimumLearningRate = 0.0004
        options.scheduleIterations = 110
        let rate = { options.learningRate(atIteration: $0, trainingBatches: 50) }
        #expect(rate(11) == 0.004, "first iteration after the warm-up runs at the peak")
        #expect(abs(rate(61) - 0.0022) < 1e-7, "half way down: the mean of peak and floor")
        #expect(rate(110) > 0.0004 && rate(110) < 0.00041, "the last iteration is just above the floor")
        #expect(rate(111) == 0.0004 && rate(500) == 0.0004, "flat at the floor after the end")
        let falling = (11...111).map(rate)
        #expect(zip(falling, falling.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test("Warm-up rises linearly to the schedule's rate")
    func warmupIsLinear() {
        var options = TrainingOptions()
        options.learningRate = 0.001
        options.warmupIterations = 4
        let rates = (1...6).map { options.learningRate(atIteration: $0, trainingBatches: 100) }
        #expect(rates == [0.00025, 0.0005, 0.00075, 0.001, 0.001, 0.001])
    }

    @Test("Schedule options out of range are refused, naming the option")
    func badScheduleOptionsAreRefused() {
        func refused(_ change: (inout TrainingOptions) -> Void) -> TrainingOptions.Option? {
            var options = TrainingOptions()
            change(&options)
            do { try options.validate() } catch {
                if case .invalidOption(let option, _, _) = error { return option }
            }
            return nil
        }
        #expect(refused { $0.warmupIterations = -1 } == .warmupIterations)
        #expect(refused { $0.learningRateDecay = 1.5 } == .learningRateDecay)
        #expect(refused { $0.learningRateDecay = 0 } == .learningRateDecay)
        #expect(refused { $0.learningRateDecayAfter = -2 } == .learningRateDecayAfter)
        #expect(refused { $0.minimumLearningRate = 0.001 } == .minimumLearningRate, "the floor must be below the peak")
        #expect(refused { $0.scheduleIterations = 0 } == .scheduleIterations)
        #expect(refused { $0.patience = 0 } == .patience)
        #expect(refused { $0.patience = 3 } == nil)
    }

    static func cosineOptions(maxIterations: Int, saveEvery: Int) -> TrainingOptions {
        var options = ResumeTests.options(maxIterations: maxIterations, saveEvery: saveEvery)
        options.learningRate = 0.01
        options.learningRateSchedule = .cosine
        options.warmupIterations = 3
        return options
    }

    @Test("A cosine run's rates are used by the steps, fixed at the start, recorded in checkpoints, and exact under resume")
    func cosineRunResumesExactly() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let whole = try Trainer(
            corpus: Self.corpus, options: Self.cosineOptions(maxIterations: 20, saveEvery: 10),
            outputDirectory: directory.file("whole"))
        var wholeRates: [Float] = []
        let wholeLosses = try Self.lossesAndRates(whole, rates: &wholeRates)
        #expect(whole.options.scheduleIterations == 20, "the curve's end is the run's total")
        #expect(wholeRates == (1...20).map { whole.options.learningRate(atIteration: $0, trainingBatches: 12) })
        #expect(Set(wholeRates).count > 15, "the rate changes from step to step")

        // The same run stopped at 10 (asked for 10 iterations, but the curve is
        // the 20-iteration run's), then resumed to 20.
        var partOptions = Self.cosineOptions(maxIterations: 10, saveEvery: 10)
        partOptions.scheduleIterations = 20
        let first = try Trainer(corpus: Self.corpus, options: partOptions, outputDirectory: directory.file("part"))
        var firstRates: [Float] = []
        let firstLosses = try Self.lossesAndRates(first, rates: &firstRates)
        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.file("part")).url)
        #expect(checkpoint.progress?.learningRate == wholeRates[9], "the checkpoint records the rate of its last step")
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.corpus, outputDirectory: directory.file("part"), maxIterations: 20)
        var resumedRates: [Float] = []
        let resumedLosses = try Self.lossesAndRates(resumed, rates: &resumedRates)

        #expect(firstRates + resumedRates == wholeRates)
        #expect((firstLosses + resumedLosses).map(\.bitPattern) == wholeLosses.map(\.bitPattern))
        #expect(resumed.model.parameters.toArray().map(\.bitPattern) == whole.model.parameters.toArray().map(\.bitPattern))
    }

    @Test("A cosine run resumed with a larger maxIterations keeps the curve it started with")
    func resumedCosineKeepsItsCurve() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let first = try Trainer(
            corpus: Self.corpus, options: Self.cosineOptions(maxIterations: 10, saveEvery: 10),
            outputDirectory: directory.url)
        try first.run()
        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.url).url)
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.corpus, outputDirectory: directory.url, maxIterations: 14)
        var rates: [Float] = []
        _ = try Self.lossesAndRates(resumed, rates: &rates)
        #expect(resumed.options.scheduleIterations == 10)
        #expect(rates == [Float](repeating: 0, count: 4), "past the curve's end the rate stays at its floor (0)")
    }

    /// A run on text with no pattern to learn and a high rate, so its validation loss soon fails to improve.
    static func noisyOptions(patience: Int?) -> TrainingOptions {
        var options = ResumeTests.options(maxIterations: 120, saveEvery: 4)
        options.epochs = 50
        options.learningRate = 0.03
        options.patience = patience
        return options
    }

    static let noise: Corpus = {
        var generator = SplitMix(seed: 5)
        return Corpus(text: String((0..<600).map { _ in "abcdefgh".randomElement(using: &generator)! }))
    }()

    @Test("--patience stops the run at the K-th validation in a row without a new best, and a resume needs a larger patience")
    func patienceStopsTheRun() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        var validations: [(iteration: Int, isBest: Bool)] = []
        let trainer = try Trainer(corpus: Self.noise, options: Self.noisyOptions(patience: 2), outputDirectory: directory.url)
        let summary = try trainer.run { if case .validated(let i, _, let isBest) = $0 { validations.append((i, isBest)) } }

        // Where two validations in a row without a new best first happen.
        var expectedStop: Int?
        for index in validations.indices.dropFirst() where !validations[index].isBest && !validations[index - 1].isBest {
            expectedStop = validations[index].iteration
            break
        }
        let stop = try #require(expectedStop, "the noisy run should fail to improve twice in a row within 120 iterations")
        #expect(summary.stoppedByPatience && summary.iterations == stop)
        #expect(validations.last?.iteration == stop)
        #expect(try RunDirectory.latest(in: directory.url).progress.validationsSinceBest == 2)

        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.url).url)
        #expect(throws: TrainingError.patienceExhausted(iteration: stop, validations: 2, patience: 2)) {
            try Trainer(resuming: checkpoint, corpus: Self.noise, outputDirectory: directory.url)
        }
        let more = try Trainer(resuming: checkpoint, corpus: Self.noise, outputDirectory: directory.url, patience: 3)
        let resumed = try more.run()
        #expect(resumed.iterations > stop)
    }

    @Test("A run resumed while waiting for a new best counts on from where it stopped, and stops where the uninterrupted run did")
    func patienceCountsAcrossResume() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        var validations: [(iteration: Int, isBest: Bool)] = []
        let whole = try Trainer(corpus: Self.noise, options: Self.noisyOptions(patience: 3), outputDirectory: nil)
        let wholeSummary = try whole.run { if case .validated(let i, _, let isBest) = $0 { validations.append((i, isBest)) } }
        #expect(wholeSummary.stoppedByPatience)
        // Cut the run at a validation that was not a new best, so the count is under way.
        let cut = try #require(validations.first { !$0.isBest && $0.iteration < wholeSummary.iterations }).iteration

        var partOptions = Self.noisyOptions(patience: 3)
        partOptions.maxIterations = cut
        try Trainer(corpus: Self.noise, options: partOptions, outputDirectory: directory.url).run()
        let checkpoint = try Checkpoint(contentsOf: RunDirectory.latest(in: directory.url).url)
        #expect((checkpoint.progress?.validationsSinceBest ?? 0) >= 1)
        let resumed = try Trainer(resuming: checkpoint, corpus: Self.noise, outputDirectory: directory.url, maxIterations: 120)
        let summary = try resumed.run()
        #expect(summary.stoppedByPatience && summary.iterations == wholeSummary.iterations)
        #expect(summary.bestValidationLoss == wholeSummary.bestValidationLoss)
    }

    @Test("Without patience the same run goes to its last iteration")
    func noPatienceRunsToTheEnd() throws {
        let trainer = try Trainer(corpus: Self.noise, options: Self.noisyOptions(patience: nil), outputDirectory: nil)
        let summary = try trainer.run()
        #expect(!summary.stoppedByPatience && summary.iterations == 120)
    }

    static func lossesAndRates(_ trainer: Trainer, rates: inout [Float]) throws -> [Float] {
        var losses: [Float] = []
        var collected: [Float] = []
        try trainer.run {
            if case .iteration(let r) = $0 {
                losses.append(r.batchLoss)
                collected.append(r.learningRate)
            }
        }
        rates = collected
        return losses
    }
}
