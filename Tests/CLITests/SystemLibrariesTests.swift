import Foundation
import Testing

/// Protects the build's promise on any system: a missing or misplaced
/// library is one line that names what was looked for, where, and the
/// setting that points at it, never a compiler error about a header.
/// Tools/find-libraries is the look-up Package.swift, install-deps and the
/// tools share.
@Suite("Finding the system libraries")
struct SystemLibrariesTests {
    static let script = CExampleTests.repository.appendingPathComponent("Tools/find-libraries").path

    static func findLibraries(_ environment: [String: String]) throws -> CLI.Result {
        try Shell.run("/usr/bin/env", ["bash", script], extraEnvironment: environment)
    }

    /// The one line of a failed look-up (and that it is one line, with nothing on standard output).
    static func oneLine(_ result: CLI.Result) -> String? {
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
        guard result.status == 1, result.stdout.isEmpty, lines.count == 1 else { return nil }
        return String(lines[0])
    }

    @Test("On this machine the look-up finds OpenMP's header and runtime and a BLAS that links")
    func theLibrariesAreFoundHere() throws {
        let result = try Self.findLibraries([:])
        #expect(result.status == 0, "\(result.stderr)")
        var found: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 { found[String(parts[0])] = String(parts[1]) }
        }
        if found["openmp"] == "on" {
            #expect(FileManager.default.fileExists(atPath: (found["openmp_include"] ?? "") + "/omp.h"))
            #expect(FileManager.default.fileExists(atPath: (found["openmp_lib"] ?? "") + "/libomp.so"))
        }
        #expect(!(found["blas_libs"] ?? "").isEmpty && !(found["blas_found_by"] ?? "").isEmpty, "\(found)")
    }

    @Test("A BLAS pkg-config cannot find is one line: the BLAS, where it looked, and the settings that point at it")
    func aMissingBLASIsOneLine() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try FileManager.default.createDirectory(atPath: scratch.path("no-pc-files"), withIntermediateDirectories: true)
        // pkg-config sees no .pc file at all.
        let result = try Self.findLibraries([
            "CHARRNN_BLAS": "openblas", "PKG_CONFIG_LIBDIR": scratch.path("no-pc-files"),
            "PKG_CONFIG_PATH": scratch.path("no-pc-files"), "CHARRNN_BLAS_LIBS": "",
        ])
        let line = try #require(Self.oneLine(result), "\(result)")
        #expect(line.hasPrefix("charrnn: BLAS 'openblas' not found (tried pkg-config openblas)"), "\(line)")
        for setting in ["PKG_CONFIG_PATH", "CHARRNN_BLAS_CFLAGS", "CHARRNN_BLAS_LIBS", "CHARRNN_BLAS", "libopenblas-dev"] {
            #expect(line.contains(setting), "\(setting) missing from: \(line)")
        }
    }

    @Test("An OpenMP directory without omp.h is one line naming the setting and the directory")
    func aWrongOpenMPDirectoryIsOneLine() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let result = try Self.findLibraries(["CHARRNN_OPENMP_INCLUDE": scratch.path("")])
        let line = try #require(Self.oneLine(result), "\(result)")
        #expect(line.contains("CHARRNN_OPENMP_INCLUDE=\(scratch.path("")) holds no omp.h"), "\(line)")
        let library = try Self.findLibraries(["CHARRNN_OPENMP_LIB": scratch.path("")])
        let libraryLine = try #require(Self.oneLine(library), "\(library)")
        #expect(libraryLine.contains("CHARRNN_OPENMP_LIB=\(scratch.path("")) holds no libomp.so"), "\(libraryLine)")
    }

    @Test("With OpenMP off nothing of OpenMP is looked for, and the answer says off")
    func openMPOffLooksForNoOpenMP() throws {
        let result = try Self.findLibraries(["CHARRNN_OPENMP": "off", "CHARRNN_OPENMP_INCLUDE": "/nonexistent"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("openmp=off\nopenmp_include=\nopenmp_lib=\n"), "\(result.stdout)")
    }

    @Test("A BLAS charrnn does not know, and flags that cannot link cblas_sgemm, are each one line")
    func unknownBLASAndBadFlagsAreOneLine() throws {
        let unknown = try Self.findLibraries(["CHARRNN_BLAS": "mkl"])
        let unknownLine = try #require(Self.oneLine(unknown), "\(unknown)")
        #expect(unknownLine.contains("CHARRNN_BLAS=mkl") && unknownLine.contains("openblas, blis, flexiblas or cblas"))
        let flags = try Self.findLibraries(["CHARRNN_BLAS_LIBS": "-lcharrnn-no-such-blas"])
        let flagsLine = try #require(Self.oneLine(flags), "\(flags)")
        #expect(flagsLine.contains("cblas_sgemm does not build with") && flagsLine.contains("-lcharrnn-no-such-blas"))
    }

    @Test("The manifest stops with the look-up's line, not a compiler error, when a library is missing")
    func theManifestStopsWithTheLine() throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        let swift = try #require(Self.swiftExecutable, "swift not found beside the toolchain's swiftc")
        let result = try Shell.run(
            swift,
            [
                "package", "--package-path", CExampleTests.repository.path,
                "--scratch-path", scratch.path("build"), "dump-package",
            ],
            extraEnvironment: ["CHARRNN_BLAS": "no-such-blas"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("charrnn: CHARRNN_BLAS=no-such-blas is not a BLAS charrnn knows"), "\(result.stderr)")
        #expect(!result.stderr.contains("file not found"))
    }

    /// The `swift` of the toolchain on PATH.
    static var swiftExecutable: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").map { "\($0)/swift" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}
