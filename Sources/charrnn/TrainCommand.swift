import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

/// `charrnn train`: the notebook's training run on a text file.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model on a UTF-8 text file, writing checkpoints to a directory.",
        discussion: """
            Defaults reproduce the original Anna Karenina notebook: 2 LSTM layers of 512 units \
            (--cell \(Cell.allCases.dropFirst().map(\.rawValue).joined(separator: " or ")) for PyTorch's \
            \(Cell.allCases.dropFirst().map(\.pytorchModule).joined(separator: " or ")) instead), \
            batch 100 × 100 steps, 20 epochs, Adam 0.001, dropout keep probability 0.5, gradient \
            clip 5; --preset fast trains the best model found for about 15 minutes on two cores \
            instead. Every --save-every iterations and at the end it evaluates the validation split \
            and writes DIR/i{iteration}_l{hidden}_v{loss}.safetensors; DIR/best.safetensors is \
            always the lowest validation loss so far. Files are written atomically. A directory \
            holds one run: a new run into a directory with another run's checkpoints is refused, \
            and one trainer at a time may write there. Ctrl-C (or SIGTERM) finishes the current \
            iteration, writes a checkpoint there and exits 130 (143); a second Ctrl-C stops at once.
            """)

    @Option(name: .long, help: "The UTF-8 text file to train on.")
    var data: String

    @Option(name: .long, help: "Directory for checkpoints (created if missing). With --resume, defaults to the checkpoint's directory.")
    var out: String?

    @Option(
        name: .long,
        help:
            "Start from a named set of settings, which the other options override: notebook (the defaults) or fast (the lowest validation loss found for about 15 minutes on two cores: 2 × 512 GRU, batch 50 × 100, keep 1, Adam 0.004 cosine with warm-up 100 over 1,500 iterations, validation every 250; see docs/PERFORMANCE.md). (default: notebook)"
    )
    var preset: String?

    @Option(
        name: .long,
        help:
            "The recurrent cell of every layer: \(Cell.names(or: "or")), as PyTorch's \(Cell.allCases.map(\.pytorchModule).joined(separator: ", ")). (default: \(Cell.lstm))"
    )
    var cell: String?

    @Option(name: .long, help: "Units per recurrent layer, 1-\(ModelConfiguration.maximumHiddenSize). (default: 512)")
    var hidden: Int?

    @Option(name: .long, help: "Stacked recurrent layers, 1-\(ModelConfiguration.maximumLayerCount). (default: 2)")
    var layers: Int?

    @Option(name: .long, help: "Streams per batch (B). (default: 100)")
    var batch: Int?

    @Option(name: .long, help: "Characters per stream per batch (T), the back-propagation length. (default: 100)")
    var steps: Int?

    @Option(name: .long, help: "Passes over the training split. (default: 20)")
    var epochs: Int?

    @Option(name: .long, help: "Adam learning rate, > 0. (default: 0.001)")
    var learningRate: Float?

    @Option(
        name: .long,
        help:
            "How the learning rate changes: constant, step (× --lr-decay each epoch after --lr-decay-after) or cosine (down to --lr-min at the end of the run). (default: constant; step if --lr-decay or --lr-decay-after is given)"
    )
    var lrSchedule: String?

    @Option(name: .long, help: "Raise the learning rate linearly over the first N iterations. (default: 0)")
    var warmup: Int?

    @Option(name: .long, help: "Step schedule: multiply the rate by X at the end of each epoch from --lr-decay-after on, in (0, 1]. (default: 0.97)")
    var lrDecay: Float?

    @Option(name: .long, help: "Step schedule: the epoch after which the rate decays. (default: 10)")
    var lrDecayAfter: Int?

    @Option(name: .long, help: "Cosine schedule: the rate at the end of the run, below --learning-rate. (default: 0)")
    var lrMin: Float?

    @Option(
        name: .long, help: "Cosine schedule: the iteration the curve ends at, counted from the start of the run. (default: the run's last iteration)")
    var lrScheduleIterations: Int?

    @Option(
        name: .long, help: "Stop after K validations in a row without a new best validation loss (best.safetensors keeps the best). (default: never)")
    var patience: Int?

    @Option(name: .long, help: "Dropout keep probability on each layer's output, in (0, 1]. (default: 0.5)")
    var keepProb: Float?

    @Option(name: .long, help: "Clip gradients to this global norm, > 0. (default: 5)")
    var gradClip: Float?

    @Option(
        name: .long,
        help:
            "The training products' arithmetic: fp32, or bf16 (bf16 inputs, fp32 sums; weights, gradients, Adam and validation stay fp32; needs AVX512_BF16). (default: fp32)"
    )
    var precision: String?

    @Option(name: .long, help: "Share of the text held out for validation, in (0, 1). (default: 0.1)")
    var valFrac: Double?

    @Option(name: .long, help: "Validate and write a checkpoint every N iterations, and at the end. (default: 200)")
    var saveEvery: Int?

    @Option(name: .long, help: "Seed for the initial weights and dropout masks. (default: 0)")
    var seed: UInt64?

    @Option(name: .long, help: "Stop after N iterations in all, counted from the start of the run (default: all epochs).")
    var maxIterations: Int?

    @Option(
        name: .long,
        help: "Keep only the N periodic checkpoints with the lowest validation loss, and the latest (default: keep all; a resumed run keeps its own)."
    )
    var keep: Int?

    @Option(
        name: .long,
        help:
            "Continue the run that wrote this checkpoint (a file, or a run directory: its latest checkpoint), exactly where it stopped, with its settings (--max-iterations and --keep included, unless given)."
    )
    var resume: String?

    @Option(name: .long, help: "Start a new run from this checkpoint's weights (only); the corpus must have its vocabulary.")
    var initFrom: String?

    @Option(
        name: .long,
        help: "When the output is not a terminal, print every N-th iteration's line (validations always). (default: 1, the notebook's log)")
    var printEvery: Int?

    @Flag(name: .long, help: "Print nothing but errors.")
    var quiet = false

    @Flag(name: .long, help: "Print one JSON object per event on standard output instead of the log (see README, JSON output).")
    var json = false

    @Option(name: .long, help: "universal: read \\r\\n and \\r as \\n, as Python's text mode (the notebook); preserve: keep them.")
    var lineEndings: String = Corpus.LineEndings.universal.rawValue

    func run() throws {
        let launch: Launch
        do {
            launch = try Launch.start()
        } catch {
            // Every process of the launch meets this alike: rank 0 says it.
            guard Launch.announcedRank == 0 else { throw ExitCode.failure }
            throw fail(error)
        }
        defer { launch.finish() }
        let trainer: Trainer
        let resumedFrom: URL?
        let mode: TrainingLog.Mode
        var reachedTrainer = false
        do {
            mode = try logMode(processes: launch.group.size)
            (trainer, resumedFrom) = try makeTrainer(launch.group, reachedTrainer: &reachedTrainer)
        } catch {
            if !reachedTrainer { launch.agreeOnFailedSetUp() }
            guard launch.prints(error) else { throw ExitCode.failure }
            if json { TrainingLog.printErrorEvent(launch.message(ErrorMessage.line(error))) }
            throw fail(launch.message(ErrorMessage.line(error)))
        }
        let interrupts = InterruptHandler(announces: launch.rank == 0)
        let log = TrainingLog(mode: launch.rank == 0 ? mode : .quiet, dataPath: data, resumedFrom: resumedFrom)
        let summary: TrainingSummary
        do {
            summary = try trainer.run(stop: interrupts.stop, onEvent: log.handle)
        } catch {
            log.flush()
            guard launch.prints(error) else { throw ExitCode.failure }
            let message = launch.message(ErrorMessage.line(error) + whatIsLeft(trainer, launch))
            log.failed(message)
            throw fail(message)
        }
        if summary.interrupted {
            guard launch.rank == 0 else { throw ExitCode(interrupts.exitStatus) }
            var line = "Interrupted at iteration \(summary.iterations)"
            if let directory = trainer.outputDirectory {
                line += "; continue with: \(resumeCommand(directory, launch))"
            }
            FileHandle.standardError.write(Data("\(line)\n".utf8))
            throw ExitCode(interrupts.exitStatus)
        }
    }

    /// How the log is printed: --quiet, --json, or the notebook's lines
    /// (thinned by --print-every) when standard output is not a terminal,
    /// and a status line when it is.
    private func logMode(processes: Int) throws -> TrainingLog.Mode {
        if let printEvery, printEvery < 1 { throw UsageError("--print-every must be at least 1 (got \(printEvery))") }
        if quiet && json { throw UsageError("--quiet and --json cannot be combined (--json prints events, --quiet nothing)") }
        if quiet {
            if printEvery != nil { throw UsageError("--print-every has no effect with --quiet") }
            return .quiet
        }
        if json { return .json(printEvery: printEvery ?? 1) }
        // Under mpirun, standard output is a pseudo-terminal that mpirun
        // relays wherever its own output goes (often a file), so the
        // status line is kept for one process.
        if isatty(STDOUT_FILENO) != 0 && printEvery == nil && processes == 1 { return .terminal }
        return .notebook(printEvery: printEvery ?? 1)
    }

    /// For a run that failed part-way: whether its checkpoints are there to
    /// continue from, and how.
    private func whatIsLeft(_ trainer: Trainer, _ launch: Launch) -> String {
        guard let directory = trainer.outputDirectory else { return "" }
        guard (try? RunDirectory.latest(in: directory)) != nil else { return "; no checkpoint of this run was written" }
        return "; the checkpoints already written are intact; continue with: \(resumeCommand(directory, launch))"
    }

    /// The command that continues a run in `directory`.
    private func resumeCommand(_ directory: URL, _ launch: Launch) -> String {
        func quoted(_ text: String) -> String {
            text.allSatisfy { $0.isLetter || $0.isNumber || "/._-+=:,".contains($0) }
                ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }
        var command =
            (launch.group.size > 1 ? "mpirun -np \(launch.group.size) " : "")
            + "charrnn train --resume \(quoted(directory.path)) --data \(quoted(data))"
        if lineEndings != Corpus.LineEndings.universal.rawValue { command += " --line-endings \(lineEndings)" }
        return command
    }

    /// Checks every input and builds the trainer, which opens (and locks)
    /// the run directory before the corpus is batched; returns it with the
    /// checkpoint a resumed run continues from.
    private func makeTrainer(_ group: any ProcessGroup, reachedTrainer: inout Bool) throws -> (Trainer, URL?) {
        guard let endings = Corpus.LineEndings(rawValue: lineEndings) else {
            throw UsageError("--line-endings must be 'universal' or 'preserve' (got '\(lineEndings)')")
        }
        if resume != nil && initFrom != nil {
            throw UsageError("--resume and --init-from cannot be combined")
        }
        if resume != nil, let preset {
            throw UsageError("--preset \(preset) sets a new run's settings; a resumed run keeps its own")
        }
        let chosenPreset = try preset.map { try named(TrainingPreset.self, $0, flag: "--preset") }
        let chosenCell = try cell.map { try named(Cell.self, $0, flag: "--cell") }
        let chosenPrecision = try precision.map { try Precision.fromFlag($0) }

        if let resume {
            let url = try CheckpointLocator.latest(resume)
            let checkpoint = try Checkpoint(contentsOf: url)
            guard let saved = checkpoint.trainingOptions else {
                throw TrainingError.incompatible(.weightsOnly, resuming: true)
            }
            try refuseChangedSettings(saved, cell: chosenCell)
            try same(chosenPrecision, saved.precision, "--precision")
            if saved.precision == .bfloat16 && chosenPrecision == nil {
                do { _ = try Precision.fromFlag(saved.precision.rawValue) } catch {
                    throw UsageError("the resumed run trains with --precision bf16: " + error.description.dropFirst("--precision bf16 ".count))
                }
            }
            let corpus = try trainingText(endings)
            let output = out.map { URL(fileURLWithPath: $0) } ?? url.deletingLastPathComponent()
            reachedTrainer = true
            return (
                try Trainer(
                    resuming: checkpoint, corpus: corpus, outputDirectory: output,
                    maxIterations: maxIterations, keepBest: keep, patience: patience, group: group), url
            )
        }

        guard let out else { throw UsageError("--out is required: the directory for checkpoints") }
        var options = chosenPreset?.options ?? TrainingOptions()
        let initial = try initFrom.map { try Checkpoint(contentsOf: CheckpointLocator.best($0), trainingState: false) }
        if let initial {
            options.cell = initial.configuration.cell
            options.hiddenSize = initial.configuration.hiddenSize
            options.layerCount = initial.configuration.layerCount
        }
        options.cell = chosenCell ?? options.cell
        options.hiddenSize = hidden ?? options.hiddenSize
        options.layerCount = layers ?? options.layerCount
        options.batchSize = batch ?? options.batchSize
        options.steps = steps ?? options.steps
        options.epochs = epochs ?? options.epochs
        options.learningRate = learningRate ?? options.learningRate
        try applySchedule(to: &options)
        options.patience = patience
        options.keepProbability = keepProb ?? options.keepProbability
        options.gradientClip = gradClip ?? options.gradientClip
        options.precision = chosenPrecision ?? options.precision
        options.validationFraction = valFrac ?? options.validationFraction
        options.saveEvery = saveEvery ?? options.saveEvery
        options.seed = seed ?? options.seed
        options.maxIterations = maxIterations ?? options.maxIterations
        options.keepBest = keep
        try options.validate()
        let corpus = try trainingText(endings)
        reachedTrainer = true
        return (
            try Trainer(
                corpus: corpus, options: options, outputDirectory: URL(fileURLWithPath: out), initialWeights: initial,
                group: group), nil
        )
    }

    /// The corpus, streamed from its file in two passes so that only the
    /// tokens this process trains on are held; a pipe can be read only once,
    /// so it is read into memory instead.
    private func trainingText(_ endings: Corpus.LineEndings) throws -> any TrainingText {
        var info = stat()
        if stat(data, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO {
            return try Corpus(contentsOf: URL(fileURLWithPath: data), lineEndings: endings)
        }
        return CorpusFile(url: URL(fileURLWithPath: data), lineEndings: endings)
    }

    /// The schedule named by --lr-schedule, or implied by the step schedule's options.
    private func chosenSchedule() throws -> LearningRateSchedule? {
        guard let lrSchedule else { return lrDecay != nil || lrDecayAfter != nil ? .step : nil }
        return try named(LearningRateSchedule.self, lrSchedule, flag: "--lr-schedule")
    }

    /// The case of `type` named `name`, or a usage error listing the names `flag` takes.
    private func named<Choice: RawRepresentable & CaseIterable>(_ type: Choice.Type, _ name: String, flag: String) throws -> Choice
    where Choice.RawValue == String {
        guard let choice = Choice(rawValue: name) else {
            throw UsageError("\(flag) must be one of " + Choice.allCases.map(\.rawValue).joined(separator: ", ") + " (got '\(name)')")
        }
        return choice
    }

    /// Sets the schedule's options, refusing those that belong to another schedule.
    private func applySchedule(to options: inout TrainingOptions) throws {
        let schedule = try chosenSchedule() ?? options.learningRateSchedule
        if schedule != .step, lrDecay != nil || lrDecayAfter != nil {
            throw UsageError("--lr-decay and --lr-decay-after belong to --lr-schedule step (got --lr-schedule \(schedule))")
        }
        if schedule != .cosine, lrMin != nil || lrScheduleIterations != nil {
            throw UsageError("--lr-min and --lr-schedule-iterations belong to --lr-schedule cosine (got --lr-schedule \(schedule))")
        }
        options.learningRateSchedule = schedule
        options.warmupIterations = warmup ?? options.warmupIterations
        options.learningRateDecay = lrDecay ?? options.learningRateDecay
        options.learningRateDecayAfter = lrDecayAfter ?? options.learningRateDecayAfter
        options.minimumLearningRate = lrMin ?? options.minimumLearningRate
        options.scheduleIterations = lrScheduleIterations
    }

    /// A resumed run keeps its settings; naming a different one is an error.
    private func same<T: Equatable>(_ given: T?, _ kept: T, _ flag: String) throws {
        if let given, given != kept {
            throw UsageError(
                "\(flag) \(given) differs from the resumed run's \(kept); a resumed run keeps its settings (use --init-from to start a new run)")
        }
    }

    /// Refuses every setting given on the command line that differs from the resumed run's.
    private func refuseChangedSettings(_ saved: TrainingOptions, cell: Cell?) throws {
        try same(cell, saved.cell, "--cell")
        try same(hidden, saved.hiddenSize, "--hidden")
        try same(layers, saved.layerCount, "--layers")
        try same(batch, saved.batchSize, "--batch")
        try same(steps, saved.steps, "--steps")
        try same(epochs, saved.epochs, "--epochs")
        try same(learningRate, saved.learningRate, "--learning-rate")
        try same(try chosenSchedule(), saved.learningRateSchedule, "--lr-schedule")
        try same(warmup, saved.warmupIterations, "--warmup")
        try same(lrDecay, saved.learningRateDecay, "--lr-decay")
        try same(lrDecayAfter, saved.learningRateDecayAfter, "--lr-decay-after")
        try same(lrMin, saved.minimumLearningRate, "--lr-min")
        try same(lrScheduleIterations, saved.scheduleIterations ?? 0, "--lr-schedule-iterations")
        try same(keepProb, saved.keepProbability, "--keep-prob")
        try same(gradClip, saved.gradientClip, "--grad-clip")
        try same(valFrac, saved.validationFraction, "--val-frac")
        try same(saveEvery, saved.saveEvery, "--save-every")
        try same(seed, saved.seed, "--seed")
    }
}
