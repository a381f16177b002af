import Foundation
import Testing

/// Protects training on the core's own recurrent products (packed W_hh and
/// a micro-kernel of ours where the CPU has AVX2): the portable kernel, run
/// through the whole training step, gives the AVX2 kernel's bits for every
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

    static func floats(_ bytes: Data) -> [Float] {
        bytes.withUnsafeBytes { raw in (0..<raw.count / 4).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
    }

    @Test(
        "Training with the portable kernel gives the AVX2 kernel's bits, and BLAS's sgemm the same model within rounding, for every cell",
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
        if chosen.compute.contains("recurrent products: packed AVX2") {
            #expect(chosen.bytes == portable.bytes, "the AVX2 kernel trained other bits than the portable one")
        }
        let (a, b) = (Self.floats(portable.bytes), Self.floats(blas.bytes))
        #expect(a.count == b.count && a.count > 100 * 100)
        let worst = zip(a, b).map { abs($0 - $1) / max(1, abs($0)) }.max() ?? .infinity
        #expect(worst < 1e-4, "BLAS and the packed kernel differ by \(worst) (relative) after 8 iterations")
        #expect(a != b, "BLAS's sgemm rounds differently: identical bits mean the packed kernel did not run")
    }

    @Test(
        "Asked for by name, the AVX2 kernel runs wherever the CPU has AVX2, AVX-512 CPUs included, with the portable kernel's bits; a misspelt name is named"
    )
    func avx2KernelRunsWhenAskedFor() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 20_000))
        let asked = try Self.train(cell: "gru", kernel: "avx2", in: scratch, run: "avx2")
        let portable = try Self.train(cell: "gru", kernel: "portable", in: scratch, run: "portable")
        let misspelt = try Self.train(cell: "gru", kernel: "AVX-2", in: scratch, run: "misspelt")
        #expect(misspelt.compute.contains("(CHARRNN_RECURRENT_PRODUCTS=AVX-2 unknown)"), "\(misspelt.compute)")
        #if arch(x86_64)
            // Every x86-64 CPU these tests run on has AVX2 and FMA.
            #expect(asked.compute.contains("recurrent products: packed AVX2 (CHARRNN_RECURRENT_PRODUCTS=avx2)"), "\(asked.compute)")
            #expect(asked.bytes == portable.bytes, "the AVX2 kernel, asked for, trained other bits than the portable one")
        #else
            #expect(asked.compute.contains("recurrent products: BLAS (CHARRNN_RECURRENT_PRODUCTS=avx2: not in this build)"), "\(asked.compute)")
        #endif
    }
}
