import CCharRNN
import Foundation

/// Generates text for many concurrent requests by stepping them together:
/// continuous batching over the core's multi-stream `charrnn_step`.
///
/// Every request becomes one stream of a shared batch. Between two steps,
/// finished and cancelled streams leave and waiting requests join (each from
/// a zero state, its prime fed one character per step as `TextGenerator`
/// does), so a request never waits for another to finish and the model's
/// weights are read once per step for all of them. Each stream draws with its
/// own options and its own generator seeded with its request's seed, and the
/// core computes every stream's row independently, so a request's text is
/// the one `TextGenerator.generate` (and `charrnn sample`) gives alone.
///
/// ```swift
/// let scheduler = try GenerationScheduler(generator: TextGenerator(checkpoint: checkpoint))
/// var request = GenerationRequest()
/// request.prime = "Anna"
/// request.options.seed = 7
/// for await chunk in try scheduler.submit(request) {
///     print(chunk.text, terminator: "")
/// }
/// await scheduler.shutDown(gracePeriod: .seconds(5))
/// ```
///
/// The steps run on one thread the scheduler owns (the core's OpenMP threads
/// work inside each step); `submit` and the streams may be used from any task.
public final class GenerationScheduler: Sendable {
    /// Bounds on what the scheduler takes on.
    public struct Limits: Sendable, Equatable {
        /// Streams stepped together at most; more requests wait in the queue.
        public var maxStreams = 64
        /// Requests waiting for a stream at most; beyond it `submit` throws `.busy`.
        public var maxQueued = 256
        /// Characters one request may ask for after its prime.
        public var maxLength = 20_000
        /// Characters a request's prime may have. Primes are fed at about
        /// 10,000 characters a second on two cores for the reference model
        /// (2 × 512 LSTM; docs/PERFORMANCE.md), a few times slower beside a
        /// full batch, so the default's prime takes well under a minute.
        public var maxPrime = 250_000
        /// Bytes kept of the states after recent primes (their characters
        /// and states counted), so a request whose prime equals or extends
        /// one of at least 64 characters fed before starts from its state
        /// and feeds only the rest (its text is the same either way); 0 keeps none.
        public var primeCacheBytes = 64 << 20

        /// 64 streams, 256 waiting, 20,000 characters a request after a prime
        /// of up to 250,000, 64 MiB of prime states.
        public init() {}
    }

    /// What the scheduler is doing now, and has done since it started.
    public struct Statistics: Sendable, Equatable {
        /// Streams in the batch (generating, or feeding their prime).
        public var activeStreams = 0
        /// Requests waiting for a free stream.
        public var queuedRequests = 0
        /// Steps run.
        public var steps = 0
        /// Characters generated (primes not counted).
        public var characters = 0
        /// Prime characters fed through the model.
        public var primeCharactersFed = 0
        /// Prime characters not fed because a request started from a cached state.
        public var primeCharactersCached = 0
        /// Requests that started from a cached prime state.
        public var primeCacheHits = 0
        /// Requests with a prime of at least 64 characters that found no cached state to start from.
        public var primeCacheMisses = 0
        /// Bytes the prime cache holds now, and its entries.
        public var primeCacheBytes = 0
        public var primeCacheEntries = 0

        /// All zero.
        public init() {}
    }

    /// The vocabulary of the model the scheduler writes with.
    public let vocabulary: Vocabulary
    /// The units of each of the model's recurrent layers.
    public let hiddenSize: Int
    /// The bounds it was made with.
    public let limits: Limits
    private let engine: SchedulerEngine

    /// A scheduler for `generator`'s model; its thread starts at once and
    /// sleeps while there is nothing to do.
    /// - Throws: `ModelError` when the buffers for `limits.maxStreams`
    ///   streams do not fit, or the core refuses that many streams.
    public init(generator: TextGenerator, limits: Limits = Limits()) throws(ModelError) {
        precondition(
            limits.maxStreams >= 1 && limits.maxQueued >= 0 && limits.maxLength >= 0 && limits.maxPrime >= 1
                && limits.primeCacheBytes >= 0, "limits must not be negative, and a prime may have a character")
        vocabulary = generator.vocabulary
        hiddenSize = generator.model.configuration.hiddenSize
        self.limits = limits
        engine = try SchedulerEngine(generator: generator, limits: limits)
        let engine = self.engine
        let thread = Thread { engine.run() }
        thread.name = "charrnn-scheduler"
        thread.start()
    }

    deinit { engine.stop(after: .zero) }

    /// Starts generating `request`'s text; its characters arrive on the
    /// returned stream, the prime first. Dropping the stream (or cancelling
    /// the task that reads it) ends the request and frees its place before
    /// the next step.
    /// - Throws: `.invalidRequest` for an option out of range, an empty
    ///   prime or prime characters the vocabulary lacks; `.lengthAboveLimit`;
    ///   `.primeAboveLimit`;
    ///   `.busy` when `maxStreams` are stepping and `maxQueued` waiting;
    ///   `.shuttingDown` after `shutDown`.
    public func submit(_ request: GenerationRequest) throws(SchedulerError) -> GenerationStream {
        let primeTokens: [Int32]
        do {
            primeTokens = try engine.checkedPrime(request)
            try request.completion.validate(vocabularySize: vocabulary.count)
        } catch { throw .invalidRequest(error) }
        guard request.length <= limits.maxLength else {
            throw .lengthAboveLimit(length: request.length, limit: limits.maxLength)
        }
        guard primeTokens.count <= limits.maxPrime else {
            throw .primeAboveLimit(characters: primeTokens.count, limit: limits.maxPrime)
        }
        let slot = GenerationSlot(
            primeTokens: primeTokens, primeText: vocabulary.decode(primeTokens), length: request.length,
            options: request.options, completion: request.completion, deadline: request.timeout.map { ContinuousClock.now.advanced(by: $0) })
        try engine.enqueue(slot)
        return GenerationStream(slot: slot)
    }

    /// Whether `shutDown` has been called (requests are refused).
    public var isShuttingDown: Bool { engine.isShuttingDown }

    /// A snapshot of the batch, the queue and the totals.
    public var statistics: Statistics { engine.statistics }

    /// Stops taking requests (`submit` throws `.shuttingDown`) and lets the
    /// requests already taken, queued ones included, run for up to
    /// `gracePeriod`; those still going then end with `.shutDown`. Returns
    /// when the scheduler's thread has finished.
    public func shutDown(gracePeriod: Duration) async {
        engine.stop(after: gracePeriod)
        await engine.waitUntilStopped()
    }
}

/// One request for text: the same prime, length and options as
/// `TextGenerator.complete` takes, and an optional time limit.
public struct GenerationRequest: Sendable, Equatable {
    /// The text to start from; the stream begins with it.
    public var prime = TextGenerator.defaultPrime
    /// Characters to generate after the prime.
    public var length = TextGenerator.defaultLength
    /// How characters are drawn, and the seed.
    public var options = SamplingOptions()
    /// Stop strings (the text ends before the first one generated, with
    /// `.stopped`), and whether chunks carry log-probabilities.
    public var completion = CompletionOptions()
    /// The longest the request may take from `submit`, waiting included;
    /// then it ends with `.timedOut`. `nil`: no limit.
    public var timeout: Duration? = nil

    /// The default prime and length, full-distribution sampling with seed 0, no time limit.
    public init() {}
}

/// Why a scheduler refused a request.
public enum SchedulerError: Error, Equatable, CustomStringConvertible {
    /// An option out of range, an empty prime, or prime characters the model lacks.
    case invalidRequest(SamplingError)
    /// The request asks for more characters than the scheduler's limit.
    case lengthAboveLimit(length: Int, limit: Int)
    /// The request's prime has more characters than the scheduler's limit.
    case primeAboveLimit(characters: Int, limit: Int)
    /// Every stream is busy and the queue is full.
    case busy(activeStreams: Int, queuedRequests: Int)
    /// The scheduler is shutting down.
    case shuttingDown

    public var description: String {
        switch self {
        case .invalidRequest(let error): return error.description
        case .lengthAboveLimit(let length, let limit):
            return "length must be at most \(limit) (got \(length))"
        case .primeAboveLimit(let characters, let limit):
            return "the prime must have at most \(limit) characters (got \(characters))"
        case .busy(let active, let queued):
            return "busy: \(active) \(active == 1 ? "stream" : "streams") generating and \(queued) "
                + "\(queued == 1 ? "request" : "requests") waiting, the most it takes"
        case .shuttingDown: return "shutting down: no new requests are taken"
        }
    }
}

/// How a request's text ended.
public enum GenerationEnd: Sendable, Equatable {
    /// All the characters asked for were generated.
    case completed
    /// A stop string was generated; the text ends before it.
    case stopped
    /// The reader cancelled the request or let go of its stream.
    case cancelled
    /// The request's timeout passed first.
    case timedOut
    /// The scheduler was shut down first.
    case shutDown
    /// The model failed part-way (for example, its scores came out non-finite).
    case failed(ModelError)
}

/// Characters that arrived together: everything generated since the last
/// chunk was read (the first chunk holds the prime), and, in the last chunk,
/// how the text ended.
public struct GenerationChunk: Sendable, Equatable {
    /// The new text (may be empty in the last chunk).
    public let text: String
    /// When the request asked for them, one per generated character of
    /// `text` (the prime has none).
    public let logprobs: [CharacterLogprob]
    /// Set in the last chunk only.
    public let end: GenerationEnd?
}

/// A request's text as it is generated: an `AsyncSequence` of chunks that
/// ends after the chunk whose `end` is set. Read it from one task. Letting
/// go of the stream, or cancelling the task reading it, ends the request.
public final class GenerationStream: AsyncSequence, Sendable {
    let slot: GenerationSlot

    init(slot: GenerationSlot) { self.slot = slot }

    deinit { slot.cancel() }

    /// The prime as the model reads it (the stream's first text).
    public var prime: String { slot.primeText }
    /// The seed the request's characters are drawn with.
    public var seed: UInt64 { slot.options.seed }

    /// Ends the request now; the stream's last chunk says `.cancelled`.
    public func cancel() { slot.cancel() }

    /// Reads the whole stream: the text (prime included) and how it ended.
    public func collect() async -> (text: String, end: GenerationEnd) {
        let chunk = await whole()
        return (chunk.text, chunk.end ?? .cancelled)
    }

    /// Waits for the end and returns everything as one chunk: the text
    /// (prime included), every log-probability, and how it ended. The
    /// reader is woken once, at the end, instead of once per step, which
    /// leaves the cores to the model while the text is made. Cancelling the
    /// waiting task ends the request. Read a stream either this way or by
    /// iterating it, not both.
    public func whole() async -> GenerationChunk {
        let slot = self.slot
        while !slot.hasEnded {
            await withTaskCancellationHandler {
                await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                    slot.wait(waiter, untilEnd: true)
                }
            } onCancel: {
                slot.cancel()
            }
        }
        return slot.take() ?? GenerationChunk(text: "", logprobs: [], end: .cancelled)
    }

    /// The chunks, in order, each as soon as something arrives.
    public func makeAsyncIterator() -> Iterator { Iterator(stream: self, interval: .zero) }

    /// The chunks, in order, with at least `interval` between two that carry
    /// generated characters: what is made meanwhile arrives together (the
    /// prime's chunk and the first character are not held back). A model
    /// that writes thousands of characters a second then wakes its reader,
    /// and a server its client, a hundred times a second instead of once
    /// per character.
    public func paced(_ interval: Duration) -> Paced { Paced(stream: self, interval: interval) }

    /// `paced(_:)`'s sequence.
    public struct Paced: AsyncSequence, Sendable {
        let stream: GenerationStream
        let interval: Duration

        /// The chunks, paced.
        public func makeAsyncIterator() -> Iterator { Iterator(stream: stream, interval: interval) }
    }

    /// Waits for the next chunk.
    public struct Iterator: AsyncIteratorProtocol {
        let stream: GenerationStream
        let interval: Duration
        var ended = false
        /// Characters returned so far, and when generated ones were last returned.
        var returned = 0
        var lastGenerated: ContinuousClock.Instant? = nil

        /// The next chunk, or `nil` after the last.
        public mutating func next() async -> GenerationChunk? {
            guard !ended else { return nil }
            let slot = stream.slot
            if let lastGenerated, interval > .zero {
                await Self.pause(slot, until: lastGenerated.advanced(by: interval))
            }
            let chunk = await take(slot)
            if let chunk {
                returned += chunk.text.unicodeScalars.count
                if returned > slot.primeTokens.count && interval > .zero { lastGenerated = .now }
            }
            return chunk
        }

        /// Waits until `deadline`, or until the text ends (its last chunk is
        /// not held back), or the reader is cancelled (which ends the request).
        private static func pause(_ slot: GenerationSlot, until deadline: ContinuousClock.Instant) async {
            guard deadline > .now else { return }
            await withTaskCancellationHandler {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        slot.wake()
                    }
                    await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                        slot.wait(waiter, untilEnd: true)
                    }
                    group.cancelAll()
                }
            } onCancel: {
                slot.cancel()
            }
        }

        private mutating func take(_ slot: GenerationSlot) async -> GenerationChunk? {
            while true {
                if let chunk = slot.take() {
                    if chunk.end != nil { ended = true }
                    return chunk
                }
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                        slot.wait(waiter)
                    }
                } onCancel: {
                    slot.cancel()
                }
            }
        }
    }
}
