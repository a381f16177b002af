#if Server
    import CharRNN
    import CharRNNServer
    import CharRNNTools
    import Foundation
    import HTTPTypes
    import HummingbirdTesting
    import Testing

    /// Protects the server's routes as an app meets them, in process through
    /// the application `charrnn-server` runs: every bad input answered with
    /// its status and the field named; authentication, JSON-only bodies and
    /// cross-origin rules; the describing routes. Requests that generate go
    /// over a loopback socket (`.live`): the server watches the connection.
    @Suite("Server routes")
    struct RouteTests {
        @Test("Each bad input to /v1/generate gets its status and a message naming what is wrong")
        func badInputIsAnswered() async throws {
            try await withServer(limits: edited(.init()) { $0.maxLength = 5000 }, settings: edited(.init()) { $0.maxBodyBytes = 4096 }) { client, _ in
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
                    (#"{"temperature": 1e39}"#, 400, "temperature", "temperature must be at most 3.4028235e+38 (got 1e+39)"),
                    (#"{"length": -3}"#, 400, "length", "length must be 0 or more"),
                    (#"{"length": 5001}"#, 400, "length", "length must be at most 5000"),
                    (#"{"prime": ""}"#, 400, "prime", "prime must have at least one character"),
                    (#"{"prime": "\ud800"}"#, 400, "prime", "prime must be valid Unicode text: it has invalid UTF-8 or a lone surrogate"),
                    (#"{"stop": 3}"#, 400, "stop", "stop must be a string or a list of strings"),
                    (#"{"stop": ["a", 3]}"#, 400, "stop", "stop must be a string or a list of strings"),
                    (#"{"stop": ["a", ""]}"#, 400, "stop", "stop must be strings of at least one character"),
                    (#"{"stop": ["\udc00"]}"#, 400, "stop", "stop must be valid Unicode text"),
                    (jsonBody(["stop": Array(repeating: "a", count: 17)]), 400, "stop", "stop may have at most 16 strings (got 17)"),
                    (jsonBody(["stop": String(repeating: "a", count: 257)]), 400, "stop", "at most 256 characters (got 257)"),
                    (#"{"logprobs": 1000}"#, 400, "logprobs", "logprobs must be between 0 and the vocabulary size"),
                    (#"{"logprobs": true}"#, 400, "logprobs", "logprobs must be a whole number"),
                    (#"{"prime": "the QZ€"}"#, 422, "prime", "lacks: 'Q' (U+0051), 'Z' (U+005A)"),
                    (jsonBody(["prime": String(repeating: "the ", count: 2000)]), 413, nil, "the most this server takes is 4096"),
                ]
                for bad in cases {
                    let reply = try await client.send(.post, "/v1/generate", json: bad.body)
                    #expect(reply.status == bad.status, "\(bad.body.prefix(60)): \(reply.text)")
                    #expect((reply.json["error"] as? String)?.contains(bad.message) == true, "\(bad.body.prefix(60)): \(reply.text)")
                    #expect(reply.json["field"] as? String == bad.field, "\(bad.body.prefix(60))")
                }
                let invalidUTF8 = Data(#"{"prime": "a"#.utf8) + Data([0xFF]) + Data(#""}"#.utf8)
                let unreadable = try await client.send(.post, "/v1/generate", bytes: invalidUTF8)
                #expect(unreadable.status == 400 && (unreadable.json["error"] as? String)?.contains("prime must be valid Unicode text") == true)
                let unknown = try await client.send(.post, "/v1/generate", json: #"{"prime": "the QZ€"}"#)
                #expect(unknown.json["unknown_characters"] as? [String] == ["Q", "Z", "€"])
                #expect(try await client.send(.get, "/no-such-page").status == 404)
                let wrongMethod = try await client.send(.get, "/v1/generate")
                #expect([404, 405].contains(wrongMethod.status) && wrongMethod.json["error"] != nil)
                #expect(try await client.send(.get, "/health").status == 200)
            }
        }

        @Test("Completions errors take OpenAI's shape, naming the parameter as the API spells it")
        func completionsErrorsInOpenAIShape() async throws {
            let settings = edited(ServerSettings()) { $0.traceLimits.maxCharacters = 16 }
            try await withServer(.live, limits: edited(.init()) { $0.maxLength = 500 }, settings: settings) { client, _ in
                let cases: [(body: String, status: Int, param: String?, message: String)] = [
                    (#"{"prompt": "the", "max_tokens": -1}"#, 400, "max_tokens", "max_tokens must be 0 or more"),
                    (#"{"prompt": "the", "max_tokens": 501}"#, 400, "max_tokens", "max_tokens must be at most 500"),
                    (#"{"prompt": "the QZ"}"#, 400, "prompt", "the prompt has characters the model's vocabulary lacks: 'Q'"),
                    (#"{"prompt": ""}"#, 400, "prompt", "prompt must have at least one character"),
                    (#"{"prompt": [1, 2]}"#, 400, "prompt", "prompt must be a string or a list of strings"),
                    (#"{"max_tokens": 5}"#, 400, "prompt", "prompt is required"),
                    (#"{"prompt": "the", "model": "gpt-4"}"#, 404, "model", "the model 'gpt-4' does not exist; this server serves 'test-model'"),
                    (#"{"prompt": "the", "temperature": -1}"#, 400, "temperature", "temperature must be 0 or more"),
                    (#"{"prompt": "the", "n": 0}"#, 400, "n", "n must be at least 1"),
                    (#"{"prompt": "the", "n": 129}"#, 400, "n", "must be at most 128"),
                    (#"{"prompt": "the", "frequency_penalty": 0.5}"#, 400, "frequency_penalty", "not supported"),
                    (#"{"prompt": "the", "logit_bias": {"50256": -100}}"#, 400, "logit_bias", "not supported"),
                    (
                        #"{"prompt": ["the", "the kite, the kite"], "echo": true, "logprobs": 1}"#, 413, "prompt",
                        "prompt has 18 characters; with echo and logprobs a prompt is scored a character at a time, at most 16"
                    ),
                    (#"{"prompt": "the", "bogus": 1}"#, 400, "bogus", "unrecognized request argument supplied: bogus"),
                    ("null", 400, nil, "the body must be a JSON object"),
                ]
                for bad in cases {
                    let reply = try await client.send(.post, "/v1/completions", json: bad.body)
                    let error = try #require(reply.json["error"] as? [String: Any], "\(bad.body): \(reply.text)")
                    #expect(reply.status == bad.status, "\(bad.body): \(reply.text)")
                    #expect((error["message"] as? String)?.contains(bad.message) == true, "\(bad.body): \(reply.text)")
                    #expect(error["param"] as? String == bad.param, "\(bad.body): \(reply.text)")
                    #expect(error["type"] as? String == "invalid_request_error", "\(bad.body)")
                }
                // Neutral values of what the server does not do are accepted.
                let neutral = try await client.send(
                    .post, "/v1/completions",
                    json:
                        #"{"model": "test-model", "prompt": "the", "max_tokens": 3, "presence_penalty": 0, "best_of": 1, "logit_bias": {}, "suffix": null}"#
                )
                #expect(neutral.status == 200, "\(neutral.text)")
                #expect(try await client.send(.get, "/v1/models/test-model").json["id"] as? String == "test-model")
                let missing = try await client.send(.get, "/v1/models/other")
                #expect(missing.status == 404 && (missing.json["error"] as? [String: Any])?["code"] as? String == "model_not_found")
            }
        }

        @Test("With an API key every route but /health and the playground needs the bearer token, in any case of the scheme")
        func apiKeyIsRequired() async throws {
            try await withServer(settings: edited(.init()) { $0.apiKey = "s3cret" }) { client, _ in
                for (method, path) in [(HTTPRequest.Method.post, "/v1/generate"), (.get, "/v1/model"), (.get, "/metrics"), (.get, "/openapi.json")] {
                    let body = method == .post ? "{}" : nil
                    let none = try await client.send(method, path, json: body)
                    #expect(none.status == 401 && none.headers[.wwwAuthenticate] == "Bearer", "\(path)")
                    let wrong = try await client.send(method, path, json: body, headers: ["Authorization": "Bearer nope"])
                    #expect(wrong.status == 401 && (wrong.json["error"] as? String)?.contains("wrong") == true, "\(path)")
                }
                #expect(try await client.send(.get, "/health").status == 200)
                #expect(try await client.send(.get, "/").status == 200)
                // The scheme's name is case-insensitive (RFC 7235).
                for scheme in ["Bearer", "bearer", "BEARER", "Bearer ", "bEaReR"] {
                    let reply = try await client.send(.get, "/v1/model", headers: ["Authorization": "\(scheme) s3cret"])
                    #expect(reply.status == 200, "'\(scheme)': \(reply.text)")
                }
            }
        }

        @Test("POST bodies must be JSON, and pages of other origins are served only when allowed, after a preflight")
        func bodiesAndOrigins() async throws {
            try await withServer(settings: edited(.init()) { $0.corsOrigins = ["https://ok.example"] }) { client, _ in
                // A page of any origin can POST text/plain or a form without a preflight; those bodies are refused.
                for type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
                    for path in ["/v1/generate", "/v1/completions"] {
                        let reply = try await client.send(.post, path, json: #"{"prompt": "the"}"#, headers: ["Content-Type": type])
                        #expect(reply.status == 415 && reply.text.contains("application/json"), "\(type) \(path): \(reply.text)")
                    }
                }
                let preflight = [
                    "Origin": "https://ok.example", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                ]
                let allowed = try await client.send(.options, "/v1/generate", headers: preflight)
                #expect(allowed.status == 204)
                #expect(allowed.headers[.accessControlAllowOrigin] == "https://ok.example")
                #expect(allowed.headers[.accessControlAllowHeaders]?.lowercased().contains("authorization") == true)
                #expect(allowed.headers[.accessControlAllowMethods]?.contains("POST") == true)
                let other = try await client.send(
                    .options, "/v1/generate", headers: preflight.merging(["Origin": "https://evil.example"]) { _, b in b })
                #expect(other.status == 403 && other.headers[.accessControlAllowOrigin] == nil)
                let answered = try await client.send(.get, "/v1/model", headers: ["Origin": "https://ok.example"])
                #expect(answered.headers[.accessControlAllowOrigin] == "https://ok.example" && answered.headers[.vary] == "Origin")
                let foreign = try await client.send(.get, "/v1/model", headers: ["Origin": "https://evil.example"])
                #expect(foreign.status == 200 && foreign.headers[.accessControlAllowOrigin] == nil)
            }
        }

        @Test("GET /v1/model describes the checkpoint as charrnn inspect --json does, with the server's limits; the playground's files are served")
        func modelIsDescribed() async throws {
            try await withServer(
                limits: edited(.init()) {
                    $0.maxLength = 777
                    $0.primeCacheBytes = 100_000
                }
            ) { client, _ in
                var model = try await client.send(.get, "/v1/model").json
                let limits = try #require(model.removeValue(forKey: "server") as? [String: Any])
                #expect(limits["max_length"] as? Int == 777 && limits["prime_cache_bytes"] as? Int == 100_000)
                let size = try #require(try FileManager.default.attributesOfItem(atPath: TestModel.shared.url.path)[.size] as? Int)
                let described = JSONValue.describing(TestModel.shared.checkpoint, url: TestModel.shared.url, size: size).line
                let expected = try #require(try JSONSerialization.jsonObject(with: Data(described.utf8)) as? [String: Any])
                func canonical(_ object: [String: Any]) throws -> String {
                    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
                }
                #expect(try canonical(model) == canonical(expected))
                #expect(try await client.send(.get, "/").text.contains("CharRNN playground"))
                #expect(try await client.send(.get, "/playground.js").headers[.contentType]?.hasPrefix("text/javascript") == true)
                #expect(try await client.send(.get, "/explain.js").text.contains("rankUnits"))
                #expect(limits["max_trace_characters"] as? Int == TraceLimits().maxCharacters)
            }
        }

        @Test("Every route in the OpenAPI document answers 200, and /metrics counts what was asked in Prometheus text")
        func documentedRoutesAnswer() async throws {
            try await withServer(.live) { client, _ in
                let document = try await client.send(.get, "/openapi.json").json
                #expect((document["openapi"] as? String)?.hasPrefix("3.") == true)
                let paths = try #require(document["paths"] as? [String: [String: Any]])
                #expect(
                    Set(paths.keys) == [
                        "/v1/generate", "/v1/completions", "/v1/trace", "/v1/models", "/v1/models/{id}", "/v1/model", "/health", "/metrics",
                        "/openapi.json", "/",
                    ])
                let bodies = [
                    "/v1/generate": #"{"length": 30, "seed": 2}"#, "/v1/completions": #"{"prompt": "the", "max_tokens": 1}"#,
                    "/v1/trace": #"{"text": "the kite", "units": [1]}"#,
                ]
                for (path, operations) in paths {
                    for method in operations.keys {
                        let reply = try await client.send(
                            HTTPRequest.Method(method.uppercased())!, path.replacingOccurrences(of: "{id}", with: "test-model"),
                            json: method == "post" ? bodies[path] : nil)
                        #expect(reply.status == 200, "\(method) \(path): \(reply.text)")
                    }
                }
                let metrics = try await client.send(.get, "/metrics")
                #expect(metrics.headers[.contentType]?.hasPrefix("text/plain") == true)
                for line in [
                    "charrnn_http_requests_total{route=\"/v1/generate\",status=\"200\"} 1", "charrnn_generated_characters_total 31",
                    "charrnn_active_streams 0", "charrnn_queued_requests 0", "charrnn_time_to_first_character_seconds_count 2",
                    "charrnn_generate_duration_seconds_count 2", "charrnn_prime_cache_hits_total 0",
                ] {
                    #expect(metrics.text.contains(line), "\(line)")
                }
            }
        }
    }
#endif
