import CCharRNN

/// The running state of generation for S streams: the recurrent state, the
/// core's scratch, the latest logits and one random generator per stream.
/// A value type, so a primed session can be copied and replayed.
struct InferenceSession {
    /// The weights stepped, in the generator's precision.
    let weights: InferenceWeights
    var model: Model { weights.model }
    let streams: Int
    let options: SamplingOptions
    private(set) var state: [Float]
    private(set) var logits: [Float]
    private var generators: [charrnn_rng]
    /// Scratch for charrnn_step and charrnn_sample. Its contents never
    /// matter between calls, so a copied session takes fresh buffers instead
    /// of sharing (see `uniqueScratch`).
    private var stepScratch: FloatBuffer
    private var sampleScratch: FloatBuffer

    /// Zero state; stream s draws from a generator seeded with
    /// `seed &+ s &* 0x9E3779B97F4A7C15` (stream 0: the seed itself).
    /// - Throws: `ModelError` when the core refuses the stream count or the
    ///   buffers do not fit in memory.
    init(weights: InferenceWeights, streams: Int, options: SamplingOptions) throws(ModelError) {
        self.weights = weights
        let model = weights.model
        self.streams = streams
        self.options = options
        let configuration = model.configuration
        let stateCount = try configuration.stateCount(batchSize: streams)
        let scratchCount = try configuration.stepScratchCount(streams: streams)
        let sampleScratchCount = try configuration.sampleScratchCount()
        let (logitCount, overflow) = streams.multipliedReportingOverflow(by: configuration.vocabularySize)
        guard !overflow else { throw .core(CoreError(CHARRNN_ERR_INVALID_SHAPE, function: "charrnn_step")) }
        do {
            try MemoryBudget.check(
                requiredBytes: MemoryBudget.sum(
                    MemoryBudget.floatBytes(stateCount), MemoryBudget.floatBytes(scratchCount), MemoryBudget.floatBytes(logitCount)))
            stepScratch = try FloatBuffer(count: scratchCount)
            sampleScratch = try FloatBuffer(count: sampleScratchCount)
        } catch {
            throw .insufficientMemory(error)
        }
        state = [Float](repeating: 0, count: stateCount)
        logits = [Float](repeating: 0, count: logitCount)
        var generators: [charrnn_rng] = []
        generators.reserveCapacity(streams)
        for stream in 0..<streams {
            var rng = charrnn_rng()
            try ModelError.check(charrnn_rng_seed(&rng, SamplingOptions.streamSeed(options.seed, stream: stream)), "charrnn_rng_seed")
            generators.append(rng)
        }
        self.generators = generators
    }

    /// Feeds one token per stream; afterwards `logits` holds each stream's
    /// scores for the next character.
    mutating func feed(_ tokens: [Int32]) throws(ModelError) {
        try uniqueScratch()
        try weights.step(streams: streams, tokens: tokens, state: &state, scratch: stepScratch, logits: &logits)
    }

    /// Feeds a whole prime to every stream: once, for one stream, through
    /// `charrnn_prime` or `charrnn_prime_bf16` (all of it known, so its products are batched), then
    /// the state and the scores copied to every stream. Afterwards `logits`
    /// holds each stream's scores for the next character.
    mutating func feedPrime(_ prime: [Int32]) throws(ModelError) {
        let configuration = model.configuration
        let feeder = try PrimeFeeder(weights: weights, piece: min(prime.count, PrimeFeeder.defaultPiece))
        var single = try feeder.zeroState()
        let scores = try feeder.feedAll(prime, state: &single)
        let one = RecurrentState(values: single, batchSize: 1)
        state = RecurrentState(joining: [RecurrentState](repeating: one, count: streams), configuration: configuration).values
        logits = [Float]((0..<streams).map { _ in scores }.joined())
    }

    /// Draws the next token of every stream from the current logits.
    mutating func draw() throws(ModelError) -> [Int32] {
        var params = options.coreParameters
        try uniqueScratch()
        var tokens = [Int32](repeating: 0, count: streams)
        for stream in 0..<streams {
            tokens[stream] = try model.drawToken(
                logits: logits, stream: stream, parameters: &params,
                generator: &generators[stream], scratch: sampleScratch)
        }
        return tokens
    }

    private mutating func uniqueScratch() throws(ModelError) {
        do {
            if !isKnownUniquelyReferenced(&stepScratch) { stepScratch = try FloatBuffer(count: stepScratch.count) }
            if !isKnownUniquelyReferenced(&sampleScratch) { sampleScratch = try FloatBuffer(count: sampleScratch.count) }
        } catch {
            throw .insufficientMemory(error)
        }
    }
}

extension Model {
    /// Draws stream `stream`'s next token from its row of `logits`, with its
    /// own generator.
    func drawToken(
        logits: [Float], stream: Int, parameters: inout charrnn_sampling_params,
        generator: inout charrnn_rng, scratch: FloatBuffer
    ) throws(ModelError) -> Int32 {
        let vocabularySize = configuration.vocabularySize
        var token: Int32 = 0
        let status = logits.withUnsafeBufferPointer { all in
            charrnn_sample(
                all.baseAddress! + stream * vocabularySize, Int32(vocabularySize), &parameters,
                &generator, scratch.baseAddress, nil, &token)
        }
        // Non-finite logits come from weights so large that the arithmetic overflows.
        if status == CHARRNN_ERR_NON_FINITE { throw .nonFinite(.logits) }
        if status != CHARRNN_OK { throw .core(CoreError(status, function: "charrnn_sample")) }
        return token
    }
}

extension SamplingOptions {
    /// The options as the core's sampling parameters.
    var coreParameters: charrnn_sampling_params {
        charrnn_sampling_params(
            temperature: temperature, top_k: Int32(topK ?? 0), top_p: topP ?? 1,
            greedy: greedy ? 1 : 0)
    }

    /// The seed of stream `stream` of a batch seeded with `seed`: the seed
    /// itself for stream 0, then steps of the golden ratio (sample i of
    /// `TextGenerator.samples` and `charrnn sample --count` draws with it).
    public static func streamSeed(_ seed: UInt64, stream: Int) -> UInt64 {
        seed &+ UInt64(stream) &* 0x9E37_79B9_7F4A_7C15
    }
}
