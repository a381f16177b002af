import ArgumentParser
import CharRNN
import Foundation

/// `charrnn train`: the notebook's training run on a text file.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model on a UTF-8 text file, writing checkpoints to a directory.",
        discussion: """
            Defaults reproduce the original Anna Karenina notebook: 2 LSTM layers of 512 units, \
            batch 100 × 100 steps, 20 epochs, Adam 0.001, dropout keep probability 0.5, gradient \
            clip 5. Every --save-every iterations and at the end it evaluates the validation split \
            and writes DIR/i{iteration}_l{hidden}_v{loss}.safetensors; DIR/best.safetensors is \
            always the lowest validation loss so far. Files are written atomically.
            """)

    @Option(name: .long, help: "The UTF-8 text file to train on.")
    var data: String

    @Option(name: .long, help: "Directory for checkpoints (created if missing).")
    var out: String

    @Option(name: .long, help: "Units per LSTM layer (1-16384).")
    var hidden = 512

    @Option(name: .long, help: "Stacked LSTM layers (1-64).")
    var layers = 2

    @Option(name: .long, help: "Streams per batch (B).")
    var batch = 100

    @Option(name: .long, help: "Characters per stream per batch (T), the back-propagation length.")
    var steps = 100

    @Option(name: .long, help: "Passes over the training split.")
    var epochs = 20

    @Option(name: .long, help: "Adam learning rate (> 0).")
    var learningRate: Float = 0.001

    @Option(name: .long, help: "Dropout keep probability on each layer's output, in (0, 1].")
    var keepProb: Float = 0.5

    @Option(name: .long, help: "Clip gradients to this global norm (> 0).")
    var gradClip: Float = 5

    @Option(name: .long, help: "Share of the text held out for validation, in (0, 1).")
    var valFrac = 0.1

    @Option(name: .long, help: "Validate and write a checkpoint every N iterations (and at the end).")
    var saveEvery = 200

    @Option(name: .long, help: "Seed for the initial weights and dropout masks.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Stop after N iterations in all (default: all epochs).")
    var maxIterations: Int?

    @Option(name: .long, help: "universal: read \\r\\n and \\r as \\n, as Python's text mode (the notebook); preserve: keep them.")
    var lineEndings: String = Corpus.LineEndings.universal.rawValue

    func run() throws {
        guard let endings = Corpus.LineEndings(rawValue: lineEndings) else {
            throw fail("--line-endings must be 'universal' or 'preserve' (got '\(lineEndings)')")
        }
        var options = TrainingOptions()
        options.hiddenSize = hidden
        options.layerCount = layers
        options.batchSize = batch
        options.steps = steps
        options.epochs = epochs
        options.learningRate = learningRate
        options.keepProbability = keepProb
        options.gradientClip = gradClip
        options.validationFraction = valFrac
        options.saveEvery = saveEvery
        options.seed = seed
        options.maxIterations = maxIterations

        let trainer: Trainer
        do {
            try options.validate()
            let corpus = try Corpus(contentsOf: URL(fileURLWithPath: data), lineEndings: endings)
            trainer = try Trainer(corpus: corpus, options: options, outputDirectory: URL(fileURLWithPath: out))
        } catch let error as CustomStringConvertible & Error {
            throw fail(error.description)
        }
        let log = TrainingLog(dataPath: data)
        do {
            try trainer.run(onEvent: log.handle)
        } catch {
            throw fail(error.description)
        }
    }
}
