import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

/// `charrnn sample`: write text with a trained model.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Write text with a trained model, streamed to standard output.",
        discussion: """
            Feeds the prime text through the model, then draws each next character and feeds it \
            back, as the original notebook did (which drew from the 5 most likely: --top-k 5 is \
            the default unless --top-p, --top-k or --no-top-k is given). The output starts with \
            the prime; a long prime can come from a file (--prime-file) or standard input \
            (--prime -). Only the text goes to standard output (with a final newline on a \
            terminal); without --seed a seed is chosen and printed on standard error, so any \
            sample can be reproduced. --stop ends a sample before a string it generates; \
            --logprobs K prints JSON lines instead of text: each generated character with its \
            log-probability and the K likeliest characters (of softmax(logits / temperature), \
            before any top-k or top-p cut), then a line with the text and why it ended.
            """)

    @Option(name: .long, help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var checkpoint: String

    @Option(name: .long, help: "Characters to generate after the prime (0 or more).")
    var length = TextGenerator.defaultLength

    @Option(name: .long, help: "Text to start from, or - to read it from standard input; the output begins with it. (default: \"The \")")
    var prime: String?

    @Option(name: .long, help: "Read the prime from this UTF-8 file.")
    var primeFile: String?

    @Option(name: .long, help: "Draw from the k most likely characters (1 to the vocabulary size). (default: 5, unless --top-p is given)")
    var topK: Int?

    @Flag(name: .long, help: "Draw from the full distribution (overrides the default --top-k 5).")
    var noTopK = false

    @Option(name: .long, help: "Divide the logits by this before the softmax (0 or more; 0 is greedy). (default: 1)")
    var temperature: Float?

    @Option(name: .long, help: "Nucleus sampling: keep the most likely characters up to this total probability, in (0, 1].")
    var topP: Float?

    @Flag(name: .long, help: "Always take the most likely character.")
    var greedy = false

    @Option(name: .long, help: "Seed for the draws (default: chosen at random and printed on stderr).")
    var seed: UInt64?

    @Option(name: .long, help: "Number of independent samples, generated together.")
    var count = 1

    @Flag(name: .long, help: "Leave out prime characters the model does not know, instead of failing (standard error says which).")
    var dropUnknown = false

    @Option(name: .long, help: "End a sample before this string when it generates it (not printed); repeat for several.")
    var stop: [String] = []

    @Option(
        name: .long,
        help: "Print JSON lines: each generated character with its log-probability and the K likeliest characters (0 to the vocabulary size).")
    var logprobs: Int?

    @Option(
        name: .long,
        help:
            "The products' arithmetic: fp32, or bf16 (bf16 weights and inputs, fp32 sums: faster on CPUs with AVX512_BF16; different text for a seed)."
    )
    var precision = "fp32"

    func run() throws {
        let output = StreamingOutput()
        do {
            guard length >= 0 else { throw UsageError("--length must be 0 or more (got \(length))") }
            guard count >= 1 else { throw UsageError("--count must be at least 1 (got \(count))") }
            try refuseContradictions()
            let precision = try Precision.fromFlag(precision)
            let generator = try TextGenerator(checkpoint: try loadCheckpoint(), precision: precision)
            var options = SamplingOptions()
            options.temperature = temperature ?? options.temperature
            // The notebook's top-5 is the default only when no other filter is asked for.
            options.topK = noTopK ? nil : SamplingOptions.topK(asked: topK, topP: topP, vocabularySize: generator.vocabulary.count)
            options.topP = topP
            options.greedy = greedy
            options.seed = seed ?? SamplingOptions.randomSeed()
            try options.validate(vocabularySize: generator.vocabulary.count)
            var completion = CompletionOptions()
            completion.stop = stop
            completion.logprobs = logprobs
            try completion.validate(vocabularySize: generator.vocabulary.count)
            let prime = try primeText(vocabulary: generator.vocabulary)
            if dropUnknown { reportDropped(prime, vocabulary: generator.vocabulary) }
            let primeTokens = try generator.encodePrime(prime, dropUnknown: dropUnknown)
            if seed == nil { FileHandle.standardError.write(Data("charrnn: seed \(options.seed)\n".utf8)) }
            let primeText = generator.vocabulary.decode(primeTokens)

            if count == 1 {
                // Check everything before the first byte goes out, then stream.
                let characters = try generator.completion(prime: primeText, length: length, options: options, completion: completion)
                var iterator = characters.makeIterator()
                if logprobs == nil {
                    output.write(primeText)
                    var last = primeText.unicodeScalars.last
                    while let character = iterator.next() {
                        output.write(character.scalar)
                        last = character.scalar
                    }
                    // A shell prompt should not start in the middle of the text's last line.
                    if output.interactive && last != "\n" { output.write("\n") }
                } else {
                    var text = String.UnicodeScalarView()
                    while let character = iterator.next() {
                        text.append(character.scalar)
                        if let logprob = character.logprob { output.write(JSONValue.describing(logprob).line + "\n") }
                    }
                    if iterator.error == nil {
                        output.write(Self.endLine(text: String(text), finishReason: iterator.finishReason ?? .length, sample: nil))
                    }
                }
                output.finish()
                if let error = iterator.error { throw error }
            } else {
                let completions = try generator.completions(
                    count: count, prime: primeText, length: length, options: options, completion: completion)
                for (index, sample) in completions.enumerated() {
                    if logprobs == nil {
                        if index > 0 { output.write("\n\n") }
                        output.write("----- sample \(index + 1) of \(count) -----\n")
                        output.write(primeText + sample.text)
                    } else {
                        for logprob in sample.logprobs ?? [] {
                            guard case .object(var fields) = JSONValue.describing(logprob) else { continue }
                            fields["sample"] = .int(index + 1)
                            output.write(JSONValue.object(fields).line + "\n")
                        }
                        output.write(Self.endLine(text: sample.text, finishReason: sample.finishReason, sample: index + 1))
                    }
                }
                if logprobs == nil { output.write("\n") }
                output.finish()
            }
        } catch {
            output.finish()
            throw fail(error)
        }
    }

    /// The JSON line that ends a sample under --logprobs: its generated text
    /// (no prime, no stop string), why it ended, and which sample it is.
    static func endLine(text: String, finishReason: FinishReason, sample: Int?) -> String {
        var fields: [String: JSONValue] = [
            "text": .string(text), "finish_reason": .string(finishReason.rawValue), "length": .int(text.unicodeScalars.count),
        ]
        if let sample { fields["sample"] = .int(sample) }
        return JSONValue.object(fields).line + "\n"
    }

    /// Refuses options that ask for two different things.
    private func refuseContradictions() throws {
        if prime != nil && primeFile != nil { throw UsageError("--prime and --prime-file cannot be combined; give one") }
        if noTopK && topK != nil { throw UsageError("--top-k and --no-top-k cannot be combined") }
        if greedy {
            let others = [(topK != nil, "--top-k"), (noTopK, "--no-top-k"), (topP != nil, "--top-p"), (temperature != nil, "--temperature")]
                .filter(\.0).map(\.1)
            if let other = others.first {
                throw UsageError("--greedy always takes the most likely character; it cannot be combined with \(other)")
            }
        }
    }

    /// The prime: --prime's text, standard input for --prime -, or --prime-file's
    /// contents. Text read from a file or standard input has its \r\n and \r
    /// read as \n when the model does not know \r (as training reads by default).
    private func primeText(vocabulary: Vocabulary) throws -> String {
        let data: Data
        let source: String
        if let primeFile {
            source = "--prime-file '\(primeFile)'"
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: primeFile, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw UsageError("\(source) is not a file")
            }
            guard let contents = FileManager.default.contents(atPath: primeFile) else { throw UsageError("cannot read \(source)") }
            data = contents
        } else if prime == "-" {
            source = "the prime on standard input"
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            return prime ?? TextGenerator.defaultPrime
        }
        guard var text = String(data: data, encoding: .utf8) else { throw UsageError("\(source) is not valid UTF-8") }
        if vocabulary.index(of: "\r") == nil {
            text = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        }
        return text
    }

    /// Says on standard error which prime characters --drop-unknown leaves out, and how often.
    private func reportDropped(_ prime: String, vocabulary: Vocabulary) {
        var counts: [Unicode.Scalar: Int] = [:]
        var order: [Unicode.Scalar] = []
        for scalar in prime.unicodeScalars where vocabulary.index(of: scalar) == nil {
            if counts[scalar] == nil { order.append(scalar) }
            counts[scalar, default: 0] += 1
        }
        guard !order.isEmpty else { return }
        let total = counts.values.reduce(0, +)
        let listed = order.prefix(20).map { "\(Vocabulary.describe($0)) ×\(counts[$0] ?? 0)" }.joined(separator: ", ")
        FileHandle.standardError.write(
            Data(
                ("charrnn: dropped \(total) prime character\(total == 1 ? "" : "s") the model does not know: "
                    + listed + (order.count > 20 ? ", and \(order.count - 20) more kinds" : "") + "\n").utf8))
    }

    private func loadCheckpoint() throws -> Checkpoint {
        try Checkpoint(contentsOf: CheckpointLocator.best(checkpoint), trainingState: false)
    }
}

/// Writes text to standard output as UTF-8: every character at once when
/// stdout is a terminal (so the text appears as it is made), in 16 KB chunks
/// otherwise.
final class StreamingOutput {
    private var buffer: [UInt8] = []
    /// Whether standard output is a terminal.
    let interactive = isatty(STDOUT_FILENO) != 0

    func write(_ scalar: Unicode.Scalar) {
        UTF8.encode(scalar) { buffer.append($0) }
        if interactive || buffer.count >= 16_384 { flush() }
    }

    func write(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if interactive || buffer.count >= 16_384 { flush() }
    }

    func finish() { flush() }

    private func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}
