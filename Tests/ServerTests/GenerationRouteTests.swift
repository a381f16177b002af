#if Server
    import CharRNN
    import CharRNNServer
    import Foundation
    import HTTPTypes
    import HummingbirdTesting
    import Synchronization
    import Testing

    /// Protects what the generation routes answer, in process over a loopback
    /// socket: the library's text for the same prime, options and seed,
    /// whole or as events, alone or among many; stop strings and
    /// log-probabilities as the library gives them; 503 and 504 when the
    /// server is full or a request runs out of time.
    @Suite("Server generation routes")
    struct GenerationRouteTests {
        @Test("An answer is the library's text for the same prime, options and seed, and a chosen seed is returned")
        func answerEqualsLibraryText() async throws {
            let model = TestModel.shared
            try await withServer(.live) { client, _ in
                let cases: [([String: Any], (inout SamplingOptions) -> Void)] = [
                    ([:], { _ in }),  // top_k absent: the notebook's 5, as charrnn sample
                    (
                        ["top_p": 0.9],
                        {
                            $0.topP = 0.9
                            $0.topK = nil
                        }
                    ),
                    (
                        ["top_k": 0, "temperature": 1.4],
                        {
                            $0.topK = nil
                            $0.temperature = 1.4
                        }
                    ),
                    (
                        ["top_k": 3, "temperature": 0.7],
                        {
                            $0.topK = 3
                            $0.temperature = 0.7
                        }
                    ),
                    (["temperature": 0], { $0.temperature = 0 }),
                    // 1e-50 is above 0: it keeps only the likeliest character, as greedy drawing does.
                    (
                        ["top_p": 1e-50],
                        {
                            $0.greedy = true
                            $0.topK = nil
                        }
                    ),
                ]
                for (index, (fields, options)) in cases.enumerated() {
                    let seed = UInt64(100 + index)
                    var body = fields
                    body["prime"] = "«Ёлки"
                    body["length"] = 300
                    body["seed"] = seed
                    let reply = try await client.send(.post, "/v1/generate", json: jsonBody(body))
                    #expect(reply.status == 200, "\(reply.text)")
                    #expect(reply.json["text"] as? String == (try model.text("«Ёлки", length: 300, seed: seed, options)), "\(fields)")
                    #expect(reply.json["seed"].flatMap(integer) == Int(seed))
                    #expect(reply.json["finish_reason"] as? String == "length")
                }
                // No seed: one is chosen and returned, and it reproduces the text; the defaults are charrnn sample's.
                let reply = try await client.send(.post, "/v1/generate", json: #"{"length": 120}"#)
                let seed = try #require(reply.json["seed"].flatMap(integer))
                #expect(reply.json["text"] as? String == (try model.text("The ", length: 120, seed: UInt64(seed))))
                let empty = try await client.send(.post, "/v1/generate")
                #expect(empty.status == 200 && (empty.json["text"] as? String)?.unicodeScalars.count == 4 + 2000, "an empty body takes every default")
            }
        }

        @Test("Server-Sent Events start with the prime and the seed, add up to the text, and end with a final event")
        func eventsAddUp() async throws {
            try await withServer(.live) { client, _ in
                let reply = try await client.send(.post, "/v1/generate", json: #"{"prime": "the", "length": 400, "seed": 11, "stream": true}"#)
                #expect(reply.status == 200)
                #expect(reply.headers[.contentType]?.hasPrefix("text/event-stream") == true)
                let events = reply.events
                // The prime comes first; on a busy machine characters made before
                // the first write join it in the same event.
                #expect((events.first?.data["text"] as? String)?.hasPrefix("the") == true)
                #expect(events.first?.data["seed"].flatMap(integer) == 11)
                let end = try #require(events.last)
                #expect(end.name == "end" && end.data["finish_reason"] as? String == "length" && end.data["length"].flatMap(integer) == 400)
                #expect(events.dropLast().allSatisfy { $0.name == "message" })
                #expect(events.compactMap { $0.data["text"] as? String }.joined() == (try TestModel.shared.text("the", length: 400, seed: 11)))
            }
        }

        @Test("Twenty-four concurrent requests, stepped together, each get the library's text")
        func concurrentAnswersEqualLibraryText() async throws {
            let model = TestModel.shared
            try await withServer(.live) { client, _ in
                let primes = ["the", "Ёлки", "«ёж» ", "cat sat"]
                struct Asked: Sendable {
                    let prime: String, length: Int, seed: UInt64, topK: Int
                }
                let requests = (0..<24).map { index in
                    Asked(prime: primes[index % 4], length: 150 + 13 * index, seed: UInt64(7_000 + index), topK: index % 3 == 0 ? 0 : 5)
                }
                let texts = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                    for (index, request) in requests.enumerated() {
                        group.addTask {
                            let fields: [String: Any] = [
                                "prime": request.prime, "length": request.length, "seed": request.seed, "top_k": request.topK,
                                "stream": index % 2 == 1,
                            ]
                            let reply = try await client.sendApart(.post, "/v1/generate", json: jsonBody(fields))
                            let whole = reply.json["text"] as? String
                            let streamed = reply.events.compactMap { $0.data["text"] as? String }.joined()
                            return (index, reply.status != 200 ? nil : index % 2 == 1 ? streamed : whole)
                        }
                    }
                    var texts = [String?](repeating: nil, count: requests.count)
                    for try await (index, text) in group { texts[index] = text }
                    return texts
                }
                let steps = try #require(try await client.metric("charrnn_steps_total"))
                let characters = try #require(try await client.metric("charrnn_generated_characters_total"))
                #expect(characters == Double(requests.reduce(0) { $0 + $1.length }))
                #expect(steps < characters / 4, "the requests shared steps (\(steps) steps for \(characters) characters)")
                for (request, text) in zip(requests, texts) {
                    let expected = try model.text(request.prime, length: request.length, seed: request.seed) { options in
                        if request.topK == 0 { options.topK = nil }
                    }
                    #expect(text == expected, "seed \(request.seed)")
                }
            }
        }

        @Test("Stop strings and log-probabilities give the library's text and figures, whole and as events")
        func stopAndLogprobsEqualLibrary() async throws {
            try await withServer(.live) { client, _ in
                let generator = TestModel.shared.generator
                var options = SamplingOptions()
                options.seed = 12
                options.topK = 5
                let full = try TestModel.shared.text("the", length: 300, seed: 12)
                let stop = String(full.unicodeScalars.dropFirst(200).prefix(3))
                var asked = CompletionOptions()
                asked.stop = [stop, "☃"]
                asked.logprobs = 2
                let expected = try generator.complete(prime: "the", length: 300, options: options, completion: asked)
                #expect(expected.finishReason == .stop)
                let fields: [String: Any] = ["prime": "the", "length": 300, "seed": 12, "stop": [stop, "☃"], "logprobs": 2]
                let reply = try await client.send(.post, "/v1/generate", json: jsonBody(fields))
                #expect(reply.status == 200, "\(reply.text)")
                #expect(reply.json["text"] as? String == "the" + expected.text && reply.json["finish_reason"] as? String == "stop")
                let served = try #require(reply.json["logprobs"] as? [[String: Any]])
                let figures = try #require(expected.logprobs)
                #expect(served.count == figures.count)
                for (one, figure) in zip(served, figures) {
                    #expect(one["char"] as? String == String(figure.character))
                    #expect(abs((one["logprob"] as? Double ?? .nan) - figure.logprob) < 1e-6)
                    #expect((one["top_logprobs"] as? [[String: Any]])?.count == 2)
                }
                var streamed = fields
                streamed["stream"] = true
                let events = try await client.send(.post, "/v1/generate", json: jsonBody(streamed)).events
                #expect(events.compactMap { $0.data["text"] as? String }.joined() == "the" + expected.text)
                let eventLogprobs = events.dropLast().flatMap { ($0.data["logprobs"] as? [[String: Any]]) ?? [] }
                #expect(eventLogprobs.compactMap { $0["char"] as? String }.joined() == expected.text)
                #expect(events.last?.name == "end" && events.last?.data["finish_reason"] as? String == "stop")
                #expect(events.last?.data["length"].flatMap(integer) == expected.text.unicodeScalars.count)
            }
        }

        @Test("With echo and logprobs each prompt's characters come first, scored as a trace scores them, then the generated ones as without echo")
        func echoedPromptsAreScored() async throws {
            let generator = TestModel.shared.generator
            let prompts = ["the «kite» fell", "Ёлки"]
            let scored = try prompts.map { prompt in
                var trace = try TextTrace(
                    generator: generator, text: prompt, options: TraceOptions(units: .none, top: 3, temperature: Double(Float(0.8))))
                var characters: [TracedCharacter] = []
                while let character = try trace.next() { characters.append(character) }
                return characters
            }
            var plainTrace = try TextTrace(generator: generator, text: prompts[0], options: TraceOptions())
            while try plainTrace.next() != nil {}
            let (meanSurprise, predictions) = (plainTrace.meanSurprise, plainTrace.predictions)
            try await withServer(.live) { client, _ in
                let fields: [String: Any] = ["prompt": prompts, "n": 2, "max_tokens": 30, "seed": 9, "temperature": 0.8, "logprobs": 3]
                let plain = try await client.send(.post, "/v1/completions", json: jsonBody(fields))
                let echoed = try await client.send(.post, "/v1/completions", json: jsonBody(edited(fields) { $0["echo"] = true }))
                #expect(plain.status == 200 && echoed.status == 200, "\(echoed.text)")
                let plainChoices = try #require(plain.json["choices"] as? [[String: Any]])
                let echoedChoices = try #require(echoed.json["choices"] as? [[String: Any]])
                #expect(plainChoices.count == 4 && echoedChoices.count == 4)
                for (index, (bare, choice)) in zip(plainChoices, echoedChoices).enumerated() {
                    let prompt = scored[index / 2]
                    let bareLogprobs = try #require(bare["logprobs"] as? [String: Any])
                    let logprobs = try #require(choice["logprobs"] as? [String: Any])
                    #expect(choice["text"] as? String == prompts[index / 2] + (bare["text"] as? String ?? "?"))
                    let tokens = try #require(logprobs["tokens"] as? [String])
                    let values = try #require(logprobs["token_logprobs"] as? [Any])
                    let tops = try #require(logprobs["top_logprobs"] as? [Any])
                    let bareTokens = try #require(bareLogprobs["tokens"] as? [String])
                    #expect(tokens == prompt.map { String($0.character) } + bareTokens)
                    #expect(logprobs["text_offset"] as? [Int] == Array(0..<tokens.count))
                    // The prompt's first character has nothing before it.
                    #expect(values[0] is NSNull && tops[0] is NSNull)
                    // Within JSON's reading of the printed doubles.
                    func close(_ a: Double?, _ b: Double?) -> Bool { a != nil && b != nil && abs(a! - b!) <= 1e-12 * abs(b!) }
                    for (position, character) in prompt.enumerated().dropFirst() {
                        #expect(close(values[position] as? Double, character.logprob), "\(index), \(position)")
                        let top = try #require(tops[position] as? [String: Double])
                        #expect(top.count == 3 && character.top.allSatisfy { close(top[String($0.character)], $0.logprob) })
                    }
                    // The generated characters' figures are the request's without echo (to the
                    // batch's rounding: streams join the batch at other steps).
                    func near(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) < 1e-6 } == true }
                    let bareValues = try #require(bareLogprobs["token_logprobs"] as? [Double])
                    let bareTops = try #require(bareLogprobs["top_logprobs"] as? [[String: Double]])
                    #expect(values.count == prompt.count + bareValues.count && tops.count == values.count)
                    #expect(zip(values.dropFirst(prompt.count), bareValues).allSatisfy { near($0 as? Double, $1) })
                    #expect(
                        zip(tops.dropFirst(prompt.count), bareTops).allSatisfy { top, bare in
                            guard let top = top as? [String: Double], top.keys == bare.keys else { return false }
                            return bare.allSatisfy { near(top[$0.key], $0.value) }
                        })
                }
                // Streamed, the chunks' objects add up to the whole answer's.
                var streamedFields = edited(fields) { $0["echo"] = true }
                streamedFields["stream"] = true
                let events = try await client.send(.post, "/v1/completions", json: jsonBody(streamedFields)).events
                var tokens = [[String]](repeating: [], count: 4)
                var offsets = [[Int]](repeating: [], count: 4)
                for event in events {
                    for choice in (event.data["choices"] as? [[String: Any]]) ?? [] {
                        let index = try #require(choice["index"].flatMap(integer))
                        let logprobs = try #require(choice["logprobs"] as? [String: Any])
                        tokens[index] += logprobs["tokens"] as? [String] ?? []
                        offsets[index] += logprobs["text_offset"] as? [Int] ?? []
                    }
                }
                #expect(tokens == echoedChoices.map { (($0["logprobs"] as? [String: Any])?["tokens"] as? [String]) ?? [] })
                #expect(offsets == tokens.map { Array(0..<$0.count) })
                // Scoring alone, as evaluation harnesses ask: no character generated.
                let scoring = try await client.send(
                    .post, "/v1/completions", json: jsonBody(["prompt": prompts[0], "max_tokens": 0, "echo": true, "logprobs": 0]))
                let only = try #require((scoring.json["choices"] as? [[String: Any]])?.first)
                #expect(only["text"] as? String == prompts[0])
                let onlyValues = try #require((only["logprobs"] as? [String: Any])?["token_logprobs"] as? [Any])
                let sum = onlyValues.compactMap { $0 as? Double }.reduce(0, +)
                #expect(onlyValues.count == scored[0].count)
                #expect(abs(-sum / Double(predictions) - meanSurprise) <= 1e-12, "at temperature 1, the trace's surprise")
                #expect((scoring.json["usage"] as? [String: Any])?["completion_tokens"].flatMap(integer) == 0)
            }
        }

        @Test("Beyond the streams and the queue a request gets 503 with Retry-After; past the timeout, 504, and the place is free again")
        func busyAndTimeout() async throws {
            try await withServer(
                .live,
                limits: edited(.init()) {
                    $0.maxStreams = 1
                    $0.maxQueued = 0
                    $0.maxLength = 100_000_000
                },
                // Long enough that a loaded machine still sees the stream active before it times out.
                settings: edited(.init()) { $0.requestTimeout = .seconds(6) }
            ) { client, _ in
                async let long = client.sendApart(.post, "/v1/generate", json: #"{"length": 100000000, "seed": 1}"#)
                #expect(await eventually { try await client.metric(apart: true, "charrnn_active_streams") == 1 })
                let refused = try await client.sendApart(.post, "/v1/generate", json: #"{"length": 10}"#)
                #expect(refused.status == 503 && refused.headers[.retryAfter] == "1")
                #expect((refused.json["error"] as? String)?.contains("busy") == true)
                let timedOut = try await long
                #expect(timedOut.status == 504, "\(timedOut.text)")
                #expect((timedOut.json["error"] as? String)?.contains("longer than") == true)
                #expect(try await client.send(.post, "/v1/generate", json: #"{"length": 10}"#).status == 200, "the place is free again")
            }
        }

    }
#endif
