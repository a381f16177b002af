import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reading and writing the safetensors format, F32 only: an 8-byte
/// little-endian header length, a JSON header (tensor name → dtype, shape,
/// data_offsets; optional `__metadata__` of string → string), then the raw
/// little-endian data.
///
/// Reading is in two stages so that memory is bounded by what the caller
/// keeps, not by the file: `readLayout` reads only the header and checks every
/// number in it against the file's size; the caller then checks names and
/// shapes and reads the tensors it wants one by one with `readFloats`.
enum SafeTensors {
    /// A tensor to write: its values stay where they are until written.
    struct Tensor {
        let name: String
        let shape: [Int]
        let values: UnsafeBufferPointer<Float>
    }

    /// Where one stored tensor lies: its shape and its bytes, counted from
    /// the start of the data section.
    struct Entry: Equatable {
        let name: String
        let shape: [Int]
        let begin: Int
        let end: Int
        /// Number of floats.
        var count: Int { (end - begin) / 4 }
    }

    /// A file's header, checked against the file: metadata, and the tensors
    /// by name, tiling the data section exactly.
    struct Layout {
        let metadata: [String: String]
        let entries: [String: Entry]
        /// Byte offset of the data section in the file.
        let dataStart: Int
    }

    /// The largest header the reader accepts (safetensors' own limit).
    static let maximumHeaderLength = 100_000_000

    // MARK: - Writing

    /// The header's bytes (padded with spaces so the data that follows is
    /// 8-byte aligned), preceded by their length; the data follows in the
    /// order of `tensors`.
    static func header(tensors: [Tensor], metadata: [String: String]) -> [UInt8] {
        header(entries: tensors.map { (name: $0.name, dtype: "F32", shape: $0.shape, bytes: $0.values.count * 4) }, metadata: metadata)
    }

    /// The header of tensors of any dtype, given each one's size in bytes,
    /// laid out in the order given.
    static func header(entries: [(name: String, dtype: String, shape: [Int], bytes: Int)], metadata: [String: String]) -> [UInt8] {
        var header = "{\"__metadata__\":{"
        header += metadata.sorted { $0.key < $1.key }.map { "\(JSONString.literal($0.key)):\(JSONString.literal($0.value))" }
            .joined(separator: ",")
        header += "}"
        var offset = 0
        for entry in entries {
            header +=
                ",\(JSONString.literal(entry.name)):{\"dtype\":\"\(entry.dtype)\",\"shape\":["
                + entry.shape.map(String.init).joined(separator: ",")
                + "],\"data_offsets\":[\(offset),\(offset + entry.bytes)]}"
            offset += entry.bytes
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        return out
    }

    /// The whole file in memory.
    static func encode(tensors: [Tensor], metadata: [String: String]) -> [UInt8] {
        var out = header(tensors: tensors, metadata: metadata)
        out.reserveCapacity(out.count + tensors.reduce(0) { $0 + 4 * $1.values.count })
        for tensor in tensors {
            for value in tensor.values {
                withUnsafeBytes(of: value.bitPattern.littleEndian) { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// Writes the file to an open descriptor, the tensors straight from
    /// where they live (no copy of the model is made).
    static func write(tensors: [Tensor], metadata: [String: String], to sink: FileSink) throws(FileSink.Failure) {
        try sink.write(header(tensors: tensors, metadata: metadata))
        for tensor in tensors {
            #if _endian(big)
                try sink.write(tensor.values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) })
            #else
                try sink.write(UnsafeRawBufferPointer(tensor.values))
            #endif
        }
    }

    // MARK: - Reading

    /// Reads the header and checks it against the source's size. Reads no
    /// tensor data.
    static func readLayout(from source: ByteSource) throws(CheckpointProblem) -> Layout {
        let size = source.size
        guard size >= 8 else { throw .truncated(size: size) }
        let lengthBytes = try source.bytes(8, at: 0)
        var headerLength: UInt64 = 0
        for index in 0..<8 { headerLength |= UInt64(lengthBytes[index]) << (8 * UInt64(index)) }
        guard headerLength <= UInt64(maximumHeaderLength) else { throw .headerTooLarge(length: headerLength) }
        guard headerLength <= UInt64(size - 8) else { throw .headerPastEnd(length: headerLength, fileSize: size) }
        let headerEnd = 8 + Int(headerLength)
        let headerBytes = try source.bytes(Int(headerLength), at: 8)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(headerBytes))
        } catch let problem as HeaderProblem {
            throw problem.problem
        } catch {
            throw .invalidJSON
        }

        let dataSize = size - headerEnd
        var entries: [Entry] = []
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
            entries.append(Entry(name: name, shape: entry.shape, begin: begin, end: end))
        }
        // The data must be covered exactly: no overlaps, no holes, nothing after.
        entries.sort { $0.begin != $1.begin ? $0.begin < $1.begin : $0.end < $1.end }
        var expected = 0
        for entry in entries {
            guard entry.begin == expected else { throw .overlappingOrGap(name: entry.name) }
            expected = entry.end
        }
        guard expected == dataSize else { throw .trailingData(bytes: dataSize - expected) }
        return Layout(
            metadata: header.metadata,
            entries: Dictionary(entries.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first }),
            dataStart: headerEnd)
    }

    /// Reads one tensor's floats into `destination` (exactly `entry.count` floats).
    static func readFloats(
        _ entry: Entry, of layout: Layout, from source: ByteSource,
        into destination: UnsafeMutableBufferPointer<Float>
    ) throws(CheckpointProblem) {
        precondition(destination.count == entry.count, "destination must hold the tensor exactly")
        try source.read(into: UnsafeMutableRawBufferPointer(destination), at: layout.dataStart + entry.begin)
        #if _endian(big)
            for index in destination.indices {
                destination[index] = Float(bitPattern: UInt32(littleEndian: destination[index].bitPattern))
            }
        #endif
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

/// Bytes a checkpoint is read from: a file read piece by piece, or bytes
/// already in memory.
protocol ByteSource {
    /// Bytes in all.
    var size: Int { get }
    /// Fills `buffer` from `offset`; the range is inside `0..<size`.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointProblem)
}

extension ByteSource {
    /// `count` bytes from `offset`, as an array.
    func bytes(_ count: Int, at offset: Int) throws(CheckpointProblem) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: CheckpointProblem? = nil
        bytes.withUnsafeMutableBytes { raw in
            do throws(CheckpointProblem) { try read(into: raw, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }
}

/// Bytes in memory.
struct MemorySource: ByteSource {
    let bytes: [UInt8]
    var size: Int { bytes.count }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointProblem) {
        bytes.withUnsafeBytes { all in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: all[offset..<offset + buffer.count]))
        }
    }
}

/// A regular file opened for reading, read with `pread`. Opening refuses
/// anything that is not a regular file (a directory, a FIFO, a device)
/// without blocking on it, and takes the size once, so a file that shrinks
/// while it is read is reported as truncated instead of read past its end.
final class FileSource: ByteSource {
    let size: Int
    private let descriptor: Int32

    init(path: String) throws(CheckpointProblem) {
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            throw code == ENOENT ? .notFound : .io("cannot open: \(String(cString: strerror(code)))")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .io("cannot read its size: \(reason)")
        }
        let kind = info.st_mode & S_IFMT
        guard kind == S_IFREG else {
            close(fd)
            throw .notRegularFile(kind: FileSource.describe(kind))
        }
        descriptor = fd
        size = Int(info.st_size)
    }

    deinit { close(descriptor) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(CheckpointProblem) {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io("cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw .truncated(size: offset + done) }
            done += n
        }
    }

    /// What a file type is, in words.
    static func describe(_ kind: mode_t) -> String {
        switch kind {
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }
}
