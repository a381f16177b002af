/// Writes text with a trained model, one character at a time.
///
/// As the original notebook did, the prime text is fed through the network
/// from a zero state (all of it at once: its characters are known, so the
/// core batches their products), then each next character is drawn from
/// the model's distribution (see `SamplingOptions`) and fed back. The
/// products are fp32 unless the generator is made with `.bfloat16`
/// (`Precision`).
///
/// ```swift
/// let generator = try TextGenerator(checkpoint: Checkpoint(contentsOf: url))
/// var options = SamplingOptions()
/// options.topK = 5
/// for character in try generator.characters(prime: "Far", length: 200, options: options) {
///     print(character, terminator: "")
/// }
/// ```
///
/// The generator only reads the model; do not train the same model while
/// generating from it.
public struct TextGenerator {
    /// The prime used when none is given (`charrnn sample`'s default).
    public static let defaultPrime = "The "
    /// Characters generated after the prime when no length is given.
    public static let defaultLength = 2000

    /// The model that writes.
    public var model: Model { weights.model }
    /// The model's alphabet.
    public let vocabulary: Vocabulary
    /// The arithmetic of the products.
    public var precision: Precision { weights.precision }
    /// The weights the step and the prime read (for bf16, packed once here).
    let weights: InferenceWeights

    /// A generator for `model`, whose characters are `vocabulary`, with its
    /// products in `precision`. The model's weights are read (for bf16,
    /// packed) now: do not train the model while generating from it.
    /// Throws `SamplingError.vocabularyMismatch` if their sizes differ, or
    /// `.model` when bf16's packed weights do not fit in memory. bf16 runs
    /// on any CPU; `Precision.bf16Kernel` says whether it is the fast kind.
    public init(model: Model, vocabulary: Vocabulary, precision: Precision = .float32) throws(SamplingError) {
        guard model.configuration.vocabularySize == vocabulary.count else {
            throw .vocabularyMismatch(modelOutputs: model.configuration.vocabularySize, vocabularySize: vocabulary.count)
        }
        do { weights = try InferenceWeights(model: model, precision: precision) } catch { throw .model(error) }
        self.vocabulary = vocabulary
    }

    /// A generator for a checkpoint's model (made for inference: the
    /// parameters only) and vocabulary, with its products in `precision`.
    public init(checkpoint: Checkpoint, precision: Precision = .float32) throws(SamplingError) {
        let model: Model
        do { model = try checkpoint.makeModel(purpose: .inference) } catch { throw .model(error) }
        try self.init(model: model, vocabulary: checkpoint.vocabulary, precision: precision)
    }

    /// The prime's characters as indices. With `dropUnknown`, characters the
    /// vocabulary lacks are left out; otherwise they are an error naming them.
    public func encodePrime(_ prime: String, dropUnknown: Bool = false) throws(SamplingError) -> [Int32] {
        let scalars = prime.unicodeScalars
        let tokens: [Int32]
        if dropUnknown {
            tokens = scalars.compactMap { vocabulary.index(of: $0) }
        } else {
            do { tokens = try vocabulary.encode(scalars) } catch {
                guard case .unknownScalars(let unknown) = error else { preconditionFailure("encoding fails only on unknown characters") }
                throw .unknownCharacters(unknown)
            }
        }
        guard !tokens.isEmpty else { throw .emptyPrime }
        return tokens
    }

    /// The `length` characters that follow `prime`, produced lazily as the
    /// sequence is iterated (the prime itself is not repeated). Iterating
    /// again replays the same characters.
    public func characters(
        prime: String, length: Int, options: SamplingOptions, dropUnknown: Bool = false
    ) throws(SamplingError) -> GeneratedCharacters {
        let session = try primedSession(
            try checkedPrime(prime, length: length, options: options, dropUnknown: dropUnknown),
            streams: 1, options: options)
        return GeneratedCharacters(session: session, vocabulary: vocabulary, length: length)
    }

    /// The prime followed by `length` generated characters.
    /// - Throws: `SamplingError` for a bad option or prime, and for a core
    ///   failure part-way (never a shortened text).
    public func generate(prime: String, length: Int, options: SamplingOptions) throws(SamplingError) -> String {
        var text = String.UnicodeScalarView(prime.unicodeScalars)
        var iterator = try characters(prime: prime, length: length, options: options).makeIterator()
        while let scalar = iterator.next() { text.append(scalar) }
        if let error = iterator.error { throw .model(error) }
        return String(text)
    }

    /// `count` independent samples generated together through the core's
    /// batched step, each the prime followed by `length` characters. Sample i
    /// draws from the generator seeded with `options.seed &+ i &* 0x9E3779B97F4A7C15`,
    /// so sample 0 uses the seed itself.
    public func samples(
        count: Int, prime: String, length: Int, options: SamplingOptions, dropUnknown: Bool = false
    ) throws(SamplingError) -> [String] {
        guard count >= 1 else { throw .invalidOption(.count, value: "\(count)", requirement: "at least 1") }
        let primeTokens = try checkedPrime(prime, length: length, options: options, dropUnknown: dropUnknown)
        let primeText = vocabulary.decode(primeTokens)
        return try completions(count: count, primeTokens: primeTokens, length: length, options: options, completion: CompletionOptions())
            .map { primeText + $0.text }
    }

    /// The characters that follow `prime`, up to `length` of them or until
    /// one of `completion.stop` is generated (left out), each with its
    /// log-probability when `completion.logprobs` asks; produced lazily as
    /// the sequence is iterated. Its characters are `characters(…)`'s, cut
    /// before the first stop string.
    public func completion(
        prime: String, length: Int, options: SamplingOptions, completion: CompletionOptions = CompletionOptions(),
        dropUnknown: Bool = false
    ) throws(SamplingError) -> CompletionCharacters {
        let primeTokens = try checkedPrime(prime, length: length, options: options, dropUnknown: dropUnknown)
        try completion.validate(vocabularySize: vocabulary.count)
        let session = try primedSession(primeTokens, streams: 1, options: options)
        return CompletionCharacters(session: session, vocabulary: vocabulary, length: length, completion: completion)
    }

    /// The whole continuation of `prime`: `completion(…)`'s characters
    /// gathered, and why it ended.
    /// - Throws: `SamplingError` for a bad option or prime, and for a core
    ///   failure part-way (never a shortened text).
    public func complete(
        prime: String, length: Int, options: SamplingOptions, completion: CompletionOptions = CompletionOptions()
    ) throws(SamplingError) -> Completion {
        var iterator = try self.completion(prime: prime, length: length, options: options, completion: completion).makeIterator()
        var text = String.UnicodeScalarView()
        var logprobs: [CharacterLogprob] = []
        while let character = iterator.next() {
            text.append(character.scalar)
            if let logprob = character.logprob { logprobs.append(logprob) }
        }
        if let error = iterator.error { throw .model(error) }
        return Completion(
            text: String(text), finishReason: iterator.finishReason ?? .length, logprobs: completion.logprobs == nil ? nil : logprobs)
    }

    /// `count` continuations of `prime` generated together through the
    /// core's batched step (sample i seeded as `samples` says), each cut at
    /// its own first stop string.
    public func completions(
        count: Int, prime: String, length: Int, options: SamplingOptions, completion: CompletionOptions = CompletionOptions(),
        dropUnknown: Bool = false
    ) throws(SamplingError) -> [Completion] {
        guard count >= 1 else { throw .invalidOption(.count, value: "\(count)", requirement: "at least 1") }
        let primeTokens = try checkedPrime(prime, length: length, options: options, dropUnknown: dropUnknown)
        try completion.validate(vocabularySize: vocabulary.count)
        return try completions(count: count, primeTokens: primeTokens, length: length, options: options, completion: completion)
    }

    /// `completions(…)` once the count, prime and options are checked.
    private func completions(
        count: Int, primeTokens: [Int32], length: Int, options: SamplingOptions, completion: CompletionOptions
    ) throws(SamplingError) -> [Completion] {
        var session = try primedSession(primeTokens, streams: count, options: options)
        var matchers = [StopMatcher<(Unicode.Scalar, CharacterLogprob?)>](repeating: StopMatcher(stops: completion.stop), count: count)
        var released = [[(Unicode.Scalar, CharacterLogprob?)]](repeating: [], count: count)
        let vocabularySize = vocabulary.count
        do {
            for position in 0..<length {
                let tokens = try session.draw()
                for stream in 0..<count where !matchers[stream].stopped {
                    let scalar = vocabulary.scalars[Int(tokens[stream])]
                    let logprob = completion.logprobs.map { top in
                        CharacterLogprob(
                            token: tokens[stream], logits: session.logits[stream * vocabularySize..<(stream + 1) * vocabularySize],
                            options: options, top: top, vocabulary: vocabulary)
                    }
                    released[stream] += matchers[stream].push(scalar, (scalar, logprob))
                }
                if matchers.allSatisfy(\.stopped) { break }
                if position + 1 < length { try session.feed(tokens) }
            }
        } catch {
            throw .model(error)
        }
        return (0..<count).map { stream in
            let stopped = matchers[stream].stopped
            let characters = released[stream] + matchers[stream].flush()
            return Completion(
                text: String(String.UnicodeScalarView(characters.map(\.0))), finishReason: stopped ? .stop : .length,
                logprobs: completion.logprobs == nil ? nil : characters.compactMap(\.1))
        }
    }

    /// The prime's tokens, once the length and the options are checked: what
    /// every way of generating (one text, a batch, a scheduler's request) checks first.
    func checkedPrime(_ prime: String, length: Int, options: SamplingOptions, dropUnknown: Bool = false) throws(SamplingError) -> [Int32] {
        guard length >= 0 else { throw .invalidOption(.length, value: "\(length)", requirement: "0 or more") }
        try options.validate(vocabularySize: vocabulary.count)
        return try encodePrime(prime, dropUnknown: dropUnknown)
    }

    private func primedSession(_ prime: [Int32], streams: Int, options: SamplingOptions) throws(SamplingError) -> InferenceSession {
        do throws(ModelError) {
            var session = try InferenceSession(weights: weights, streams: streams, options: options)
            try session.feedPrime(prime)
            return session
        } catch {
            throw .model(error)
        }
    }
}

/// Generated characters, produced as they are iterated: each step runs the
/// model once. A `Sequence` of Unicode scalars (the model's characters).
public struct GeneratedCharacters: Sequence {
    let session: InferenceSession
    let vocabulary: Vocabulary
    /// How many characters the sequence yields.
    public let length: Int

    /// An iterator that replays generation from the primed state.
    public func makeIterator() -> Iterator {
        Iterator(session: session, vocabulary: vocabulary, remaining: length)
    }

    /// Produces one character per `next()`.
    public struct Iterator: IteratorProtocol {
        var session: InferenceSession
        let vocabulary: Vocabulary
        var remaining: Int
        var pending: Int32? = nil
        /// The error that ended the sequence early, if any.
        public private(set) var error: ModelError? = nil

        /// The next character, or `nil` at the end (or after a core error,
        /// which is then in `error`).
        public mutating func next() -> Unicode.Scalar? {
            guard remaining > 0, error == nil else { return nil }
            do {
                if let pending { try session.feed([pending]) }
                let token = try session.draw()[0]
                pending = token
                remaining -= 1
                return vocabulary.scalars[Int(token)]
            } catch {
                self.error = error
                return nil
            }
        }

        /// The log-probability of `token`, just drawn, and the `top` likeliest.
        func logprob(of token: Int32, top: Int) -> CharacterLogprob {
            CharacterLogprob(
                token: token, logits: session.logits[0..<vocabulary.count], options: session.options, top: top,
                vocabulary: vocabulary)
        }
    }
}

/// A generated character, and its log-probability when asked for.
public struct CompletedCharacter: Sendable, Equatable {
    /// The character.
    public let scalar: Unicode.Scalar
    /// Its log-probability and the likeliest alternatives, when asked for.
    public let logprob: CharacterLogprob?
}

/// A completion's characters, produced as they are iterated (each step runs
/// the model once; characters that may begin a stop string come out once
/// they cannot). Iterating again replays the same characters.
public struct CompletionCharacters: Sequence {
    let session: InferenceSession
    let vocabulary: Vocabulary
    /// The most characters the sequence yields.
    public let length: Int
    /// The stop strings and log-probabilities asked for.
    public let completion: CompletionOptions

    /// An iterator that replays generation from the primed state.
    public func makeIterator() -> Iterator {
        Iterator(
            characters: GeneratedCharacters(session: session, vocabulary: vocabulary, length: length).makeIterator(),
            matcher: StopMatcher(stops: completion.stop), completion: completion)
    }

    /// Produces one character per `next()`.
    public struct Iterator: IteratorProtocol {
        var characters: GeneratedCharacters.Iterator
        var matcher: StopMatcher<CompletedCharacter>
        let completion: CompletionOptions
        var ready: [CompletedCharacter] = []
        var readyIndex = 0
        /// Why the sequence ended, once it has (nil before, and after a core error).
        public private(set) var finishReason: FinishReason? = nil
        /// The error that ended the sequence early, if any.
        public var error: ModelError? { characters.error }

        /// The next character, or `nil` at the end.
        public mutating func next() -> CompletedCharacter? {
            while readyIndex == ready.count {
                guard finishReason == nil, characters.error == nil else { return nil }
                ready = []
                readyIndex = 0
                guard let scalar = characters.next() else {
                    if characters.error == nil {
                        ready = matcher.flush()
                        finishReason = .length
                    }
                    continue
                }
                let logprob = completion.logprobs.map { characters.logprob(of: characters.pending ?? 0, top: $0) }
                ready = matcher.push(scalar, CompletedCharacter(scalar: scalar, logprob: logprob))
                if matcher.stopped { finishReason = .stop }
            }
            defer { readyIndex += 1 }
            return ready[readyIndex]
        }
    }
}
