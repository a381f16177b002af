/// How the next character is drawn from the model's distribution.
///
/// The defaults draw from the full distribution at temperature 1. The
/// original notebook drew from the 5 most likely characters (`topK = 5`),
/// which is `charrnn sample`'s default.
public struct SamplingOptions: Sendable, Equatable {
    /// Divides the logits before the softmax: below 1 sharper, above 1 flatter.
    /// 0 means greedy. Must be finite and not negative.
    public var temperature: Float = 1
    /// Keep only the k most likely characters (1…V), or all when `nil`.
    public var topK: Int? = nil
    /// Keep the smallest set of most likely characters whose probability
    /// reaches p, in (0, 1] (nucleus sampling), or all when `nil`.
    public var topP: Float? = nil
    /// Always take the most likely character (ties: the lower index).
    public var greedy = false
    /// Seeds the draws: same model, options, prime and seed give the same text.
    public var seed: UInt64 = 0

    /// Full-distribution sampling at temperature 1 with seed 0.
    public init() {}

    /// The temperature log-probabilities are read at (`CharacterLogprob`'s,
    /// and a prompt's scored to match them): `temperature`, or the model's
    /// own 1 when drawing is greedy or at temperature 0.
    public var logprobTemperature: Double { greedy || temperature == 0 ? 1 : Double(temperature) }

    /// The notebook's filter, the 5 most likely characters (all of them in a
    /// smaller vocabulary): the default top-k when neither top-k nor top-p is asked for.
    public static func notebookTopK(vocabularySize: Int) -> Int { min(5, vocabularySize) }

    /// The top-k of a request that may leave it out (`charrnn sample`'s and
    /// the server's rule): `asked` when given; otherwise the notebook's
    /// (`notebookTopK`), unless top-p is asked for, which alone means no top-k.
    public static func topK(asked: Int?, topP: Float?, vocabularySize: Int) -> Int? {
        asked ?? (topP == nil ? notebookTopK(vocabularySize: vocabularySize) : nil)
    }

    /// A seed chosen at random when none is given, small enough to type back.
    public static func randomSeed() -> UInt64 { UInt64.random(in: 0...UInt64(UInt32.max)) }

    /// What a generation call is given, named as the properties and
    /// parameters (`topK`, `length`, …; `stop` and `logprobs` are
    /// `CompletionOptions`'), for errors that say which is out of range.
    public enum Option: String, Sendable, CaseIterable {
        case temperature, topK, topP, length, count, stop, logprobs
    }

    /// Throws `SamplingError.invalidOption` naming the first value out of range.
    public func validate(vocabularySize: Int) throws(SamplingError) {
        guard temperature >= 0, temperature.isFinite else {
            throw .invalidOption(.temperature, value: "\(temperature)", requirement: "0 or more, and finite")
        }
        if let topK, !(1...max(1, vocabularySize)).contains(topK) {
            throw .invalidOption(.topK, value: "\(topK)", requirement: "between 1 and the vocabulary size \(vocabularySize)")
        }
        if let topP, !(topP > 0 && topP <= 1) {
            throw .invalidOption(.topP, value: "\(topP)", requirement: "in (0, 1]")
        }
    }
}

/// Why text could not be generated.
public enum SamplingError: Error, Equatable, CustomStringConvertible {
    /// An option is out of range: which one, the value given, and what it must be.
    case invalidOption(SamplingOptions.Option, value: String, requirement: String)
    /// The model's outputs and the vocabulary differ in size.
    case vocabularyMismatch(modelOutputs: Int, vocabularySize: Int)
    /// Generation needs at least one character of prime text.
    case emptyPrime
    /// The prime has characters the model's vocabulary lacks.
    case unknownCharacters([Unicode.Scalar])
    /// A model operation failed.
    case model(ModelError)

    public var description: String {
        switch self {
        case .invalidOption(let option, let value, let requirement):
            return "\(option.rawValue) must be \(requirement) (got \(value))"
        case .vocabularyMismatch(let outputs, let size):
            return "the model has \(outputs) outputs but the vocabulary has \(size) characters"
        case .emptyPrime: return "the prime text must have at least one character the model knows"
        case .unknownCharacters(let scalars):
            let names = scalars.prefix(20).map(Vocabulary.describe).joined(separator: ", ")
            return "the prime has characters the model's vocabulary lacks: \(names)"
                + (scalars.count > 20 ? " and \(scalars.count - 20) more" : "")
        case .model(let error): return error.description
        }
    }
}
