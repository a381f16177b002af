/// Why a checkpoint could not be written or read: the file, and the problem.
public struct CheckpointError: Error, Equatable, CustomStringConvertible {
    /// The checkpoint file.
    public let path: String
    /// What is wrong with it.
    public let problem: CheckpointProblem

    public var description: String { "checkpoint '\(path)': \(problem)" }
}

/// What is wrong with a checkpoint file (or what failed while writing one).
public enum CheckpointProblem: Error, Equatable, CustomStringConvertible {
    case io(String)
    case notFound
    case truncated(size: Int)
    case headerTooLarge(length: UInt64)
    case headerPastEnd(length: UInt64, fileSize: Int)
    case invalidJSON
    case invalidMetadata
    case invalidEntry(name: String)
    case unsupportedDType(name: String, dtype: String)
    case offsetsOutsideFile(name: String)
    case sizeMismatch(name: String)
    case overlappingOrGap(name: String)
    case trailingData(bytes: Int)
    case missingTensor(name: String)
    case unexpectedTensor(name: String)
    case shapeMismatch(name: String, expected: [Int], actual: [Int])
    case missingVocabulary
    case invalidVocabulary(String)
    case nonFiniteWeights(name: String)
    case invalidMetadataValue(key: String, value: String?)
    /// The path is not a regular file: `kind` says what it is ("a FIFO (named pipe)", …).
    case notRegularFile(kind: String)
    /// The tensors describe a model past the core's limits.
    case unsupportedModel(vocabularySize: Int, hiddenSize: Int, layerCount: Int)
    /// A metadata entry states a size the tensors do not have.
    case metadataDisagrees(key: String, metadata: String, tensors: String)
    /// The recurrent tensors belong to more than one cell (`lstm.…` and `gru.…`).
    case mixedCells([Cell])
    /// Holding the checkpoint would take more memory than the process may use.
    case insufficientMemory(MemoryShortfall)

    public var description: String {
        switch self {
        case .io(let message): return message
        case .notFound: return "no such file"
        case .truncated(let size): return "file is \(size) bytes, too short for a safetensors header"
        case .headerTooLarge(let length): return "header length \(length) exceeds the 100 MB limit"
        case .headerPastEnd(let length, let size):
            return "header length \(length) runs past the end of the \(size)-byte file (truncated?)"
        case .invalidJSON: return "header is not a valid JSON object"
        case .invalidMetadata: return "__metadata__ must map strings to strings"
        case .invalidEntry(let name): return "tensor '\(name)' needs dtype, shape and data_offsets"
        case .unsupportedDType(let name, let dtype): return "tensor '\(name)' has dtype \(dtype); only F32 is supported"
        case .offsetsOutsideFile(let name): return "tensor '\(name)' has data offsets outside the file"
        case .sizeMismatch(let name): return "tensor '\(name)' data size does not match its shape"
        case .overlappingOrGap(let name): return "tensor '\(name)' overlaps another or leaves a gap in the data"
        case .trailingData(let bytes): return "\(bytes) bytes after the last tensor"
        case .missingTensor(let name): return "required tensor '\(name)' is missing"
        case .unexpectedTensor(let name): return "unexpected tensor '\(name)'"
        case .shapeMismatch(let name, let expected, let actual):
            return "tensor '\(name)' has shape \(actual); expected \(expected)"
        case .missingVocabulary: return "__metadata__ has no 'vocab' entry"
        case .invalidVocabulary(let reason): return "invalid vocabulary: \(reason)"
        case .nonFiniteWeights(let name): return "tensor '\(name)' contains NaN or infinity"
        case .invalidMetadataValue(let key, let value):
            return value.map { "metadata '\(key)' has an invalid value '\($0)'" } ?? "metadata '\(key)' is missing"
        case .notRegularFile(let kind): return "is \(kind), not a checkpoint file"
        case .unsupportedModel(let v, let h, let l):
            return "its tensors describe \(l) layers of \(h) units over \(v) characters; the most charrnn supports is "
                + "\(ModelConfiguration.maximumLayerCount) layers of \(ModelConfiguration.maximumHiddenSize) units over "
                + "\(ModelConfiguration.maximumVocabularySize) characters"
        case .metadataDisagrees(let key, let metadata, let tensors):
            return "metadata '\(key)' says \(metadata) but the tensors have \(tensors)"
        case .mixedCells(let cells):
            return "its tensors mix cells (" + cells.map { "\($0).*" }.joined(separator: ", ") + "); a model has one cell"
        case .insufficientMemory(let shortfall): return "loading it \(shortfall)"
        }
    }
}
