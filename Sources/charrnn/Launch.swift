import CharRNN
import Foundation

#if MPI
    import CharRNNMPI
#endif

/// The processes a `charrnn train` runs with: one, or the N that `mpirun`
/// started (in a build with the package's `MPI` trait). Rank 0 prints the
/// log and writes the run; the others train silently.
struct Launch {
    /// The group the trainer sums gradients over.
    let group: any ProcessGroup
    /// Ends MPI, if it was started.
    private let end: () -> Void

    /// Environment variables by which MPI launchers announce the world size.
    static let sizeVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"]
    /// … and this process's rank.
    static let rankVariables = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"]

    /// The rank a launcher announced (before MPI starts), or 0.
    static var announcedRank: Int {
        let environment = ProcessInfo.processInfo.environment
        return rankVariables.lazy.compactMap { environment[$0].flatMap(Int.init) }.first ?? 0
    }

    /// One process, or MPI's world when a launcher started several.
    /// - Throws: a usage error when a launcher started several processes of a
    ///   build without MPI (they would each train the whole run, and fight
    ///   over one run directory).
    static func start() throws -> Launch {
        let environment = ProcessInfo.processInfo.environment
        let launched = sizeVariables.lazy.compactMap { environment[$0].flatMap(Int.init) }.first ?? 1
        guard launched > 1 else { return Launch(group: SingleProcess(), end: {}) }
        #if MPI
            let world = try MPIProcessGroup.world()
            return Launch(
                group: try FaultyGroup.wrapping(world),
                end: {
                    do {
                        try world.finalize()
                    } catch {
                        FileHandle.standardError.write(Data("charrnn: warning: \(error)\n".utf8))
                    }
                })
        #else
            throw UsageError(
                "this charrnn was built without MPI, but was started as one of \(launched) processes; "
                    + "build it with: swift build -c release --traits MPI")
        #endif
    }

    /// This process's rank.
    var rank: Int { group.rank }

    /// Ends MPI after the last collective operation.
    func finish() { end() }

    /// Takes part, as a process that failed, in the set-up agreement the
    /// other processes make inside `Trainer`'s initialiser (see
    /// `Trainer.init(corpus:options:outputDirectory:initialWeights:group:)`),
    /// so they stop too instead of waiting for this one.
    func agreeOnFailedSetUp() {
        _ = try? group.countFailures(true)
    }

    /// Whether this process prints `error`: rank 0 prints every error;
    /// another rank only one that may be its own alone (its copy of the
    /// corpus, its memory, its MPI link), named with its rank. Errors every
    /// process meets alike (options, divergence) are printed once.
    func prints(_ error: Error) -> Bool {
        guard rank > 0 else { return true }
        switch error {
        case let error as TrainingError:
            switch error {
            case .corpus, .insufficientMemory, .processGroup, .model, .checkpoint: return true
            default: return false
            }
        case is CheckpointError, is CorpusError, is ProcessGroupError: return true
        default: return false
        }
    }

    /// The error line's text, naming the rank when there are several.
    func message(_ text: String) -> String { group.size > 1 && rank > 0 ? "rank \(rank): \(text)" : text }
}

/// A fault for tests of a run of several processes, set by the environment
/// variable `CHARRNN_FAULT=nan-gradient:RANK:K`: process RANK's gradient
/// gets a NaN just before its K-th sum (its K-th iteration from the start
/// of this launch), as a numeric fault on one host would. Read only in
/// runs of several processes.
final class FaultyGroup: ProcessGroup {
    private let inner: any ProcessGroup
    private let sumIndex: Int
    private var sums = 0

    /// `inner`, with the fault `CHARRNN_FAULT` names for this rank, or `inner` itself.
    static func wrapping(_ inner: any ProcessGroup) throws -> any ProcessGroup {
        guard inner.size > 1, let fault = ProcessInfo.processInfo.environment["CHARRNN_FAULT"] else { return inner }
        let parts = fault.split(separator: ":")
        guard parts.count == 3, parts[0] == "nan-gradient", let rank = Int(parts[1]), let index = Int(parts[2]), index >= 1 else {
            throw UsageError("CHARRNN_FAULT must be nan-gradient:RANK:K (got '\(fault)')")
        }
        return rank == inner.rank ? FaultyGroup(inner, sumIndex: index) : inner
    }

    private init(_ inner: any ProcessGroup, sumIndex: Int) {
        self.inner = inner
        self.sumIndex = sumIndex
    }

    var rank: Int { inner.rank }
    var size: Int { inner.size }

    func sum(_ values: UnsafeMutableBufferPointer<Float>) throws(ProcessGroupError) {
        sums += 1
        if sums == sumIndex && !values.isEmpty { values[0] = .nan }
        try inner.sum(values)
    }

    func sum(_ values: UnsafeMutableBufferPointer<Double>) throws(ProcessGroupError) { try inner.sum(values) }
    func gather(_ values: UnsafeBufferPointer<Float>) throws(ProcessGroupError) -> [Float] { try inner.gather(values) }
    func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64] { try inner.allGather(value) }
}
