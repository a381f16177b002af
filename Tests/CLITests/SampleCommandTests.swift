import Foundation
import Testing

/// Protects `charrnn sample` as a user meets it: output, reproducibility, errors.
@Suite("charrnn sample")
struct SampleCommandTests {
    /// A checkpoint made by `charrnn train` on a small text, shared by the tests.
    static let run = trainedRun(
        on: "Ёлки-палки, «ёж» идёт домой; the cat sat on the mat.\n", repeated: 40,
        ["--hidden", "16", "--batch", "4", "--steps", "20", "--max-iterations", "3"])

    @Test("It prints the prime and then exactly --length characters, the same on every run")
    func printsPrimeAndLength() throws {
        let arguments = ["sample", "--checkpoint", Self.run.directory + "/best.safetensors", "--prime", "the", "--length", "200", "--seed", "1"]
        let first = try CLI.run(arguments)
        let second = try CLI.run(arguments)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.hasPrefix("the"))
        #expect(first.stdout.unicodeScalars.count == 203)
        #expect(first.stdout == second.stdout)
        #expect(first.stderr.isEmpty, "with --seed, nothing but the text is printed")
        let other = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--prime", "the", "--length", "200", "--seed", "2"])
        #expect(other.stdout != first.stdout)
    }

    @Test("A training directory stands for its best.safetensors")
    func directoryMeansBest() throws {
        let viaFile = try CLI.run([
            "sample", "--checkpoint", Self.run.directory + "/best.safetensors", "--length", "50", "--seed", "3", "--prime", "ё",
        ])
        let viaDirectory = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "50", "--seed", "3", "--prime", "ё"])
        #expect(viaFile.status == 0 && viaFile.stdout == viaDirectory.stdout)
    }

    @Test("Without --seed it picks one, prints it on stderr, and that seed reproduces the text")
    func randomSeedIsReported() throws {
        let result = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "80", "--prime", "the"])
        #expect(result.status == 0)
        let seed = try #require(result.stderr.wholeMatch(of: #/charrnn: seed (\d+)\n/#)?.output.1)
        let again = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "80", "--prime", "the", "--seed", String(seed)])
        #expect(again.stdout == result.stdout)
    }

    @Test("Multi-byte characters come out as valid UTF-8")
    func outputIsValidUTF8() throws {
        let result = try CLI.run([
            "sample", "--checkpoint", Self.run.directory, "--length", "400", "--prime", "«Ёлки", "--seed", "5", "--temperature", "1.5", "--no-top-k",
        ])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("«Ёлки"))
        #expect(result.stdout.unicodeScalars.count == 405)
        #expect(!result.stdout.contains("\u{FFFD}"), "no replacement characters from broken UTF-8")
    }

    @Test("--count prints that many samples, clearly separated")
    func countSeparatesSamples() throws {
        let result = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "60", "--prime", "the", "--seed", "8", "--count", "3"])
        #expect(result.status == 0, "\(result.stderr)")
        for index in 1...3 { #expect(result.stdout.contains("----- sample \(index) of 3 -----\nthe")) }
    }

    @Test("--top-k 1 gives the same text as --greedy")
    func topKOneIsGreedy() throws {
        let topOne = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "100", "--prime", "the", "--top-k", "1", "--seed", "1"])
        let greedy = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--length", "100", "--prime", "the", "--greedy", "--seed", "2"])
        #expect(topOne.status == 0 && topOne.stdout == greedy.stdout)
    }

    @Test("Unknown prime characters are named, or dropped with --drop-unknown")
    func unknownPrime() throws {
        let refused = try CLI.run(["sample", "--checkpoint", Self.run.directory, "--prime", "Zthe", "--seed", "1"])
        #expect(refused.status != 0 && refused.stdout.isEmpty)
        #expect(refused.stderr.contains("'Z' (U+005A)") && refused.stderr.contains("--drop-unknown"))
        let dropped = try CLI.run([
            "sample", "--checkpoint", Self.run.directory, "--prime", "Zthe", "--seed", "1", "--length", "10", "--drop-unknown",
        ])
        #expect(dropped.status == 0 && dropped.stdout.hasPrefix("the") && dropped.stdout.unicodeScalars.count == 13)
    }

    @Test("--stop ends each sample before the first stop string it generates, which is not printed")
    func stopStringsEndSamples() throws {
        let base = ["sample", "--checkpoint", Self.run.directory, "--length", "300", "--prime", "the", "--seed", "4"]
        let full = try CLI.run(base).stdout
        let generated = Array(full.unicodeScalars.dropFirst(3))
        let stop = String(String.UnicodeScalarView(generated[150..<153]))
        let first = try #require(String(String.UnicodeScalarView(generated)).range(of: stop))
        let expected = "the" + String(String(String.UnicodeScalarView(generated))[..<first.lowerBound])
        let stopped = try CLI.run(base + ["--stop", "☃", "--stop", stop])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(stopped.stdout == expected)
        #expect(expected.unicodeScalars.count <= 153)
        // With --count, each sample is cut at its own first stop string (sample 1 is the sample alone).
        let batch = try CLI.run(base + ["--stop", stop, "--count", "2"])
        #expect(batch.stdout.hasPrefix("----- sample 1 of 2 -----\n" + expected + "\n\n----- sample 2 of 2 -----\nthe"))
    }

    @Test("--logprobs prints each generated character with its log-probability and the likeliest, then the text and why it ended")
    func logprobsPrintJSONLines() throws {
        let base = ["sample", "--checkpoint", Self.run.directory, "--length", "40", "--prime", "the", "--seed", "6"]
        let text = try CLI.run(base).stdout
        let result = try CLI.run(base + ["--logprobs", "3"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try result.stdout.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(lines.count == 41)
        let characters = lines.dropLast().compactMap { $0["char"] as? String }.joined()
        #expect("the" + characters == text, "the characters are the text's")
        for line in lines.dropLast() {
            let logprob = try #require(line["logprob"] as? Double)
            let top = try #require(line["top_logprobs"] as? [[String: Any]])
            let values = top.compactMap { $0["logprob"] as? Double }
            #expect(top.count == 3 && values.count == 3 && logprob <= 0)
            #expect(values == values.sorted(by: >), "most likely first")
            #expect(logprob <= values[0], "no character is likelier than the likeliest")
        }
        let end = try #require(lines.last)
        #expect(end["text"] as? String == characters && end["finish_reason"] as? String == "length" && integer(end["length"] ?? 0) == 40)
        // With a stop string the last line says so, and the stop string's characters have no line.
        let stop = String(characters.unicodeScalars.dropFirst(20).prefix(2))
        let stopped = try CLI.run(base + ["--logprobs", "0", "--stop", stop]).stdout.split(separator: "\n")
        let stoppedEnd = try #require(try JSONSerialization.jsonObject(with: Data(stopped.last!.utf8)) as? [String: Any])
        #expect(stoppedEnd["finish_reason"] as? String == "stop")
        #expect(stopped.count - 1 == (stoppedEnd["text"] as? String)?.unicodeScalars.count)
    }

    @Test(
        "Bad options and bad checkpoints get one error line, a non-zero exit and no text",
        arguments: [
            (["--length=-1"], "--length must be 0 or more"),
            (["--temperature=-0.5"], "--temperature must be 0 or more"),
            (["--top-k", "0"], "--top-k must be between 1 and"),
            (["--top-k", "9999"], "--top-k must be between 1 and"),
            (["--top-p", "0"], "--top-p must be in (0, 1]"),
            (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
            (["--count", "0"], "--count must be at least 1"),
            (["--stop", "the", "--stop", ""], "--stop must be strings of at least one character (got \"\" as item 2)"),
            (["--logprobs", "9999"], "--logprobs must be between 0 and the vocabulary size"),
            (["--logprobs=-1"], "--logprobs must be between 0 and the vocabulary size"),
            (["--checkpoint", "/nonexistent/x.safetensors"], "no such file"),
            (["--checkpoint", "@corpus"], "header length"),
            (["--checkpoint", "@dir"], "holds no checkpoint of a training run"),
        ])
    func badInput(_ extra: [String], _ message: String) throws {
        let scratch = Self.run.scratch
        let emptyDirectory = scratch.path("empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: emptyDirectory, withIntermediateDirectories: true)
        var arguments = ["sample", "--seed", "1"]
        if !extra.contains("--checkpoint") { arguments += ["--checkpoint", Self.run.directory] }
        arguments += extra.map { $0 == "@corpus" ? scratch.path("corpus.txt") : $0 == "@dir" ? emptyDirectory : $0 }
        let result = try CLI.run(arguments)
        #expect(result.status != 0)
        #expect(result.stdout.isEmpty, "no partial output: \(result.stdout)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains(message), "\(result.stderr)")
    }
}
