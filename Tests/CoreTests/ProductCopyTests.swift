import CCharRNN
import Testing

/// Protects `charrnn bench`'s products-alone figures: the copies in
/// `charrnn_training_products` and `charrnn_step_products` must make exactly
/// the matrix products of the real passes (shape, transposition, the thread
/// that runs each, and their order within each thread), or the bench would
/// compare a step with products it no longer makes.
@Suite("Products alone", .serialized)
struct ProductCopyTests {
    /// The memory every output of these tests is carved from, and their
    /// product log: allocated once and never freed, so no other thread ever
    /// computes into this range (the log records only products whose output
    /// lies in it) and the log outlives every attachment.
    nonisolated(unsafe) static let arena: UnsafeMutableBufferPointer<Float> = {
        let arena = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1 << 20)
        arena.initialize(repeating: 0)
        return arena
    }()
    nonisolated(unsafe) static let log: UnsafeMutablePointer<charrnn_product_log> = {
        let capacity = 1 << 16
        let entries = UnsafeMutablePointer<charrnn_product>.allocate(capacity: capacity)
        let log = UnsafeMutablePointer<charrnn_product_log>.allocate(capacity: 1)
        log.initialize(to: charrnn_product_log(entries: entries, capacity: Int64(capacity), count: 0))
        return log
    }()

    /// Consecutive blocks of the arena, of `counts` floats each.
    static func blocks(_ counts: [Int]) -> [UnsafeMutableBufferPointer<Float>] {
        precondition(counts.reduce(0, +) <= arena.count, "the arena holds every buffer")
        var offset = 0
        return counts.map { count in
            defer { offset += count }
            return UnsafeMutableBufferPointer(rebasing: arena[offset..<offset + count])
        }
    }

    /// The products `body` makes into the arena (other tests may compute
    /// meanwhile: theirs write elsewhere), each thread's in the order it made them.
    static func products(_ body: () -> Void) -> [[charrnn_product]] {
        log.pointee.count = 0
        #expect(charrnn_log_products(log, arena.baseAddress, arena.count) == CHARRNN_OK)
        body()
        #expect(charrnn_log_products(nil, nil, 0) == CHARRNN_OK)
        let count = Int(log.pointee.count)
        #expect(count <= Int(log.pointee.capacity), "the log holds every product")
        let made = UnsafeBufferPointer(start: log.pointee.entries, count: min(count, Int(log.pointee.capacity)))
        let threads = (made.map { Int($0.thread) }.max() ?? -1) + 1
        return (0..<threads).map { thread in made.filter { Int($0.thread) == thread } }
    }

    /// Whether two recordings made the same products: name, transposition
    /// and shape, thread by thread in order (the bench's breakdown groups by
    /// name and shape, so a copy that renamed a product would mislabel it).
    static func same(_ a: [[charrnn_product]], _ b: [[charrnn_product]]) -> Bool {
        struct Key: Equatable {
            let name: String
            let shape: [Int32]
        }
        func key(_ p: charrnn_product) -> Key {
            Key(name: p.name.map { String(cString: $0) } ?? "", shape: [p.trans_a, p.trans_b, p.m, p.n, p.k])
        }
        return a.map { $0.map(key) } == b.map { $0.map(key) }
    }

    /// Every product is named and timed.
    static func namedAndTimed(_ products: [[charrnn_product]]) -> Bool {
        products.joined().allSatisfy { p in
            p.seconds > 0 && !(p.name.map { String(cString: $0) } ?? "").isEmpty
        }
    }

    @Test(
        "Training's products alone are the forward and backward passes' products, thread by thread, for every cell",
        arguments: ReferenceModel.Cell.allCases)
    func trainingCopyMatchesPasses(cell: ReferenceModel.Cell) {
        // 128 rows of 3 × 48 gates: large enough that the big products split across threads.
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 48, layerCount: 3, batchSize: 16, steps: 8, cell: cell)
        var config = harness.config
        let buffers = Self.blocks([harness.activationCount(), harness.parameterCount, harness.initialState.count])
        let (activations, gradients, finalState) = (buffers[0], buffers[1], buffers[2])
        let passes = Self.products {
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
        let copy = Self.products {
            #expect(
                charrnn_training_products(&config, harness.parameters, 16, 8, activations.baseAddress, gradients.baseAddress)
                    == CHARRNN_OK)
        }
        #expect(passes.joined().count > 3 * 8 * 2, "the passes made every time step's recurrent products")
        let same = Self.same(passes, copy)
        #expect(same, "\(passes.map(\.count)) products per thread in the passes, \(copy.map(\.count)) in the copy")
        #expect(Self.namedAndTimed(passes) && Self.namedAndTimed(copy))
    }

    @Test(
        "A step's products alone are charrnn_step's products, thread by thread, for one stream and many, for every cell",
        arguments: ReferenceModel.Cell.allCases, [1, 5])
    func stepCopyMatchesStep(cell: ReferenceModel.Cell, streams: Int) {
        let harness = CoreHarness(vocabularySize: 13, hiddenSize: 48, layerCount: 3, batchSize: streams, steps: 1, cell: cell)
        var config = harness.config
        var scratchCount = 0
        #expect(charrnn_step_scratch_count(&config, Int32(streams), &scratchCount) == CHARRNN_OK)
        let buffers = Self.blocks([harness.initialState.count, scratchCount, 13 * streams])
        let (state, scratch, logits) = (buffers[0], buffers[1], buffers[2])
        let tokens = (0..<streams).map { Int32($0 % 13) }
        let step = Self.products {
            #expect(
                charrnn_step(
                    &config, harness.parameters, Int32(streams), tokens, state.baseAddress, scratch.baseAddress,
                    logits.baseAddress) == CHARRNN_OK)
        }
        let copy = Self.products {
            #expect(
                charrnn_step_products(
                    &config, harness.parameters, Int32(streams), state.baseAddress, scratch.baseAddress,
                    logits.baseAddress) == CHARRNN_OK)
        }
        #expect(!step.joined().isEmpty)
        let same = Self.same(step, copy)
        #expect(same, "\(step.map(\.count)) products per thread in the step, \(copy.map(\.count)) in the copy")
        #expect(Self.namedAndTimed(step) && Self.namedAndTimed(copy))
    }
}
