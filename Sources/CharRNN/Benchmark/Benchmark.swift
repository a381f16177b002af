import CCharRNN
import Foundation

/// Measurements of the core on this machine: training steps beside the
/// matrix products they cannot avoid, sampling speed, the machine's sgemm
/// rate at the model's shapes, and memory. Used by `charrnn bench`; every
/// figure is a median (and minimum) over repeated runs, since shared
/// machines are noisy. Operation and memory counts are documented in
/// docs/PERFORMANCE.md.
public enum Benchmark {
    /// A model and batch shape to measure.
    public struct Shape: Sendable, Codable, Equatable {
        /// A short label, e.g. `reference`.
        public var name: String
        /// Vocabulary size V.
        public var vocabularySize: Int
        /// Hidden size H.
        public var hiddenSize: Int
        /// Layers L.
        public var layerCount: Int
        /// Batch size B.
        public var batchSize: Int
        /// Steps T.
        public var steps: Int
        /// The recurrent cell.
        public var cell: Cell

        /// Creates a shape.
        public init(
            name: String, vocabularySize: Int, hiddenSize: Int, layerCount: Int, batchSize: Int, steps: Int,
            cell: Cell = .lstm
        ) {
            self.name = name
            self.cell = cell
            self.vocabularySize = vocabularySize
            self.hiddenSize = hiddenSize
            self.layerCount = layerCount
            self.batchSize = batchSize
            self.steps = steps
        }

        /// The notebook's configuration: 2 × 512, batch 100 × 100, V = 83.
        public static let reference = Shape(name: "reference", vocabularySize: 83, hiddenSize: 512, layerCount: 2, batchSize: 100, steps: 100)
        /// A small configuration: 2 × 128, batch 50 × 50, V = 83.
        public static let small = Shape(name: "small", vocabularySize: 83, hiddenSize: 128, layerCount: 2, batchSize: 50, steps: 50)

        /// The model part of the shape.
        public var configuration: ModelConfiguration {
            ModelConfiguration(vocabularySize: vocabularySize, hiddenSize: hiddenSize, layerCount: layerCount, cell: cell)
        }

        /// Floating-point operations of one training step's matrix products
        /// (2 per multiply-add). With N = B·T and G the cell's gate blocks:
        /// per layer the recurrent product forward, back through W_hh, and
        /// dW_hh (3 × 2·N·GH·H); layers above the first add the input
        /// projection, dW_ih and dX (3 more); the output layer costs
        /// 3 × 2·N·V·H. Layer 0's input is a lookup.
        public var trainingFlops: Double {
            let n = Double(batchSize * steps)
            let h = Double(hiddenSize)
            let v = Double(vocabularySize)
            let unit = 2 * n * Double(cell.gateCount) * h * h
            return unit * (3 + 6 * Double(layerCount - 1)) + 3 * 2 * n * v * h
        }

        /// Bytes training must hold: parameters, gradients and Adam's two
        /// moments (4 × P floats), the activations of one B × T batch and the
        /// carried state (0 for a shape the core refuses).
        public var trainingBytes: Int {
            (try? configuration.trainingBytes(batchSize: batchSize, steps: steps)) ?? 0
        }
    }

    /// Median and minimum of a set of timings, in seconds.
    public struct Timing: Sendable, Codable, Equatable {
        /// The median.
        public let median: Double
        /// The minimum.
        public let minimum: Double

        init(_ samples: [Double]) {
            median = Trainer.median(samples)
            minimum = samples.min() ?? .nan
        }
    }

    /// One training configuration's figures.
    public struct TrainingResult: Sendable, Codable {
        /// What was measured.
        public let shape: Shape
        /// A whole step: forward, backward, clipping, Adam.
        public let step: Timing
        /// The forward pass alone.
        public let forward: Timing
        /// The backward pass alone.
        public let backward: Timing
        /// Clipping and Adam.
        public let optimizer: Timing
        /// The step's matrix products alone (same calls, same shapes, same threads).
        public let products: Timing
        /// The same products by kind, in the order the step first makes them,
        /// each beside the machine's own rate for its shape.
        public let productKinds: [ProductKind]
        /// The threads that made them.
        public let threads: Int
        /// Floating-point operations per step.
        public let flops: Double
        /// The process's peak resident memory after the training steps (before
        /// the products-only measurement allocates its own buffers).
        public let peakResidentBytesAfterSteps: Int
        /// Characters (B·T) per second at the median step.
        public var charactersPerSecond: Double { Double(shape.batchSize * shape.steps) / step.median }
        /// Achieved GFLOP/s at the median step.
        public var gflops: Double { flops / step.median / 1e9 }
        /// GFLOP/s of the products alone.
        public var productsGflops: Double { flops / products.median / 1e9 }
        /// Median step time over median products time (1 would be all products).
        public var ratioToProducts: Double { step.median / products.median }
    }

    /// Measures training steps of `shape` on `tokens` (or random characters),
    /// after `warmup` unmeasured steps, and the same step's products alone.
    public static func training(_ shape: Shape, tokens: [Int32]? = nil, warmup: Int, iterations: Int) throws(ModelError) -> TrainingResult {
        let step = try TimedStep(shape, tokens: tokens)
        let model = step.model
        var steps: [Double] = []
        var forwards: [Double] = []
        var backwards: [Double] = []
        var optimizers: [Double] = []
        var products: [Double] = []
        func trainingStep(record: Bool, iteration: Int) throws(ModelError) {
            let times = try step.run(iteration: iteration)
            if record {
                forwards.append(times.forward)
                backwards.append(times.backward)
                optimizers.append(times.optimizer)
                steps.append(times.forward + times.backward + times.optimizer)
            }
        }
        for iteration in 0..<warmup { try trainingStep(record: false, iteration: iteration) }
        // Training's memory is all touched by now; the products-only buffers come after.
        let peakAfterSteps = peakResidentBytes
        var config = shape.configuration.raw
        // One block for the products' outputs, so one log range holds them all.
        let activationCount = try shape.configuration.activationCount(batchSize: shape.batchSize, steps: shape.steps)
        let outputs = try buffer(activationCount + model.parameterCount)
        let log = ProductLog()
        func productsOnly(record: Bool) throws(ModelError) {
            let t0 = ContinuousClock.now
            try ModelError.check(
                charrnn_training_products(
                    &config, model.parameters.baseAddress, Int32(shape.batchSize),
                    Int32(shape.steps), outputs.baseAddress, outputs.baseAddress + activationCount),
                "charrnn_training_products")
            if record { products.append((ContinuousClock.now - t0).seconds) }
        }
        // The warm-up run also sizes the log.
        _ = try log.recording(into: outputs) { () throws(ModelError) in try productsOnly(record: false) }
        // Alternate the two, so a shared machine's slow moments fall on both alike.
        var logged: [[ProductLog.Entry]] = []
        for iteration in 0..<iterations {
            try trainingStep(record: true, iteration: warmup + iteration)
            logged.append(try log.recording(into: outputs) { () throws(ModelError) in try productsOnly(record: true) })
        }
        let kinds = try ProductKind.kinds(of: logged).map { kind throws(ModelError) in try kind.measuredAlone() }
        return TrainingResult(
            shape: shape, step: Timing(steps), forward: Timing(forwards), backward: Timing(backwards),
            optimizer: Timing(optimizers), products: Timing(products), productKinds: kinds,
            threads: ComputeRuntime.current.computeThreads, flops: shape.trainingFlops,
            peakResidentBytesAfterSteps: peakAfterSteps)
    }

    /// The batch a benchmark trains on: from the middle of `tokens`, or
    /// synthetic characters.
    static func benchmarkBatch(_ shape: Shape, tokens: [Int32]?) -> Batch {
        var generator = SplitMix(seed: 7)
        let count = shape.batchSize * shape.steps
        let source = tokens ?? (0...count).map { _ in Int32(generator.next() % UInt64(shape.vocabularySize)) }
        let offset = max(0, (source.count - count - 1) / 2)
        return Batch(
            unchecked: shape.batchSize, steps: shape.steps,
            inputs: Array(source[offset..<offset + count]), targets: Array(source[offset + 1...offset + count]))
    }

    /// One model training on one batch, a step at a time, as the
    /// notebook's settings train (keep 0.5, clip 5, Adam's defaults), with
    /// its products in `precision` and each part of the step timed.
    final class TimedStep {
        let model: Model
        let precision: Precision
        private let batch: Batch
        private var state: RecurrentState
        private let adam = AdamOptions()

        init(_ shape: Shape, tokens: [Int32]?, precision: Precision = .float32) throws(ModelError) {
            self.precision = precision
            model = try Model(configuration: shape.configuration, seed: 1)
            batch = benchmarkBatch(shape, tokens: tokens)
            state = RecurrentState(configuration: shape.configuration, batchSize: shape.batchSize)
        }

        /// Runs one step (`iteration` seeds the dropout masks); returns the
        /// seconds of the forward pass, the backward pass, and clipping plus Adam.
        func run(iteration: Int) throws(ModelError) -> (forward: Double, backward: Double, optimizer: Double) {
            let t0 = ContinuousClock.now
            let (activations, _) = try model.forwardForBenchmark(
                batch, &state, keepProbability: 0.5, seed: UInt64(iteration), precision: precision)
            let t1 = ContinuousClock.now
            try model.backwardForBenchmark(batch, activations, precision: precision)
            let t2 = ContinuousClock.now
            try model.applyGradients(clipNorm: 5, adam: adam)
            let t3 = ContinuousClock.now
            return ((t1 - t0).seconds, (t2 - t1).seconds, (t3 - t2).seconds)
        }
    }

    /// Training step time (forward, backward, clipping, Adam) at each of
    /// `threadCounts`, measured on one model with the counts taken in turn,
    /// step by step, so a shared machine's slow moments fall on all of them
    /// alike. Leaves the compute threads at the last count.
    public static func trainingByThreads(
        _ shape: Shape, tokens: [Int32]? = nil, threadCounts: [Int], warmup: Int,
        iterations: Int
    ) throws(ModelError) -> [Timing] {
        let step = try TimedStep(shape, tokens: tokens)
        var samples = Array(repeating: [Double](), count: threadCounts.count)
        for iteration in 0..<(warmup + iterations) {
            for (index, threads) in threadCounts.enumerated() {
                try setComputeThreads(threads)
                let times = try step.run(iteration: iteration)
                if iteration >= warmup { samples[index].append(times.forward + times.backward + times.optimizer) }
            }
        }
        return samples.map(Timing.init)
    }

    /// One sampling measurement.
    public struct SamplingResult: Sendable, Codable {
        /// The model's shape (batch fields unused).
        public let shape: Shape
        /// Streams generated together.
        public let streams: Int
        /// Time per generated step (one character per stream): draw and feed.
        public let perStep: Timing
        /// The step's matrix(-vector) products alone.
        public let productsPerStep: Timing
        /// Characters per second over all streams, at the median.
        public var charactersPerSecond: Double { Double(streams) / perStep.median }
        /// Median step time over median products time.
        public var ratioToProducts: Double { perStep.median / productsPerStep.median }
    }

    /// Measures generation of `characters` characters per stream, `repeats` times.
    public static func sampling(_ shape: Shape, streams: Int, characters: Int, repeats: Int) throws(ModelError) -> SamplingResult {
        let model = try Model(configuration: shape.configuration, seed: 1)
        let weights = try InferenceWeights(model: model, precision: .float32)
        var options = SamplingOptions()
        options.topK = min(5, shape.vocabularySize)
        var perStep: [Double] = []
        var products: [Double] = []
        var config = shape.configuration.raw
        let scratch = try buffer(shape.configuration.stepScratchCount(streams: streams))
        let state = try buffer(shape.configuration.stateCount(batchSize: streams))
        let logits = try buffer(streams * shape.vocabularySize)
        for _ in 0...repeats {  // the first pass warms up
            var session = try InferenceSession(weights: weights, streams: streams, options: options)
            try session.feed([Int32](repeating: 0, count: streams))
            let t0 = ContinuousClock.now
            for _ in 0..<characters { try session.feed(try session.draw()) }
            perStep.append((ContinuousClock.now - t0).seconds / Double(characters))
            let t1 = ContinuousClock.now
            for _ in 0..<characters {
                try ModelError.check(
                    charrnn_step_products(
                        &config, model.parameters.baseAddress, Int32(streams), state.baseAddress,
                        scratch.baseAddress, logits.baseAddress), "charrnn_step_products")
            }
            products.append((ContinuousClock.now - t1).seconds / Double(characters))
        }
        return SamplingResult(
            shape: shape, streams: streams, perStep: Timing(Array(perStep.dropFirst())),
            productsPerStep: Timing(Array(products.dropFirst())))
    }

    /// Feeding a prime into one stream, one `charrnn_step` per character
    /// against `charrnn_prime` (what sampling and the server do), in turns.
    public struct PrimingResult: Sendable, Codable {
        /// The model measured.
        public let shape: Shape
        /// Characters in the prime.
        public let characters: Int
        /// One `charrnn_step` per character (logits every time).
        public let stepped: Timing
        /// `charrnn_prime` in pieces of `PrimeFeeder.defaultPiece` (logits after the last).
        public let primed: Timing
        /// Prime characters per second, each way, at the median.
        public var steppedCharactersPerSecond: Double { Double(characters) / stepped.median }
        public var primedCharactersPerSecond: Double { Double(characters) / primed.median }
    }

    /// Measures feeding a prime of `characters` characters both ways, `repeats` times each.
    public static func priming(_ shape: Shape, characters: Int, repeats: Int) throws(ModelError) -> PrimingResult {
        let model = try Model(configuration: shape.configuration, seed: 1)
        let weights = try InferenceWeights(model: model, precision: .float32)
        let prime = (0..<characters).map { Int32(($0 * 7 + $0 / 5) % shape.vocabularySize) }
        let feeder = try PrimeFeeder(weights: weights, piece: PrimeFeeder.defaultPiece)
        let scratch = try buffer(shape.configuration.stepScratchCount(streams: 1))
        var logits = [Float](repeating: 0, count: shape.vocabularySize)
        var token: [Int32] = [0]  // one stream's token, reused: no allocation inside the timed loop
        var stepped: [Double] = []
        var primed: [Double] = []
        for _ in 0...repeats {  // the first pass warms up
            var state = try feeder.zeroState()
            let t0 = ContinuousClock.now
            for character in prime {
                token[0] = character
                try weights.step(streams: 1, tokens: token, state: &state, scratch: scratch, logits: &logits)
            }
            stepped.append((ContinuousClock.now - t0).seconds)
            state = try feeder.zeroState()
            let t1 = ContinuousClock.now
            _ = try feeder.feedAll(prime, state: &state)
            primed.append((ContinuousClock.now - t1).seconds)
        }
        return PrimingResult(
            shape: shape, characters: characters, stepped: Timing(Array(stepped.dropFirst())), primed: Timing(Array(primed.dropFirst())))
    }

    /// bf16 products against fp32 on one model, measured turn about in one
    /// run (`Precision`): generation at each stream count, a prime fed
    /// into one stream, and a training step.
    public struct PrecisionResult: Sendable, Codable {
        /// The model measured.
        public let shape: Shape
        /// The bf16 kernel measured (`ComputeRuntime.bf16Kernel`).
        public let kernel: String
        /// One row per stream count.
        public struct Sampling: Sendable, Codable {
            /// Streams generated together.
            public let streams: Int
            /// Time per step (one character per stream, draw and feed) in fp32.
            public let float32: Timing
            /// The same in bf16.
            public let bfloat16: Timing
            /// bf16's characters per second over fp32's, at the medians.
            public var speedup: Double { float32.median / bfloat16.median }
        }
        /// Generation, by stream count.
        public let sampling: [Sampling]
        /// Characters in the prime.
        public let primeCharacters: Int
        /// Feeding the prime (`PrimeFeeder`, pieces of `defaultPiece`) in fp32.
        public let float32Priming: Timing
        /// The same in bf16.
        public let bfloat16Priming: Timing
        /// bf16's prime characters per second over fp32's, at the medians.
        public var primingSpeedup: Double { float32Priming.median / bfloat16Priming.median }
        /// A training step (forward, backward, clipping, Adam) with fp32 products.
        public let float32Training: Timing
        /// The same with bf16 products.
        public let bfloat16Training: Timing
        /// fp32's step time over bf16's, at the medians.
        public var trainingSpeedup: Double { float32Training.median / bfloat16Training.median }
    }

    /// Measures `PrecisionResult`: `characters` per stream at each count in
    /// `streams`, a prime of `primeCharacters`, `repeats` turns of each
    /// precision after a warm-up turn, and `trainingSteps` training steps of
    /// each, turn about, after one of each unmeasured.
    public static func precisions(
        _ shape: Shape, streams: [Int], characters: Int, primeCharacters: Int, repeats: Int, trainingSteps: Int
    ) throws(ModelError) -> PrecisionResult {
        let model = try Model(configuration: shape.configuration, seed: 1, purpose: .inference)
        let both = [try InferenceWeights(model: model, precision: .float32), try InferenceWeights(model: model, precision: .bfloat16)]
        var options = SamplingOptions()
        options.topK = min(5, shape.vocabularySize)
        var rows: [PrecisionResult.Sampling] = []
        for count in streams {
            var times: [[Double]] = [[], []]
            for turn in 0...repeats {
                for (index, weights) in both.enumerated() {
                    var session = try InferenceSession(weights: weights, streams: count, options: options)
                    try session.feed([Int32](repeating: 0, count: count))
                    let t0 = ContinuousClock.now
                    for _ in 0..<characters { try session.feed(try session.draw()) }
                    if turn > 0 { times[index].append((ContinuousClock.now - t0).seconds / Double(characters)) }
                }
            }
            rows.append(.init(streams: count, float32: Timing(times[0]), bfloat16: Timing(times[1])))
        }
        let prime = (0..<primeCharacters).map { Int32(($0 * 7 + $0 / 5) % shape.vocabularySize) }
        let feeders = [
            try PrimeFeeder(weights: both[0], piece: PrimeFeeder.defaultPiece), try PrimeFeeder(weights: both[1], piece: PrimeFeeder.defaultPiece),
        ]
        var primed: [[Double]] = [[], []]
        for turn in 0...repeats {
            for (index, feeder) in feeders.enumerated() {
                var state = try feeder.zeroState()
                let t0 = ContinuousClock.now
                _ = try feeder.feedAll(prime, state: &state)
                if turn > 0 { primed[index].append((ContinuousClock.now - t0).seconds) }
            }
        }
        let steps = [try TimedStep(shape, tokens: nil, precision: .float32), try TimedStep(shape, tokens: nil, precision: .bfloat16)]
        var trained: [[Double]] = [[], []]
        for iteration in 0...trainingSteps {
            for (index, step) in steps.enumerated() {
                let times = try step.run(iteration: iteration)
                if iteration > 0 { trained[index].append(times.forward + times.backward + times.optimizer) }
            }
        }
        return PrecisionResult(
            shape: shape, kernel: ComputeRuntime.current.bf16Kernel, sampling: rows, primeCharacters: primeCharacters,
            float32Priming: Timing(primed[0]), bfloat16Priming: Timing(primed[1]),
            float32Training: Timing(trained[0]), bfloat16Training: Timing(trained[1]))
    }

    /// The machine's rate for C[M, N] = A[M, K] B[N, K]^T, split across
    /// threads as the core splits its big products.
    public struct GemmRate: Sendable, Codable {
        /// What the shape is in the model.
        public let label: String
        /// Rows of C.
        public let m: Int
        /// Columns of C.
        public let n: Int
        /// Inner dimension.
        public let k: Int
        /// Median time.
        public let time: Timing
        /// GFLOP/s at the median.
        public var gflops: Double { 2 * Double(m) * Double(n) * Double(k) / time.median / 1e9 }
    }

    /// A block for a measurement.
    static func buffer(_ count: Int) throws(ModelError) -> FloatBuffer {
        do { return try FloatBuffer(count: count) } catch { throw .insufficientMemory(error) }
    }

    /// Measures sgemm at one shape.
    public static func gemm(label: String, m: Int, n: Int, k: Int, repeats: Int) throws(ModelError) -> GemmRate {
        let a = try buffer(m * k)
        let b = try buffer(n * k)
        let c = try buffer(m * n)
        var generator = SplitMix(seed: 3)
        for i in 0..<a.count { a.baseAddress[i] = Float(generator.next() % 1000) / 1000 - 0.5 }
        for i in 0..<b.count { b.baseAddress[i] = Float(generator.next() % 1000) / 1000 - 0.5 }
        var times: [Double] = []
        for iteration in 0...repeats {
            let t0 = ContinuousClock.now
            try ModelError.check(
                charrnn_gemm_nt(Int32(m), Int32(n), Int32(k), a.baseAddress, b.baseAddress, c.baseAddress),
                "charrnn_gemm_nt")
            if iteration > 0 { times.append((ContinuousClock.now - t0).seconds) }
        }
        return GemmRate(label: label, m: m, n: n, k: k, time: Timing(times))
    }

    /// The process's peak resident memory so far, in bytes.
    public static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    /// Sets the OpenMP threads the core uses from this thread on.
    public static func setComputeThreads(_ threads: Int) throws(ModelError) {
        try ModelError.check(charrnn_set_compute_threads(Int32(clamping: threads)), "charrnn_set_compute_threads")
    }
}

/// A tiny deterministic generator for synthetic data (benchmarks and tests).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
