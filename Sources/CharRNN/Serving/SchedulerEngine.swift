import CCharRNN
import Foundation

/// One request as both sides see it: what the engine delivers and the
/// reader takes, behind one lock. Immutable apart from that. The lock is an
/// NSLock (a pthread mutex) rather than Synchronization's Mutex, whose futex
/// ThreadSanitizer cannot see (Tools/sanitize runs these tests under it).
final class GenerationSlot: @unchecked Sendable {
    let primeTokens: [Int32]
    let primeText: String
    let length: Int
    let options: SamplingOptions
    let completion: CompletionOptions
    let deadline: ContinuousClock.Instant?
    private let lock = NSLock()
    private var shared: Shared  // under `lock`

    private struct Shared {
        /// Delivered, not yet taken (starts as the prime).
        var pending: String.UnicodeScalarView
        var pendingLogprobs: [CharacterLogprob] = []
        var end: GenerationEnd? = nil
        var taken = false
        /// The reader, when it waits for more.
        var waiter: CheckedContinuation<Void, Never>? = nil
        /// The waiting reader wants the end, not each character.
        var waitsForEnd = false
        /// `wake()` came while no reader waited.
        var woken = false
    }

    init(
        primeTokens: [Int32], primeText: String, length: Int, options: SamplingOptions, completion: CompletionOptions = CompletionOptions(),
        deadline: ContinuousClock.Instant?
    ) {
        self.primeTokens = primeTokens
        self.primeText = primeText
        self.length = length
        self.options = options
        self.completion = completion
        self.deadline = deadline
        shared = Shared(pending: primeText.unicodeScalars)
    }

    private func withShared<Result>(_ body: (inout Shared) -> Result) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return body(&shared)
    }

    /// Whether the text has ended, for any reason (a reader that went away
    /// ends it as cancelled).
    var hasEnded: Bool { withShared { $0.end != nil } }

    /// Adds generated characters (and their log-probabilities, when asked
    /// for) and, with `end`, ends the text (the engine, after a step); false
    /// when the text had already ended.
    @discardableResult
    func deliver(
        _ scalars: some Sequence<Unicode.Scalar>, logprobs: some Sequence<CharacterLogprob> = EmptyCollection(), end: GenerationEnd? = nil
    ) -> Bool {
        let (delivered, waiter) = withShared { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard state.end == nil else { return (false, nil) }
            state.pending.append(contentsOf: scalars)
            state.pendingLogprobs.append(contentsOf: logprobs)
            state.end = end
            // A reader waiting for the end only is woken by the end only.
            if state.waitsForEnd && end == nil { return (true, nil) }
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        return delivered
    }

    /// Ends the text (the first end given wins).
    func finish(_ end: GenerationEnd) {
        let waiter = withShared { state -> CheckedContinuation<Void, Never>? in
            if state.end == nil { state.end = end }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The reader is gone or asked to stop.
    func cancel() { finish(.cancelled) }

    /// Resumes a waiting reader without ending the text (a paced reader's
    /// interval has passed).
    func wake() {
        let waiter = withShared { state -> CheckedContinuation<Void, Never>? in
            // Before the reader waits: its wait then returns at once.
            if state.waiter == nil { state.woken = true }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// What arrived since the last call, or nil when nothing has (the
    /// chunk with the end is returned once).
    func take() -> GenerationChunk? {
        withShared { state in
            guard !state.taken else { return nil }
            guard !state.pending.isEmpty || state.end != nil else { return nil }
            let chunk = GenerationChunk(text: String(state.pending), logprobs: state.pendingLogprobs, end: state.end)
            state.pending = String.UnicodeScalarView()
            state.pendingLogprobs = []
            if state.end != nil { state.taken = true }
            return chunk
        }
    }

    /// Resumes `waiter` when something arrives (at once if something has),
    /// or, with `untilEnd`, only when the text has ended.
    func wait(_ waiter: CheckedContinuation<Void, Never>, untilEnd: Bool = false) {
        let ready = withShared { state -> Bool in
            defer { state.woken = false }
            if state.woken || state.end != nil || (!untilEnd && !state.pending.isEmpty) { return true }
            state.waiter?.resume()  // a second reader: wake the first, which finds nothing and waits again
            state.waiter = waiter
            state.waitsForEnd = untilEnd
            return false
        }
        if ready { waiter.resume() }
    }
}

/// The scheduler's loop and the memory it steps in. The queue, counters and
/// stop request are shared under `condition`; the batch (`rows`, state,
/// scratch, logits) belongs to the engine's thread alone, which is also the
/// only user of the model.
final class SchedulerEngine: @unchecked Sendable {
    private let generator: TextGenerator
    private var model: Model { generator.model }
    private var vocabulary: Vocabulary { generator.vocabulary }
    private let limits: GenerationScheduler.Limits
    private let condition = NSCondition()

    // Under `condition`.
    private var waiting: [GenerationSlot] = []
    private var stepping = 0
    private var accepting = true
    private var endEverythingAt: ContinuousClock.Instant? = nil
    private var stopped = false
    private var stopWaiters: [CheckedContinuation<Void, Never>] = []
    private var totals = GenerationScheduler.Statistics()

    // The engine thread's own.
    private struct Row {
        let slot: GenerationSlot
        var generator: charrnn_rng
        var parameters: charrnn_sampling_params
        var generated = 0
        var next: Int32 = 0
        /// Holds back what may begin a stop string (only when there are stop strings).
        var matcher: StopMatcher<(Unicode.Scalar, CharacterLogprob?)>?
    }
    /// A request feeding its prime, before it joins the batch: its own
    /// one-stream state, and how much of the prime is in it.
    private struct PrimingRow {
        var row: Row
        var state: [Float]
        var fed: Int
    }
    /// Streams in the batch: their primes are in, each draws every step.
    private var rows: [Row] = []
    /// Streams feeding their prime, a slice of it each turn of the loop.
    private var priming: [PrimingRow] = []
    /// The longest a priming stream feeds in one turn while others are
    /// generating (they wait for it), and when none are (so requests that
    /// leave or join are still seen often).
    private static let primeSliceBeside: Duration = .milliseconds(5)
    private static let primeSliceAlone: Duration = .milliseconds(50)
    private let primeFeeder: PrimeFeeder
    private let primeCache: PrimeStateCache
    private var state: RecurrentState
    private var tokens: [Int32] = []
    private var logits: [Float]
    private let stepScratch: FloatBuffer
    private let sampleScratch: FloatBuffer

    init(generator: TextGenerator, limits: GenerationScheduler.Limits) throws(ModelError) {
        self.generator = generator
        self.limits = limits
        primeCache = PrimeStateCache(capacityBytes: limits.primeCacheBytes)
        primeFeeder = try PrimeFeeder(weights: generator.weights, piece: Self.primePiece)
        let configuration = generator.model.configuration
        let stepScratchCount = try configuration.stepScratchCount(streams: limits.maxStreams)
        let sampleScratchCount = try configuration.sampleScratchCount()
        let maxStateCount = try configuration.stateCount(batchSize: limits.maxStreams)
        let (logitCount, overflow) = limits.maxStreams.multipliedReportingOverflow(by: configuration.vocabularySize)
        guard !overflow else { throw .core(CoreError(CHARRNN_ERR_INVALID_SHAPE, function: "charrnn_step")) }
        do {
            try MemoryBudget.check(
                requiredBytes: MemoryBudget.sum(
                    MemoryBudget.floatBytes(stepScratchCount), MemoryBudget.floatBytes(2 * maxStateCount),
                    MemoryBudget.floatBytes(logitCount)))
            stepScratch = try FloatBuffer(count: stepScratchCount)
            sampleScratch = try FloatBuffer(count: sampleScratchCount)
        } catch {
            throw .insufficientMemory(error)
        }
        state = RecurrentState(configuration: configuration, batchSize: 0)
        logits = [Float](repeating: 0, count: logitCount)
    }

    /// The request's prime tokens, its length and options checked (only reads the vocabulary).
    func checkedPrime(_ request: GenerationRequest) throws(SamplingError) -> [Int32] {
        try generator.checkedPrime(request.prime, length: request.length, options: request.options)
    }

    var isShuttingDown: Bool { condition.withLock { !accepting } }

    var statistics: GenerationScheduler.Statistics {
        condition.lock()
        defer { condition.unlock() }
        var snapshot = totals
        snapshot.activeStreams = stepping
        snapshot.queuedRequests = waiting.count
        return snapshot
    }

    func enqueue(_ slot: GenerationSlot) throws(SchedulerError) {
        condition.lock()
        defer { condition.unlock() }
        guard accepting else { throw .shuttingDown }
        guard stepping + waiting.count < limits.maxStreams + limits.maxQueued else {
            throw .busy(activeStreams: stepping, queuedRequests: waiting.count)
        }
        waiting.append(slot)
        condition.signal()
    }

    /// Takes no more requests; from `delay` on, ends every stream still going.
    func stop(after delay: Duration) {
        condition.lock()
        accepting = false
        let deadline = ContinuousClock.now.advanced(by: delay)
        endEverythingAt = min(endEverythingAt ?? deadline, deadline)
        condition.signal()
        condition.unlock()
    }

    func waitUntilStopped() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            condition.lock()
            if stopped {
                condition.unlock()
                waiter.resume()
            } else {
                stopWaiters.append(waiter)
                condition.unlock()
            }
        }
    }

    /// The pieces primes are fed in: about 8 ms of the reference model
    /// each, so a priming stream looks at its slice's clock that often.
    private static let primePiece = 64

    /// The loop: between turns, streams leave and join; then each stream
    /// feeding its prime feeds a slice of it (one that finishes draws its
    /// first character and joins the batch), and one step for the batch,
    /// with a draw for each stream.
    func run() {
        while true {
            let now = ContinuousClock.now
            // Leaving: finished, cancelled, out of time, or shut down.
            let endAll = condition.withLock { endEverythingAt.map { now >= $0 } ?? false }
            let survivors = rows.indices.filter { !Self.leaves(rows[$0].slot, now: now, endAll: endAll) }
            priming.removeAll { Self.leaves($0.row.slot, now: now, endAll: endAll) }
            // Joining, from the queue, as far as there is room.
            condition.lock()
            waiting.removeAll { Self.leaves($0, now: now, endAll: endAll) }
            var joining: [GenerationSlot] = []
            while survivors.count + priming.count + joining.count < limits.maxStreams, !waiting.isEmpty {
                let slot = waiting.removeFirst()
                if slot.length == 0 { slot.finish(.completed) } else { joining.append(slot) }
            }
            stepping = survivors.count + priming.count + joining.count
            if stepping == 0 {
                if !accepting && waiting.isEmpty {
                    stopped = true
                    let waiters = stopWaiters
                    stopWaiters = []
                    condition.unlock()
                    rows = []
                    for waiter in waiters { waiter.resume() }
                    return
                }
                rows = []
                state = RecurrentState(configuration: model.configuration, batchSize: 0)
                // Sleep until a request or a stop arrives (queued requests
                // with a deadline are never left waiting: there is room).
                if waiting.isEmpty && accepting { condition.wait() }
                condition.unlock()
                continue
            }
            condition.unlock()

            priming += joining.compactMap(makePrimingRow)
            let primed = primeTurn(slice: survivors.isEmpty ? Self.primeSliceAlone : Self.primeSliceBeside)
            if survivors.count != rows.count || !primed.isEmpty {
                state = state.rearranged(
                    survivors.map { Optional($0) } + primed.map { _ in nil }, configuration: model.configuration)
                rows = survivors.map { rows[$0] } + primed.map(\.row)
                for (offset, join) in primed.enumerated() {
                    state.setStream(
                        survivors.count + offset, to: RecurrentState(values: join.state, batchSize: 1), configuration: model.configuration)
                }
            }
            if !rows.isEmpty { step() }
        }
    }

    /// Whether a stream leaves before the next turn: its text has ended
    /// (completed, or cancelled by its reader), or it ends now, shut down or
    /// out of time.
    private static func leaves(_ slot: GenerationSlot, now: ContinuousClock.Instant, endAll: Bool) -> Bool {
        if slot.hasEnded { return true }
        if endAll {
            slot.finish(.shutDown)
            return true
        }
        if let deadline = slot.deadline, now >= deadline {
            slot.finish(.timedOut)
            return true
        }
        return false
    }

    /// A joining request, its generator seeded, starting from the state
    /// after the longest cached beginning of its prime (or from zero).
    private func makePrimingRow(_ slot: GenerationSlot) -> PrimingRow? {
        var generator = charrnn_rng()
        let status = charrnn_rng_seed(&generator, slot.options.seed)
        guard status == CHARRNN_OK else {
            slot.finish(.failed(.core(CoreError(status, function: "charrnn_rng_seed"))))
            return nil
        }
        let row = Row(
            slot: slot, generator: generator, parameters: slot.options.coreParameters,
            matcher: slot.completion.stop.isEmpty ? nil : StopMatcher(stops: slot.completion.stop))
        let cached = usesPrimeCache(slot)
        let found = cached ? primeCache.longestPrefix(of: slot.primeTokens) : nil
        if cached {
            condition.withLock {
                if let found {
                    totals.primeCacheHits += 1
                    totals.primeCharactersCached += found.characters
                } else {
                    totals.primeCacheMisses += 1
                }
            }
        }
        do throws(ModelError) {
            let state = if let found { found.state.values } else { try primeFeeder.zeroState() }
            return PrimingRow(row: row, state: state, fed: found?.characters ?? 0)
        } catch {
            slot.finish(.failed(error))
            return nil
        }
    }

    private func usesPrimeCache(_ slot: GenerationSlot) -> Bool {
        primeCache.capacityBytes > 0 && slot.primeTokens.count > PrimeStateCache.minimumCharacters
    }

    /// Each priming stream feeds pieces of its prime for up to `slice`.
    /// All of a prime but its last character is the state a later request
    /// with this prime, or one extending it, starts from: it goes into the
    /// cache. A stream whose prime is all in draws its first character from
    /// the prime's scores and is returned, to join the batch, unless that
    /// character already ended its text.
    private func primeTurn(slice: Duration) -> [PrimingRow] {
        var primed: [PrimingRow] = []
        var fedNow = 0
        var drawn = 0
        var index = 0
        while index < priming.count {
            var join = priming[index]
            let prime = join.row.slot.primeTokens
            let cacheAt = usesPrimeCache(join.row.slot) ? prime.count - 1 : prime.count
            let start = ContinuousClock.now
            var logits: [Float]? = nil
            do {
                while logits == nil && ContinuousClock.now - start < slice {
                    let end = min(join.fed + primeFeeder.piece, join.fed < cacheAt ? cacheAt : prime.count)
                    if end == prime.count {
                        logits = try primeFeeder.feedAll(Array(prime[join.fed..<end]), state: &join.state)
                    } else {
                        try primeFeeder.feed(prime[join.fed..<end], state: &join.state)
                    }
                    fedNow += end - join.fed
                    join.fed = end
                    if join.fed == cacheAt && cacheAt < prime.count {
                        primeCache.insert(key: Array(prime[..<cacheAt]), state: RecurrentState(values: join.state, batchSize: 1))
                    }
                }
            } catch {
                join.row.slot.finish(.failed(error))
                priming.remove(at: index)
                continue
            }
            guard let logits else {
                priming[index] = join
                index += 1
                continue
            }
            priming.remove(at: index)
            let first = draw(&join.row, logits: logits, stream: 0)
            drawn += first.delivered
            if first.continues { primed.append(join) }
        }
        condition.withLock {
            totals.characters += drawn
            totals.primeCharactersFed += fedNow
            totals.primeCacheBytes = primeCache.bytes
            totals.primeCacheEntries = primeCache.count
        }
        return primed
    }

    /// One step of the batch (each stream's last drawn character in), then
    /// a draw for every stream.
    private func step() {
        tokens.removeAll(keepingCapacity: true)
        for row in rows { tokens.append(row.next) }
        do {
            try generator.weights.step(streams: rows.count, tokens: tokens, state: &state.values, scratch: stepScratch, logits: &logits)
        } catch {
            for row in rows { row.slot.finish(.failed(error)) }
            return
        }
        var drawn = 0
        for index in rows.indices { drawn += draw(&rows[index], logits: logits, stream: index).delivered }
        condition.withLock {
            totals.steps += 1
            totals.characters += drawn
        }
    }

    /// Draws `row`'s next character from row `stream` of `logits` and
    /// delivers it (or holds it back while it may begin a stop string):
    /// how many characters reached the reader, and whether the text goes on.
    private func draw(_ row: inout Row, logits: [Float], stream: Int) -> (delivered: Int, continues: Bool) {
        do {
            let token = try model.drawToken(
                logits: logits, stream: stream, parameters: &row.parameters, generator: &row.generator, scratch: sampleScratch)
            row.next = token
            row.generated += 1
            let last = row.generated == row.slot.length
            let scalar = vocabulary.scalars[Int(token)]
            let logprob = row.slot.completion.logprobs.map { top in
                CharacterLogprob(
                    token: token, logits: logits[stream * vocabulary.count..<(stream + 1) * vocabulary.count],
                    options: row.slot.options, top: top, vocabulary: vocabulary)
            }
            // A text that ended since the step began (cancelled) leaves at the next turn.
            if var matcher = row.matcher {
                var released = matcher.push(scalar, (scalar, logprob))
                if last && !matcher.stopped { released += matcher.flush() }
                let end: GenerationEnd? = matcher.stopped ? .stopped : last ? .completed : nil
                row.matcher = matcher
                let delivered =
                    (!released.isEmpty || end != nil) && row.slot.deliver(released.map(\.0), logprobs: released.compactMap(\.1), end: end)
                return (delivered ? released.count : 0, end == nil)
            }
            let delivered = row.slot.deliver(CollectionOfOne(scalar), logprobs: logprob.map { [$0] } ?? [], end: last ? .completed : nil)
            return (delivered ? 1 : 0, !last)
        } catch {
            row.slot.finish(.failed(error))
            return (0, false)
        }
    }
}
