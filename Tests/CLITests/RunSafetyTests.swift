import CharRNN
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Protects a user's training runs from the command line: nothing of another
/// run is lost, clean stops, one trainer per directory, limits checked before
/// work, failed saves, hostile numbers and files.
@Suite("Runs that never lose work")
struct RunSafetyTests {
    static let small = ["--hidden", "16", "--batch", "4", "--steps", "20"]

    static func corpus(_ scratch: Scratch, length: Int = 4000) throws -> String {
        try scratch.write("corpus.txt", text(length: length))
        return scratch.path("corpus.txt")
    }

    /// Visible files of a directory with their bytes.
    /// After a failed save: the checkpoints are byte for byte as `before`,
    /// and the metrics file still begins with what it held (the failed
    /// run's records of its iterations follow; a resume replaces them).
    static func expectIntact(_ path: String, _ before: [String: Data]) throws {
        let after = try contents(path)
        func checkpoints(_ files: [String: Data]) -> [String: Data] { files.filter { $0.key.hasSuffix(".safetensors") } }
        #expect(checkpoints(after) == checkpoints(before), "the checkpoints already written are intact")
        let metrics = try #require(after["metrics.jsonl"])
        let old = try #require(before["metrics.jsonl"])
        #expect(metrics.starts(with: old), "no metrics record is lost")
    }

    static func contents(_ path: String) throws -> [String: Data] {
        var result: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: path) where !name.hasPrefix(".") {
            result[name] = try Data(contentsOf: URL(fileURLWithPath: path + "/" + name))
        }
        return result
    }

    /// The log lines that carry losses, without timings and totals.
    static func losses(_ output: String) -> [String] {
        output.split(separator: "\n").filter { $0.hasPrefix("Epoch") }
            .map {
                String($0).replacing(#/  [0-9.]+ sec\/batch/#, with: "").replacing(#/Iteration (\d+)\/\d+/#) { "Iteration \(String($0.output.1))" }
            }
    }

    @Test("A second run into a directory with another run's checkpoints is refused in one line; the first run's files stay byte for byte")
    func secondRunIsRefused() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let first = try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "4", "--save-every", "2"] + Self.small)
        #expect(first.status == 0, "\(first.stderr)")
        let before = try Self.contents(scratch.path("run"))
        #expect(before.count == 5, "two checkpoints, best, metrics.jsonl, loss.svg")
        for extra in [["--keep", "1"], []] {
            let second = try CLI.run(
                ["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "4", "--seed", "5"] + Self.small + extra)
            #expect(second.status != 0 && second.stdout.isEmpty)
            #expect(second.stderr.split(separator: "\n").count == 1, "\(second.stderr)")
            #expect(second.stderr.contains("already holds another run's checkpoints (3 checkpoints, the latest at iteration 4"))
            #expect(second.stderr.contains("--resume \(scratch.path("run"))") && second.stderr.contains("another --out"))
        }
        #expect(try Self.contents(scratch.path("run")) == before)
    }

    /// Starts `charrnn train` with its output in files; returns the process and the stdout file.
    static func startTraining(_ scratch: Scratch, _ arguments: [String], name: String) throws -> (Process, String) {
        guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
        let outPath = scratch.path("\(name).out")
        let errPath = scratch.path("\(name).err")
        guard FileManager.default.createFile(atPath: outPath, contents: nil), FileManager.default.createFile(atPath: errPath, contents: nil)
        else { throw CocoaError(.fileWriteUnknown) }
        let process = Process()
        process.executableURL = executable
        process.arguments = ["train"] + arguments
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try process.run()
        return (process, outPath)
    }

    /// Waits until the file at `path` contains `text` (at most `seconds`).
    static func wait(for text: String, in path: String, seconds: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let contents = try? String(contentsOfFile: path, encoding: .utf8), contents.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return false
    }

    @Test(
        "SIGINT and SIGTERM finish the iteration, write a checkpoint there, say how to continue, exit 130 and 143; resuming is exact",
        arguments: [(SIGINT, Int32(130)), (SIGTERM, Int32(143))])
    func signalStopsCleanly(signal: Int32, status: Int32) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch, length: 40000)
        let settings = ["--data", data, "--hidden", "64", "--batch", "8", "--steps", "50", "--save-every", "1000", "--epochs", "50"]
        let (process, out) = try Self.startTraining(scratch, settings + ["--out", scratch.path("run")], name: "train")
        #expect(Self.wait(for: "Iteration 3/", in: out))
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        let log = try String(contentsOfFile: out, encoding: .utf8)
        let stderr = try String(contentsOfFile: scratch.path("train.err"), encoding: .utf8)
        #expect(process.terminationReason == .exit && process.terminationStatus == status, "\(stderr)")
        let stopped = try #require(log.firstMatch(of: #/Stopped at iteration (\d+)/#).flatMap { Int($0.output.1) }, "\(log)")
        #expect(stderr.contains("Interrupted at iteration \(stopped); continue with: charrnn train --resume \(scratch.path("run")) --data \(data)"))
        let files = try Self.contents(scratch.path("run")).keys
        #expect(files.contains { $0.hasPrefix("i\(stopped)_l64_") } && files.contains("best.safetensors"))

        let resumed = try CLI.run(["train", "--resume", scratch.path("run"), "--data", data, "--max-iterations", String(stopped + 3)])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let whole = try CLI.run(["train", "--out", scratch.path("whole"), "--max-iterations", String(stopped + 3)] + settings)
        #expect(Self.losses(log) + Self.losses(resumed.stdout) == Self.losses(whole.stdout))
    }

    @Test("A second trainer on a directory in use is refused in one line naming the process; a reader always sees complete files of the one run")
    func lockedDirectoryAndReaders() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let (process, out) = try Self.startTraining(
            scratch, ["--data", data, "--out", scratch.path("run"), "--save-every", "1", "--epochs", "100000"] + Self.small, name: "train")
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        #expect(Self.wait(for: "Saved ", in: out))
        let second = try CLI.run(["train", "--data", data, "--out", scratch.path("run")] + Self.small)
        #expect(second.status != 0 && second.stdout.isEmpty && second.stderr.split(separator: "\n").count == 1)
        #expect(second.stderr.contains("is in use by another training run (process \(process.processIdentifier))"), "\(second.stderr)")
        let resume = try CLI.run(["train", "--data", data, "--resume", scratch.path("run")])
        #expect(resume.status != 0 && resume.stderr.contains("in use by another training run"))

        // While it writes a checkpoint every iteration, every read is a whole file of this run.
        var runs = Set<String>()
        var reads = 0
        let deadline = Date().addingTimeInterval(10)
        while reads < 40 && Date() < deadline {
            let best = try Checkpoint(contentsOf: RunDirectory.best(in: URL(fileURLWithPath: scratch.path("run"))))
            let latest = try Checkpoint(contentsOf: RunDirectory.latest(in: URL(fileURLWithPath: scratch.path("run"))).url)
            runs.formUnion([best.progress?.runID ?? "", latest.progress?.runID ?? ""])
            reads += 2
        }
        #expect(reads > 10 && runs.count == 1 && !runs.contains(""), "\(reads) reads of runs \(runs)")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 143)
    }

    @Test(
        "A model too large for a lowered address-space limit is refused in one line with both figures, and nothing is written",
        .disabled(if: Sanitizer.distortsMemory, "the sanitizer's shadow memory fills any address-space limit"))
    func tooLargeForTheAddressSpace() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
        let result = try Shell.run(
            "/bin/sh",
            [
                "-c", "ulimit -v 3000000; exec \"$0\" train --data \"$1\" --out \"$2\" --hidden 4096 --layers 4",
                executable.path, data, scratch.path("big"),
            ])
        #expect(result.status != 0 && result.stdout.isEmpty)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("training needs 14.") && result.stderr.contains("address-space limit (ulimit -v)"), "\(result.stderr)")
        #expect(result.stderr.contains("--hidden"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("big")))
        // The same for sampling: a checkpoint too large to load under the limit.
        let huge = try CLI.run([
            "train", "--data", data, "--out", scratch.path("h"), "--hidden", "1024", "--layers", "1",
            "--batch", "2", "--steps", "20", "--max-iterations", "1",
        ])
        #expect(huge.status == 0, "\(huge.stderr)")
        // 600 MB: room for the BLAS to load (Debian 13's OpenBLAS 0.3.29 maps 300-450 MB as it
        // loads and spins forever below that, before charrnn runs), and less than loading the
        // model needs with what is kept back for the compute threads.
        let sample = try Shell.run(
            "/bin/sh", ["-c", "ulimit -v 600000; exec \"$0\" sample --checkpoint \"$1\" --length 5", executable.path, scratch.path("h")])
        #expect(sample.status != 0 && sample.stdout.isEmpty && sample.stderr.split(separator: "\n").count == 1, "\(sample.stderr)")
    }

    @Test("An --out that cannot be written is refused before any iteration")
    func unwritableOutput() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        for out in ["/proc/charrnn-test-run", "/proc/self"] {
            let result = try CLI.run(["train", "--data", data, "--out", out] + Self.small)
            #expect(result.status != 0 && result.stdout.isEmpty, "\(result.stdout)")
            #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(out), "\(result.stderr)")
        }
    }

    @Test(
        "A save that fails (file-size limit) stops with one message and how to resume; the checkpoints already written stay byte for byte, and no partial file is left",
        .disabled(if: Sanitizer.current == "thread", "TSan's runtime itself faults (SIGBUS) under a file-size limit, even for --version"))
    func failedSaveKeepsWhatWasWritten() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let first = try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "2", "--save-every", "2"] + Self.small)
        #expect(first.status == 0)
        let before = try Self.contents(scratch.path("run"))
        guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
        // 50 KB: enough for the directory's test write, not for a checkpoint (about 100 KB).
        let result = try Shell.run(
            "/bin/sh",
            [
                "-c", "ulimit -f 50; exec \"$0\" train --resume \"$1\" --data \"$2\" --max-iterations 4",
                executable.path, scratch.path("run"), data,
            ])
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(
            result.stderr.contains("File too large") && result.stderr.contains("the checkpoints already written are intact")
                && result.stderr.contains("continue with: charrnn train --resume \(scratch.path("run"))"), "\(result.stderr)")
        #expect(!result.stdout.contains("Saving checkpoint!"), "no save is announced that did not happen")
        try Self.expectIntact(scratch.path("run"), before)
        let hidden = try leftoverTemporaries(in: scratch.path("run"))
        #expect(hidden.isEmpty, "no temporary file left: \(hidden)")
    }

    @Test(
        "A full disk (a file system with room for two checkpoints) stops the run with one message and how to resume; what was written stays",
        .enabled(if: getuid() == 0, "mounting a small file system needs root"))
    func fullDisk() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        // Room for two checkpoints (best is a hard link), not three: the size of one, from a run elsewhere.
        let probe = try CLI.run(["train", "--data", data, "--out", scratch.path("probe"), "--max-iterations", "2"] + Self.small)
        #expect(probe.status == 0)
        let checkpointBytes = try #require(try FileManager.default.attributesOfItem(atPath: scratch.path("probe/best.safetensors"))[.size] as? Int)
        let mountPoint = scratch.path("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try Shell.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(checkpointBytes * 5 / 2 / 1024)k", "tmpfs", mountPoint])
        try #require(mount.status == 0, "mount failed: \(mount.stderr)")
        defer { _ = try? Shell.run("/bin/umount", [mountPoint]) }
        let run = mountPoint + "/run"
        let first = try CLI.run(["train", "--data", data, "--out", run, "--save-every", "2", "--max-iterations", "4"] + Self.small)
        #expect(first.status == 0, "\(first.stderr)")
        let before = try Self.contents(run)
        let full = try CLI.run(["train", "--data", data, "--resume", run, "--max-iterations", "6"])
        #expect(full.status == 1)
        #expect(
            full.stderr.split(separator: "\n").count == 1 && full.stderr.contains("No space left on device")
                && full.stderr.contains("continue with: charrnn train --resume \(run)"), "\(full.stderr)")
        try Self.expectIntact(run, before)
        let hidden = try leftoverTemporaries(in: run)
        #expect(hidden.isEmpty, "no temporary file left: \(hidden)")
    }

    @Test("Integers past every limit are refused or saturate, never trap: a huge --epochs, and checkpoint metadata that overflows or lies")
    func hostileNumbers() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        let epochs = try CLI.run(
            [
                "train", "--data", data, "--out", scratch.path("run"), "--epochs", "9223372036854775807",
                "--max-iterations", "2",
            ] + Self.small)
        #expect(epochs.status == 0, "\(epochs.stderr)")
        #expect(epochs.stdout.contains("Epoch 1/9223372036854775807  Iteration 2/2"))

        let best = try Data(contentsOf: URL(fileURLWithPath: scratch.path("run/best.safetensors")))
        func rewrite(_ change: (inout [String: String]) -> Void) throws -> String {
            let name = "m\(UUID().uuidString.prefix(8)).safetensors"
            try scratch.write(
                name,
                Self.rewritingHeader(of: best) { header, _ in
                    var metadata = header["__metadata__"] as! [String: String]
                    change(&metadata)
                    header["__metadata__"] = metadata
                }.bytes)
            return scratch.path(name)
        }
        let cases: [(String, (inout [String: String]) -> Void, String)] = [
            ("epochs overflow", { $0["epochs"] = "99999999999999999999" }, "metadata 'epochs' has an invalid value"),
            ("optimizer step at the maximum", { $0["optimizer_step"] = "9223372036854775807" }, "metadata 'optimizer_step'"),
            (
                "sizes that lie",
                {
                    $0["hidden_size"] = "64"
                    $0["num_layers"] = "3"
                }, "says 64 but the tensors have 16"
            ),
            ("best loss NaN", { $0["best_val_loss"] = "nan" }, "metadata 'best_val_loss' has an invalid value 'nan'"),
        ]
        for (name, change, message) in cases {
            let path = try rewrite(change)
            for arguments in [["inspect", path], ["train", "--data", data, "--resume", path, "--out", scratch.path("r-\(UUID())")]] {
                let result = try CLI.run(arguments)
                #expect(result.status != 0 && result.stdout.isEmpty, "\(name): \(result.stdout)")
                #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(message), "\(name): \(result.stderr)")
            }
        }
        // A run whose stored epoch count is the largest integer resumes: the total saturates.
        let largest = try rewrite { $0["epochs"] = "9223372036854775807" }
        let resumed = try CLI.run(["train", "--data", data, "--resume", largest, "--out", scratch.path("largest"), "--max-iterations", "3"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
    }

    /// A safetensors file with its JSON header changed by `change`, padded
    /// again; returns the bytes and the size of its data section.
    static func rewritingHeader(of file: Data, _ change: (inout [String: Any], _ dataSize: Int) -> Void) throws -> (bytes: [UInt8], dataSize: Int) {
        let length = Int(file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try JSONSerialization.jsonObject(with: file[8..<(8 + length)]) as! [String: Any]
        change(&header, file.count - 8 - length)
        var bytes = Array(try JSONSerialization.data(withJSONObject: header))
        while (8 + bytes.count) % 8 != 0 { bytes.append(0x20) }
        let data = Array(file[(8 + length)...])
        return (withUnsafeBytes(of: UInt64(bytes.count).littleEndian, Array.init) + bytes + data, data.count)
    }

    /// Runs a program and reports its exit status and peak resident memory (from wait4).
    static func peakMemory(_ executable: String, _ arguments: [String]) throws -> (status: Int32, peakKilobytes: Int, stderr: String) {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, scratch.path("err"), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, executable, &actions, nil, argv, environ) == 0 else { throw CLI.CLIError.binaryNotFound }
        var status: Int32 = 0
        var usage = rusage()
        wait4(pid, &status, 0, &usage)
        let stderr = (try? String(contentsOfFile: scratch.path("err"), encoding: .utf8)) ?? ""
        return ((status >> 8) & 0xFF, usage.ru_maxrss, stderr)
    }

    @Test(
        "A 2 GB file with a small valid header, or with a 2 GB tensor of an unknown name, is refused without reading it",
        .disabled(if: Sanitizer.distortsMemory, "the sanitizer's shadow memory hides the process's own"))
    func hugeFilesAreRefusedFromTheirHeader() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        #expect(try CLI.run(["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "1"] + Self.small).status == 0)
        guard let executable = CLI.executable?.path else { throw CLI.CLIError.binaryNotFound }
        let twoGB = 2 << 30

        // A valid checkpoint followed by a sparse 2 GB hole.
        let sparse = scratch.path("sparse.safetensors")
        try FileManager.default.copyItem(atPath: scratch.path("run/best.safetensors"), toPath: sparse)
        #expect(truncate(sparse, off_t(twoGB)) == 0)
        let trailing = try Self.peakMemory(executable, ["inspect", sparse])
        #expect(trailing.status == 1 && trailing.stderr.contains("bytes after the last tensor"), "\(trailing.stderr)")
        #expect(trailing.peakKilobytes < 200_000, "peak \(trailing.peakKilobytes) KB for a 2 GB file")

        // A header that declares a 2 GB tensor with a name no model has.
        let best = try Data(contentsOf: URL(fileURLWithPath: scratch.path("run/best.safetensors")))
        let (bytes, _) = try Self.rewritingHeader(of: best) { header, dataSize in
            header["junk"] = ["dtype": "F32", "shape": [twoGB / 4], "data_offsets": [dataSize, dataSize + twoGB]]
        }
        let junk = scratch.path("junk.safetensors")
        try scratch.write("junk.safetensors", bytes)
        #expect(truncate(junk, off_t(bytes.count + twoGB)) == 0)
        let unknown = try Self.peakMemory(executable, ["sample", "--checkpoint", junk, "--length", "5"])
        #expect(unknown.status == 1 && unknown.stderr.contains("unexpected tensor 'junk'"), "\(unknown.stderr)")
        #expect(unknown.peakKilobytes < 200_000, "peak \(unknown.peakKilobytes) KB for a 2 GB tensor")
    }

    @Test("Special files and huge weights get one clear line: a FIFO, a device, a NaN loss in eval")
    func specialFilesAndHugeWeights() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let data = try Self.corpus(scratch)
        #expect(mkfifo(scratch.path("fifo"), 0o644) == 0)
        for (path, kind) in [(scratch.path("fifo"), "a FIFO (named pipe)"), ("/dev/zero", "a character device")] {
            for arguments in [["sample", "--checkpoint", path], ["inspect", path], ["eval", "--checkpoint", path, "--data", data]] {
                let result = try CLI.run(arguments)
                #expect(result.status != 0 && result.stderr.contains("is \(kind), not a checkpoint file"), "\(arguments): \(result.stderr)")
            }
        }
        let device = try CLI.run(["train", "--data", "/dev/zero", "--out", scratch.path("never")])
        #expect(device.status != 0 && device.stderr.contains("is a character device, not a text file"))

        // Finite weights so large that the arithmetic overflows: an error, never a printed NaN.
        let vocabulary = Vocabulary(corpus: String(decoding: text(length: 4000), as: UTF8.self).unicodeScalars)
        let configuration = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 8, layerCount: 1)
        let model = try Model(configuration: configuration, parameters: [Float](repeating: 3e38, count: configuration.parameterCount))
        try Checkpoint(model: model, vocabulary: vocabulary).write(to: URL(fileURLWithPath: scratch.path("huge.safetensors")))
        for arguments in [
            ["eval", "--checkpoint", scratch.path("huge.safetensors"), "--data", data],
            ["sample", "--checkpoint", scratch.path("huge.safetensors"), "--prime", "it ", "--length", "20", "--seed", "1"],
        ] {
            let result = try CLI.run(arguments)
            #expect(result.status != 0 && !result.stdout.lowercased().contains("nan"), "\(arguments): \(result.stdout)")
            #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains("too large for float arithmetic"), "\(result.stderr)")
        }
    }
}
