import Foundation
import Testing

/// Protects `charrnn train` as a user meets it: the log, the files, the errors.
@Suite("charrnn train")
struct TrainCommandTests {
    @Test("A short run prints the notebook-style log and writes its checkpoints")
    func shortRunLogsAndWrites() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        let result = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"),
            "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "6", "--save-every", "3",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("Corpus: ") == true && lines.first?.contains("3,000 characters") == true)
        #expect(lines.contains { $0.hasPrefix("Model: 2 LSTM layers × 16 units,") })
        #expect(lines.contains { $0.hasPrefix("Compute: BLAS ") })
        let iterationLines = lines.filter { $0.hasPrefix("Epoch ") }
        #expect(iterationLines.count == 6)
        let pattern = #/^Epoch 1/20  Iteration 3/6  Training loss: \d+\.\d{4}  \d+\.\d{4} sec/batch$/#
        #expect(iterationLines[2].wholeMatch(of: pattern) != nil, "\(iterationLines[2])")
        #expect(lines.filter { $0.hasPrefix("Validation loss: ") }.count == 2)
        let files = try FileManager.default.contentsOfDirectory(atPath: scratch.path("run")).filter { !$0.hasPrefix(".") }.sorted()
        #expect(files.count == 5)
        #expect(files.contains("best.safetensors") && files.contains("metrics.jsonl") && files.contains("loss.svg"))
        #expect(files.contains { $0.hasPrefix("i3_l16_v") && $0.hasSuffix(".safetensors") })
        #expect(files.contains { $0.hasPrefix("i6_l16_v") && $0.hasSuffix(".safetensors") })
    }

    @Test("A preset sets a new run's settings, and each option given beside it overrides its value")
    func presetSetsTheRunAndOptionsOverrideIt() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        let result = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"), "--preset", "fast",
            "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "4", "--warmup", "2",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        // From the preset: the cell, the rate and its schedule, no dropout.
        #expect(lines.contains { $0.hasPrefix("Model: 2 GRU layers × 16 units,") }, "\(result.stdout)")
        #expect(
            lines.contains { $0.hasPrefix("Training: Adam 0.004 cosine to 0.0 at 4 (warm-up 2), keep probability 1.0,") },
            "\(result.stdout)")
        // Overridden: the batch and the run's length.
        #expect(lines.contains { $0.hasPrefix("Batches: 4 streams × 20 steps;") && $0.hasSuffix("; 4 iterations") }, "\(result.stdout)")
    }

    struct BadInput: CustomTestStringConvertible, Sendable {
        let name: String
        let arguments: [String]
        let message: String
        var testDescription: String { name }
    }

    static let badInputs: [BadInput] = [
        BadInput(name: "missing corpus", arguments: ["--data", "@/nope.txt"], message: "does not exist"),
        BadInput(name: "empty corpus", arguments: ["--data", "@/empty.txt"], message: "is empty"),
        BadInput(name: "corpus not UTF-8", arguments: ["--data", "@/latin1.txt"], message: "bad byte at offset 6"),
        BadInput(name: "corpus too short", arguments: ["--data", "@/short.txt"], message: "needs at least 20001"),
        BadInput(name: "zero batch", arguments: ["--data", "@/ok.txt", "--batch", "0"], message: "--batch must be at least 1"),
        BadInput(name: "negative steps", arguments: ["--data", "@/ok.txt", "--steps=-5"], message: "--steps must be at least 1"),
        BadInput(name: "zero hidden", arguments: ["--data", "@/ok.txt", "--hidden", "0"], message: "--hidden must be between"),
        BadInput(name: "keep probability 0", arguments: ["--data", "@/ok.txt", "--keep-prob", "0"], message: "--keep-prob must be in (0, 1]"),
        BadInput(
            name: "keep probability above 1", arguments: ["--data", "@/ok.txt", "--keep-prob", "1.5"], message: "--keep-prob must be in (0, 1]"),
        BadInput(
            name: "unknown preset", arguments: ["--data", "@/ok.txt", "--preset", "turbo"],
            message: "--preset must be one of notebook, fast (got 'turbo')"),
        BadInput(
            name: "preset on a resumed run", arguments: ["--data", "@/ok.txt", "--resume", "@/ok.txt", "--preset", "fast"],
            message: "--preset fast sets a new run's settings; a resumed run keeps its own"),
        BadInput(name: "output is a file", arguments: ["--data", "@/ok.txt", "--out", "@/ok.txt"], message: "is a file"),
    ]

    @Test("Bad input gets one clear error line, a non-zero exit, and nothing written", arguments: badInputs)
    func badInputIsRefused(_ bad: BadInput) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("empty.txt", [])
        try scratch.write("latin1.txt", Array("abcdef".utf8) + [0xE9] + Array("t\u{e9}".utf8))
        try scratch.write("short.txt", text(length: 5000))
        try scratch.write("ok.txt", text(length: 30000))
        var arguments = ["train", "--out", scratch.path("out")] + bad.arguments.map { $0.replacingOccurrences(of: "@", with: scratch.url.path) }
        if bad.arguments.contains("--out") { arguments.removeSubrange(1...2) }
        let before = try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted()
        let result = try CLI.run(arguments)
        #expect(result.status != 0)
        let errorLines = result.stderr.split(separator: "\n")
        #expect(errorLines.count == 1, "stderr: \(result.stderr)")
        #expect(result.stderr.contains(bad.message), "stderr: \(result.stderr)")
        #expect(result.stdout.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == before)
    }
}
