import CCharRNN
import Foundation

extension Benchmark {
    /// One kind of matrix product in a training step: what it is in the
    /// model and its shape as one thread makes it, how often and how fast the
    /// step makes it, and the machine's own rate for that shape.
    ///
    /// Every product runs single-threaded on one core (the core splits the
    /// work across its threads itself), so the rates here are per core.
    public struct ProductKind: Sendable, Codable, Equatable {
        /// What the product is in the model: `recurrent`, `dW_hh`, `logits`, …
        public let name: String
        /// Whether A is transposed (op(A) = Aᵀ).
        public let transposedA: Bool
        /// Whether B is transposed.
        public let transposedB: Bool
        /// Rows of C.
        public let m: Int
        /// Columns of C.
        public let n: Int
        /// The inner dimension.
        public let k: Int
        /// Calls per training step, over all threads.
        public let callsPerStep: Int
        /// Seconds per step inside these calls, summed over the threads
        /// (median over the measured steps).
        public let threadSecondsPerStep: Double
        /// Seconds per call when every thread makes this product at once and
        /// nothing else runs (the fastest of five runs); 0 until measured.
        public var aloneSecondsPerCall: Double = 0

        /// Floating-point operations of one call (2 per multiply-add).
        public var flopsPerCall: Double { 2 * Double(m) * Double(n) * Double(k) }
        /// GFLOP/s per core inside the training step.
        public var gflopsPerCoreInStep: Double { Double(callsPerStep) * flopsPerCall / threadSecondsPerStep / 1e9 }
        /// GFLOP/s per core of the same product made alone.
        public var gflopsPerCoreAlone: Double { flopsPerCall / aloneSecondsPerCall / 1e9 }
        /// The product as a formula: `A·Bᵀ`, `A·B`, `Aᵀ·B` or `Aᵀ·Bᵀ`.
        public var operation: String { (transposedA ? "Aᵀ" : "A") + "·" + (transposedB ? "Bᵀ" : "B") }

        /// The kinds in logged runs of the same step (one list of entries per
        /// run), in the order thread 0 first made them.
        static func kinds(of runs: [[ProductLog.Entry]]) -> [ProductKind] {
            struct Key: Hashable {
                let name: String
                let transposedA: Bool, transposedB: Bool
                let m: Int, n: Int, k: Int
            }
            func key(_ entry: ProductLog.Entry) -> Key {
                Key(name: entry.name, transposedA: entry.transposedA, transposedB: entry.transposedB, m: entry.m, n: entry.n, k: entry.k)
            }
            var order: [Key] = []
            for entry in (runs.first ?? []).sorted(by: { $0.thread < $1.thread }) where !order.contains(key(entry)) {
                order.append(key(entry))
            }
            var calls: [Key: Int] = [:]
            var seconds: [Key: [Double]] = [:]
            for run in runs {
                var runCalls: [Key: Int] = [:]
                var runSeconds: [Key: Double] = [:]
                for entry in run {
                    runCalls[key(entry), default: 0] += 1
                    runSeconds[key(entry), default: 0] += entry.seconds
                }
                for (key, value) in runSeconds { seconds[key, default: []].append(value) }
                calls = runCalls
            }
            return order.map { key in
                ProductKind(
                    name: key.name, transposedA: key.transposedA, transposedB: key.transposedB, m: key.m, n: key.n, k: key.k,
                    callsPerStep: calls[key] ?? 0, threadSecondsPerStep: Trainer.median(seconds[key] ?? []))
            }
        }

        /// This kind with its rate alone measured: every thread makes the
        /// product at once, repeated for about 50 ms (up to 1,000 calls in
        /// one parallel region, so waking the team is not counted), five
        /// times; the fastest is kept, since it is a limit being measured
        /// and a shared machine's noise only ever slows a run.
        func measuredAlone() throws(ModelError) -> ProductKind {
            let threads = max(1, ComputeRuntime.current.computeThreads)
            let a = try Benchmark.buffer(m * k)
            let b = try Benchmark.buffer(k * n)
            let c = try Benchmark.buffer(threads * m * n)
            var generator = SplitMix(seed: 5)
            for i in 0..<a.count { a.baseAddress[i] = Float(generator.next() % 1000) / 1000 - 0.5 }
            for i in 0..<b.count { b.baseAddress[i] = Float(generator.next() % 1000) / 1000 - 0.5 }
            var product = charrnn_product(
                thread: 0, trans_a: transposedA ? 1 : 0, trans_b: transposedB ? 1 : 0, m: Int32(m), n: Int32(n), k: Int32(k),
                name: nil, seconds: 0)
            func perCall(repeats: Int) throws(ModelError) -> Double {
                c.zero()  // accumulating into C: keep it small
                var seconds: Double = 0
                try ModelError.check(
                    charrnn_product_on_every_thread(
                        &product, Int32(repeats), a.baseAddress, b.baseAddress, c.baseAddress, &seconds),
                    "charrnn_product_on_every_thread")
                return seconds
            }
            let first = try perCall(repeats: 1)  // also the warm-up
            let repeats = max(1, min(1000, Int(0.05 / max(first, 1e-7))))
            var times: [Double] = []
            for _ in 0..<5 { times.append(try perCall(repeats: repeats)) }
            var measured = self
            measured.aloneSecondsPerCall = times.min() ?? first
            return measured
        }
    }

    /// The FMA units' own rate per core, with every thread of the team
    /// running independent multiply-adds at once: the ceiling for any
    /// product.
    public struct FMAPeak: Sendable, Codable, Equatable {
        /// What ran, e.g. `AVX2 FMA` (the widest the CPU has).
        public let instructions: String
        /// GFLOP/s per core: the fastest of 5 runs of about 0.1 s (a limit:
        /// a shared machine's noise only ever slows a run).
        public let gflopsPerCore: Double
        /// The threads that ran at once.
        public let threads: Int
    }

    /// Measures the FMA units' rate per core on every thread at once.
    public static func fmaPeak() throws(ModelError) -> FMAPeak {
        var flops: Double = 0
        var instructions: UnsafePointer<CChar>? = nil
        func run(_ rounds: Int64) throws(ModelError) -> Double {
            var seconds: Double = 0
            try ModelError.check(charrnn_fma_loop(rounds, &flops, &seconds, &instructions), "charrnn_fma_loop")
            return seconds
        }
        let probe: Int64 = 100_000
        let seconds = try run(probe)
        let rounds = max(probe, Int64(Double(probe) * 0.1 / max(seconds, 1e-6)))
        var rates: [Double] = []
        for _ in 0..<5 {
            let time = try run(rounds)
            rates.append(flops / time / 1e9)
        }
        return FMAPeak(
            instructions: instructions.map { String(cString: $0) } ?? "unknown", gflopsPerCore: rates.max() ?? 0,
            threads: max(1, ComputeRuntime.current.computeThreads))
    }
}

/// The core's product log (charrnn_measure.h), attached while a body runs:
/// every matrix product the core makes into the given outputs, on any
/// thread, with its name, shape and time. The core has one log for the
/// process, so recordings take turns.
final class ProductLog {
    /// One product the core made.
    struct Entry: Sendable, Equatable {
        let thread: Int
        let name: String
        let transposedA: Bool, transposedB: Bool
        let m: Int, n: Int, k: Int
        let seconds: Double
    }

    private static let turn = NSLock()
    private var capacity = 1 << 12

    /// Runs `body` with the log attached to `outputs` and returns what it
    /// recorded. A body that makes more products than the log holds is run
    /// again with room for them all, so it must be repeatable.
    func recording(into outputs: FloatBuffer, _ body: () throws(ModelError) -> Void) throws(ModelError) -> [Entry] {
        Self.turn.lock()
        defer { Self.turn.unlock() }
        while true {
            let entries = UnsafeMutablePointer<charrnn_product>.allocate(capacity: capacity)
            defer { entries.deallocate() }
            var log = charrnn_product_log(entries: entries, capacity: Int64(capacity), count: 0)
            let made = try withUnsafeMutablePointer(to: &log) { log throws(ModelError) -> Int in
                try ModelError.check(charrnn_log_products(log, outputs.baseAddress, outputs.count), "charrnn_log_products")
                defer {
                    // Detaching (no log) has nothing to check that can fail; a status other than OK is a broken core.
                    let detached = charrnn_log_products(nil, nil, 0)
                    precondition(detached == CHARRNN_OK, "charrnn_log_products(NULL) failed with status \(detached.rawValue)")
                }
                try body()
                return Int(log.pointee.count)
            }
            if made > capacity {
                capacity = made
                continue
            }
            return (0..<made).map { index in
                let product = entries[index]
                return Entry(
                    thread: Int(product.thread), name: product.name.map { String(cString: $0) } ?? "", transposedA: product.trans_a != 0,
                    transposedB: product.trans_b != 0, m: Int(product.m), n: Int(product.n), k: Int(product.k),
                    seconds: product.seconds)
            }
        }
    }
}
