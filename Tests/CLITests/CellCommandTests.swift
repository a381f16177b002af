import Foundation
import Testing

/// Protects `--cell` as a user meets it: every command works for a GRU and an
/// RNN, and a wrong cell gets one error line.
@Suite("Cells from the command line")
struct CellCommandTests {
    /// Trains a short run of `cell` in `scratch/run`; returns its output.
    static func train(_ cell: String, in scratch: Scratch, extra: [String] = []) throws -> CLI.Result {
        try CLI.run(
            [
                "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"), "--cell", cell,
                "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "8", "--save-every", "4",
            ] + extra)
    }

    @Test("A GRU or RNN run trains, logs its cell, and inspect, eval and sample use it", arguments: ["gru", "rnn"])
    func otherCellsTrainSampleEvaluateAndInspect(cell: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        let run = try Self.train(cell, in: scratch)
        #expect(run.status == 0, "\(run.stderr)")
        let name = cell.uppercased()
        #expect(run.stdout.contains("Model: 2 \(name) layers × 16 units,"), "\(run.stdout)")
        let lastValidation = try #require(run.stdout.split(separator: "\n").last { $0.hasPrefix("Validation loss: ") })

        let inspect = try CLI.run(["inspect", scratch.path("run")])
        #expect(inspect.status == 0)
        let rows = cell == "gru" ? 48 : 16
        #expect(inspect.stdout.contains("Model: 2 \(name) layers × 16 units"), "\(inspect.stdout)")
        #expect(inspect.stdout.contains("\(cell).weight_hh_l1     [\(rows), 16] "), "\(inspect.stdout)")
        #expect(!inspect.stdout.contains("lstm."))

        // eval on the validation split gives the loss training reported there
        let checkpoint = try FileManager.default.contentsOfDirectory(atPath: scratch.path("run")).first { $0.hasPrefix("i8_") }
        let eval = try CLI.run([
            "eval", "--checkpoint", scratch.path("run/\(try #require(checkpoint))"),
            "--data", scratch.path("corpus.txt"), "--split", "val",
        ])
        #expect(eval.status == 0, "\(eval.stderr)")
        let reported = try #require(Double(lastValidation.dropFirst("Validation loss: ".count).prefix(6)))
        let evaluated = try #require(eval.stdout.firstMatch(of: #/cross-entropy ([0-9.]+) nats/#).map { Double($0.1) ?? -1 })
        #expect(abs(evaluated - reported) < 1e-4, "eval \(evaluated), training reported \(reported)")
        let whole = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", scratch.path("corpus.txt")])
        #expect(whole.status == 0 && whole.stdout.contains("the whole text as one stream"), "\(whole.stderr)")

        // sampling: one stream, and three together, each as it would be alone
        let one = try CLI.run(["sample", "--checkpoint", scratch.path("run"), "--prime", "it ", "--length", "80", "--seed", "4"])
        #expect(one.status == 0 && one.stdout.unicodeScalars.count == 83, "\(one.stderr)")
        let again = try CLI.run(["sample", "--checkpoint", scratch.path("run"), "--prime", "it ", "--length", "80", "--seed", "4"])
        #expect(again.stdout == one.stdout)
        let three = try CLI.run([
            "sample", "--checkpoint", scratch.path("run"), "--prime", "it ", "--length", "80",
            "--seed", "4", "--count", "3",
        ])
        #expect(three.status == 0)
        #expect(three.stdout.hasPrefix("----- sample 1 of 3 -----\n" + one.stdout), "the first of a batch is the single sample")
    }

    @Test("A GRU or RNN run resumes from its directory exactly where it stopped", arguments: ["gru", "rnn"])
    func otherCellsResumeExactly(cell: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        let whole = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("whole"), "--cell", cell,
            "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "8", "--save-every", "4",
        ])
        #expect(whole.status == 0)
        let half = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"), "--cell", cell,
            "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "4", "--save-every", "4",
        ])
        #expect(half.status == 0)
        let resumed = try CLI.run([
            "train", "--resume", scratch.path("run"), "--data", scratch.path("corpus.txt"),
            "--max-iterations", "8",
        ])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        func losses(_ text: String) -> [String] {  // every training and validation loss, in order
            text.matches(of: #/(Training|Validation) loss: [0-9.]+/#).map { String($0.output.0) }
        }
        #expect(losses(half.stdout) + losses(resumed.stdout) == losses(whole.stdout))
        let a = try Data(contentsOf: URL(fileURLWithPath: scratch.path("whole/best.safetensors")))
        let b = try Data(contentsOf: URL(fileURLWithPath: scratch.path("run/best.safetensors")))
        #expect(a.count == b.count, "the resumed run's best checkpoint has the same size")
    }

    @Test("--init-from takes the checkpoint's cell; asking for another cell is refused in one line")
    func initFromKeepsTheCell() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        #expect(try Self.train("gru", in: scratch).status == 0)
        let next = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("next"),
            "--init-from", scratch.path("run"), "--batch", "4", "--steps", "20", "--max-iterations", "2",
        ])
        #expect(next.status == 0, "\(next.stderr)")
        #expect(next.stdout.contains("Model: 2 GRU layers × 16 units"))
        let other = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("other"), "--cell", "lstm",
            "--init-from", scratch.path("run"), "--batch", "4", "--steps", "20", "--max-iterations", "2",
        ])
        #expect(other.status != 0)
        #expect(other.stderr.split(separator: "\n").count == 1, "\(other.stderr)")
        #expect(other.stderr.contains("2 GRU layers of 16") && other.stderr.contains("--cell gru"), "\(other.stderr)")
        let resume = try CLI.run(["train", "--resume", scratch.path("run"), "--data", scratch.path("corpus.txt"), "--cell", "rnn"])
        #expect(resume.status != 0)
        #expect(
            resume.stderr
                == "charrnn: error: --cell rnn differs from the resumed run's gru; a resumed run keeps its settings (use --init-from to start a new run)\n"
        )
    }

    @Test("An unknown --cell gets one error line naming the cells, and nothing is written")
    func unknownCellIsRefused() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        let result = try Self.train("lstmm", in: scratch)
        #expect(result.status != 0)
        #expect(result.stderr == "charrnn: error: --cell must be one of lstm, gru, rnn (got 'lstmm')\n")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("run")))
        let bench = try CLI.run(["bench", "--cell", "gru,tree", "--configs", "small"])
        #expect(bench.status != 0 && bench.stderr == "charrnn: error: --cell: unknown cell 'tree' (lstm, gru, rnn)\n")
    }

    /// Rewrites `count` bytes of a file's header in place (same length, so
    /// every offset stays valid).
    static func patch(_ path: String, replacing old: String, with new: String) throws {
        precondition(old.utf8.count == new.utf8.count)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let needle = Array(old.utf8)
        let at = try #require((0...(bytes.count - needle.count)).first { Array(bytes[$0..<($0 + needle.count)]) == needle })
        bytes.replaceSubrange(at..<(at + needle.count), with: Array(new.utf8))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test(
        "A checkpoint whose tensors mix cells, or whose cell entry disagrees with its tensors, gets one error line",
        arguments: [
            ("\"gru.bias_hh_l1\"", "\"rnn.bias_hh_l1\"", "its tensors mix cells (gru.*, rnn.*)"),
            ("\"cell\":\"gru\"", "\"cell\":\"rnn\"", "metadata 'cell' says rnn but the tensors have gru tensors"),
            ("\"cell\":\"gru\"", "\"cell\":\"xyz\"", "metadata 'cell' has an invalid value 'xyz'"),
        ])
    func inconsistentCellsAreRefused(old: String, new: String, message: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 3000))
        #expect(try Self.train("gru", in: scratch).status == 0)
        let file = scratch.path("run/best.safetensors")
        try Self.patch(file, replacing: old, with: new)
        for command in [["inspect", file], ["sample", "--checkpoint", file], ["eval", "--checkpoint", file, "--data", scratch.path("corpus.txt")]] {
            let result = try CLI.run(command)
            #expect(result.status != 0 && result.stdout.isEmpty)
            #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(message), "\(command[0]): \(result.stderr)")
        }
    }
}
