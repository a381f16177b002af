import CCharRNN
import Testing

/// Protects reproducibility: seeds fix the masks and weights, nothing else leaks in.
@Suite("Determinism")
struct DeterminismTests {
    @Test("The same dropout seed gives the same loss and gradients; another seed gives others")
    func dropoutSeedFixesMasks() {
        let harness = CoreHarness(vocabularySize: 9, hiddenSize: 12, layerCount: 2, batchSize: 4, steps: 6)
        let first = harness.run(keep: 0.5, seed: 42)
        let again = harness.run(keep: 0.5, seed: 42)
        let other = harness.run(keep: 0.5, seed: 43)
        #expect(first.loss.bitPattern == again.loss.bitPattern)
        #expect(first.gradients == again.gradients)
        #expect(first.loss != other.loss)
    }

    @Test("The core's dropout keeps about keep_prob of the units, with the documented masks scaled by 1/keep")
    func dropoutKeepsTheRightShare() {
        // Read the masks the core's forward pass wrote. The activation block's
        // layout is the core's (internal.h): for layer 0, gates [N, 4H], h and c
        // [(T+1), B, H], tanh_c [N, H], then mask [N, H]; with H a multiple of
        // 16 no region needs padding. N·H = 200,000 draws: the standard error
        // of the share is 0.001, so 0.005 is 5 sigma.
        let (B, T) = (50, 40)
        let harness = CoreHarness(vocabularySize: 7, hiddenSize: 96, layerCount: 1, batchSize: B, steps: T)
        var config = harness.config
        let hidden = 96
        let n = B * T
        var activations = [Float](repeating: -1, count: harness.activationCount())
        var finalState = [Float](repeating: 0, count: harness.initialState.count)
        var loss: Float = 0
        let keep: Float = 0.3
        let status = harness.inputs.withUnsafeBufferPointer { inputs in
            harness.targets.withUnsafeBufferPointer { targets in
                var batch = charrnn_batch(
                    batch_size: Int32(B), steps: Int32(T), inputs: inputs.baseAddress, targets: targets.baseAddress, first_stream: 0, total_streams: 0
                )
                return charrnn_forward(&config, harness.parameters, &batch, keep, 5, harness.initialState, &finalState, &activations, &loss)
            }
        }
        #expect(status == CHARRNN_OK)
        let maskStart = n * 4 * hidden + 2 * (T + 1) * B * hidden + n * hidden
        let masks = Array(activations[maskStart..<maskStart + n * hidden])
        let kept = masks.filter { $0 != 0 }
        #expect(abs(Double(kept.count) / Double(masks.count) - 0.3) < 0.005, "share kept \(Double(kept.count) / Double(masks.count))")
        #expect(kept.allSatisfy { $0 == 1 / keep }, "kept units are scaled by 1/keep")
        // And they are the documented function of (seed, layer, row, unit).
        let differing = (0..<masks.count).filter { index in
            Double(masks[index])
                != ReferenceModel.mask(
                    seed: 5, layer: 0, row: index / hidden, unit: index % hidden,
                    rows: n, hidden: hidden, keep: Double(keep))
        }
        #expect(differing.isEmpty, "\(differing.count) masks differ from the documented function")
    }

    @Test("Initialisation is a function of the seed, with the forget-gate bias at 1")
    func initialisationIsSeeded() {
        var config = charrnn_config(vocab_size: 10, hidden_size: 8, num_layers: 2, cell: 0)
        var count = 0
        _ = charrnn_param_count(&config, &count)
        var a = [Float](repeating: 0, count: count)
        var b = a
        var c = a
        _ = charrnn_init_params(&config, &a, 1)
        _ = charrnn_init_params(&config, &b, 1)
        _ = charrnn_init_params(&config, &c, 2)
        #expect(a == b)
        #expect(a != c)
        let harness = CoreHarness(vocabularySize: 10, hiddenSize: 8, layerCount: 2, batchSize: 1, steps: 1)
        let tensors = harness.tensors()
        for tensor in tensors where tensor.name.hasPrefix("lstm.bias_ih") {
            let values = Array(a[tensor.offset..<(tensor.offset + tensor.count)])
            #expect(values[8..<16].allSatisfy { $0 == 1 }, "forget block of \(tensor.name)")
            #expect(values[0..<8].allSatisfy { $0 == 0 } && values[16...].allSatisfy { $0 == 0 })
        }
        for tensor in tensors where tensor.name.hasPrefix("lstm.weight") {
            let limit = Float((6.0 / Double((tensor.name.hasSuffix("ih_l0") ? 10 : 8) + 8 + 32)).squareRoot())
            let values = a[tensor.offset..<(tensor.offset + tensor.count)]
            #expect(values.allSatisfy { abs($0) <= limit }, "\(tensor.name) within the Glorot limit")
            #expect(values.contains { abs($0) > limit / 2 }, "\(tensor.name) uses the range")
        }
    }

    @Test("Backward may be called twice on one forward and accumulates")
    func backwardAccumulates() {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 4, layerCount: 2, batchSize: 2, steps: 3)
        var config = harness.config
        var activations = [Float](repeating: 0, count: harness.activationCount())
        var once = [Float](repeating: 0, count: harness.parameterCount)
        var twice = once
        var loss: Float = 0
        harness.inputs.withUnsafeBufferPointer { i in
            harness.targets.withUnsafeBufferPointer { t in
                var batch = charrnn_batch(batch_size: 2, steps: 3, inputs: i.baseAddress, targets: t.baseAddress, first_stream: 0, total_streams: 0)
                _ = charrnn_forward(&config, harness.parameters, &batch, 0.8, 3, harness.initialState, nil, &activations, &loss)
                _ = charrnn_backward(&config, harness.parameters, &batch, &activations, &once)
                _ = charrnn_backward(&config, harness.parameters, &batch, &activations, &twice)
                _ = charrnn_backward(&config, harness.parameters, &batch, &activations, &twice)
            }
        }
        #expect(zip(once, twice).allSatisfy { abs(2 * $0 - $1) <= 1e-6 * max(1, abs($1)) })
        #expect(once.contains { $0 != 0 })
    }
}
