#if Server
    import CharRNN
    import CharRNNTools
    import Foundation
    import Hummingbird
    import NIOCore
    import Synchronization

    /// The body of `POST /v1/trace`.
    struct TraceParameters: Equatable {
        /// The text to trace (required, at least one character).
        var text = ""
        /// Units of every layer to return; `.none` when absent.
        var units: TraceOptions.Units = .none
        /// Likeliest characters per position.
        var top = 0
        /// The LSTM's cell state too.
        var cellState = false

        /// The body's fields, as JSON spells them.
        enum Field: String, CaseIterable {
            case text, units, top
            case cellState = "cell_state"
        }

        /// Reads a body. Throws `APIError` (400) naming a wrongly typed or
        /// unknown field, or saying the JSON is malformed or `text` missing.
        static func decode(_ body: ByteBuffer) throws(APIError) -> TraceParameters {
            let fields: [String: JSONScalar]
            do {
                fields = try JSONDecoder().decode([String: JSONScalar].self, from: Data(body.readableBytesView))
            } catch DecodingError.typeMismatch, DecodingError.valueNotFound {
                throw APIError(.badRequest, "the body must be a JSON object, such as {\"text\": \"Happy families\", \"units\": [3, 17]}")
            } catch {
                throw APIError(.badRequest, "the body is not valid JSON")
            }
            var parameters = TraceParameters()
            var sawText = false
            for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
                guard let key = Field(rawValue: name) else {
                    throw APIError(
                        .badRequest, "unknown field '\(name)'; the fields are " + Field.allCases.map(\.rawValue).joined(separator: ", "),
                        field: name)
                }
                if case .null = value { continue }
                switch key {
                case .text:
                    guard case .string(let text) = value else {
                        throw value.unreadable(name, text: true) ?? APIError(.badRequest, "text must be a string", field: name)
                    }
                    parameters.text = text
                    sawText = true
                case .units:
                    let wrong = APIError(.badRequest, "units must be a list of unit indices, or \"all\"", field: name)
                    switch value {
                    case .string("all"): parameters.units = .all
                    case .array(let items):
                        parameters.units = .listed(
                            try items.map { item throws(APIError) in
                                guard case .integer(let unit) = item else { throw wrong }
                                return unit
                            })
                    default: throw wrong
                    }
                case .top:
                    guard case .integer(let top) = value else { throw APIError(.badRequest, "top must be a whole number", field: name) }
                    parameters.top = top
                case .cellState:
                    guard case .bool(let flag) = value else { throw APIError(.badRequest, "cell_state must be true or false", field: name) }
                    parameters.cellState = flag
                }
            }
            guard sawText else { throw APIError(.badRequest, "text is required: the text to trace", field: "text") }
            return parameters
        }
    }

    /// Traces off Swift's cooperative threads (a trace computes without
    /// pause), at most `limit` at once, each ended by a cancel flag that the
    /// route sets when the client goes or the time is up.
    final class TraceRunner: @unchecked Sendable {
        // @unchecked: the generator's weights are only read once loaded, and
        // each trace has its own state and scratch (TextTrace's session).
        private let generator: TextGenerator
        /// Traces computed at once at most; more get 503.
        let limit: Int
        private let counts = Mutex((running: 0, characters: 0))

        init(generator: TextGenerator, limit: Int) {
            self.generator = generator
            self.limit = limit
        }

        /// Traces being computed, and characters fed by all traces so far.
        var statistics: (running: Int, characters: Int) { counts.withLock { $0 } }

        var layerCount: Int { generator.model.configuration.layerCount }
        var vocabulary: Vocabulary { generator.vocabulary }

        /// How a trace ended early.
        enum Stop: Error {
            case cancelled, timedOut
            case failed(String)
        }

        /// Why the route wants a trace to stop: set by the route's watch, read
        /// by the trace between characters.
        final class Flag: Sendable {
            private let value = Atomic<Int>(0)
            /// The client went away.
            func cancel() { value.store(1, ordering: .relaxed) }
            /// The request's time is up.
            func timeOut() { value.store(2, ordering: .relaxed) }
            /// The stop asked for, if any.
            var stop: Stop? {
                switch value.load(ordering: .relaxed) {
                case 1: return .cancelled
                case 2: return .timedOut
                default: return nil
                }
            }
        }

        /// Makes the trace (throws `TraceError` for a bad request, before any
        /// work), runs it on a thread of its own and returns the answer's
        /// JSON; throws `Stop` when `flag` asks for one or the model fails.
        func run(tokens: [Int32], options: TraceOptions, flag: Flag) async throws -> String {
            let cellState = options.cellState
            return try await onThread(try TextTrace(generator: generator, tokens: tokens, options: options), flag: flag) { trace, counted in
                Self.compute(&trace, cellState: cellState, flag: flag, counted: counted)
            }
        }

        /// Every character of `tokens` with its log-probability and the `top`
        /// likeliest at `temperature` (a prompt's, for the completions API's
        /// `echo` with `logprobs`), computed as `run` computes a trace.
        func characters(tokens: [Int32], top: Int, temperature: Double, flag: Flag) async throws -> [TracedCharacter] {
            let options = TraceOptions(units: .none, top: top, cellState: false, temperature: temperature)
            return try await onThread(try TextTrace(generator: generator, tokens: tokens, options: options), flag: flag) { trace, counted in
                var characters: [TracedCharacter] = []
                characters.reserveCapacity(trace.tokens.count)
                do throws(Stop) {
                    while let character = try Self.next(&trace, flag: flag, counted: counted) { characters.append(character) }
                } catch {
                    return .failure(error)
                }
                return .success(characters)
            }
        }

        /// Takes one of the `limit` places (503 with Retry-After when none is
        /// free), runs `work` on `trace` on a thread of its own, and returns
        /// what it made; `work` counts each character fed with its second argument.
        private func onThread<Value: Sendable>(
            _ trace: TextTrace, flag: Flag, _ work: @escaping @Sendable (inout TextTrace, () -> Void) -> Result<Value, Stop>
        ) async throws -> Value {
            let box = TraceBox(trace)
            guard
                counts.withLock({ counts in
                    guard counts.running < limit else { return false }
                    counts.running += 1
                    return true
                })
            else {
                var error = APIError(
                    .serviceUnavailable, "\(limit) trace\(limit == 1 ? " is" : "s are") running, the most this server runs at once; retry in a second"
                )
                error.headers[.retryAfter] = "1"
                throw error
            }
            defer { counts.withLock { $0.running -= 1 } }
            let counted = { @Sendable [self] in self.counts.withLock { $0.characters += 1 } }
            let outcome: Result<Value, Stop> = await withCheckedContinuation { continuation in
                let thread = Thread {
                    continuation.resume(returning: work(&box.trace, counted))
                }
                thread.name = "charrnn-trace"
                thread.start()
            }
            return try outcome.get()
        }

        /// A trace handed to the thread that runs it; no other touches it after.
        private final class TraceBox: @unchecked Sendable {
            var trace: TextTrace
            init(_ trace: TextTrace) { self.trace = trace }
        }

        /// Runs `trace` to its end, collecting the answer in columns.
        /// The trace's next character (nil at its end), counted; throws
        /// the stop `flag` asks for, or `.failed` when the model fails.
        private static func next(_ trace: inout TextTrace, flag: Flag, counted: () -> Void) throws(Stop) -> TracedCharacter? {
            let character: TracedCharacter?
            do { character = try trace.next() } catch { throw .failed(error.description) }
            guard character != nil else { return nil }
            counted()
            if let stop = flag.stop { throw stop }
            return character
        }

        private static func compute(
            _ trace: inout TextTrace, cellState: Bool, flag: Flag, counted: () -> Void
        ) -> Result<String, Stop> {
            let count = trace.tokens.count
            let layers = trace.layerCount
            let units = trace.units
            var characters: [Unicode.Scalar] = []
            var probability: [Double?] = []
            var surprise: [Double?] = []
            var entropy: [Double?] = []
            var top: [[TracedCharacter.Alternative]] = []
            // [layer][unit][position]: a unit's values over the text lie together.
            var hidden = [[[Float]]](repeating: [[Float]](repeating: [], count: units.count), count: layers)
            var cell = trace.recordsCell ? hidden : []
            characters.reserveCapacity(count)
            do throws(Stop) {
                while let character = try Self.next(&trace, flag: flag, counted: counted) {
                    characters.append(character.character)
                    probability.append(character.probability)
                    surprise.append(character.surprise)
                    entropy.append(character.entropy)
                    top.append(character.top)
                    for layer in 0..<layers {
                        for index in units.indices {
                            hidden[layer][index].append(character.hidden[layer][index])
                            if !cell.isEmpty { cell[layer][index].append(character.cell[layer][index]) }
                        }
                    }
                }
            } catch {
                return .failure(error)
            }
            var json = "{\"characters\":["
            json += characters.map { JSONString.literal(String($0)) }.joined(separator: ",")
            json += "],\"probability\":" + list(probability) + ",\"surprise\":" + list(surprise)
            json += ",\"entropy\":" + list(entropy) + ",\"top\":["
            json += top.map { alternatives in
                "["
                    + alternatives.map { "{\"character\":\(JSONString.literal(String($0.character))),\"probability\":\($0.probability)}" }
                    .joined(separator: ",") + "]"
            }.joined(separator: ",")
            json += "],\"units\":[" + units.map(String.init).joined(separator: ",") + "],\"layers\":\(layers)"
            if !units.isEmpty { json += ",\"h\":" + columns(hidden) }
            if cellState && !cell.isEmpty { json += ",\"c\":" + columns(cell) }
            let mean = trace.meanSurprise
            json += ",\"predictions\":\(trace.predictions)"
            json += ",\"mean_surprise\":" + (mean.isFinite ? "\(mean)" : "null")
            json += ",\"bits_per_character\":" + (mean.isFinite ? "\(mean / log(2))" : "null") + "}\n"
            return .success(json)
        }

        private static func list(_ values: [Double?]) -> String {
            "[" + values.map { $0.flatMap { $0.isFinite ? "\($0)" : nil } ?? "null" }.joined(separator: ",") + "]"
        }

        /// [layer][unit][position] with four decimals: activations are read
        /// as colours and correlations, and full floats would triple the size.
        private static func columns(_ values: [[[Float]]]) -> String {
            var out = "["
            for (l, layer) in values.enumerated() {
                if l > 0 { out += "," }
                out += "["
                for (u, series) in layer.enumerated() {
                    if u > 0 { out += "," }
                    out += "["
                    for (t, value) in series.enumerated() {
                        if t > 0 { out += "," }
                        appendFixed(value, to: &out)
                    }
                    out += "]"
                }
                out += "]"
            }
            return out + "]"
        }

        /// `value` rounded to four decimals, without trailing zeros.
        static func appendFixed(_ value: Float, to out: inout String) {
            guard value.isFinite else {
                out += "null"
                return
            }
            var scaled = Int((Double(value) * 10_000).rounded())
            if scaled < 0 {
                out += "-"
                scaled = -scaled
            }
            out += String(scaled / 10_000)
            var fraction = scaled % 10_000
            guard fraction != 0 else { return }
            var digits = 4
            while fraction % 10 == 0 {
                fraction /= 10
                digits -= 1
            }
            let text = String(fraction)
            out += "." + String(repeating: "0", count: digits - text.count) + text
        }
    }
#endif
