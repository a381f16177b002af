#if Server
    import CharRNN
    import CharRNNServer
    import Foundation
    import HTTPTypes
    import Hummingbird
    import HummingbirdTesting
    import NIOCore
    import Testing

    /// A model, its checkpoint file and a generator over it, made once for
    /// the in-process server tests: untrained, so its scores are near
    /// uniform and a draw changes with the smallest difference in the
    /// arithmetic or the options.
    ///
    /// Unchecked: nothing in it changes after it is made, and the generator
    /// only reads the model (each text gets a session of its own).
    struct TestModel: @unchecked Sendable {
        static let shared: TestModel = {
            do { return try TestModel() } catch { fatalError("the test model could not be made: \(error)") }
        }()

        /// The alphabet the model knows (Cyrillic, a guillemet and an emoji among it).
        static let alphabet = "abcdefghijklmnopqrstuvwxyz .,;:!?\nTЁлкиёжд«»🙂"

        let checkpoint: Checkpoint
        let url: URL
        let generator: TextGenerator

        init() throws {
            let vocabulary = try Vocabulary(scalars: Array(Self.alphabet.unicodeScalars))
            let configuration = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 48, layerCount: 2, cell: .lstm)
            let model = try Model(configuration: configuration, seed: 11, purpose: .inference)
            checkpoint = Checkpoint(model: model, vocabulary: vocabulary)
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("charrnn-server-tests-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            url = directory.appendingPathComponent("model.safetensors")
            try checkpoint.write(to: url)
            generator = try TextGenerator(checkpoint: checkpoint)
        }

        /// The library's text for these options: what `charrnn sample` prints
        /// (the CLI's tests hold it to that).
        func text(_ prime: String, length: Int, seed: UInt64, _ edit: (inout SamplingOptions) -> Void = { _ in }) throws -> String {
            var options = SamplingOptions()
            options.seed = seed
            options.topK = SamplingOptions.notebookTopK(vocabularySize: generator.vocabulary.count)
            edit(&options)
            return try generator.generate(prime: prime, length: length, options: options)
        }
    }

    /// Runs `test` against the application `charrnn-server` runs
    /// (`buildApplication`), in this process: `.router` sends requests
    /// straight to the routes; `.live` over a loopback socket, for what needs
    /// a connection (generation watches it). The scheduler is shut down after.
    func withServer<Value: Sendable>(
        _ framework: TestingSetup = .router, limits: GenerationScheduler.Limits = .init(), settings: ServerSettings = .init(),
        _ test: @Sendable (any TestClientProtocol, Server) async throws -> Value
    ) async throws -> Value {
        let model = TestModel.shared
        var settings = settings
        settings.modelName = "test-model"
        let scheduler = try GenerationScheduler(generator: model.generator, limits: limits)
        let server = Server(scheduler: scheduler, generator: model.generator, checkpoint: model.checkpoint, url: model.url, settings: settings)
        let app = buildApplication(server)
        do {
            let value = try await app.test(framework) { client in try await test(client, server) }
            await scheduler.shutDown(gracePeriod: .zero)
            return value
        } catch {
            await scheduler.shutDown(gracePeriod: .zero)
            throw error
        }
    }

    /// An answer's parts as a test reads them.
    struct Reply {
        let status: Int
        let headers: HTTPFields
        let text: String

        init(_ response: TestResponse) {
            status = Int(response.status.code)
            headers = response.headers
            text = String(buffer: response.body)
        }

        init(_ response: TestClient.Response) {
            status = Int(response.head.status.code)
            headers = response.head.headerFields
            text = response.body.map { String(buffer: $0) } ?? ""
        }

        /// The body as a JSON object (empty when it is not one).
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:] }

        /// The body as Server-Sent Events: each event's name ("message" when
        /// unnamed) and its data as a JSON object.
        var events: [(name: String, data: [String: Any])] {
            text.components(separatedBy: "\n\n").compactMap { block in
                var name = "message"
                var data = ""
                for line in block.split(separator: "\n") {
                    if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") { data += line.dropFirst(6) }
                }
                guard !data.isEmpty else { return nil }
                let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]) ?? ["raw": data]
                return (name, object)
            }
        }
    }

    extension TestClientProtocol {
        /// Sends `body` (JSON unless the headers say otherwise) and returns the answer.
        func send(
            _ method: HTTPRequest.Method, _ path: String, json body: String? = nil, headers: [String: String] = [:]
        ) async throws -> Reply {
            Reply(
                try await execute(uri: path, method: method, headers: fields(headers, json: body != nil), body: body.map { ByteBuffer(string: $0) }))
        }

        /// Sends as `send` does, on a connection of its own: the test
        /// client's one connection answers a request at a time, in order.
        func sendApart(_ method: HTTPRequest.Method, _ path: String, json body: String? = nil) async throws -> Reply {
            let port = try #require(port, "a live server has a port")
            return try await TestClient.withClient(host: "localhost", port: port, configuration: .init(timeout: .seconds(120))) { client in
                let request = TestClient.Request(
                    path, method: method, authority: "localhost", headers: fields([:], json: body != nil), body: body.map { ByteBuffer(string: $0) })
                return Reply(try await client.execute(request))
            }
        }

        /// Sends raw bytes as the body.
        func send(_ method: HTTPRequest.Method, _ path: String, bytes: Data, headers: HTTPFields = [.contentType: "application/json"])
            async throws -> Reply
        {
            Reply(try await execute(uri: path, method: method, headers: headers, body: ByteBuffer(bytes: bytes)))
        }

        /// A value of the server's /metrics, by its exact name and labels.
        func metric(apart: Bool = false, _ name: String) async throws -> Double? {
            let text = try await (apart ? sendApart(.get, "/metrics") : send(.get, "/metrics")).text
            for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
                return Double(line.dropFirst(name.count + 1))
            }
            return nil
        }
    }

    /// `headers` as HTTP fields, with the JSON content type when there is a body.
    func fields(_ headers: [String: String], json: Bool) -> HTTPFields {
        var fields: HTTPFields = json ? [.contentType: "application/json"] : [:]
        for (name, value) in headers {
            guard let field = HTTPField.Name(name) else { continue }
            fields[field] = value
        }
        return fields
    }

    /// `value` changed by `edit`: limits or settings written where they are passed.
    func edited<Value>(_ value: Value, _ edit: (inout Value) -> Void) -> Value {
        var value = value
        edit(&value)
        return value
    }

    /// A JSON object's text.
    func jsonBody(_ fields: [String: Any]) -> String {
        (try? JSONSerialization.data(withJSONObject: fields)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// A JSON number as an integer.
    func integer(_ value: Any) -> Int? {
        if let value = value as? Int { return value }
        if let value = value as? NSNumber { return value.intValue }
        return nil
    }

    /// Polls `condition` for up to `seconds`.
    func eventually(within seconds: Double = 10, _ condition: () async throws -> Bool) async -> Bool {
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            if (try? await condition()) == true { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return (try? await condition()) == true
    }
#endif
