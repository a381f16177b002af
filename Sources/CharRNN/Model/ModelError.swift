import CCharRNN

/// Why a model operation could not run.
public enum ModelError: Error, Equatable, CustomStringConvertible {
    /// The core rejects this shape (sizes zero, negative or too large).
    case invalidConfiguration(ModelConfiguration)
    /// A parameter array has the wrong length for the configuration.
    case parameterCountMismatch(expected: Int, actual: Int)
    /// A recurrent state was made for another batch size or model.
    case stateMismatch(expectedBatchSize: Int, actualBatchSize: Int)
    /// A value came out NaN or infinite.
    case nonFinite(NonFiniteValue)
    /// The model's memory does not fit in what the process may take.
    case insufficientMemory(MemoryShortfall)
    /// The model was made for inference only and holds no gradients or optimizer state.
    case notTrainable
    /// The core returned an error status.
    case core(CoreError)

    /// What came out NaN or infinite.
    public enum NonFiniteValue: Sendable, Equatable {
        /// The mean loss of a batch.
        case loss(Float)
        /// The gradient's global norm (with the batch's loss).
        case gradientNorm(Float, loss: Float)
        /// The weights, after an optimizer step.
        case weights
        /// The scores of the next character.
        case logits
    }

    public var description: String {
        switch self {
        case .invalidConfiguration(let c):
            return "invalid model configuration (vocabulary \(c.vocabularySize), hidden \(c.hiddenSize), "
                + "layers \(c.layerCount)): sizes must be positive; vocabulary at most "
                + "\(ModelConfiguration.maximumVocabularySize), hidden at most \(ModelConfiguration.maximumHiddenSize), "
                + "layers at most \(ModelConfiguration.maximumLayerCount)"
        case .parameterCountMismatch(let expected, let actual):
            return "parameter block has \(actual) floats; this configuration needs \(expected)"
        case .stateMismatch(let expected, let actual):
            return "recurrent state is for batch size \(actual); this call needs \(expected)"
        case .nonFinite(.loss(let loss)):
            return "the loss came out \(loss)"
        case .nonFinite(.gradientNorm(let norm, let loss)):
            return "the gradient norm came out \(norm) (loss \(loss))"
        case .nonFinite(.weights):
            return "an optimizer step made weights NaN or infinite"
        case .nonFinite(.logits):
            return "the model's scores for the next character came out NaN or infinite"
        case .insufficientMemory(let shortfall):
            return "the model \(shortfall)"
        case .notTrainable:
            return "the model was made for inference only (no gradients or optimizer state)"
        case .core(let error): return error.description
        }
    }

    /// Throws `.core` unless the core returned `CHARRNN_OK`.
    static func check(_ status: charrnn_status, _ function: String) throws(ModelError) {
        if status != CHARRNN_OK { throw .core(CoreError(status, function: function)) }
    }
}
