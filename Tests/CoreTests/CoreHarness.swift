import CCharRNN
import Foundation

/// Test-side access to the C core: allocates the blocks it asks for and
/// calls it, with deterministic inputs so tests need no shared generator.
struct CoreHarness {
    var config: charrnn_config
    let batchSize: Int
    let steps: Int
    var parameters: [Float]
    var inputs: [Int32]
    var targets: [Int32]
    var initialState: [Float]

    init(
        vocabularySize: Int, hiddenSize: Int, layerCount: Int, batchSize: Int, steps: Int, nonZeroState: Bool = true,
        cell: ReferenceModel.Cell = .lstm
    ) {
        var cellValue: Int32 = -1
        precondition(charrnn_cell_from_name(cell.rawValue, &cellValue) == CHARRNN_OK, "the core knows no cell '\(cell)'")
        config = charrnn_config(
            vocab_size: Int32(vocabularySize), hidden_size: Int32(hiddenSize), num_layers: Int32(layerCount),
            cell: cellValue)
        self.batchSize = batchSize
        self.steps = steps
        var count = 0
        _ = charrnn_param_count(&config, &count)
        // Parameters set from their position (as mlx-swift's tests do), so any
        // implementation can build the same weights without a shared RNG.
        parameters = (0..<count).map { Float(0.35 * sin(Double($0) * 0.731 + 0.3)) }
        let n = batchSize * steps
        inputs = (0..<n).map { Int32(($0 * 7 + 3) % vocabularySize) }
        targets = (0..<n).map { Int32(($0 * 5 + 1) % vocabularySize) }
        var stateCount = 0
        precondition(charrnn_state_count(&config, Int32(batchSize), &stateCount) == CHARRNN_OK)
        initialState = nonZeroState ? (0..<stateCount).map { Float(0.6 * cos(Double($0) * 1.3)) } : [Float](repeating: 0, count: stateCount)
    }

    var parameterCount: Int { parameters.count }

    func activationCount(bf16: Bool = false) -> Int {
        var config = self.config
        var count = 0
        if bf16 {
            _ = charrnn_activation_count_bf16(&config, Int32(batchSize), Int32(steps), &count)
        } else {
            _ = charrnn_activation_count(&config, Int32(batchSize), Int32(steps), &count)
        }
        return count
    }

    /// Runs forward (and backward when asked), with fp32 products or, when
    /// `bf16`, bf16 ones; returns loss, final state and gradients.
    func run(keep: Float, seed: UInt64, gradients wantGradients: Bool = true, bf16: Bool = false) -> (
        loss: Float, state: [Float], gradients: [Float]
    ) {
        var config = self.config
        // NaN everywhere: the core must write every activation it reads, so
        // memory left from an earlier call (or never written) shows as a NaN loss.
        var activations = [Float](repeating: .nan, count: activationCount(bf16: bf16))
        var finalState = [Float](repeating: 0, count: initialState.count)
        var gradients = [Float](repeating: 0, count: parameters.count)
        var loss: Float = 0
        inputs.withUnsafeBufferPointer { inputs in
            targets.withUnsafeBufferPointer { targets in
                var batch = charrnn_batch(
                    batch_size: Int32(batchSize), steps: Int32(steps), inputs: inputs.baseAddress, targets: targets.baseAddress, first_stream: 0,
                    total_streams: 0)
                let forward =
                    bf16
                    ? charrnn_forward_bf16(&config, parameters, &batch, keep, seed, initialState, &finalState, &activations, &loss)
                    : charrnn_forward(&config, parameters, &batch, keep, seed, initialState, &finalState, &activations, &loss)
                precondition(forward == CHARRNN_OK, "forward failed: \(forward)")
                if wantGradients {
                    let backward =
                        bf16
                        ? charrnn_backward_bf16(&config, parameters, &batch, &activations, &gradients)
                        : charrnn_backward(&config, parameters, &batch, &activations, &gradients)
                    precondition(backward == CHARRNN_OK, "backward failed: \(backward)")
                }
            }
        }
        return (loss, finalState, gradients)
    }

    func tensors() -> [(name: String, shape: [Int], offset: Int, count: Int)] {
        var config = self.config
        var count: Int32 = 0
        _ = charrnn_tensor_count(&config, &count)
        return (0..<count).map { index in
            var info = charrnn_tensor_info()
            _ = charrnn_tensor_info_at(&config, index, &info)
            let name = withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let shape = info.ndim == 2 ? [Int(info.shape.0), Int(info.shape.1)] : [Int(info.shape.0)]
            return (name, shape, info.offset, info.count)
        }
    }

    var cell: ReferenceModel.Cell {
        var info = charrnn_cell_info()
        _ = charrnn_cell_info_get(config.cell, &info)
        return ReferenceModel.Cell(rawValue: String(cString: info.name))!
    }

    func reference() -> ReferenceModel {
        ReferenceModel(
            vocabularySize: Int(config.vocab_size), hiddenSize: Int(config.hidden_size), layerCount: Int(config.num_layers),
            cell: cell)
    }
}

/// `body`'s result, run on a thread of its own whose OpenMP team has
/// `threads` threads (the count is the calling thread's, so each test sets
/// its own without touching others running at once).
func onThread<Value>(withTeamOf threads: Int32, _ body: @escaping @Sendable () -> Value) -> Value {
    let box = ThreadResult<Value>()
    let done = DispatchSemaphore(value: 0)
    Thread {
        #if CHARRNN_BUILT_WITHOUT_OPENMP
            _ = threads  // one thread is all a core without OpenMP runs
        #else
            precondition(charrnn_set_compute_threads(threads) == CHARRNN_OK)
        #endif
        box.value = body()
        done.signal()
    }.start()
    done.wait()
    return box.value!
}

/// What `onThread`'s thread hands back, read after it signals.
private final class ThreadResult<Value>: @unchecked Sendable {
    var value: Value?
}

/// `|actual - expected| <= absolute + relative * |expected|`, element-wise;
/// returns the indices that fail (empty when all agree).
func mismatches(_ actual: [Float], _ expected: [Double], absolute: Double, relative: Double) -> [Int] {
    precondition(actual.count == expected.count, "length \(actual.count) vs \(expected.count)")
    return actual.indices.filter { abs(Double(actual[$0]) - expected[$0]) > absolute + relative * abs(expected[$0]) }
}

/// A position-weighted sum: equal for two arrays only if values sit at the same places.
func weightedChecksum<S: Sequence>(_ values: S) -> Double where S.Element: BinaryFloatingPoint {
    var sum = 0.0
    for (index, value) in values.enumerated() { sum += Double(value) * Double(index % 97 + 1) }
    return sum
}
