import CCharRNN
import Foundation
import Testing

/// Protects the recurrence's own products (panels.c): each element is the
/// fused multiply-add chain charrnn_measure.h describes (checked against an
/// emulation written here), the AVX2 kernel gives the portable kernel's bits,
/// and a row's result never depends on the rows it is made with, which is
/// what lets training give the same bits for any thread count.
@Suite("Packed recurrent products in the core")
struct PackedProductTests {
    static let cpuHasAVX2Kernel: Bool = {
        var out: [Float] = [0]
        return charrnn_panels_product(Int32(CHARRNN_PANELS_AVX2.rawValue), 1, 1, 1, 1, [1], [1], 0, &out) == CHARRNN_OK
    }()
    static let cpuHasAVX512Kernel: Bool = {
        var out: [Float] = [0]
        return charrnn_panels_product(Int32(CHARRNN_PANELS_AVX512.rawValue), 1, 1, 1, 1, [1], [1], 0, &out) == CHARRNN_OK
    }()

    /// Rows, columns, depth: the edges of a 6-row block, a 16-column panel and
    /// a pair of panels (one panel alone, a pair with one column in its second,
    /// an odd count), and the model's shapes.
    static let shapes = [(1, 1, 1), (6, 16, 3), (7, 17, 5), (50, 2048, 64), (50, 100, 400), (13, 300, 100), (5, 33, 512), (4, 40, 9)]

    /// Operands with tiny values, signs of every kind, and products that cancel.
    static func operands(m: Int, n: Int, k: Int) -> (a: [Float], b: [Float], c: [Float]) {
        let a = (0..<m * k).map { i -> Float in
            let v = Float(sin(Double(i) * 0.917 + 0.2))
            return i % 13 == 0 ? v * 1e-20 : v
        }
        let b = (0..<n * k).map { i -> Float in
            let v = Float(cos(Double(i) * 1.31))
            return i % 11 == 0 ? v * 1e-19 : i % 7 == 0 ? -v * 3 : v
        }
        let c = (0..<m * n).map { Float(sin(Double($0) * 2.3)) }
        return (a, b, c)
    }

    /// The header's arithmetic for element (i, j), written apart from the core.
    static func emulated(m: Int, n: Int, k: Int, transB: Bool, accumulate: Bool, _ a: [Float], _ b: [Float], _ c: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var acc: Float = accumulate ? c[i * n + j] : 0
                for p in 0..<k { acc = acc.addingProduct(a[i * k + p], transB ? b[j * k + p] : b[p * n + j]) }
                out[i * n + j] = acc
            }
        }
        return out
    }

    static func product(
        _ kernel: charrnn_panels_kernel_kind, m: Int, n: Int, k: Int, transB: Bool, accumulate: Bool, _ a: [Float], _ b: [Float], _ c: [Float]
    ) -> [Float] {
        var out = c
        let status = charrnn_panels_product(Int32(kernel.rawValue), transB ? 1 : 0, Int32(m), Int32(n), Int32(k), a, b, accumulate ? 1 : 0, &out)
        precondition(status == CHARRNN_OK, "charrnn_panels_product: \(status)")
        return out
    }

    /// Every shape, in both layouts of B, with and without accumulation into C.
    struct Case {
        let m: Int, n: Int, k: Int, transB: Bool, accumulate: Bool
        let a: [Float], b: [Float], c: [Float]
        var name: String { "\(m) × \(n) × \(k), transB \(transB), accumulate \(accumulate)" }
        func product(_ kernel: charrnn_panels_kernel_kind) -> [UInt32] {
            PackedProductTests.product(kernel, m: m, n: n, k: k, transB: transB, accumulate: accumulate, a, b, c).map(\.bitPattern)
        }
    }

    static var cases: [Case] {
        shapes.flatMap { m, n, k in
            let (a, b, c) = operands(m: m, n: n, k: k)
            return [true, false].flatMap { transB in
                [true, false].map { Case(m: m, n: n, k: k, transB: transB, accumulate: $0, a: a, b: b, c: c) }
            }
        }
    }

    @Test("The portable kernel sums every element as one fused multiply-add chain, as the header says")
    func portableKernelMatchesTheEmulation() {
        for test in Self.cases {
            let expected = Self.emulated(m: test.m, n: test.n, k: test.k, transB: test.transB, accumulate: test.accumulate, test.a, test.b, test.c)
            #expect(test.product(CHARRNN_PANELS_PORTABLE) == expected.map(\.bitPattern), "\(test.name)")
        }
    }

    @Test(
        "The AVX2 kernel gives the portable kernel's bits",
        .enabled(if: PackedProductTests.cpuHasAVX2Kernel, "the CPU has no AVX2 with FMA"))
    func avx2KernelMatchesThePortableOne() {
        for test in Self.cases {
            #expect(test.product(CHARRNN_PANELS_AVX2) == test.product(CHARRNN_PANELS_PORTABLE), "\(test.name)")
        }
    }

    @Test(
        "The AVX-512 kernel gives the portable kernel's bits",
        .enabled(if: PackedProductTests.cpuHasAVX512Kernel, "the CPU has no AVX-512"))
    func avx512KernelMatchesThePortableOne() {
        for test in Self.cases {
            #expect(test.product(CHARRNN_PANELS_AVX512) == test.product(CHARRNN_PANELS_PORTABLE), "\(test.name)")
        }
    }

    @Test("A row's result is the same bits whichever rows it is made with")
    func rowsDoNotDependOnTheirNeighbours() {
        let (m, n, k) = (50, 100, 300)
        let (a, b, c) = Self.operands(m: m, n: n, k: k)
        let kernel =
            Self.cpuHasAVX512Kernel ? CHARRNN_PANELS_AVX512 : Self.cpuHasAVX2Kernel ? CHARRNN_PANELS_AVX2 : CHARRNN_PANELS_PORTABLE
        let whole = Self.product(kernel, m: m, n: n, k: k, transB: true, accumulate: true, a, b, c)
        // The splits two and three threads make of 50 streams, and single rows.
        for (start, count) in [(0, 25), (25, 25), (0, 17), (17, 16), (33, 17), (7, 1), (49, 1)] {
            let part = Self.product(
                kernel, m: count, n: n, k: k, transB: true, accumulate: true,
                Array(a[(start * k)..<((start + count) * k)]), b, Array(c[(start * n)..<((start + count) * n)]))
            #expect(part.map(\.bitPattern) == whole[(start * n)..<((start + count) * n)].map(\.bitPattern), "rows \(start)..<\(start + count)")
        }
    }

    @Test("A kernel that is not a packed one, or a bad shape or pointer, is refused with a status")
    func productRefusals() {
        var out = [Float](repeating: 0, count: 4)
        #expect(charrnn_panels_product(Int32(CHARRNN_PANELS_BLAS.rawValue), 1, 2, 2, 1, [1, 2], [1, 2], 0, &out) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(charrnn_panels_product(9, 1, 2, 2, 1, [1, 2], [1, 2], 0, &out) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(charrnn_panels_product(Int32(CHARRNN_PANELS_PORTABLE.rawValue), 1, 0, 2, 1, [1, 2], [1, 2], 0, &out) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_panels_product(Int32(CHARRNN_PANELS_PORTABLE.rawValue), 1, 2, 2, 1, nil, [1, 2], 0, &out) == CHARRNN_ERR_NULL_POINTER)
    }

    @Test("The runtime names the kernel the recurrent products run on")
    func runtimeNamesTheKernel() {
        var raw = charrnn_runtime()
        charrnn_runtime_get(&raw)
        let named = withUnsafeBytes(of: raw.recurrent_products) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch charrnn_panels_kernel() {
        case Int32(CHARRNN_PANELS_AVX512.rawValue): #expect(named == "packed AVX-512")
        case Int32(CHARRNN_PANELS_AVX2.rawValue): #expect(named == "packed AVX2")
        case Int32(CHARRNN_PANELS_PORTABLE.rawValue): #expect(named.hasPrefix("packed portable ("))
        default: #expect(named.hasPrefix("BLAS ("))
        }
    }
}
