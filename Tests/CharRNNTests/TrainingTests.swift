import CharRNN
import Foundation
import Testing

/// Protects learning itself and isolation between models.
@Suite("Training")
struct TrainingTests {
    static func repeatingBatch() throws -> (Vocabulary, Batch) {
        let text = String(repeating: "abcdefgh", count: 40)
        let vocabulary = Vocabulary(corpus: text.unicodeScalars)
        let tokens = try vocabulary.encode(text.unicodeScalars)
        let batches = try BatchedCorpus(tokens: tokens, batchSize: 4, steps: 16, validationFraction: 0.1)
        return (vocabulary, batches.trainingBatch(0))
    }

    @Test("A small model learns a short repeating text to near-zero loss")
    func learnsRepeatingText() throws {
        let (vocabulary, batch) = try Self.repeatingBatch()
        let model = try Model(configuration: ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 32, layerCount: 2), seed: 1)
        var state = RecurrentState(configuration: model.configuration, batchSize: 4)
        let initial = try model.loss(on: batch, state: &state)
        var loss = initial
        for step in 1...300 {
            state.reset()
            loss = try model.trainStep(
                on: batch, state: &state, keepProbability: 1, dropoutSeed: UInt64(step),
                clipNorm: 5, adam: AdamOptions(learningRate: 0.01)
            ).loss
        }
        #expect(initial > 1.5, "starts near log(8) = 2.08")
        #expect(loss < 0.05, "final loss \(loss)")
    }

    /// Trains `model` for `steps` steps on a fixed batch; returns the losses.
    static func train(_ model: Model, _ batch: Batch, steps: Range<Int>, state: inout RecurrentState) throws -> [Float] {
        try steps.map { step in
            try model.trainStep(
                on: batch, state: &state, keepProbability: 0.7, dropoutSeed: UInt64(step),
                clipNorm: 5, adam: AdamOptions()
            ).loss
        }
    }

    @Test("Two models trained side by side in one process give the same results as each trained alone")
    func modelsDoNotInterfere() throws {
        let (vocabulary, batch) = try Self.repeatingBatch()
        let configA = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 24, layerCount: 2)
        let configB = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 40, layerCount: 1)

        let aloneA = try Model(configuration: configA, seed: 3)
        var stateA = RecurrentState(configuration: configA, batchSize: 4)
        let lossesA = try Self.train(aloneA, batch, steps: 0..<20, state: &stateA)
        let aloneB = try Model(configuration: configB, seed: 4)
        var stateB = RecurrentState(configuration: configB, batchSize: 4)
        let lossesB = try Self.train(aloneB, batch, steps: 0..<20, state: &stateB)

        // Interleaved, step by step, on one thread: bit for bit the same.
        let a = try Model(configuration: configA, seed: 3)
        let b = try Model(configuration: configB, seed: 4)
        var sa = RecurrentState(configuration: configA, batchSize: 4)
        var sb = RecurrentState(configuration: configB, batchSize: 4)
        var interleavedA: [Float] = []
        var interleavedB: [Float] = []
        for step in 0..<20 {
            interleavedA += try Self.train(a, batch, steps: step..<step + 1, state: &sa)
            interleavedB += try Self.train(b, batch, steps: step..<step + 1, state: &sb)
        }
        #expect(interleavedA == lossesA)
        #expect(interleavedB == lossesB)
        #expect(a.parameters.toArray() == aloneA.parameters.toArray())
        #expect(b.parameters.toArray() == aloneB.parameters.toArray())
        #expect(sa == stateA && sb == stateB)
    }

    @Test("Two models trained at the same time on two threads match each trained alone")
    func concurrentModelsDoNotInterfere() throws {
        let (vocabulary, batch) = try Self.repeatingBatch()
        let config = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 32, layerCount: 2)
        var expected: [[Float]] = []
        for seed in [5, 6] as [UInt64] {
            let model = try Model(configuration: config, seed: seed)
            var state = RecurrentState(configuration: config, batchSize: 4)
            _ = try Self.train(model, batch, steps: 0..<15, state: &state)
            expected.append(model.parameters.toArray())
        }
        let results = ResultBox()
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            do {
                let model = try Model(configuration: config, seed: UInt64(5 + index))
                var state = RecurrentState(configuration: config, batchSize: 4)
                _ = try Self.train(model, batch, steps: 0..<15, state: &state)
                results.set(index, model.parameters.toArray())
            } catch {
                results.set(index, [])
            }
        }
        // Each call runs its own OpenMP team; with the same team size the
        // arithmetic is the same. Allow 1e-6 in case the runtime shrinks a team.
        for index in 0..<2 {
            let got = results.get(index)
            #expect(got.count == expected[index].count)
            #expect(zip(got, expected[index]).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) })
        }
    }
}

/// Thread-safe slots for results produced on other threads.
final class ResultBox: @unchecked Sendable {
    private var values: [Int: [Float]] = [:]
    private let lock = NSLock()
    func set(_ index: Int, _ value: [Float]) {
        lock.lock()
        values[index] = value
        lock.unlock()
    }
    func get(_ index: Int) -> [Float] {
        lock.lock()
        defer { lock.unlock() }
        return values[index] ?? []
    }
}
