#if Server
    import CharRNN
    import CharRNNTools
    import Foundation
    import Hummingbird
    import NIOCore

    /// OpenAI's completions API over the same scheduler: `POST /v1/completions`
    /// and `GET /v1/models`, as OpenAI defines them, for the fields that mean
    /// something for a character model. A token is a character.
    enum OpenAICompletions {
        /// The routes whose errors take OpenAI's shape.
        static let paths = ["/v1/completions", "/v1/models"]
        /// The most choices (prompts × n) one request may ask for.
        static let maxChoices = 128
        /// OpenAI's default `max_tokens`.
        static let defaultMaxTokens = 16

        /// `{"message", "type", "param", "code"}` for an error.
        static func errorObject(_ error: APIError) -> JSONValue {
            let code: JSONValue
            switch error.status {
            case .unauthorized: code = .string("invalid_api_key")
            case .notFound where error.field == "model": code = .string("model_not_found")
            default: code = .null
            }
            let type: String
            switch error.status.code {
            case 401: type = "authentication_error"
            case 400..<500: type = "invalid_request_error"
            default: type = "server_error"
            }
            return .object([
                "message": .string(error.message), "type": .string(type), "param": error.field.map { .string(OpenAICompletions.param($0)) } ?? .null,
                "code": code,
            ])
        }

        /// The answer for a choice the scheduler refused, in the completions
        /// API's words (`prompt`, `max_tokens`) and with OpenAI's 400 for
        /// every invalid request.
        static func error(_ error: SchedulerError) -> APIError {
            let native = APIError(error)
            guard let field = native.field else { return native }
            var message = native.message
            for (word, spelled) in [("the prime", "the prompt"), (field, param(field))] where message.hasPrefix(word) {
                message = spelled + message.dropFirst(word.count)
            }
            var answer = APIError(native.status == .unprocessableContent ? .badRequest : native.status, message, field: field)
            answer.headers = native.headers
            return answer
        }

        /// The request field an error names, as the completions API spells it.
        static func param(_ field: String) -> String {
            switch field {
            case "length": return "max_tokens"
            case "prime": return "prompt"
            default: return field
            }
        }
    }

    /// The body of `POST /v1/completions`.
    struct CompletionParameters {
        var model: String?
        var prompts: [String] = []
        var maxTokens = OpenAICompletions.defaultMaxTokens
        var temperature: Float?
        var topP: Float?
        /// An extension, as vLLM's: absent, every character can be drawn.
        var topK: Int?
        var n = 1
        var stop: [String] = []
        var stream = false
        var includeUsage = false
        var seed: UInt64?
        var logprobs: Int?
        var echo = false

        enum Field: String, CaseIterable {
            case model, prompt
            case maxTokens = "max_tokens"
            case temperature
            case topP = "top_p"
            case topK = "top_k"
            case n, stop, stream
            case streamOptions = "stream_options"
            case seed, logprobs, echo, user
            case frequencyPenalty = "frequency_penalty"
            case presencePenalty = "presence_penalty"
            case bestOf = "best_of"
            case logitBias = "logit_bias"
            case suffix
        }

        /// Reads a body. Throws `APIError` (400) naming the field that is
        /// missing, wrongly typed, unknown, out of range or asks for what this
        /// server does not do (a penalty, `best_of` above `n`, a logit bias,
        /// a suffix); fields at their neutral values are accepted.
        static func decode(_ body: ByteBuffer) throws(APIError) -> CompletionParameters {
            let fields: [String: JSONScalar]
            do {
                fields = try JSONDecoder().decode([String: JSONScalar].self, from: Data(body.readableBytesView))
            } catch DecodingError.typeMismatch, DecodingError.valueNotFound {  // another value, or null
                throw APIError(.badRequest, "the body must be a JSON object, such as {\"model\": \"…\", \"prompt\": \"The \"}")
            } catch {
                throw APIError(.badRequest, "the body is not valid JSON")
            }
            var parameters = CompletionParameters()
            guard fields["prompt"].map({ if case .null = $0 { return false } else { return true } }) == true else {
                throw APIError(.badRequest, "prompt is required: a string, or a list of strings", field: "prompt")
            }
            for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
                guard let key = Field(rawValue: name) else {
                    throw APIError(.badRequest, "unrecognized request argument supplied: \(name)", field: name)
                }
                if case .null = value { continue }
                try parameters.read(key, value)
            }
            return parameters
        }

        private mutating func read(_ key: Field, _ value: JSONScalar) throws(APIError) {
            let name = key.rawValue
            func wrong(_ expected: String) -> APIError {
                value.unreadable(name, text: [.model, .prompt, .stop, .user, .suffix].contains(key))
                    ?? APIError(.badRequest, "\(name) must be \(expected)", field: name)
            }
            func integer() throws(APIError) -> Int {
                guard case .integer(let number) = value else { throw wrong("a whole number") }
                return number
            }
            func number() throws(APIError) -> Double {
                guard let number = value.number else { throw wrong("a number") }
                return number
            }
            func flag() throws(APIError) -> Bool {
                guard case .bool(let flag) = value else { throw wrong("true or false") }
                return flag
            }
            func unsupported(_ what: String) -> APIError { APIError(.badRequest, "\(name) \(what) is not supported by this server", field: name) }
            switch key {
            case .model:
                guard case .string(let text) = value else { throw wrong("a string") }
                model = text
            case .prompt:
                switch value {
                case .string(let text): prompts = [text]
                case .array(let items) where !items.isEmpty:
                    prompts = try items.map { item throws(APIError) in
                        guard case .string(let text) = item else { throw item.unreadable(name, text: true) ?? wrong("a string or a list of strings") }
                        return text
                    }
                default: throw wrong("a string or a list of strings")
                }
            case .maxTokens: maxTokens = try integer()
            case .temperature: temperature = try GenerateParameters.float(try number(), field: name)
            case .topP: topP = try GenerateParameters.float(try number(), field: name)
            case .topK: topK = try integer()
            case .n: n = try integer()
            case .stop:
                stop = try GenerateParameters.stopStrings(value, wrongType: wrong("a string or a list of strings"))
            case .stream: stream = try flag()
            case .streamOptions:
                guard case .object(let options) = value else { throw wrong("an object such as {\"include_usage\": true}") }
                for (option, setting) in options {
                    guard option == "include_usage" else { throw unsupported("'\(option)'") }
                    guard case .bool(let include) = setting else { throw wrong("{\"include_usage\": true or false}") }
                    includeUsage = include
                }
            case .seed:
                switch value {
                case .integer(let number) where number >= 0: seed = UInt64(number)
                case .unsigned(let number): seed = number
                default: throw wrong("a whole number from 0 to 18446744073709551615")
                }
            case .logprobs: logprobs = try integer()
            case .echo: echo = try flag()
            case .user:
                guard case .string = value else { throw wrong("a string") }
            case .frequencyPenalty, .presencePenalty:
                if try number() != 0 { throw unsupported("other than 0") }
            case .bestOf:
                let bestOf = try integer()
                if bestOf != 1 && bestOf != n { throw unsupported("above n") }
            case .logitBias:
                guard case .object(let biases) = value else { throw wrong("an object") }
                if !biases.isEmpty { throw unsupported("with entries") }
            case .suffix:
                guard case .string(let text) = value else { throw wrong("a string") }
                if !text.isEmpty { throw unsupported("(insertion)") }
            }
        }

        /// The scheduler requests, choice by choice (prompt by prompt, then
        /// n each): choice i of a prompt draws with the seed `charrnn sample
        /// --count n` gives its sample i.
        func requests(vocabularySize: Int, timeout: Duration?, seed: UInt64) throws(APIError) -> [GenerationRequest] {
            guard n >= 1 else { throw APIError(.badRequest, "n must be at least 1 (got \(n))", field: "n") }
            guard prompts.count * n <= OpenAICompletions.maxChoices else {
                throw APIError(
                    .badRequest, "n × the prompts must be at most \(OpenAICompletions.maxChoices) (got \(n) × \(prompts.count))", field: "n")
            }
            var options = SamplingOptions()
            options.temperature = temperature ?? 1
            options.topK = topK == 0 ? nil : topK
            options.topP = topP
            var completion = CompletionOptions()
            completion.stop = stop
            completion.logprobs = logprobs
            return prompts.flatMap { prompt in
                (0..<n).map { choice in
                    var request = GenerationRequest()
                    request.prime = prompt
                    request.length = maxTokens
                    request.timeout = timeout
                    request.options = options
                    request.options.seed = SamplingOptions.streamSeed(seed, stream: choice)
                    request.completion = completion
                    return request
                }
            }
        }
    }

    /// Characters in OpenAI's logprobs columns: a scored prompt's (for
    /// `echo` with `logprobs`; its first character has none, nothing
    /// predicts it) or generated ones'.
    struct LogprobColumns {
        var tokens: [JSONValue] = []
        var tokenLogprobs: [JSONValue] = []
        var topLogprobs: [JSONValue] = []

        init() {}

        /// The columns of a scored prompt.
        init(_ characters: [TracedCharacter]) {
            for character in characters {
                append(character.character, character.logprob, top: character.top.map { ($0.character, $0.logprob) })
            }
        }

        /// The columns of generated characters.
        init(_ generated: [CharacterLogprob]) {
            for character in generated {
                append(character.character, character.logprob, top: character.top.map { ($0.character, $0.logprob) })
            }
        }

        /// A character, its log-probability (nil: none, and no alternatives)
        /// and its alternatives as `{character: log-probability}`.
        private mutating func append(_ character: Unicode.Scalar, _ logprob: Double?, top: [(Unicode.Scalar, Double)]) {
            tokens.append(.string(String(character)))
            tokenLogprobs.append(logprob.map { .double($0) } ?? .null)
            topLogprobs.append(
                logprob == nil ? .null : .object(Dictionary(top.map { (String($0.0), JSONValue.double($0.1)) }, uniquingKeysWith: { a, _ in a })))
        }

        static func + (first: LogprobColumns, second: LogprobColumns) -> LogprobColumns {
            var joined = first
            joined.tokens += second.tokens
            joined.tokenLogprobs += second.tokenLogprobs
            joined.topLogprobs += second.topLogprobs
            return joined
        }
    }

    /// One choice's text as it is made: what it has sent, for the offsets.
    struct ChoiceProgress {
        let index: Int
        let primeCount: Int
        let echo: Bool
        /// The prompt's columns, put before the generated characters' when echoed.
        var prompt: LogprobColumns? = nil
        var sent = 0
        var primeSeen = false

        /// The choice's part of a chunk: its new text (the prime left out
        /// unless echoed) and, when asked, OpenAI's logprobs object for it
        /// (with the prompt's characters first when echoed).
        mutating func piece(_ chunk: GenerationChunk, logprobs: Bool) -> (text: String, logprobs: JSONValue) {
            var scalars = Array(chunk.text.unicodeScalars)[...]
            var echoed: LogprobColumns? = nil
            if !primeSeen {
                primeSeen = true
                if echo { echoed = prompt } else { scalars = scalars.dropFirst(primeCount) }
            }
            let text = String(String.UnicodeScalarView(scalars))
            var object = JSONValue.null
            if logprobs {
                let columns = (echoed ?? LogprobColumns()) + LogprobColumns(chunk.logprobs)
                // Offsets into the choice's text: the piece's characters end at its end.
                let first = sent + scalars.count - columns.tokens.count
                object = .object([
                    "tokens": .array(columns.tokens), "token_logprobs": .array(columns.tokenLogprobs),
                    "top_logprobs": .array(columns.topLogprobs),
                    "text_offset": .array((0..<columns.tokens.count).map { JSONValue.int(first + $0) }),
                ])
            }
            sent += scalars.count
            return (text, object)
        }
    }

    extension Server {
        /// The name clients give as `model`: `--model-name`, else the run
        /// directory's name for its best.safetensors, else the file's name.
        package static func modelName(for url: URL) -> String {
            if url.lastPathComponent == "best.safetensors" { return url.deletingLastPathComponent().lastPathComponent }
            return url.deletingPathExtension().lastPathComponent
        }

        /// `GET /v1/models`'s entry for the served model.
        var modelObject: JSONValue {
            .object([
                "id": .string(settings.modelName), "object": .string("model"), "created": .int(settings.modelCreated), "owned_by": .string("charrnn"),
            ])
        }

        /// `POST /v1/completions`: OpenAI's completion object, or its stream of chunk objects and `data: [DONE]`.
        func completions(_ request: Request, connection: any Channel) async throws -> Response {
            let arrived = ContinuousClock.now
            let parameters = try CompletionParameters.decode(try await body(of: request, connection: connection))
            if let model = parameters.model, model != settings.modelName {
                throw APIError(.notFound, "the model '\(model)' does not exist; this server serves '\(settings.modelName)'", field: "model")
            }
            let seed = parameters.seed ?? SamplingOptions.randomSeed()
            let requests = try parameters.requests(vocabularySize: scheduler.vocabulary.count, timeout: settings.requestTimeout, seed: seed)
            var submitted: [GenerationStream] = []
            do {
                for generation in requests { submitted.append(try scheduler.submit(generation)) }
            } catch {
                for stream in submitted { stream.cancel() }  // all the choices or none
                throw OpenAICompletions.error(error)
            }
            let streams = submitted
            var scored: [String: LogprobColumns] = [:]
            if parameters.echo, let top = parameters.logprobs {
                do {
                    scored = try await scoredPrompts(
                        parameters.prompts, top: top, temperature: requests[0].options.logprobTemperature, connection: connection)
                } catch {
                    for stream in streams { stream.cancel() }
                    throw error
                }
            }
            let reporter = LatencyReporter(metrics: metrics, arrived: arrived)
            let header: [String: JSONValue] = [
                "id": .string("cmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()),
                "object": .string("text_completion"), "created": .int(Int(Date().timeIntervalSince1970)),
                "model": .string(settings.modelName), "seed": .unsigned(seed),
            ]
            let promptTokens = streams.enumerated().filter { $0.offset % parameters.n == 0 }.reduce(0) {
                $0 + $1.element.prime.unicodeScalars.count
            }
            let started = streams.enumerated().map {
                ChoiceProgress(
                    index: $0.offset, primeCount: $0.element.prime.unicodeScalars.count, echo: parameters.echo, prompt: scored[$0.element.prime])
            }
            let logprobs = parameters.logprobs != nil
            if parameters.stream {
                let chunks = Self.merged(streams, interval: settings.streamInterval)
                return Response(
                    status: .ok, headers: [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-cache"],
                    body: ResponseBody { writer in
                        defer {
                            for stream in streams { stream.cancel() }
                            reporter.finished()
                        }
                        try await watchingConnection(connection, ending: streams) {
                            var progress = started
                            for await (index, chunk) in chunks {
                                if !connection.isActive {
                                    metrics.countDisconnect(route: "/v1/completions")
                                    break
                                }
                                let piece = progress[index].piece(chunk, logprobs: logprobs)
                                if chunk.end == nil && piece.text.isEmpty { continue }
                                if !piece.text.isEmpty { reporter.firstCharacter() }
                                var finish = JSONValue.null
                                if let end = chunk.end {
                                    guard let reason = Self.finishReason(end) else {
                                        let error = Self.endError(end, requestTimeout: settings.requestTimeout)
                                        try await writer.write(
                                            ByteBuffer(
                                                string: "data: " + JSONValue.object(["error": OpenAICompletions.errorObject(error)]).line + "\n\n")
                                        )
                                        break
                                    }
                                    finish = .string(reason)
                                }
                                var object = header
                                object["choices"] = .array([
                                    .object(["index": .int(index), "text": .string(piece.text), "logprobs": piece.logprobs, "finish_reason": finish])
                                ])
                                try await writer.write(ByteBuffer(string: "data: " + JSONValue.object(object).line + "\n\n"))
                            }
                            if parameters.includeUsage {
                                let generated =
                                    progress.reduce(0) { $0 + $1.sent } - (parameters.echo ? progress.reduce(0) { $0 + $1.primeCount } : 0)
                                var object = header
                                object["choices"] = .array([])
                                object["usage"] = Self.usage(prompt: promptTokens, completion: generated)
                                try await writer.write(ByteBuffer(string: "data: " + JSONValue.object(object).line + "\n\n"))
                            }
                            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                        }
                        try await writer.finish(nil)
                    })
            }

            var progress = started
            var texts = [String](repeating: "", count: streams.count)
            var logprobObjects = [[JSONValue]](repeating: [], count: streams.count)
            var reasons = [String](repeating: "length", count: streams.count)
            defer { for stream in streams { stream.cancel() } }
            // Each choice whole: its reader wakes at its end, not per step.
            let wholes = await watchingConnection(connection, ending: streams) {
                await withTaskGroup(of: (Int, GenerationChunk).self) { group in
                    for (index, stream) in streams.enumerated() { group.addTask { (index, await stream.whole()) } }
                    var wholes = [GenerationChunk?](repeating: nil, count: streams.count)
                    for await (index, chunk) in group { wholes[index] = chunk }
                    return wholes.compactMap { $0 }
                }
            }
            if !connection.isActive { throw ClientGone() }
            for (index, chunk) in wholes.enumerated() {
                let piece = progress[index].piece(chunk, logprobs: logprobs)
                if !piece.text.isEmpty { reporter.firstCharacter() }
                texts[index] += piece.text
                if logprobs { logprobObjects[index].append(piece.logprobs) }
                if let end = chunk.end {
                    guard let reason = Self.finishReason(end) else { throw Self.endError(end, requestTimeout: settings.requestTimeout) }
                    reasons[index] = reason
                }
            }
            reporter.finished()
            let generated = progress.reduce(0) { $0 + $1.sent } - (parameters.echo ? progress.reduce(0) { $0 + $1.primeCount } : 0)
            var object = header
            object["choices"] = .array(
                texts.indices.map { index in
                    .object([
                        "index": .int(index), "text": .string(texts[index]), "finish_reason": .string(reasons[index]),
                        "logprobs": logprobs ? Self.joined(logprobObjects[index]) : .null,
                    ])
                })
            object["usage"] = Self.usage(prompt: promptTokens, completion: generated)
            return Self.json(.object(object))
        }

        /// Each distinct prompt's characters with their log-probabilities and
        /// the `top` likeliest at `temperature`, as a trace computes them (on
        /// the tracer, within its places and the request's time); a prompt
        /// longer than a trace may be is refused with 413.
        func scoredPrompts(_ prompts: [String], top: Int, temperature: Double, connection: any Channel) async throws -> [String: LogprobColumns] {
            let limit = settings.traceLimits.maxCharacters
            if let longest = prompts.map(\.unicodeScalars.count).max(), longest > limit {
                throw APIError(
                    .contentTooLarge,
                    "prompt has \(longest) characters; with echo and logprobs a prompt is scored a character at a time, at most \(limit) on this server",
                    field: "prompt")
            }
            var scored: [String: LogprobColumns] = [:]
            for prompt in prompts where scored[prompt] == nil {
                // The scheduler has taken the prompt, so its characters are the model's.
                let tokens = try scheduler.vocabulary.encode(prompt.unicodeScalars)
                let characters = try await watchingTrace(connection, "scoring the prompt") { flag in
                    try await tracer.characters(tokens: tokens, top: top, temperature: temperature, flag: flag)
                }
                scored[prompt] = LogprobColumns(characters)
            }
            return scored
        }

        /// The chunks of every choice as they come, each with its choice's
        /// index; it ends when every choice has ended (or its reader stops
        /// reading, which ends them all).
        static func merged(_ streams: [GenerationStream], interval: Duration) -> AsyncStream<(Int, GenerationChunk)> {
            AsyncStream { continuation in
                let readers = Task {
                    await withTaskGroup(of: Void.self) { group in
                        for (index, stream) in streams.enumerated() {
                            group.addTask {
                                for await chunk in stream.paced(interval) { continuation.yield((index, chunk)) }
                            }
                        }
                    }
                    continuation.finish()
                }
                continuation.onTermination = { _ in
                    readers.cancel()
                    for stream in streams { stream.cancel() }
                }
            }
        }

        /// `finish_reason` for a choice that ended well; nil for one that did not.
        static func finishReason(_ end: GenerationEnd) -> String? {
            switch end {
            case .completed: return "length"
            case .stopped: return "stop"
            default: return nil
            }
        }

        /// The error for a choice that did not end well.
        static func endError(_ end: GenerationEnd, requestTimeout: Duration) -> APIError {
            switch end {
            case .timedOut: return APIError(.gatewayTimeout, "the request took longer than \(requestTimeout) and was ended")
            case .shutDown: return APIError(.serviceUnavailable, "the server shut down before the text was finished")
            case .failed(let error): return APIError(.internalServerError, "generation failed: \(error)")
            default: return APIError(.internalServerError, "the request was cancelled")
            }
        }

        static func usage(prompt: Int, completion: Int) -> JSONValue {
            .object(["prompt_tokens": .int(prompt), "completion_tokens": .int(completion), "total_tokens": .int(prompt + completion)])
        }

        /// One logprobs object from a choice's chunks' objects, in order.
        static func joined(_ pieces: [JSONValue]) -> JSONValue {
            var fields: [String: [JSONValue]] = ["tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []]
            for case .object(let piece) in pieces {
                for key in fields.keys { if case .array(let values) = piece[key] { fields[key, default: []] += values } }
            }
            return .object(fields.mapValues { .array($0) })
        }
    }
#endif
