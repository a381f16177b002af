import CharRNN
import Foundation
import Testing

/// Protects data-parallel training: N members (threads standing in for MPI
/// ranks) train as one process does, checkpoints move between member
/// counts, and every failure stops every member.
@Suite("Data-parallel training")
struct DataParallelTests {
    static let corpus = Corpus(text: sampleText(length: 1_300))  // batch 4 × 10: 29 training batches

    static func options(maxIterations: Int, saveEvery: Int = 5) -> TrainingOptions {
        var options = TrainerTests.smallOptions()
        options.keepProbability = 0.5  // dropout on: the masks must follow the stream, not the row
        options.maxIterations = maxIterations
        options.saveEvery = saveEvery
        return options
    }

    /// What one member saw: its iteration losses, validation losses, final weights, or its error.
    struct Outcome {
        var losses: [Float] = []
        var validations: [Float] = []
        var weights: [Float] = []
        var error: TrainingError? = nil
    }

    static func train(_ make: () throws(TrainingError) -> Trainer, stop: StopSignal? = nil) -> Outcome {
        var outcome = Outcome()
        do {
            let trainer = try make()
            try trainer.run(stop: stop) { event in
                switch event {
                case .iteration(let report): outcome.losses.append(report.batchLoss)
                case .validated(_, let loss, _): outcome.validations.append(loss)
                default: break
                }
            }
            outcome.weights = trainer.model.parameters.toArray()
        } catch {
            outcome.error = error
        }
        return outcome
    }

    static func close(_ a: [Float], _ b: [Float], relative: Float = 1e-4) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= relative * max(abs($0), abs($1), 1e-3) }
    }

    @Test(
        "2 and 4 members give one process's training and validation losses, with identical weights on every member",
        arguments: [2, 4])
    func membersReproduceOneProcess(size: Int) throws {
        let one = Self.train { () throws(TrainingError) in
            try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: nil)
        }
        let members = ThreadGroup.run(size: size) { member in
            Self.train { () throws(TrainingError) in
                try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: nil, group: member)
            }
        }
        #expect(one.error == nil && members.allSatisfy { $0.error == nil })
        #expect(one.losses.count == 12)
        for member in members {
            #expect(Self.close(member.losses, one.losses), "training losses \(member.losses) vs \(one.losses)")
            #expect(Self.close(member.validations, one.validations), "validation losses")
            #expect(member.weights.map(\.bitPattern) == members[0].weights.map(\.bitPattern), "every member's weights are the same bits")
        }
        #expect(Self.close(members[0].weights, one.weights, relative: 1e-3))
    }

    @Test("Dropout masks follow the stream: without them drawn by the stream's index the members would train another model")
    func shardDrawsTheWholeBatchsMasks() throws {
        let options = Self.options(maxIterations: 1)
        let model = try Model(configuration: ModelConfiguration(vocabularySize: 20, hiddenSize: 16, layerCount: 2), seed: 3)
        let tokens = (0..<4 * 10).map { Int32($0 % 20) }
        let targets = tokens.map { ($0 + 1) % 20 }
        let whole = try Batch(batchSize: 4, steps: 10, inputs: tokens, targets: targets)
        var wholeState = RecurrentState(configuration: model.configuration, batchSize: 4)
        _ = try model.loss(on: whole, state: &wholeState, keepProbability: options.keepProbability, dropoutSeed: 77)
        for (first, placed) in [(2, true), (2, false)] {
            let rows = first * 10..<(first + 2) * 10
            let shard = try Batch(
                batchSize: 2, steps: 10, inputs: Array(tokens[rows]), targets: Array(targets[rows]),
                firstStream: placed ? first : 0, totalStreams: placed ? 4 : nil)
            var state = RecurrentState(configuration: model.configuration, batchSize: 2)
            _ = try model.loss(on: shard, state: &state, keepProbability: options.keepProbability, dropoutSeed: 77)
            let expected = wholeState.streams(first..<first + 2, configuration: model.configuration)
            let same = Self.close(state.values, expected.values, relative: 1e-5)
            #expect(
                same == placed,
                placed
                    ? "streams 2 and 3 in their place draw the whole batch's masks"
                    : "as streams 0 and 1 of their own batch they draw other masks")
        }
        #expect(throws: BatchingError.streamsOutsideBatch(first: 3, count: 2, total: 4)) {
            try Batch(batchSize: 2, steps: 10, inputs: Array(tokens[0..<20]), targets: Array(targets[0..<20]), firstStream: 3, totalStreams: 4)
        }
    }

    @Test("A 2-member checkpoint resumes in one process, and a one-process checkpoint in 2 members, continuing the uninterrupted run")
    func checkpointsMoveBetweenMemberCounts() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let whole = Self.train { () throws(TrainingError) in
            try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 20), outputDirectory: nil)
        }
        // 2 members to iteration 10, then one process to 20.
        let firstHalf = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 10), outputDirectory: directory.file("two"), group: member)
            }
        }
        #expect(firstHalf.allSatisfy { $0.error == nil })
        let written = try FileManager.default.contentsOfDirectory(atPath: directory.file("two").path).filter { $0.hasSuffix(".safetensors") }
        #expect(
            written.sorted() == written.filter { $0.hasPrefix("i5_") || $0.hasPrefix("i10_") || $0 == "best.safetensors" }.sorted(),
            "member 0 alone wrote the run's checkpoints: \(written)")
        let fromTwo = try Checkpoint(contentsOf: directory.file("two").appendingPathComponent(written.first { $0.hasPrefix("i10_") }!))
        #expect(fromTwo.resumeState?.carriedState.batchSize == 4, "the checkpoint holds the whole batch's carried state")
        let secondHalf = Self.train { () throws(TrainingError) in
            try Trainer(resuming: fromTwo, corpus: Self.corpus, outputDirectory: directory.file("two"), maxIterations: 20)
        }
        #expect(Self.close(firstHalf[0].losses + secondHalf.losses, whole.losses), "2 members then 1 process")

        // One process to iteration 10, then 2 members to 20.
        _ = Self.train { () throws(TrainingError) in
            try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 10), outputDirectory: directory.file("one"))
        }
        let fromOne = try Checkpoint(
            contentsOf: directory.file("one").appendingPathComponent(
                try FileManager.default.contentsOfDirectory(atPath: directory.file("one").path).first { $0.hasPrefix("i10_") }!))
        let resumed = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                try Trainer(resuming: fromOne, corpus: Self.corpus, outputDirectory: directory.file("one"), maxIterations: 20, group: member)
            }
        }
        #expect(resumed.allSatisfy { $0.error == nil && $0.losses.count == 10 })
        #expect(Self.close(Array(whole.losses.prefix(10)) + resumed[0].losses, whole.losses), "1 process then 2 members")
        #expect(Self.close(resumed[1].weights, whole.weights, relative: 1e-3))
    }

    @Test("A non-finite loss on one member stops every member at the same iteration with the same error")
    func nonFiniteLossOnOneMemberStopsAll() throws {
        let outcomes = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                let trainer = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: nil, group: member)
                if member.rank == 1 { trainer.model.parameters.buffer[0] = .nan }
                return trainer
            }
        }
        for outcome in outcomes {
            guard case .diverged(let iteration, .loss(let value))? = outcome.error else {
                Issue.record("expected divergence, got \(String(describing: outcome.error))")
                continue
            }
            #expect(iteration == 1 && value.isNaN)
            #expect(outcome.losses.isEmpty)
        }
    }

    @Test("A non-finite gradient on one member stops every member together")
    func nonFiniteGradientOnOneMemberStopsAll() throws {
        let outcomes = ThreadGroup.run(size: 2) { member in
            var sums = 0
            if member.rank == 1 {
                member.beforeSum = { values in
                    sums += 1
                    if sums == 4 { values[7] = .infinity }
                }
            }
            return Self.train { () throws(TrainingError) in
                try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: nil, group: member)
            }
        }
        for outcome in outcomes {
            guard case .diverged(4, .gradientNorm)? = outcome.error else {
                Issue.record("expected divergence at iteration 4, got \(String(describing: outcome.error))")
                continue
            }
            #expect(outcome.losses.count == 3)
        }
    }

    @Test("Weights that differ between members are caught at the next validation, naming the member")
    func differingWeightsAreCaught() throws {
        let outcomes = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                let trainer = try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: nil, group: member)
                if member.rank == 1 { trainer.model.parameters.buffer[5] = trainer.model.parameters.buffer[5].nextUp }
                return trainer
            }
        }
        for outcome in outcomes {
            #expect(outcome.error == .processesDisagree(iteration: 5, ranks: [1]))
        }
    }

    @Test("A set-up that fails on one member fails on all: its own error there, 'another process failed' elsewhere")
    func setUpFailureIsAgreed() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try Data("not a directory".utf8).write(to: directory.file("file"))
        let outcomes = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 4), outputDirectory: directory.file("file"), group: member)
            }
        }
        if case .runDirectory? = outcomes[0].error {} else { Issue.record("member 0: \(String(describing: outcomes[0].error))") }
        #expect(outcomes[1].error == .otherProcessFailed(count: 1))

        let uneven = ThreadGroup.run(size: 3) { member in
            Self.train { () throws(TrainingError) in
                try Trainer(corpus: Self.corpus, options: Self.options(maxIterations: 4), outputDirectory: nil, group: member)
            }
        }
        #expect(uneven.allSatisfy { $0.error == .batchNotShared(batchSize: 4, processes: 3) })
    }

    @Test("A stop request on one member stops every member after the same iteration, with one checkpoint there")
    func stopOnOneMemberStopsAll() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let outcomes = ThreadGroup.run(size: 2) { member in
            let stop = StopSignal()
            var outcome = Outcome()
            do throws(TrainingError) {
                let trainer = try Trainer(
                    corpus: Self.corpus, options: Self.options(maxIterations: 12), outputDirectory: directory.url, group: member)
                try trainer.run(stop: stop) { event in
                    if case .iteration(let report) = event {
                        outcome.losses.append(report.batchLoss)
                        if member.rank == 1 && report.iteration == 3 { stop.request() }
                    }
                }
            } catch {
                outcome.error = error
            }
            return outcome
        }
        #expect(outcomes.allSatisfy { $0.error == nil && $0.losses.count == 3 })
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.url.path)
        #expect(names.contains { $0.hasPrefix("i3_") }, "\(names)")
    }
}

extension DataParallelTests {
    @Test("Members that read different texts are refused before training, naming them")
    func differentTextsAreRefused() throws {
        let outcomes = ThreadGroup.run(size: 2) { member in
            Self.train { () throws(TrainingError) in
                let text = member.rank == 0 ? Self.corpus : Corpus(text: sampleText(length: 1_301).dropFirst().description)
                return try Trainer(corpus: text, options: Self.options(maxIterations: 4), outputDirectory: nil, group: member)
            }
        }
        #expect(outcomes.allSatisfy { $0.error == .processesDisagreeOnText(ranks: [1]) && $0.losses.isEmpty })
    }
}
