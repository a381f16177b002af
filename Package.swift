// swift-tools-version: 6.2
// 6.2 or later: SwiftPM accepts a dependency whose targets use unsafeFlags
// only from packages that declare 6.2+, and CCharRNN needs them for OpenMP.
import PackageDescription

// MARK: - System libraries (Debian: libopenblas-dev, libomp-dev)
//
// OpenBLAS: cblas.h and libopenblas.so are on the default search paths.
// LLVM OpenMP: Swift's clang ships no omp.h, and Debian puts libomp.so (the
// link-time name) only in LLVM's own directory; the runtime, libomp.so.5, is
// on the default loader path. `-idirafter` puts omp.h after clang's own
// builtin headers, so those are never shadowed.
let llvmOpenMPInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"
let llvmOpenMPLib = "/usr/lib/llvm-14/lib"

let coreCFlags: [String] = [
    "-fopenmp",
    "-idirafter", llvmOpenMPInclude,
    // The core is always built optimised, even in debug builds: tests and
    // the CLI would otherwise run it 10x slower. -fno-trapping-math lets the
    // clamped polynomial loops vectorise; -fno-math-errno lets sqrtf in them.
    "-O3", "-fno-trapping-math", "-fno-math-errno",
]

// MARK: - Open MPI (Debian: openmpi-bin, libopenmpi-dev), only with the MPI trait
//
// Debian's Open MPI keeps mpi.h and libmpi.so under its own directory
// (`pkg-config --cflags --libs ompi-c`); only the opt-in trait needs them.
let openMPIInclude = "/usr/lib/x86_64-linux-gnu/openmpi/include"
let openMPILib = "/usr/lib/x86_64-linux-gnu/openmpi/lib"
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
            linkerSettings: [
                .linkedLibrary("openblas"),
                .linkedLibrary("omp"),
                .unsafeFlags(["-L\(llvmOpenMPLib)"]),
            ]
        ),
        // MARK: - The Swift library: memory, data, checkpoints, training
        .target(
            name: "CharRNN",
            dependencies: ["CCharRNN"],
            path: "Sources/CharRNN"
        ),
        // MARK: - MPI (opt-in): a C shim over MPI's macros, and the ProcessGroup over it
        .target(
            name: "CCharRNNMPI",
            path: "Sources/CCharRNNMPI",
            cSettings: [
                .define("CHARRNN_WITH_MPI", .when(traits: withMPI)),
                .unsafeFlags(["-I\(openMPIInclude)"], .when(traits: withMPI)),
            ],
            linkerSettings: [
                .linkedLibrary("mpi", .when(traits: withMPI)),
                .unsafeFlags(["-L\(openMPILib)"], .when(traits: withMPI)),
            ]
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
        .executableTarget(
            name: "charrnn-server",
            dependencies: [
                "CharRNN",
                "CharRNNTools",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: withServer)),
                .product(name: "Prometheus", package: "swift-prometheus", condition: .when(traits: withServer)),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: withServer)),
                .product(name: "Logging", package: "swift-log", condition: .when(traits: withServer)),
            ],
            path: "Sources/charrnn-server",
            resources: [
                .embedInCode("Playground/index.html"),
                .embedInCode("Playground/playground.js"),
                .embedInCode("Playground/playground.css"),
                .embedInCode("openapi.json"),
            ]
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
            dependencies: ["CCharRNN"],
            path: "Tests/CoreTests"
        ),
        .testTarget(
            name: "CharRNNTests",
            dependencies: ["CharRNN", "CCharRNN"],
            path: "Tests/CharRNNTests"
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["charrnn", "charrnn-server", "CharRNN"],
            path: "Tests/CLITests",
            exclude: ["Fixtures"]
        ),
    ]
)
