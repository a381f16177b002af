import Foundation
import Testing

@testable import CharRNN

/// Protects each part of the training path on its own: the set-up's checks,
/// the step (one process, and a member of a group), and the run recorder.
@Suite("Training parts")
struct TrainingPartsTests {
    static let corpus = Corpus(text: sampleText(length: 600))

    static func setUp(_ options: TrainingOptions = TrainerTests.smallOptions(), group: any ProcessGroup = SingleProcess()) throws(TrainingError)
        -> TrainingSetUp
    {
        var run: RunDirectory? = nil
        return try TrainingSetUp.newRun(
            corpus: corpus, options: options, outputDirectory: nil, initialWeights: nil, group: group, run: &run)
    }

    @Test("The set-up surveys and batches the corpus, fixes the cosine schedule's end, and starts at iteration 0")
    func setUpPreparesARun() throws {
        var options = TrainerTests.smallOptions()
        options.learningRateSchedule = .cosine
        let setUp = try Self.setUp(options)
        #expect(setUp.corpusLength == 600)
        #expect(setUp.vocabulary.count == Set(sampleText(length: 600)).count)
        #expect(setUp.batches.trainingBatchCount == 12)
        #expect(setUp.options.scheduleIterations == 24)
        #expect(setUp.progress.iteration == 0)
        #expect(setUp.progress.carried.batchSize == 4)
    }

    @Test("The set-up refuses a batch a group cannot share equally, before reading the corpus")
    func setUpRefusesUnsharedBatch() throws {
        let members = ThreadGroup.run(size: 3) { member in
            Result { () throws(TrainingError) in try Self.setUp(group: member) }
        }
        for result in members {
            #expect(throws: TrainingError.batchNotShared(batchSize: 4, processes: 3)) { try result.get() }
        }
    }

    @Test("A single-process step lowers the batch's loss and reports the gradient's norm")
    func singleStepTrains() throws {
        let setUp = try Self.setUp()
        let step = SingleProcessStep(model: setUp.model, batches: setUp.batches, options: setUp.options)
        let before = try step.validationLoss()
        var carried = setUp.progress.carried
        var norms: [Float] = []
        for iteration in 1...12 {
            let outcome = try step.train(
                on: setUp.batches.trainingBatch(iteration - 1), iteration: iteration, learningRate: 0.01, carried: &carried)
            norms.append(outcome.gradientNorm)
            #expect(outcome.communicationSeconds == nil)
        }
        #expect(try step.validationLoss() < before)
        #expect(norms.allSatisfy { $0 > 0 && $0.isFinite })
        #expect(try step.stopRequested(true) && !step.stopRequested(false))
        #expect(try step.checkpointState(of: carried, iteration: 12)?.values == carried.values)
    }

    @Test("Two group members take the step one process takes, and member 0 alone gets the whole batch's state")
    func groupStepMatchesOneProcess() throws {
        let one = try Self.setUp()
        let single = SingleProcessStep(model: one.model, batches: one.batches, options: one.options)
        var carried = one.progress.carried
        let alone = try single.train(on: one.batches.trainingBatch(0), iteration: 1, learningRate: 0.01, carried: &carried)
        let members = ThreadGroup.run(size: 2) { member in
            Result { () throws(TrainingError) in
                let setUp = try Self.setUp(group: member)
                let step = ProcessGroupStep(
                    local: SingleProcessStep(model: setUp.model, batches: setUp.batches, options: setUp.options), group: member)
                var own = setUp.progress.carried
                let outcome = try step.train(on: setUp.batches.trainingBatch(0), iteration: 1, learningRate: 0.01, carried: &own)
                let stop = try step.stopRequested(member.rank == 1)
                let whole = try step.checkpointState(of: own, iteration: 1)
                return (outcome, stop, whole, setUp.model.parameters.toArray())
            }
        }
        // The same summed gradient: the loss and the gradient's norm are one
        // process's up to the order of summation, and the members take the
        // very same Adam step. (The weights are not compared with one
        // process's: Adam's first step moves every weight by about the
        // learning rate in its gradient's sign, which rounding may flip
        // where a gradient is near zero.)
        let memberWeights = try members.map { try $0.get().3 }
        #expect(memberWeights[0] == memberWeights[1], "both members hold the same weights")
        for (rank, result) in members.enumerated() {
            let (outcome, stop, whole, _) = try result.get()
            #expect(abs(outcome.loss - alone.loss) <= 1e-5 * alone.loss)
            #expect(abs(outcome.gradientNorm - alone.gradientNorm) <= 1e-4 * alone.gradientNorm)
            #expect(outcome.communicationSeconds != nil)
            #expect(stop, "a stop asked of member 1 stops member \(rank) too")
            if rank == 0 {
                let state = try #require(whole)
                #expect(DataParallelTests.close(state.values, carried.values))
            } else {
                #expect(whole == nil)
            }
        }
    }

    @Test("A failure in one member's recording stops the other with otherProcessFailed")
    func groupAgreesOnRecordingFailure() throws {
        let members = ThreadGroup.run(size: 2) { member in
            Result { () throws(TrainingError) in
                let setUp = try Self.setUp(group: member)
                let step = ProcessGroupStep(
                    local: SingleProcessStep(model: setUp.model, batches: setUp.batches, options: setUp.options), group: member)
                try step.recording { () throws(TrainingError) in
                    if member.rank == 0 { throw .runDirectory(.cannotWrite(path: "x", reason: "full")) }
                }
            }
        }
        #expect(throws: TrainingError.runDirectory(.cannotWrite(path: "x", reason: "full"))) { try members[0].get() }
        #expect(throws: TrainingError.otherProcessFailed(count: 1)) { try members[1].get() }
    }

    @Test("The recorder keeps the metrics up to the resume point, appends after them, and writes a checkpoint with its chart")
    func recorderKeepsMetricsAndWritesCheckpoints() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let setUp = try Self.setUp()
        let run = try RunDirectory.openForNewRun(at: directory.url, runID: setUp.runID)
        func record(_ iteration: Int) -> MetricsRecord {
            .iteration(
                iteration, epoch: 1, loss: 3, runningLoss: 3, gradientNorm: 1, learningRate: 0.01, seconds: 0.1, characters: 40,
                communicationSeconds: nil)
        }
        let first = RunRecorder(directory: run, setUp: setUp)
        try first.begin(after: 0)
        try first.append((1...5).map(record))
        first.end()
        let second = RunRecorder(directory: run, setUp: setUp)
        try second.begin(after: 3)
        try second.append([record(4)])
        let metrics = try MetricsRecord.records(contentsOf: directory.file(RunDirectory.metricsName))
        #expect(metrics.map(\.iteration) == [1, 2, 3, 4])
        var position = setUp.progress
        _ = try SingleProcessStep(model: setUp.model, batches: setUp.batches, options: setUp.options)
            .train(on: setUp.batches.trainingBatch(0), iteration: 1, learningRate: 0.01, carried: &position.carried)
        position.iteration = 1  // the optimizer took one step
        position.bestValidation = 2.5
        let progress = second.progress(position, epoch: 1, validationLoss: 2.5, trainingLoss: 3, learningRate: 0.01)
        let saved = try #require(try second.checkpoint(setUp.model, progress: progress, carried: position.carried))
        second.end()
        #expect(saved.isBest)
        #expect(FileManager.default.fileExists(atPath: directory.file(RunDirectory.chartName).path))
        let checkpoint = try Checkpoint(contentsOf: saved.url)
        #expect(checkpoint.progress?.iteration == 1)
        #expect(checkpoint.progress?.runID == setUp.runID)
        #expect(checkpoint.resumeState?.carriedState.batchSize == 4)
    }

    @Test("Without a directory the recorder writes no file and returns no checkpoint")
    func recorderWithoutDirectoryWritesNothing() throws {
        let setUp = try Self.setUp()
        let recorder = RunRecorder(directory: nil, setUp: setUp)
        try recorder.begin(after: 0)
        let progress = recorder.progress(setUp.progress, epoch: 1, validationLoss: 2, trainingLoss: 3, learningRate: 0.01)
        #expect(try recorder.checkpoint(setUp.model, progress: progress, carried: setUp.progress.carried) == nil)
    }
}
