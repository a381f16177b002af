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
        close(try Corpus.openForReading(path))
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

    /// Opens a text file for reading, after the checks every reader makes.
    /// - Throws: `CorpusError` if it is missing, a directory, a device or
    ///   socket, or cannot be opened.
    static func openForReading(_ path: String) throws(CorpusError) -> Int32 {
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
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        return descriptor
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
    /// sequence starts (see `UTF8ScalarDecoder`).
    static func decodeUTF8(_ data: Data, path: String) throws(CorpusError) -> [Unicode.Scalar] {
        var result: [Unicode.Scalar] = []
        result.reserveCapacity(data.count)
        var decoder = UTF8ScalarDecoder()
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            _ = decoder.decode(raw.bindMemory(to: UInt8.self)) { result.append($0) }
        }
        if let offset = decoder.finish() { throw .invalidUTF8(path: path, byteOffset: offset) }
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
    /// A character (the first at `offset`, counting characters) is not in
    /// the vocabulary it is encoded with; `path` is nil for a text in memory.
    case unknownCharacter(path: String?, scalar: Unicode.Scalar, offset: Int)

    public var description: String {
        switch self {
        case .notFound(let path): return "corpus file '\(path)' does not exist"
        case .isDirectory(let path): return "corpus '\(path)' is a directory, not a text file"
        case .unreadable(let path, let reason): return "cannot read corpus '\(path)': \(reason)"
        case .empty(let path): return "corpus file '\(path)' is empty"
        case .invalidUTF8(let path, let offset):
            return "corpus '\(path)' is not valid UTF-8: bad byte at offset \(offset)"
        case .notRegularFile(let path, let kind): return "corpus '\(path)' is \(kind), not a text file"
        case .unknownCharacter(let path, let scalar, let offset):
            return "corpus\(path.map { " '\($0)'" } ?? "") has character \(Vocabulary.describe(scalar)) at position \(offset), "
                + "which its vocabulary lacks (did the file change while it was read?)"
        }
    }
}
