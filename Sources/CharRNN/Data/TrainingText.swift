import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A training text as the trainer reads it: first its alphabet and length,
/// then the encoded stretch of it that this process's streams need (see
/// `BatchLayout.stretch(of:)`). `Corpus` is a text held in memory;
/// `CorpusFile` streams a file twice and holds only the stretch, so a text
/// larger than memory can be shared out among several processes.
public protocol TrainingText {
    /// The text's alphabet (its distinct scalars, sorted) and length.
    func survey() throws(CorpusError) -> TextSurvey
    /// Encodes characters `stretch` with `vocabulary`, one token per
    /// character in the smallest type the vocabulary allows, and
    /// fingerprints the whole text (`TextSurvey.fingerprint`).
    func encode(_ stretch: Range<Int>, with vocabulary: Vocabulary) throws(CorpusError) -> EncodedStretch
}

/// What a first pass over a text finds.
public struct TextSurvey: Sendable, Equatable {
    /// The distinct scalars, sorted by value.
    public let vocabulary: Vocabulary
    /// Characters (Unicode scalars, after line-ending normalisation).
    public let characterCount: Int
}

/// Part of an encoded text and the fingerprint of all of it.
public struct EncodedStretch: Sendable {
    /// The tokens of the stretch asked for.
    public let tokens: TokenStore
    /// A 64-bit FNV-1a hash of the whole text's token indices (hexadecimal),
    /// to recognise the same text when a run resumes.
    public let fingerprint: String
}

/// A running 64-bit FNV-1a hash, one step per 32-bit value: the corpus
/// fingerprint (one step per token, as checkpoints have always recorded
/// it), and the values processes compare.
struct FNV1a {
    private(set) var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    mutating func add(_ value: UInt32) { hash = (hash ^ UInt64(value)) &* 0x0000_0100_0000_01B3 }
    mutating func add(_ token: Int32) { add(UInt32(bitPattern: token)) }
    /// The hash in hexadecimal.
    var text: String { String(hash, radix: 16) }
}

/// Maps scalars to token indices by table: a dictionary lookup per
/// character would dominate a pass over a large file.
struct TokenTable {
    private var index: [Int32]
    init(_ vocabulary: Vocabulary) {
        index = [Int32](repeating: -1, count: Int((vocabulary.scalars.last?.value ?? 0) + 1))
        for (position, scalar) in vocabulary.scalars.enumerated() { index[Int(scalar.value)] = Int32(position) }
    }
    /// The scalar's index, or -1 if the vocabulary lacks it.
    func callAsFunction(_ scalar: Unicode.Scalar) -> Int32 {
        let value = Int(scalar.value)
        return value < index.count ? index[value] : -1
    }
}

extension Corpus: TrainingText {
    /// The alphabet and length of the text in memory.
    public func survey() throws(CorpusError) -> TextSurvey {
        TextSurvey(vocabulary: Vocabulary(corpus: scalars), characterCount: scalars.count)
    }

    /// Encodes `stretch` of the text in memory and fingerprints all of it.
    /// - Throws: `CorpusError.unknownCharacter` if a character is not in `vocabulary`.
    public func encode(_ stretch: Range<Int>, with vocabulary: Vocabulary) throws(CorpusError) -> EncodedStretch {
        let table = TokenTable(vocabulary)
        var tokens = TokenStore(alphabetSize: vocabulary.count)
        tokens.reserveCapacity(stretch.count)
        var fingerprint = FNV1a()
        for (position, scalar) in scalars.enumerated() {
            let token = table(scalar)
            guard token >= 0 else { throw .unknownCharacter(path: nil, scalar: scalar, offset: position) }
            fingerprint.add(token)
            if stretch.contains(position) { tokens.append(token) }
        }
        return EncodedStretch(tokens: tokens, fingerprint: fingerprint.text)
    }
}

/// A UTF-8 text file read in passes of fixed-size chunks, never held whole:
/// the first pass finds the alphabet and length (and checks the UTF-8), the
/// second encodes the stretch one process needs. Memory: the chunk, the
/// stretch's tokens (a byte each for up to 256 characters) and a table of
/// the alphabet.
public struct CorpusFile: TrainingText, Sendable {
    /// The file.
    public let url: URL
    /// How line endings are read (as `Corpus`).
    public let lineEndings: Corpus.LineEndings
    /// Bytes read per chunk.
    public let chunkSize: Int

    /// A file to read; nothing is read yet (`survey()` checks it).
    public init(url: URL, lineEndings: Corpus.LineEndings = .universal, chunkSize: Int = 1 << 20) {
        self.url = url
        self.lineEndings = lineEndings
        self.chunkSize = max(chunkSize, 4)
    }

    /// Reads the whole file once: its alphabet and length.
    /// - Throws: `CorpusError` naming the problem: missing, unreadable, a
    ///   directory or device, empty, or not UTF-8 (with the byte offset).
    public func survey() throws(CorpusError) -> TextSurvey {
        // A table for the first 256 scalars (most of most texts), a set for the rest.
        var seenLow = [Bool](repeating: false, count: 256)
        var seenHigh = Set<Unicode.Scalar>()
        var count = 0
        try scan { scalar in
            if scalar.value < 256 { seenLow[Int(scalar.value)] = true } else { seenHigh.insert(scalar) }
            count += 1
        }
        let low = (0..<256).compactMap { seenLow[$0] ? Unicode.Scalar(UInt32($0)) : nil }
        return TextSurvey(vocabulary: Vocabulary(corpus: low + seenHigh), characterCount: count)
    }

    /// Reads the whole file again, keeping the tokens of `stretch` only.
    /// - Throws: `CorpusError` as `survey()`, and `.unknownCharacter` if
    ///   the file holds a character `vocabulary` lacks (it changed since).
    public func encode(_ stretch: Range<Int>, with vocabulary: Vocabulary) throws(CorpusError) -> EncodedStretch {
        let table = TokenTable(vocabulary)
        var tokens = TokenStore(alphabetSize: vocabulary.count)
        tokens.reserveCapacity(stretch.count)
        var fingerprint = FNV1a()
        var position = 0
        var unknown: (Unicode.Scalar, Int)? = nil
        try scan { scalar in
            let token = table(scalar)
            if token < 0 {
                if unknown == nil { unknown = (scalar, position) }
                return
            }
            fingerprint.add(token)
            if position >= stretch.lowerBound && position < stretch.upperBound { tokens.append(token) }
            position += 1
        }
        if let (scalar, offset) = unknown { throw .unknownCharacter(path: url.path, scalar: scalar, offset: offset) }
        return EncodedStretch(tokens: tokens, fingerprint: fingerprint.text)
    }

    /// Calls `body` with each scalar of the file, line endings normalised.
    private func scan(_ body: (Unicode.Scalar) -> Void) throws(CorpusError) {
        let path = url.path
        let descriptor = try Corpus.openForReading(path)
        defer { close(descriptor) }
        var decoder = UTF8ScalarDecoder()
        var lines = LineEndingFilter(lineEndings)
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        var total = 0
        while true {
            let got = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, chunkSize) }
            if got < 0 {
                if errno == EINTR { continue }
                throw .unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if got == 0 { break }
            total += got
            let ok = chunk.withUnsafeBufferPointer { bytes in
                decoder.decode(UnsafeBufferPointer(rebasing: bytes[..<got])) { lines.feed($0, body) }
            }
            if !ok { break }
        }
        if total == 0 { throw .empty(path: path) }
        if let offset = decoder.finish() { throw .invalidUTF8(path: path, byteOffset: offset) }
    }
}

/// Turns "\r\n" and a lone "\r" into "\n" across chunk boundaries
/// (`Corpus.LineEndings.universal`), or passes scalars through.
struct LineEndingFilter {
    private let universal: Bool
    private var afterReturn = false
    init(_ lineEndings: Corpus.LineEndings) { universal = lineEndings == .universal }
    mutating func feed(_ scalar: Unicode.Scalar, _ body: (Unicode.Scalar) -> Void) {
        guard universal else { return body(scalar) }
        if scalar == "\n" && afterReturn {
            afterReturn = false
            return
        }
        afterReturn = scalar == "\r"
        body(afterReturn ? "\n" : scalar)
    }
}

/// Strict UTF-8 decoding fed in pieces: a sequence split between two
/// pieces is completed by the next. Reports the byte offset (from the
/// first piece) where the first invalid sequence starts, as Python's
/// UnicodeDecodeError does (overlong forms, surrogates and values past
/// U+10FFFF are rejected).
struct UTF8ScalarDecoder {
    /// The start of a sequence the last piece ended inside, and its offset.
    private var pending: [UInt8] = []
    private var pendingOffset = 0
    /// The offset of the next piece's first byte.
    private var base = 0
    private(set) var failure: Int? = nil

    /// Decodes `bytes`, calling `body` per scalar. Returns false once the
    /// input is invalid (then `finish()` gives the offset).
    mutating func decode(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Unicode.Scalar) -> Void) -> Bool {
        guard failure == nil else { return false }
        let base = self.base
        self.base += bytes.count
        var i = 0
        // Complete a sequence split across pieces, a byte at a time.
        while !pending.isEmpty && i < bytes.count {
            pending.append(bytes[i])
            i += 1
            switch pending.withUnsafeBufferPointer({ Self.step($0, 0) }) {
            case .scalar(let scalar, _):
                body(scalar)
                pending = []
            case .invalid:
                failure = pendingOffset
                return false
            case .incomplete: continue
            }
        }
        while i < bytes.count {
            let lead = bytes[i]
            if lead < 0x80 {
                body(Unicode.Scalar(lead))
                i += 1
                continue
            }
            switch Self.step(bytes, i) {
            case .scalar(let scalar, let length):
                body(scalar)
                i += length
            case .invalid:
                failure = base + i
                return false
            case .incomplete:
                pending = Array(bytes[i...])
                pendingOffset = base + i
                return true
            }
        }
        return true
    }

    /// The offset of the first invalid byte, if any (a sequence cut short
    /// by the end of the input is invalid).
    mutating func finish() -> Int? {
        if failure == nil && !pending.isEmpty { failure = pendingOffset }
        return failure
    }

    private enum Step {
        case scalar(Unicode.Scalar, Int)
        case invalid
        case incomplete
    }

    /// Decodes the sequence starting at `i`.
    private static func step(_ bytes: UnsafeBufferPointer<UInt8>, _ i: Int) -> Step {
        let lead = bytes[i]
        if lead < 0x80 { return .scalar(Unicode.Scalar(lead), 1) }
        let length: Int
        var value: UInt32
        let minimum: UInt32
        switch lead {
        case 0xC2...0xDF:
            length = 2
            value = UInt32(lead & 0x1F)
            minimum = 0x80
        case 0xE0...0xEF:
            length = 3
            value = UInt32(lead & 0x0F)
            minimum = 0x800
        case 0xF0...0xF4:
            length = 4
            value = UInt32(lead & 0x07)
            minimum = 0x10000
        default: return .invalid
        }
        let available = min(length, bytes.count - i)
        for k in 1..<available where bytes[i + k] & 0xC0 != 0x80 { return .invalid }
        if available < length { return .incomplete }
        for k in 1..<length { value = value << 6 | UInt32(bytes[i + k] & 0x3F) }
        guard value >= minimum, let scalar = Unicode.Scalar(value) else { return .invalid }
        return .scalar(scalar, length)
    }
}
