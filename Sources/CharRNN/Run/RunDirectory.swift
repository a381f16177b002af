import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A training run's directory, and the one place that knows its rules.
///
/// A run directory holds one run's checkpoints: `i{iteration}_l{hidden}_v{loss}.safetensors`
/// every time the run validates, and `best.safetensors`, the one with the
/// lowest validation loss. Every checkpoint carries its run's identity and
/// progress (`RunProgress`) in its metadata; the directory reads them from the
/// files' headers and never from their names. The rules:
///
/// - a new run starts only in a directory that holds no other run's
///   checkpoints (nothing of another run is ever replaced or deleted);
/// - one trainer at a time: a writer holds an advisory lock (`.charrnn-lock`,
///   which names its process) for as long as it is open;
/// - a checkpoint is written to a temporary file, flushed and renamed, and
///   when it is the run's best it appears as `best.safetensors` before it
///   appears under its own name; so once a run has a checkpoint, the
///   directory has a usable best (or, after a kill at the wrong moment, the
///   next writer restores it);
/// - pruning (`keep`) removes only this run's periodic checkpoints, ranked by
///   the exact validation loss in their metadata, and never the latest.
///
/// Readers (`best(in:)`, `latest(in:)`, `list(_:)`) take no lock: every file
/// they can see is complete.
public final class RunDirectory {
    /// The directory.
    public let url: URL
    /// The identity of the run that writes here.
    public let runID: String
    /// Whether opening created the directory (so abandoning it removes it).
    private let created: Bool
    /// The lock's descriptor while locked; -1 otherwise.
    private var lockDescriptor: Int32
    /// Whether a checkpoint has been written since opening.
    private var wroteCheckpoint = false

    /// The name of the best checkpoint.
    public static let bestName = "best.safetensors"
    /// The name of the lock file.
    static let lockName = ".charrnn-lock"
    /// The name of the run's metrics file (see `MetricsRecord`).
    public static let metricsName = "metrics.jsonl"
    /// The name of the run's loss chart, rewritten at every validation.
    public static let chartName = "loss.svg"

    // MARK: - Reading

    /// One checkpoint of a run found in a directory.
    public struct Entry: Sendable, Equatable {
        /// The file.
        public let url: URL
        /// Whether it is `best.safetensors`.
        public let isBest: Bool
        /// The run it belongs to (see `RunProgress.runIdentity(options:)`).
        public let runIdentity: String
        /// Where the run stood when it wrote the file.
        public let progress: RunProgress
    }

    /// What a directory holds.
    public struct Listing: Sendable, Equatable {
        /// Checkpoints of runs, best included, in no particular order.
        public var checkpoints: [Entry] = []
        /// `.safetensors` files that are not a run's checkpoint and could be
        /// overwritten by one (unreadable files, or a weights-only `best.safetensors`).
        public var foreign: [ForeignFile] = []

        /// The distinct runs, in order of their latest iteration (newest last).
        public var runIdentities: [String] {
            var seen: [String: Int] = [:]
            for entry in checkpoints { seen[entry.runIdentity] = max(seen[entry.runIdentity] ?? 0, entry.progress.iteration) }
            return seen.sorted { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }.map(\.key)
        }

        /// The checkpoints of one run.
        public func checkpoints(of run: String) -> [Entry] { checkpoints.filter { $0.runIdentity == run } }

        /// A short account of one run's checkpoints, for messages.
        public func summary(of run: String) -> RunSummary {
            let mine = checkpoints(of: run)
            return RunSummary(
                runIdentity: run, checkpointCount: mine.count,
                latestIteration: mine.map(\.progress.iteration).max() ?? 0,
                bestValidationLoss: mine.map(\.progress.validationLoss).min() ?? .nan)
        }

    }

    /// A `.safetensors` file in a run directory that is not a run's checkpoint.
    public struct ForeignFile: Sendable, Equatable {
        /// Its name in the directory.
        public let name: String
        /// Why it is not a run's checkpoint.
        public let problem: String
    }

    /// Reads the headers of every `.safetensors` file in `url` (never their
    /// tensor data) and sorts them into run checkpoints and the rest.
    public static func list(_ url: URL) throws(RunDirectoryError) -> Listing {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: url.path)
        } catch {
            throw .cannotList(path: url.path, reason: (error as NSError).localizedDescription)
        }
        var listing = Listing()
        for name in names.sorted() where name.hasSuffix(".safetensors") && !name.hasPrefix(".") {
            let file = url.appendingPathComponent(name)
            let metadata: [String: String]
            do {
                metadata = try Checkpoint.metadata(of: file)
            } catch {
                if case .notFound = error.problem { continue }  // removed while listing
                listing.foreign.append(ForeignFile(name: name, problem: error.problem.description))
                continue
            }
            guard metadata["iteration"] != nil else {
                // Weights only (a PyTorch export, a copied model): not a run's
                // checkpoint, and left alone unless a run would overwrite it.
                if name == bestName { listing.foreign.append(ForeignFile(name: name, problem: "it holds weights only, not a run's checkpoint")) }
                continue
            }
            do {
                let progress = try RunProgress(metadata: metadata)
                let options = try TrainingOptions(checkpointMetadata: metadata)
                listing.checkpoints.append(
                    Entry(
                        url: file, isBest: name == bestName,
                        runIdentity: progress.runIdentity(options: options), progress: progress))
            } catch {
                listing.foreign.append(ForeignFile(name: name, problem: error.description))
            }
        }
        return listing
    }

    /// The checkpoint to sample or evaluate from in a directory: its
    /// `best.safetensors`, or if that is missing (a kill at the wrong moment
    /// in an older version), the run's checkpoint with the lowest validation loss.
    public static func best(in url: URL) throws(RunDirectoryError) -> URL {
        let best = url.appendingPathComponent(bestName)
        if FileManager.default.fileExists(atPath: best.path) { return best }
        let listing = try list(url)
        let runs = listing.runIdentities
        guard runs.count <= 1 else { throw .severalRuns(path: url.path, runs: runs.map(listing.summary(of:))) }
        guard let lowest = listing.checkpoints.min(by: Self.betterOrder) else { throw .noCheckpoint(path: url.path) }
        return lowest.url
    }

    /// The checkpoint a run in `url` continues from: the one at the highest
    /// iteration (best included: it may be newer than every periodic file
    /// after a kill between the two renames of a save).
    public static func latest(in url: URL) throws(RunDirectoryError) -> Entry {
        let listing = try list(url)
        let runs = listing.runIdentities
        guard runs.count <= 1 else { throw .severalRuns(path: url.path, runs: runs.map(listing.summary(of:))) }
        guard let latest = latestEntry(listing.checkpoints) else { throw .noCheckpoint(path: url.path) }
        return latest
    }

    /// The newest entry; of two at one iteration, the periodic file.
    private static func latestEntry(_ entries: [Entry]) -> Entry? {
        entries.max { a, b in
            a.progress.iteration != b.progress.iteration ? a.progress.iteration < b.progress.iteration : a.isBest && !b.isBest
        }
    }

    /// Lower validation loss first; of equal losses, the later iteration.
    private static func betterOrder(_ a: Entry, _ b: Entry) -> Bool {
        a.progress.validationLoss != b.progress.validationLoss
            ? a.progress.validationLoss < b.progress.validationLoss : a.progress.iteration > b.progress.iteration
    }

    // MARK: - Writing

    /// Opens `url` for a new run: creates it if missing, takes the lock,
    /// refuses a directory that holds another run's checkpoints (or a
    /// `.safetensors` file a run could overwrite), and writes a test file, so
    /// an unwritable place is found before any training.
    public static func openForNewRun(at url: URL, runID: String = RunProgress.newRunID()) throws(RunDirectoryError) -> RunDirectory {
        try opening(url, runID: runID)
    }

    /// Opens `url` to continue the run `runIdentity`: creates it if missing,
    /// takes the lock, refuses checkpoints of any other run, and restores a
    /// missing `best.safetensors` from the run's lowest-loss checkpoint.
    public static func openForResume(at url: URL, runIdentity: String) throws(RunDirectoryError) -> RunDirectory {
        try opening(url, runID: runIdentity)
    }

    /// Both openings: a new run is one whose identity no checkpoint has yet.
    private static func opening(_ url: URL, runID: String) throws(RunDirectoryError) -> RunDirectory {
        let directory = try RunDirectory(url: url, runID: runID)
        do throws(RunDirectoryError) {
            let listing = try list(url)
            if let other = listing.runIdentities.last(where: { $0 != runID }) {
                throw RunDirectoryError.holdsAnotherRun(path: url.path, listing.summary(of: other))
            }
            if let file = listing.foreign.first { throw RunDirectoryError.holdsForeignFile(path: url.path, name: file.name, problem: file.problem) }
            try directory.testWrite()
            let mine = listing.checkpoints(of: runID)
            if !mine.contains(where: \.isBest), let lowest = mine.min(by: betterOrder) {
                try directory.publish(lowest.url, as: bestName)
            }
        } catch {
            directory.abandon()
            throw error
        }
        return directory
    }

    /// Creates the directory if needed and takes its lock.
    private init(url: URL, runID: String) throws(RunDirectoryError) {
        self.url = url
        self.runID = runID
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        if exists && !isDirectory.boolValue { throw .notADirectory(path: url.path) }
        if !exists { try Self.makeDirectories(url.path) }
        created = !exists
        lockDescriptor = -1
        do {
            try lock()
        } catch {
            if !exists { rmdir(url.path) }
            throw error
        }
        AtomicFile.removeStaleTemporaries(in: url)
    }

    /// Creates `path` and any missing parents, reporting the system's reason
    /// for a failure (mode 0755, as `mkdir -p`).
    private static func makeDirectories(_ path: String) throws(RunDirectoryError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return }
            throw .cannotCreate(path: path, reason: "'\(path)' is a file")
        }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw .cannotCreate(path: path, reason: String(cString: strerror(errno)))
        }
    }

    /// Takes the directory's advisory lock (if this object does not hold it
    /// already) and writes this process's ID into the lock file, so a second
    /// writer can be told who holds it. The kernel releases the lock when the
    /// process ends, however it ends.
    public func lock() throws(RunDirectoryError) {
        guard lockDescriptor < 0 else { return }
        let lockPath = url.appendingPathComponent(Self.lockName).path
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .notWritable(path: url.path, reason: String(cString: strerror(errno))) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buffer, buffer.count, 0)
            Glibc.close(fd)
            let holder = n > 0 ? Int32(String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) : nil
            if code == EWOULDBLOCK { throw .locked(path: url.path, processID: holder) }
            throw .notWritable(path: url.path, reason: String(cString: strerror(code)))
        }
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) != 0 || pwrite(fd, pid, pid.count, 0) != pid.count {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw .notWritable(path: url.path, reason: reason)
        }
        lockDescriptor = fd
    }

    deinit {
        close()
    }

    /// Releases the lock (`lock()` takes it again). The directory and its files stay.
    public func close() {
        guard lockDescriptor >= 0 else { return }
        Glibc.close(lockDescriptor)  // releases the flock
        lockDescriptor = -1
    }

    /// Releases the lock and, if opening created the directory and no
    /// checkpoint was written, removes it again: a run refused before it
    /// started leaves nothing behind.
    public func abandon() {
        let removable = created && !wroteCheckpoint
        if removable { unlink(url.appendingPathComponent(Self.lockName).path) }
        close()
        if removable { rmdir(url.path) }  // only if empty: never removes anything else
    }

    /// Writes, flushes, renames and removes a small file, as a checkpoint is
    /// written, so a directory where that fails is refused at once.
    private func testWrite() throws(RunDirectoryError) {
        let probe = url.appendingPathComponent(".charrnn-write-test")
        do {
            try AtomicFile.write(Array("charrnn\n".utf8), to: probe)
        } catch {
            throw .notWritable(path: url.path, reason: error.problem.description)
        }
        unlink(probe.path)
    }

    /// Makes `file` (a checkpoint in this directory) appear also as `name`:
    /// a hard link renamed into place, or a copy where there are no links.
    private func publish(_ file: URL, as name: String) throws(RunDirectoryError) {
        let source: FileSource
        do { source = try FileSource(path: file.path) } catch {
            throw .checkpoint(CheckpointError(path: file.path, problem: error))
        }
        do throws(CheckpointError) {
            let target = url.appendingPathComponent(name)
            let temporary = url.appendingPathComponent(".\(name).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
            if link(file.path, temporary) == 0 {
                guard rename(temporary, target.path) == 0 else {
                    let reason = String(cString: strerror(errno))
                    unlink(temporary)
                    throw CheckpointError(path: target.path, problem: .io("cannot rename into place: \(reason)"))
                }
                AtomicFile.syncDirectory(url.path)
            } else {
                try AtomicFile.write(to: target) { (sink) throws(FileSink.Failure) in
                    var offset = 0
                    while offset < source.size {
                        let count = min(1 << 20, source.size - offset)
                        let chunk: [UInt8]
                        do { chunk = try source.bytes(count, at: offset) } catch {
                            throw FileSink.Failure(operation: "cannot read \(file.lastPathComponent)", code: EIO)
                        }
                        try sink.write(chunk)
                        offset += count
                    }
                }
            }
        } catch {
            throw .checkpoint(error)
        }
    }

    // MARK: - Checkpoints

    /// A checkpoint written by `save`.
    struct Saved {
        /// The periodic file.
        let url: URL
        /// Whether it also became `best.safetensors`.
        let isBest: Bool
    }

    /// Writes a checkpoint of this run at `progress`: the periodic file, and
    /// first `best.safetensors` when its validation loss is below the current
    /// best's (read from that file's metadata, exactly).
    func save(
        progress: RunProgress, hiddenSize: Int,
        _ write: (FileSink) throws(FileSink.Failure) -> Void
    ) throws(RunDirectoryError) -> Saved {
        try lock()
        let name = String(format: "i%d_l%d_v%.3f.safetensors", progress.iteration, hiddenSize, progress.validationLoss)
        let bestURL = url.appendingPathComponent(Self.bestName)
        var isBest = true
        if let metadata = try? Checkpoint.metadata(of: bestURL), let current = try? RunProgress(metadata: metadata) {
            isBest = progress.validationLoss < current.validationLoss
        }
        do {
            try AtomicFile.write(to: url.appendingPathComponent(name), alsoAs: isBest ? bestURL : nil, write)
        } catch {
            throw .checkpoint(error)
        }
        wroteCheckpoint = true
        return Saved(url: url.appendingPathComponent(name), isBest: isBest)
    }

    /// Removes this run's periodic checkpoints beyond the `keep` with the
    /// lowest validation loss (exact, from their metadata; ties: the later
    /// iteration stays), never the latest one (the run's resume point), never
    /// `best.safetensors`, and never another run's file. Returns the files
    /// removed. A file already gone is not an error.
    @discardableResult
    func prune(keeping keep: Int) throws(RunDirectoryError) -> [URL] {
        try lock()
        let mine = try Self.list(url).checkpoints(of: runID).filter { !$0.isBest }
        let latest = Self.latestEntry(mine)
        let ranked = mine.sorted(by: Self.betterOrder)
        var removed: [URL] = []
        for stale in ranked.dropFirst(keep) where stale != latest {
            if unlink(stale.url.path) != 0 && errno != ENOENT {
                throw .checkpoint(CheckpointError(path: stale.url.path, problem: .io("cannot remove: \(String(cString: strerror(errno)))")))
            }
            removed.append(stale.url)
        }
        return removed
    }
}

/// A short account of one run's checkpoints in a directory.
public struct RunSummary: Sendable, Equatable {
    /// The run's identity.
    public let runIdentity: String
    /// How many of its checkpoints are there (best included).
    public let checkpointCount: Int
    /// The highest iteration among them.
    public let latestIteration: Int
    /// The lowest validation loss among them.
    public let bestValidationLoss: Float
}

/// Why a run directory could not be read or used.
public enum RunDirectoryError: Error, Equatable, CustomStringConvertible {
    /// The path exists and is not a directory.
    case notADirectory(path: String)
    /// The directory could not be created.
    case cannotCreate(path: String, reason: String)
    /// A file could not be created, written, flushed or renamed there.
    case notWritable(path: String, reason: String)
    /// Its files could not be listed.
    case cannotList(path: String, reason: String)
    /// Another process holds the directory's lock (its process ID, when known).
    case locked(path: String, processID: Int32?)
    /// It holds checkpoints of another run.
    case holdsAnotherRun(path: String, RunSummary)
    /// It holds checkpoints of several runs, so which to use is not clear.
    case severalRuns(path: String, runs: [RunSummary])
    /// It holds a `.safetensors` file that is not a run's checkpoint and
    /// that a run could overwrite, or that cannot be read.
    case holdsForeignFile(path: String, name: String, problem: String)
    /// It holds no checkpoint of a run.
    case noCheckpoint(path: String)
    /// Writing or removing a checkpoint failed.
    case checkpoint(CheckpointError)
    /// A file of the run other than a checkpoint (its metrics, its chart) could not be written.
    case cannotWrite(path: String, reason: String)
    /// A file of the run could not be read.
    case cannotRead(path: String, reason: String)

    public var description: String {
        switch self {
        case .notADirectory(let path): return "'\(path)' is a file, not a directory"
        case .cannotCreate(let path, let reason): return "cannot create directory '\(path)': \(reason)"
        case .notWritable(let path, let reason): return "cannot write checkpoints in '\(path)': \(reason)"
        case .cannotList(let path, let reason): return "cannot list '\(path)': \(reason)"
        case .locked(let path, let pid):
            return "'\(path)' is in use by another training run (" + (pid.map { "process \($0)" } ?? "another process") + ")"
        case .holdsAnotherRun(let path, let run):
            return "'\(path)' already holds another run's checkpoints (\(Self.describe(run)))"
        case .severalRuns(let path, let runs):
            return "'\(path)' holds checkpoints of \(runs.count) runs (" + runs.map(Self.describe).joined(separator: "; ") + ")"
        case .holdsForeignFile(let path, let name, let problem):
            return "'\(path)' holds '\(name)', which is not a checkpoint of this run (\(problem))"
        case .noCheckpoint(let path): return "'\(path)' holds no checkpoint of a training run"
        case .checkpoint(let error): return error.description
        case .cannotWrite(let path, let reason): return "cannot write '\(path)': \(reason)"
        case .cannotRead(let path, let reason): return "cannot read '\(path)': \(reason)"
        }
    }

    static func describe(_ run: RunSummary) -> String {
        "\(run.checkpointCount) checkpoint\(run.checkpointCount == 1 ? "" : "s"), the latest at iteration \(run.latestIteration), "
            + "best validation loss \(String(format: "%.4f", run.bestValidationLoss))"
    }
}
