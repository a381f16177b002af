import Foundation
import Testing

/// Protects what a user watching and steering a run meets: the log's forms
/// (terminal status line, the notebook's lines, --print-every, --quiet,
/// --json), eval and inspect as JSON, `charrnn plot`, schedule options, and
/// the sampling options users asked for.
@Suite("Watching and steering runs")
struct WatchAndSteerTests {
    /// A small corpus; 3 streams × 10 steps gives 30 training batches per epoch.
    static let corpus: (scratch: Scratch, path: String) = {
        let scratch = try! Scratch()
        try! scratch.write("corpus.txt", text(length: 1_200))
        return (scratch, scratch.path("corpus.txt"))
    }()

    static let small = ["--hidden", "12", "--batch", "3", "--steps", "10"]

    static func train(_ out: String, _ extra: [String]) throws -> CLI.Result {
        try CLI.run(["train", "--data", corpus.path, "--out", out] + small + extra)
    }

    static func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
        }
    }

    @Test("Piped, the log is the notebook's line per iteration; --print-every thins it; --quiet prints nothing")
    func pipedLogForms() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let full = try Self.train(scratch.path("full"), ["--max-iterations", "12", "--save-every", "6"])
        #expect(full.status == 0, "\(full.stderr)")
        let lines = full.stdout.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("Epoch ") }.count == 12)
        #expect(lines.contains { $0.hasPrefix("Epoch 1/20  Iteration 7/12  Training loss: ") && $0.hasSuffix(" sec/batch") })
        #expect(!full.stdout.contains("\r"), "no terminal control in a pipe")

        let thinned = try Self.train(scratch.path("thin"), ["--max-iterations", "12", "--save-every", "6", "--print-every", "5"])
        let iterations = thinned.stdout.split(separator: "\n").filter { $0.hasPrefix("Epoch ") }
            .compactMap { $0.firstMatch(of: #/Iteration (\d+)/#).map { Int($0.output.1)! } }
        #expect(iterations == [5, 10, 12], "every 5th and the last")
        #expect(thinned.stdout.components(separatedBy: "Saving checkpoint!").count - 1 == 2, "validations are never thinned")

        let quiet = try Self.train(scratch.path("quiet"), ["--max-iterations", "12", "--save-every", "6", "--quiet"])
        #expect(quiet.status == 0 && quiet.stdout.isEmpty && quiet.stderr.isEmpty)
        #expect(FileManager.default.fileExists(atPath: scratch.path("quiet/best.safetensors")))

        let bad = try Self.train(scratch.path("bad"), ["--print-every", "0"])
        #expect(bad.status != 0 && bad.stderr.contains("--print-every must be at least 1"))
        let both = try Self.train(scratch.path("both"), ["--quiet", "--json"])
        #expect(both.status != 0 && both.stderr.contains("--quiet and --json"))
    }

    @Test(
        "On a terminal one status line is redrawn in place with percent, loss, speed and ETA; validations scroll above it",
        .enabled(if: CLI.script != nil, "needs util-linux's script for a pseudo-terminal"))
    func terminalShowsAStatusLine() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let result = try CLI.runOnTerminal(
            ["train", "--data", Self.corpus.path, "--out", scratch.path("run")] + Self.small
                + ["--max-iterations", "40", "--save-every", "20"])
        #expect(result.status == 0, "\(result.stdout)")
        let shown = result.stdout
        #expect(shown.contains("\r\u{1B}[2K"), "the line is redrawn in place")
        let status = try #require(shown.components(separatedBy: "\r\u{1B}[2K").first { $0.contains("ETA") })
        #expect(status.contains(#/\d+%  \d+/40  ETA \d+:\d\d  loss \d\.\d{4}  best val /#), "\(status)")
        #expect(status.contains("chars/s") && status.contains("elapsed"))
        #expect(!shown.contains("Epoch 1/20  Iteration"), "no per-iteration lines on a terminal")
        #expect(shown.contains("Validation loss: ") && shown.contains("Done: 40 iterations"))
    }

    @Test("train --json prints one JSON object per event: started, iterations, validations, checkpoints, finished")
    func trainSpeaksJSON() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let result = try Self.train(
            scratch.path("run"),
            [
                "--max-iterations", "10", "--save-every", "5", "--json",
                "--lr-schedule", "cosine", "--warmup", "2",
            ])
        #expect(result.status == 0, "\(result.stderr)")
        let events = try Self.jsonLines(result.stdout)
        #expect(
            events.map { $0["event"] as? String } == ["started"] + Array(repeating: "iteration", count: 5)
                + ["validation", "checkpoint"] + Array(repeating: "iteration", count: 5) + ["validation", "checkpoint", "finished"])
        let started = events[0]
        #expect(started["hidden_size"] as? Int == 12 && started["total_iterations"] as? Int == 10)
        #expect(started["lr_schedule"] as? String == "cosine" && started["warmup"] as? Int == 2 && started["cell"] as? String == "lstm")
        let first = events[1]
        #expect(first["iteration"] as? Int == 1 && (first["lr"] as? Double).map { abs($0 - 0.0005) < 1e-9 } == true)
        for key in ["loss", "running_loss", "grad_norm", "seconds", "chars_per_second", "epoch"] {
            #expect(first[key] is NSNumber, "iteration events have \(key)")
        }
        let validation = events[6]
        #expect(validation["iteration"] as? Int == 5 && validation["best"] as? Bool == true)
        let loss = try #require(validation["val_loss"] as? Double)
        let bpc = try #require(validation["bpc"] as? Double)
        #expect(abs(bpc - loss / log(2)) < 1e-5)
        let checkpoint = try #require(events[7]["path"] as? String)
        #expect(FileManager.default.fileExists(atPath: checkpoint))
        #expect(events.last?["iterations"] as? Int == 10 && events.last?["stopped_by_patience"] as? Bool == false)

        let thinned = try Self.train(scratch.path("thin"), ["--max-iterations", "10", "--save-every", "5", "--json", "--print-every", "4"])
        #expect(
            try Self.jsonLines(thinned.stdout).filter { $0["event"] as? String == "iteration" }.map { $0["iteration"] as? Int }
                == [4, 8, 10])

        let failed = try CLI.run(["train", "--data", scratch.path("missing.txt"), "--out", scratch.path("x"), "--json"])
        #expect(failed.status != 0)
        let error = try Self.jsonLines(failed.stdout)
        #expect(
            error.count == 1 && error[0]["event"] as? String == "error"
                && (error[0]["message"] as? String).map { failed.stderr.contains($0) } == true)
    }

    @Test("eval --json and inspect --json print the numbers their text shows")
    func evalAndInspectSpeakJSON() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        #expect(
            try Self.train(
                scratch.path("run"),
                [
                    "--max-iterations", "6", "--save-every", "6", "--lr-schedule", "step",
                    "--lr-decay", "0.5", "--lr-decay-after", "0",
                ]
            ).status == 0)
        let evalText = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", Self.corpus.path, "--split", "val"])
        let evalJSON = try CLI.run(["eval", "--checkpoint", scratch.path("run"), "--data", Self.corpus.path, "--split", "val", "--json"])
        let evaluated = try #require(try Self.jsonLines(evalJSON.stdout).first)
        let shown = try #require(evalText.stdout.firstMatch(of: #/cross-entropy ([0-9.]+) nats/char, ([0-9.]+) bits/char over (\d+)/#))
        #expect(String(format: "%.6f", evaluated["loss"] as? Double ?? 0) == String(shown.output.1))
        #expect(String(format: "%.6f", evaluated["bpc"] as? Double ?? 0) == String(shown.output.2))
        #expect(evaluated["predictions"] as? Int == Int(shown.output.3))
        #expect(evaluated["split"] as? String == "val")

        let inspected = try #require(try Self.jsonLines(try CLI.run(["inspect", "--json", scratch.path("run")]).stdout).first)
        #expect(inspected["cell"] as? String == "lstm" && inspected["hidden_size"] as? Int == 12 && inspected["layers"] as? Int == 2)
        let vocabulary = try #require(inspected["vocabulary"] as? [String])
        #expect(vocabulary.count == inspected["vocabulary_size"] as? Int && vocabulary.contains("\n"))
        let tensors = try #require(inspected["tensors"] as? [[String: Any]])
        #expect(tensors.first?["name"] as? String == "lstm.weight_ih_l0" && (tensors.first?["shape"] as? [Int]) == [48, vocabulary.count])
        let run = try #require(inspected["run"] as? [String: Any])
        #expect(run["iteration"] as? Int == 6)
        #expect((run["lr"] as? Double).map { abs($0 - 0.0005) < 1e-9 } == true, "epoch 1 after decay-after 0: half the rate")
        let options = try #require(inspected["options"] as? [String: Any])
        #expect(options["lr_schedule"] as? String == "step" && options["lr_decay"] as? Double == 0.5 && options["batch_size"] as? Int == 3)
        #expect(inspected["can_resume"] as? Bool == true)
    }

    @Test("charrnn plot lays several runs and the notebook's reference into one SVG, and never replaces a file it did not draw")
    func plotDrawsSeveralRuns() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        #expect(try Self.train(scratch.path("lstm"), ["--max-iterations", "12", "--save-every", "4", "--quiet"]).status == 0)
        #expect(try Self.train(scratch.path("gru"), ["--max-iterations", "12", "--save-every", "6", "--quiet", "--cell", "gru"]).status == 0)
        let out = scratch.path("both.svg")
        let plotted = try CLI.run(["plot", scratch.path("lstm"), scratch.path("gru"), "--out", out, "--reference", "notebook"])
        #expect(plotted.status == 0, "\(plotted.stderr)")
        let svg = try String(contentsOfFile: out, encoding: .utf8)
        let validationLines = svg.split(separator: "\n").filter { $0.contains("class=\"validation\"") }
        #expect(validationLines.count == 2)
        #expect(validationLines.map { $0.firstMatch(of: #/points="([^"]*)"/#)!.output.1.split(separator: " ").count } == [3, 2])
        #expect(svg.contains("lstm: 2 × 12 LSTM") && svg.contains("gru: 2 × 12 GRU") && svg.contains("notebook"))
        #expect(svg.contains("class=\"reference\""))

        let again = try CLI.run(["plot", scratch.path("lstm"), "--out", out, "--label", "mine"])
        let replaced = try String(contentsOfFile: out, encoding: .utf8)
        #expect(again.status == 0 && replaced.contains(">mine<"), "its own chart is replaced")

        try scratch.write("notes.svg", Array("<svg>my drawing</svg>".utf8))
        let refused = try CLI.run(["plot", scratch.path("lstm"), "--out", scratch.path("notes.svg")])
        #expect(refused.status != 0 && refused.stderr.contains("not a chart charrnn drew"))
        #expect(try String(contentsOfFile: scratch.path("notes.svg"), encoding: .utf8) == "<svg>my drawing</svg>")

        let empty = scratch.path("empty")
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let missing = try CLI.run(["plot", empty, "--out", scratch.path("x.svg")])
        #expect(missing.status != 0 && missing.stderr.contains("has no metrics.jsonl"))
        #expect(missing.stderr.split(separator: "\n").count == 1)
    }

    @Test("Schedule options that belong to another schedule are refused, and a resumed run keeps its schedule")
    func scheduleOptionsAreChecked() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let mixed = try Self.train(scratch.path("a"), ["--lr-schedule", "cosine", "--lr-decay", "0.9"])
        #expect(mixed.status != 0 && mixed.stderr.contains("--lr-decay and --lr-decay-after belong to --lr-schedule step"))
        let floor = try Self.train(scratch.path("b"), ["--lr-min", "0.0001"])
        #expect(floor.status != 0 && floor.stderr.contains("--lr-min and --lr-schedule-iterations belong to --lr-schedule cosine"))
        let unknown = try Self.train(scratch.path("c"), ["--lr-schedule", "linear"])
        #expect(unknown.status != 0 && unknown.stderr.contains("--lr-schedule must be one of constant, step, cosine"))
        let high = try Self.train(scratch.path("d"), ["--lr-schedule", "cosine", "--lr-min", "0.01"])
        #expect(high.status != 0 && high.stderr.contains("--lr-min must be at least 0 and below the learning rate"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("d")), "nothing is left of a refused run")

        #expect(
            try Self.train(scratch.path("run"), ["--max-iterations", "4", "--save-every", "4", "--lr-schedule", "cosine", "--quiet"]).status == 0)
        let changed = try CLI.run(["train", "--data", Self.corpus.path, "--resume", scratch.path("run"), "--lr-schedule", "step"])
        #expect(changed.status != 0 && changed.stderr.contains("--lr-schedule step differs from the resumed run's cosine"))
    }

    // MARK: - Sampling

    static let model: (scratch: Scratch, directory: String) = {
        let scratch = try! Scratch()
        try! scratch.write("corpus.txt", text(length: 2_000))
        let result = try! CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"),
            "--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "3", "--quiet",
        ])
        precondition(result.status == 0, result.stderr)
        return (scratch, scratch.path("run"))
    }()

    static func sample(_ extra: [String], input: Data? = nil) throws -> CLI.Result {
        try CLI.run(["sample", "--checkpoint", model.directory, "--length", "120", "--seed", "4"] + extra, input: input)
    }

    @Test("A long prime comes from --prime-file or from standard input with --prime -, the same as --prime")
    func longPrimesFromFilesAndStdin() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let prime = String(decoding: text(length: 200_000), as: UTF8.self)  // past what one argument may hold
        try scratch.write("prime.txt", Array(prime.utf8))
        let fromFile = try Self.sample(["--prime-file", scratch.path("prime.txt")])
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
        #expect(fromFile.stdout.hasPrefix(prime) && fromFile.stdout.unicodeScalars.count == prime.unicodeScalars.count + 120)
        let fromStdin = try Self.sample(["--prime", "-"], input: Data(prime.utf8))
        #expect(fromStdin.stdout == fromFile.stdout)
        let short = "it was the best"
        try scratch.write("short.txt", Array(short.utf8))
        #expect(try Self.sample(["--prime-file", scratch.path("short.txt")]).stdout == Self.sample(["--prime", short]).stdout)

        let both = try Self.sample(["--prime", "it", "--prime-file", scratch.path("short.txt")])
        #expect(both.status != 0 && both.stderr.contains("--prime and --prime-file cannot be combined"))
        let missing = try Self.sample(["--prime-file", scratch.path("nope.txt")])
        #expect(missing.status != 0 && missing.stderr.contains("--prime-file") && missing.stderr.split(separator: "\n").count == 1)
        try scratch.write("bad.txt", [0x69, 0x74, 0xFF, 0xFE])
        let invalid = try Self.sample(["--prime-file", scratch.path("bad.txt")])
        #expect(invalid.status != 0 && invalid.stderr.contains("not valid UTF-8"))
    }

    @Test("--top-p without --top-k samples from the nucleus alone, not from the default top 5")
    func topPAloneTurnsTopKOff() throws {
        let nucleus = try Self.sample(["--top-p", "0.999", "--prime", "it"])
        #expect(nucleus.status == 0)
        #expect(nucleus.stdout == (try Self.sample(["--top-p", "0.999", "--no-top-k", "--prime", "it"])).stdout)
        #expect(
            nucleus.stdout != (try Self.sample(["--top-p", "0.999", "--top-k", "5", "--prime", "it"])).stdout,
            "asking for top-k 5 as well still stacks both")
    }

    @Test(
        "Options that contradict each other are refused in one line",
        arguments: [
            ["--greedy", "--top-k", "3"], ["--greedy", "--top-p", "0.9"], ["--greedy", "--temperature", "0.5"],
            ["--greedy", "--no-top-k"], ["--top-k", "3", "--no-top-k"],
        ])
    func contradictionsAreRefused(options: [String]) throws {
        let result = try Self.sample(options)
        #expect(result.status != 0 && result.stdout.isEmpty)
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains("cannot be combined"))
        #expect(options.filter { $0.hasPrefix("--") }.allSatisfy { result.stderr.contains($0) }, "the line names both options")
    }

    @Test(
        "On a terminal the text ends with a newline; piped it ends with the last character",
        .enabled(if: CLI.script != nil, "needs util-linux's script for a pseudo-terminal"))
    func finalNewlineOnTerminals() throws {
        let piped = try Self.sample(["--prime", "it was", "--length", "0"])
        #expect(piped.stdout == "it was")
        let shown = try CLI.runOnTerminal(["sample", "--checkpoint", Self.model.directory, "--prime", "it was", "--length", "0", "--seed", "1"])
        #expect(shown.stdout == "it was\r\n")
    }

    @Test("--drop-unknown says on standard error which characters it left out, and how many")
    func dropUnknownReports() throws {
        let result = try Self.sample(["--prime", "it ☃ was ☃ é", "--drop-unknown"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("it  was  "))
        #expect(
            result.stderr.contains("dropped 3 prime characters") && result.stderr.contains("'☃' (U+2603) ×2")
                && result.stderr.contains("'é' (U+00E9) ×1"))
        #expect(try Self.sample(["--prime", "it was", "--drop-unknown"]).stderr.isEmpty, "nothing dropped, nothing said")
    }
}
