import ArgumentParser
import CharRNN
import Foundation

/// `charrnn sample`: write text with a trained model.
struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Write text with a trained model, streamed to standard output.",
        discussion: """
            Feeds the prime text through the model, then draws each next character and feeds it \
            back, as the original notebook did (which drew from the 5 most likely: --top-k 5). The \
            output starts with the prime. Only the text goes to standard output; without --seed a \
            seed is chosen and printed on standard error, so any sample can be reproduced.
            """)

    @Option(name: .long, help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var checkpoint: String

    @Option(name: .long, help: "Characters to generate after the prime (0 or more).")
    var length = 2000

    @Option(name: .long, help: "Text to start from; the output begins with it.")
    var prime = "The "

    @Option(name: .long, help: "Draw from the k most likely characters (1 to the vocabulary size).")
    var topK: Int?

    @Flag(name: .long, help: "Draw from the full distribution (overrides the default --top-k 5).")
    var noTopK = false

    @Option(name: .long, help: "Divide the logits by this before the softmax (0 or more; 0 is greedy).")
    var temperature: Float = 1.0

    @Option(name: .long, help: "Nucleus sampling: keep the most likely characters up to this total probability, in (0, 1].")
    var topP: Float?

    @Flag(name: .long, help: "Always take the most likely character.")
    var greedy = false

    @Option(name: .long, help: "Seed for the draws (default: chosen at random and printed on stderr).")
    var seed: UInt64?

    @Option(name: .long, help: "Number of independent samples, generated together.")
    var count = 1

    @Flag(name: .long, help: "Leave out prime characters the model does not know, instead of failing.")
    var dropUnknown = false

    func run() throws {
        let output = StreamingOutput()
        do {
            guard length >= 0 else { throw UsageError("--length must be 0 or more (got \(length))") }
            guard count >= 1 else { throw UsageError("--count must be at least 1 (got \(count))") }
            let generator = try TextGenerator(checkpoint: try loadCheckpoint())
            var options = SamplingOptions()
            options.temperature = temperature
            options.topK = noTopK ? nil : (topK ?? min(5, generator.vocabulary.count))
            options.topP = topP
            options.greedy = greedy
            options.seed = seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
            try options.validate(vocabularySize: generator.vocabulary.count)
            let primeTokens = try generator.encodePrime(prime, dropUnknown: dropUnknown)
            if seed == nil { FileHandle.standardError.write(Data("charrnn: seed \(options.seed)\n".utf8)) }
            let primeText = generator.vocabulary.decode(primeTokens)

            if count == 1 {
                // Check everything before the first byte goes out, then stream.
                let characters = try generator.characters(prime: primeText, length: length, options: options)
                output.write(primeText)
                var iterator = characters.makeIterator()
                while let scalar = iterator.next() { output.write(scalar) }
                output.finish()
                if let error = iterator.error { throw error }
            } else {
                let samples = try generator.samples(count: count, prime: primeText, length: length, options: options)
                for (index, sample) in samples.enumerated() {
                    if index > 0 { output.write("\n\n") }
                    output.write("----- sample \(index + 1) of \(count) -----\n")
                    output.write(sample)
                }
                output.write("\n")
                output.finish()
            }
        } catch {
            output.finish()
            throw fail(error)
        }
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
    private let interactive = isatty(STDOUT_FILENO) != 0

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
