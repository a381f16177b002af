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
    init(model: Model, streams: Int, options: SamplingOptions) {
        self.model = model
        self.streams = streams
        self.options = options
        let configuration = model.configuration
        state = [Float](repeating: 0, count: 2 * configuration.layerCount * streams * configuration.hiddenSize)
        logits = [Float](repeating: 0, count: streams * configuration.vocabularySize)
        var config = configuration.raw
        var scratchCount = 0
        _ = charrnn_step_scratch_count(&config, Int32(streams), &scratchCount)
        stepScratch = FloatBuffer(count: scratchCount)
        sampleScratch = FloatBuffer(count: 2 * configuration.vocabularySize)
        generators = (0..<streams).map { stream in
            var rng = charrnn_rng()
            _ = charrnn_rng_seed(&rng, options.seed &+ UInt64(stream) &* 0x9E37_79B9_7F4A_7C15)
            return rng
        }
    }

    /// Feeds one token per stream; afterwards `logits` holds each stream's
    /// scores for the next character.
    mutating func feed(_ tokens: [Int32]) throws(ModelError) {
        uniqueScratch()
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
        uniqueScratch()
        let scratch = sampleScratch
        var tokens = [Int32](repeating: 0, count: streams)
        for stream in 0..<streams {
            var token: Int32 = 0
            let status = logits.withUnsafeBufferPointer { all in
                charrnn_sample(all.baseAddress! + stream * vocabularySize, Int32(vocabularySize), &params,
                               &generators[stream], scratch.baseAddress, nil, &token)
            }
            if status != CHARRNN_OK { throw .core(CoreError(status, function: "charrnn_sample")) }
            tokens[stream] = token
        }
        return tokens
    }

    private mutating func uniqueScratch() {
        if !isKnownUniquelyReferenced(&stepScratch) { stepScratch = FloatBuffer(count: stepScratch.count) }
        if !isKnownUniquelyReferenced(&sampleScratch) { sampleScratch = FloatBuffer(count: sampleScratch.count) }
    }
}
