import Foundation
import Testing

/// Protects a run's independence of its thread count: the core splits the
/// work whose rounding depends on its partition into fixed blocks, so
/// training gives the same bits with any team, and a run resumed with other
/// threads (or under `OMP_DYNAMIC`, which may shrink teams under load)
/// continues exactly. Before, 1 and 2 threads differed by thousands of ulp
/// after ten iterations at these sizes.
@Suite("Thread count")
struct ThreadCountTests {
    /// The tensor bytes of a checkpoint (weights, Adam's moments, the
    /// carried state): everything after the safetensors header, which
    /// holds times and paths that differ run to run.
    static func tensorBytes(_ path: String) throws -> Data {
        let file = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        return file.dropFirst(8 + headerLength)
    }

    /// Trains 8 iterations on scratch's corpus.txt at sizes that split
    /// unevenly across threads, row blocks and 16-column panels (hidden 100,
    /// batch 31), with `environment` added; returns the exit status, stderr,
    /// the Compute: line and the tensor bytes of the checkpoint at iteration 8
    /// (nil if there is none).
    static func trainEightIterations(cell: String, environment: [String: String], in scratch: Scratch, run: String) throws
        -> (status: Int32, stderr: String, compute: String, bytes: Data?)
    {
        let result = try CLI.run(
            [
                "train", "--data", scratch.path("corpus.txt"), "--out", scratch.path(run), "--cell", cell, "--hidden", "100",
                "--batch", "31", "--steps", "20", "--max-iterations", "8", "--save-every", "8", "--seed", "3",
            ], extraEnvironment: environment)
        let compute = result.stdout.split(separator: "\n").first { $0.hasPrefix("Compute: ") }.map(String.init) ?? ""
        let name = try FileManager.default.contentsOfDirectory(atPath: scratch.path(run)).first {
            $0.hasPrefix("i8_") && $0.hasSuffix(".safetensors")
        }
        return (result.status, result.stderr, compute, try name.map { try tensorBytes(scratch.path(run) + "/" + $0) })
    }

    @Test(
        "Training gives the same bits with 1, 2 and 4 threads and with OMP_DYNAMIC set, at sizes that split unevenly, for every cell",
        arguments: ["lstm", "gru", "rnn"])
    func sameBitsForAnyThreadCount(cell: String) throws {
        let scratch = try Scratch()
        defer { scratch.cleanUp() }
        try scratch.write("corpus.txt", text(length: 20_000))
        let teams: [(name: String, environment: [String: String])] = [
            ("1 thread", ["OMP_NUM_THREADS": "1"]),
            ("2 threads", ["OMP_NUM_THREADS": "2"]),
            ("4 threads", ["OMP_NUM_THREADS": "4"]),
            ("OMP_DYNAMIC", ["OMP_NUM_THREADS": "2", "OMP_DYNAMIC": "true"]),
        ]
        var checkpoints: [(name: String, bytes: Data)] = []
        for (index, team) in teams.enumerated() {
            let run = try Self.trainEightIterations(cell: cell, environment: team.environment, in: scratch, run: "run\(index)")
            #expect(run.status == 0, "\(team.name): \(run.stderr)")
            // The Compute: line names the team the core actually ran.
            let threads = team.environment["OMP_NUM_THREADS"] ?? ""
            #expect(run.compute.contains("with \(threads) thread"), "\(team.name): \(run.compute)")
            checkpoints.append((team.name, try #require(run.bytes)))
        }
        #expect(checkpoints[0].bytes.count > 100 * 4 * 100 * 4, "the checkpoint holds the weights")
        for other in checkpoints.dropFirst() {
            #expect(other.bytes == checkpoints[0].bytes, "\(other.name) trained other bits than \(checkpoints[0].name)")
        }
    }
}
