import CCharRNN
import Foundation
import Testing

/// Protects gradient clipping and the Adam update.
@Suite("Optimizer")
struct OptimizerTests {
    var config = charrnn_config(vocab_size: 3, hidden_size: 2, num_layers: 1, cell: Int32(CHARRNN_CELL_LSTM.rawValue))
    var count: Int {
        var config = self.config
        var n = 0
        _ = charrnn_param_count(&config, &n)
        return n
    }

    @Test("An Adam step that makes a weight infinite reports it at that step")
    mutating func adamReportsNonFiniteWeights() {
        let n = count
        var params = [Float](repeating: 0.5, count: n)
        var state = [Float](repeating: 0, count: 2 * n)
        let grads = [Float](repeating: 1, count: n)
        var sane = charrnn_adam_params(learning_rate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        #expect(charrnn_adam_update(&config, &params, grads, &state, 1, &sane) == CHARRNN_OK)
        var huge = charrnn_adam_params(learning_rate: 3e38, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        params[3] = -3e38  // one step of 3e38 takes this weight past float's range
        #expect(charrnn_adam_update(&config, &params, grads, &state, 2, &huge) == CHARRNN_ERR_NON_FINITE)
        #expect(!params[3].isFinite)
    }

    @Test("Adam follows TensorFlow's update with bias correction over several steps")
    mutating func adamMatchesTensorFlowFormula() {
        let n = count
        var params = (0..<n).map { Float(sin(Double($0))) }
        var state = [Float](repeating: 0, count: 2 * n)
        var expectedParams = params.map(Double.init)
        var m = [Double](repeating: 0, count: n)
        var v = m
        var adam = charrnn_adam_params(learning_rate: 0.01, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        for step in 1...5 {
            let grads = (0..<n).map { Float(cos(Double($0 * step))) * 0.3 }
            #expect(charrnn_adam_update(&config, &params, grads, &state, Int64(step), &adam) == CHARRNN_OK)
            let lrT = 0.01 * sqrt(1 - pow(0.999, Double(step))) / (1 - pow(0.9, Double(step)))
            for i in 0..<n {
                let g = Double(grads[i])
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                expectedParams[i] -= lrT * m[i] / (sqrt(v[i]) + 1e-8)
            }
        }
        #expect(mismatches(params, expectedParams, absolute: 1e-6, relative: 1e-5).isEmpty)
        #expect(mismatches(Array(state[0..<n]), m, absolute: 1e-6, relative: 1e-5).isEmpty)
    }

    @Test("A rate of 0 (where a schedule may end) leaves the weights and still moves the moments; a negative rate is refused")
    mutating func zeroRateKeepsWeights() {
        let n = count
        let original = (0..<n).map { Float(sin(Double($0))) }
        var params = original
        var state = [Float](repeating: 0, count: 2 * n)
        let grads = [Float](repeating: 0.5, count: n)
        var zero = charrnn_adam_params(learning_rate: 0, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        #expect(charrnn_adam_update(&config, &params, grads, &state, 1, &zero) == CHARRNN_OK)
        #expect(params == original)
        #expect(state[0..<n].allSatisfy { abs($0 - 0.05) < 1e-7 }, "m = 0.1 × g")
        var negative = charrnn_adam_params(learning_rate: -0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-8)
        #expect(charrnn_adam_update(&config, &params, grads, &state, 2, &negative) == CHARRNN_ERR_INVALID_ARGUMENT)
        #expect(params == original)
    }

    @Test("Clipping scales a gradient above the limit to exactly the limit and reports the norm before")
    mutating func clippingScalesToLimit() {
        let n = count
        var grads = (0..<n).map { Float($0 % 5) - 2 }
        let norm = sqrt(grads.reduce(0.0) { $0 + Double($1 * $1) })
        var before: Float = 0
        #expect(charrnn_clip_grad_norm(&config, &grads, 1.5, &before) == CHARRNN_OK)
        #expect(abs(Double(before) - norm) < 1e-4)
        var after: Float = 0
        #expect(charrnn_grad_norm(&config, grads, &after) == CHARRNN_OK)
        #expect(abs(after - 1.5) < 1e-5)
    }

    @Test("Clipping leaves a gradient within the limit unchanged")
    mutating func clippingLeavesSmallGradients() {
        let n = count
        let original = (0..<n).map { Float($0 % 3) * 0.01 }
        var grads = original
        #expect(charrnn_clip_grad_norm(&config, &grads, 5, nil) == CHARRNN_OK)
        #expect(grads == original)
    }

    @Test("A NaN or infinite gradient is reported as non-finite and left untouched")
    mutating func nonFiniteGradientIsReported() {
        let n = count
        for poison in [Float.nan, Float.infinity] {
            var grads = [Float](repeating: 1, count: n)
            grads[n / 2] = poison
            let before = grads
            #expect(charrnn_clip_grad_norm(&config, &grads, 5, nil) == CHARRNN_ERR_NON_FINITE)
            #expect(zip(grads, before).allSatisfy { $0.bitPattern == $1.bitPattern })
        }
    }
}
