#if Server
    import CharRNN
    import CharRNNServer
    import Foundation
    import HummingbirdTesting
    import Testing

    /// Protects `POST /v1/trace`: its mean surprise is the evaluation loss,
    /// its columns are the library's trace, and every bad or oversized
    /// request gets its status with the field named. Over a loopback socket
    /// (`.live`): a trace watches its connection.
    @Suite("Trace route")
    struct TraceRouteTests {
        static let text = "the «kite» flew, and the kite fell.\nлик ёж 🙂"

        @Test("/v1/trace's mean surprise is the evaluation loss of the text, and its columns are the library's trace")
        func traceMatchesTheLibrary() async throws {
            let model = TestModel.shared
            let tokens = try model.generator.vocabulary.encode(Self.text.unicodeScalars)
            let evaluation = try Evaluation.wholeText(of: model.generator.model, tokens: tokens)
            var trace = try TextTrace(generator: model.generator, tokens: tokens, options: TraceOptions(units: .listed([4, 40]), top: 3))
            var characters: [TracedCharacter] = []
            while let character = try trace.next() { characters.append(character) }
            let expected = characters
            try await withServer(.live) { client, _ in
                let reply = try await client.send(
                    .post, "/v1/trace", json: jsonBody(["text": Self.text, "units": [40, 4], "top": 3, "cell_state": true]))
                #expect(reply.status == 200, "\(reply.text)")
                let json = reply.json
                let mean = try #require(json["mean_surprise"] as? Double)
                #expect(abs(mean - evaluation.meanLoss) <= 1e-5 * evaluation.meanLoss, "\(mean) against eval's \(evaluation.meanLoss)")
                #expect(json["predictions"] as? Int == evaluation.predictions)
                #expect((json["characters"] as? [String])?.joined() == Self.text)
                #expect(json["units"] as? [Int] == [4, 40] && json["layers"] as? Int == 2)
                let surprise = try #require(json["surprise"] as? [Any])
                #expect(surprise.count == expected.count && surprise[0] is NSNull)
                #expect(zip(surprise.dropFirst(), expected.dropFirst()).allSatisfy { abs(($0 as? Double ?? -1) - ($1.surprise ?? 1)) <= 1e-12 })
                let top = try #require(json["top"] as? [[[String: Any]]])
                #expect(top[0].isEmpty && top.dropFirst().allSatisfy { $0.count == 3 })
                #expect(top[7].map { $0["character"] as? String ?? "" } == expected[7].top.map { String($0.character) })
                // [layer][unit][position], four decimals.
                let h = try #require(json["h"] as? [[[Double]]])
                let c = try #require(json["c"] as? [[[Double]]])
                for layer in 0..<2 {
                    for unit in 0..<2 {
                        #expect(h[layer][unit].count == expected.count && c[layer][unit].count == expected.count)
                        #expect(zip(h[layer][unit], expected).allSatisfy { abs($0 - Double($1.hidden[layer][unit])) <= 5.1e-5 })
                        #expect(zip(c[layer][unit], expected).allSatisfy { abs($0 - Double($1.cell[layer][unit])) <= 5.1e-5 })
                    }
                }
                let plain = try await client.send(.post, "/v1/trace", json: jsonBody(["text": "the kite"]))
                #expect(plain.status == 200 && plain.json["h"] == nil && plain.json["c"] == nil, "no units unless asked")
                let all = try await client.send(.post, "/v1/trace", json: jsonBody(["text": "the kite", "units": "all"]))
                #expect((all.json["h"] as? [[[Double]]]).map { $0.count == 2 && $0.allSatisfy { $0.count == 48 } } == true)
            }
        }

        @Test("Each bad or oversized trace request gets its status and a message naming the field")
        func badTraceRequestsAreAnswered() async throws {
            let settings = edited(ServerSettings()) {
                $0.traceLimits.maxCharacters = 100
                $0.traceLimits.maxUnits = 60
            }
            try await withServer(.live, settings: settings) { client, _ in
                let cases: [(body: String, status: Int, field: String?, message: String)] = [
                    (#"{"units": [1]}"#, 400, "text", "text is required"),
                    (#"{"text": ""}"#, 400, "text", "text must have at least one character"),
                    (#"{"text": 5}"#, 400, "text", "text must be a string"),
                    (#"{"text": "\ud800"}"#, 400, "text", "text must be valid Unicode text"),
                    (#"{"text": "ab", "units": [1, 48]}"#, 400, "units", "units must be in 0-47 (got 48)"),
                    (#"{"text": "ab", "units": [1.5]}"#, 400, "units", "units must be a list of unit indices"),
                    (#"{"text": "ab", "units": "some"}"#, 400, "units", "units must be a list of unit indices, or \"all\""),
                    (#"{"text": "ab", "units": "all"}"#, 400, "units", "units × layers may be at most 60 on this server (got 48 × 2)"),
                    (#"{"text": "ab", "top": 1000}"#, 400, "top", "top must be in 0-"),
                    (#"{"text": "ab", "top": -1}"#, 400, "top", "top must be in 0-"),
                    (#"{"text": "ab", "cell_state": 1}"#, 400, "cell_state", "cell_state must be true or false"),
                    (#"{"text": "ab", "unit": [1]}"#, 400, "unit", "unknown field 'unit'"),
                    (#"{"text": "the QZ"}"#, 422, "text", "lacks: 'Q' (U+0051), 'Z' (U+005A)"),
                    (
                        jsonBody(["text": String(repeating: "a", count: 101)]), 413, "text",
                        "the text has 101 characters; the most this server traces is 100"
                    ),
                    ("[1]", 400, nil, "must be a JSON object"),
                ]
                for bad in cases {
                    let reply = try await client.send(.post, "/v1/trace", json: bad.body)
                    #expect(reply.status == bad.status, "\(bad.body.prefix(60)): \(reply.text)")
                    #expect((reply.json["error"] as? String)?.contains(bad.message) == true, "\(bad.body.prefix(60)): \(reply.text)")
                    #expect(reply.json["field"] as? String == bad.field, "\(bad.body.prefix(60))")
                }
                let within = try await client.send(
                    .post, "/v1/trace", json: jsonBody(["text": String(repeating: "a", count: 100), "units": Array(0..<30)]))
                #expect(within.status == 200, "the limits themselves are allowed: \(within.text)")
            }
        }

        @Test("A trace that outlasts the request timeout is ended with 504")
        func longTraceTimesOut() async throws {
            let settings = edited(ServerSettings()) {
                $0.requestTimeout = .milliseconds(20)
                $0.traceLimits.maxCharacters = 1_000_000
            }
            try await withServer(.live, settings: settings) { client, _ in
                // Far more than 20 ms of work: every unit, every alternative, 200,000 characters.
                let text = String(repeating: "the kite flew. ", count: 13_334)
                let reply = try await client.send(.post, "/v1/trace", json: jsonBody(["text": text, "top": 10]))
                #expect(reply.status == 504, "\(reply.text.prefix(200))")
                #expect((reply.json["error"] as? String)?.contains("the trace took longer than") == true)
            }
        }
    }
#endif
