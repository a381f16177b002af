/// Why training could not start or go on. Each case carries the values a
/// caller needs to explain it or act on it; the descriptions name options by
/// their `TrainingOptions` property names.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    /// An option is out of range: which one, the value given, and what it must be.
    case invalidOption(TrainingOptions.Option, value: String, requirement: String)
    /// A batch has more characters (batch size × steps) than the core accepts.
    case batchTooLarge(batchSize: Int, steps: Int, limit: Int)
    /// The run directory cannot be used.
    case runDirectory(RunDirectoryError)
    /// The corpus cannot be split into batches.
    case batching(BatchingError)
    /// A model operation failed.
    case model(ModelError)
    /// A value went NaN or infinite at this iteration; nothing non-finite was saved.
    case diverged(iteration: Int, ModelError.NonFiniteValue)
    /// A checkpoint could not be read.
    case checkpoint(CheckpointError)
    /// A checkpoint cannot continue this run (`resuming`) or seed it.
    case incompatible(CheckpointMismatch, resuming: Bool)
    /// The run has already made all the iterations asked for.
    case alreadyFinished(iteration: Int, totalIterations: Int)
    /// The run needs more memory than the process may take.
    case insufficientMemory(MemoryShortfall)
    /// The run stopped at `iteration` after `validations` validations in a
    /// row without a new best, and its `patience` allows no more.
    case patienceExhausted(iteration: Int, validations: Int, patience: Int)
    /// The corpus could not be read.
    case corpus(CorpusError)
    /// The batch's streams cannot be shared out equally among the processes.
    case batchNotShared(batchSize: Int, processes: Int)
    /// A collective operation of the process group failed.
    case processGroup(ProcessGroupError)
    /// `count` other processes of the group failed (each reports its own
    /// error); this one stopped with them.
    case otherProcessFailed(count: Int)
    /// The weights of the processes `ranks` differ from process 0's at
    /// `iteration` (they must stay identical).
    case processesDisagree(iteration: Int, ranks: [Int])
    /// The processes `ranks` read another text than process 0 (each host
    /// needs the same corpus file).
    case processesDisagreeOnText(ranks: [Int])

    public var description: String {
        switch self {
        case .invalidOption(let option, let value, let requirement):
            return "\(option.rawValue) must be \(requirement) (got \(value))"
        case .batchTooLarge(let batchSize, let steps, let limit):
            return "a batch of \(batchSize) streams × \(steps) steps has more than \(limit) characters"
        case .runDirectory(let error): return error.description
        case .batching(let error): return error.description
        case .model(let error): return error.description
        case .diverged(let iteration, let value):
            return "training diverged at iteration \(iteration): \(ModelError.nonFinite(value))"
        case .checkpoint(let error): return error.description
        case .incompatible(let mismatch, let resuming):
            return (resuming ? "cannot resume from the checkpoint: " : "cannot start from the checkpoint's weights: ")
                + mismatch.description
        case .alreadyFinished(let iteration, let total):
            return "the run is already at iteration \(iteration) of \(total); iterations count from the start of the run"
        case .insufficientMemory(let shortfall): return "training \(shortfall)"
        case .patienceExhausted(let iteration, let validations, let patience):
            return "the run stopped at iteration \(iteration) after \(validations) validations without a new best "
                + "(patience \(patience)); a larger patience lets it go on"
        case .corpus(let error): return error.description
        case .batchNotShared(let batchSize, let processes):
            return "a batch of \(batchSize) streams cannot be shared equally among \(processes) processes; "
                + "use a batch size that is a multiple of the process count"
        case .processGroup(let error): return error.description
        case .otherProcessFailed(let count):
            return count == 1 ? "another process of the run failed" : "\(count) other processes of the run failed"
        case .processesDisagreeOnText(let ranks):
            return "the processes read different texts (ranks \(ranks.map(String.init).joined(separator: ", ")) against rank 0): "
                + "every host needs the same corpus file"
        case .processesDisagree(let iteration, let ranks):
            return "the processes' weights differ at iteration \(iteration) (ranks \(ranks.map(String.init).joined(separator: ", ")) "
                + "against rank 0): every process must run the same build with the same thread count"
        }
    }
}

/// Why a checkpoint does not fit a corpus or a run.
public enum CheckpointMismatch: Error, Equatable, Sendable, CustomStringConvertible {
    /// It holds weights only, no training state.
    case weightsOnly
    /// The corpus's vocabulary is not the checkpoint's.
    case vocabulary(corpus: Vocabulary, checkpoint: Vocabulary)
    /// The run trained on another text.
    case otherText(runCharacters: Int, runBatches: Int, corpusCharacters: Int, corpusBatches: Int)
    /// The checkpoint's model has another shape than the one asked for.
    case shape(checkpoint: ModelConfiguration, requested: ModelConfiguration)
    /// Its carried state is for `streams` streams; the run's batch has `batchSize`.
    case carriedState(streams: Int, batchSize: Int)

    public var description: String {
        switch self {
        case .weightsOnly:
            return "it holds weights only, no training state"
        case .vocabulary(let corpus, let checkpoint):
            return Self.describeDifference(corpus: corpus, checkpoint: checkpoint)
        case .otherText(let runCharacters, let runBatches, let corpusCharacters, let corpusBatches):
            return "the run trained on another text (\(runCharacters) characters, \(runBatches) training batches per epoch; "
                + "this one has \(corpusCharacters) characters, \(corpusBatches) batches, or the same length with other content)"
        case .carriedState(let streams, let batchSize):
            return "its carried state is for \(streams) streams, but the run's batch has \(batchSize)"
        case .shape(let checkpoint, let requested):
            return "it is \(checkpoint.layerCount) \(checkpoint.cell.displayName) layers of \(checkpoint.hiddenSize); "
                + "the options ask for \(requested.layerCount) \(requested.cell.displayName) layers of \(requested.hiddenSize)"
        }
    }

    /// Says which characters only one side has, or that the order differs.
    static func describeDifference(corpus: Vocabulary, checkpoint: Vocabulary) -> String {
        let mine = Set(corpus.scalars)
        let theirs = Set(checkpoint.scalars)
        func list(_ scalars: [Unicode.Scalar]) -> String {
            scalars.prefix(10).map(Vocabulary.describe).joined(separator: ", ") + (scalars.count > 10 ? ", …" : "")
        }
        let onlyCorpus = corpus.scalars.filter { !theirs.contains($0) }
        let onlyCheckpoint = checkpoint.scalars.filter { !mine.contains($0) }
        var parts: [String] = []
        if !onlyCorpus.isEmpty { parts.append("\(onlyCorpus.count) only in the corpus (\(list(onlyCorpus)))") }
        if !onlyCheckpoint.isEmpty { parts.append("\(onlyCheckpoint.count) only in the checkpoint (\(list(onlyCheckpoint)))") }
        if parts.isEmpty { parts.append("the same characters in another order") }
        return "the corpus's vocabulary (\(corpus.count) characters) differs from the checkpoint's (\(checkpoint.count)): "
            + parts.joined(separator: "; ")
    }
}
