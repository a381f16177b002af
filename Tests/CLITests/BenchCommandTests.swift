import CharRNN
import Foundation
import Testing

/// Protects `charrnn bench`'s output (never its figures: no test asserts a time).
@Suite("charrnn bench")
struct BenchCommandTests {
    @Test("bench --json reports every section for a custom shape, with positive figures, and its product breakdown covers the whole step")
    func jsonReportHasEverySection() throws {
        let result = try CLI.run([
            "bench", "--configs", "", "--shape", "16,2,4,8,11", "--iterations", "2", "--warmup", "1",
            "--sampling-characters", "20", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        // The library's own report, as the core gives it.
        let runtime = ComputeRuntime.current
        #expect(report["blasLibrary"] as? String == runtime.blasLibrary && !runtime.blasLibrary.isEmpty)
        #expect(report["threading"] as? String == runtime.threading)
        #expect(report["blasThreads"] as? Int == runtime.blasThreads)
        let training = try #require(report["training"] as? [[String: Any]])
        #expect(training.count == 1)
        let step = try #require(training[0]["step"] as? [String: Double])
        #expect((step["median"] ?? 0) > 0 && (step["minimum"] ?? 0) > 0)
        // N = 32, H = 16, V = 11: 9 units of 2·N·4H·H for two layers, plus 3 × 2·N·V·H.
        let expectedFlops: Double = 9 * 2 * 32 * 64 * 16 + 3 * 2 * 32 * 11 * 16
        let flops = training[0]["flops"] as? Double ?? 0
        #expect(flops == expectedFlops)
        // The breakdown accounts for every product of the step: all of its
        // operations but the first time step's recurrent backward product in
        // each layer, which the core skips (no gradient flows into the
        // carried state): 2 × (2 · 4 · 64 · 16).
        let kinds = try #require(training[0]["productKinds"] as? [[String: Any]])
        let madeFlops = kinds.reduce(0.0) { sum, kind in
            let shape = ["m", "n", "k", "callsPerStep"].map { kind[$0] as? Int ?? 0 }
            return sum + 2 * Double(shape.reduce(1, *))
        }
        #expect(madeFlops == expectedFlops - 2 * (2 * 4 * 64 * 16), "\(kinds)")
        #expect(Set(kinds.compactMap { $0["name"] as? String }).isSuperset(of: ["recurrent", "recurrent backward", "dW_hh", "logits"]))
        #expect(kinds.allSatisfy { ($0["threadSecondsPerStep"] as? Double ?? 0) > 0 && ($0["aloneSecondsPerCall"] as? Double ?? 0) > 0 })
        let peak = try #require(report["fmaPeak"] as? [String: Any])
        #expect((peak["gflopsPerCore"] as? Double ?? 0) > 0 && !(peak["instructions"] as? String ?? "").isEmpty)
        #expect((report["sampling"] as? [Any])?.count == 2)
        let priming = try #require((report["priming"] as? [[String: Any]])?.first)
        #expect(priming["characters"] as? Int == 40)
        for way in ["stepped", "primed"] { #expect(((priming[way] as? [String: Double])?["median"] ?? 0) > 0, "\(way)") }
        #expect((report["gemm"] as? [Any])?.count == 3)
        #expect((report["trainingPeakResidentBytes"] as? Int ?? 0) > 0)
    }

    @Test("bench measures bf16 against fp32, training included, where a bf16 kernel is asked for (here the portable one)")
    func benchComparesBF16WithFP32() throws {
        let result = try CLI.run(
            [
                "bench", "--configs", "", "--shape", "16,2,4,8,11", "--iterations", "2", "--warmup", "1",
                "--sampling-characters", "20", "--json",
            ], extraEnvironment: ["CHARRNN_BF16": "portable"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let precision = try #require((report["precisions"] as? [[String: Any]])?.first)
        #expect((precision["kernel"] as? String ?? "").contains("CHARRNN_BF16=portable"))
        for field in ["float32Training", "bfloat16Training", "float32Priming", "bfloat16Priming"] {
            let timing = try #require(precision[field] as? [String: Double], "\(field)")
            #expect((timing["median"] ?? 0) > 0, "\(field)")
        }
        let table = try CLI.run(
            ["bench", "--configs", "", "--shape", "16,1,4,8,11", "--iterations", "1", "--warmup", "0", "--sampling-characters", "5"],
            extraEnvironment: ["CHARRNN_BF16": "portable"])
        #expect(table.stdout.contains("bf16 products against fp32"), "\(table.stdout)")
        #expect(table.stdout.split(separator: "\n").contains { $0.contains("    train  ") && $0.contains("(step ") }, "\(table.stdout)")
    }

    @Test(
        "bench reports how idle threads wait: charrnn's choice by default, the user's when KMP_BLOCKTIME is set",
        .enabled(if: ComputeRuntime.current.threading.contains("libomp"), "only LLVM's OpenMP runtime lets charrnn choose"))
    func benchReportsTheWaitPolicy() throws {
        let arguments = [
            "bench", "--configs", "", "--shape", "16,1,4,8,11", "--iterations", "1", "--warmup", "0",
            "--sampling-characters", "5", "--json",
        ]
        func waiting(_ environment: [String: String]) throws -> String {
            let result = try CLI.run(arguments, extraEnvironment: environment)
            #expect(result.status == 0, "\(result.stderr)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            return try #require(report["threadWaiting"] as? String)
        }
        let ours = try waiting(["KMP_BLOCKTIME": "", "OMP_WAIT_POLICY": ""])
        #expect(ours.hasPrefix("sleep in training"), "\(ours)")
        let users = try waiting(["KMP_BLOCKTIME": "5"])
        #expect(users.hasPrefix("user"), "\(users)")
    }

    @Test("bench refuses a malformed --shape with one error line")
    func badShapeIsRefused() throws {
        let result = try CLI.run(["bench", "--shape", "16,2"])
        #expect(result.status != 0 && result.stdout.isEmpty)
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains("--shape needs H,L,B,T"))
    }
}
