// swift-tools-version: 6.2
// 6.2 or later: SwiftPM accepts a dependency whose targets use unsafeFlags
// only from packages that declare 6.2+, and CCharRNN needs them for OpenMP.
import Foundation
import PackageDescription

// MARK: - System libraries: a BLAS, and LLVM's OpenMP runtime
//
// Tools/find-libraries finds them (pkg-config where the system ships a .pc
// file, otherwise a probe of where systems put them) and is the one place
// that knows where they live; environment variables choose and override
// (CHARRNN_BLAS, CHARRNN_BLAS_CFLAGS, CHARRNN_BLAS_LIBS, CHARRNN_OPENMP,
// CHARRNN_OPENMP_INCLUDE, CHARRNN_OPENMP_LIB: see that script and the
// README's "Building elsewhere"). When one is missing, reading this manifest
// stops with the script's one line: what it looked for, where, and which
// variable points at it. SwiftPM caches what a manifest found until the
// manifest or the environment changes, and never caches a failure.
struct SystemLibraries {
    /// What the script printed, as key=value lines.
    var found: [String: String]

    static func find() -> SystemLibraries {
        let script = Context.packageDirectory + "/Tools/find-libraries"
        // SwiftPM also reads a dependency's manifest straight out of its git
        // repository, to choose a version: the manifest then stands alone at
        // "/" with no files beside it. Only the products and dependencies
        // count there, so nothing is looked up; the checkout's manifest,
        // read before anything is built, looks.
        guard FileManager.default.fileExists(atPath: script) else { return SystemLibraries(found: [:]) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["bash", script]
        let output = Pipe()
        let message = Pipe()
        process.standardOutput = output
        process.standardError = message
        do { try process.run() } catch { stop("charrnn: could not run \(script): \(error)") }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let problem = String(decoding: message.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { stop(problem) }
        var found: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            found[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return SystemLibraries(found: found)
    }

    /// Ends the manifest with the script's line (SwiftPM prints it above its own "Invalid manifest").
    static func stop(_ line: String) -> Never {
        FileHandle.standardError.write(Data((line.hasSuffix("\n") ? line : line + "\n").utf8))
        exit(1)
    }

    func words(_ key: String) -> [String] { (found[key] ?? "").split(separator: " ").map(String.init) }
    var openMP: Bool { found["openmp"] == "on" }
    /// The BLAS chosen by name, when it was found by looking (not given as flags).
    var blasName: String? { found["blas_found_by"].map { $0.hasPrefix("CHARRNN_BLAS_") ? nil : found["blas"] } ?? nil }

    /// Compiler flags of the core: OpenMP's header after clang's own (so
    /// its builtin headers are never shadowed), or, without OpenMP, only
    /// the `simd` pragmas, and the BLAS's header directory.
    var coreCFlags: [String] {
        let threading = openMP ? ["-fopenmp", "-idirafter", found["openmp_include"] ?? ""] : ["-fopenmp-simd"]
        return threading + words("blas_cflags")
    }

    /// Linker flags of the core, spelled for swiftc, which links the products.
    var coreLinkerFlags: [String] {
        var flags: [String] = []
        for word in words("blas_libs") {
            if word.hasPrefix("-Wl,") {
                for part in word.dropFirst(4).split(separator: ",") { flags += ["-Xlinker", String(part)] }
            } else if word == "-pthread" {
                flags.append("-lpthread")
            } else {
                flags.append(word)
            }
        }
        if openMP, let lib = found["openmp_lib"], !lib.isEmpty {
            // The runtime the core was linked with is the one it loads.
            flags += ["-L\(lib)", "-lomp", "-Xlinker", "-rpath", "-Xlinker", lib]
        }
        return flags
    }

    /// Tell the core's tests what was built, so they check that the
    /// runtime reports it.
    var testDefines: [SwiftSetting] {
        var defines: [SwiftSetting] = openMP ? [] : [.define("CHARRNN_BUILT_WITHOUT_OPENMP")]
        if let name = blasName { defines.append(.define("CHARRNN_BLAS_\(name.uppercased())")) }
        return defines
    }
}
let systemLibraries = SystemLibraries.find()

// The core is always built optimised, even in debug builds: tests and the
// CLI would otherwise run it 10x slower. -fno-trapping-math lets the clamped
// polynomial loops vectorise; -fno-math-errno lets sqrtf in them.
let coreCFlags = systemLibraries.coreCFlags + ["-O3", "-fno-trapping-math", "-fno-math-errno", "-Wall", "-Wextra"]

// MARK: - MPI (Open MPI by default), only with the MPI trait
//
// SwiftPM asks pkg-config for the module CHARRNN_MPI names (default ompi-c;
// mpich for MPICH) each time it builds, so MPI installed after a first build
// without it is found.
let mpiPkgConfig = Context.environment["CHARRNN_MPI"] ?? "ompi-c"
let withMPI: Set<String> = ["MPI"]
// charrnn-server's dependencies (Hummingbird, SwiftNIO, Prometheus) are built
// only with the Server trait, on by default; `--disable-default-traits`
// leaves them out (the sanitizer passes do: the scheduler's own tests run there).
let withServer: Set<String> = ["Server"]

let package = Package(
    name: "CharRNN",
    // MARK: - Public API
    products: [
        .library(name: "CharRNN", targets: ["CharRNN"]),
        .library(name: "CCharRNN", type: .dynamic, targets: ["CCharRNN"]),
        .executable(name: "charrnn", targets: ["charrnn"]),
        // Data-parallel training over MPI; empty unless built with the MPI trait.
        .library(name: "CharRNNMPI", targets: ["CharRNNMPI"]),
        // The HTTP server and playground: its own product, so `charrnn` builds without Hummingbird.
        .executable(name: "charrnn-server", targets: ["charrnn-server"]),
    ],
    // MARK: - Traits
    traits: [
        .trait(name: "MPI", description: "Data-parallel training over Open MPI: `mpirun -np N charrnn train …` (needs libopenmpi-dev)"),
        .trait(name: "Server", description: "charrnn-server: the HTTP API and playground, on Hummingbird 2"),
        .default(enabledTraits: ["Server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Only charrnn-server uses these.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // MARK: - The C core: compute only, over caller-owned memory
        .target(
            name: "CCharRNN",
            path: ".",
            sources: ["CCore"],
            publicHeadersPath: "include",
            cSettings: [.unsafeFlags(coreCFlags)],
            linkerSettings: [.unsafeFlags(systemLibraries.coreLinkerFlags)]
        ),
        // MARK: - The Swift library: memory, data, checkpoints, training
        .target(
            name: "CharRNN",
            dependencies: ["CCharRNN"],
            path: "Sources/CharRNN"
        ),
        // MARK: - MPI (opt-in): a C shim over MPI's macros, and the ProcessGroup over it
        .systemLibrary(
            name: "CMPI",
            path: "Sources/CMPI",
            pkgConfig: mpiPkgConfig,
            providers: [.apt(["libopenmpi-dev"]), .yum(["openmpi-devel"]), .brew(["open-mpi"])]
        ),
        .target(
            name: "CCharRNNMPI",
            dependencies: [.target(name: "CMPI", condition: .when(traits: withMPI))],
            path: "Sources/CCharRNNMPI",
            cSettings: [.define("CHARRNN_WITH_MPI", .when(traits: withMPI))]
        ),
        .target(
            name: "CharRNNMPI",
            dependencies: ["CharRNN", "CCharRNNMPI"],
            path: "Sources/CharRNNMPI"
        ),
        // MARK: - What the two executables share: JSON output, finding a checkpoint
        .target(
            name: "CharRNNTools",
            dependencies: ["CharRNN"],
            path: "Sources/CharRNNTools"
        ),
        // MARK: - The command-line tool
        .executableTarget(
            name: "charrnn",
            dependencies: [
                "CharRNN",
                "CharRNNTools",
                .target(name: "CharRNNMPI", condition: .when(traits: withMPI)),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/charrnn"
        ),
        // MARK: - The HTTP server: a thin layer over the library's GenerationScheduler
        // Its routes, middleware and application, apart from the executable's
        // flags, so the tests run the same application in process.
        .target(
            name: "CharRNNServer",
            dependencies: [
                "CharRNN",
                "CharRNNTools",
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: withServer)),
                .product(name: "NIOHTTP1", package: "swift-nio", condition: .when(traits: withServer)),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras", condition: .when(traits: withServer)),
                .product(name: "Prometheus", package: "swift-prometheus", condition: .when(traits: withServer)),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: withServer)),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: withServer)),
            ],
            path: "Sources/CharRNNServer",
            resources: [
                .embedInCode("Playground/index.html"),
                .embedInCode("Playground/playground.js"),
                .embedInCode("Playground/explain.js"),
                .embedInCode("Playground/playground.css"),
                .embedInCode("openapi.json"),
            ]
        ),
        .executableTarget(
            name: "charrnn-server",
            dependencies: [
                "CharRNN",
                "CharRNNTools",
                "CharRNNServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: withServer)),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: withServer)),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: withServer)),
            ],
            path: "Sources/charrnn-server"
        ),
        // MARK: - Tools
        .executableTarget(
            name: "checkpoint-fuzzer",
            dependencies: ["CharRNN"],
            path: "Tools/CheckpointFuzzer",
            exclude: ["corpus", "fuzz.sh"]
        ),
        // MARK: - Tests
        .testTarget(
            name: "CoreTests",
            // CharRNN only for what the library shows of the core's state (the trace).
            dependencies: ["CCharRNN", "CharRNN"],
            path: "Tests/CoreTests",
            swiftSettings: systemLibraries.testDefines
        ),
        .testTarget(
            name: "CharRNNTests",
            dependencies: ["CharRNN", "CCharRNN", "CharRNNTools"],
            path: "Tests/CharRNNTests"
        ),
        // The server's routes and protocol in process (HummingbirdTesting);
        // what needs a process (signals, flags, ports) stays in CLITests.
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "CharRNN",
                "CharRNNServer",
                .product(name: "HummingbirdTesting", package: "hummingbird", condition: .when(traits: withServer)),
            ],
            path: "Tests/ServerTests"
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["charrnn", "charrnn-server", "CharRNN", "CCharRNN"],
            path: "Tests/CLITests",
            exclude: ["Fixtures"]
        ),
    ]
)
