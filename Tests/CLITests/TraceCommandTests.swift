import Foundation
import Testing

/// Protects `charrnn trace` as a user meets it: JSON lines whose surprise
/// averages to `eval`'s loss, the units asked for, the three ways of giving
/// the text, a safetensors file beside the same numbers, and one line for
/// each bad request.
@Suite("charrnn trace")
struct TraceCommandTests {
    static let run = trainedRun(
        on: "She said \"yes\" (twice), then \"no\".\nHe wrote it down.\n", repeated: 60,
        ["--hidden", "24", "--batch", "4", "--steps", "20", "--max-iterations", "30"])
    static let text = "He said \"no\" (once).\nShe wrote it down.\n"

    static func lines(_ output: String) throws -> [[String: Any]] {
        try output.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
    }

    @Test("trace writes one JSON line per character whose mean surprise is eval's loss, with the units and alternatives asked for")
    func jsonLinesAverageToEvalLoss() throws {
        try Self.run.scratch.write("text.txt", Array(Self.text.utf8))
        let file = Self.run.scratch.path("text.txt")
        let traced = try CLI.run(["trace", "--checkpoint", Self.run.directory, "--text", file, "--units", "2,5-7", "--top", "3"])
        #expect(traced.status == 0, "\(traced.stderr)")
        let records = try Self.lines(traced.stdout)
        #expect(records.count == Self.text.unicodeScalars.count)
        #expect(records.map { $0["character"] as? String ?? "?" }.joined() == Self.text)
        #expect(records[0]["surprise"] is NSNull && (records[0]["top"] as? [Any])?.isEmpty == true)
        let surprises = records.dropFirst().compactMap { $0["surprise"] as? Double }
        #expect(surprises.count == records.count - 1)
        let mean = surprises.reduce(0, +) / Double(surprises.count)
        let evaluated = try CLI.run(["eval", "--checkpoint", Self.run.directory, "--data", file, "--json"])
        let loss = try #require((try JSONSerialization.jsonObject(with: Data(evaluated.stdout.utf8)) as? [String: Any])?["loss"] as? Double)
        #expect(abs(mean - loss) <= 1e-5 * loss, "trace \(mean) against eval \(loss)")
        #expect(traced.stderr.contains("mean surprise") && traced.stderr.contains("over \(records.count - 1) predictions"))
        for record in records {
            let h = try #require(record["h"] as? [[Double]])
            let c = try #require(record["c"] as? [[Double]])
            #expect(h.count == 2 && h.allSatisfy { $0.count == 4 } && c.count == 2 && c.allSatisfy { $0.count == 4 })
            #expect(h.joined().allSatisfy { abs($0) < 1 }, "h is o·tanh(c)")
        }
        let top = try #require(records[5]["top"] as? [[String: Any]])
        #expect(top.count == 3)
        let bits = try #require(records[5]["bits"] as? Double)
        #expect(abs(bits - (records[5]["surprise"] as! Double) / log(2)) < 1e-12)
    }

    @Test("The text can come from --prime, --text or standard input, with the same trace")
    func textSourcesAgree() throws {
        try Self.run.scratch.write("text.txt", Array(Self.text.utf8))
        let fromFile = try CLI.run(["trace", "--checkpoint", Self.run.directory, "--text", Self.run.scratch.path("text.txt"), "--all-units"])
        let fromFlag = try CLI.run(["trace", "--checkpoint", Self.run.directory, "--prime", Self.text, "--all-units"])
        let fromInput = try CLI.run(["trace", "--checkpoint", Self.run.directory, "-", "--all-units"], input: Data(Self.text.utf8))
        #expect(fromFile.status == 0 && fromFlag.status == 0 && fromInput.status == 0)
        #expect(!fromFile.stdout.isEmpty && fromFile.stdout == fromFlag.stdout && fromFlag.stdout == fromInput.stdout)
        #expect(try Self.lines(fromFile.stdout).allSatisfy { ($0["h"] as? [[Double]])?.allSatisfy { $0.count == 24 } == true })
    }

    @Test("--out writes a safetensors file with the JSON lines' numbers and never replaces a file")
    func outWritesTensors() throws {
        let out = Self.run.scratch.path("trace-\(UUID().uuidString).safetensors")
        let written = try CLI.run(["trace", "--checkpoint", Self.run.directory, "--prime", Self.text, "--units", "0-3", "--out", out])
        #expect(written.status == 0, "\(written.stderr)")
        #expect(written.stdout.contains("wrote \(out)"))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try #require(try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<8 + length)) as? [String: Any])
        let T = Self.text.unicodeScalars.count
        #expect((header["h"] as? [String: Any])?["shape"] as? [Int] == [T, 2, 4])
        #expect((header["c"] as? [String: Any])?["shape"] as? [Int] == [T, 2, 4])
        #expect((header["tokens"] as? [String: Any])?["dtype"] as? String == "I32")
        // h of the last character, layer 1, unit 3, against the JSON line's.
        let h = try #require(header["h"] as? [String: Any])
        let start = 8 + length + (h["data_offsets"] as! [Int])[0] + 4 * ((T - 1) * 8 + 4 + 3)
        let value = Float(bitPattern: bytes[start..<start + 4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) })
        let lines = try Self.lines(try CLI.run(["trace", "--checkpoint", Self.run.directory, "--prime", Self.text, "--units", "0-3"]).stdout)
        #expect((lines[T - 1]["h"] as? [[Double]]).map { Float($0[1][3]) } == value, "the JSON line prints the float exactly")

        let again = try CLI.run(["trace", "--checkpoint", Self.run.directory, "--prime", "She", "--out", out])
        #expect(again.status != 0 && again.stderr.contains("exists already"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == bytes)
    }

    @Test(
        "Bad requests get one line naming the problem and a non-zero exit",
        arguments: [
            (["--prime", "She", "--units", "99"], "--units must be in 0-23"),
            (["--prime", "She", "--units", "3-x"], "--units takes unit indices"),
            (["--prime", "She", "--units", "2", "--all-units"], "cannot be combined"),
            (["--prime", "She", "--top", "1000"], "--top must be in 0-"),
            (["--prime", "She", "--text", "/nonexistent"], "give one of --text, --prime and -"),
            ([], "give the text to trace"),
            (["--prime", "Zébra"], "vocabulary lacks: 'Z'"),
            (["--text", "/nonexistent/file.txt"], "/nonexistent/file.txt"),
        ])
    func badRequestsAreRefused(arguments: [String], message: String) throws {
        let result = try CLI.run(["trace", "--checkpoint", Self.run.directory] + arguments)
        #expect(result.status != 0)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stdout.isEmpty)
    }
}
