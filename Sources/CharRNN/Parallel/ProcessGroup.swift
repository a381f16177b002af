/// The processes that train one model together (data parallelism): each
/// holds a share of every batch's streams, computes the gradient of its
/// share, and the group sums the gradients so every member takes the same
/// optimizer step.
///
/// The trainer calls these collective operations at the same points on
/// every member, in the same order; a member that stops calling them (an
/// error, a crash) must not leave the others waiting, which is why the
/// trainer first agrees on every failure (see `Trainer`). `SingleProcess`
/// is the group of one, where each operation returns its input; the
/// optional `CharRNNMPI` module (the package's `MPI` trait) provides a group
/// over MPI's world communicator.
public protocol ProcessGroup: AnyObject {
    /// This member's index, `0 ..< size`. Member 0 writes the run's files.
    var rank: Int { get }
    /// Members in the group (at least 1).
    var size: Int { get }
    /// Replaces `values` on every member by their element-wise sum over the group.
    func sum(_ values: UnsafeMutableBufferPointer<Float>) throws(ProcessGroupError)
    /// Replaces `values` on every member by their element-wise sum over the group.
    func sum(_ values: UnsafeMutableBufferPointer<Double>) throws(ProcessGroupError)
    /// Every member's `values` (the same count on each) joined in rank
    /// order, returned on member 0; the others get an empty array.
    func gather(_ values: UnsafeBufferPointer<Float>) throws(ProcessGroupError) -> [Float]
    /// Every member's `value`, in rank order, on every member.
    func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64]
}

/// Why a collective operation failed: the transport's own message.
public struct ProcessGroupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The operation that failed (`"sum"`, `"gather"`, …).
    public let operation: String
    /// What the transport reported.
    public let message: String

    /// An error for `operation` with the transport's `message`.
    public init(operation: String, message: String) {
        self.operation = operation
        self.message = message
    }

    public var description: String { "the processes could not \(operation): \(message)" }
}

/// The group of one process: every collective operation returns its input.
public final class SingleProcess: ProcessGroup {
    /// The one process.
    public init() {}
    /// Always 0.
    public var rank: Int { 0 }
    /// Always 1.
    public var size: Int { 1 }
    /// Leaves `values` as they are.
    public func sum(_ values: UnsafeMutableBufferPointer<Float>) throws(ProcessGroupError) {}
    /// Leaves `values` as they are.
    public func sum(_ values: UnsafeMutableBufferPointer<Double>) throws(ProcessGroupError) {}
    /// A copy of `values`.
    public func gather(_ values: UnsafeBufferPointer<Float>) throws(ProcessGroupError) -> [Float] { Array(values) }
    /// `[value]`.
    public func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64] { [value] }
}

extension ProcessGroup {
    /// The streams member `rank` holds of a batch of `batchSize`: an equal,
    /// contiguous share, in rank order.
    public func streams(ofBatch batchSize: Int) -> Range<Int> {
        let share = batchSize / size
        return rank * share..<(rank + 1) * share
    }

    /// How many members report `failed` (this one included); every member
    /// calls it at the same point. The trainer agrees on its set-up this
    /// way, so a member that fails before it reaches the trainer calls this
    /// with `true` to let the others stop too.
    public func countFailures(_ failed: Bool) throws(ProcessGroupError) -> Int {
        guard size > 1 else { return failed ? 1 : 0 }
        return Int(try sum([failed ? 1 : 0])[0])
    }

    /// The ranks whose `value` differs from member 0's (a hash of what must
    /// be the same on every member); empty when all agree.
    public func ranksDiffering(_ value: UInt64) throws(ProcessGroupError) -> [Int] {
        guard size > 1 else { return [] }
        let values = try allGather(value)
        return values.indices.filter { values[$0] != values[0] }
    }

    /// Sums a few doubles over the group (for losses and flags).
    func sum(_ values: [Double]) throws(ProcessGroupError) -> [Double] {
        var values = values
        let result: Result<Void, ProcessGroupError> = values.withUnsafeMutableBufferPointer { buffer in
            Result { () throws(ProcessGroupError) in try sum(buffer) }
        }
        try result.get()
        return values
    }
}
