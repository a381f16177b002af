import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writes files so that they appear under their final name only when complete:
/// write a temporary file in the same directory, flush it to disk, rename it
/// into place, then flush the directory. A crash at any moment leaves either
/// the old file or the new one, never a torn one.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to url: URL) throws(CheckpointError) {
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        func fail(_ what: String) -> CheckpointError {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            return CheckpointError(path: url.path, problem: .io("\(what): \(reason)"))
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create a temporary file in \(directory)") }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                written += n
            }
            return true
        }
        guard ok else { close(fd); throw fail("cannot write") }
        guard fsync(fd) == 0 else { close(fd); throw fail("cannot flush to disk") }
        guard close(fd) == 0 else { throw fail("cannot close") }
        guard rename(temporary, url.path) == 0 else { throw fail("cannot rename into place") }
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            _ = fsync(dirFD)
            close(dirFD)
        }
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
