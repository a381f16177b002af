import Foundation

/// Reading and writing the safetensors format, F32 only: an 8-byte
/// little-endian header length, a JSON header (tensor name → dtype, shape,
/// data_offsets; optional `__metadata__` of string → string), then the raw
/// little-endian data. The reader checks every number it reads against the
/// file before using it.
enum SafeTensors {
    /// A tensor to write.
    struct Tensor {
        let name: String
        let shape: [Int]
        let values: UnsafeBufferPointer<Float>
    }

    /// A tensor read back.
    struct StoredTensor {
        let shape: [Int]
        let values: [Float]
    }

    /// The largest header the reader accepts (safetensors' own limit).
    static let maximumHeaderLength = 100_000_000

    /// The file's bytes. The header lists tensors in the given order, and the
    /// data follows in the same order; the header is padded with spaces to a
    /// multiple of 8 bytes so the data is aligned.
    static func encode(tensors: [Tensor], metadata: [String: String]) -> [UInt8] {
        var header = "{\"__metadata__\":{"
        header += metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
            .joined(separator: ",")
        header += "}"
        var offset = 0
        for tensor in tensors {
            let bytes = tensor.values.count * 4
            header += ",\(jsonString(tensor.name)):{\"dtype\":\"F32\",\"shape\":["
                + tensor.shape.map(String.init).joined(separator: ",")
                + "],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }

        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        for tensor in tensors {
            for value in tensor.values {
                withUnsafeBytes(of: value.bitPattern.littleEndian) { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// Parses and checks a whole file. Throws `CheckpointProblem` naming what is wrong.
    static func decode(_ bytes: [UInt8]) throws(CheckpointProblem) -> (metadata: [String: String], tensors: [String: StoredTensor]) {
        guard bytes.count >= 8 else { throw .truncated(size: bytes.count) }
        var headerLength: UInt64 = 0
        for index in 0..<8 { headerLength |= UInt64(bytes[index]) << (8 * UInt64(index)) }
        guard headerLength <= UInt64(maximumHeaderLength) else { throw .headerTooLarge(length: headerLength) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw .headerPastEnd(length: headerLength, fileSize: bytes.count)
        }
        let headerEnd = 8 + Int(headerLength)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(bytes[8..<headerEnd]))
        } catch let problem as HeaderProblem {
            throw problem.problem
        } catch {
            throw .invalidJSON
        }

        let dataSize = bytes.count - headerEnd
        var entries: [(name: String, shape: [Int], begin: Int, end: Int)] = []
        for (name, entry) in header.tensors {
            guard entry.dtype == "F32" else { throw .unsupportedDType(name: name, dtype: entry.dtype) }
            guard entry.shape.allSatisfy({ $0 >= 0 }), entry.data_offsets.count == 2 else {
                throw .invalidEntry(name: name)
            }
            var elements = 1
            for dimension in entry.shape {
                let product = elements.multipliedReportingOverflow(by: dimension)
                guard !product.overflow, product.partialValue <= dataSize else {
                    throw .offsetsOutsideFile(name: name)
                }
                elements = product.partialValue
            }
            let (begin, end) = (entry.data_offsets[0], entry.data_offsets[1])
            guard begin >= 0, end >= begin, end <= dataSize else { throw .offsetsOutsideFile(name: name) }
            guard end - begin == elements * 4 else { throw .sizeMismatch(name: name) }
            entries.append((name, entry.shape, begin, end))
        }
        // The data must be covered exactly: no overlaps, no holes, nothing after.
        entries.sort { $0.begin < $1.begin }
        var expected = 0
        for entry in entries {
            guard entry.begin == expected else { throw .overlappingOrGap(name: entry.name) }
            expected = entry.end
        }
        guard expected == dataSize else { throw .trailingData(bytes: dataSize - expected) }

        var tensors: [String: StoredTensor] = [:]
        for entry in entries {
            let count = (entry.end - entry.begin) / 4
            var values = [Float](repeating: 0, count: count)
            let start = headerEnd + entry.begin
            for index in 0..<count {
                let p = start + 4 * index
                let bits = UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16
                    | UInt32(bytes[p + 3]) << 24
                values[index] = Float(bitPattern: bits)
            }
            tensors[entry.name] = StoredTensor(shape: entry.shape, values: values)
        }
        return (header.metadata, tensors)
    }

    /// A JSON string literal for `text`.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// The header's entries, decoded strictly: integers must be integers
    /// (not booleans or fractions) and metadata values must be strings.
    struct Header: Decodable {
        struct Entry: Decodable {
            let dtype: String
            let shape: [Int]
            let data_offsets: [Int]
        }
        var metadata: [String: String] = [:]
        var tensors: [(String, Entry)] = []

        struct Key: CodingKey {
            let stringValue: String
            init(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }

        init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                if key.stringValue == "__metadata__" {
                    do { metadata = try container.decode([String: String].self, forKey: key) } catch {
                        throw HeaderProblem(problem: .invalidMetadata)
                    }
                } else {
                    do { tensors.append((key.stringValue, try container.decode(Entry.self, forKey: key))) } catch {
                        throw HeaderProblem(problem: .invalidEntry(name: key.stringValue))
                    }
                }
            }
        }
    }

    struct HeaderProblem: Error { let problem: CheckpointProblem }
}
