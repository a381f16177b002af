import Foundation

/// What a trace records besides each character's probability.
public struct TraceOptions: Sendable, Equatable {
    /// Which hidden units of every layer to record.
    public enum Units: Sendable, Equatable {
        /// None: only probabilities, surprise and entropy.
        case none
        /// These units (indices in `0..<H`) of every layer, in ascending
        /// order whatever order they were given in.
        case listed([Int])
        /// Every unit of every layer.
        case all
    }

    /// The hidden units recorded after each character.
    public var units: Units = .none
    /// How many of the likeliest characters to record at each position
    /// (0 for none).
    public var top = 0
    /// For the LSTM, whether to record the chosen units' cell state `c` too.
    public var cellState = true
    /// The temperature T the distributions are read at, `log softmax(logits
    /// / T)`: 1, the model's own; another value shows the text as sampling
    /// at that temperature scores it (as a generated character's
    /// `CharacterLogprob` does). Positive and finite.
    public var temperature = 1.0

    /// Nothing but probabilities, surprise and entropy.
    public init() {}

    /// The options named.
    public init(units: Units, top: Int = 0, cellState: Bool = true, temperature: Double = 1) {
        self.units = units
        self.top = top
        self.cellState = cellState
        self.temperature = temperature
    }
}

/// The bounds a server puts on traces (`charrnn-server`'s `--max-trace-*`
/// flags): a trace's size, and how many run at once.
public struct TraceLimits: Sendable, Equatable {
    /// Characters one trace may have.
    public var maxCharacters = 10_000
    /// Activations per character one trace may return: the units asked
    /// for times the layers (the reference model's all: 2 × 512).
    public var maxUnits = 2_048
    /// Traces computed at once (each takes a core's worth of work).
    public var maxConcurrent = 2

    /// The defaults.
    public init() {}
}

/// A trace that cannot be made as asked.
public enum TraceError: Error, Equatable, CustomStringConvertible {
    /// The text has no character.
    case emptyText
    /// The text has characters the model's vocabulary lacks.
    case unknownCharacters([Unicode.Scalar])
    /// A unit index is not in `0..<hiddenSize`.
    case unitOutOfRange(unit: Int, hiddenSize: Int)
    /// `top` is negative or above the vocabulary's size.
    case topOutOfRange(top: Int, vocabularySize: Int)
    /// The temperature is zero, negative or not finite.
    case temperatureOutOfRange(Double)
    /// A model operation failed.
    case model(ModelError)

    public var description: String {
        switch self {
        case .emptyText: return "the text to trace has no character"
        case .unknownCharacters(let scalars):
            let names = scalars.prefix(20).map(Vocabulary.describe).joined(separator: ", ")
            return "the text has characters the model's vocabulary lacks: \(names)"
                + (scalars.count > 20 ? " and \(scalars.count - 20) more" : "")
        case .unitOutOfRange(let unit, let hiddenSize):
            return "units must be in 0-\(hiddenSize - 1), the model's layers having \(hiddenSize) (got \(unit))"
        case .topOutOfRange(let top, let vocabularySize):
            return "top must be in 0-\(vocabularySize), the model's vocabulary (got \(top))"
        case .temperatureOutOfRange(let temperature):
            return "the temperature must be a positive finite number (got \(temperature))"
        case .model(let error): return error.description
        }
    }
}

/// One character of a traced text: how the model predicted it from the
/// characters before, and its state after reading it.
public struct TracedCharacter: Sendable, Equatable {
    /// A likely character and its probability.
    public struct Alternative: Sendable, Equatable {
        /// The character.
        public let character: Unicode.Scalar
        /// Its index in the vocabulary.
        public let token: Int32
        /// Its natural-log probability.
        public let logprob: Double
        /// Its probability, in [0, 1].
        public var probability: Double { exp(logprob) }
    }

    /// The character's place in the text, from 0.
    public let position: Int
    /// The character.
    public let character: Unicode.Scalar
    /// Its index in the vocabulary.
    public let token: Int32
    /// Its natural-log probability given the characters before (the
    /// distribution at the trace's temperature, 1 unless asked); nil for the
    /// first character, which nothing predicts.
    public let logprob: Double?
    /// The entropy of the distribution it was predicted from, in nats; nil
    /// for the first character.
    public let entropy: Double?
    /// The likeliest characters of that distribution, likeliest first (ties:
    /// the one earlier in the vocabulary first); empty for the first character.
    public let top: [Alternative]
    /// The chosen units' hidden values `h` after reading the character: one
    /// array per layer, bottom first, the units in ascending order.
    public let hidden: [[Float]]
    /// The LSTM's cell state `c` of the same units (empty for other cells,
    /// or when not asked for).
    public let cell: [[Float]]

    /// The probability the model gave the character (nil for the first).
    public var probability: Double? { logprob.map { exp($0) } }
    /// Its surprise, `-log p` in nats (nil for the first).
    public var surprise: Double? { logprob.map { -$0 } }
    /// Its surprise in bits (nil for the first).
    public var surpriseBits: Double? { logprob.map { -$0 / 0.693_147_180_559_945_3 } }
}

/// A text fed to a model one character at a time, recording for each what
/// the model expected and the hidden units it moved: Karpathy's pictures
/// and LSTMVis's units, as numbers. Streams: `next()` computes one
/// character, so memory does not grow with the text.
///
/// The surprise of each character is exactly what `Evaluation.stepped`
/// sums: the mean over a text is its evaluation loss.
public struct TextTrace {
    /// The model's vocabulary.
    public let vocabulary: Vocabulary
    /// The text as vocabulary indices.
    public let tokens: [Int32]
    /// The hidden units recorded, ascending (the same for every layer).
    public let units: [Int]
    /// Whether `TracedCharacter.cell` is recorded (the LSTM, when asked).
    public let recordsCell: Bool
    /// How many alternatives each character records.
    public let top: Int
    /// The temperature the distributions are read at.
    public let temperature: Double
    /// The model's recurrent layers (each records `units`).
    public var layerCount: Int { configuration.layerCount }
    /// The next position `next()` computes.
    public private(set) var position = 0
    /// The sum of the surprises so far, in nats.
    public private(set) var totalSurprise = 0.0

    private var session: InferenceSession
    private let configuration: ModelConfiguration

    /// A trace of `tokens` through `generator`'s model, in its precision,
    /// from a zero state.
    /// - Throws: `TraceError` for an empty text, a unit or top out of range,
    ///   or when the session's buffers do not fit in memory.
    public init(generator: TextGenerator, tokens: [Int32], options: TraceOptions) throws(TraceError) {
        guard !tokens.isEmpty else { throw .emptyText }
        let configuration = generator.model.configuration
        let hiddenSize = configuration.hiddenSize
        switch options.units {
        case .none: units = []
        case .all: units = Array(0..<hiddenSize)
        case .listed(let listed):
            if let outside = listed.first(where: { !(0..<hiddenSize).contains($0) }) {
                throw .unitOutOfRange(unit: outside, hiddenSize: hiddenSize)
            }
            units = Array(Set(listed)).sorted()
        }
        guard (0...configuration.vocabularySize).contains(options.top) else {
            throw .topOutOfRange(top: options.top, vocabularySize: configuration.vocabularySize)
        }
        precondition(tokens.allSatisfy { (0..<Int32(configuration.vocabularySize)).contains($0) }, "tokens come from the vocabulary")
        guard options.temperature > 0 && options.temperature.isFinite else { throw .temperatureOutOfRange(options.temperature) }
        self.configuration = configuration
        vocabulary = generator.vocabulary
        self.tokens = tokens
        top = options.top
        temperature = options.temperature
        recordsCell = options.cellState && configuration.cell == .lstm && !units.isEmpty
        do {
            session = try InferenceSession(weights: generator.weights, streams: 1, options: SamplingOptions())
        } catch {
            throw .model(error)
        }
    }

    /// A trace of `text`, whose every character must be in the vocabulary.
    /// - Throws: `TraceError.unknownCharacters` naming those it lacks, and
    ///   what `init(generator:tokens:options:)` throws.
    public init(generator: TextGenerator, text: String, options: TraceOptions) throws(TraceError) {
        let tokens: [Int32]
        do { tokens = try generator.vocabulary.encode(text.unicodeScalars) } catch {
            guard case .unknownScalars(let unknown) = error else { preconditionFailure("encoding fails only on unknown characters") }
            throw .unknownCharacters(unknown)
        }
        try self.init(generator: generator, tokens: tokens, options: options)
    }

    /// Characters predicted so far (every one but the first).
    public var predictions: Int { max(0, position - 1) }

    /// The mean surprise so far in nats: the text's cross-entropy once the
    /// trace has ended (NaN before a second character).
    public var meanSurprise: Double { predictions == 0 ? .nan : totalSurprise / Double(predictions) }

    /// Computes the next character, or returns nil at the end of the text.
    /// - Throws: `ModelError` when the core fails (non-finite scores from
    ///   weights that overflow, say).
    public mutating func next() throws(ModelError) -> TracedCharacter? {
        guard position < tokens.count else { return nil }
        let token = tokens[position]
        var logprob: Double? = nil
        var entropy: Double? = nil
        var alternatives: [TracedCharacter.Alternative] = []
        if position > 0 {
            // The scores after the previous character predict this one.
            let distribution = ScoreDistribution(logits: session.logits[0..<configuration.vocabularySize], temperature: temperature)
            let value = distribution.logprob(of: Int(token))
            guard value.isFinite else { throw .nonFinite(.logits) }
            logprob = value
            entropy = distribution.entropy
            alternatives = distribution.likeliest(top).map {
                TracedCharacter.Alternative(character: vocabulary.scalars[$0], token: Int32($0), logprob: distribution.logprob(of: $0))
            }
            totalSurprise -= value
        }
        try session.feed([token])
        // The one-stream state is [C, L, 1, H]: every layer's h, then (LSTM) every c.
        let hiddenSize = configuration.hiddenSize
        let layers = configuration.layerCount
        let state = session.state
        let hidden = (0..<layers).map { layer in units.map { state[layer * hiddenSize + $0] } }
        let cell = recordsCell ? (0..<layers).map { layer in units.map { state[(layers + layer) * hiddenSize + $0] } } : []
        defer { position += 1 }
        return TracedCharacter(
            position: position, character: vocabulary.scalars[Int(token)], token: token, logprob: logprob, entropy: entropy,
            top: alternatives, hidden: hidden, cell: cell)
    }
}
