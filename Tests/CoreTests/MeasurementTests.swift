import CCharRNN
import Testing

/// Protects the two limits `charrnn bench` sets a training step's products
/// beside: a product made alone on every thread, and the FMA units' rate.
/// Their figures are never asserted (a shared machine's times are not);
/// what each call computes and counts is.
@Suite("Measurement entries")
struct MeasurementTests {
    /// The threads a team of the core has.
    static var teamSize: Int {
        var runtime = charrnn_runtime()
        charrnn_runtime_get(&runtime)
        return max(1, Int(runtime.compute_threads))
    }

    /// op(A)·op(B) made the plain way, row-major, for a product's shape.
    static func product(_ p: charrnn_product, _ a: [Float], _ b: [Float]) -> [Float] {
        let (m, n, k) = (Int(p.m), Int(p.n), Int(p.k))
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum: Float = 0
                for l in 0..<k {
                    let x = p.trans_a != 0 ? a[l * m + i] : a[i * k + l]
                    let y = p.trans_b != 0 ? b[j * k + l] : b[l * n + j]
                    sum += x * y
                }
                c[i * n + j] = sum
            }
        }
        return c
    }

    @Test(
        "Every thread makes the product it is given, as often as asked, into its own block of C",
        arguments: [(0, 1, 7), (1, 0, 5), (0, 0, 9), (0, 1, 1)])
    func everyThreadMakesTheProduct(transA: Int32, transB: Int32, m: Int32) {
        let shape = charrnn_product(thread: 0, trans_a: transA, trans_b: transB, m: m, n: 6, k: 11, name: nil, seconds: 0)
        let a = (0..<Int(m) * 11).map { Float($0 % 7) / 7 - 0.4 }
        let b = (0..<11 * 6).map { Float($0 % 5) / 5 - 0.3 }
        let threads = Self.teamSize
        var c = [Float](repeating: 0, count: threads * Int(m) * 6)
        var product = shape
        var secondsPerCall: Double = -1
        let status = charrnn_product_on_every_thread(&product, 3, a, b, &c, &secondsPerCall)
        #expect(status == CHARRNN_OK)
        #expect(secondsPerCall > 0)
        // Accumulated three times (beta 1) into every thread's block.
        let once = Self.product(shape, a, b)
        for thread in 0..<threads {
            let block = c[thread * once.count..<(thread + 1) * once.count]
            let worst = zip(block, once).map { abs($0 - 3 * $1) }.max() ?? .infinity
            #expect(worst < 1e-4, "thread \(thread) is off by \(worst)")
        }
    }

    @Test("A product on every thread refuses a missing buffer, an empty shape and no repeats")
    func productOnEveryThreadRefusesBadArguments() {
        var product = charrnn_product(thread: 0, trans_a: 0, trans_b: 1, m: 2, n: 2, k: 2, name: nil, seconds: 0)
        let a: [Float] = [1, 2, 3, 4]
        var c = [Float](repeating: 0, count: 4 * Self.teamSize)
        var seconds: Double = 0
        #expect(charrnn_product_on_every_thread(&product, 1, a, nil, &c, &seconds) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_product_on_every_thread(&product, 1, a, a, &c, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_product_on_every_thread(&product, 0, a, a, &c, &seconds) == CHARRNN_ERR_INVALID_ARGUMENT)
        product.k = 0
        #expect(charrnn_product_on_every_thread(&product, 1, a, a, &c, &seconds) == CHARRNN_ERR_INVALID_SHAPE)
    }

    @Test("The FMA loop counts the operations of its rounds in the vectors it names, and refuses no rounds")
    func fmaLoopCountsItsOperations() {
        var flops: Double = 0
        var seconds: Double = 0
        var instructions: UnsafePointer<CChar>? = nil
        #expect(charrnn_fma_loop(1000, &flops, &seconds, &instructions) == CHARRNN_OK)
        let name = instructions.map { String(cString: $0) } ?? ""
        let lanes = name.hasPrefix("AVX-512") ? 16 : name.hasPrefix("AVX2") ? 8 : 4
        // 12 independent chains, 2 operations per lane per multiply-add.
        #expect(flops == Double(1000 * 12 * lanes * 2), "\(name): \(flops)")
        #expect(seconds > 0)
        #expect(charrnn_fma_loop(0, &flops, &seconds, &instructions) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(charrnn_fma_loop(1, nil, &seconds, &instructions) == CHARRNN_ERR_NULL_POINTER)
    }
}
