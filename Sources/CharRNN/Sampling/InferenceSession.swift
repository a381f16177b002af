import CCharRNN

/// The running state of generation for S streams: the recurrent state, the
/// core's scratch, the latest logits and one random generator per stream.
/// A value type, so a primed session can be copied and replayed.
struct InferenceSession {
    let model: Model
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
    init(model: Model, streams: Int, options: SamplingOptions) throws(ModelError) {
        self.model = model
        self.streams = streams
        self.options = options
        let configuration = model.configuration
        let stateCount = try configuration.stateCount(batchSize: streams)
        let scratchCount = try configuration.stepScratchCount(streams: streams)
        let sampleScratchCount = try configuration.sampleScratchCount()
        let (logitCount, overflow) = streams.multipliedReportingOverflow(by: configuration.vocabularySize)
        guard !overflow else { throw .core(CoreError(CHARRNN_ERR_INVALID_SHAPE, function: "charrnn_step")) }
        do {
            try MemoryBudget.check(requiredBytes: MemoryBudget.sum(
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
            try ModelError.check(charrnn_rng_seed(&rng, options.seed &+ UInt64(stream) &* 0x9E37_79B9_7F4A_7C15), "charrnn_rng_seed")
            generators.append(rng)
        }
        self.generators = generators
    }

    /// Feeds one token per stream; afterwards `logits` holds each stream's
    /// scores for the next character.
    mutating func feed(_ tokens: [Int32]) throws(ModelError) {
        try uniqueScratch()
        var config = model.configuration.raw
        let scratch = stepScratch
        let status = charrnn_step(&config, model.parameters.baseAddress, Int32(streams), tokens, &state,
                                  scratch.baseAddress, &logits)
        if status != CHARRNN_OK { throw .core(CoreError(status, function: "charrnn_step")) }
    }

    /// Draws the next token of every stream from the current logits.
    mutating func draw() throws(ModelError) -> [Int32] {
        let vocabularySize = model.configuration.vocabularySize
        var params = charrnn_sampling_params(
            temperature: options.temperature, top_k: Int32(options.topK ?? 0), top_p: options.topP ?? 1,
            greedy: options.greedy ? 1 : 0)
        try uniqueScratch()
        let scratch = sampleScratch
        var tokens = [Int32](repeating: 0, count: streams)
        for stream in 0..<streams {
            var token: Int32 = 0
            let status = logits.withUnsafeBufferPointer { all in
                charrnn_sample(all.baseAddress! + stream * vocabularySize, Int32(vocabularySize), &params,
                               &generators[stream], scratch.baseAddress, nil, &token)
            }
            // Non-finite logits come from weights so large that the arithmetic overflows.
            if status == CHARRNN_ERR_NON_FINITE { throw .nonFinite(.logits) }
            if status != CHARRNN_OK { throw .core(CoreError(status, function: "charrnn_sample")) }
            tokens[stream] = token
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
