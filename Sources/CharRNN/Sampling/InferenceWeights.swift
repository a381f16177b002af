import CCharRNN

/// The arithmetic of the matrix products of generation or of training.
///
/// Parameters, checkpoints, evaluation and everything but the products
/// are always fp32; the products of sampling, priming and training can be
/// made in bf16.
public enum Precision: String, Sendable, CaseIterable, Codable, LosslessStringConvertible {
    /// fp32 products: the texts a checkpoint gives for a seed by default.
    case float32 = "fp32"
    /// bf16 products with fp32 sums (`charrnn_step_bf16`,
    /// `charrnn_forward_bf16`): each product's inputs rounded to bf16 as it
    /// is made; state, gates, scores, gradients and the optimizer stay
    /// fp32. Different texts from `float32` for the same seed (the scores
    /// move by about 1e-2), and a different training run.
    case bfloat16 = "bf16"

    /// The name `--precision` takes: `fp32` or `bf16`.
    public var description: String { rawValue }

    /// The precision named `fp32` or `bf16`, or nil.
    public init?(_ description: String) { self.init(rawValue: description) }

    /// The kernel bf16 products run on in this process.
    public enum BF16Kernel: Sendable, Equatable {
        /// The CPU's AVX512_BF16 instructions: faster than fp32.
        case avx512
        /// Portable C with the same bits, several times slower than fp32,
        /// because the environment asked for it (`CHARRNN_BF16=portable`).
        case portableAsked
        /// Portable C, because the CPU has no AVX512_BF16.
        case portableOnly
    }

    /// The kernel bf16 products run on, chosen by the core when it was loaded.
    public static var bf16Kernel: BF16Kernel {
        if charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue) { return .avx512 }
        return ComputeRuntime.current.bf16Kernel.contains("CHARRNN_BF16") ? .portableAsked : .portableOnly
    }
}

/// The weights generation reads, in one precision: the model's fp32
/// parameters and, for bf16, their packed copy (`charrnn_bf16_pack`, made
/// once). The step and the prime go through here, so every way of
/// generating (a text, a batch, the scheduler) computes alike.
struct InferenceWeights {
    /// The model whose parameters these are.
    let model: Model
    /// The precision of the products.
    let precision: Precision
    /// bf16 only: the packed weights, two bf16 values per float slot.
    private let packed: FloatBuffer?

    /// - Throws: `ModelError` when the packed copy does not fit in memory.
    init(model: Model, precision: Precision) throws(ModelError) {
        self.model = model
        self.precision = precision
        guard precision == .bfloat16 else {
            packed = nil
            return
        }
        let count = try model.configuration.bf16WeightsCount()
        let block: FloatBuffer
        do {
            try MemoryBudget.check(requiredBytes: MemoryBudget.floatBytes((count + 1) / 2))
            block = try FloatBuffer(count: (count + 1) / 2)
        } catch {
            throw .insufficientMemory(error)
        }
        var config = model.configuration.raw
        let status = block.baseAddress.withMemoryRebound(to: UInt16.self, capacity: count) {
            charrnn_bf16_pack(&config, model.parameters.baseAddress, $0)
        }
        try ModelError.check(status, "charrnn_bf16_pack")
        packed = block
    }

    /// One step for `streams` streams (`charrnn_step` or `charrnn_step_bf16`):
    /// feeds `tokens`, advances `state` (laid out for `streams`) and writes
    /// each stream's scores for the next character into the first
    /// `streams × V` of `logits`.
    func step(
        streams: Int, tokens: [Int32], state: inout [Float], scratch: FloatBuffer,
        logits: inout [Float]
    ) throws(ModelError) {
        var config = model.configuration.raw
        let parameters = model.parameters.baseAddress
        try call("charrnn_step") { packed in
            guard let packed else {
                return charrnn_step(&config, parameters, Int32(streams), tokens, &state, scratch.baseAddress, &logits)
            }
            return charrnn_step_bf16(&config, parameters, packed, Int32(streams), tokens, &state, scratch.baseAddress, &logits)
        }
    }

    /// Feeds `tokens` into a one-stream `state` (`charrnn_prime` or
    /// `charrnn_prime_bf16`), writing the scores after the last into
    /// `logits` when it is not nil.
    func prime(
        _ tokens: UnsafeBufferPointer<Int32>, state: inout [Float], scratch: FloatBuffer,
        logits: UnsafeMutablePointer<Float>?
    ) throws(ModelError) {
        var config = model.configuration.raw
        let parameters = model.parameters.baseAddress
        try call("charrnn_prime") { packed in
            guard let packed else {
                return charrnn_prime(&config, parameters, Int32(tokens.count), tokens.baseAddress, &state, scratch.baseAddress, logits)
            }
            return charrnn_prime_bf16(&config, parameters, packed, Int32(tokens.count), tokens.baseAddress, &state, scratch.baseAddress, logits)
        }
    }

    /// Runs `body` with the packed bf16 weights (nil in fp32) and throws on
    /// a failed status, naming `function` (with `_bf16` in bf16).
    private func call(_ function: String, _ body: (UnsafePointer<UInt16>?) -> charrnn_status) throws(ModelError) {
        let status =
            packed.map { packed in
                packed.baseAddress.withMemoryRebound(to: UInt16.self, capacity: 2 * packed.count) { body($0) }
            } ?? body(nil)
        if status != CHARRNN_OK { throw .core(CoreError(status, function: packed == nil ? function : function + "_bf16")) }
    }
}
