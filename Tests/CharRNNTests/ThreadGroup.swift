import CharRNN
import Foundation

/// A `ProcessGroup` whose members are threads of this process, for testing
/// data-parallel training without MPI. Each collective operation is two
/// barriers: every member posts its input, then every member reads all of
/// them and computes the same result (sums taken in rank order), then
/// every member waits until all have read before the slots are reused.
final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let condition = NSCondition()
    private var arrived = 0
    private var generation = 0
    private var posted: [[Double]]

    init(size: Int) {
        self.size = size
        posted = Array(repeating: [], count: size)
    }

    /// Member `rank`'s handle.
    func member(_ rank: Int) -> Member { Member(group: self, rank: rank) }

    /// Posts `values` for `rank` and returns every member's, in rank order.
    fileprivate func exchange(_ values: [Double], rank: Int) -> [[Double]] {
        condition.lock()
        posted[rank] = values
        barrier()
        let all = posted
        barrier()
        condition.unlock()
        return all
    }

    /// Waits, holding the lock, until every member has arrived.
    private func barrier() {
        let mine = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
    }

    /// One member of a `ThreadGroup`.
    final class Member: ProcessGroup, @unchecked Sendable {
        let group: ThreadGroup
        let rank: Int
        var size: Int { group.size }
        /// Called with each gradient sum's input before it is posted (to inject faults).
        var beforeSum: ((UnsafeMutableBufferPointer<Float>) -> Void)? = nil

        init(group: ThreadGroup, rank: Int) {
            self.group = group
            self.rank = rank
        }

        func sum(_ values: UnsafeMutableBufferPointer<Float>) throws(ProcessGroupError) {
            beforeSum?(values)
            let all = group.exchange(values.map(Double.init), rank: rank)
            for index in values.indices {
                var total: Float = 0
                for member in all { total += Float(member[index]) }
                values[index] = total
            }
        }

        func sum(_ values: UnsafeMutableBufferPointer<Double>) throws(ProcessGroupError) {
            let all = group.exchange(Array(values), rank: rank)
            for index in values.indices { values[index] = all.reduce(0) { $0 + $1[index] } }
        }

        func gather(_ values: UnsafeBufferPointer<Float>) throws(ProcessGroupError) -> [Float] {
            let all = group.exchange(values.map(Double.init), rank: rank)
            return rank == 0 ? all.flatMap { $0.map(Float.init) } : []
        }

        func allGather(_ value: UInt64) throws(ProcessGroupError) -> [UInt64] {
            group.exchange([Double(bitPattern: value)], rank: rank).map { $0[0].bitPattern }
        }
    }

    /// Runs `body` once per member, each on its own thread, and returns
    /// their results in rank order.
    static func run<T>(size: Int, _ body: @escaping (Member) -> T) -> [T] {
        let group = ThreadGroup(size: size)
        let shared = ThreadResults(body, size)
        for rank in 0..<size {
            shared.done.enter()
            let thread = Thread {
                let result = shared.body(group.member(rank))
                shared.lock.lock()
                shared.results[rank] = result
                shared.lock.unlock()
                shared.done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        shared.done.wait()
        return shared.results.map { $0! }
    }
}

/// The threads' shared state in `ThreadGroup.run`: written under `lock`, read after `done`.
private final class ThreadResults<T>: @unchecked Sendable {
    let lock = NSLock()
    let done = DispatchGroup()
    let body: (ThreadGroup.Member) -> T
    var results: [T?]
    init(_ body: @escaping (ThreadGroup.Member) -> T, _ size: Int) {
        self.body = body
        results = Array(repeating: nil, count: size)
    }
}
