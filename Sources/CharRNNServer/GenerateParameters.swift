#if Server
    import CharRNN
    import CharRNNTools
    import Foundation
    import Hummingbird

    /// The body of `POST /v1/generate`: every field optional, with `charrnn
    /// sample`'s defaults and meanings.
    struct GenerateParameters: Equatable {
        var prime: String?
        var length: Int?
        var temperature: Float?
        /// 1…V; 0 for none (the full distribution). Absent: the notebook's 5,
        /// unless `top_p` is given (as `charrnn sample`'s `--top-k` default).
        var topK: Int?
        var topP: Float?
        var seed: UInt64?
        var stream: Bool?
        /// Stop strings: one string, or a list.
        var stop: [String]?
        /// Alternatives per character with its log-probability.
        var logprobs: Int?

        /// The most stop strings a request may give, and the most characters in each.
        static let maxStopStrings = 16
        static let maxStopLength = 256

        /// The body's fields, as JSON spells them.
        enum Field: String, CaseIterable {
            case prime, length, temperature
            case topK = "top_k"
            case topP = "top_p"
            case seed, stream, stop, logprobs

            /// What the field's value must be, for the error that names it.
            var expected: String {
                switch self {
                case .prime: return "a string"
                case .length, .topK, .logprobs: return "a whole number"
                case .temperature, .topP: return "a number"
                case .seed: return "a whole number from 0 to 18446744073709551615"
                case .stream: return "true or false"
                case .stop: return "a string or a list of strings"
                }
            }
        }

        /// Reads a body; an empty body is `{}`. Throws `APIError` (400) naming
        /// the field that is wrongly typed or unknown, or saying the JSON is malformed.
        static func decode(_ body: ByteBuffer) throws(APIError) -> GenerateParameters {
            let data = Data(body.readableBytesView)
            if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return GenerateParameters() }
            let fields: [String: JSONScalar]
            do {
                fields = try JSONDecoder().decode([String: JSONScalar].self, from: data)
            } catch DecodingError.typeMismatch, DecodingError.valueNotFound {  // another value, or null
                throw APIError(.badRequest, "the body must be a JSON object, such as {\"prime\": \"The \", \"length\": 200}")
            } catch {
                throw APIError(.badRequest, "the body is not valid JSON")
            }
            var parameters = GenerateParameters()
            for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
                guard let key = Field(rawValue: name) else {
                    throw APIError(
                        .badRequest,
                        "unknown field '\(name)'; the fields are "
                            + Field.allCases.map(\.rawValue).joined(separator: ", "), field: name)
                }
                if case .null = value { continue }  // null: the default, as if absent
                let wrongType = value.unreadable(name, text: key == .prime) ?? APIError(.badRequest, "\(name) must be \(key.expected)", field: name)
                switch key {
                case .prime:
                    guard case .string(let text) = value else { throw wrongType }
                    parameters.prime = text
                case .length:
                    guard case .integer(let number) = value else { throw wrongType }
                    parameters.length = number
                case .topK:
                    guard case .integer(let number) = value else { throw wrongType }
                    parameters.topK = number
                case .temperature:
                    guard let number = value.number else { throw wrongType }
                    parameters.temperature = try Self.float(number, field: name)
                case .topP:
                    guard let number = value.number else { throw wrongType }
                    parameters.topP = try Self.float(number, field: name)
                case .stream:
                    guard case .bool(let flag) = value else { throw wrongType }
                    parameters.stream = flag
                case .logprobs:
                    guard case .integer(let number) = value else { throw wrongType }
                    parameters.logprobs = number
                case .stop:
                    parameters.stop = try stopStrings(value, wrongType: wrongType)
                case .seed:
                    switch value {
                    case .integer(let number) where number >= 0: parameters.seed = UInt64(number)
                    case .unsigned(let number): parameters.seed = number
                    default: throw wrongType
                    }
                }
            }
            return parameters
        }

        private init() {}

        /// A JSON number as the Float the sampler takes: refused beyond
        /// Float's range (it would read as infinity), and a number too small
        /// for a Float but not 0 (top_p 1e-50) read as the smallest Float of
        /// its sign rather than as 0.
        static func float(_ number: Double, field: String) throws(APIError) -> Float {
            guard abs(number) <= Double(Float.greatestFiniteMagnitude) else {
                throw APIError(.badRequest, "\(field) must be at most \(Float.greatestFiniteMagnitude) (got \(number))", field: field)
            }
            let value = Float(number)
            if value == 0 && number != 0 { return number > 0 ? .leastNonzeroMagnitude : -.leastNonzeroMagnitude }
            return value
        }

        /// `stop` as a list: one string or an array of them, within the limits.
        static func stopStrings(_ value: JSONScalar, wrongType: APIError) throws(APIError) -> [String] {
            let strings: [String]
            switch value {
            case .string(let text): strings = [text]
            case .array(let items):
                strings = try items.map { item throws(APIError) in
                    guard case .string(let text) = item else { throw item.unreadable("stop", text: true) ?? wrongType }
                    return text
                }
            default: throw wrongType
            }
            guard strings.count <= maxStopStrings else {
                throw APIError(.badRequest, "stop may have at most \(maxStopStrings) strings (got \(strings.count))", field: "stop")
            }
            if let long = strings.first(where: { $0.unicodeScalars.count > maxStopLength }) {
                throw APIError(
                    .badRequest, "each stop string may have at most \(maxStopLength) characters (got \(long.unicodeScalars.count))",
                    field: "stop")
            }
            return strings
        }

        /// The scheduler request: `charrnn sample`'s defaults where a field is
        /// absent, and `seed` drawn at random (as `charrnn sample` does) when absent.
        func request(vocabularySize: Int, timeout: Duration?) -> GenerationRequest {
            var request = GenerationRequest()
            request.prime = prime ?? TextGenerator.defaultPrime
            request.length = length ?? TextGenerator.defaultLength
            request.timeout = timeout
            var options = SamplingOptions()
            options.temperature = temperature ?? options.temperature
            options.topK = topK == 0 ? nil : SamplingOptions.topK(asked: topK, topP: topP, vocabularySize: vocabularySize)
            options.topP = topP
            options.seed = seed ?? SamplingOptions.randomSeed()
            request.options = options
            request.completion.stop = stop ?? []
            request.completion.logprobs = logprobs
            return request
        }
    }

    /// One JSON value as the request's fields are checked: its kind, and the
    /// value where it is a scalar (integers kept exact up to UInt64's range)
    /// or an array (of such values).
    enum JSONScalar: Decodable {
        case null
        case bool(Bool)
        case string(String)
        case integer(Int)
        case unsigned(UInt64)
        case real(Double)
        case array([JSONScalar])
        case object([String: JSONScalar])
        case composite

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let value = try? container.decode(Bool.self) {
                self = .bool(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else if let value = try? container.decode(Int.self) {
                self = .integer(value)
            } else if let value = try? container.decode(UInt64.self) {
                self = .unsigned(value)
            } else if let value = try? container.decode(Double.self) {
                self = .real(value)
            } else if let values = try? container.decode([JSONScalar].self) {
                self = .array(values)
            } else if let values = try? container.decode([String: JSONScalar].self) {
                self = .object(values)
            } else {
                self = .composite
            }
        }

        /// For a value JSON holds but Swift cannot read (a string with
        /// invalid UTF-8 or a lone surrogate, a number beyond any range), the
        /// error that says so for `field` (a `text` field, or a number's);
        /// nil for every other value.
        func unreadable(_ field: String, text: Bool) -> APIError? {
            guard case .composite = self else { return nil }
            return APIError(
                .badRequest,
                text ? "\(field) must be valid Unicode text: it has invalid UTF-8 or a lone surrogate" : "\(field) is a number beyond any range",
                field: field)
        }

        /// The value of a number of any kind.
        var number: Double? {
            switch self {
            case .integer(let value): return Double(value)
            case .unsigned(let value): return Double(value)
            case .real(let value): return value
            default: return nil
            }
        }
    }

    /// An error answer: a status and `{"error": message, "field": …}`.
    struct APIError: Error, HTTPResponseError {
        let status: HTTPResponse.Status
        let message: String
        let field: String?
        var extra: [String: JSONValue] = [:]
        var headers: HTTPFields = [:]

        init(_ status: HTTPResponse.Status, _ message: String, field: String? = nil) {
            self.status = status
            self.message = message
            self.field = field
        }

        func response(from request: Request, context: some RequestContext) throws -> Response {
            var object = extra
            if OpenAICompletions.paths.contains(where: { request.uri.path.hasPrefix($0) }) {
                object = ["error": OpenAICompletions.errorObject(self)]
            } else {
                object["error"] = .string(message)
                if let field { object["field"] = .string(field) }
            }
            var headers = headers
            headers[.contentType] = "application/json; charset=utf-8"
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: JSONValue.object(object).line + "\n")))
        }

        /// The answer for a request the scheduler refused.
        init(_ error: SchedulerError) {
            switch error {
            case .invalidRequest(.invalidOption(let option, let value, let requirement)):
                let field = Self.field(option)
                self.init(.badRequest, "\(field) must be \(requirement) (got \(value))", field: field)
            case .invalidRequest(.unknownCharacters(let scalars)):
                self.init(.unprocessableContent, SamplingError.unknownCharacters(scalars).description, field: "prime")
                extra["unknown_characters"] = .array(scalars.map { .string(String($0)) })
            case .invalidRequest(.emptyPrime):
                self.init(.badRequest, "prime must have at least one character", field: "prime")
            case .invalidRequest(let other):
                self.init(.internalServerError, other.description)
            case .lengthAboveLimit(let length, let limit):
                self.init(.badRequest, "length must be at most \(limit) on this server (got \(length))", field: "length")
            case .primeAboveLimit(let characters, let limit):
                self.init(.contentTooLarge, "the prime has \(characters) characters; the most this server feeds is \(limit)", field: "prime")
            case .busy:
                self.init(.serviceUnavailable, error.description + "; retry in a second")
                headers[.retryAfter] = "1"
            case .shuttingDown:
                self.init(.serviceUnavailable, "the server is shutting down")
                headers[.connection] = "close"
            }
        }

        /// The JSON field of a sampling option.
        static func field(_ option: SamplingOptions.Option) -> String {
            switch option {
            case .temperature: return "temperature"
            case .topK: return "top_k"
            case .topP: return "top_p"
            case .length: return "length"
            case .count: return "count"
            case .stop: return "stop"
            case .logprobs: return "logprobs"
            }
        }
    }
#endif
