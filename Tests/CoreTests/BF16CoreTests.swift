import CCharRNN
import Foundation
import Testing

/// Protects bf16 inference: the kernels round exactly as charrnn.h says
/// (checked against an emulation written here, and the CPU's kernel against
/// the portable one where the CPU has it), a bf16 prime gives the bits of
/// bf16 steps however it is cut, streams do not change each other's bits,
/// and bf16 stays close to fp32.
@Suite("bf16 products in the core")
struct BF16CoreTests {
    static let cpuHasBF16 = charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue)

    /// fp32 to bf16 (kept in a Float): to nearest even, subnormals to a signed zero.
    static func bf16(_ x: Float) -> Float {
        let u = x.bitPattern
        if u & 0x7f80_0000 == 0 { return Float(bitPattern: u & 0x8000_0000) }
        if x.isNaN { return x }
        return Float(bitPattern: (u &+ 0x7fff &+ ((u >> 16) & 1)) & 0xffff_0000)
    }

    /// The header's arithmetic for one row and one input, written apart from the core.
    static func emulatedDot(_ w: ArraySlice<Float>, _ x: ArraySlice<Float>) -> Float {
        func flushed(_ v: Float) -> Float { abs(v) < Float.leastNormalMagnitude ? (v.sign == .minus ? -0.0 : 0.0) : v }
        let pairs = (w.count + 1) / 2
        let w = w.map(bf16) + [0]
        let x = x.map(bf16) + [0]  // the pad of an odd length
        var acc: Float = 0
        for p in 0..<pairs {
            acc = flushed(acc.addingProduct(w[2 * p + 1], x[2 * p + 1]))
            acc = flushed(acc.addingProduct(w[2 * p], x[2 * p]))
        }
        return acc
    }

    /// Weights and inputs with ties, tiny values (their products underflow) and signs of every kind.
    static func operands(rows: Int, cols: Int, inputs: Int) -> (w: [Float], x: [Float]) {
        let w = (0..<rows * cols).map { i -> Float in
            let v = Float(sin(Double(i) * 0.917 + 0.2))
            return i % 13 == 0 ? v * 1e-20 : i % 17 == 0 ? Float(bitPattern: 0x3f80_8000) : v
        }
        let x = (0..<inputs * cols).map { i -> Float in
            let v = Float(cos(Double(i) * 1.31))
            return i % 11 == 0 ? v * 1e-19 : i % 19 == 0 ? -Float(bitPattern: 0x4040_8000) : v
        }
        return (w, x)
    }

    static func product(kernel: charrnn_bf16_kernel_kind, rows: Int, cols: Int, inputs: Int, _ w: [Float], _ x: [Float]) -> [Float] {
        var out = [Float](repeating: .nan, count: rows * inputs)
        let status = charrnn_bf16_product(Int32(kernel.rawValue), Int32(rows), Int32(cols), Int32(inputs), w, x, &out)
        precondition(status == CHARRNN_OK, "charrnn_bf16_product: \(status)")
        return out
    }

    static let shapes = [(1, 1, 1), (16, 2, 1), (37, 51, 5), (100, 99, 7), (130, 512, 1), (64, 33, 9)]

    @Test("The portable kernel rounds and sums exactly as the header says (an emulation written apart)")
    func portableKernelMatchesTheEmulation() {
        for (rows, cols, inputs) in Self.shapes {
            let (w, x) = Self.operands(rows: rows, cols: cols, inputs: inputs)
            let out = Self.product(kernel: CHARRNN_BF16_PORTABLE, rows: rows, cols: cols, inputs: inputs, w, x)
            var differing = 0
            for s in 0..<inputs {
                for r in 0..<rows {
                    let expected = Self.emulatedDot(w[(r * cols)..<(r * cols + cols)], x[(s * cols)..<(s * cols + cols)])
                    if out[s * rows + r].bitPattern != expected.bitPattern { differing += 1 }
                }
            }
            #expect(differing == 0, "\(rows) × \(cols), \(inputs) inputs")
        }
    }

    @Test(
        "The CPU's AVX512_BF16 kernel gives the portable kernel's bits",
        .enabled(if: BF16CoreTests.cpuHasBF16, "the AVX512_BF16 kernel is not in use here (the CPU lacks it, or CHARRNN_BF16=portable)"))
    func cpuKernelMatchesThePortableOne() {
        for (rows, cols, inputs) in Self.shapes {
            let (w, x) = Self.operands(rows: rows, cols: cols, inputs: inputs)
            let portable = Self.product(kernel: CHARRNN_BF16_PORTABLE, rows: rows, cols: cols, inputs: inputs, w, x)
            let native = Self.product(kernel: CHARRNN_BF16_AVX512, rows: rows, cols: cols, inputs: inputs, w, x)
            #expect(native.map(\.bitPattern) == portable.map(\.bitPattern), "\(rows) × \(cols), \(inputs) inputs")
        }
    }

    @Test("A kernel the CPU lacks, or a bad shape or pointer, is refused with a status")
    func productRefusals() {
        var out = [Float](repeating: 0, count: 4)
        if !Self.cpuHasBF16 {
            #expect(charrnn_bf16_product(Int32(CHARRNN_BF16_AVX512.rawValue), 2, 2, 1, [1, 2, 3, 4], [1, 2], &out) == CHARRNN_ERR_INVALID_ARGUMENT)
        }
        #expect(charrnn_bf16_product(7, 2, 2, 1, [1, 2, 3, 4], [1, 2], &out) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(charrnn_bf16_product(0, 0, 2, 1, [1, 2, 3, 4], [1, 2], &out) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(charrnn_bf16_product(0, 2, 2, 1, nil, [1, 2], &out) == CHARRNN_ERR_NULL_POINTER)
    }

    /// The harness's weights packed to bf16.
    static func packed(_ harness: CoreHarness) -> [UInt16] {
        var config = harness.config
        var count = 0
        precondition(charrnn_bf16_weights_count(&config, &count) == CHARRNN_OK)
        var weights = [UInt16](repeating: 0xffff, count: count)
        precondition(charrnn_bf16_pack(&config, harness.parameters, &weights) == CHARRNN_OK)
        return weights
    }

    /// Streams' states and scores after feeding each stream its tokens, one bf16 (or fp32) step at a time.
    static func stepped(_ harness: CoreHarness, streams: Int, _ tokens: [[Int32]], bf16: Bool) -> (state: [Float], logits: [Float]) {
        var config = harness.config
        let weights = packed(harness)
        var stateCount = 0
        var scratchCount = 0
        precondition(charrnn_state_count(&config, Int32(streams), &stateCount) == CHARRNN_OK)
        precondition(charrnn_step_scratch_count(&config, Int32(streams), &scratchCount) == CHARRNN_OK)
        var state = [Float](repeating: 0, count: stateCount)
        var scratch = [Float](repeating: .nan, count: scratchCount)
        var logits = [Float](repeating: .nan, count: streams * Int(config.vocab_size))
        for t in tokens[0].indices {
            let column = tokens.map { $0[t] }
            let status =
                bf16
                ? charrnn_step_bf16(&config, harness.parameters, weights, Int32(streams), column, &state, &scratch, &logits)
                : charrnn_step(&config, harness.parameters, Int32(streams), column, &state, &scratch, &logits)
            precondition(status == CHARRNN_OK, "step: \(status)")
        }
        return (state, logits)
    }

    /// One stream's state and scores after a bf16 prime in calls of the given
    /// lengths, on a thread whose OpenMP team has `threads` threads.
    static func primed(_ harness: CoreHarness, _ tokens: [Int32], cuts: [Int], threads: Int32) -> (state: [Float], logits: [Float]) {
        let result = BF16PrimedResult()
        let done = DispatchSemaphore(value: 0)
        Thread {
            #if CHARRNN_BUILT_WITHOUT_OPENMP
                _ = threads
            #else
                precondition(charrnn_set_compute_threads(threads) == CHARRNN_OK)
            #endif
            var config = harness.config
            let weights = packed(harness)
            var stateCount = 0
            var scratchCount = 0
            precondition(charrnn_state_count(&config, 1, &stateCount) == CHARRNN_OK)
            precondition(charrnn_prime_scratch_count(&config, Int32(cuts.max()!), &scratchCount) == CHARRNN_OK)
            var state = [Float](repeating: 0, count: stateCount)
            var scratch = [Float](repeating: .nan, count: scratchCount)
            var logits = [Float](repeating: .nan, count: Int(config.vocab_size))
            var start = 0
            for (index, length) in cuts.enumerated() {
                let piece = Array(tokens[start..<start + length])
                let status =
                    index == cuts.count - 1
                    ? charrnn_prime_bf16(&config, harness.parameters, weights, Int32(length), piece, &state, &scratch, &logits)
                    : charrnn_prime_bf16(&config, harness.parameters, weights, Int32(length), piece, &state, &scratch, nil)
                precondition(status == CHARRNN_OK, "charrnn_prime_bf16: \(status)")
                start += length
            }
            result.value = (state, logits)
            done.signal()
        }.start()
        done.wait()
        return result.value
    }

    @Test(
        "A bf16 prime leaves the bits of bf16 steps in every layer, however it is cut and on any thread count",
        arguments: ReferenceModel.Cell.allCases)
    func bf16PrimeEqualsBF16Steps(_ cell: ReferenceModel.Cell) {
        // H = 37: odd, so every row has a pad; three layers, so the input products run.
        let harness = CoreHarness(vocabularySize: 11, hiddenSize: 37, layerCount: 3, batchSize: 1, steps: 1, cell: cell)
        let tokens = PrimeCoreTests.tokens(45, vocabularySize: 11)
        let stepped = Self.stepped(harness, streams: 1, [tokens], bf16: true)
        for (cuts, threads) in [([45], Int32(2)), ([45], 1), ([1, 44], 2), ([20, 1, 24], 3)] {
            let primed = Self.primed(harness, tokens, cuts: cuts, threads: threads)
            #expect(primed.state.map(\.bitPattern) == stepped.state.map(\.bitPattern), "cut \(cuts), \(threads) threads")
            #expect(primed.logits.map(\.bitPattern) == stepped.logits.map(\.bitPattern), "cut \(cuts), \(threads) threads")
        }
    }

    @Test("Streams stepped together in bf16 give each stream's bits alone", arguments: ReferenceModel.Cell.allCases)
    func bf16StreamsAreIndependent(_ cell: ReferenceModel.Cell) {
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 50, layerCount: 2, batchSize: 1, steps: 1, cell: cell)
        var streams: [[Int32]] = []
        for s in 0..<6 {
            let tokens: [Int32] = (0..<20).map { t in Int32((t * (s + 2) + s) % 13) }
            streams.append(tokens)
        }
        let together: [Float] = Self.stepped(harness, streams: 6, streams, bf16: true).logits
        for s in 0..<6 {
            let alone: [Float] = Self.stepped(harness, streams: 1, [streams[s]], bf16: true).logits
            let mine = Array(together[(s * 13)..<(s * 13 + 13)])
            #expect(mine.map(\.bitPattern) == alone.map(\.bitPattern), "stream \(s)")
        }
    }

    @Test("bf16 steps stay within bf16's rounding of fp32's scores and state, for every cell", arguments: ReferenceModel.Cell.allCases)
    func bf16StaysCloseToFP32(_ cell: ReferenceModel.Cell) {
        let harness = CoreHarness(vocabularySize: 17, hiddenSize: 64, layerCount: 2, batchSize: 1, steps: 1, cell: cell)
        let tokens = [PrimeCoreTests.tokens(60, vocabularySize: 17)]
        let wide = Self.stepped(harness, streams: 1, tokens, bf16: false)
        let narrow = Self.stepped(harness, streams: 1, tokens, bf16: true)
        // bf16 keeps 8 bits: each product's terms are off by up to 2^-8 relative.
        #expect(mismatches(narrow.logits, wide.logits.map(Double.init), absolute: 0.05, relative: 0.02).isEmpty)
        #expect(mismatches(narrow.state, wide.state.map(Double.init), absolute: 0.03, relative: 0).isEmpty)
        #expect(narrow.logits != wide.logits, "the products really ran in bf16")
    }

    @Test("Packing and the bf16 calls refuse bad arguments with a status")
    func bf16Refusals() {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 8, layerCount: 1, batchSize: 1, steps: 1)
        var config = harness.config
        var count = 0
        #expect(charrnn_bf16_weights_count(&config, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_bf16_weights_count(&config, &count) == CHARRNN_OK)
        // W_hh [32, 8]: 2 blocks of 16 rows; fc [5, 8]: 1 block (rows padded); 4 pairs of 32 values each.
        #expect(count == (2 + 1) * 4 * 32)
        var weights = [UInt16](repeating: 0, count: count)
        #expect(charrnn_bf16_pack(&config, nil, &weights) == CHARRNN_ERR_NULL_POINTER)
        var state = [Float](repeating: 0, count: 16)
        var scratch = [Float](repeating: 0, count: 4096)
        var logits = [Float](repeating: 0, count: 5)
        #expect(charrnn_step_bf16(&config, harness.parameters, nil, 1, [1], &state, &scratch, &logits) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_prime_bf16(&config, harness.parameters, nil, 1, [1], &state, &scratch, &logits) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_prime_bf16(&config, harness.parameters, weights, 1, [9], &state, &scratch, &logits) == CHARRNN_ERR_TOKEN_OUT_OF_RANGE)
        var bad = config
        bad.hidden_size = 0
        #expect(charrnn_bf16_pack(&bad, harness.parameters, &weights) == CHARRNN_ERR_INVALID_CONFIG)
    }
}

private final class BF16PrimedResult: @unchecked Sendable {
    var value: (state: [Float], logits: [Float]) = ([], [])
}
