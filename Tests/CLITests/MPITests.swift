import CharRNN
import Foundation
import Testing

/// Protects `mpirun -np N charrnn train`: N processes reproduce the
/// one-process run, write one log and one set of checkpoints, resume
/// across process counts, and end together on a fault. These run in a
/// build with the package's MPI trait (`swift test --traits MPI`) on a
/// machine with Open MPI; the default build checks it refuses such a launch.
@Suite("Training across processes (MPI)", .serialized)
struct MPITests {
    /// The small model and run of the CI check: 20 iterations on tinyshakespeare.
    static let settings = ["--hidden", "32", "--layers", "2", "--batch", "8", "--steps", "20", "--save-every", "10", "--keep-prob", "0.5"]

    /// tinyshakespeare from the shared corpora, or a text of the same kind made here.
    static func corpus(_ scratch: Scratch) throws -> String {
        let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../../shared/data/tinyshakespeare.txt").standardized.path
        if FileManager.default.isReadableFile(atPath: shared) { return shared }
        try scratch.write("corpus.txt", text(length: 200_000))
        return scratch.path("corpus.txt")
    }

    #if MPI
        static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
        static let rootEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]

        /// `mpirun -np N charrnn ARGUMENTS`.
        static func mpi(_ processes: Int, _ arguments: [String], environment: [String: String] = [:]) throws -> CLI.Result {
            guard let mpirun, let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
            return try Shell.run(
                mpirun, ["-np", String(processes), "--oversubscribe", executable.path] + arguments,
                extraEnvironment: rootEnvironment.merging(environment) { _, new in new })
        }

        /// Each iteration's batch loss and each validation loss from a run's metrics.jsonl.
        static func losses(_ directory: String) throws -> (training: [Double], validation: [Double]) {
            let records = try MetricsRecord.records(contentsOf: URL(fileURLWithPath: directory + "/metrics.jsonl"))
            return (records.compactMap { $0.loss.map(Double.init) }, records.compactMap { $0.validationLoss.map(Double.init) })
        }

        static func close(_ a: [Double], _ b: [Double]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 * max(abs($0), abs($1)) }
        }

        static func checkpoints(_ directory: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".safetensors") }.sorted()
        }

        @Test("mpirun -np 2 gives the one-process losses to 1e-4, with one log and one set of checkpoints")
        func twoProcessesReproduceOne() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            let data = try Self.corpus(scratch)
            let one = try CLI.run(["train", "--data", data, "--out", scratch.path("one"), "--max-iterations", "20"] + Self.settings)
            let two = try Self.mpi(2, ["train", "--data", data, "--out", scratch.path("two"), "--max-iterations", "20"] + Self.settings)
            #expect(one.status == 0 && two.status == 0, "\(two.stderr)")
            let expected = try Self.losses(scratch.path("one"))
            let got = try Self.losses(scratch.path("two"))
            #expect(expected.training.count == 20 && expected.validation.count == 2)
            #expect(Self.close(got.training, expected.training), "\(got.training) vs \(expected.training)")
            #expect(Self.close(got.validation, expected.validation))
            #expect(two.stdout.components(separatedBy: "Corpus: ").count == 2, "one log: \(two.stdout)")
            #expect(two.stdout.components(separatedBy: "Done: 20 iterations").count == 2)
            #expect(two.stdout.contains("2 processes (MPI), 4 streams each"))
            #expect(try Self.checkpoints(scratch.path("two")) == Self.checkpoints(scratch.path("one")))
        }

        @Test("A 2-process checkpoint resumes in one process, and a one-process checkpoint in 2, continuing the uninterrupted run")
        func checkpointsResumeAcrossProcessCounts() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            let data = try Self.corpus(scratch)
            let whole = try CLI.run(["train", "--data", data, "--out", scratch.path("whole"), "--max-iterations", "20"] + Self.settings)
            #expect(whole.status == 0)
            let expected = try Self.losses(scratch.path("whole"))

            let firstTwo = try Self.mpi(2, ["train", "--data", data, "--out", scratch.path("a"), "--max-iterations", "10"] + Self.settings)
            let thenOne = try CLI.run(["train", "--resume", scratch.path("a"), "--data", data, "--max-iterations", "20"])
            #expect(firstTwo.status == 0 && thenOne.status == 0, "\(thenOne.stderr)")
            #expect(Self.close(try Self.losses(scratch.path("a")).training, expected.training), "2 processes, then 1")

            let firstOne = try CLI.run(["train", "--data", data, "--out", scratch.path("b"), "--max-iterations", "10"] + Self.settings)
            let thenTwo = try Self.mpi(2, ["train", "--resume", scratch.path("b"), "--data", data, "--max-iterations", "20"])
            #expect(firstOne.status == 0 && thenTwo.status == 0, "\(thenTwo.stderr)")
            #expect(thenTwo.stdout.contains("Resuming from iteration 10 of 20"))
            #expect(Self.close(try Self.losses(scratch.path("b")).training, expected.training), "1 process, then 2")
            #expect(Self.close(try Self.losses(scratch.path("b")).validation, expected.validation))
        }

        @Test("A NaN in one process's gradient stops both at that iteration with one message, within a minute")
        func nanOnOneRankStopsAll() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            let data = try Self.corpus(scratch)
            let start = Date()
            let result = try Self.mpi(
                2, ["train", "--data", data, "--out", scratch.path("run"), "--max-iterations", "20"] + Self.settings,
                environment: ["CHARRNN_FAULT": "nan-gradient:1:14"])
            #expect(Date().timeIntervalSince(start) < 60)
            #expect(result.status != 0)
            let lines = result.stderr.split(separator: "\n").filter { $0.contains("charrnn: error:") }
            #expect(lines.count == 1 && lines[0].contains("training diverged at iteration 14"), "\(result.stderr)")
            #expect(try Self.checkpoints(scratch.path("run")).contains { $0.hasPrefix("i10_") }, "the checkpoint before is kept")
            #expect(!result.stdout.contains("Iteration 14/"))
        }

        @Test("A process killed mid-run ends the job within seconds, and the last checkpoint stays valid")
        func killedRankEndsTheJob() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
            let process = try Self.startLongRun(scratch, saveEvery: 20)
            #expect(RunSafetyTests.wait(for: "Saved", in: scratch.path("out"), seconds: 120))
            let rankOne = try #require(Self.processes(withRank: 1, under: executable.path).first)
            kill(rankOne, SIGKILL)
            let seconds = Self.secondsUntilExit(process, atMost: 30)
            #expect(seconds < 15, "the job ended \(seconds) s after the kill")
            #expect(process.terminationStatus != 0)
            let latest = try #require(try Self.checkpoints(scratch.path("run")).filter { $0.hasPrefix("i") }.last)
            let inspect = try CLI.run(["inspect", scratch.path("run") + "/" + latest])
            #expect(inspect.status == 0, "\(inspect.stderr)")
            #expect(Self.processes(withRank: 0, under: executable.path).isEmpty, "no process of the job is left")
        }

        /// Waits for `process` to end, killing it after `atMost` seconds;
        /// returns the seconds it took from `start`.
        static func secondsUntilExit(_ process: Process, atMost limit: Double, since start: Date = Date()) -> Double {
            while process.isRunning && Date().timeIntervalSince(start) < limit { Thread.sleep(forTimeInterval: 0.05) }
            let seconds = Date().timeIntervalSince(start)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return seconds
        }

        /// Python that unblocks every signal, then replaces itself with argv[1:].
        static let withSignalsUnblocked =
            "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execv(sys.argv[1], sys.argv[1:])"

        /// Starts `mpirun -np 2 charrnn train` on a long run, its output in files `out` and `err`.
        static func startLongRun(_ scratch: Scratch, saveEvery: Int) throws -> Process {
            guard let mpirun = Self.mpirun, let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
            let data = try Self.corpus(scratch)
            let process = Process()
            // The test runner's threads block some signals, and a child
            // inherits the mask, so mpirun is started through a step that
            // clears it, as a shell would have it.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", "-c", Self.withSignalsUnblocked, mpirun,
                "-np", "2", "--oversubscribe", executable.path, "train", "--data", data, "--out", scratch.path("run"),
                "--hidden", "32", "--batch", "8", "--steps", "20", "--save-every", String(saveEvery), "--epochs", "50",
            ]
            process.environment = ProcessInfo.processInfo.environment.merging(Self.rootEnvironment) { _, new in new }
            _ = FileManager.default.createFile(atPath: scratch.path("out"), contents: nil)
            _ = FileManager.default.createFile(atPath: scratch.path("err"), contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.path("out")))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.path("err")))
            try process.run()
            return process
        }

        @Test("Ctrl-C ends the job within seconds, every checkpoint left loads, and the run resumes from the directory")
        func interruptEndsTheJobAndCheckpointsStayValid() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            guard let executable = CLI.executable else { throw CLI.CLIError.binaryNotFound }
            let process = try Self.startLongRun(scratch, saveEvery: 50)
            #expect(RunSafetyTests.wait(for: "Saved", in: scratch.path("out"), seconds: 120))
            // A terminal's Ctrl-C reaches the whole foreground process group: mpirun and its processes.
            let start = Date()
            for pid in [process.processIdentifier] + Self.processes(withRank: 0, under: executable.path)
                + Self.processes(withRank: 1, under: executable.path)
            {
                kill(pid, SIGINT)
            }
            let seconds = Self.secondsUntilExit(process, atMost: 60, since: start)
            #expect(seconds < 30, "the job ended \(seconds) s after Ctrl-C")
            let names = try Self.checkpoints(scratch.path("run"))
            #expect(!names.isEmpty)
            for name in names {
                let inspect = try CLI.run(["inspect", scratch.path("run") + "/" + name])
                #expect(inspect.status == 0, "\(name): \(inspect.stderr)")
            }
            let data = try Self.corpus(scratch)
            let latest = try #require(names.compactMap { $0.firstMatch(of: #/^i(\d+)_/#).flatMap { Int($0.output.1) } }.max())
            let resumed = try Self.mpi(2, ["train", "--resume", scratch.path("run"), "--data", data, "--max-iterations", String(latest + 5)])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            #expect(resumed.stdout.contains("Resuming from iteration \(latest) of \(latest + 5)"))
        }

        @Test("SIGUSR1 to mpirun stops both processes after the same iteration, with a checkpoint there and one notice")
        func usr1StopsCleanly() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            let process = try Self.startLongRun(scratch, saveEvery: 1000)
            #expect(RunSafetyTests.wait(for: "Iteration 5/", in: scratch.path("out"), seconds: 120))
            kill(process.processIdentifier, SIGUSR1)
            process.waitUntilExit()
            let log = try String(contentsOfFile: scratch.path("out"), encoding: .utf8)
            let stderr = try String(contentsOfFile: scratch.path("err"), encoding: .utf8)
            let stopped = try #require(log.firstMatch(of: #/Stopped at iteration (\d+)/#).flatMap { Int($0.output.1) }, "\(log)\(stderr)")
            #expect(try Self.checkpoints(scratch.path("run")).contains { $0.hasPrefix("i\(stopped)_") })
            #expect(stderr.components(separatedBy: "stopping after this iteration").count == 2, "one notice: \(stderr)")
            #expect(stderr.contains("Interrupted at iteration \(stopped); continue with: mpirun -np 2 charrnn train --resume"))
        }

        /// PIDs of `executable`'s processes with this MPI rank.
        static func processes(withRank rank: Int, under executable: String) -> [Int32] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).filter { pid in
                guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"), link == executable,
                    let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
                else { return false }
                return environment.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }
            }
        }
    #else
        @Test("A build without MPI started as one of several processes refuses in one line and writes nothing")
        func buildWithoutMPIRefusesSeveralProcesses() throws {
            let scratch = try Scratch()
            defer { scratch.cleanUp() }
            try scratch.write("corpus.txt", text(length: 20_000))
            let result = try CLI.run(
                ["train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"), "--max-iterations", "3"] + Self.settings,
                extraEnvironment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"])
            #expect(result.status != 0)
            #expect(
                result.stderr == "charrnn: error: this charrnn was built without MPI, but was started as one of 2 processes; "
                    + "build it with: swift build -c release --traits MPI\n")
            #expect(!FileManager.default.fileExists(atPath: scratch.path("run")))
        }
    #endif
}
