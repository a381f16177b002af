import CCharRNN
import Testing

/// Protects `charrnn bench`'s products-alone figures: the copies in
/// `charrnn_training_products` and `charrnn_step_products` must make exactly
/// the matrix products of the real passes (shape, transposition, the thread
/// that runs each, and their order within each thread), or the bench would
/// compare a step with products it no longer makes.
@Suite("Products alone", .serialized)
struct ProductCopyTests {
    /// The products made while `body` runs whose output lies in one of
    /// `buffers` (other tests may compute meanwhile: theirs write elsewhere),
    /// each thread's in the order it made them.
    static func products(writingInto buffers: [UnsafeMutableBufferPointer<Float>], _ body: () -> Void) -> [[charrnn_product]] {
        var entries = [charrnn_product](repeating: charrnn_product(), count: 1 << 18)
        var count: Int64 = 0
        // The core keeps the log's address until it is detached, so the log
        // lives at a fixed address (not an inout argument's temporary).
        let log = UnsafeMutablePointer<charrnn_product_log>.allocate(capacity: 1)
        defer { log.deallocate() }
        entries.withUnsafeMutableBufferPointer { buffer in
            log.initialize(to: charrnn_product_log(entries: buffer.baseAddress, capacity: Int64(buffer.count), count: 0))
            #expect(charrnn_log_products(log) == CHARRNN_OK)
            body()
            #expect(charrnn_log_products(nil) == CHARRNN_OK)
            count = log.pointee.count
        }
        #expect(count < Int64(entries.count), "the log holds every product")
        let mine = entries.prefix(Int(min(count, Int64(entries.count)))).filter { product in
            guard let c = product.c else { return false }
            return buffers.contains { buffer in
                guard let base = buffer.baseAddress else { return false }
                return c >= UnsafePointer(base) && c < UnsafePointer(base + buffer.count)
            }
        }
        let threads = (mine.map { Int($0.thread) }.max() ?? -1) + 1
        return (0..<threads).map { thread in mine.filter { Int($0.thread) == thread } }
    }

    /// `count` floats that stay where they are for the test's length.
    static func block(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        let block = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
        block.initialize(repeating: 0)
        return block
    }

    static func same(_ a: [[charrnn_product]], _ b: [[charrnn_product]]) -> Bool {
        func key(_ p: charrnn_product) -> [Int32] { [p.trans_a, p.trans_b, p.m, p.n, p.k] }
        return a.map { $0.map(key) } == b.map { $0.map(key) }
    }

    @Test(
        "Training's products alone are the forward and backward passes' products, thread by thread, for every cell",
        arguments: ReferenceModel.Cell.allCases)
    func trainingCopyMatchesPasses(cell: ReferenceModel.Cell) {
        // 128 rows of 3 × 48 gates: large enough that the big products split across threads.
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 48, layerCount: 3, batchSize: 16, steps: 8, cell: cell)
        var config = harness.config
        let activations = Self.block(harness.activationCount())
        let gradients = Self.block(harness.parameterCount)
        let finalState = Self.block(harness.initialState.count)
        defer { for block in [activations, gradients, finalState] { block.deallocate() } }
        let passes = Self.products(writingInto: [activations, gradients, finalState]) {
            harness.inputs.withUnsafeBufferPointer { inputs in
                harness.targets.withUnsafeBufferPointer { targets in
                    var batch = charrnn_batch(
                        batch_size: 16, steps: 8, inputs: inputs.baseAddress, targets: targets.baseAddress, first_stream: 0,
                        total_streams: 0)
                    var loss: Float = 0
                    #expect(
                        charrnn_forward(
                            &config, harness.parameters, &batch, 0.8, 3, harness.initialState,
                            finalState.baseAddress, activations.baseAddress, &loss) == CHARRNN_OK)
                    #expect(
                        charrnn_backward(&config, harness.parameters, &batch, activations.baseAddress, gradients.baseAddress)
                            == CHARRNN_OK)
                }
            }
        }
        let copy = Self.products(writingInto: [activations, gradients, finalState]) {
            #expect(
                charrnn_training_products(&config, harness.parameters, 16, 8, activations.baseAddress, gradients.baseAddress)
                    == CHARRNN_OK)
        }
        #expect(passes.joined().count > 3 * 8 * 2, "the passes made every time step's recurrent products")
        let same = Self.same(passes, copy)
        #expect(same, "\(passes.map(\.count)) products per thread in the passes, \(copy.map(\.count)) in the copy")
    }

    @Test(
        "A step's products alone are charrnn_step's products, thread by thread, for one stream and many, for every cell",
        arguments: ReferenceModel.Cell.allCases, [1, 5])
    func stepCopyMatchesStep(cell: ReferenceModel.Cell, streams: Int) {
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 48, layerCount: 3, batchSize: streams, steps: 1, cell: cell)
        var config = harness.config
        var scratchCount = 0
        #expect(charrnn_step_scratch_count(&config, Int32(streams), &scratchCount) == CHARRNN_OK)
        let state = Self.block(harness.initialState.count)
        let scratch = Self.block(scratchCount)
        let logits = Self.block(13 * streams)
        defer { for block in [state, scratch, logits] { block.deallocate() } }
        let tokens = (0..<streams).map { Int32($0 % 13) }
        let step = Self.products(writingInto: [state, scratch, logits]) {
            #expect(
                charrnn_step(
                    &config, harness.parameters, Int32(streams), tokens, state.baseAddress, scratch.baseAddress,
                    logits.baseAddress) == CHARRNN_OK)
        }
        let copy = Self.products(writingInto: [state, scratch, logits]) {
            #expect(
                charrnn_step_products(
                    &config, harness.parameters, Int32(streams), state.baseAddress, scratch.baseAddress,
                    logits.baseAddress) == CHARRNN_OK)
        }
        #expect(!step.joined().isEmpty)
        let same = Self.same(step, copy)
        #expect(same, "\(step.map(\.count)) products per thread in the step, \(copy.map(\.count)) in the copy")
    }
}
