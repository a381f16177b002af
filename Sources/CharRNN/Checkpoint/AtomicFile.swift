import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An open file being written, and what went wrong if a write fails.
struct FileSink {
    /// A failed system call: what was being done and the system's reason.
    struct Failure: Error {
        let operation: String
        let code: Int32
        var reason: String { String(cString: strerror(code)) }
    }

    let descriptor: Int32

    /// Writes all of `bytes`, retrying short and interrupted writes.
    func write(_ bytes: UnsafeRawBufferPointer) throws(Failure) { try write(bytes, at: nil) }

    /// Writes all of `bytes` at byte `offset` of the file (`pwrite`: the
    /// file's position does not move), or at its position when nil,
    /// retrying short and interrupted writes.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int?) throws(Failure) {
        var written = 0
        while written < bytes.count {
            let start = bytes.baseAddress! + written
            let count = bytes.count - written
            let n = offset.map { pwrite(descriptor, start, count, off_t($0 + written)) } ?? Glibc.write(descriptor, start, count)
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(operation: "cannot write", code: errno)
            }
            written += n
        }
    }

    /// Writes all of `bytes`.
    func write(_ bytes: [UInt8]) throws(Failure) {
        var failure: Failure? = nil
        bytes.withUnsafeBytes { raw in
            do throws(Failure) { try self.write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

/// Writes files so that they appear under their final name only when complete:
/// write a temporary file in the same directory, flush it to disk, rename it
/// into place, then flush the directory. A crash or a failure at any moment
/// leaves either the old file or the new one, never a torn one, and a failed
/// write removes its temporary file.
enum AtomicFile {
    /// Writes `bytes` to `url`.
    static func write(_ bytes: [UInt8], to url: URL) throws(CheckpointError) {
        try write(to: url) { (sink) throws(FileSink.Failure) in try sink.write(bytes) }
    }

    /// Writes what `body` writes to `url` and, when `alsoAs` is given, makes
    /// the same file appear under that name first (a hard link to the
    /// flushed temporary file, renamed into place; a second copy where the
    /// file system has no hard links). So when both names are wanted, the
    /// second exists before the first, and a kill between the two renames
    /// leaves the second complete.
    static func write(
        to url: URL, alsoAs second: URL? = nil,
        _ body: (FileSink) throws(FileSink.Failure) -> Void
    ) throws(CheckpointError) {
        let directory = url.deletingLastPathComponent().path
        func fail(_ failure: FileSink.Failure, _ temporaries: String...) -> CheckpointError {
            for temporary in temporaries { unlink(temporary) }
            return CheckpointError(path: url.path, problem: .io("\(failure.operation): \(failure.reason)"))
        }
        let temporary = try writeTemporary(in: directory, for: url.lastPathComponent, body)
        if let second {
            let linked = temporaryName(in: directory, for: second.lastPathComponent)
            if link(temporary, linked) == 0 {
                guard rename(linked, second.path) == 0 else {
                    throw fail(FileSink.Failure(operation: "cannot rename into place as \(second.lastPathComponent)", code: errno), linked, temporary)
                }
            } else {
                // No hard links here (some network and FUSE file systems): write a copy.
                let copy: String
                do { copy = try writeTemporary(in: directory, for: second.lastPathComponent, body) } catch {
                    unlink(temporary)
                    throw error
                }
                guard rename(copy, second.path) == 0 else {
                    throw fail(FileSink.Failure(operation: "cannot rename into place as \(second.lastPathComponent)", code: errno), copy, temporary)
                }
            }
        }
        guard rename(temporary, url.path) == 0 else {
            throw fail(FileSink.Failure(operation: "cannot rename into place", code: errno), temporary)
        }
        syncDirectory(directory)
    }

    /// Creates, fills and flushes a temporary file next to `name`; returns its path.
    private static func writeTemporary(
        in directory: String, for name: String,
        _ body: (FileSink) throws(FileSink.Failure) -> Void
    ) throws(CheckpointError) -> String {
        let temporary = temporaryName(in: directory, for: name)
        let target = directory + "/" + name
        func fail(_ failure: FileSink.Failure) -> CheckpointError {
            unlink(temporary)
            return CheckpointError(path: target, problem: .io("\(failure.operation): \(failure.reason)"))
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw fail(FileSink.Failure(operation: "cannot create a temporary file in \(directory)", code: errno))
        }
        do {
            try body(FileSink(descriptor: fd))
        } catch {
            close(fd)
            throw fail(error)
        }
        guard fsync(fd) == 0 else {
            let failure = FileSink.Failure(operation: "cannot flush to disk", code: errno)
            close(fd)
            throw fail(failure)
        }
        guard close(fd) == 0 else { throw fail(FileSink.Failure(operation: "cannot close", code: errno)) }
        return temporary
    }

    private static func temporaryName(in directory: String, for name: String) -> String {
        directory + "/." + name + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Flushes a directory's entries (the renames) to disk.
    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)  // best effort: some file systems refuse fsync on directories
            close(fd)
        }
    }

    /// Whether `name` is a temporary file of this writer.
    static func isTemporary(_ name: String) -> Bool {
        name.wholeMatch(of: #/^\..+\.tmp-\d+-\d+$/#) != nil
    }

    /// Removes temporary files that a writer killed mid-write left behind
    /// (`.NAME.tmp-PID-N` whose process is gone). They were never renamed
    /// into place, so no checkpoint is lost.
    static func removeStaleTemporaries(in directory: URL) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        for name in names {
            guard let match = name.wholeMatch(of: #/^\..+\.tmp-(\d+)-\d+$/#), let pid = Int32(match.output.1) else { continue }
            // kill(pid, 0) fails with ESRCH when no such process exists.
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                unlink(directory.appendingPathComponent(name).path)
            }
        }
    }
}
