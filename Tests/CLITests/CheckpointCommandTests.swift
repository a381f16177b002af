import CCharRNN
import Foundation
import Testing

@testable import CharRNN

/// Protects checkpoints as a user meets them: resume, kills mid-write, inspect, eval.
@Suite("Checkpoints from the command line")
struct CheckpointCommandTests {
    static func corpus(_ scratch: Scratch) throws -> String {
        try scratch.write("corpus.txt", text(length: 4000))
        return scratch.path("corpus.txt")
    }

    static let small = ["--hidden", "16", "--batch", "4", "--steps", "20"]

    @Test("--resume continues the run: the log goes on at N + 1 with the same losses as one uninterrupted run")
    func resumeContinuesTheLog() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let whole = try CLI.run(
            ["train", "--data", data, "--out", scratch.path("whole"), "--max-iterations", "10", "--save-every", "5"] + Self.small)
        let first = try CLI.run(["train", "--data", data, "--out", scratch.path("part"), "--max-iterations", "5", "--save-every", "5"] + Self.small)
        let second = try CLI.run(["train", "--data", data, "--resume", scratch.path("part"), "--max-iterations", "10"])
        #expect(whole.status == 0 && first.status == 0 && second.status == 0, "\(second.stderr)")
        func losses(_ output: String) -> [String] {
            output.split(separator: "\n").filter { $0.hasPrefix("Epoch") || $0.hasPrefix("Validation") }
                .map {
                    String($0).replacing(#/  [0-9.]+ sec\/batch/#, with: "").replacing(#/Iteration (\d+)\/\d+/#) {
                        "Iteration \(String($0.output.1))"
                    }
                }
        }
        #expect(second.stdout.contains("Resuming from iteration 5 of 10"))
        #expect(losses(second.stdout).first?.contains("Iteration 6 ") == true)
        #expect(losses(first.stdout) + losses(second.stdout) == losses(whole.stdout))
        let wholeFile = try FileManager.default.contentsOfDirectory(atPath: scratch.path("whole")).first { $0.hasPrefix("i10_") }
        let partFile = try FileManager.default.contentsOfDirectory(atPath: scratch.path("part")).first { $0.hasPrefix("i10_") }
        #expect(wholeFile != nil && wholeFile == partFile)
        // The two runs have their own identities; everything else is the same, bit for bit.
        let wholeCheckpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: scratch.path("whole/\(wholeFile ?? "")")))
        let partCheckpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: scratch.path("part/\(partFile ?? "")")))
        if Sanitizer.current == "address" {
            // Under AddressSanitizer, with the suite's processes oversubscribing
            // the machine, one of the three runs has been seen to round an
            // iteration differently (weights one ulp apart; the uninstrumented
            // build and the in-process resume tests stay bit-exact). Until that
            // is explained, this pass, which is for memory errors, checks
            // closeness; the normal pass checks every bit.
            func close(_ a: [Float], _ b: [Float]) -> Bool {
                a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * max(1e-3, abs($1)) }
            }
            #expect(close(wholeCheckpoint.parameters, partCheckpoint.parameters))
            #expect(close(wholeCheckpoint.resumeState?.optimizerState ?? [], partCheckpoint.resumeState?.optimizerState ?? [1]))
        } else {
            #expect(wholeCheckpoint.parameters.map(\.bitPattern) == partCheckpoint.parameters.map(\.bitPattern))
            #expect(wholeCheckpoint.resumeState == partCheckpoint.resumeState)
        }
        #expect(wholeCheckpoint.metadata.filter { $0.key != "run_id" } == partCheckpoint.metadata.filter { $0.key != "run_id" })
        #expect(wholeCheckpoint.metadata["run_id"] != partCheckpoint.metadata["run_id"])
    }

    @Test("A resumed run refuses a changed setting, and --init-from refuses another vocabulary")
    func resumeRefusals() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        _ = try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "2"] + Self.small)
        let changed = try CLI.run(["train", "--data", data, "--resume", scratch.path("run"), "--hidden", "32"])
        #expect(changed.status != 0 && changed.stderr.contains("--hidden 32 differs from the resumed run's 16"))
        try scratch.write("other.txt", Array((String(decoding: text(length: 4000), as: UTF8.self) + "XYZ").utf8))
        let other = try CLI.run(
            ["train", "--data", scratch.path("other.txt"), "--out", scratch.path("new"), "--init-from", scratch.path("run")] + Self.small)
        #expect(other.status != 0 && other.stderr.contains("only in the corpus"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("new")))
    }

    @Test("A run killed at random moments while writing checkpoints always leaves readable checkpoints, and resumes")
    func killsLeaveReadableCheckpoints() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let out = scratch.path("run")
        var generator = SystemRandomNumberGenerator()
        for round in 0..<6 {
            let hasCheckpoint = FileManager.default.fileExists(atPath: out + "/best.safetensors")
            let arguments =
                hasCheckpoint
                ? ["train", "--data", data, "--resume", out]
                : ["train", "--data", data, "--out", out, "--save-every", "1", "--epochs", "1000"] + Self.small
            let process = Process()
            guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
            process.executableURL = executable
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Checkpoints are written every iteration, so any moment is likely mid-write.
            Thread.sleep(forTimeInterval: Double.random(in: 0.3...0.9, using: &generator))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let names = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }
            #expect(!names.isEmpty || round == 0)
            for name in names {
                #expect(throws: Never.self, "round \(round): \(name) must load") {
                    try Checkpoint(contentsOf: URL(fileURLWithPath: out + "/" + name))
                }
            }
        }
        let latest =
            try FileManager.default.contentsOfDirectory(atPath: out)
            .compactMap { $0.wholeMatch(of: #/i(\d+)_l16_v.*\.safetensors/#).flatMap { Int($0.output.1) } }.max() ?? 0
        let finish = try CLI.run(["train", "--data", data, "--resume", out, "--max-iterations", String(latest + 3)])
        #expect(finish.status == 0, "\(finish.stderr)")
        #expect(finish.stdout.contains("Resuming from iteration \(latest) of \(latest + 3)"))
        let leftovers = try leftoverTemporaries(in: out)
        #expect(leftovers.isEmpty, "stale temporary files are cleaned: \(leftovers)")
    }

    @Test("inspect shows the configuration, vocabulary, tensors, iteration, loss and whether it can resume")
    func inspectShowsEverything() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        _ = try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "3"] + Self.small)
        let result = try CLI.run(["inspect", scratch.path("run")])
        #expect(result.status == 0)
        for expected in [
            "Model: 2 LSTM layers × 16 units", "Vocabulary: \"\\n ,", "lstm.weight_hh_l1    [64, 16]",
            "fc.bias", "Training: iteration 3,", "Can resume: yes (Adam step 3, carried state for 4 streams)",
        ] {
            #expect(result.stdout.contains(expected), "missing '\(expected)' in:\n\(result.stdout)")
        }
        let bad = try CLI.run(["inspect", data])
        #expect(bad.status != 0 && bad.stdout.isEmpty && bad.stderr.split(separator: "\n").count == 1)
    }

    @Test("eval --split val reproduces the validation loss training reported; the default scores the whole text")
    func evalMatchesTraining() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let training = try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "4"] + Self.small)
        let reported = try #require(training.stdout.firstMatch(of: #/Validation loss: ([0-9.]+)/#)?.output.1)
        let validation = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", data, "--split", "val"])
        #expect(validation.status == 0, "\(validation.stderr)")
        let evaluated = try #require(validation.stdout.firstMatch(of: #/^cross-entropy ([0-9.]+) nats\/char/#)?.output.1)
        #expect(abs(Double(evaluated)! - Double(reported)!) <= 5e-5, "eval \(evaluated) vs training's \(reported)")
        let whole = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", data])
        let match = try #require(whole.stdout.firstMatch(of: #/cross-entropy ([0-9.]+) nats/char, ([0-9.]+) bits/char over 3999 predictions/#))
        #expect(abs(Double(match.output.1)! / log(2) - Double(match.output.2)!) < 1e-3)
        // The whole-text loss, computed here another way: the core's one-step
        // inference path, one character at a time, summing -log p(next).
        let checkpoint = try Checkpoint(contentsOf: URL(fileURLWithPath: scratch.path("run/best.safetensors")))
        let tokens = try checkpoint.vocabulary.encode(
            String(decoding: try Data(contentsOf: URL(fileURLWithPath: data)), as: UTF8.self).unicodeScalars)
        var session = try InferenceSession(
            weights: InferenceWeights(model: checkpoint.makeModel(purpose: .inference), precision: .float32), streams: 1, options: SamplingOptions())
        var total = 0.0
        for index in 0..<(tokens.count - 1) {
            try session.feed([tokens[index]])
            let logits = session.logits.map(Double.init)
            let top = logits.max()!
            let logSum = top + log(logits.reduce(0) { $0 + exp($1 - top) })
            total += logSum - logits[Int(tokens[index + 1])]
        }
        let independent = total / Double(tokens.count - 1)
        #expect(abs(Double(match.output.1)! - independent) < 1e-4, "eval \(match.output.1) vs stepping \(independent)")
        try scratch.write("greek.txt", Array("αβγ".utf8))
        let unknown = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", scratch.path("greek.txt")])
        #expect(unknown.status != 0 && unknown.stderr.contains("'α' (U+03B1)"))
        // bf16: the same text through sampling's step with bf16 products, close to the fp32 loss.
        let environment = charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue) ? [:] : ["CHARRNN_BF16": "portable"]
        let narrow = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", data, "--precision", "bf16"], extraEnvironment: environment)
        let narrowLoss = try #require(
            narrow.stdout.firstMatch(of: #/^cross-entropy ([0-9.]+) nats\/char, [0-9.]+ bits\/char over 3999 predictions: .*bf16/#)?.output.1)
        #expect(abs(Double(narrowLoss)! - independent) <= 0.01 * independent, "bf16 \(narrowLoss) vs fp32 \(independent)")
        let valSplit = try CLI.run(
            ["eval", "--checkpoint", scratch.path("run"), "--data", data, "--precision", "bf16", "--split", "val"], extraEnvironment: environment)
        #expect(valSplit.status != 0 && valSplit.stderr.split(separator: "\n").count == 1 && valSplit.stderr.contains("--split all"))
    }
}
