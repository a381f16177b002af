import CCharRNN
import Foundation
import Testing

/// Protects the C API's promise: a plain C program, with charrnn.h and the
/// CCharRNN library alone, builds, trains and samples a model.
@Suite("C example program")
struct CExampleTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Compiles Tools/c-example into `scratch`; returns the program's path.
    static func compileExample(in scratch: Scratch) throws -> String {
        let library = try #require(CLI.executable?.deletingLastPathComponent(), "build directory not found")
        let sanitizer = Sanitizer.compilerFlags
        let compile = try Shell.run(
            "/usr/bin/env",
            [
                sanitizer.isEmpty ? "cc" : "clang", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2",
            ] + sanitizer + [
                repository.appendingPathComponent("Tools/c-example/example.c").path,
                "-I", repository.appendingPathComponent("include").path,
                "-L", library.path, "-lCCharRNN", "-Wl,-rpath,\(library.path)",
                "-o", scratch.path("example"),
            ])
        #expect(compile.status == 0, "cc failed: \(compile.stderr)")
        return scratch.path("example")
    }

    @Test(
        "A C program samples from a checkpoint charrnn train wrote, in place, the text charrnn sample writes",
        arguments: ["lstm", "gru", "rnn"])
    func cProgramSamplesFromATrainedCheckpoint(cell: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 4000))
        let train = try CLI.run([
            "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run"), "--cell", cell,
            "--hidden", "24", "--batch", "4", "--steps", "16", "--max-iterations", "30",
            "--save-every", "30", "--learning-rate", "0.01",
        ])
        #expect(train.status == 0, "\(train.stderr)")
        let checkpoint = scratch.path("run/best.safetensors")
        let example = try Self.compileExample(in: scratch)
        let fromC = try Shell.run(example, [checkpoint, "it was ", "150", "21"])
        #expect(fromC.status == 0, "\(fromC.stderr)")
        #expect(fromC.stderr.contains("2 \(cell) layers of 24 units") && fromC.stderr.contains("used in place"), "\(fromC.stderr)")
        let fromCLI = try CLI.run(["sample", "--checkpoint", checkpoint, "--prime", "it was ", "--length", "150", "--seed", "21"])
        #expect(fromCLI.status == 0)
        #expect(fromC.stdout == fromCLI.stdout)
        #expect(fromC.stdout.unicodeScalars.count == "it was ".count + 150)
        // With bf16 products, the text charrnn sample --precision bf16 writes
        // (on a CPU without AVX512_BF16 the tools need the portable kernel asked for).
        let environment = charrnn_bf16_kernel() == Int32(CHARRNN_BF16_AVX512.rawValue) ? [:] : ["CHARRNN_BF16": "portable"]
        let narrowC = try Shell.run(example, ["--bf16", checkpoint, "it was ", "150", "21"], extraEnvironment: environment)
        let narrowCLI = try CLI.run(
            ["sample", "--checkpoint", checkpoint, "--prime", "it was ", "--length", "150", "--seed", "21", "--precision", "bf16"],
            extraEnvironment: environment)
        #expect(narrowC.status == 0 && narrowCLI.status == 0, "\(narrowC.stderr) \(narrowCLI.stderr)")
        #expect(narrowC.stdout == narrowCLI.stdout)
    }

    @Test("The library exports the C API and none of the core's own functions")
    func libraryExportsOnlyTheAPI() throws {
        let library = try #require(CLI.executable?.deletingLastPathComponent(), "build directory not found")
        let handle = try #require(dlopen(library.appendingPathComponent("libCCharRNN.so").path, RTLD_NOW | RTLD_LOCAL))
        defer { dlclose(handle) }
        for name in ["charrnn_forward", "charrnn_step", "charrnn_cell_info_get", "charrnn_tensor_info_at"] {
            #expect(dlsym(handle, name) != nil, "\(name) is exported")
        }
        for name in ["gemm_rows_parallel", "gemm_block", "carve_params", "carve_activations", "check_config", "cell_of"] {
            #expect(dlsym(handle, name) == nil, "\(name) is the core's own and must not be exported")
        }
    }

    @Test("Tools/c-example compiles with cc against the built library, trains, and samples")
    func cProgramTrainsAndSamples() throws {
        let library = try #require(CLI.executable?.deletingLastPathComponent(), "build directory not found")
        #expect(
            FileManager.default.fileExists(atPath: library.appendingPathComponent("libCCharRNN.so").path),
            "libCCharRNN.so is built by `swift build` and `swift test`")
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        // Under Tools/sanitize the library is instrumented: the example is then
        // built by the toolchain's clang with the same sanitizer, so it links
        // the sanitizer's runtime.
        let sanitizer = Sanitizer.compilerFlags
        let compile = try Shell.run(
            "/usr/bin/env",
            [
                sanitizer.isEmpty ? "cc" : "clang", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2",
            ] + sanitizer + [
                Self.repository.appendingPathComponent("Tools/c-example/example.c").path,
                "-I", Self.repository.appendingPathComponent("include").path,
                "-L", library.path, "-lCCharRNN", "-Wl,-rpath,\(library.path)",
                "-o", scratch.path("example"),
            ])
        #expect(compile.status == 0, "cc failed: \(compile.stderr)")
        let run = try Shell.run(scratch.path("example"), [])
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("\nOK: loss "))
        let sample = run.stdout.split(separator: "\n").first { $0.hasPrefix("sample: It was") }
        #expect((sample?.count ?? 0) == "sample: It was".count + 120)
    }
}

/// Runs a program and captures what it prints.
enum Shell {
    /// Runs `executable`; `extraEnvironment` is added to this process's
    /// environment; `input`, if given, is its standard input.
    static func run(
        _ executable: String, _ arguments: [String], extraEnvironment: [String: String] = [:],
        input: Data? = nil
    ) throws -> CLI.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !extraEnvironment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(extraEnvironment) { _, new in new }
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdin = Pipe()
        if input != nil { process.standardInput = stdin }
        try process.run()
        if let input {
            // A writer thread, so a child that prints while it reads cannot deadlock with us.
            let writer = Thread {
                stdin.fileHandleForWriting.write(input)
                try? stdin.fileHandleForWriting.close()
            }
            writer.start()
        }
        // Read both pipes before waiting, so a full pipe cannot block the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CLI.Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }
}
