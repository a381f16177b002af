import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A training text, decoded from UTF-8 into Unicode scalars.
public struct Corpus: Sendable {
    /// How line endings are read.
    public enum LineEndings: String, Sendable, CaseIterable {
        /// "\r\n" and a lone "\r" become "\n", as Python's text mode reads
        /// files (the original notebook read anna.txt this way: 1,985,223
        /// characters, 83 distinct).
        case universal
        /// Every byte sequence is kept as it is in the file.
        case preserve
    }

    /// The text's scalars in file order.
    public let scalars: [Unicode.Scalar]

    /// Wraps already-decoded text.
    public init(scalars: [Unicode.Scalar]) { self.scalars = scalars }

    /// Decodes text held in memory.
    public init(text: String, lineEndings: LineEndings = .universal) {
        self.scalars = Corpus.normalise(Array(text.unicodeScalars), lineEndings)
    }

    /// Reads and decodes a UTF-8 file. Throws `CorpusError` naming the problem:
    /// missing, unreadable, a directory, empty, or not UTF-8 (with the byte offset).
    public init(contentsOf url: URL, lineEndings: LineEndings = .universal) throws(CorpusError) {
        let path = url.path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw .notFound(path: path)
        }
        if isDirectory.boolValue { throw .isDirectory(path: path) }
        // A device or socket would be read forever or not at all; a FIFO (a
        // pipe from another program) is read to its end like a file.
        var info = stat()
        if stat(path, &info) == 0 {
            let kind = info.st_mode & S_IFMT
            if kind != S_IFREG && kind != S_IFIFO { throw .notRegularFile(path: path, kind: FileSource.describe(kind)) }
        }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        if data.isEmpty { throw .empty(path: path) }
        let decoded = try Corpus.decodeUTF8(data, path: path)
        self.scalars = Corpus.normalise(decoded, lineEndings)
    }

    /// Number of characters (scalars).
    public var count: Int { scalars.count }

    static func normalise(_ scalars: [Unicode.Scalar], _ lineEndings: LineEndings) -> [Unicode.Scalar] {
        guard lineEndings == .universal, scalars.contains("\r") else { return scalars }
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(scalars.count)
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            if scalar == "\r" {
                result.append("\n")
                if index + 1 < scalars.count && scalars[index + 1] == "\n" { index += 1 }
            } else {
                result.append(scalar)
            }
            index += 1
        }
        return result
    }

    /// Strict UTF-8 decoding that reports the offset where the first invalid
    /// sequence starts, as Python's UnicodeDecodeError does (overlong forms,
    /// surrogates and values past U+10FFFF are rejected).
    static func decodeUTF8(_ data: Data, path: String) throws(CorpusError) -> [Unicode.Scalar] {
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(data.count)
        var failure: Int? = nil
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let bytes = raw.bindMemory(to: UInt8.self)
            let n = bytes.count
            var i = 0
            while i < n {
                let lead = bytes[i]
                if lead < 0x80 {
                    result.append(Unicode.Scalar(lead))
                    i += 1
                    continue
                }
                let length: Int
                var value: UInt32
                let minimum: UInt32
                switch lead {
                case 0xC2...0xDF: length = 2; value = UInt32(lead & 0x1F); minimum = 0x80
                case 0xE0...0xEF: length = 3; value = UInt32(lead & 0x0F); minimum = 0x800
                case 0xF0...0xF4: length = 4; value = UInt32(lead & 0x07); minimum = 0x10000
                default: failure = i; return
                }
                if i + length > n { failure = i; return }
                for k in 1..<length {
                    let byte = bytes[i + k]
                    if byte & 0xC0 != 0x80 { failure = i; return }
                    value = value << 6 | UInt32(byte & 0x3F)
                }
                guard value >= minimum, let scalar = Unicode.Scalar(value) else { failure = i; return }
                result.append(scalar)
                i += length
            }
        }
        if let offset = failure { throw .invalidUTF8(path: path, byteOffset: offset) }
        return result
    }
}

/// Why a corpus could not be loaded.
public enum CorpusError: Error, Equatable, CustomStringConvertible {
    case notFound(path: String)
    case isDirectory(path: String)
    case unreadable(path: String, reason: String)
    case empty(path: String)
    case invalidUTF8(path: String, byteOffset: Int)
    /// The path is a device or a socket (`kind` says which), not a text file.
    case notRegularFile(path: String, kind: String)

    public var description: String {
        switch self {
        case .notFound(let path): return "corpus file '\(path)' does not exist"
        case .isDirectory(let path): return "corpus '\(path)' is a directory, not a text file"
        case .unreadable(let path, let reason): return "cannot read corpus '\(path)': \(reason)"
        case .empty(let path): return "corpus file '\(path)' is empty"
        case .invalidUTF8(let path, let offset):
            return "corpus '\(path)' is not valid UTF-8: bad byte at offset \(offset)"
        case .notRegularFile(let path, let kind): return "corpus '\(path)' is \(kind), not a text file"
        }
    }
}
