import Synchronization

/// A request to stop a training run cleanly, made from anywhere (a signal
/// handler's thread, a user interface, a test) and seen by the trainer at
/// the end of the iteration it is in: it then validates, writes a
/// checkpoint at that iteration and returns. Safe to share between threads.
public final class StopSignal: Sendable {
    private let requested = Atomic<Bool>(false)

    /// A signal that has not been raised.
    public init() {}

    /// Asks the run to stop after its current iteration. Returns whether
    /// a stop had already been requested.
    @discardableResult
    public func request() -> Bool {
        requested.exchange(true, ordering: .sequentiallyConsistent)
    }

    /// Whether a stop has been requested.
    public var isRequested: Bool { requested.load(ordering: .sequentiallyConsistent) }
}
