import CharRNN
import Foundation
import Testing

/// Protects continuous batching: requests stepped together get the text they
/// get alone, however they join and leave, and every way a request ends
/// (done, cancelled, dropped, out of time, shut down, refused) frees its place.
@Suite("Generation scheduler")
struct SchedulerTests {
    /// An untrained two-layer model of 128 units over a 39-character
    /// alphabet: near-uniform scores, so a draw from the full distribution
    /// changes with the smallest difference in the arithmetic.
    static func untrained(cell: Cell = .lstm) throws -> TextGenerator {
        let vocabulary = try Vocabulary(scalars: Array("abcdefghijklmnopqrstuvwxyz .,;:!?\nАнаé🙂".unicodeScalars))
        let configuration = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 128, layerCount: 2, cell: cell)
        let model = try Model(configuration: configuration, seed: 5, purpose: .inference)
        return try TextGenerator(model: model, vocabulary: vocabulary)
    }

    /// A length no test waits for: the requests that must still be running
    /// when the test acts on them, however slow the machine.
    static let endless = 100_000_000

    /// A scheduler over `generator` whose requests may be `endless`.
    static func scheduler(
        _ generator: TextGenerator, maxStreams: Int = 64, maxQueued: Int = 256,
        maxLength: Int = endless
    ) throws -> GenerationScheduler {
        var limits = GenerationScheduler.Limits()
        limits.maxStreams = maxStreams
        limits.maxQueued = maxQueued
        limits.maxLength = maxLength
        return try GenerationScheduler(generator: generator, limits: limits)
    }

    static func request(_ prime: String, length: Int, seed: UInt64, _ edit: (inout GenerationRequest) -> Void = { _ in }) -> GenerationRequest {
        var request = GenerationRequest()
        request.prime = prime
        request.length = length
        request.options.seed = seed
        edit(&request)
        return request
    }

    static func alone(_ generator: TextGenerator, _ request: GenerationRequest) throws -> String {
        try generator.generate(prime: request.prime, length: request.length, options: request.options)
    }

    /// Polls `condition` for up to `seconds`.
    static func eventually(within seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    @Test("A stream read whole, or paced, gives the text and log-probabilities read chunk by chunk gives; paced chunks come an interval apart")
    func wholeAndPacedReadTheSameText() async throws {
        let generator = try Self.untrained()
        let scheduler = try Self.scheduler(generator)
        let request = Self.request("the cat", length: 400, seed: 9) { $0.completion.logprobs = 2 }
        var chunks: [GenerationChunk] = []
        for await chunk in try scheduler.submit(request) { chunks.append(chunk) }
        let whole = await (try scheduler.submit(request)).whole()
        let alone = try Self.alone(generator, request)
        #expect(whole.text == chunks.map(\.text).joined() && whole.text == alone)
        #expect(whole.logprobs == chunks.flatMap(\.logprobs) && whole.logprobs.count == 400 && whole.end == .completed)

        let interval = Duration.milliseconds(40)
        var paced: [(chunk: GenerationChunk, at: ContinuousClock.Instant)] = []
        for await chunk in try scheduler.submit(request).paced(interval) { paced.append((chunk, .now)) }
        #expect(paced.map(\.chunk.text).joined() == whole.text)
        #expect(paced.flatMap(\.chunk.logprobs) == whole.logprobs)
        // After the first chunk with generated characters, each next one waits the interval.
        let generated = paced.filter { !$0.chunk.text.isEmpty }.dropFirst(paced[0].chunk.text == "the cat" ? 2 : 1)
        for (earlier, later) in zip(generated, generated.dropFirst()) {
            #expect(later.at - earlier.at >= interval * 0.9, "\(later.at - earlier.at) between two chunks")
        }
        // So no more chunks than intervals fit in the time it took, however fast the machine.
        let took = paced[paced.count - 1].at - paced[0].at
        #expect(Double(paced.count) <= took / interval + 3, "\(paced.count) chunks in \(took): what was made meanwhile came together")
    }

    @Test("Forty requests stepped together each get the text they get alone, for every cell", arguments: Cell.allCases)
    func concurrentRequestsMatchAlone(cell: Cell) async throws {
        let generator = try Self.untrained(cell: cell)
        let scheduler = try GenerationScheduler(generator: generator)
        // Different primes (so streams leave the prime at different steps),
        // lengths (so they leave the batch at different steps) and options.
        let requests = (0..<40).map { index in
            Self.request(String(repeating: "ана ", count: 1 + index % 5) + "é", length: 20 + 7 * index, seed: UInt64(1000 + index)) {
                switch index % 4 {
                case 0: break
                case 1: $0.options.topK = 5
                case 2:
                    $0.options.topP = 0.9
                    $0.options.temperature = 0.8
                default: $0.options.temperature = 1.3
                }
            }
        }
        let texts = try await withThrowingTaskGroup(of: (Int, String, GenerationEnd).self) { group in
            for (index, request) in requests.enumerated() {
                let stream = try scheduler.submit(request)
                group.addTask {
                    let (text, end) = await stream.collect()
                    return (index, text, end)
                }
            }
            var texts = [String](repeating: "", count: requests.count)
            for try await (index, text, end) in group {
                #expect(end == .completed)
                texts[index] = text
            }
            return texts
        }
        for (request, text) in zip(requests, texts) {
            #expect(text == (try Self.alone(generator, request)), "seed \(request.options.seed)")
        }
        let statistics = scheduler.statistics
        #expect(statistics.characters == requests.reduce(0) { $0 + $1.length })
        #expect(statistics.steps < statistics.characters / 10, "the requests shared steps")
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("Requests that join while others run, and wait in the queue for a place, still get their text alone")
    func joiningAndQueuedRequestsMatchAlone() async throws {
        let generator = try Self.untrained()
        let scheduler = try Self.scheduler(generator, maxStreams: 3)
        var requests: [GenerationRequest] = []
        var streams: [GenerationStream] = []
        for index in 0..<9 {
            let request = Self.request("a", length: 30 + 11 * index, seed: UInt64(index))
            requests.append(request)
            streams.append(try scheduler.submit(request))
            // The first six arrive together, so three of them wait for a place
            // (they take at least 30 steps each); later ones join a running batch.
            if index == 5 { #expect(scheduler.statistics.queuedRequests > 0) }
            if index >= 5 { try await Task.sleep(for: .milliseconds(3)) }
        }
        for (request, stream) in zip(requests, streams) {
            let (text, end) = await stream.collect()
            #expect(end == .completed)
            #expect(text == (try Self.alone(generator, request)))
        }
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("A stream starts with the prime and its chunks add up to the text")
    func chunksAddUp() async throws {
        let generator = try Self.untrained()
        let scheduler = try GenerationScheduler(generator: generator)
        let request = Self.request("Ана🙂", length: 300, seed: 9)
        var chunks: [GenerationChunk] = []
        for await chunk in try scheduler.submit(request) { chunks.append(chunk) }
        #expect(chunks.first?.text.hasPrefix("Ана🙂") == true)
        #expect(chunks.last?.end == .completed)
        #expect(chunks.dropLast().allSatisfy { $0.end == nil })
        #expect(chunks.map(\.text).joined() == (try Self.alone(generator, request)))
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("Cancelling a stream, or letting go of it, frees its place for the next request")
    func cancelledAndDroppedStreamsLeave() async throws {
        let generator = try Self.untrained()
        let scheduler = try Self.scheduler(generator, maxStreams: 1)
        let long = Self.request("a", length: Self.endless, seed: 1)
        let first = try scheduler.submit(long)
        var iterator = first.makeAsyncIterator()
        _ = await iterator.next()  // the prime
        #expect(await Self.eventually { scheduler.statistics.activeStreams == 1 })
        first.cancel()
        var last: GenerationChunk? = nil
        while let chunk = await iterator.next() { last = chunk }
        #expect(last?.end == .cancelled)
        #expect(await Self.eventually { scheduler.statistics.activeStreams == 0 })

        do { _ = try scheduler.submit(long) }  // dropped at once
        #expect(await Self.eventually { scheduler.statistics.activeStreams == 0 && scheduler.statistics.queuedRequests == 0 })
        #expect(scheduler.statistics.characters < Self.endless)

        let short = Self.request("b", length: 40, seed: 2)
        #expect(await (try scheduler.submit(short)).collect().text == (try Self.alone(generator, short)))
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("A task cancelled while it reads ends its request")
    func cancelledTaskEndsItsRequest() async throws {
        let scheduler = try Self.scheduler(try Self.untrained())
        let stream = try scheduler.submit(Self.request("a", length: Self.endless, seed: 3))
        let reader = Task { await stream.collect() }
        #expect(await Self.eventually { scheduler.statistics.characters > 10 })
        reader.cancel()
        #expect(await reader.value.end == .cancelled)
        #expect(await Self.eventually { scheduler.statistics.activeStreams == 0 })
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("Beyond the streams and the queue a request is refused as busy, and taken again once there is room")
    func fullQueueRefuses() async throws {
        let scheduler = try Self.scheduler(try Self.untrained(), maxStreams: 2, maxQueued: 1)
        let long = Self.request("a", length: Self.endless, seed: 1)
        let taken = try (0..<3).map { _ in try scheduler.submit(long) }
        // Between steps the three may be stepping or still waiting; together they fill both.
        do {
            _ = try scheduler.submit(long)
            Issue.record("a fourth request was taken")
        } catch .busy(let active, let queued) {
            #expect(active + queued == 3)
        }
        taken[0].cancel()
        #expect(await Self.eventually { scheduler.statistics.queuedRequests == 0 })
        #expect(throws: Never.self) { _ = try scheduler.submit(Self.request("a", length: 1, seed: 1)) }
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("A request past its timeout ends as timed out, with the text made so far")
    func timeoutEndsRequest() async throws {
        let generator = try Self.untrained()
        let scheduler = try Self.scheduler(generator)
        let request = Self.request("a", length: Self.endless, seed: 4) { $0.timeout = .milliseconds(200) }
        let (text, end) = await (try scheduler.submit(request)).collect()
        #expect(end == .timedOut)
        let made = text.unicodeScalars.count - 1
        #expect(made > 0 && made < Self.endless)
        #expect(try Self.alone(generator, Self.request("a", length: made, seed: 4)) == text)
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("Shutting down refuses new requests, lets short ones finish and ends long ones after the grace period")
    func shutDownDrains() async throws {
        let generator = try Self.untrained()
        let scheduler = try Self.scheduler(generator)
        let short = try scheduler.submit(Self.request("a", length: 50, seed: 1))
        let long = try scheduler.submit(Self.request("a", length: Self.endless, seed: 2))
        let started = Date()
        await scheduler.shutDown(gracePeriod: .seconds(2))
        let elapsed = Date().timeIntervalSince(started)
        // No upper bound: this task may wait for a thread of the pool long after
        // the scheduler stopped (other suites block the pool's threads).
        #expect(elapsed >= 1.9, "the long request ran for the grace period, then ended")
        #expect(await short.collect().end == .completed)
        let (text, end) = await long.collect()
        #expect(end == .shutDown)
        let aloneText = try Self.alone(generator, Self.request("a", length: text.unicodeScalars.count - 1, seed: 2))
        #expect(text.unicodeScalars.count > 1 && aloneText == text)
        #expect(throws: SchedulerError.shuttingDown) { try scheduler.submit(Self.request("a", length: 5, seed: 1)) }
    }

    @Test("Bad requests are refused with what is wrong: options, unknown prime characters, empty prime, length")
    func badRequestsAreRefused() async throws {
        let scheduler = try Self.scheduler(try Self.untrained(), maxLength: 100)
        #expect(throws: SchedulerError.invalidRequest(.unknownCharacters(["Z", "Q"]))) {
            try scheduler.submit(Self.request("aZbQ", length: 5, seed: 1))
        }
        #expect(throws: SchedulerError.invalidRequest(.emptyPrime)) { try scheduler.submit(Self.request("", length: 5, seed: 1)) }
        #expect(throws: SchedulerError.lengthAboveLimit(length: 101, limit: 100)) {
            try scheduler.submit(Self.request("a", length: 101, seed: 1))
        }
        #expect(throws: SchedulerError.invalidRequest(.invalidOption(.length, value: "-1", requirement: "0 or more"))) {
            try scheduler.submit(Self.request("a", length: -1, seed: 1))
        }
        #expect(throws: SchedulerError.invalidRequest(.invalidOption(.topK, value: "0", requirement: "between 1 and the vocabulary size 39"))) {
            try scheduler.submit(Self.request("a", length: 5, seed: 1) { $0.options.topK = 0 })
        }
        // A zero-length request is the prime alone.
        #expect(await (try scheduler.submit(Self.request("ab", length: 0, seed: 1))).collect() == ("ab", .completed))
        await scheduler.shutDown(gracePeriod: .zero)
    }
}

/// Protects the prime cache: a request whose prime equals or extends one fed
/// before starts from its state, feeds only the rest, and gets exactly the
/// text it gets without the cache; the cache stays within its bytes.
@Suite("Prime state cache")
struct PrimeCacheTests {
    static func prime(_ length: Int, seed: UInt64) -> String {
        var generator = Xorshift(seed: seed)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz .,;:!?\nАнаé🙂".unicodeScalars)
        return String(String.UnicodeScalarView((0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }))
    }

    struct Xorshift {
        var state: UInt64
        init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    @Test("A repeated or extended prime starts from the cached state and gets the text it gets alone, for every cell", arguments: Cell.allCases)
    func cachedPrimesGiveTheSameText(cell: Cell) async throws {
        let generator = try SchedulerTests.untrained(cell: cell)
        let scheduler = try SchedulerTests.scheduler(generator)
        let prime = Self.prime(300, seed: 1)
        let extended = prime + "and the rest"
        // (prime, seed, characters it should feed, characters it should skip)
        let cases: [(String, UInt64, Int, Int)] = [
            (prime, 1, 300, 0),  // first: fed whole, its state cached
            (prime, 1, 1, 299),  // again: only its last character fed
            (prime, 2, 1, 299),  // another seed: the state is the prime's alone
            (extended, 3, 13, 299),  // extending it: the rest fed
            (extended, 3, 1, 311),  // and that one is cached in turn
        ]
        var before = scheduler.statistics
        for (index, (text, seed, fed, skipped)) in cases.enumerated() {
            let request = SchedulerTests.request(text, length: 150, seed: seed)
            let (served, end) = await (try scheduler.submit(request)).collect()
            #expect(end == .completed)
            #expect(served == (try SchedulerTests.alone(generator, request)), "case \(index)")
            let now = scheduler.statistics
            #expect(now.primeCharactersFed - before.primeCharactersFed == fed, "case \(index)")
            #expect(now.primeCharactersCached - before.primeCharactersCached == skipped, "case \(index)")
            #expect(now.primeCacheHits - before.primeCacheHits == (skipped > 0 ? 1 : 0), "case \(index)")
            before = now
        }
        #expect(before.primeCacheMisses == 1 && before.primeCacheEntries == 2 && before.primeCacheBytes > 0)
        // Many at once, some cached and some not, each still gets its text alone.
        let requests = (0..<12).map { index in
            SchedulerTests.request(index % 3 == 0 ? Self.prime(200, seed: UInt64(index)) : extended, length: 80 + index, seed: UInt64(40 + index))
        }
        let streams = try requests.map { try scheduler.submit($0) }
        for (request, stream) in zip(requests, streams) {
            #expect((await stream.collect()).text == (try SchedulerTests.alone(generator, request)))
        }
        await scheduler.shutDown(gracePeriod: .zero)
    }

    @Test("The cache keeps within its bytes, dropping the least recently used, and a cache of 0 bytes keeps nothing")
    func cacheStaysWithinItsBytes() async throws {
        let generator = try SchedulerTests.untrained()
        let stateBytes = try generator.model.configuration.stateCount(batchSize: 1) * 4
        var limits = GenerationScheduler.Limits()
        limits.primeCacheBytes = 2 * (stateBytes + 4 * 199)  // two primes of 200 characters
        let scheduler = try GenerationScheduler(generator: generator, limits: limits)
        let primes = (0..<4).map { Self.prime(200, seed: UInt64(10 + $0)) }
        for prime in primes {
            _ = await (try scheduler.submit(SchedulerTests.request(prime, length: 5, seed: 1))).collect()
            #expect(scheduler.statistics.primeCacheBytes <= limits.primeCacheBytes)
        }
        #expect(scheduler.statistics.primeCacheEntries == 2)
        // The two most recent are kept, the first two dropped.
        for (index, prime) in primes.enumerated().reversed() {
            let hits = scheduler.statistics.primeCacheHits
            _ = await (try scheduler.submit(SchedulerTests.request(prime, length: 5, seed: 1))).collect()
            #expect(scheduler.statistics.primeCacheHits - hits == (index >= 2 ? 1 : 0), "prime \(index)")
        }
        await scheduler.shutDown(gracePeriod: .zero)

        limits.primeCacheBytes = 0
        let uncached = try GenerationScheduler(generator: generator, limits: limits)
        for _ in 0..<2 { _ = await (try uncached.submit(SchedulerTests.request(primes[0], length: 5, seed: 1))).collect() }
        #expect(uncached.statistics.primeCacheHits == 0 && uncached.statistics.primeCacheEntries == 0)
        #expect(uncached.statistics.primeCharactersFed == 400)
        await uncached.shutDown(gracePeriod: .zero)
    }
}
