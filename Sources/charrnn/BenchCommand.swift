import ArgumentParser
import CharRNN
import Foundation

/// `charrnn bench`: what this machine does with the core, and why.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training and sampling speed, each product's rate against the machine's, and memory.",
        discussion: """
            For each configuration: training step time (forward, backward, clipping, Adam) as median \
            and minimum after warm-up, characters per second, achieved GFLOP/s (operation count in \
            docs/PERFORMANCE.md), and the time of the step's matrix products alone, measured in the \
            same run with the same shapes and threads; those products by kind (recurrent, dW_hh, \
            logits, ...: shape, calls per step, GFLOP/s per core in the step) beside the same product \
            made alone on every core at once and the FMA units' peak, the limits a faster step can \
            reach; sampling speed at 1 and 32 streams beside the \
            time of their matrix-vector products; a prime fed one step per character against \
            charrnn_prime (twice --sampling-characters); peak resident memory; and the BLAS kernels and \
            threads. Configurations: reference (2 × 512, batch 100 × 100, V 83) and small \
            (2 × 128, batch 50 × 50); --shape adds others. --contended repeats training with \
            another process keeping one core busy, at 1 and at 2 threads taken in turn step by step.
            """)

    @Option(name: .long, help: "Built-in configurations to run, comma-separated: reference, small.")
    var configs = "reference,small"

    @Option(name: .long, help: "Another configuration as H,L,B,T[,V] (repeatable).")
    var shape: [String] = []

    @Option(
        name: .long,
        help:
            "Cells to measure each configuration with, comma-separated: \(Cell.names(or: "or")). Configurations of other cells than the LSTM are named with the cell (reference-gru)."
    )
    var cell = "lstm"

    @Option(name: .long, help: "Train on this text's characters instead of random ones (its vocabulary sets V).")
    var data: String?

    @Option(name: .long, help: "Measured training steps per configuration (default: about 10 s of work, 5 to 30).")
    var iterations: Int?

    @Option(name: .long, help: "Unmeasured warm-up steps.")
    var warmup = 2

    @Option(name: .long, help: "Characters generated per stream in each sampling measurement.")
    var samplingCharacters = 1000

    @Flag(name: .long, help: "Also measure training at 1 and 2 threads, in turn, while another process keeps one core busy.")
    var contended = false

    @Flag(name: .long, help: "Print one JSON object instead of the table.")
    var json = false

    struct Report: Codable {
        var runtime: String
        var blasLibrary: String
        var blasCore: String
        var blasThreads: Int
        var threading: String
        var computeThreads: Int
        var threadWaiting: String
        var fmaPeak: Benchmark.FMAPeak? = nil
        var gemm: [Benchmark.GemmRate] = []
        var training: [Benchmark.TrainingResult] = []
        var sampling: [Benchmark.SamplingResult] = []
        var priming: [Benchmark.PrimingResult] = []
        var precisions: [Benchmark.PrecisionResult] = []
        var trainingPeakResidentBytes: Int = 0
        var trainingRequiredBytes: Int = 0
        var peakResidentBytes: Int = 0
        var contended: [ContendedResult] = []
    }

    struct ContendedResult: Codable {
        var name: String
        var oneThread: Benchmark.Timing
        var twoThreads: Benchmark.Timing
    }

    func run() throws {
        do {
            try runBenchmarks()
        } catch {
            throw fail(error)
        }
    }

    private func shapes() throws -> [Benchmark.Shape] {
        var result: [Benchmark.Shape] = []
        for name in configs.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
            switch name {
            case "reference": result.append(.reference)
            case "small": result.append(.small)
            default: throw UsageError("--configs: unknown configuration '\(name)' (reference, small)")
            }
        }
        for text in shape {
            let numbers = text.split(separator: ",").compactMap { Int($0) }
            guard numbers.count == 4 || numbers.count == 5, numbers.allSatisfy({ $0 >= 1 }) else {
                throw UsageError("--shape needs H,L,B,T or H,L,B,T,V, all positive (got '\(text)')")
            }
            result.append(
                Benchmark.Shape(
                    name: "H\(numbers[0])xL\(numbers[1]) B\(numbers[2])xT\(numbers[3])",
                    vocabularySize: numbers.count == 5 ? numbers[4] : 83, hiddenSize: numbers[0],
                    layerCount: numbers[1], batchSize: numbers[2], steps: numbers[3]))
        }
        guard !result.isEmpty else { throw UsageError("nothing to measure: --configs is empty and no --shape") }
        var cells: [Cell] = []
        for name in cell.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
            guard let cell = Cell(name) else {
                throw UsageError("--cell: unknown cell '\(name)' (" + Cell.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            if !cells.contains(cell) { cells.append(cell) }
        }
        guard !cells.isEmpty else {
            throw UsageError("--cell needs at least one cell (" + Cell.allCases.map(\.rawValue).joined(separator: ", ") + ")")
        }
        result = result.flatMap { shape in
            cells.map { cell in
                var shaped = shape
                shaped.cell = cell
                if cell != .lstm { shaped.name += "-\(cell)" }
                return shaped
            }
        }
        for shape in result { try shape.configuration.validate() }
        return result
    }

    private func runBenchmarks() throws {
        if let iterations, iterations < 1 { throw UsageError("--iterations must be at least 1") }
        guard warmup >= 0 else { throw UsageError("--warmup must be 0 or more") }
        guard samplingCharacters >= 1 else { throw UsageError("--sampling-characters must be at least 1") }
        var shapes = try shapes()
        var tokens: [Int32]? = nil
        if let data {
            let corpus = try Corpus(contentsOf: URL(fileURLWithPath: data))
            let vocabulary = Vocabulary(corpus: corpus.scalars)
            tokens = try vocabulary.encode(corpus.scalars)
            for index in shapes.indices {
                shapes[index].vocabularySize = vocabulary.count
                guard tokens!.count > shapes[index].batchSize * shapes[index].steps + 1 else {
                    throw UsageError(
                        "--data has \(tokens!.count) characters; \(shapes[index].name) needs more than \(shapes[index].batchSize * shapes[index].steps + 1)"
                    )
                }
            }
        }
        let runtime = ComputeRuntime.current
        if contended && !runtime.hasOpenMP {
            throw UsageError("--contended compares 1 and 2 OpenMP threads, and this build has no OpenMP (\(runtime.threading))")
        }
        var report = Report(
            runtime: runtime.description, blasLibrary: runtime.blasLibrary, blasCore: runtime.blasCore,
            blasThreads: runtime.blasThreads, threading: runtime.threading,
            computeThreads: runtime.computeThreads, threadWaiting: runtime.threadWaiting)
        let log = ProgressLog(enabled: !json)
        log.say("Compute: \(runtime); \(ProcessInfo.processInfo.activeProcessorCount) CPUs")

        log.say("FMA peak …")
        report.fmaPeak = try Benchmark.fmaPeak()
        // Training first, so the peak resident memory after it is training's.
        let baseline = Benchmark.peakResidentBytes
        for shape in shapes {
            let count = iterations ?? max(5, min(30, Int(1e12 / shape.trainingFlops)))
            log.say("training \(shape.name): \(warmup) warm-up + \(count) measured steps …")
            let result = try Benchmark.training(shape, tokens: tokens, warmup: warmup, iterations: count)
            report.training.append(result)
            if shape == shapes.first {
                report.trainingPeakResidentBytes = result.peakResidentBytesAfterSteps
                report.trainingRequiredBytes = shape.trainingBytes + baseline
            }
        }
        for shape in shapes {
            let n = shape.batchSize * shape.steps
            let h = shape.hiddenSize
            let gh = shape.cell.gateCount * h
            log.say("sgemm at \(shape.name)'s shapes …")
            report.gemm.append(try Benchmark.gemm(label: "\(shape.name): input projection, all steps", m: n, n: gh, k: h, repeats: 5))
            report.gemm.append(try Benchmark.gemm(label: "\(shape.name): recurrent, one step", m: shape.batchSize, n: gh, k: h, repeats: 50))
            report.gemm.append(try Benchmark.gemm(label: "\(shape.name): logits, all steps", m: n, n: shape.vocabularySize, k: h, repeats: 5))
        }
        for shape in shapes {
            for streams in [1, 32] {
                log.say("sampling \(shape.name), \(streams) stream\(streams == 1 ? "" : "s") …")
                report.sampling.append(
                    try Benchmark.sampling(
                        shape, streams: streams,
                        characters: streams == 1 ? samplingCharacters : max(100, samplingCharacters / 4), repeats: 5))
            }
        }
        for shape in shapes {
            log.say("priming \(shape.name): stepped and batched …")
            report.priming.append(try Benchmark.priming(shape, characters: samplingCharacters * 2, repeats: 5))
        }
        // The CPU's kernel, or the portable one when the environment asks
        // for it (to see what emulating bf16 costs).
        if Precision.bf16Kernel != .portableOnly {
            for shape in shapes {
                log.say("bf16 against fp32, \(shape.name) …")
                report.precisions.append(
                    try Benchmark.precisions(
                        shape, streams: [1, 32], characters: samplingCharacters, primeCharacters: samplingCharacters * 2, repeats: 5,
                        trainingSteps: iterations ?? max(5, min(20, Int(3e11 / shape.trainingFlops)))))
            }
        }
        if contended {
            let spinner = try Spinner()
            defer { spinner.stop() }
            for shape in shapes {
                let count = iterations ?? max(5, min(40, Int(6e11 / shape.trainingFlops)))
                log.say("contended \(shape.name): 1 and 2 threads in turn, another process busy …")
                let timings = try Benchmark.trainingByThreads(
                    shape, tokens: tokens, threadCounts: [1, 2], warmup: 1,
                    iterations: count)
                report.contended.append(ContendedResult(name: shape.name, oneThread: timings[0], twoThreads: timings[1]))
            }
            try Benchmark.setComputeThreads(runtime.computeThreads)
        }
        report.peakResidentBytes = Benchmark.peakResidentBytes

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            FileHandle.standardOutput.write(try encoder.encode(report))
            FileHandle.standardOutput.write(Data("\n".utf8))
        } else {
            print(Self.table(report))
        }
    }

    static func table(_ r: Report) -> String {
        func f(_ value: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", value) }
        var lines = ["", "Compute: \(r.runtime)", "", "Training step (median of the measured steps; min in brackets):"]
        lines.append("  config          step s            fwd s   bwd s   opt s    chars/s   GFLOP/s   products s  prod GFLOP/s  step/products")
        for t in r.training {
            lines.append(
                "  " + t.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                    + "  \(f(t.step.median)) (\(f(t.step.minimum)))".padding(toLength: 18, withPad: " ", startingAt: 0)
                    + "  \(f(t.forward.median))   \(f(t.backward.median))   \(f(t.optimizer.median, 4))"
                    + "  \(String(format: "%9.0f", t.charactersPerSecond))   \(String(format: "%6.1f", t.gflops))"
                    + "     \(f(t.products.median))       \(String(format: "%6.1f", t.productsGflops))        \(f(t.ratioToProducts, 2))")
        }
        lines.append(
            "  (operations per step: " + r.training.map { "\($0.shape.name) \(String(format: "%.3g", $0.flops))" }.joined(separator: ", ") + ")")
        lines.append("")
        lines.append(contentsOf: productLines(r))
        lines.append("")
        lines.append("sgemm on this machine, C = A·Bᵀ split across threads as the core does (median):")
        for g in r.gemm {
            lines.append(
                "  " + g.label.padding(toLength: 40, withPad: " ", startingAt: 0)
                    + "\(g.m) × \(g.n) × \(g.k)".padding(toLength: 20, withPad: " ", startingAt: 0)
                    + "\(f(g.time.median * 1000, 3)) ms  \(String(format: "%6.1f", g.gflops)) GFLOP/s")
        }
        lines.append("")
        lines.append("Sampling (top-k 5; one step = one character per stream):")
        lines.append("  config          streams   chars/s    ms/step   products ms/step   step/products")
        for s in r.sampling {
            lines.append(
                "  " + s.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                    + String(
                        format: "  %7d  %8.0f   %8.3f   %16.3f   %13.2f", s.streams, s.charactersPerSecond,
                        s.perStep.median * 1000, s.productsPerStep.median * 1000, s.ratioToProducts))
        }
        lines.append("")
        lines.append("Priming (a known text into one stream: one charrnn_step per character, against charrnn_prime):")
        lines.append("  config          chars   stepped chars/s   charrnn_prime chars/s   ratio")
        for p in r.priming {
            lines.append(
                "  " + p.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                    + String(
                        format: "  %5d   %15.0f   %21.0f   %5.2f", p.characters, p.steppedCharactersPerSecond, p.primedCharactersPerSecond,
                        p.primedCharactersPerSecond / p.steppedCharactersPerSecond))
        }
        lines.append("")
        if r.precisions.isEmpty {
            lines.append(
                "bf16 products: not measured (\(ComputeRuntime.current.bf16Kernel): only the CPU's own bf16 instructions are faster than fp32)")
        } else {
            lines.append("bf16 products against fp32 (same model, turn about; kernel \(r.precisions[0].kernel)):")
            lines.append("  config          streams   fp32 chars/s   bf16 chars/s   bf16 / fp32")
            for p in r.precisions {
                for s in p.sampling {
                    lines.append(
                        "  " + p.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                            + String(
                                format: "  %7d   %12.0f   %12.0f   %11.2f", s.streams, Double(s.streams) / s.float32.median,
                                Double(s.streams) / s.bfloat16.median, s.speedup))
                }
                lines.append(
                    "  " + p.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                        + String(
                            format: "    prime   %12.0f   %12.0f   %11.2f", Double(p.primeCharacters) / p.float32Priming.median,
                            Double(p.primeCharacters) / p.bfloat16Priming.median, p.primingSpeedup))
                let characters = Double(p.shape.batchSize * p.shape.steps)
                lines.append(
                    "  " + p.shape.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                        + String(
                            format: "    train   %12.0f   %12.0f   %11.2f   (step %.3f s against %.3f s)", characters / p.float32Training.median,
                            characters / p.bfloat16Training.median, p.trainingSpeedup, p.bfloat16Training.median, p.float32Training.median))
            }
        }
        lines.append("")
        let mb = { (bytes: Int) in String(format: "%.0f MB", Double(bytes) / 1e6) }
        if let first = r.training.first {
            lines.append(
                "Memory: peak resident \(mb(r.trainingPeakResidentBytes)) after training \(first.shape.name); "
                    + "it must hold \(mb(r.trainingRequiredBytes)) (parameters, gradients, Adam, activations, and the process at start): "
                    + "ratio \(f(Double(r.trainingPeakResidentBytes) / Double(r.trainingRequiredBytes), 2)). Peak for the whole run \(mb(r.peakResidentBytes))."
            )
        }
        if !r.contended.isEmpty {
            lines.append("")
            lines.append("With another process keeping one core busy (training step, median):")
            for c in r.contended {
                lines.append(
                    "  " + c.name.padding(toLength: 14, withPad: " ", startingAt: 0)
                        + "  1 thread \(f(c.oneThread.median)) s   2 threads \(f(c.twoThreads.median)) s   2/1 = \(f(c.twoThreads.median / c.oneThread.median, 2))"
                )
            }
        }
        return lines.joined(separator: "\n")
    }
}

extension BenchCommand {
    /// The products of each configuration's training step by kind, beside
    /// the same product made alone and the FMA units' peak, all per core.
    static func productLines(_ r: Report) -> [String] {
        var lines: [String] = []
        let peak = r.fmaPeak.map { $0.gflopsPerCore } ?? .nan
        if let fma = r.fmaPeak {
            lines.append(
                "Products of a training step by kind, one row per shape a thread makes one in (GFLOP/s per core; "
                    + "alone: the same product on every core at once, fastest of 5; FMA peak \(String(format: "%.1f", fma.gflopsPerCore)) "
                    + "per core with \(fma.instructions), \(fma.threads) thread\(fma.threads == 1 ? "" : "s") at once):")
        }
        lines.append(
            "  product                           op      m × n × k                calls   s/step   in step    alone   in/alone   in/peak")
        for t in r.training {
            lines.append("  \(t.shape.name) (\(t.threads) thread\(t.threads == 1 ? "" : "s"); s/step is thread time ÷ threads)")
            var total = 0.0
            for p in t.productKinds {
                let share = p.threadSecondsPerStep / Double(max(1, t.threads))
                total += share
                lines.append(
                    "    " + p.name.padding(toLength: 32, withPad: " ", startingAt: 0)
                        + p.operation.padding(toLength: 8, withPad: " ", startingAt: 0)
                        + "\(p.m) × \(p.n) × \(p.k)".padding(toLength: 23, withPad: " ", startingAt: 0)
                        + String(
                            format: "%6d   %6.3f   %7.1f  %7.1f     %5.2f      %3.0f %%", p.callsPerStep, share, p.gflopsPerCoreInStep,
                            p.gflopsPerCoreAlone, p.gflopsPerCoreInStep / p.gflopsPerCoreAlone, 100 * p.gflopsPerCoreInStep / peak))
            }
            lines.append(
                "    " + "all products".padding(toLength: 63, withPad: " ", startingAt: 0)
                    + String(
                        format: "%6d   %6.3f   (products alone, wall: %.3f s)", t.productKinds.reduce(0) { $0 + $1.callsPerStep }, total,
                        t.products.median))
        }
        return lines
    }
}

/// Progress lines on stderr, so stdout holds only the report.
struct ProgressLog {
    let enabled: Bool
    func say(_ text: String) {
        if enabled { FileHandle.standardError.write(Data("bench: \(text)\n".utf8)) }
    }
}

/// Another process that keeps one core busy until stopped.
final class Spinner {
    private let process = Process()
    init() throws {
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "while :; do :; done"]
        try process.run()
    }
    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
