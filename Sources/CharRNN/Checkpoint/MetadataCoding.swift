/// Encodes and decodes flat `Codable` values as safetensors metadata: one
/// string entry per stored property, under the property's coding key.
/// Numbers are written as the shortest decimal that reads back to the same
/// value, so they round-trip exactly; optionals that are `nil` are left out.
/// Only flat values of strings, booleans and numbers are supported (what
/// checkpoint metadata holds); anything nested is a programming error.
enum MetadataCoding {
    /// The entries of `value`.
    static func encode<T: Encodable>(_ value: T) -> [String: String] {
        let encoder = Encoder()
        do { try value.encode(to: encoder) } catch {
            preconditionFailure("metadata values are flat: \(error)")
        }
        return encoder.storage.entries
    }

    /// A `T` read from `metadata`. Throws `CheckpointProblem.invalidMetadataValue`
    /// naming the first key that is missing or does not parse.
    static func decode<T: Decodable>(_ type: T.Type, from metadata: [String: String]) throws(CheckpointProblem) -> T {
        do {
            return try T(from: Decoder(entries: metadata))
        } catch let failure as Failure {
            throw .invalidMetadataValue(key: failure.key, value: metadata[failure.key])
        } catch {
            throw .invalidMetadata
        }
    }

    /// A key that was missing or did not parse as its type.
    struct Failure: Error { let key: String }

    final class Storage { var entries: [String: String] = [:] }

    struct Encoder: Swift.Encoder {
        let storage = Storage()
        var codingPath: [CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(KeyedEncoder<Key>(storage: storage))
        }
        func unkeyedContainer() -> UnkeyedEncodingContainer { preconditionFailure("metadata is flat") }
        func singleValueContainer() -> SingleValueEncodingContainer { preconditionFailure("metadata is flat") }
    }

    struct KeyedEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let storage: Storage
        var codingPath: [CodingKey] { [] }
        mutating func encodeNil(forKey key: Key) {}
        mutating func encode(_ value: Bool, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode(_ value: String, forKey key: Key) { storage.entries[key.stringValue] = value }
        mutating func encode(_ value: Double, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode(_ value: Float, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode(_ value: Int, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode(_ value: Int64, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode(_ value: UInt64, forKey key: Key) { storage.entries[key.stringValue] = String(value) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            guard let text = value as? LosslessStringConvertible else { preconditionFailure("metadata is flat") }
            storage.entries[key.stringValue] = text.description
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            preconditionFailure("metadata is flat")
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer { preconditionFailure("metadata is flat") }
        mutating func superEncoder() -> Swift.Encoder { preconditionFailure("metadata is flat") }
        mutating func superEncoder(forKey key: Key) -> Swift.Encoder { preconditionFailure("metadata is flat") }
    }

    struct Decoder: Swift.Decoder {
        let entries: [String: String]
        var codingPath: [CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedDecodingContainer<Key> {
            KeyedDecodingContainer(KeyedDecoder<Key>(entries: entries))
        }
        func unkeyedContainer() throws -> UnkeyedDecodingContainer { throw Failure(key: "") }
        func singleValueContainer() throws -> SingleValueDecodingContainer { throw Failure(key: "") }
    }

    struct KeyedDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let entries: [String: String]
        var codingPath: [CodingKey] { [] }
        var allKeys: [Key] { entries.keys.compactMap { Key(stringValue: $0) } }
        func contains(_ key: Key) -> Bool { entries[key.stringValue] != nil }
        func decodeNil(forKey key: Key) -> Bool { entries[key.stringValue] == nil }

        private func parse<T: LosslessStringConvertible>(_ key: Key) throws -> T {
            guard let text = entries[key.stringValue], let value = T(text) else { throw Failure(key: key.stringValue) }
            return value
        }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try parse(key) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try parse(key) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try parse(key) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try parse(key) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try parse(key) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try parse(key) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try parse(key) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            guard let parsable = T.self as? LosslessStringConvertible.Type,
                let text = entries[key.stringValue], let value = parsable.init(text) as? T
            else { throw Failure(key: key.stringValue) }
            return value
        }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            throw Failure(key: key.stringValue)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer { throw Failure(key: key.stringValue) }
        func superDecoder() throws -> Swift.Decoder { throw Failure(key: "") }
        func superDecoder(forKey key: Key) throws -> Swift.Decoder { throw Failure(key: key.stringValue) }
    }
}
