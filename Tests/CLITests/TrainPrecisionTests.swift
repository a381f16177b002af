import CCharRNN
import Foundation
import Testing

/// Protects `charrnn train --precision bf16`: refused in one line on a CPU
/// without AVX512_BF16 (unless the portable kernel is asked for), recorded
/// in the run so a resume keeps it and a resume that names another is
/// refused, and, where the CPU has AVX512_BF16, trained to the portable
/// kernel's bits.
@Suite("train --precision")
struct TrainPrecisionTests {
    static let cpuHasBF16 = charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue)

    /// Trains `iterations` iterations of a small model with bf16 products
    /// into `run`; returns the result and the last checkpoint's tensor bytes.
    static func trainBF16(
        _ scratch: Scratch, run: String, iterations: Int = 4, environment: [String: String], extra: [String] = []
    ) throws -> (result: CLI.Result, bytes: Data?) {
        let result = try CLI.run(
            [
                "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path(run), "--precision", "bf16", "--hidden", "24",
                "--batch", "6", "--steps", "16", "--max-iterations", "\(iterations)", "--save-every", "\(iterations)", "--seed", "5",
            ] + extra, extraEnvironment: environment)
        let name = try? FileManager.default.contentsOfDirectory(atPath: scratch.path(run)).first {
            $0.hasPrefix("i\(iterations)_") && $0.hasSuffix(".safetensors")
        }
        return (result, try name.map { try ThreadCountTests.tensorBytes(scratch.path(run) + "/" + $0) })
    }

    @Test("On a CPU without AVX512_BF16, --precision bf16 is refused in one line that names it, and nothing is written")
    func bf16IsRefusedWithoutTheInstructions() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 5_000))
        let (result, _) = try Self.trainBF16(scratch, run: "run", environment: [:])
        if Self.cpuHasBF16 {
            #expect(result.status == 0, "this CPU has AVX512_BF16: \(result.stderr)")
            return
        }
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("charrnn: error: --precision bf16 needs a CPU with AVX512_BF16"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("run")), "no run directory for a refused run")
        let typo = try CLI.run(["train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("t"), "--precision", "fp16"])
        #expect(typo.status != 0 && typo.stderr.contains("--precision must be fp32 or bf16 (got 'fp16')"), "\(typo.stderr)")
    }

    @Test("A bf16 run says so, records it, resumes in bf16 and refuses a resume that names fp32")
    func bf16RunIsRecordedAndResumed() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 5_000))
        let portable = ["CHARRNN_BF16": "portable"]
        let (first, _) = try Self.trainBF16(scratch, run: "run", iterations: 3, environment: portable)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains(", bf16 products (portable (CHARRNN_BF16=portable))"), "\(first.stdout)")
        let latest = scratch.path("run")  // a run directory resumes from its latest checkpoint
        let inspect = try CLI.run(["inspect", scratch.path("run/best.safetensors")])
        #expect(inspect.stdout.contains("precision bf16"), "\(inspect.stdout)")
        let described = try CLI.run(["inspect", "--json", scratch.path("run/best.safetensors")])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(described.stdout.utf8)) as? [String: Any])
        #expect((object["options"] as? [String: Any])?["precision"] as? String == "bf16", "\(described.stdout)")

        let other = try CLI.run(
            ["train", "--resume", latest, "--data", scratch.path("corpus.txt"), "--precision", "fp32", "--max-iterations", "5"],
            extraEnvironment: portable)
        #expect(other.status != 0)
        #expect(other.stderr.contains("--precision fp32 differs from the resumed run's bf16"), "\(other.stderr)")

        // The whole run in one go and the resumed one end on the same bits.
        let (whole, wholeBytes) = try Self.trainBF16(scratch, run: "whole", iterations: 5, environment: portable)
        #expect(whole.status == 0, "\(whole.stderr)")
        let resumed = try CLI.run(
            ["train", "--resume", latest, "--data", scratch.path("corpus.txt"), "--max-iterations", "5"],
            extraEnvironment: portable)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("bf16 products"), "the resumed run trains in bf16: \(resumed.stdout)")
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: scratch.path("run")).first { $0.hasPrefix("i5_") })
        #expect(try ThreadCountTests.tensorBytes(scratch.path("run/" + name)) == wholeBytes, "the resumed bf16 run trained other bits")
        if !Self.cpuHasBF16 {
            let refused = try CLI.run(["train", "--resume", latest, "--data", scratch.path("corpus.txt"), "--max-iterations", "5"])
            #expect(
                refused.status != 0 && refused.stderr.contains("the resumed run trains with --precision bf16: needs a CPU with AVX512_BF16"),
                "\(refused.stderr)")
        }
    }

    @Test(
        "Where the CPU has AVX512_BF16, its kernel trains the portable kernel's bits",
        .enabled(if: cpuHasBF16, "this CPU has no AVX512_BF16: the portable kernel is the only one"))
    func cpuKernelTrainsThePortableBits() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 5_000))
        let cpu = try Self.trainBF16(scratch, run: "cpu", environment: [:])
        let portable = try Self.trainBF16(scratch, run: "portable", environment: ["CHARRNN_BF16": "portable"])
        #expect(cpu.result.status == 0 && portable.result.status == 0, "\(cpu.result.stderr) \(portable.result.stderr)")
        #expect(try #require(cpu.bytes) == (try #require(portable.bytes)))
    }
}
