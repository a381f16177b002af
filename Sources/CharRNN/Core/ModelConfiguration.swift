import CCharRNN

/// The shape of a model: vocabulary size V, hidden size H, layer count L
/// and the cell of every layer.
public struct ModelConfiguration: Hashable, Sendable, Codable {
    /// Number of distinct characters (V).
    public var vocabularySize: Int
    /// Units in each recurrent layer (H).
    public var hiddenSize: Int
    /// Number of stacked recurrent layers (L).
    public var layerCount: Int
    /// The recurrent cell of every layer.
    public var cell: Cell

    /// Creates a configuration; call `validate()` before use.
    public init(vocabularySize: Int, hiddenSize: Int, layerCount: Int, cell: Cell = .lstm) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.cell = cell
    }

    var raw: charrnn_config {
        charrnn_config(
            vocab_size: Int32(clamping: vocabularySize), hidden_size: Int32(clamping: hiddenSize),
            num_layers: Int32(clamping: layerCount), cell: cell.raw)
    }

    /// Throws `ModelError.invalidConfiguration` unless the core accepts the shape.
    public func validate() throws(ModelError) {
        var config = raw
        if charrnn_config_validate(&config) != CHARRNN_OK
            || Int(config.vocab_size) != vocabularySize || Int(config.hidden_size) != hiddenSize
            || Int(config.num_layers) != layerCount
        {
            throw .invalidConfiguration(self)
        }
    }

    /// The largest vocabulary the core accepts (`CHARRNN_MAX_VOCAB`).
    public static let maximumVocabularySize = Int(CHARRNN_MAX_VOCAB)
    /// The most units per layer (`CHARRNN_MAX_HIDDEN`).
    public static let maximumHiddenSize = Int(CHARRNN_MAX_HIDDEN)
    /// The most layers (`CHARRNN_MAX_LAYERS`).
    public static let maximumLayerCount = Int(CHARRNN_MAX_LAYERS)
    /// The most characters in one batch, B × T (`CHARRNN_MAX_BATCH_ROWS`).
    public static let maximumBatchCharacters = Int(CHARRNN_MAX_BATCH_ROWS)
    /// The most streams sampled together (`CHARRNN_MAX_STREAMS`).
    public static let maximumStreams = Int(CHARRNN_MAX_STREAMS)

    /// Floats in the parameter block (and in the gradient block), as the core
    /// counts them; 0 for a configuration the core refuses (see `validate()`).
    public var parameterCount: Int {
        var config = raw
        var count = 0
        return charrnn_param_count(&config, &count) == CHARRNN_OK ? count : 0
    }

    /// Floats of Adam's state (first moments, then second), as the core
    /// counts them; 0 for a configuration the core refuses.
    public var optimizerStateCount: Int {
        var config = raw
        var count = 0
        return charrnn_optimizer_state_count(&config, &count) == CHARRNN_OK ? count : 0
    }

    /// Floats of the recurrent state for `batchSize` streams, as the core counts them.
    public func stateCount(batchSize: Int) throws(ModelError) -> Int {
        try ask("charrnn_state_count") { charrnn_state_count($0, Int32(clamping: batchSize), $1) }
    }

    /// Floats of activations a `batchSize` × `steps` batch needs, as the
    /// core counts them, for training passes whose products are in `precision`.
    public func activationCount(batchSize: Int, steps: Int, precision: Precision = .float32) throws(ModelError) -> Int {
        switch precision {
        case .float32:
            try ask("charrnn_activation_count") { charrnn_activation_count($0, Int32(clamping: batchSize), Int32(clamping: steps), $1) }
        case .bfloat16:
            try ask("charrnn_activation_count_bf16") {
                charrnn_activation_count_bf16($0, Int32(clamping: batchSize), Int32(clamping: steps), $1)
            }
        }
    }

    /// Floats of scratch `charrnn_step` needs for `streams` streams.
    public func stepScratchCount(streams: Int) throws(ModelError) -> Int {
        try ask("charrnn_step_scratch_count") { charrnn_step_scratch_count($0, Int32(clamping: streams), $1) }
    }

    /// Floats of scratch `charrnn_prime` needs to feed up to `steps` characters in one call.
    public func primeScratchCount(steps: Int) throws(ModelError) -> Int {
        try ask("charrnn_prime_scratch_count") { charrnn_prime_scratch_count($0, Int32(clamping: steps), $1) }
    }

    /// bf16 values of the packed weights `charrnn_bf16_pack` writes.
    public func bf16WeightsCount() throws(ModelError) -> Int {
        try ask("charrnn_bf16_weights_count") { charrnn_bf16_weights_count($0, $1) }
    }

    /// Floats (4-byte units) of scratch `charrnn_sample` needs for this vocabulary.
    public func sampleScratchCount() throws(ModelError) -> Int {
        let bytes = try ask("charrnn_sample_scratch_size") { config, bytes in
            charrnn_sample_scratch_size(config.pointee.vocab_size, bytes)
        }
        return (bytes + 3) / 4
    }

    /// A size from one of the core's count functions, its status checked.
    private func ask(
        _ function: String,
        _ query: (UnsafePointer<charrnn_config>, UnsafeMutablePointer<Int>) -> charrnn_status
    ) throws(ModelError) -> Int {
        var config = raw
        var count = 0
        try ModelError.check(query(&config, &count), function)
        return count
    }

    /// Bytes a training run of this model holds at once for `batchSize` ×
    /// `steps` batches: parameters, gradients and Adam's two moments, the
    /// activations (room for the passes in `precision` and for fp32
    /// validation), and the carried state (saturating, never overflowing).
    public func trainingBytes(batchSize: Int, steps: Int, precision: Precision = .float32) throws(ModelError) -> Int {
        let activations = try max(
            activationCount(batchSize: batchSize, steps: steps),
            activationCount(batchSize: batchSize, steps: steps, precision: precision))
        return try MemoryBudget.sum(
            MemoryBudget.floatBytes(parameterCount), MemoryBudget.floatBytes(parameterCount),
            MemoryBudget.floatBytes(optimizerStateCount), MemoryBudget.floatBytes(activations),
            MemoryBudget.floatBytes(stateCount(batchSize: batchSize)))
    }

    /// The parameter block's tensors in block order, with PyTorch's names and shapes.
    public var tensors: [TensorDescriptor] {
        var config = raw
        var count: Int32 = 0
        guard charrnn_tensor_count(&config, &count) == CHARRNN_OK else { return [] }
        return (0..<count).compactMap { index in
            var info = charrnn_tensor_info()
            guard charrnn_tensor_info_at(&config, index, &info) == CHARRNN_OK else { return nil }
            let name = withUnsafeBytes(of: info.name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            let shape = info.ndim == 2 ? [Int(info.shape.0), Int(info.shape.1)] : [Int(info.shape.0)]
            return TensorDescriptor(name: name, shape: shape, offset: info.offset, count: info.count)
        }
    }
}

/// One tensor of the parameter block: a PyTorch state-dict name, its shape,
/// and where it lives in the block (in floats).
public struct TensorDescriptor: Hashable, Sendable {
    /// PyTorch name, e.g. `lstm.weight_ih_l0` or `gru.bias_hh_l1`.
    public let name: String
    /// Row-major shape.
    public let shape: [Int]
    /// Offset from the start of the parameter block, in floats.
    public let offset: Int
    /// Number of floats.
    public let count: Int
}
