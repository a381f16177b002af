import CCharRNN
import Testing

/// Protects the core's contract: bad arguments give a status, never a crash.
@Suite("Status codes")
struct StatusCodeTests {
    @Test(
        "Invalid configurations are rejected by every size query",
        arguments: [(0, 4, 1), (5, 0, 1), (5, 4, 0), (-1, 4, 1), (5, -3, 1), (5, 4, 65), (5, 20000, 1), (3_000_000, 4, 1)])
    func invalidConfigurations(_ shape: (Int32, Int32, Int32)) {
        var config = charrnn_config(vocab_size: shape.0, hidden_size: shape.1, num_layers: shape.2, cell: 0)
        var count = 0
        var tensors: Int32 = 0
        var params = [Float](repeating: 0, count: 16)
        #expect(charrnn_config_validate(&config) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_param_count(&config, &count) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_state_count(&config, 1, &count) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_activation_count(&config, 1, 1, &count) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_tensor_count(&config, &tensors) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_init_params(&config, &params, 0) == CHARRNN_ERR_INVALID_CONFIG)
    }

    @Test("Null pointers are reported, not dereferenced")
    func nullPointers() {
        var config = charrnn_config(vocab_size: 5, hidden_size: 4, num_layers: 1, cell: 0)
        #expect(charrnn_config_validate(nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_param_count(&config, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_init_params(&config, nil, 0) == CHARRNN_ERR_NULL_POINTER)
        var loss: Float = 0
        #expect(charrnn_forward(&config, nil, nil, 1, 0, nil, nil, nil, &loss) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_backward(&config, nil, nil, nil, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_grad_norm(&config, nil, &loss) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_adam_update(&config, nil, nil, nil, 1, nil) == CHARRNN_ERR_NULL_POINTER)
        var info = charrnn_tensor_info()
        #expect(charrnn_tensor_info_at(&config, 0, nil) == CHARRNN_ERR_NULL_POINTER)
        #expect(charrnn_tensor_info_at(nil, 0, &info) == CHARRNN_ERR_NULL_POINTER)
    }

    @Test("Bad batches, tokens and scalars give their own status codes")
    func badBatchesAndScalars() {
        let harness = CoreHarness(vocabularySize: 5, hiddenSize: 4, layerCount: 1, batchSize: 2, steps: 3)
        var config = harness.config
        var activations = [Float](repeating: 0, count: harness.activationCount())
        var loss: Float = 0
        func forward(
            batchSize: Int32, steps: Int32, inputs: [Int32], targets: [Int32], keep: Float,
            firstStream: Int32 = 0, totalStreams: Int32 = 0
        ) -> charrnn_status {
            inputs.withUnsafeBufferPointer { i in
                targets.withUnsafeBufferPointer { t in
                    var batch = charrnn_batch(
                        batch_size: batchSize, steps: steps, inputs: i.baseAddress, targets: t.baseAddress,
                        first_stream: firstStream, total_streams: totalStreams)
                    return charrnn_forward(&config, harness.parameters, &batch, keep, 0, nil, nil, &activations, &loss)
                }
            }
        }
        let good = harness.inputs
        #expect(forward(batchSize: 2, steps: 3, inputs: good, targets: good, keep: 1) == CHARRNN_OK)
        #expect(forward(batchSize: 0, steps: 3, inputs: good, targets: good, keep: 1) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(forward(batchSize: 2, steps: -1, inputs: good, targets: good, keep: 1) == CHARRNN_ERR_INVALID_SHAPE)
        var outOfRange = good
        outOfRange[4] = 5
        #expect(forward(batchSize: 2, steps: 3, inputs: outOfRange, targets: good, keep: 1) == CHARRNN_ERR_TOKEN_OUT_OF_RANGE)
        outOfRange[4] = -1
        #expect(forward(batchSize: 2, steps: 3, inputs: good, targets: outOfRange, keep: 1) == CHARRNN_ERR_TOKEN_OUT_OF_RANGE)
        // Streams placed in a larger batch: inside it is fine, outside it is refused.
        #expect(forward(batchSize: 2, steps: 3, inputs: good, targets: good, keep: 0.5, firstStream: 3, totalStreams: 5) == CHARRNN_OK)
        for (first, total) in [(Int32(4), Int32(5)), (-1, 5), (0, 1), (0, -2)] {
            #expect(
                forward(batchSize: 2, steps: 3, inputs: good, targets: good, keep: 0.5, firstStream: first, totalStreams: total)
                    == CHARRNN_ERR_INVALID_ARGUMENT, "streams \(first) of \(total)")
        }
        for keep in [Float(0), -0.5, 1.5, .nan] {
            #expect(forward(batchSize: 2, steps: 3, inputs: good, targets: good, keep: keep) == CHARRNN_ERR_INVALID_ARGUMENT)
        }
        var params = harness.parameters
        var state = [Float](repeating: 0, count: 2 * params.count)
        var adam = charrnn_adam_default_params()
        #expect(charrnn_adam_update(&config, &params, params, &state, 0, &adam) == CHARRNN_ERR_INVALID_ARGUMENT)
        adam.learning_rate = -1
        #expect(charrnn_adam_update(&config, &params, params, &state, 1, &adam) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(charrnn_clip_grad_norm(&config, &params, 0, nil) == CHARRNN_ERR_INVALID_ARGUMENT)
        var info = charrnn_tensor_info()
        #expect(charrnn_tensor_info_at(&config, 6, &info) == CHARRNN_ERR_INDEX_OUT_OF_RANGE)
        #expect(charrnn_tensor_info_at(&config, -1, &info) == CHARRNN_ERR_INDEX_OUT_OF_RANGE)
    }

    @Test("Every status has its own message")
    func messagesAreDistinct() {
        let statuses: [charrnn_status] = [
            CHARRNN_OK, CHARRNN_ERR_NULL_POINTER, CHARRNN_ERR_INVALID_CONFIG, CHARRNN_ERR_INVALID_SHAPE,
            CHARRNN_ERR_TOKEN_OUT_OF_RANGE, CHARRNN_ERR_INVALID_ARGUMENT, CHARRNN_ERR_INDEX_OUT_OF_RANGE,
            CHARRNN_ERR_NON_FINITE,
        ]
        let messages = statuses.map { String(cString: charrnn_status_message($0)) }
        #expect(Set(messages).count == statuses.count)
        #expect(String(cString: charrnn_status_message(charrnn_status(rawValue: 999))) == "unknown status code")
    }
}
