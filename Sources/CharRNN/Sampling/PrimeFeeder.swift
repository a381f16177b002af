import CCharRNN

/// Feeds primes into one stream's state through `charrnn_prime` (or
/// `charrnn_prime_bf16`, in the weights' precision), a piece
/// of at most `piece` characters per call: the scratch is sized for one
/// piece, and a caller can stop between pieces. The core sums a piece's
/// products in an order that does not depend on where the prime was cut,
/// so any cut gives the bits one call would.
struct PrimeFeeder {
    /// The weights fed through, in the generator's precision.
    let weights: InferenceWeights
    var model: Model { weights.model }
    /// The most characters one call feeds.
    let piece: Int
    /// The piece a whole prime is fed in: about 2.5 MB of scratch for the
    /// reference model, and a few tens of milliseconds between chances to stop.
    static let defaultPiece = 256
    private let scratch: FloatBuffer

    /// - Throws: `ModelError` when the core refuses the sizes or the scratch does not fit in memory.
    init(weights: InferenceWeights, piece: Int) throws(ModelError) {
        self.weights = weights
        self.piece = piece
        let count = try weights.model.configuration.primeScratchCount(steps: piece)
        do {
            try MemoryBudget.check(requiredBytes: MemoryBudget.floatBytes(count))
            scratch = try FloatBuffer(count: count)
        } catch {
            throw .insufficientMemory(error)
        }
    }

    /// A zero one-stream state of the model.
    func zeroState() throws(ModelError) -> [Float] {
        [Float](repeating: 0, count: try model.configuration.stateCount(batchSize: 1))
    }

    /// Feeds `tokens` (1 to `piece` of them) into `state`, a one-stream
    /// state, without the output layer.
    func feed(_ tokens: ArraySlice<Int32>, state: inout [Float]) throws(ModelError) {
        try call(tokens, &state, nil)
    }

    /// Feeds the whole of `tokens` into `state` (a one-stream state), piece
    /// by piece, and returns the scores for the character after the last.
    func feedAll(_ tokens: [Int32], state: inout [Float]) throws(ModelError) -> [Float] {
        precondition(!tokens.isEmpty, "a prime has a character")
        var logits = [Float](repeating: 0, count: model.configuration.vocabularySize)
        var start = tokens.startIndex
        while start < tokens.endIndex {
            let end = min(start + piece, tokens.endIndex)
            if end < tokens.endIndex {
                try feed(tokens[start..<end], state: &state)
            } else {
                try logits.withUnsafeMutableBufferPointer { (scores) throws(ModelError) in try call(tokens[start..<end], &state, scores.baseAddress) }
            }
            start = end
        }
        return logits
    }

    private func call(_ tokens: ArraySlice<Int32>, _ state: inout [Float], _ logits: UnsafeMutablePointer<Float>?) throws(ModelError) {
        precondition(!tokens.isEmpty && tokens.count <= piece, "a piece of 1 to \(piece) characters")
        try tokens.withUnsafeBufferPointer { (tokens) throws(ModelError) in
            try weights.prime(tokens, state: &state, scratch: scratch, logits: logits)
        }
    }
}
