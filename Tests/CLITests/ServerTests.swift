import Foundation
import Synchronization
import Testing

/// Protects `charrnn-server` as an app meets it over HTTP: the same text as
/// `charrnn sample`, alone and among many, streamed or whole; every bad
/// input answered with its status and a message while the server stays up;
/// streams freed when their client goes; a clean SIGTERM.
@Suite("charrnn-server")
struct ServerTests {
    /// A checkpoint made by `charrnn train` on a small text, shared by the tests.
    static let run: (scratch: Scratch, checkpoint: String) = {
        let (scratch, directory) = trainedRun(
            on: "Ёлки-палки, «ёж» идёт домой; The cat sat on the mat.\n", repeated: 40,
            ["--hidden", "48", "--batch", "4", "--steps", "20", "--max-iterations", "30"])
        return (scratch, directory + "/best.safetensors")
    }()

    /// `charrnn sample`'s text for these options (the same names as the API's, as flags).
    static func sample(_ prime: String, length: Int, seed: UInt64, _ extra: [String] = []) throws -> String {
        let result = try CLI.run(
            [
                "sample", "--checkpoint", run.checkpoint, "--prime", prime, "--length", String(length),
                "--seed", String(seed),
            ] + extra)
        #expect(result.status == 0, "\(result.stderr)")
        return result.stdout
    }

    static func body(_ fields: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: fields), as: UTF8.self)
    }

    #if Server
        @Test("An answer is charrnn sample's text for the same prime, options and seed, and a chosen seed is returned")
        func answerEqualsSample() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            #expect(server.listeningLine.contains("http://127.0.0.1:"), "binds to loopback unless told otherwise")
            let cases: [([String: Any], [String])] = [
                ([:], []),  // top_k absent: the notebook's 5, as charrnn sample
                (["top_p": 0.9], ["--top-p", "0.9"]),
                (["top_k": 0, "temperature": 1.4], ["--no-top-k", "--temperature", "1.4"]),
                (["top_k": 3, "temperature": 0.7], ["--top-k", "3", "--temperature", "0.7"]),
                (["temperature": 0], ["--temperature", "0"]),
            ]
            for (index, (options, flags)) in cases.enumerated() {
                let seed = UInt64(100 + index)
                var fields = options
                fields["prime"] = "«Ёлки"
                fields["length"] = 300
                fields["seed"] = seed
                let reply = try server.request("POST", "/v1/generate", json: Self.body(fields))
                #expect(reply.status == 200, "\(reply.text)")
                #expect(reply.json["text"] as? String == (try Self.sample("«Ёлки", length: 300, seed: seed, flags)), "\(options)")
                #expect((reply.json["seed"].flatMap(integer)).map(UInt64.init) == seed)
                #expect(reply.json["finish_reason"] as? String == "length")
            }
            // No seed: one is chosen and returned, and it reproduces the text; defaults as charrnn sample's.
            let reply = try server.request("POST", "/v1/generate", json: #"{"length": 120}"#)
            let seed = try #require((reply.json["seed"].flatMap(integer)).map(UInt64.init))
            #expect(reply.json["text"] as? String == (try Self.sample("The ", length: 120, seed: seed)))
            let empty = try server.request("POST", "/v1/generate")
            #expect(empty.status == 200)
            #expect((empty.json["text"] as? String)?.unicodeScalars.count == 4 + 2000, "an empty body takes every default")
        }

        @Test("Forty concurrent requests, stepped together, each get charrnn sample's text")
        func concurrentAnswersEqualSample() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let count = 40
            struct Request: Sendable { let prime: String, length: Int, seed: UInt64, topK: Int }
            let primes = ["the", "Ёлки", "«ёж» ", "cat sat"]
            let requests = (0..<count).map { index in
                Request(prime: primes[index % 4], length: 150 + 13 * index, seed: UInt64(7_000 + index), topK: index % 3 == 0 ? 0 : 5)
            }
            let answers = Mutex([String?](repeating: nil, count: count))
            let group = DispatchGroup()
            for (index, request) in requests.enumerated() {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    let fields: [String: Any] = [
                        "prime": request.prime, "length": request.length, "seed": request.seed, "top_k": request.topK,
                        "stream": index % 2 == 1,
                    ]
                    guard let reply = try? server.request("POST", "/v1/generate", json: Self.body(fields)), reply.status == 200 else { return }
                    let text = index % 2 == 1 ? reply.events.compactMap { $0.data["text"] as? String }.joined() : reply.json["text"] as? String
                    answers.withLock { $0[index] = text }
                }
            }
            #expect(group.wait(timeout: .now() + 300) == .success)
            let steps = try #require(try server.metric("charrnn_steps_total"))
            let characters = try #require(try server.metric("charrnn_generated_characters_total"))
            #expect(characters == Double(requests.reduce(0) { $0 + $1.length }))
            #expect(steps < characters / 4, "the requests shared steps (\(steps) steps for \(characters) characters)")
            let texts = answers.withLock { $0 }
            for (request, text) in zip(requests, texts) {
                let flags: [String] = request.topK == 0 ? ["--no-top-k"] : []
                #expect(text == (try Self.sample(request.prime, length: request.length, seed: request.seed, flags)), "seed \(request.seed)")
            }
        }

        @Test("Stop strings and log-probabilities give charrnn sample's text and figures, whole and as events")
        func stopAndLogprobsEqualSample() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let full = try Self.sample("the", length: 300, seed: 12)
            let stop = String(full.unicodeScalars.dropFirst(200).prefix(3))
            let flags = ["--stop", stop, "--stop", "☃", "--logprobs", "2"]
            let lines = try Self.sample("the", length: 300, seed: 12, flags).split(separator: "\n").map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
            let expectedText = try #require(lines.last?["text"] as? String)
            #expect(lines.last?["finish_reason"] as? String == "stop")
            let fields: [String: Any] = ["prime": "the", "length": 300, "seed": 12, "stop": [stop, "☃"], "logprobs": 2]
            let reply = try server.request("POST", "/v1/generate", json: Self.body(fields))
            #expect(reply.status == 200, "\(reply.text)")
            #expect(reply.json["text"] as? String == "the" + expectedText)
            #expect(reply.json["finish_reason"] as? String == "stop")
            let logprobs = try #require(reply.json["logprobs"] as? [[String: Any]])
            #expect(logprobs.count == lines.count - 1)
            for (served, printed) in zip(logprobs, lines) {
                #expect(served["char"] as? String == printed["char"] as? String)
                let a = try #require(served["logprob"] as? Double)
                let b = try #require(printed["logprob"] as? Double)
                #expect(abs(a - b) < 1e-5)
                #expect((served["top_logprobs"] as? [[String: Any]])?.count == 2)
            }
            var streamed = fields
            streamed["stream"] = true
            let events = try server.request("POST", "/v1/generate", json: Self.body(streamed)).events
            #expect(events.compactMap { $0.data["text"] as? String }.joined() == "the" + expectedText)
            let eventLogprobs = events.dropLast().flatMap { ($0.data["logprobs"] as? [[String: Any]]) ?? [] }
            #expect(eventLogprobs.compactMap { $0["char"] as? String }.joined() == expectedText)
            #expect(events.last?.name == "end" && events.last?.data["finish_reason"] as? String == "stop")
            #expect(events.last?.data["length"].flatMap(integer) == expectedText.unicodeScalars.count)
        }

        @Test("POST /v1/completions answers in OpenAI's shapes with charrnn sample's texts: n choices, a list of prompts, stop, echo, streamed")
        func completionsEqualSample() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let name = URL(fileURLWithPath: Self.run.checkpoint).deletingLastPathComponent().lastPathComponent
            let models = try server.request("GET", "/v1/models").json
            #expect((models["data"] as? [[String: Any]])?.first?["id"] as? String == name, "the run directory names the model")
            // charrnn sample --count 2's samples (generated text only), for each prompt.
            func samples(_ prompt: String, _ flags: [String] = []) throws -> [String] {
                try Self.sample(prompt, length: 120, seed: 21, ["--count", "2", "--no-top-k", "--logprobs", "0"] + flags)
                    .split(separator: "\n").compactMap {
                        (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["text"] as? String
                    }
            }
            let expected = try samples("the") + samples("Ёлки")
            let fields: [String: Any] = ["model": name, "prompt": ["the", "Ёлки"], "max_tokens": 120, "seed": 21, "n": 2, "user": "u"]
            let reply = try server.request("POST", "/v1/completions", json: Self.body(fields))
            #expect(reply.status == 200, "\(reply.text)")
            #expect(reply.json["object"] as? String == "text_completion" && reply.json["model"] as? String == name)
            #expect((reply.json["id"] as? String)?.hasPrefix("cmpl-") == true && reply.json["created"] is Int)
            let choices = try #require(reply.json["choices"] as? [[String: Any]])
            #expect(choices.compactMap { $0["text"] as? String } == expected)
            #expect(choices.compactMap { $0["index"].flatMap(integer) } == [0, 1, 2, 3])
            #expect(choices.allSatisfy { $0["finish_reason"] as? String == "length" && $0["logprobs"] is NSNull })
            let usage = try #require(reply.json["usage"] as? [String: Any])
            #expect(usage["prompt_tokens"].flatMap(integer) == 7 && usage["completion_tokens"].flatMap(integer) == 480)
            #expect(usage["total_tokens"].flatMap(integer) == 487)
            // Stop strings and echo.
            let stop = String(expected[0].unicodeScalars.dropFirst(60).prefix(3))
            let stopped = try samples("the", ["--stop", stop])[0]
            let echoed = try server.request(
                "POST", "/v1/completions", json: Self.body(["prompt": "the", "max_tokens": 120, "seed": 21, "stop": stop, "echo": true]))
            let echoedChoice = try #require((echoed.json["choices"] as? [[String: Any]])?.first)
            #expect(echoedChoice["text"] as? String == "the" + stopped && echoedChoice["finish_reason"] as? String == "stop")
            // Streamed: chunk objects whose texts add up, the finish reason last, usage when asked, then [DONE].
            var streamed = fields
            streamed["stream"] = true
            streamed["stream_options"] = ["include_usage": true]
            let events = try server.request("POST", "/v1/completions", json: Self.body(streamed))
            #expect(events.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            let blocks = events.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            #expect(blocks.last == "data: [DONE]")
            let chunks = events.events.dropLast().map(\.data)
            var texts = [String](repeating: "", count: 4)
            var reasons = [String?](repeating: nil, count: 4)
            for chunk in chunks {
                #expect(chunk["object"] as? String == "text_completion")
                for choice in (chunk["choices"] as? [[String: Any]]) ?? [] {
                    let index = try #require(choice["index"].flatMap(integer))
                    texts[index] += choice["text"] as? String ?? ""
                    if let reason = choice["finish_reason"] as? String { reasons[index] = reason }
                }
            }
            #expect(texts == expected && reasons == ["length", "length", "length", "length"])
            #expect((chunks.last?["usage"] as? [String: Any])?["completion_tokens"].flatMap(integer) == 480)
        }

        @Test("Completions errors take OpenAI's shape, naming the parameter as the API spells it")
        func completionsErrorsInOpenAIShape() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--model-name", "tiny", "--max-length", "500"])
            defer { server.stop() }
            let cases: [(body: String, status: Int, param: String?, message: String)] = [
                (#"{"prompt": "the", "max_tokens": -1}"#, 400, "max_tokens", "max_tokens must be 0 or more"),
                (#"{"prompt": "the", "max_tokens": 501}"#, 400, "max_tokens", "max_tokens must be at most 500"),
                (#"{"prompt": "the QZ"}"#, 400, "prompt", "the prompt has characters the model's vocabulary lacks: 'Q'"),
                (#"{"prompt": ""}"#, 400, "prompt", "prompt must have at least one character"),
                (#"{"prompt": [1, 2]}"#, 400, "prompt", "prompt must be a string or a list of strings"),
                (#"{"max_tokens": 5}"#, 400, "prompt", "prompt is required"),
                (#"{"prompt": "the", "model": "gpt-4"}"#, 404, "model", "the model 'gpt-4' does not exist; this server serves 'tiny'"),
                (#"{"prompt": "the", "temperature": -1}"#, 400, "temperature", "temperature must be 0 or more"),
                (#"{"prompt": "the", "n": 0}"#, 400, "n", "n must be at least 1"),
                (#"{"prompt": "the", "n": 129}"#, 400, "n", "must be at most 128"),
                (#"{"prompt": "the", "frequency_penalty": 0.5}"#, 400, "frequency_penalty", "not supported"),
                (#"{"prompt": "the", "logit_bias": {"50256": -100}}"#, 400, "logit_bias", "not supported"),
                (#"{"prompt": "the", "echo": true, "logprobs": 1}"#, 400, "echo", "echo cannot be combined with logprobs"),
                (#"{"prompt": "the", "bogus": 1}"#, 400, "bogus", "unrecognized request argument supplied: bogus"),
                ("null", 400, nil, "the body must be a JSON object"),
            ]
            for bad in cases {
                let reply = try server.request("POST", "/v1/completions", json: bad.body)
                let error = try #require(reply.json["error"] as? [String: Any], "\(bad.body): \(reply.text)")
                #expect(reply.status == bad.status, "\(bad.body): \(reply.text)")
                #expect((error["message"] as? String)?.contains(bad.message) == true, "\(bad.body): \(reply.text)")
                #expect(error["param"] as? String == bad.param, "\(bad.body): \(reply.text)")
                #expect(error["type"] as? String == "invalid_request_error", "\(bad.body)")
            }
            // Neutral values of what the server does not do are accepted.
            let neutral = try server.request(
                "POST", "/v1/completions",
                json: #"{"model": "tiny", "prompt": "the", "max_tokens": 3, "presence_penalty": 0, "best_of": 1, "logit_bias": {}, "suffix": null}"#)
            #expect(neutral.status == 200, "\(neutral.text)")
            #expect(try server.request("GET", "/v1/models/tiny").json["id"] as? String == "tiny")
            let missing = try server.request("GET", "/v1/models/other")
            #expect(missing.status == 404 && (missing.json["error"] as? [String: Any])?["code"] as? String == "model_not_found")
        }

        @Test("A prime sent again, or extended, starts from the cached state and still gets charrnn sample's text")
        func cachedPrimesEqualSample() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let prime = String(repeating: "Ёлки-палки, «ёж» идёт домой; The cat sat on the mat.\n", count: 20)
            for (text, seed) in [(prime, 1), (prime, 2), (prime + "The cat", 3)] {
                let reply = try server.request("POST", "/v1/generate", json: Self.body(["prime": text, "length": 100, "seed": seed]))
                #expect(reply.json["text"] as? String == (try Self.sample(text, length: 100, seed: UInt64(seed))), "seed \(seed)")
            }
            #expect(try server.metric("charrnn_prime_cache_hits_total") == 2)
            #expect(try server.metric("charrnn_prime_cache_misses_total") == 1)
            let count = Double(prime.unicodeScalars.count)
            #expect(try server.metric("charrnn_prime_characters_cached_total") == 2 * (count - 1))
            #expect(try server.metric("charrnn_prime_characters_fed_total") == count + 1 + 8)
        }

        /// A reference-size model (2 × 512 LSTM), trained one iteration: long
        /// primes take seconds to feed through it, as they do in real use.
        static let wide: (scratch: Scratch, checkpoint: String) = {
            let (scratch, directory) = trainedRun(
                on: "The cat sat on the mat, and the dog lay by the door.\n", repeated: 20,
                ["--hidden", "512", "--layers", "2", "--batch", "2", "--steps", "10", "--max-iterations", "1"])
            return (scratch, directory + "/best.safetensors")
        }()

        @Test("A client that resets during a long prime frees its place within a second, and the prime stops being fed")
        func resetDuringPrimeFreesThePlace() throws {
            let server = try ServerProcess(["--checkpoint", Self.wide.checkpoint])
            defer { server.stop() }
            let prime = String(repeating: "The cat sat on the mat, and the dog lay by the door.\n", count: 3_800)  // 201,400 characters
            for stream in [false, true] {
                let fedBefore = try server.metric("charrnn_prime_characters_fed_total") ?? 0
                let socket = try HTTP.connect(port: server.port)
                try HTTP.send(
                    socket, method: "POST", path: "/v1/generate", body: Data(Self.body(["prime": prime, "length": 5, "stream": stream]).utf8),
                    headers: ["Content-Type": "application/json"])
                #expect(eventually(within: 10) { ((try? server.metric("charrnn_prime_characters_fed_total")) ?? 0) > fedBefore })
                var linger = linger(l_onoff: 1, l_linger: 0)  // close with a reset
                setsockopt(socket, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                close(socket)
                let reset = Date()
                #expect(eventually(within: 10) { (try? server.metric("charrnn_active_streams")) == 0 }, "stream \(stream)")
                #expect(Date().timeIntervalSince(reset) < 1, "the place was freed \(Date().timeIntervalSince(reset)) s after the reset")
                let fed = try server.metric("charrnn_prime_characters_fed_total") ?? 0
                #expect(fed - fedBefore < Double(prime.count), "the prime was not fed to its end")
                Thread.sleep(forTimeInterval: 0.2)
                #expect(try server.metric("charrnn_prime_characters_fed_total") == fed, "and stays stopped")
            }
        }

        @Test("A long prime sent again with ten more characters feeds only those, and gets charrnn sample's text; past --max-prime, 413")
        func longPrimeExtendedFeedsOnlyTheRest() throws {
            let server = try ServerProcess(["--checkpoint", Self.wide.checkpoint, "--max-prime", "20000"])
            defer { server.stop() }
            let prime = String(repeating: "The cat sat on the mat, and the dog lay by the door.\n", count: 300)  // 15,900 characters
            let first = try server.request("POST", "/v1/generate", json: Self.body(["prime": prime, "length": 20, "seed": 4]))
            #expect(first.status == 200, "\(first.text)")
            let fed = try server.metric("charrnn_prime_characters_fed_total") ?? 0
            let extended = prime + "The cat sa"
            let second = try server.request("POST", "/v1/generate", json: Self.body(["prime": extended, "length": 20, "seed": 4]))
            #expect(try server.metric("charrnn_prime_characters_fed_total") == fed + 11, "only the ten new characters and the last old one")
            let sample = try CLI.run(["sample", "--checkpoint", Self.wide.checkpoint, "--prime", extended, "--length", "20", "--seed", "4"])
            #expect(second.json["text"] as? String == sample.stdout)

            let long = String(repeating: "The cat ", count: 2_501)  // 20,008 characters
            let refused = try server.request("POST", "/v1/generate", json: Self.body(["prime": long, "length": 1]))
            #expect(refused.status == 413 && refused.json["field"] as? String == "prime", "\(refused.text)")
            #expect((refused.json["error"] as? String)?.contains("20008") == true && (refused.json["error"] as? String)?.contains("20000") == true)
            let completions = try server.request("POST", "/v1/completions", json: Self.body(["prompt": long, "max_tokens": 1]))
            let error = completions.json["error"] as? [String: Any]
            #expect(completions.status == 413 && error?["param"] as? String == "prompt", "\(completions.text)")
            #expect(try server.request("GET", "/v1/model").json["server"].flatMap { ($0 as? [String: Any])?["max_prime"] as? Int } == 20_000)
        }

        @Test("HTTP as clients expect: any case of the Bearer scheme, JSON bodies only, cross-origin pages only when allowed, precise messages")
        func httpAsClientsExpect() throws {
            let server = try ServerProcess(
                ["--checkpoint", Self.run.checkpoint, "--api-key", "k3y", "--cors-origin", "https://ok.example"])
            defer { server.stop() }
            let key = ["Authorization": "Bearer k3y"]
            for scheme in ["bearer", "BEARER", "Bearer ", "bEaReR"] {
                let reply = try server.request("POST", "/v1/generate", json: #"{"length": 2}"#, headers: ["Authorization": "\(scheme) k3y"])
                #expect(reply.status == 200, "'\(scheme)': \(reply.text)")
            }
            // A page of any origin can POST text/plain or a form without a preflight; those bodies are refused.
            for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                for path in ["/v1/generate", "/v1/completions"] {
                    let reply = try server.request(
                        "POST", path, json: #"{"prompt": "the"}"#, headers: key.merging(["Content-Type": type]) { a, _ in a })
                    #expect(reply.status == 415, "\(type) \(path): \(reply.text)")
                }
            }
            #expect(
                try server.request(
                    "POST", "/v1/generate", json: #"{"length": 2}"#,
                    headers: key.merging(["Content-Type": "application/json; charset=utf-8"]) { a, _ in a }
                ).status == 200)
            // Cross-origin: the allowed origin's preflight (no key: browsers send none) and answers; others get neither.
            let preflight = [
                "Origin": "https://ok.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            ]
            let allowed = try server.request("OPTIONS", "/v1/generate", headers: preflight)
            #expect(allowed.status == 204)
            #expect(allowed.headers["access-control-allow-origin"] == "https://ok.example")
            #expect(allowed.headers["access-control-allow-headers"]?.lowercased().contains("authorization") == true)
            #expect(allowed.headers["access-control-allow-methods"]?.contains("POST") == true)
            let other = try server.request("OPTIONS", "/v1/generate", headers: preflight.merging(["Origin": "https://evil.example"]) { _, b in b })
            #expect(other.status == 403 && other.headers["access-control-allow-origin"] == nil)
            let answered = try server.request(
                "POST", "/v1/generate", json: #"{"length": 2}"#, headers: key.merging(["Origin": "https://ok.example"]) { a, _ in a })
            #expect(answered.headers["access-control-allow-origin"] == "https://ok.example" && answered.headers["vary"] == "Origin")
            let foreign = try server.request(
                "POST", "/v1/generate", json: #"{"length": 2}"#, headers: key.merging(["Origin": "https://evil.example"]) { a, _ in a })
            #expect(foreign.headers["access-control-allow-origin"] == nil)
            // Precise messages: values beyond a Float, too small for one, unreadable text.
            let cases: [(body: Data, status: Int, message: String)] = [
                (Data(#"{"temperature": 1e39}"#.utf8), 400, "temperature must be at most 3.4028235e+38 (got 1e+39)"),
                (Data(#"{"prime": "\ud800"}"#.utf8), 400, "prime must be valid Unicode text: it has invalid UTF-8 or a lone surrogate"),
                (Data(#"{"prime": "a"#.utf8) + Data([0xFF]) + Data(#""}"#.utf8), 400, "prime must be valid Unicode text"),
                (Data(#"{"stop": ["\udc00"]}"#.utf8), 400, "stop must be valid Unicode text"),
            ]
            for bad in cases {
                let reply = try HTTP.request(port: server.port, method: "POST", path: "/v1/generate", body: bad.body, headers: key)
                #expect(reply.status == bad.status && (reply.json["error"] as? String)?.contains(bad.message) == true, "\(reply.text)")
            }
            // top_p 1e-50 is above 0: it keeps only the likeliest character, as greedy drawing does.
            let tiny = try server.request("POST", "/v1/generate", json: #"{"prime": "the", "length": 50, "top_p": 1e-50, "seed": 3}"#, headers: key)
            let greedy = try Self.sample("the", length: 50, seed: 3, ["--greedy"])
            #expect(tiny.status == 200 && tiny.json["text"] as? String == greedy, "\(tiny.text)")
        }

        @Test("An HTTP/1.0 request is answered in HTTP/1.0 and its connection closed; Connection: close in any form is honoured and sent")
        func connectionsCloseAsClientsExpect() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let body = #"{"prime": "The ", "length": 30, "seed": 5, "stream": true}"#
            let requests = [
                "GET /health HTTP/1.0\r\n\r\n",
                "POST /v1/generate HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)",
                "GET /health HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            ]
            for (index, request) in requests.enumerated() {
                let (received, closed) = try HTTP.exchange(port: server.port, request)
                #expect(closed, "request \(index): the connection was left open")
                #expect(received.hasPrefix(index < 2 ? "HTTP/1.0 200" : "HTTP/1.1 200"), "request \(index): \(received.prefix(200))")
                #expect(received.lowercased().contains("\r\nconnection: close\r\n"), "request \(index): \(received.prefix(300))")
                #expect(!received.lowercased().contains("transfer-encoding"), "a 1.0 client cannot read chunks")
            }
            let streamed = try HTTP.exchange(port: server.port, requests[1]).received
            #expect(streamed.contains(#""finish_reason":"length""#), "the whole stream arrived: \(streamed.suffix(200))")
            // HTTP/1.1 without Connection: close keeps the connection for the next request.
            #expect(try HTTP.exchange(port: server.port, "GET /health HTTP/1.1\r\nHost: a\r\n\r\n", timeout: 1).closed == false)
        }

        @Test("A client that resets its connection is counted apart from server errors, and its place is freed")
        func resetIsNotAServerError() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--max-length", "10000000"])
            defer { server.stop() }
            for stream in [false, true] {
                let socket = try HTTP.connect(port: server.port)
                try HTTP.send(
                    socket, method: "POST", path: "/v1/generate", body: Data(#"{"length": 10000000, "stream": \#(stream)}"#.utf8), headers: [:])
                #expect(eventually(within: 5) { (try? server.metric("charrnn_active_streams")) == 1 })
                var linger = linger(l_onoff: 1, l_linger: 0)  // close with a reset
                setsockopt(socket, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                close(socket)
                #expect(eventually(within: 5) { (try? server.metric("charrnn_active_streams")) == 0 }, "stream \(stream)")
            }
            let metrics = try server.request("GET", "/metrics").text
            #expect(metrics.contains(#"charrnn_client_disconnects_total{route="/v1/generate"} 2"#), "\(metrics)")
            #expect(!metrics.contains(#"status="500""#), "no reset is counted as a server error")
        }

        @Test("Server-Sent Events start with the prime and the seed, add up to the text, and end with a final event")
        func eventsAddUp() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let reply = try server.request("POST", "/v1/generate", json: #"{"prime": "the", "length": 400, "seed": 11, "stream": true}"#)
            #expect(reply.status == 200)
            #expect(reply.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            let events = reply.events
            #expect(events.first?.data["text"] as? String == "the")
            #expect((events.first?.data["seed"].flatMap(integer)) == 11)
            #expect(events.count > 2)
            let end = try #require(events.last)
            #expect(end.name == "end")
            #expect(end.data["finish_reason"] as? String == "length")
            #expect((end.data["length"].flatMap(integer)) == 400)
            #expect(events.dropLast().allSatisfy { $0.name == "message" })
            #expect(events.compactMap { $0.data["text"] as? String }.joined() == (try Self.sample("the", length: 400, seed: 11)))
        }

        @Test("Each bad input gets its status and a message naming what is wrong, and the server stays up")
        func badInputIsAnswered() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--max-length", "5000", "--max-body-bytes", "4096"])
            defer { server.stop() }
            let cases: [(body: String, status: Int, field: String?, message: String)] = [
                (#"{"prime": "the", "length": 10"#, 400, nil, "not valid JSON"),
                (#"["the"]"#, 400, nil, "must be a JSON object"),
                ("null", 400, nil, "must be a JSON object"),
                (#"{"temperature": "hot"}"#, 400, "temperature", "temperature must be a number"),
                (#"{"length": 2.5}"#, 400, "length", "length must be a whole number"),
                (#"{"seed": -1}"#, 400, "seed", "seed must be a whole number"),
                (#"{"stream": "yes"}"#, 400, "stream", "stream must be true or false"),
                (#"{"prime": 42}"#, 400, "prime", "prime must be a string"),
                (#"{"topk": 3}"#, 400, "topk", "unknown field 'topk'"),
                (#"{"top_k": 9999}"#, 400, "top_k", "top_k must be between 1 and the vocabulary size"),
                (#"{"top_p": 1.5}"#, 400, "top_p", "top_p must be in (0, 1]"),
                (#"{"temperature": -1}"#, 400, "temperature", "temperature must be 0 or more"),
                (#"{"length": -3}"#, 400, "length", "length must be 0 or more"),
                (#"{"length": 5001}"#, 400, "length", "length must be at most 5000"),
                (#"{"prime": ""}"#, 400, "prime", "prime must have at least one character"),
                (#"{"stop": 3}"#, 400, "stop", "stop must be a string or a list of strings"),
                (#"{"stop": ["a", 3]}"#, 400, "stop", "stop must be a string or a list of strings"),
                (#"{"stop": ["a", ""]}"#, 400, "stop", "stop must be strings of at least one character"),
                (Self.body(["stop": Array(repeating: "a", count: 17)]), 400, "stop", "stop may have at most 16 strings (got 17)"),
                (Self.body(["stop": String(repeating: "a", count: 257)]), 400, "stop", "at most 256 characters (got 257)"),
                (#"{"logprobs": 1000}"#, 400, "logprobs", "logprobs must be between 0 and the vocabulary size"),
                (#"{"logprobs": true}"#, 400, "logprobs", "logprobs must be a whole number"),
                (#"{"prime": "the QZ€"}"#, 422, "prime", "lacks: 'Q' (U+0051), 'Z' (U+005A)"),
                (Self.body(["prime": String(repeating: "the ", count: 2000)]), 413, nil, "the most this server takes is 4096"),
            ]
            for bad in cases {
                let reply = try server.request("POST", "/v1/generate", json: bad.body)
                #expect(reply.status == bad.status, "\(bad.body.prefix(60)): \(reply.text)")
                #expect((reply.json["error"] as? String)?.contains(bad.message) == true, "\(bad.body.prefix(60)): \(reply.text)")
                #expect(reply.json["field"] as? String == bad.field, "\(bad.body.prefix(60))")
            }
            let unknown = try server.request("POST", "/v1/generate", json: #"{"prime": "the QZ€"}"#)
            #expect(unknown.json["unknown_characters"] as? [String] == ["Q", "Z", "€"])
            #expect(try server.request("GET", "/no-such-page").status == 404)
            let wrongMethod = try server.request("GET", "/v1/generate")
            #expect([404, 405].contains(wrongMethod.status) && wrongMethod.json["error"] != nil)
            #expect(try server.request("GET", "/health").status == 200)
            let good = try server.request("POST", "/v1/generate", json: #"{"prime": "the", "length": 20, "seed": 1}"#)
            let expected = try Self.sample("the", length: 20, seed: 1)
            #expect(good.status == 200 && good.json["text"] as? String == expected)
            #expect(server.process.isRunning)
        }

        @Test("Beyond the streams and the queue a request gets 503 with Retry-After; past the timeout, 504")
        func busyAndTimeout() throws {
            let server = try ServerProcess([
                "--checkpoint", Self.run.checkpoint, "--max-streams", "1", "--max-queued", "0", "--timeout", "4",
                "--max-length", "10000000",
            ])
            defer { server.stop() }
            let long = Thread.detachedResult {
                try? server.request("POST", "/v1/generate", json: #"{"length": 10000000, "seed": 1}"#)
            }
            #expect(eventually { (try? server.metric("charrnn_active_streams")) == 1 })
            let refused = try server.request("POST", "/v1/generate", json: #"{"length": 10}"#)
            #expect(refused.status == 503)
            #expect(refused.headers["retry-after"] == "1")
            #expect((refused.json["error"] as? String)?.contains("busy") == true)
            let timedOut = try #require(long.wait(seconds: 60) ?? nil)
            #expect(timedOut.status == 504, "\(timedOut.text)")
            #expect((timedOut.json["error"] as? String)?.contains("longer than") == true)
            #expect(try server.request("POST", "/v1/generate", json: #"{"length": 10}"#).status == 200, "the place is free again")
        }

        @Test("With an API key every route but /health and the playground needs the bearer token")
        func apiKeyIsRequired() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint], environment: ["CHARRNN_API_KEY": "s3cret"])
            defer { server.stop() }
            #expect(server.listeningLine.contains("API key required"))
            for (method, path) in [("POST", "/v1/generate"), ("GET", "/v1/model"), ("GET", "/metrics"), ("GET", "/openapi.json")] {
                let none = try server.request(method, path, json: method == "POST" ? "{}" : nil)
                #expect(none.status == 401, "\(path)")
                #expect(none.headers["www-authenticate"] == "Bearer")
                let wrong = try server.request(method, path, json: method == "POST" ? "{}" : nil, headers: ["Authorization": "Bearer nope"])
                #expect(wrong.status == 401 && (wrong.json["error"] as? String)?.contains("wrong") == true, "\(path)")
            }
            #expect(try server.request("GET", "/health").status == 200)
            #expect(try server.request("GET", "/").status == 200)
            let allowed = try server.request("POST", "/v1/generate", json: #"{"length": 5}"#, headers: ["Authorization": "Bearer s3cret"])
            #expect(allowed.status == 200)
        }

        @Test("A client that disconnects mid-stream frees its stream at once")
        func disconnectFreesStream() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--max-length", "10000000"])
            defer { server.stop() }

            let socket = try HTTP.connect(port: server.port)
            let body = Data(#"{"length": 10000000, "stream": true}"#.utf8)
            try HTTP.send(socket, method: "POST", path: "/v1/generate", body: body, headers: [:])
            var buffer = [UInt8](repeating: 0, count: 4096)
            var received = 0
            while received < 600 {
                let count = recv(socket, &buffer, buffer.count, 0)
                guard count > 0 else { break }
                received += count
            }
            #expect(received >= 600, "events arrived")
            #expect(try server.metric("charrnn_active_streams") == 1)
            close(socket)
            #expect(eventually(within: 5) { (try? server.metric("charrnn_active_streams")) == 0 })
            let characters = try server.metric("charrnn_generated_characters_total") ?? 0
            #expect(characters < 10_000_000, "the stream stopped")
            Thread.sleep(forTimeInterval: 0.2)
            #expect(try server.metric("charrnn_generated_characters_total") == characters, "and stays stopped")
        }

        @Test("SIGTERM refuses new requests, lets short ones finish, ends long ones after the grace period, and exits 0")
        func sigtermDrains() throws {
            // The grace period leaves time to see the refusals on a busy machine.
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--shutdown-grace", "3", "--max-length", "10000000"])
            let long = Thread.detachedResult {
                try? server.request("POST", "/v1/generate", json: #"{"length": 10000000, "stream": true}"#)
            }
            #expect(eventually { (try? server.metric("charrnn_active_streams")) == 1 })
            kill(server.process.processIdentifier, SIGTERM)
            #expect(eventually { (try? server.request("GET", "/health").status) == 503 })
            let refused = try server.request("POST", "/v1/generate", json: #"{"length": 5}"#)
            #expect(refused.status == 503 && (refused.json["error"] as? String)?.contains("shutting down") == true)
            let ended = try #require(long.wait(seconds: 30) ?? nil)
            #expect(ended.events.last?.name == "end")
            #expect(ended.events.last?.data["finish_reason"] as? String == "shutdown")
            #expect(server.stop(timeout: 30) == 0)
            #expect(server.remainingOutput.contains("stopped"))
        }

        @Test("GET /v1/model is charrnn inspect --json with the server's limits; /metrics is Prometheus text; the OpenAPI document lists the routes")
        func describingRoutes() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--max-length", "777", "--prime-cache-bytes", "100000"])
            defer { server.stop() }
            var model = try server.request("GET", "/v1/model").json
            let limits = try #require(model.removeValue(forKey: "server") as? [String: Any])
            #expect(limits["max_length"] as? Int == 777 && limits["prime_cache_bytes"] as? Int == 100_000)
            let inspect = try CLI.run(["inspect", Self.run.checkpoint, "--json"])
            let inspected = try #require(try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])
            func canonical(_ object: [String: Any]) throws -> String {
                String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
            }
            #expect(try canonical(model) == canonical(inspected))

            _ = try server.request("POST", "/v1/generate", json: #"{"length": 30, "seed": 2}"#)
            let metrics = try server.request("GET", "/metrics")
            #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
            for name in [
                "charrnn_http_requests_total{route=\"/v1/generate\",status=\"200\"} 1", "charrnn_generated_characters_total 30",
                "charrnn_active_streams 0", "charrnn_queued_requests 0", "charrnn_time_to_first_character_seconds_count 1",
                "charrnn_generate_duration_seconds_count 1", "charrnn_prime_characters_fed_total 4", "charrnn_prime_cache_entries 0",
                "charrnn_prime_cache_hits_total 0",
            ] {
                #expect(metrics.text.contains(name), "\(name)")
            }

            let document = try server.request("GET", "/openapi.json").json
            #expect((document["openapi"] as? String)?.hasPrefix("3.") == true)
            let paths = try #require(document["paths"] as? [String: [String: Any]])
            #expect(
                Set(paths.keys) == [
                    "/v1/generate", "/v1/completions", "/v1/models", "/v1/models/{id}", "/v1/model", "/health", "/metrics", "/openapi.json", "/",
                ])
            let modelName = URL(fileURLWithPath: Self.run.checkpoint).deletingLastPathComponent().lastPathComponent
            let bodies = ["/v1/generate": #"{"length": 1}"#, "/v1/completions": #"{"prompt": "the", "max_tokens": 1}"#]
            for (path, operations) in paths {
                for method in operations.keys {
                    let reply = try server.request(
                        method.uppercased(), path.replacingOccurrences(of: "{id}", with: modelName), json: method == "post" ? bodies[path] : nil)
                    #expect(reply.status == 200, "\(method) \(path)")
                }
            }
            #expect(try server.request("GET", "/").text.contains("CharRNN playground"))
            #expect(try server.request("GET", "/playground.js").headers["content-type"]?.hasPrefix("text/javascript") == true)
        }

        @Test("Bad flags and a missing checkpoint get one error line and a non-zero exit")
        func badFlags() throws {
            let cases: [([String], String)] = [
                (["--checkpoint", "/nonexistent/model.safetensors"], "cannot load --checkpoint '/nonexistent/model.safetensors'"),
                (["--checkpoint", Self.run.checkpoint, "--max-streams", "0"], "--max-streams must be between 1 and 65535"),
                (["--checkpoint", Self.run.checkpoint, "--timeout", "0"], "--timeout must be a positive number"),
                (["--checkpoint", Self.run.checkpoint, "--api-key", ""], "the API key is empty"),
                (["--checkpoint", Self.run.checkpoint, "--cors-origin", "ok.example/page"], "--cors-origin must be an origin such as"),
                (["--checkpoint", Self.run.checkpoint, "--max-prime", "0"], "--max-prime must be at least 1 (got 0)"),
                (["--checkpoint", Self.run.checkpoint, "--stream-interval=-1"], "--stream-interval must be between 0 and 10000 milliseconds"),
                (["--checkpoint", Self.run.checkpoint, "--stream-interval", "nan"], "--stream-interval must be between 0 and 10000 milliseconds"),
            ]
            for (arguments, message) in cases {
                let result = try CLI.run(arguments, binary: "charrnn-server")
                #expect(result.status != 0)
                #expect(result.stderr.hasPrefix("charrnn-server: error: ") && result.stderr.contains(message), "\(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            }
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint])
            defer { server.stop() }
            let taken = try CLI.run(["--checkpoint", Self.run.checkpoint, "--port", String(server.port)], binary: "charrnn-server")
            #expect(taken.status != 0)
            #expect(taken.stderr == "charrnn-server: error: cannot serve on 127.0.0.1:\(server.port): address already in use\n", "\(taken.stderr)")
            let unknownHost = try CLI.run(
                ["--checkpoint", Self.run.checkpoint, "--host", "no.such.host.invalid", "--port", "0"], binary: "charrnn-server")
            #expect(unknownHost.status != 0 && unknownHost.stderr.contains("'no.such.host.invalid' is not an address"), "\(unknownHost.stderr)")
        }
    #else
        @Test("A build without the Server trait says so in one line")
        func buildWithoutServerRefuses() throws {
            let result = try CLI.run(["--checkpoint", "x"], binary: "charrnn-server")
            #expect(result.status != 0)
            #expect(result.stderr.contains("built without the Server trait"))
        }
    #endif
}

/// A JSON number as an integer.
func integer(_ value: Any) -> Int? {
    switch value {
    case let value as Int: return value
    case let value as UInt64: return Int(exactly: value)
    case let value as Double: return Int(exactly: value)
    case let value as NSNumber: return value.intValue
    default: return nil
    }
}

/// Polls `condition` for up to `seconds`.
func eventually(within seconds: TimeInterval = 10, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.01)
    }
    return condition()
}

/// A value computed on its own thread.
final class ThreadResult<Value: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var value: Value?

    init(_ work: @escaping @Sendable () -> Value) {
        Thread.detachNewThread { [self] in
            value = work()
            done.signal()
        }
    }

    /// The value, or nil if it took longer than `seconds`.
    func wait(seconds: TimeInterval) -> Value? {
        done.wait(timeout: .now() + seconds) == .success ? value : nil
    }
}

extension Thread {
    static func detachedResult<Value: Sendable>(_ work: @escaping @Sendable () -> Value) -> ThreadResult<Value> {
        ThreadResult(work)
    }
}
