import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

/// `charrnn eval`: a model's cross-entropy on a text.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure a model's mean cross-entropy (nats) and bits per character on a text, without dropout.",
        discussion: """
            By default the whole file is one stream from a zero state, each character predicted from \
            all before it (this runs one character at a time per layer: about as fast as sampling). \
            With --split val, the validation split made with the checkpoint's batch size, steps and \
            validation fraction, exactly as training reports it.
            """)

    @Option(name: .long, help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var checkpoint: String

    @Option(name: .long, help: "The UTF-8 text to evaluate on.")
    var data: String

    @Option(name: .long, help: "all: the whole file as one stream; val: the checkpoint's validation split.")
    var split = "all"

    @Option(name: .long, help: "universal: read \\r\\n and \\r as \\n (as training does by default); preserve: keep them.")
    var lineEndings: String = Corpus.LineEndings.universal.rawValue

    @Option(
        name: .long,
        help:
            "fp32: the training pass's products; bf16: generation's step with bf16 products, one character at a time (with --split all), to see what bf16 sampling costs."
    )
    var precision = "fp32"

    @Flag(name: .long, help: "Print one JSON object instead of the sentence (see README, JSON output).")
    var json = false

    func run() throws {
        do {
            guard split == "all" || split == "val" else {
                throw UsageError("--split must be 'all' or 'val' (got '\(split)')")
            }
            guard let endings = Corpus.LineEndings(rawValue: lineEndings) else {
                throw UsageError("--line-endings must be 'universal' or 'preserve' (got '\(lineEndings)')")
            }
            let url = try CheckpointLocator.best(checkpoint)
            let loaded = try Checkpoint(contentsOf: url, trainingState: false)
            let corpus = try Corpus(contentsOf: URL(fileURLWithPath: data), lineEndings: endings)
            let tokens: [Int32]
            do { tokens = try loaded.vocabulary.encode(corpus.scalars) } catch {
                guard case .unknownScalars(let unknown) = error else { throw error }
                throw UsageError(
                    "the text has characters the model's vocabulary lacks: "
                        + unknown.prefix(20).map(Vocabulary.describe).joined(separator: ", "))
            }
            let model = try loaded.makeModel(purpose: .inference)
            let result: Evaluation.Result
            let description: String
            let precision = try Precision.fromFlag(self.precision)
            if precision == .bfloat16 {
                guard split == "all" else { throw UsageError("--precision bf16 evaluates the whole text as one stream: use it with --split all") }
                guard tokens.count >= 2 else { throw UsageError("the text needs at least 2 characters") }
                result = try Evaluation.stepped(of: model, tokens: tokens, precision: precision)
                description = "the whole text as one stream, stepped with bf16 products"
            } else if split == "all" {
                guard tokens.count >= 2 else { throw UsageError("the text needs at least 2 characters") }
                result = try Evaluation.wholeText(of: model, tokens: tokens)
                description = "the whole text as one stream"
            } else {
                guard let options = loaded.trainingOptions else {
                    throw UsageError("--split val needs the run's batch size, steps and validation fraction; this checkpoint holds weights only")
                }
                let batches: BatchedCorpus
                do {
                    batches = try BatchedCorpus(
                        tokens: tokens, batchSize: options.batchSize, steps: options.steps,
                        validationFraction: options.validationFraction)
                } catch {
                    // eval has no --batch or --steps: the split is the run's.
                    throw UsageError(error.description + " (--split val makes the run's split; use --split all for a shorter text)")
                }
                result = try Evaluation.validationSplit(of: model, batches: batches)
                description = "the validation split (\(batches.validationBatchCount) batches of \(options.batchSize) × \(options.steps))"
            }
            if json {
                JSONValue.object([
                    "checkpoint": .string(url.path), "data": .string(data), "split": .string(split),
                    "loss": .double(result.meanLoss), "bpc": .double(result.bitsPerCharacter),
                    "predictions": .int(result.predictions), "description": .string(description),
                ]).print()
                return
            }
            print(
                String(
                    format: "cross-entropy %.6f nats/char, %.6f bits/char over %@ predictions: %@",
                    result.meanLoss, result.bitsPerCharacter, "\(result.predictions)", description))
        } catch {
            throw fail(error)
        }
    }
}
