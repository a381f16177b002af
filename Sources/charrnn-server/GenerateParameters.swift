import CharRNN
import CharRNNTools
import Foundation
import Hummingbird

/// The body of `POST /v1/generate`: every field optional, with `charrnn
/// sample`'s defaults and meanings.
struct GenerateParameters: Decodable, Equatable {
    var prime: String?
    var length: Int?
    var temperature: Float?
    /// 1…V; 0 for none (the full distribution). Absent: the notebook's 5,
    /// unless `top_p` is given (as `charrnn sample`'s `--top-k` default).
    var topK: Int?
    var topP: Float?
    var seed: UInt64?
    var stream: Bool?

    /// The fields, as JSON spells them, and what each must be (for errors).
    static let fields: KeyValuePairs<String, String> = [
        "prime": "a string", "length": "a whole number", "temperature": "a number", "top_k": "a whole number",
        "top_p": "a number", "seed": "a whole number from 0 to 18446744073709551615", "stream": "true or false",
    ]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case prime, length, temperature, topK = "top_k", topP = "top_p", seed, stream
    }

    /// Reads a body; an empty body is `{}`. Throws `APIError` (400) naming
    /// the field that is wrongly typed or unknown, or saying the JSON is malformed.
    static func decode(_ body: ByteBuffer) throws(APIError) -> GenerateParameters {
        let data = Data(body.readableBytesView)
        if data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return GenerateParameters() }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw APIError(.badRequest, "the body is not valid JSON: \(Self.reason(error))")
        }
        guard let fields = object as? [String: Any] else {
            throw APIError(.badRequest, "the body must be a JSON object, such as {\"prime\": \"The \", \"length\": 200}")
        }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = fields.keys.sorted().first(where: { !known.contains($0) }) {
            throw APIError(.badRequest, "unknown field '\(unknown)'; the fields are "
                           + CodingKeys.allCases.map(\.rawValue).joined(separator: ", "), field: unknown)
        }
        do {
            return try JSONDecoder().decode(GenerateParameters.self, from: data)
        } catch let DecodingError.typeMismatch(_, context) {
            throw Self.wrongType(context)
        } catch let DecodingError.dataCorrupted(context) {
            throw Self.wrongType(context)
        } catch let DecodingError.valueNotFound(_, context) {
            throw Self.wrongType(context)
        } catch {
            throw APIError(.badRequest, "the body could not be read: \(error)")
        }
    }

    private init() {}

    private static func wrongType(_ context: DecodingError.Context) -> APIError {
        guard let field = context.codingPath.first?.stringValue else {
            return APIError(.badRequest, "the body is not valid JSON: \(context.debugDescription)")
        }
        let expected = fields.first { $0.key == field }?.value ?? "another type"
        return APIError(.badRequest, "\(field) must be \(expected)", field: field)
    }

    private static func reason(_ error: Error) -> String {
        let nsError = error as NSError
        return (nsError.userInfo[NSDebugDescriptionErrorKey] as? String) ?? nsError.localizedDescription
    }

    /// The scheduler request: `charrnn sample`'s defaults where a field is
    /// absent, and `seed` drawn at random (as `charrnn sample` does) when absent.
    func request(vocabularySize: Int, timeout: Duration?) throws(APIError) -> GenerationRequest {
        var request = GenerationRequest()
        request.prime = prime ?? TextGenerator.defaultPrime
        request.length = length ?? TextGenerator.defaultLength
        request.timeout = timeout
        var options = SamplingOptions()
        options.temperature = temperature ?? options.temperature
        switch topK {
        case nil: options.topK = topP == nil ? SamplingOptions.notebookTopK(vocabularySize: vocabularySize) : nil
        case 0: options.topK = nil
        case let k?: options.topK = k
        }
        options.topP = topP
        options.seed = seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        request.options = options
        return request
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
        object["error"] = .string(message)
        if let field { object["field"] = .string(field) }
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
        }
    }
}
