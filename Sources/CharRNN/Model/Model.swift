import CCharRNN

/// A stacked character-level recurrent network (LSTM, GRU or RNN layers) with the memory it computes in.
///
/// The model owns four 64-byte-aligned blocks and lends them to the C core:
/// parameters and gradients (same layout, see `ModelConfiguration.tensors`),
/// Adam's moments (twice the parameter count) and the activations of the
/// last batch shape used (allocated on first use, reused after, large
/// enough for each precision its passes have used). A model made
/// for inference (`Purpose.inference`) holds only the parameters and the
/// activations. Every block is checked against `MemoryBudget` before it is
/// taken.
///
/// Not thread-safe: use one model from one thread at a time. Separate models
/// share nothing and may run concurrently.
public final class Model {
    /// The model's shape.
    public let configuration: ModelConfiguration
    /// The parameter block, in the tensor table's layout.
    public let parameters: FloatBuffer
    /// Gradients of the last `computeGradients` call, same layout (empty for
    /// a model made for inference).
    public let gradients: FloatBuffer
    /// Adam's first moments followed by its second moments (empty for a
    /// model made for inference).
    public let optimizerState: FloatBuffer
    /// Adam steps taken so far.
    public private(set) var optimizerStep: Int64 = 0

    private var workspace: (batchSize: Int, steps: Int, activations: FloatBuffer)?
    private var rawConfig: charrnn_config

    /// What a model is made for: training holds gradients and Adam's moments
    /// (four blocks of the parameter count); inference only the parameters.
    public enum Purpose: Sendable {
        /// Parameters, gradients and optimizer state.
        case training
        /// Parameters only: for sampling and evaluation.
        case inference
    }

    /// A new model with freshly initialised weights (see `charrnn_init_params`).
    /// - Throws: `ModelError.invalidConfiguration`, or `.insufficientMemory`
    ///   when its blocks do not fit in what the process may take.
    public init(configuration: ModelConfiguration, seed: UInt64, purpose: Purpose = .training) throws(ModelError) {
        try configuration.validate()
        self.configuration = configuration
        self.rawConfig = configuration.raw
        (parameters, gradients, optimizerState) = try Self.allocate(configuration, purpose)
        try ModelError.check(charrnn_init_params(&rawConfig, parameters.baseAddress, seed), "charrnn_init_params")
    }

    /// A model with the given weights, in the tensor table's layout.
    public init(configuration: ModelConfiguration, parameters values: [Float], purpose: Purpose = .training) throws(ModelError) {
        try configuration.validate()
        let count = configuration.parameterCount
        guard values.count == count else {
            throw .parameterCountMismatch(expected: count, actual: values.count)
        }
        self.configuration = configuration
        self.rawConfig = configuration.raw
        (parameters, gradients, optimizerState) = try Self.allocate(configuration, purpose)
        parameters.copy(from: values)
    }

    /// The blocks, all checked against the memory budget before any is taken.
    private static func allocate(_ configuration: ModelConfiguration, _ purpose: Purpose) throws(ModelError) -> (
        FloatBuffer, FloatBuffer, FloatBuffer
    ) {
        let count = configuration.parameterCount
        let gradientCount = purpose == .training ? count : 0
        let optimizerCount = purpose == .training ? configuration.optimizerStateCount : 0
        do {
            try MemoryBudget.check(
                requiredBytes: MemoryBudget.sum(
                    MemoryBudget.floatBytes(count), MemoryBudget.floatBytes(gradientCount), MemoryBudget.floatBytes(optimizerCount)))
            return (try FloatBuffer(count: count), try FloatBuffer(count: gradientCount), try FloatBuffer(count: optimizerCount))
        } catch {
            throw .insufficientMemory(error)
        }
    }

    /// Whether the model holds gradients and optimizer state.
    public var isTrainable: Bool { gradients.count == parameters.count }

    /// Number of trainable parameters.
    public var parameterCount: Int { parameters.count }

    /// Restores Adam's moments (first then second, `2 * parameterCount`
    /// floats) and step count, to continue an interrupted run exactly.
    public func restoreOptimizer(state values: [Float], step: Int64) throws(ModelError) {
        guard isTrainable else { throw .notTrainable }
        guard values.count == optimizerState.count else {
            throw .parameterCountMismatch(expected: optimizerState.count, actual: values.count)
        }
        optimizerState.copy(from: values)
        optimizerStep = step
    }

    /// Whether every parameter is a finite number.
    public var parametersAreFinite: Bool { parameters.buffer.allSatisfy { $0.isFinite } }

    /// A 64-bit FNV-1a hash of the weights' bits: equal for identical
    /// weights (processes training one model compare it).
    public var parameterHash: UInt64 {
        var hash = FNV1a()
        for value in parameters.buffer { hash.add(value.bitPattern) }
        return hash.hash
    }

    /// The current values of the tensor called `name` (a PyTorch name such as
    /// `lstm.weight_hh_l1`), or `nil` if there is none.
    public func tensor(named name: String) -> [Float]? {
        guard let descriptor = configuration.tensors.first(where: { $0.name == name }) else { return nil }
        return Array(parameters.buffer[descriptor.offset..<descriptor.offset + descriptor.count])
    }

    // MARK: - Forward and backward

    /// The mean cross-entropy of the model on `batch`, advancing `state`.
    /// - Parameters:
    ///   - batch: B streams of T steps.
    ///   - state: the carried state; replaced by the state after the batch.
    ///   - keepProbability: dropout keep probability; 1 (the default) for none.
    ///   - dropoutSeed: selects the dropout masks; the same seed gives the same masks.
    /// - Throws: `ModelError.nonFinite(.loss)` when the loss is NaN or
    ///   infinite (weights so large that the arithmetic overflows).
    public func loss(
        on batch: Batch, state: inout RecurrentState, keepProbability: Float = 1, dropoutSeed: UInt64 = 0
    ) throws(ModelError) -> Float {
        let loss = try forward(batch, &state, keepProbability, dropoutSeed).loss
        guard loss.isFinite else { throw .nonFinite(.loss(loss)) }
        return loss
    }

    /// Zeroes the gradients, runs forward and backward over `batch` with
    /// their products in `precision`, and leaves the gradient of the mean
    /// loss in `gradients`. Returns the loss.
    public func computeGradients(
        on batch: Batch, state: inout RecurrentState, keepProbability: Float, dropoutSeed: UInt64,
        precision: Precision = .float32
    ) throws(ModelError) -> Float {
        guard isTrainable else { throw .notTrainable }
        let (loss, activations) = try forward(batch, &state, keepProbability, dropoutSeed, precision)
        try backward(batch, activations, precision)
        return loss
    }

    /// Clips the gradients to a global norm of `clipNorm` and takes one Adam
    /// step. Returns the norm before clipping.
    /// - Throws: `ModelError.nonFinite(.gradientNorm)` (weights untouched) if
    ///   the gradient is NaN or infinite; `.nonFinite(.weights)` if the step
    ///   made a weight NaN or infinite (the weights are then unusable).
    @discardableResult
    public func applyGradients(clipNorm: Float, adam: AdamOptions) throws(ModelError) -> Float {
        guard isTrainable else { throw .notTrainable }
        var norm: Float = 0
        let status = charrnn_clip_grad_norm(&rawConfig, gradients.baseAddress, clipNorm, &norm)
        if status == CHARRNN_ERR_NON_FINITE { throw .nonFinite(.gradientNorm(norm, loss: .nan)) }
        try call { status }
        guard optimizerStep < Int64.max else { throw .core(CoreError(CHARRNN_ERR_INVALID_ARGUMENT, function: "charrnn_adam_update")) }
        optimizerStep += 1
        var params = adam.raw
        let step = optimizerStep
        let update = charrnn_adam_update(
            &rawConfig, parameters.baseAddress, gradients.baseAddress,
            optimizerState.baseAddress, step, &params)
        if update == CHARRNN_ERR_NON_FINITE { throw .nonFinite(.weights) }
        try call { update }
        return norm
    }

    /// One training step: forward, backward (their products in
    /// `precision`), clip, Adam. Returns the batch loss and the gradient
    /// norm before clipping.
    public func trainStep(
        on batch: Batch, state: inout RecurrentState, keepProbability: Float, dropoutSeed: UInt64,
        clipNorm: Float, adam: AdamOptions, precision: Precision = .float32
    ) throws(ModelError) -> (loss: Float, gradientNorm: Float) {
        let loss = try computeGradients(
            on: batch, state: &state, keepProbability: keepProbability, dropoutSeed: dropoutSeed,
            precision: precision)
        guard loss.isFinite else { throw .nonFinite(.loss(loss)) }
        do {
            return (loss, try applyGradients(clipNorm: clipNorm, adam: adam))
        } catch .nonFinite(.gradientNorm(let norm, _)) {
            throw .nonFinite(.gradientNorm(norm, loss: loss))
        }
    }

    // MARK: - For benchmarks: forward and backward timed separately

    func forwardForBenchmark(
        _ batch: Batch, _ state: inout RecurrentState, keepProbability: Float, seed: UInt64, precision: Precision = .float32
    ) throws(ModelError) -> (FloatBuffer, Float) {
        let (loss, activations) = try forward(batch, &state, keepProbability, seed, precision)
        return (activations, loss)
    }

    func backwardForBenchmark(_ batch: Batch, _ activations: FloatBuffer, precision: Precision = .float32) throws(ModelError) {
        guard isTrainable else { throw .notTrainable }
        try backward(batch, activations, precision)
    }

    // MARK: - Plumbing

    /// Runs the core's forward pass (`charrnn_forward`, or
    /// `charrnn_forward_bf16`); returns the loss and the activations it
    /// filled (which backward in the same precision needs).
    private func forward(
        _ batch: Batch, _ state: inout RecurrentState, _ keepProbability: Float, _ seed: UInt64,
        _ precision: Precision = .float32
    ) throws(ModelError) -> (loss: Float, activations: FloatBuffer) {
        guard state.batchSize == batch.batchSize,
            state.values.count == (try? configuration.stateCount(batchSize: batch.batchSize))
        else {
            throw .stateMismatch(expectedBatchSize: batch.batchSize, actualBatchSize: state.batchSize)
        }
        let activations = try activations(batchSize: batch.batchSize, steps: batch.steps, precision: precision)
        var loss: Float = 0
        let forward = precision == .bfloat16 ? charrnn_forward_bf16 : charrnn_forward
        try state.values.withUnsafeMutableBufferPointer { (stateBuffer) throws(ModelError) in
            try withBatch(batch) { (raw: inout charrnn_batch) in
                forward(
                    &rawConfig, parameters.baseAddress, &raw, keepProbability, seed,
                    stateBuffer.baseAddress, stateBuffer.baseAddress,
                    activations.baseAddress, &loss)
            }
        }
        return (loss, activations)
    }

    /// Zeroes the gradients and runs the core's backward pass in `precision`
    /// over the activations its forward pass filled.
    private func backward(_ batch: Batch, _ activations: FloatBuffer, _ precision: Precision) throws(ModelError) {
        gradients.zero()
        let backward = precision == .bfloat16 ? charrnn_backward_bf16 : charrnn_backward
        try withBatch(batch) { (raw: inout charrnn_batch) in
            backward(&rawConfig, parameters.baseAddress, &raw, activations.baseAddress, gradients.baseAddress)
        }
    }

    /// The activation block for this batch shape, at least as large as
    /// passes in `precision` need: kept while the shape stays, grown (not
    /// shrunk) when another precision needs more, so a run that trains in
    /// bf16 and validates in fp32 allocates once.
    private func activations(batchSize: Int, steps: Int, precision: Precision) throws(ModelError) -> FloatBuffer {
        var count = try configuration.activationCount(batchSize: batchSize, steps: steps, precision: precision)
        if let workspace, workspace.batchSize == batchSize, workspace.steps == steps {
            if workspace.activations.count >= count { return workspace.activations }
            count = max(count, workspace.activations.count)
        }
        workspace = nil  // release the old block before allocating the new one
        let buffer: FloatBuffer
        do { buffer = try FloatBuffer(count: count) } catch { throw .insufficientMemory(error) }
        workspace = (batchSize, steps, buffer)
        return buffer
    }

    private func withBatch(
        _ batch: Batch, _ body: (inout charrnn_batch) -> charrnn_status
    ) throws(ModelError) {
        let status = batch.inputs.withUnsafeBufferPointer { inputs in
            batch.targets.withUnsafeBufferPointer { targets in
                var raw = charrnn_batch(
                    batch_size: Int32(clamping: batch.batchSize), steps: Int32(clamping: batch.steps),
                    inputs: inputs.baseAddress, targets: targets.baseAddress,
                    first_stream: Int32(clamping: batch.firstStream), total_streams: Int32(clamping: batch.totalStreams))
                return body(&raw)
            }
        }
        try call { status }
    }

    private func call(_ body: () -> charrnn_status, function: String = #function) throws(ModelError) {
        let status = body()
        if status != CHARRNN_OK { throw .core(CoreError(status, function: function)) }
    }
}
