/// Why training could not start or go on.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    /// An option is out of range; the message names it.
    case invalidOption(String)
    /// The output path exists and is not a directory.
    case outputIsFile(path: String)
    /// The output directory could not be created.
    case cannotCreateOutput(path: String, reason: String)
    /// The corpus cannot be split into batches.
    case batching(BatchingError)
    /// A model operation failed (including divergence).
    case model(ModelError)
    /// A checkpoint could not be written.
    case checkpoint(CheckpointError)
    /// A checkpoint cannot continue or seed this run; the message says why.
    case cannotResume(String)

    public var description: String {
        switch self {
        case .invalidOption(let message): return message
        case .outputIsFile(let path): return "--out '\(path)' is a file; give a directory"
        case .cannotCreateOutput(let path, let reason): return "cannot create output directory '\(path)': \(reason)"
        case .batching(let error): return error.description
        case .model(let error): return error.description
        case .checkpoint(let error): return error.description
        case .cannotResume(let reason): return "cannot resume from the checkpoint: \(reason)"
        }
    }
}
