import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

#if Server
    import CharRNNServer
    import Hummingbird
    import Logging
    import NIOCore
    import ServiceLifecycle
#endif

/// `charrnn-server`: a trained model behind an HTTP API and a playground page.
@main
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "charrnn-server",
        abstract: "Serve a trained model over HTTP: a JSON API with streaming, and a playground page at /.",
        discussion: """
            POST /v1/generate takes {"prime", "length", "temperature", "top_k", "top_p", "seed", \
            "stream", "stop", "logprobs"}, each optional with charrnn sample's defaults, and answers with the text \
            charrnn sample prints for the same seed (or Server-Sent Events with "stream": true). \
            POST /v1/completions and GET /v1/models speak OpenAI's completions API (a token is a \
            character), so OpenAI's clients can use the model. \
            Concurrent requests are stepped together through the model (continuous batching). \
            GET /v1/model, /health, /metrics (Prometheus) and /openapi.json describe the rest. \
            SIGTERM or Ctrl-C stops taking requests, lets those in flight finish for up to \
            --shutdown-grace seconds, ends the rest, and exits.
            """,
        version: CharRNNVersion.current)

    @Option(name: .long, help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var checkpoint: String

    @Option(name: .long, help: "The address to listen on; 0.0.0.0 for every interface.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "The port to listen on (0: any free port, printed at start).")
    var port = 8080

    @Option(
        name: .long,
        help: "Require Authorization: Bearer KEY on every route but /health and the playground's files. (default: $CHARRNN_API_KEY, else none)")
    var apiKey: String?

    @Option(
        name: .long,
        help:
            "The model's name in the OpenAI completions API (model, GET /v1/models). (default: the run directory's name, else the checkpoint file's)")
    var modelName: String?

    @Option(
        name: .long,
        help: "Let pages of this origin (e.g. https://example.org; * for any) call the server from a browser; repeat for several.")
    var corsOrigin: [String] = []

    @Option(name: .long, help: "Requests stepped together at most; more wait in the queue.")
    var maxStreams = 64

    @Option(name: .long, help: "Requests waiting at most; beyond, 503 with Retry-After.")
    var maxQueued = 256

    @Option(name: .long, help: "Characters one request may ask for after its prime.")
    var maxLength = 20_000

    @Option(name: .long, help: "Characters a request's prime may have (larger primes get 413).")
    var maxPrime = GenerationScheduler.Limits().maxPrime

    @Option(
        name: .long,
        help: "Bytes kept of the states after recent primes: a request whose prime equals or extends one fed before feeds only the rest (0: none).")
    var primeCacheBytes = 64 << 20

    @Option(name: .long, help: "Characters a /v1/trace text may have (more get 413).")
    var maxTraceCharacters = TraceLimits().maxCharacters

    @Option(name: .long, help: "Activations per character a /v1/trace may return: units asked for × layers.")
    var maxTraceUnits = TraceLimits().maxUnits

    @Option(name: .long, help: "Traces computed at once at most; more get 503 with Retry-After.")
    var maxTraces = TraceLimits().maxConcurrent

    @Option(name: .long, help: "Bytes a request body may have.")
    var maxBodyBytes = 1 << 20

    @Option(
        name: .long,
        help:
            "Milliseconds at least between two streamed events with generated text; what is made meanwhile goes in one event (0: every character as it is made)."
    )
    var streamInterval: Double = 50

    @Option(name: .long, help: "Seconds a generate request may take, waiting included.")
    var timeout: Double = 300

    @Option(name: .long, help: "Seconds requests in flight may run on after SIGTERM before they are ended.")
    var shutdownGrace: Double = 10

    @Option(
        name: .long,
        help:
            "The products' arithmetic: fp32, or bf16 (bf16 weights and inputs, fp32 sums: faster on CPUs with AVX512_BF16; different text for a seed)."
    )
    var precision = "fp32"

    func run() async throws {
        do {
            try await serve()
        } catch let error as ExitCode {
            throw error
        } catch {
            throw Self.fail("\(error)")
        }
    }

    private func serve() async throws {
        #if !Server
            throw Self.fail(
                "this charrnn-server was built without the Server trait (--disable-default-traits); build it with `swift build --product charrnn-server`"
            )
        #else
            guard (1...65_535).contains(maxStreams) else { throw Self.fail("--max-streams must be between 1 and 65535 (got \(maxStreams))") }
            guard maxQueued >= 0 else { throw Self.fail("--max-queued must be 0 or more (got \(maxQueued))") }
            guard maxLength >= 0 else { throw Self.fail("--max-length must be 0 or more (got \(maxLength))") }
            guard maxPrime >= 1 else { throw Self.fail("--max-prime must be at least 1 (got \(maxPrime))") }
            guard primeCacheBytes >= 0 else { throw Self.fail("--prime-cache-bytes must be 0 or more (got \(primeCacheBytes))") }
            guard maxTraceCharacters >= 0 else { throw Self.fail("--max-trace-characters must be 0 or more (got \(maxTraceCharacters))") }
            guard maxTraceUnits >= 0 else { throw Self.fail("--max-trace-units must be 0 or more (got \(maxTraceUnits))") }
            guard maxTraces >= 1 else { throw Self.fail("--max-traces must be at least 1 (got \(maxTraces))") }
            guard maxBodyBytes >= 1 else { throw Self.fail("--max-body-bytes must be at least 1 (got \(maxBodyBytes))") }
            guard timeout > 0, timeout.isFinite else { throw Self.fail("--timeout must be a positive number of seconds (got \(timeout))") }
            guard streamInterval >= 0, streamInterval <= 10_000 else {
                throw Self.fail("--stream-interval must be between 0 and 10000 milliseconds (got \(streamInterval))")
            }
            guard shutdownGrace >= 0, shutdownGrace.isFinite else {
                throw Self.fail("--shutdown-grace must be 0 or more seconds (got \(shutdownGrace))")
            }
            guard (0...65_535).contains(port) else { throw Self.fail("--port must be between 0 and 65535 (got \(port))") }
            let key = apiKey ?? ProcessInfo.processInfo.environment["CHARRNN_API_KEY"]
            if let key, key.isEmpty { throw Self.fail("the API key is empty: give --api-key a value, or unset CHARRNN_API_KEY") }
            if let origin = corsOrigin.first(where: { $0 != "*" && !Self.isOrigin($0) }) {
                throw Self.fail("--cors-origin must be an origin such as https://example.org or http://localhost:3000, or * (got '\(origin)')")
            }
            if let modelName, modelName.isEmpty || modelName.contains("/") {
                throw Self.fail("--model-name must be a name of at least one character with no '/' (got '\(modelName)')")
            }

            let precision: Precision
            do { precision = try Precision.fromFlag(self.precision) } catch { throw Self.fail("\(error)") }
            let url: URL
            let loaded: Checkpoint
            let generator: TextGenerator
            do {
                url = try CheckpointLocator.best(checkpoint)
                loaded = try Checkpoint(contentsOf: url, trainingState: false)
                generator = try TextGenerator(checkpoint: loaded, precision: precision)
            } catch {
                throw Self.fail("cannot load --checkpoint '\(checkpoint)': \(error)")
            }
            var limits = GenerationScheduler.Limits()
            limits.maxStreams = maxStreams
            limits.maxQueued = maxQueued
            limits.maxLength = maxLength
            limits.maxPrime = maxPrime
            limits.primeCacheBytes = primeCacheBytes
            let scheduler: GenerationScheduler
            do { scheduler = try GenerationScheduler(generator: generator, limits: limits) } catch {
                throw Self.fail("cannot serve \(maxStreams) streams: \(error)")
            }
            var settings = ServerSettings()
            settings.maxBodyBytes = maxBodyBytes
            settings.requestTimeout = .milliseconds(Int64(timeout * 1000))
            settings.streamInterval = .microseconds(Int64(streamInterval * 1000))
            settings.apiKey = key
            settings.corsOrigins = corsOrigin
            settings.modelName = modelName ?? Server.modelName(for: url)
            settings.traceLimits.maxCharacters = maxTraceCharacters
            settings.traceLimits.maxUnits = maxTraceUnits
            settings.traceLimits.maxConcurrent = maxTraces
            let written = (try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? nil
            settings.modelCreated = Int(written?.timeIntervalSince1970 ?? 0)
            let server = Server(scheduler: scheduler, generator: generator, checkpoint: loaded, url: url, settings: settings)

            var logger = Logger(label: "charrnn-server")
            logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
            let c = loaded.configuration
            let summary =
                "\(c.layerCount) \(c.cell.displayName) \(c.layerCount == 1 ? "layer" : "layers") × \(c.hiddenSize) units, "
                + "vocabulary \(c.vocabularySize), \(precision) products" + (key == nil ? "" : ", API key required")
            let app = buildApplication(server, host: host, port: port, logger: logger) { bound in
                let shown = host.contains(":") ? "[\(host)]" : host
                Self.say("charrnn-server: listening on http://\(shown):\(bound)/ (\(summary))")
            }
            let group = ServiceGroup(
                configuration: .init(
                    services: [
                        .init(service: app),
                        .init(service: SchedulerService(scheduler: scheduler, gracePeriod: .milliseconds(Int64(shutdownGrace * 1000)))),
                    ],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger))
            do {
                try await group.run()
            } catch {
                throw Self.fail("cannot serve on \(host):\(port): \(Self.reason(error))")
            }
            Self.say("charrnn-server: stopped")
        #endif
    }

    /// Whether `text` is an origin as browsers send it: scheme://host[:port], no path.
    static func isOrigin(_ text: String) -> Bool {
        guard let components = URLComponents(string: text), let scheme = components.scheme, ["http", "https"].contains(scheme),
            let host = components.host, !host.isEmpty
        else { return false }
        return components.path.isEmpty && components.query == nil && components.fragment == nil && components.user == nil
    }

    /// A line on standard output, flushed at once (scripts wait for it).
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Prints one error line to standard error; the exit code to throw.
    static func fail(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("charrnn-server: error: \(message)\n".utf8))
        return ExitCode.failure
    }

    #if Server
        /// What went wrong when the server could not start, in words.
        static func reason(_ error: Error) -> String {
            if let error = error as? IOError { return String(cString: strerror(error.errnoCode)).lowercased() }
            if let error = error as? SocketAddressError.UnknownHost {
                return "'\(error.host)' is not an address, or a name this machine can resolve"
            }
            return "\(error)"
        }
    #endif
}
