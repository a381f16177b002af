/// Why a model operation could not run.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    /// The core rejects this shape (sizes zero, negative or too large).
    case invalidConfiguration(ModelConfiguration)
    /// A parameter array has the wrong length for the configuration.
    case parameterCountMismatch(expected: Int, actual: Int)
    /// A recurrent state was made for another batch size or model.
    case stateMismatch(expectedBatchSize: Int, actualBatchSize: Int)
    /// The loss or the gradient norm came out NaN or infinite.
    case nonFinite(loss: Float, gradientNorm: Float)
    /// The core returned an error status.
    case core(CoreError)

    public var description: String {
        switch self {
        case .invalidConfiguration(let c):
            return "invalid model configuration (vocabulary \(c.vocabularySize), hidden \(c.hiddenSize), "
                + "layers \(c.layerCount)): sizes must be positive; hidden at most 16384, layers at most 64"
        case .parameterCountMismatch(let expected, let actual):
            return "parameter block has \(actual) floats; this configuration needs \(expected)"
        case .stateMismatch(let expected, let actual):
            return "recurrent state is for batch size \(actual); this call needs \(expected)"
        case .nonFinite(let loss, let norm):
            return "training diverged: loss \(loss), gradient norm \(norm) "
                + "(try a lower --learning-rate or a smaller --grad-clip)"
        case .core(let error): return error.description
        }
    }
}
