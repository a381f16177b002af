import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

/// `charrnn trace`: what a model expected at each character of a text, and
/// the hidden units it moved.
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Feed a text through a model and record, for every character, its probability, surprise and the chosen hidden units.",
        discussion: """
            For every character: the probability the model gave it from the characters before \
            (at temperature 1), its surprise (-log p, in nats and bits), the entropy of that \
            distribution, the --top likeliest characters, and the values of the chosen units \
            of every layer after reading it (h; for the LSTM also the cell state c). The first \
            character has no probability: nothing comes before it. The mean surprise is \
            `charrnn eval`'s loss on the same text. JSON lines on standard output (one object \
            per character), or with --out a safetensors file of arrays ([T, L, U] activations) \
            for numpy and PyTorch. See the README, charrnn trace.
            """)

    @Option(name: .long, help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var checkpoint: String

    @Option(name: .long, help: "The UTF-8 file to trace.")
    var text: String?

    @Option(name: .long, help: "The text to trace, given here.")
    var prime: String?

    @Argument(help: "- to read the text from standard input.")
    var input: String?

    @Option(name: .long, help: "Units of every layer to record: indices and ranges, e.g. 3,17,200-210.")
    var units: String?

    @Flag(name: .long, help: "Record every unit of every layer.")
    var allUnits = false

    @Option(name: .long, help: "The K likeliest characters to record at each position (0 for none).")
    var top = 5

    @Option(name: .long, help: "Write a safetensors file here instead of JSON lines (it must not exist).")
    var out: String?

    @Option(name: .long, help: "universal: read \\r\\n and \\r as \\n (as training does by default); preserve: keep them.")
    var lineEndings: String = Corpus.LineEndings.universal.rawValue

    @Option(name: .long, help: "fp32, or bf16: generation's bf16 products (as `sample --precision bf16`).")
    var precision = "fp32"

    func run() throws {
        do {
            guard let endings = Corpus.LineEndings(rawValue: lineEndings) else {
                throw UsageError("--line-endings must be 'universal' or 'preserve' (got '\(lineEndings)')")
            }
            if units != nil && allUnits { throw UsageError("--units and --all-units cannot be combined; give one") }
            let unitSelection: TraceOptions.Units = allUnits ? .all : try units.map { .listed(try Self.parseUnits($0)) } ?? .none
            let corpus = try readText(endings)
            let url = try CheckpointLocator.best(checkpoint)
            let loaded = try Checkpoint(contentsOf: url, trainingState: false)
            let generator = try TextGenerator(checkpoint: loaded, precision: try Precision.fromFlag(precision))
            let tokens: [Int32]
            do { tokens = try loaded.vocabulary.encode(corpus.scalars) } catch {
                guard case .unknownScalars(let unknown) = error else { throw error }
                throw TraceError.unknownCharacters(unknown)
            }
            var trace = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: unitSelection, top: top))
            let progress = Progress(total: tokens.count)
            if let out {
                try TraceFile.write(
                    &trace, to: URL(fileURLWithPath: out),
                    metadata: ["checkpoint": url.path, "cell": loaded.configuration.cell.rawValue, "precision": generator.precision.rawValue],
                    progress: progress.update)
                progress.finish()
                print(Self.summary(trace) + "; wrote \(out)")
                return
            }
            let output = StreamingOutput()
            while let character = try trace.next() {
                output.write(Self.jsonLine(character))
                progress.update(trace.position)
            }
            output.finish()
            progress.finish()
            FileHandle.standardError.write(Data(("charrnn: " + Self.summary(trace) + "\n").utf8))
        } catch {
            throw fail(error)
        }
    }

    /// The text from --text, --prime or standard input (exactly one).
    private func readText(_ endings: Corpus.LineEndings) throws -> Corpus {
        if let input, input != "-" { throw UsageError("the only argument trace takes is - (standard input); got '\(input)'") }
        let given = [text != nil, prime != nil, input != nil].filter { $0 }.count
        guard given == 1 else {
            throw UsageError(
                given == 0
                    ? "give the text to trace: --text FILE, --prime TEXT, or - for standard input" : "give one of --text, --prime and -, not several")
        }
        if let text { return try Corpus(contentsOf: URL(fileURLWithPath: text), lineEndings: endings) }
        if let prime { return Corpus(text: prime, lineEndings: endings) }
        let data = FileHandle.standardInput.readDataToEndOfFile()
        guard let decoded = String(data: data, encoding: .utf8) else { throw UsageError("the text on standard input is not valid UTF-8") }
        return Corpus(text: decoded, lineEndings: endings)
    }

    /// "3,17,200-210" → [3, 17, 200, …, 210].
    static func parseUnits(_ list: String) throws -> [Int] {
        var units: [Int] = []
        for part in list.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let first = Int(bounds[0]), let last = Int(bounds[bounds.count - 1]), first >= 0, first <= last
            else {
                throw UsageError("--units takes unit indices and ranges such as 3,17,200-210 (got '\(part)' in '\(list)')")
            }
            units += Array(first...last)
        }
        return units
    }

    /// One character as a JSON object on one line.
    static func jsonLine(_ character: TracedCharacter) -> String {
        var line = "{\"position\":\(character.position),\"character\":"
        JSONString.append(String(character.character), to: &line)
        line += ",\"probability\":" + number(character.probability)
        line += ",\"surprise\":" + number(character.surprise)
        line += ",\"bits\":" + number(character.surpriseBits)
        line += ",\"entropy\":" + number(character.entropy)
        line += ",\"top\":["
        line += character.top.map { alternative in
            var entry = "{\"character\":"
            JSONString.append(String(alternative.character), to: &entry)
            return entry + ",\"probability\":" + number(alternative.probability) + "}"
        }.joined(separator: ",")
        line += "]"
        if !character.hidden.isEmpty && !character.hidden[0].isEmpty { line += ",\"h\":" + layers(character.hidden) }
        if !character.cell.isEmpty { line += ",\"c\":" + layers(character.cell) }
        return line + "}\n"
    }

    private static func number(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "null" }
        return "\(value)"
    }

    private static func layers(_ values: [[Float]]) -> String {
        "[" + values.map { layer in "[" + layer.map { $0.isFinite ? "\($0)" : "null" }.joined(separator: ",") + "]" }.joined(separator: ",") + "]"
    }

    static func summary(_ trace: TextTrace) -> String {
        let mean = trace.meanSurprise
        guard trace.predictions > 0 else { return "traced \(trace.position) character (nothing to predict)" }
        return String(
            format: "traced %d characters: mean surprise %.6f nats/char, %.6f bits/char over %d predictions",
            trace.position, mean, mean / log(2), trace.predictions)
    }

    /// A line on standard error, when it is a terminal, saying how far the
    /// trace has come (at most four times a second).
    final class Progress {
        let total: Int
        let shown = isatty(STDERR_FILENO) != 0
        private var last = ContinuousClock.now
        private var drawn = false

        init(total: Int) { self.total = total }

        func update(_ done: Int) {
            guard shown, ContinuousClock.now - last > .milliseconds(250) else { return }
            last = ContinuousClock.now
            drawn = true
            FileHandle.standardError.write(Data("\rtrace: \(done) of \(total) characters (\(100 * done / max(total, 1)) %)".utf8))
        }

        func finish() {
            if drawn { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
    }
}
