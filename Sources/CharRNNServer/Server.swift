#if Server
    import CharRNN
    import CharRNNTools
    import Foundation
    import Hummingbird
    import NIOCore
    import Synchronization

    /// What the routes share: the scheduler, the model's facts, the limits, the metrics.
    package struct ServerSettings: Sendable {
        /// The settings the flags give when none is set.
        package init() {}
        /// Bytes a request body may have.
        package var maxBodyBytes = 1 << 20
        /// The longest a generate request may take, waiting included.
        package var requestTimeout: Duration = .seconds(300)
        /// When set, every route but /health and the playground's files needs `Authorization: Bearer <key>`.
        package var apiKey: String? = nil
        /// Origins whose pages may call the server (`--cors-origin`); "*" for any.
        package var corsOrigins: [String] = []
        /// The least time between two streamed events that carry generated
        /// characters (`--stream-interval`): what is made meanwhile goes in one event.
        package var streamInterval: Duration = .milliseconds(50)
        /// The model's name in the completions API (`model`, `GET /v1/models`).
        package var modelName = "charrnn"
        /// When the checkpoint was written, in seconds since 1970 (`GET /v1/models`' `created`).
        package var modelCreated = 0
        /// The bounds on `/v1/trace`: characters, units × layers, traces at once.
        package var traceLimits = TraceLimits()
    }

    /// The HTTP layer over a `GenerationScheduler`: routes, errors as JSON,
    /// bearer authentication and metrics.
    package struct Server: Sendable {
        /// The batch every generation request joins.
        package let scheduler: GenerationScheduler
        /// Limits, key, origins and names the routes apply.
        package let settings: ServerSettings
        /// `charrnn inspect --json`'s object for the checkpoint, and the server's limits.
        let model: JSONValue
        let metrics = ServerMetrics()
        /// What `/v1/trace` runs on: `generator`'s weights, apart from the scheduler's batch.
        let tracer: TraceRunner

        /// Routes over `scheduler`, describing the model `checkpoint` read
        /// from `url`; traces run on `generator` (the scheduler's).
        package init(scheduler: GenerationScheduler, generator: TextGenerator, checkpoint: Checkpoint, url: URL, settings: ServerSettings) {
            self.scheduler = scheduler
            self.settings = settings
            tracer = TraceRunner(generator: generator, limit: settings.traceLimits.maxConcurrent)
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            guard case .object(var facts) = JSONValue.describing(checkpoint, url: url, size: size) else {
                preconditionFailure("a checkpoint is described as a JSON object")
            }
            facts["server"] = .object([
                "max_length": .int(scheduler.limits.maxLength), "max_prime": .int(scheduler.limits.maxPrime),
                "max_streams": .int(scheduler.limits.maxStreams),
                "max_queued": .int(scheduler.limits.maxQueued), "max_body_bytes": .int(settings.maxBodyBytes),
                "prime_cache_bytes": .int(scheduler.limits.primeCacheBytes),
                "stream_interval_seconds": .double(Self.seconds(settings.streamInterval)),
                "timeout_seconds": .double(Self.seconds(settings.requestTimeout)),
                "max_trace_characters": .int(settings.traceLimits.maxCharacters), "max_trace_units": .int(settings.traceLimits.maxUnits),
                "max_traces": .int(settings.traceLimits.maxConcurrent),
                "defaults": .object([
                    "prime": .string(TextGenerator.defaultPrime), "length": .int(TextGenerator.defaultLength),
                    "temperature": .double(1), "top_k": .int(SamplingOptions.notebookTopK(vocabularySize: checkpoint.vocabulary.count)),
                ]),
            ])
            model = .object(facts)
        }

        /// Every route, behind the error, metrics and authentication middleware.
        package func router() -> Router<ServerContext> {
            let router = Router(context: ServerContext.self)
            router.add(middleware: ErrorAndMetricsMiddleware(metrics: metrics))
            router.add(middleware: CORSMiddleware(origins: Set(settings.corsOrigins)))
            router.add(middleware: BearerAuthMiddleware(key: settings.apiKey, open: ["/health"] + Playground.paths))
            router.get("/health") { _, _ in
                let shuttingDown = scheduler.isShuttingDown
                return Self.json(
                    .object(["status": .string(shuttingDown ? "shutting down" : "ok")]),
                    status: shuttingDown ? .serviceUnavailable : .ok)
            }
            router.get("/v1/model") { _, _ in Self.json(model) }
            router.get("/metrics") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(string: metrics.exposition(scheduler: scheduler, tracer: tracer))))
            }
            router.get("/openapi.json") { _, _ in
                Response(
                    status: .ok, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_json)))
            }
            for file in Playground.files {
                router.get(RouterPath(file.path)) { _, _ in
                    Response(
                        status: .ok, headers: [.contentType: file.contentType, .cacheControl: "no-cache"],
                        body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
                }
            }
            router.post("/v1/generate") { request, context in try await generate(request, connection: context.channel) }
            router.post("/v1/completions") { request, context in try await completions(request, connection: context.channel) }
            router.post("/v1/trace") { request, context in try await trace(request, connection: context.channel) }
            router.get("/v1/models") { _, _ in Self.json(.object(["object": .string("list"), "data": .array([modelObject])])) }
            router.get("/v1/models/:id") { _, context in
                guard context.parameters.get("id") == settings.modelName else {
                    throw APIError(
                        .notFound, "the model '\(context.parameters.get("id") ?? "")' does not exist; this server serves '\(settings.modelName)'",
                        field: "model")
                }
                return Self.json(modelObject)
            }
            return router
        }

        /// `POST /v1/generate`: the whole text as JSON, or Server-Sent Events as it is made.
        func generate(_ request: Request, connection: any Channel) async throws -> Response {
            let arrived = ContinuousClock.now
            let parameters = try GenerateParameters.decode(try await body(of: request, connection: connection))
            let generation = parameters.request(vocabularySize: scheduler.vocabulary.count, timeout: settings.requestTimeout)
            let stream: GenerationStream
            do { stream = try scheduler.submit(generation) } catch { throw APIError(error) }
            let reporter = LatencyReporter(metrics: metrics, arrived: arrived)
            if parameters.stream == true {
                return events(stream, logprobs: parameters.logprobs != nil, reporter: reporter, connection: connection)
            }

            // The whole text at once: the reader wakes at the end, not per
            // step; the connection watch ends the request if the client goes.
            let whole = await watchingConnection(connection, ending: [stream]) { await stream.whole() }
            let end = whole.end ?? .cancelled
            let text = whole.text
            let logprobs = whole.logprobs
            let received = text.unicodeScalars.count
            let primeCount = stream.prime.unicodeScalars.count
            if received > primeCount { reporter.firstCharacter() }
            let generated = received - primeCount
            reporter.finished()
            switch end {
            case .completed, .stopped:
                var fields: [String: JSONValue] = [
                    "text": .string(text), "seed": .unsigned(stream.seed), "prime": .string(stream.prime),
                    "length": .int(generated), "finish_reason": .string(end == .stopped ? "stop" : "length"),
                ]
                if parameters.logprobs != nil { fields["logprobs"] = .array(logprobs.map(JSONValue.describing)) }
                return Self.json(.object(fields))
            case .timedOut:
                throw APIError(.gatewayTimeout, "the request took longer than \(settings.requestTimeout) and was ended after \(generated) characters")
            case .shutDown:
                throw APIError(.serviceUnavailable, "the server shut down before the text was finished")
            case .failed(let error):
                throw APIError(.internalServerError, "generation failed: \(error)")
            case .cancelled:
                // Only the reader cancels: the client went away.
                throw ClientGone()
            }
        }

        /// `POST /v1/trace`: each character's probability, surprise, entropy
        /// and alternatives, and the chosen units' activations as columns.
        func trace(_ request: Request, connection: any Channel) async throws -> Response {
            let parameters = try TraceParameters.decode(try await body(of: request, connection: connection))
            let characters = parameters.text.unicodeScalars.count
            guard characters >= 1 else { throw APIError(.badRequest, "text must have at least one character", field: "text") }
            guard characters <= settings.traceLimits.maxCharacters else {
                throw APIError(
                    .contentTooLarge, "the text has \(characters) characters; the most this server traces is \(settings.traceLimits.maxCharacters)",
                    field: "text")
            }
            let unitCount: Int
            switch parameters.units {
            case .none: unitCount = 0
            case .all: unitCount = scheduler.hiddenSize
            case .listed(let units): unitCount = Set(units).count
            }
            guard unitCount * tracer.layerCount <= settings.traceLimits.maxUnits else {
                throw APIError(
                    .badRequest,
                    "units × layers may be at most \(settings.traceLimits.maxUnits) on this server (got \(unitCount) × \(tracer.layerCount))",
                    field: "units")
            }
            let tokens: [Int32]
            do { tokens = try tracer.vocabulary.encode(parameters.text.unicodeScalars) } catch {
                guard case .unknownScalars(let scalars) = error else { throw APIError(.internalServerError, error.description) }
                var refusal = APIError(.unprocessableContent, TraceError.unknownCharacters(scalars).description, field: "text")
                refusal.extra["unknown_characters"] = .array(scalars.map { .string(String($0)) })
                throw refusal
            }
            let options = TraceOptions(units: parameters.units, top: parameters.top, cellState: parameters.cellState)
            let json = try await watchingTrace(connection, "the trace") { flag in
                do {
                    return try await tracer.run(tokens: tokens, options: options, flag: flag)
                } catch let error as TraceError {
                    switch error {
                    case .unitOutOfRange(let unit, let hiddenSize):
                        throw APIError(.badRequest, "units must be in 0-\(hiddenSize - 1) (got \(unit))", field: "units")
                    case .topOutOfRange(let top, let vocabularySize):
                        throw APIError(.badRequest, "top must be in 0-\(vocabularySize), the model's vocabulary (got \(top))", field: "top")
                    default: throw APIError(.internalServerError, error.description)
                    }
                }
            }
            return Response(
                status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: json)))
        }

        /// Runs `work` with a flag that the tracer reads between characters,
        /// set when the client goes (then `ClientGone` is thrown) or the
        /// request's time is up (504 naming `what`); a model failure is 500.
        func watchingTrace<Value>(
            _ connection: any Channel, _ what: String, _ work: (TraceRunner.Flag) async throws -> Value
        ) async throws -> Value {
            let flag = TraceRunner.Flag()
            let timeout = settings.requestTimeout
            let watcher = Task {
                let deadline = ContinuousClock.now.advanced(by: timeout)
                while !Task.isCancelled {
                    if !connection.isActive { return flag.cancel() }
                    if ContinuousClock.now >= deadline { return flag.timeOut() }
                    try? await Task.sleep(for: connectionCheckInterval)
                }
            }
            defer { watcher.cancel() }
            do {
                return try await work(flag)
            } catch TraceRunner.Stop.cancelled {
                throw ClientGone()
            } catch TraceRunner.Stop.timedOut {
                throw APIError(.gatewayTimeout, "\(what) took longer than \(timeout) and was ended")
            } catch TraceRunner.Stop.failed(let reason) {
                throw APIError(.internalServerError, "\(what) failed: \(reason)")
            }
        }

        /// A request's body: JSON (415 for another media type: a page of
        /// another origin can POST text/plain or a form without asking, but
        /// not JSON), refused with 413 beyond the server's limit.
        func body(of request: Request, connection: any Channel) async throws -> ByteBuffer {
            if let type = request.headers[.contentType] {
                let media = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
                guard media == "application/json" || media.hasSuffix("+json") else {
                    throw APIError(.unsupportedMediaType, "the body must be JSON sent as Content-Type: application/json (got \(type))")
                }
            }
            if let declared = request.headers[.contentLength].flatMap(Int.init), declared > settings.maxBodyBytes {
                throw APIError(.contentTooLarge, "the body is \(declared) bytes; the most this server takes is \(settings.maxBodyBytes)")
            }
            var request = request
            do {
                return try await request.collectBody(upTo: settings.maxBodyBytes)
            } catch is NIOTooManyBytesError {
                throw APIError(.contentTooLarge, "the body is over \(settings.maxBodyBytes) bytes, the most this server takes")
            } catch  where !connection.isActive {
                throw ClientGone()
            }
        }

        /// Server-Sent Events: `data: {"text": …}` per chunk (the first holds
        /// the prime and the seed), then `event: end` with how it ended. When the
        /// client goes away the connection closes (or the next write fails), the
        /// loop ends and dropping the stream frees its place in the batch.
        private func events(_ stream: GenerationStream, logprobs: Bool, reporter: LatencyReporter, connection: any Channel) -> Response {
            let headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-cache"]
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody { writer in
                    defer { reporter.finished() }
                    try await watchingConnection(connection, ending: [stream]) {
                        try await Self.writeEvents(
                            stream, interval: settings.streamInterval, logprobs: logprobs, reporter: reporter, connection: connection,
                            metrics: metrics, to: &writer)
                    }
                    try await writer.finish(nil)
                })
        }

        /// The events of `events(…)`, one per chunk, and the end.
        private static func writeEvents(
            _ stream: GenerationStream, interval: Duration, logprobs: Bool, reporter: LatencyReporter, connection: any Channel,
            metrics: ServerMetrics,
            to writer: inout any ResponseBodyWriter
        ) async throws {
            var first = true
            var generated = 0
            for await chunk in stream.paced(interval) {
                if !connection.isActive {  // gone before a write could fail
                    stream.cancel()
                    metrics.countDisconnect(route: "/v1/generate")
                }
                if !chunk.text.isEmpty || first {
                    let count = chunk.text.unicodeScalars.count - (first ? stream.prime.unicodeScalars.count : 0)
                    if generated == 0 && count > 0 { reporter.firstCharacter() }
                    generated += count
                    // What was made since the last event (one character each when
                    // --stream-interval is 0): built directly, not through an
                    // encoder (see docs/PERFORMANCE.md).
                    var event = "data: {"
                    if first { event += "\"seed\":\(stream.seed)," }
                    event += "\"text\":"
                    JSONString.append(chunk.text, to: &event)
                    if logprobs {  // (the prime's characters have none)
                        event += ",\"logprobs\":" + JSONValue.array(chunk.logprobs.map(JSONValue.describing)).line
                    }
                    event += "}\n\n"
                    first = false
                    try await writer.write(ByteBuffer(string: event))
                }
                if let end = chunk.end {
                    let reason: String
                    var fields: [String: JSONValue] = ["seed": .unsigned(stream.seed), "length": .int(generated)]
                    switch end {
                    case .completed: reason = "length"
                    case .stopped: reason = "stop"
                    case .timedOut: reason = "timeout"
                    case .shutDown: reason = "shutdown"
                    case .cancelled: reason = "cancelled"
                    case .failed(let error):
                        reason = "error"
                        fields["error"] = .string(error.description)
                    }
                    fields["finish_reason"] = .string(reason)
                    try await writer.write(ByteBuffer(string: "event: end\ndata: " + JSONValue.object(fields).line + "\n\n"))
                }
            }
        }

        static func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        }

        static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
            Response(
                status: status, headers: [.contentType: "application/json; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: value.line + "\n")))
        }
    }

    /// Records a request's time to first character and total time, once each.
    final class LatencyReporter: Sendable {
        let metrics: ServerMetrics
        let arrived: ContinuousClock.Instant
        private let done = Mutex((first: false, finished: false))

        init(metrics: ServerMetrics, arrived: ContinuousClock.Instant) {
            self.metrics = metrics
            self.arrived = arrived
        }

        func firstCharacter() {
            if done.withLock({ state in
                defer { state.first = true }
                return !state.first
            }) {
                metrics.recordFirstCharacter(ContinuousClock.now - arrived)
            }
        }

        func finished() {
            if done.withLock({ state in
                defer { state.finished = true }
                return !state.finished
            }) {
                metrics.recordDuration(ContinuousClock.now - arrived)
            }
        }
    }
#endif
