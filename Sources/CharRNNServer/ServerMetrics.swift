#if Server
    import CharRNN
    import Prometheus
    import Synchronization

    /// What `/metrics` reports, in Prometheus's text format: requests by route
    /// and status, characters, steps, the batch and the queue, and latencies.
    final class ServerMetrics: Sendable {
        private let registry = PrometheusCollectorRegistry()
        private let characters: Counter
        private let steps: Counter
        private let activeStreams: Gauge
        private let queuedRequests: Gauge
        private let activeTraces: Gauge
        private let tracedCharacters: Counter
        private let primeFed: Counter
        private let primeCached: Counter
        private let primeCacheHits: Counter
        private let primeCacheMisses: Counter
        private let primeCacheBytes: Gauge
        private let primeCacheEntries: Gauge
        private let requestDuration: DurationHistogram
        private let firstCharacter: DurationHistogram
        /// The scheduler's totals when last reported, so the counters advance by the difference.
        private let reported = Mutex(GenerationScheduler.Statistics())
        private let tracedReported = Mutex(0)

        private static let latencyBuckets: [Duration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
            .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300),
        ]

        /// `charrnn_<name>_<unit>`, with its help line.
        private static func name(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "charrnn", metricName: name, unitName: unit, helpText: help)
        }

        private static var requests: MetricNameDescriptor { name("http_requests", "total", "HTTP requests answered, by route and status.") }

        init() {
            characters = registry.makeCounter(descriptor: Self.name("generated_characters", "total", "Characters generated after the primes."))
            steps = registry.makeCounter(
                descriptor: Self.name(
                    "steps", "total", "Batched model steps run (every stream in the batch advances one character)."))
            activeStreams = registry.makeGauge(
                descriptor: Self.name("active", "streams", "Requests in the batch, generating or feeding their prime."))
            queuedRequests = registry.makeGauge(descriptor: Self.name("queued", "requests", "Requests waiting for a place in the batch."))
            activeTraces = registry.makeGauge(descriptor: Self.name("active", "traces", "/v1/trace requests being computed."))
            tracedCharacters = registry.makeCounter(
                descriptor: Self.name("traced_characters", "total", "Characters fed through the model by /v1/trace."))
            primeFed = registry.makeCounter(descriptor: Self.name("prime_characters_fed", "total", "Prime characters fed through the model."))
            primeCached = registry.makeCounter(
                descriptor: Self.name("prime_characters_cached", "total", "Prime characters not fed: their state came from the prime cache."))
            primeCacheHits = registry.makeCounter(
                descriptor: Self.name("prime_cache_hits", "total", "Requests that started from a cached prime state."))
            primeCacheMisses = registry.makeCounter(
                descriptor: Self.name("prime_cache_misses", "total", "Requests with a prime of 64 characters or more that found no cached state."))
            primeCacheBytes = registry.makeGauge(
                descriptor: Self.name("prime_cache", "bytes", "Bytes the prime cache holds (characters and states)."))
            primeCacheEntries = registry.makeGauge(descriptor: Self.name("prime_cache", "entries", "Primes whose states the cache holds."))
            requestDuration = registry.makeDurationHistogram(
                descriptor: Self.name(
                    "generate_duration", "seconds", "Time from a generate request's arrival to its last character."), buckets: Self.latencyBuckets)
            firstCharacter = registry.makeDurationHistogram(
                descriptor: Self.name(
                    "time_to_first_character", "seconds", "Time from a generate request's arrival to its first generated character."),
                buckets: Self.latencyBuckets)
        }

        /// Counts one request whose client went away before its answer.
        func countDisconnect(route: String) {
            registry.makeCounter(
                descriptor: Self.name(
                    "client_disconnects", "total", "Requests whose client went away before the answer, by route (not answered, not errors)."),
                labels: [("route", route)]
            ).increment()
        }

        /// Counts one answered request.
        func countRequest(route: String, status: Int) {
            registry.makeCounter(descriptor: Self.requests, labels: [("route", route), ("status", String(status))]).increment()
        }

        func recordDuration(_ duration: Duration) { requestDuration.record(duration) }

        func recordFirstCharacter(_ duration: Duration) { firstCharacter.record(duration) }

        /// The text format, with the scheduler's state as of now.
        func exposition(scheduler: GenerationScheduler, tracer: TraceRunner) -> String {
            let now = scheduler.statistics
            let previous = reported.withLock { last in
                defer { last = now }
                return last
            }
            characters.increment(by: Int64(max(0, now.characters - previous.characters)))
            steps.increment(by: Int64(max(0, now.steps - previous.steps)))
            primeFed.increment(by: Int64(max(0, now.primeCharactersFed - previous.primeCharactersFed)))
            primeCached.increment(by: Int64(max(0, now.primeCharactersCached - previous.primeCharactersCached)))
            primeCacheHits.increment(by: Int64(max(0, now.primeCacheHits - previous.primeCacheHits)))
            primeCacheMisses.increment(by: Int64(max(0, now.primeCacheMisses - previous.primeCacheMisses)))
            primeCacheBytes.set(Double(now.primeCacheBytes))
            primeCacheEntries.set(Double(now.primeCacheEntries))
            activeStreams.set(Double(now.activeStreams))
            queuedRequests.set(Double(now.queuedRequests))
            let traces = tracer.statistics
            activeTraces.set(Double(traces.running))
            let countedCharacters = tracedReported.withLock { last in
                defer { last = traces.characters }
                return last
            }
            tracedCharacters.increment(by: Int64(max(0, traces.characters - countedCharacters)))
            return registry.emitToString()
        }
    }
#endif
