import CCharRNN

/// Adam's hyperparameters; the defaults are TensorFlow's AdamOptimizer's.
public struct AdamOptions: Sendable, Equatable, Codable {
    /// Step size (default 0.001).
    public var learningRate: Float
    /// First-moment decay (default 0.9).
    public var beta1: Float
    /// Second-moment decay (default 0.999).
    public var beta2: Float
    /// Added to the square root of the second moment (default 1e-8).
    public var epsilon: Float

    /// Creates options; unspecified values take TensorFlow's defaults.
    public init(learningRate: Float = 0.001, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    var raw: charrnn_adam_params {
        charrnn_adam_params(learning_rate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon)
    }
}
