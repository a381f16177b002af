import CharRNN
import Foundation

/// A JSON value the tools print or serve (`train --json`, `eval --json`,
/// `inspect --json`, `charrnn-server`'s answers): built from the library's values, encoded with sorted
/// keys, numbers as the shortest decimals that read back exactly, and
/// non-finite numbers as `null` (JSON has none).
public enum JSONValue: Encodable, Sendable {
    case string(String)
    case int(Int)
    case unsigned(UInt64)
    case float(Float)
    case double(Double)
    case bool(Bool)
    case null
    case array([JSONValue])
    case object([String: JSONValue])

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .unsigned(let value): try container.encode(value)
        case .float(let value): if value.isFinite { try container.encode(value) } else { try container.encodeNil() }
        case .double(let value): if value.isFinite { try container.encode(value) } else { try container.encodeNil() }
        case .bool(let value): try container.encode(value)
        case .null: try container.encodeNil()
        case .array(let values): try container.encode(values)
        case .object(let values): try container.encode(values)
        }
    }

    /// A metadata string as the JSON value it spells: an integer, a
    /// number, a boolean, or else the string itself.
    public static func parsing(_ text: String) -> JSONValue {
        if let integer = Int(text) { return .int(integer) }
        if let number = Double(text), number.isFinite, text.first.map({ $0.isNumber || $0 == "-" || $0 == "." }) == true {
            return .double(number)
        }
        if text == "true" || text == "false" { return .bool(text == "true") }
        return .string(text)
    }

    /// The value as one line of JSON (no newline).
    public var line: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Prints the value as one line on standard output.
    public func print() {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

extension Optional {
    /// The wrapped value as JSON, or `null`.
    public func json(_ transform: (Wrapped) -> JSONValue) -> JSONValue {
        map(transform) ?? .null
    }
}

extension JSONValue {
    /// A generated character's log-probability as `charrnn sample --logprobs`
    /// and `/v1/generate` give it: `{"char", "logprob", "top_logprobs":
    /// [{"char", "logprob"}, …]}`, most likely first.
    public static func describing(_ logprob: CharacterLogprob) -> JSONValue {
        .object([
            "char": .string(String(logprob.character)), "logprob": .double(logprob.logprob),
            "top_logprobs": .array(
                logprob.top.map { .object(["char": .string(String($0.character)), "logprob": .double($0.logprob)]) }),
        ])
    }
}
