import Foundation

/// Runs the built `charrnn` executable and captures what it prints.
enum CLI {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The `charrnn` binary next to the test bundle in the build directory.
    static var executable: URL? { binary("charrnn") }

    /// A binary of the package's (`charrnn`, `charrnn-server`) next to the test bundle.
    static func binary(_ name: String) -> URL? {
        var candidates: [URL] = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        if let argument = CommandLine.arguments.first {
            var url = URL(fileURLWithPath: argument).deletingLastPathComponent()
            for _ in 0..<4 {
                candidates.append(url)
                url = url.deletingLastPathComponent()
            }
        }
        return candidates.map { $0.appendingPathComponent(name) }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static func run(
        _ arguments: [String], extraEnvironment: [String: String] = [:], input: Data? = nil,
        binary name: String = "charrnn"
    ) throws -> Result {
        guard let executable = binary(name) else { throw CLIError.binaryNotFound }
        return try Shell.run(executable.path, arguments, extraEnvironment: extraEnvironment, input: input)
    }

    /// `script`, which runs a command on a pseudo-terminal, if installed (util-linux).
    static let script = ["/usr/bin/script", "/bin/script"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs charrnn with its standard output on a pseudo-terminal (through
    /// `script`), returning what the terminal showed (\n arrives as \r\n).
    static func runOnTerminal(_ arguments: [String]) throws -> Result {
        guard let executable, let script else { throw CLIError.binaryNotFound }
        let command = ([executable.path] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
            .joined(separator: " ")
        return try Shell.run(script, ["-qfec", command, "/dev/null"], extraEnvironment: ["COLUMNS": "200", "TERM": "dumb"])
    }

    enum CLIError: Error { case binaryNotFound }
}

/// A run directory that `charrnn train` made in a new scratch folder from
/// `text` repeated `count` times, with `options`: a suite's shared fixture.
func trainedRun(on text: String, repeated count: Int, _ options: [String]) -> (scratch: Scratch, directory: String) {
    let scratch = try! Scratch()
    try! scratch.write("corpus.txt", Array(String(repeating: text, count: count).utf8))
    let result = try! CLI.run(["train", "--data", scratch.path("corpus.txt"), "--out", scratch.path("run")] + options)
    precondition(result.status == 0, result.stderr)
    return (scratch, scratch.path("run"))
}

struct Scratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("charrnn-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func write(_ name: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: url.appendingPathComponent(name)) }
    func cleanUp() { try? FileManager.default.removeItem(at: url) }
}

func text(length: Int) -> [UInt8] {
    let words = ["it", "was", "the", "best", "of", "times", "worst", "age", "wisdom", "foolishness"]
    var out = ""
    var index = 0
    while out.utf8.count < length {
        out += words[(index * 3 + index / 4) % words.count] + (index % 9 == 8 ? ",\n" : " ")
        index += 1
    }
    return Array(out.utf8.prefix(length))
}

/// The sanitizer the tests were built with, as `Tools/sanitize` says in
/// `CHARRNN_SANITIZER` (address, undefined, thread), or `nil`.
enum Sanitizer {
    static let current = ProcessInfo.processInfo.environment["CHARRNN_SANITIZER"].flatMap { $0.isEmpty ? nil : $0 }

    /// What a C program linking the instrumented library is compiled with:
    /// `CHARRNN_SANITIZER_CFLAGS` when the script gives them, else `-fsanitize=KIND`.
    static var compilerFlags: [String] {
        if let flags = ProcessInfo.processInfo.environment["CHARRNN_SANITIZER_CFLAGS"], !flags.isEmpty {
            return flags.split(separator: " ").map(String.init)
        }
        return current.map { ["-fsanitize=\($0)"] } ?? []
    }

    /// ASan and TSan map terabytes of shadow address space and hundreds of MB
    /// of shadow memory, so a process's memory cannot be measured or limited.
    static let distortsMemory = current == "address" || current == "thread"
}

/// Hidden files in a run directory other than its lock: temporaries a
/// writer left behind (there should be none).
func leftoverTemporaries(in directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".") && $0 != ".charrnn-lock" }
}
