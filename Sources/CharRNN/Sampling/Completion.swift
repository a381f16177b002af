import Foundation

/// What a completion asks for beyond how characters are drawn: where it
/// stops early, and whether each character's log-probability comes with it.
public struct CompletionOptions: Sendable, Equatable {
    /// Generation ends before the first of these strings it produces, which
    /// is not returned (the prime is not searched). Each must have at least
    /// one character.
    public var stop: [String] = []
    /// With a value K (0 or more, at most the vocabulary size), each
    /// generated character comes with its log-probability and the K most
    /// likely characters at that position with theirs (see `CharacterLogprob`).
    public var logprobs: Int? = nil

    /// No stop strings, no log-probabilities.
    public init() {}

    /// Throws `SamplingError.invalidOption` naming the first value out of range.
    public func validate(vocabularySize: Int) throws(SamplingError) {
        if let empty = stop.firstIndex(where: \.isEmpty) {
            throw .invalidOption(.stop, value: "\"\" as item \(empty + 1)", requirement: "strings of at least one character")
        }
        if let logprobs, !(0...vocabularySize).contains(logprobs) {
            throw .invalidOption(.logprobs, value: "\(logprobs)", requirement: "between 0 and the vocabulary size \(vocabularySize)")
        }
    }
}

/// Why a completion ended.
public enum FinishReason: String, Sendable, Equatable {
    /// All the characters asked for were generated.
    case length
    /// A stop string was generated (and left out).
    case stop
}

/// A prime's continuation: the generated text (the prime and any stop string
/// left out), why it ended and, when asked, each character's log-probability.
public struct Completion: Sendable, Equatable {
    /// The generated characters.
    public var text: String
    /// `.stop` when a stop string ended it, else `.length`.
    public var finishReason: FinishReason
    /// One per character of `text`, when log-probabilities were asked for.
    public var logprobs: [CharacterLogprob]?
}

/// A generated character's log-probability, and the most likely characters
/// at its position with theirs.
///
/// They are natural logarithms of the distribution the character was drawn
/// from after the temperature and before any top-k or top-p cut:
/// `log softmax(logits / temperature)` over the whole vocabulary (at
/// temperature 0 and with greedy drawing, the model's own distribution,
/// `log softmax(logits)`). So every character has a finite value, and a
/// character a top-k cut left out still shows how likely the model found it.
public struct CharacterLogprob: Sendable, Equatable {
    /// A character and its log-probability.
    public struct Alternative: Sendable, Equatable {
        /// The character.
        public let character: Unicode.Scalar
        /// Its natural-log probability.
        public let logprob: Double
    }

    /// The generated character.
    public let character: Unicode.Scalar
    /// Its natural-log probability.
    public let logprob: Double
    /// The K most likely characters, most likely first (ties: the one
    /// earlier in the vocabulary first).
    public let top: [Alternative]

    /// The log-probability of `token` and the `top` most likely tokens, from
    /// one stream's row of scores.
    init(token: Int32, logits: ArraySlice<Float>, options: SamplingOptions, top: Int, vocabulary: Vocabulary) {
        let distribution = ScoreDistribution(logits: logits, temperature: options.logprobTemperature)
        character = vocabulary.scalars[Int(token)]
        logprob = distribution.logprob(of: Int(token))
        self.top = distribution.likeliest(top).map { Alternative(character: vocabulary.scalars[$0], logprob: distribution.logprob(of: $0)) }
    }
}

/// One row of scores as a distribution, `log softmax(logits / T)` in
/// Double: what log-probabilities, a trace's surprise and entropy, and the
/// stepped evaluation all read, so they agree to the last bit.
struct ScoreDistribution {
    /// The scores divided by the temperature.
    let scaled: [Double]
    /// `log Σ exp(scaled)`, computed from the largest score.
    let logSum: Double

    init(logits: ArraySlice<Float>, temperature: Double = 1) {
        scaled = logits.map { Double($0) / temperature }
        let largest = scaled.max() ?? 0
        logSum = largest + Foundation.log(scaled.reduce(0) { $0 + Foundation.exp($1 - largest) })
    }

    /// The natural-log probability of the row's `index`th entry.
    func logprob(of index: Int) -> Double { scaled[index] - logSum }

    /// The entropy in nats, `-Σ p log p`.
    var entropy: Double {
        var sum = 0.0
        for score in scaled {
            let logp = score - logSum
            sum -= Foundation.exp(logp) * logp
        }
        return sum
    }

    /// The indices of the `count` likeliest entries, likeliest first (ties:
    /// the lower index first).
    func likeliest(_ count: Int) -> [Int] {
        guard count > 0 else { return [] }
        let before = { (a: Int, b: Int) in scaled[a] > scaled[b] || (scaled[a] == scaled[b] && a < b) }
        guard count * 8 < scaled.count else { return Array(scaled.indices.sorted(by: before).prefix(count)) }
        // A few of many (a trace's top 5 of thousands of characters): one
        // pass keeping the best so far in order, instead of sorting them all.
        var best: [Int] = []
        best.reserveCapacity(count + 1)
        for index in scaled.indices where best.count < count || before(index, best[count - 1]) {
            let place = best.firstIndex { before(index, $0) } ?? best.count
            best.insert(index, at: place)
            if best.count > count { best.removeLast() }
        }
        return best
    }
}

/// Finds stop strings in generated text as it arrives, one character at a
/// time, holding back characters that may begin one, so nothing of a stop
/// string is ever released. Each character carries an `Element` (its
/// log-probability, say), released with it.
struct StopMatcher<Element> {
    private let stops: [[Unicode.Scalar]]
    private var held: [(scalar: Unicode.Scalar, element: Element)] = []
    /// Whether a stop string has been generated; nothing is taken after.
    private(set) var stopped = false

    init(stops: [String]) {
        // The longest first: where two end at the same character, the text
        // is cut before the longer (the earlier start).
        self.stops = stops.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
    }

    /// Takes the next generated character; returns the characters that can
    /// no longer be part of a stop string, in order.
    mutating func push(_ scalar: Unicode.Scalar, _ element: Element) -> [Element] {
        guard !stopped else { return [] }
        held.append((scalar, element))
        for stop in stops where held.count >= stop.count && held.suffix(stop.count).map(\.scalar) == stop {
            stopped = true
            let released = held.dropLast(stop.count).map(\.element)
            held = []
            return released
        }
        // Keep the longest end of the held text that begins some stop string.
        var keep = min(held.count, (stops.first?.count ?? 1) - 1)
        while keep > 0 && !stops.contains(where: { Self.begins($0, with: held.suffix(keep)) }) { keep -= 1 }
        let released = held.dropLast(keep).map(\.element)
        held.removeFirst(held.count - keep)
        return released
    }

    /// The characters still held back, at the end of generation.
    mutating func flush() -> [Element] {
        defer { held = [] }
        return held.map(\.element)
    }

    private static func begins(_ stop: [Unicode.Scalar], with tail: ArraySlice<(scalar: Unicode.Scalar, element: Element)>) -> Bool {
        guard tail.count < stop.count else { return false }
        return zip(stop, tail).allSatisfy { $0 == $1.scalar }
    }
}
