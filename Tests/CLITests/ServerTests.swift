import CCharRNN
import Foundation
import Synchronization
import Testing

/// Protects what needs the `charrnn-server` process: the same text as the
/// `charrnn sample` process, plain and through the completions API; long
/// primes on a trained model; connections closed and reset on the socket;
/// the key from the environment; SIGTERM; flags. The routes themselves are
/// tested in process (Tests/ServerTests).
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
        @Test(
            "With --precision bf16 the server answers charrnn sample --precision bf16's texts, the same on either kernel, with log-probabilities that are not fp32's"
        )
        func bf16AnswerEqualsSample() throws {
            // Where the CPU has no AVX512_BF16 the tools refuse bf16 unless the portable kernel is asked for.
            let cpuHasBF16 = charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue)
            let environment = cpuHasBF16 ? [:] : ["CHARRNN_BF16": "portable"]
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--precision", "bf16"], environment: environment)
            defer { server.stop() }
            #expect(server.listeningLine.contains("bf16 products"))
            func sample(_ seed: UInt64, _ flags: [String], environment: [String: String]) throws -> String {
                let result = try CLI.run(
                    ["sample", "--checkpoint", Self.run.checkpoint, "--prime", "«Ёлки", "--length", "300", "--seed", String(seed)] + flags,
                    extraEnvironment: environment)
                #expect(result.status == 0, "\(result.stderr)")
                return result.stdout
            }
            for seed: UInt64 in [31, 32] {
                let reply = try server.request("POST", "/v1/generate", json: Self.body(["prime": "«Ёлки", "length": 300, "seed": seed]))
                #expect(reply.status == 200, "\(reply.text)")
                let text = try #require(reply.json["text"] as? String)
                #expect(text == (try sample(seed, ["--precision", "bf16"], environment: environment)), "seed \(seed)")
                #expect(
                    text == (try sample(seed, ["--precision", "bf16"], environment: ["CHARRNN_BF16": "portable"])), "portable kernel, seed \(seed)")
            }
            // The texts may agree; the log-probabilities cannot.
            let narrow = try sample(31, ["--precision", "bf16", "--logprobs", "0", "--length", "5"], environment: environment)
            let wide = try sample(31, ["--logprobs", "0", "--length", "5"], environment: [:])
            #expect(narrow.split(separator: "\n").count == 6 && narrow != wide, "the products really ran in bf16")
            let unknown = try CLI.run(["sample", "--checkpoint", Self.run.checkpoint, "--precision", "fp64"])
            #expect(unknown.status != 0 && unknown.stderr == "charrnn: error: --precision must be fp32 or bf16 (got 'fp64')\n")
        }

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

        @Test("A client that resets during a long trace frees its place within a second, and the trace stops")
        func resetDuringTraceFreesThePlace() throws {
            let server = try ServerProcess(["--checkpoint", Self.wide.checkpoint])
            defer { server.stop() }
            let text = String(repeating: "The cat sat on the mat, and the dog lay by the door.\n", count: 188)  // 9,964 characters
            let socket = try HTTP.connect(port: server.port)
            try HTTP.send(
                socket, method: "POST", path: "/v1/trace", body: Data(Self.body(["text": text, "units": "all", "top": 5]).utf8),
                headers: ["Content-Type": "application/json"])
            #expect(eventually(within: 10) { ((try? server.metric("charrnn_traced_characters_total")) ?? 0) > 0 })
            #expect(try server.metric("charrnn_active_traces") == 1)
            var linger = linger(l_onoff: 1, l_linger: 0)  // close with a reset
            setsockopt(socket, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            close(socket)
            let reset = Date()
            #expect(eventually(within: 10) { (try? server.metric("charrnn_active_traces")) == 0 })
            #expect(Date().timeIntervalSince(reset) < 1, "the place was freed \(Date().timeIntervalSince(reset)) s after the reset")
            let traced = try server.metric("charrnn_traced_characters_total") ?? 0
            #expect(traced < Double(text.count), "the trace was not run to its end")
            Thread.sleep(forTimeInterval: 0.2)
            #expect(try server.metric("charrnn_traced_characters_total") == traced, "and stays stopped")
            let metrics = try server.request("GET", "/metrics").text
            #expect(metrics.contains(#"charrnn_client_disconnects_total{route="/v1/trace"} 1"#), "\(metrics)")
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

        @Test("A client that closes its connection mid-answer, whole or streamed, frees its stream at once and is counted as a disconnect")
        func disconnectFreesStream() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint, "--max-length", "10000000"])
            defer { server.stop() }
            for stream in [false, true] {
                let socket = try HTTP.connect(port: server.port)
                let body = Data(#"{"length": 10000000, "stream": \#(stream)}"#.utf8)
                try HTTP.send(socket, method: "POST", path: "/v1/generate", body: body, headers: [:])
                #expect(eventually(within: 5) { (try? server.metric("charrnn_active_streams")) == 1 }, "stream \(stream)")
                if stream {  // read what came, so the close is a FIN, not a reset
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    var received = 0
                    while received < 600 {
                        let count = recv(socket, &buffer, buffer.count, 0)
                        guard count > 0 else { break }
                        received += count
                    }
                    #expect(received >= 600, "events arrived")
                }
                close(socket)
                // A whole answer writes nothing before its end: the end of the client's input is what shows it gone.
                #expect(eventually(within: 5) { (try? server.metric("charrnn_active_streams")) == 0 }, "stream \(stream)")
            }
            let characters = try server.metric("charrnn_generated_characters_total") ?? 0
            Thread.sleep(forTimeInterval: 0.2)
            #expect(try server.metric("charrnn_generated_characters_total") == characters, "the streams stay stopped")
            let metrics = try server.request("GET", "/metrics").text
            #expect(metrics.contains(#"charrnn_client_disconnects_total{route="/v1/generate"} 2"#), "\(metrics)")
        }

        @Test("CHARRNN_API_KEY sets the key when --api-key is not given, and the start line says a key is required")
        func apiKeyFromTheEnvironment() throws {
            let server = try ServerProcess(["--checkpoint", Self.run.checkpoint], environment: ["CHARRNN_API_KEY": "s3cret"])
            defer { server.stop() }
            #expect(server.listeningLine.contains("API key required"))
            #expect(try server.request("GET", "/v1/model").status == 401)
            #expect(try server.request("GET", "/v1/model", headers: ["Authorization": "Bearer s3cret"]).status == 200)
            #expect(try server.request("GET", "/health").status == 200)
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
