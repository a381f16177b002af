import CCharRNN
import Foundation
import Testing

/// Protects inference and drawing: the step against the batched forward
/// pass, and the sampler's distributions.
@Suite("Sampling in the core")
struct SamplingCoreTests {
    static func draw(_ logits: [Float], _ params: charrnn_sampling_params, rng: inout charrnn_rng, probs: UnsafeMutablePointer<Float>? = nil) -> Int32
    {
        var params = params
        var bytes = 0
        _ = charrnn_sample_scratch_size(Int32(logits.count), &bytes)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16)
        defer { scratch.deallocate() }
        var token: Int32 = -1
        let status = charrnn_sample(logits, Int32(logits.count), &params, &rng, scratch, probs, &token)
        precondition(status == CHARRNN_OK, "charrnn_sample: \(status)")
        return token
    }

    static let logits: [Float] = [0.3, 2.0, -1.0, 1.2, 0.0, 1.9]

    @Test("Drawing many times from a fixed distribution matches its probabilities")
    func drawsMatchProbabilities() {
        // 200,000 draws: each count is within 5 standard deviations
        // (sqrt(n p (1 - p))) of n p; a wrong softmax or walk is off by far more.
        let n = 200_000
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 11)
        var counts = [Int](repeating: 0, count: Self.logits.count)
        for _ in 0..<n { counts[Int(Self.draw(Self.logits, charrnn_sampling_default_params(), rng: &rng))] += 1 }
        let exps = Self.logits.map { exp(Double($0)) }
        let total = exps.reduce(0, +)
        for (index, count) in counts.enumerated() {
            let p = exps[index] / total
            let sigma = (Double(n) * p * (1 - p)).squareRoot()
            #expect(abs(Double(count) - Double(n) * p) < 5 * sigma, "token \(index): \(count) vs \(Double(n) * p)")
        }
    }

    @Test("Temperature reshapes the distribution as softmax(logits / T)")
    func temperatureReshapes() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 1)
        var probs = [Float](repeating: 0, count: Self.logits.count)
        var params = charrnn_sampling_default_params()
        params.temperature = 0.5
        _ = Self.draw(Self.logits, params, rng: &rng, probs: &probs)
        let exps = Self.logits.map { exp(Double($0) / 0.5) }
        let total = exps.reduce(0, +)
        #expect(mismatches(probs, exps.map { $0 / total }, absolute: 1e-6, relative: 1e-5).isEmpty)
    }

    @Test("Top-k 1 always gives the greedy choice")
    func topKOneIsGreedy() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 3)
        for trial in 0..<200 {
            let logits = (0..<17).map { Float(sin(Double($0 * 31 + trial * 7))) * 3 }
            var topOne = charrnn_sampling_default_params()
            topOne.top_k = 1
            var greedy = charrnn_sampling_default_params()
            greedy.greedy = 1
            let best = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
            #expect(Self.draw(logits, topOne, rng: &rng) == best)
            #expect(Self.draw(logits, greedy, rng: &rng) == best)
        }
    }

    @Test("Top-k keeps the k most likely, renormalised")
    func topKKeepsMostLikely() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 5)
        var params = charrnn_sampling_default_params()
        params.top_k = 3
        var probs = [Float](repeating: 0, count: Self.logits.count)
        _ = Self.draw(Self.logits, params, rng: &rng, probs: &probs)
        let kept = [1, 5, 3]  // logits 2.0, 1.9, 1.2
        let exps = kept.map { exp(Double(Self.logits[$0])) }
        for (position, index) in kept.enumerated() {
            #expect(abs(Double(probs[index]) - exps[position] / exps.reduce(0, +)) < 1e-6)
        }
        #expect([0, 2, 4].allSatisfy { probs[$0] == 0 })
        for _ in 0..<2000 { #expect(kept.contains(Int(Self.draw(Self.logits, params, rng: &rng)))) }
    }

    @Test("Top-p keeps the smallest set of most likely characters reaching p")
    func topPKeepsNucleus() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 5)
        let exps = Self.logits.map { exp(Double($0)) }
        let total = exps.reduce(0, +)
        let p1 = exps[1] / total
        let p5 = exps[5] / total
        var params = charrnn_sampling_default_params()
        params.top_p = Float(p1 + p5 / 2)  // more than the first alone, less than the first two
        var probs = [Float](repeating: 0, count: Self.logits.count)
        _ = Self.draw(Self.logits, params, rng: &rng, probs: &probs)
        #expect(probs.enumerated().filter { $0.element > 0 }.map(\.offset) == [1, 5])
        params.top_p = Float(p1 / 2)
        _ = Self.draw(Self.logits, params, rng: &rng, probs: &probs)
        #expect(probs[1] == 1 && probs.reduce(0, +) == 1)
    }

    @Test("Temperature near 0 approaches greedy, and 0 is greedy")
    func lowTemperatureIsGreedy() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 8)
        var params = charrnn_sampling_default_params()
        params.temperature = 0.005  // logits 2.0 vs 1.9: the runner-up has probability e^-20
        for _ in 0..<1000 { #expect(Self.draw(Self.logits, params, rng: &rng) == 1) }
        params.temperature = 0
        let before = rng
        #expect(Self.draw(Self.logits, params, rng: &rng) == 1)
        #expect(rng.s.0 == before.s.0 && rng.s.3 == before.s.3, "greedy draws no random number")
    }

    @Test("The same generator state gives the same draws")
    func drawsAreSeeded() {
        var a = charrnn_rng()
        var b = charrnn_rng()
        var c = charrnn_rng()
        _ = charrnn_rng_seed(&a, 99)
        _ = charrnn_rng_seed(&b, 99)
        _ = charrnn_rng_seed(&c, 100)
        let drawsA = (0..<100).map { _ in Self.draw(Self.logits, charrnn_sampling_default_params(), rng: &a) }
        let drawsB = (0..<100).map { _ in Self.draw(Self.logits, charrnn_sampling_default_params(), rng: &b) }
        let drawsC = (0..<100).map { _ in Self.draw(Self.logits, charrnn_sampling_default_params(), rng: &c) }
        #expect(drawsA == drawsB)
        #expect(drawsA != drawsC)
    }

    @Test("Bad sampling arguments return status codes")
    func badArguments() {
        var rng = charrnn_rng()
        _ = charrnn_rng_seed(&rng, 1)
        var token: Int32 = 0
        var scratch = [Float](repeating: 0, count: 64)
        func status(_ edit: (inout charrnn_sampling_params) -> Void, logits: [Float] = SamplingCoreTests.logits) -> charrnn_status {
            var params = charrnn_sampling_default_params()
            edit(&params)
            return charrnn_sample(logits, Int32(logits.count), &params, &rng, &scratch, nil, &token)
        }
        #expect(status { $0.temperature = -0.1 } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status { $0.temperature = .nan } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status { $0.top_k = 7 } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status { $0.top_k = -1 } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status { $0.top_p = 0 } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status { $0.top_p = 1.5 } == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(status({ _ in }, logits: [0, .nan, 1]) == CHARRNN_ERR_NON_FINITE)
        var params = charrnn_sampling_default_params()
        #expect(charrnn_sample(Self.logits, 6, &params, nil, &scratch, nil, &token) == CHARRNN_ERR_NULL_POINTER)
    }

    /// Stepping one character at a time must compute what the batched
    /// forward pass computes: the same final state, and logits whose
    /// cross-entropy is the forward pass's loss. S = 1 exercises the
    /// matrix-vector path, S = 3 the matrix-matrix path.
    @Test(
        "Stepping one character at a time matches the batched forward pass, for every cell",
        arguments: ReferenceModel.Cell.allCases, [1, 3])
    func stepMatchesForward(_ cell: ReferenceModel.Cell, streams: Int) {
        let harness = CoreHarness(
            vocabularySize: 9, hiddenSize: 40, layerCount: 2, batchSize: streams, steps: 7, nonZeroState: false,
            cell: cell)
        var config = harness.config
        let forward = harness.run(keep: 1, seed: 0, gradients: false)
        var state = [Float](repeating: 0, count: harness.initialState.count)
        var scratchCount = 0
        _ = charrnn_step_scratch_count(&config, Int32(streams), &scratchCount)
        var scratch = [Float](repeating: .nan, count: scratchCount)  // the step must write what it reads
        var logits = [Float](repeating: 0, count: streams * 9)
        var loss = 0.0
        for t in 0..<7 {
            let tokens = (0..<streams).map { harness.inputs[$0 * 7 + t] }
            #expect(charrnn_step(&config, harness.parameters, Int32(streams), tokens, &state, &scratch, &logits) == CHARRNN_OK)
            for s in 0..<streams {
                let row = logits[(s * 9)..<(s * 9 + 9)].map(Double.init)
                let maximum = row.max()!
                let logSum = log(row.reduce(0) { $0 + exp($1 - maximum) }) + maximum
                loss += logSum - row[Int(harness.targets[s * 7 + t])]
            }
        }
        loss /= Double(7 * streams)
        #expect(abs(loss - Double(forward.loss)) < 1e-5, "step loss \(loss) vs forward \(forward.loss)")
        #expect(mismatches(state, forward.state.map(Double.init), absolute: 1e-5, relative: 1e-4).isEmpty)
    }

    @Test("A step with a bad token or stream count returns a status")
    func stepBadArguments() {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 4, layerCount: 1, batchSize: 1, steps: 1)
        var config = harness.config
        var state = [Float](repeating: 0, count: 8)
        var scratch = [Float](repeating: 0, count: 64)
        var logits = [Float](repeating: 0, count: 5)
        #expect(charrnn_step(&config, harness.parameters, 1, [5], &state, &scratch, &logits) == CHARRNN_ERR_TOKEN_OUT_OF_RANGE)
        #expect(charrnn_step(&config, harness.parameters, 0, [0], &state, &scratch, &logits) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_step(&config, harness.parameters, 1, nil, &state, &scratch, &logits) == CHARRNN_ERR_NULL_POINTER)
    }
}
