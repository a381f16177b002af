import Foundation
import Testing

/// Protects training on the core's own recurrent products (packed W_hh and
/// a micro-kernel of ours where the CPU has AVX2 or AVX-512): the portable
/// kernel, run through the whole training step, gives the CPU's kernel's bits for every
/// cell (so the model's packing, the split blocks of the GRU and the panel
/// edges are exercised, not only the kernel), and BLAS's sgemm, asked for
/// instead, trains the same model to within rounding.
@Suite("Recurrent products")
struct RecurrentProductsTests {
    /// Trains 8 iterations (ThreadCountTests' sizes) on two threads with the
    /// recurrent products' kernel the environment asks for; returns the
    /// Compute: line and the checkpoint's tensor bytes.
    static func train(cell: String, kernel: String?, in scratch: Scratch, run: String) throws -> (compute: String, bytes: Data) {
        let environment = ["OMP_NUM_THREADS": "2"].merging(kernel.map { ["CHARRNN_RECURRENT_PRODUCTS": $0] } ?? [:]) { $1 }
        let result = try ThreadCountTests.trainEightIterations(cell: cell, environment: environment, in: scratch, run: run)
        #expect(result.status == 0, "\(kernel ?? "default"): \(result.stderr)")
        return (result.compute, try #require(result.bytes))
    }

    /// Whether this CPU has AVX-512 (Linux's view of it).
    static let cpuHasAVX512: Bool = {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return info.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ").contains("avx512f") ?? false
    }()

    static func floats(_ bytes: Data) -> [Float] {
        bytes.withUnsafeBytes { raw in (0..<raw.count / 4).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
    }

    @Test(
        "Training with the portable kernel gives the bits of the kernel chosen for the CPU, and BLAS's sgemm the same model within rounding, for every cell",
        arguments: ["lstm", "gru", "rnn"])
    func kernelsTrainTheSameModel(cell: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 20_000))
        let chosen = try Self.train(cell: cell, kernel: nil, in: scratch, run: "chosen")
        let portable = try Self.train(cell: cell, kernel: "portable", in: scratch, run: "portable")
        let blas = try Self.train(cell: cell, kernel: "blas", in: scratch, run: "blas")
        #expect(portable.compute.contains("recurrent products: packed portable (CHARRNN_RECURRENT_PRODUCTS=portable)"), "\(portable.compute)")
        #expect(blas.compute.contains("recurrent products: BLAS (CHARRNN_RECURRENT_PRODUCTS=blas)"), "\(blas.compute)")
        #if arch(x86_64)
            // Every x86-64 CPU these tests run on has AVX2 and FMA, so one of our kernels is chosen.
            let kernel = Self.cpuHasAVX512 ? "packed AVX-512" : "packed AVX2"
            #expect(chosen.compute.contains("recurrent products: \(kernel),"), "\(chosen.compute)")
            #expect(chosen.bytes == portable.bytes, "the \(kernel) kernel trained other bits than the portable one")
        #endif
        let (a, b) = (Self.floats(portable.bytes), Self.floats(blas.bytes))
        #expect(a.count == b.count && a.count > 100 * 100)
        let worst = zip(a, b).map { abs($0 - $1) / max(1, abs($0)) }.max() ?? .infinity
        #expect(worst < 1e-4, "BLAS and the packed kernel differ by \(worst) (relative) after 8 iterations")
        #expect(a != b, "BLAS's sgemm rounds differently: identical bits mean the packed kernel did not run")
    }

    @Test(
        "Asked for by name, each kernel runs wherever the CPU has its instructions (AVX2 on AVX-512 CPUs too) with the portable kernel's bits, or BLAS with the reason; a misspelt name is named"
    )
    func kernelsRunWhenAskedFor() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 20_000))
        let avx2 = try Self.train(cell: "gru", kernel: "avx2", in: scratch, run: "avx2")
        let avx512 = try Self.train(cell: "gru", kernel: "avx512", in: scratch, run: "avx512")
        let portable = try Self.train(cell: "gru", kernel: "portable", in: scratch, run: "portable")
        let misspelt = try Self.train(cell: "gru", kernel: "AVX-2", in: scratch, run: "misspelt")
        #expect(misspelt.compute.contains("(CHARRNN_RECURRENT_PRODUCTS=AVX-2 unknown)"), "\(misspelt.compute)")
        #if arch(x86_64)
            // Every x86-64 CPU these tests run on has AVX2 and FMA.
            #expect(avx2.compute.contains("recurrent products: packed AVX2 (CHARRNN_RECURRENT_PRODUCTS=avx2)"), "\(avx2.compute)")
            #expect(avx2.bytes == portable.bytes, "the AVX2 kernel, asked for, trained other bits than the portable one")
            if Self.cpuHasAVX512 {
                #expect(avx512.compute.contains("recurrent products: packed AVX-512 (CHARRNN_RECURRENT_PRODUCTS=avx512)"), "\(avx512.compute)")
                #expect(avx512.bytes == portable.bytes, "the AVX-512 kernel, asked for, trained other bits than the portable one")
            } else {
                #expect(avx512.compute.contains("recurrent products: BLAS (CHARRNN_RECURRENT_PRODUCTS=avx512, but no AVX-512)"), "\(avx512.compute)")
            }
        #else
            #expect(avx2.compute.contains("recurrent products: BLAS (CHARRNN_RECURRENT_PRODUCTS=avx2: not in this build)"), "\(avx2.compute)")
            #expect(avx512.compute.contains("recurrent products: BLAS (CHARRNN_RECURRENT_PRODUCTS=avx512: not in this build)"), "\(avx512.compute)")
        #endif
    }
}
