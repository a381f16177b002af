import Foundation
import Testing

/// A checkpoint written before there was a choice of cell (no `cell`
/// metadata, `lstm.` tensors) must mean what it meant: the same loss, the
/// same text for the same seed, the same resumed run. The expected outputs
/// are what the build that wrote it printed (Fixtures/legacy-lstm/README.md).
@Suite struct LegacyCheckpointTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/legacy-lstm")

    static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    static func expected(_ name: String) throws -> String {
        try String(contentsOfFile: fixture(name), encoding: .utf8)
    }

    static let checkpoint = fixture("legacy-lstm.safetensors")
    static let corpus = fixture("corpus.txt")

    @Test func anOldCheckpointEvaluatesToTheSameLossAsBefore() throws {
        for (file, extra) in [("eval-all.txt", []), ("eval-val.txt", ["--split", "val"])] {
            let result = try CLI.run(["eval", "--checkpoint", Self.checkpoint, "--data", Self.corpus] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == (try Self.expected(file)), "\(file)")
        }
    }

    @Test func anOldCheckpointSamplesTheSameTextForTheSameSeed() throws {
        let cases: [(String, [String])] = [
            ("sample-1.txt", ["--prime", "The ", "--length", "300", "--seed", "7"]),
            ("sample-3.txt", ["--prime", "A", "--length", "120", "--seed", "11", "--count", "3"]),
            ("sample-p.txt", ["--length", "100", "--seed", "3", "--temperature", "0.8", "--no-top-k", "--top-p", "0.9"]),
        ]
        for (file, options) in cases {
            let result = try CLI.run(["sample", "--checkpoint", Self.checkpoint] + options)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == (try Self.expected(file)), "\(file)")
        }
    }

    @Test func anOldCheckpointIsAnLSTMAndResumesToTheSameLosses() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let copy = scratch.path("legacy-lstm.safetensors")
        try FileManager.default.copyItem(atPath: Self.checkpoint, toPath: copy)

        let inspect = try CLI.run(["inspect", copy])
        #expect(inspect.stdout.contains("Model: 2 LSTM layers × 16 units"), "\(inspect.stdout)")

        let result = try CLI.run(["train", "--resume", copy, "--data", Self.corpus, "--max-iterations", "260"])
        #expect(result.status == 0, "\(result.stderr)")
        // The losses, without the timings that end each iteration's line.
        func losses(_ text: String) -> [String] {
            text.split(separator: "\n").filter { $0.hasPrefix("Epoch") || $0.hasPrefix("Validation") }
                .suffix(3).map { line in
                    String(line.split(separator: "  ").prefix(3).joined(separator: "  "))
                }
        }
        #expect(losses(result.stdout) == losses(try Self.expected("resume.txt")))
    }
}
