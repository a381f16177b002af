import Foundation

/// A model's weights, vocabulary and metadata, stored as one safetensors file.
///
/// Tensors use PyTorch's `nn.LSTM` + `nn.Linear` state-dict names under the
/// prefixes `lstm.` and `fc.`, so the file loads in PyTorch unchanged.
/// `__metadata__` holds `vocab` (a JSON array of one-scalar strings in index
/// order), the model configuration, and whatever the writer adds (the
/// trainer adds its hyperparameters, iteration and losses). A file with only
/// the tensors and `vocab` is a complete model: the configuration follows
/// from the shapes. See docs/CHECKPOINT.md.
public struct Checkpoint {
    /// The current format version, stored as `format_version`.
    public static let formatVersion = "1"

    /// The model's shape (derived from the tensors when reading).
    public let configuration: ModelConfiguration
    /// The model's alphabet, in index order.
    public let vocabulary: Vocabulary
    /// The parameter block, in the tensor table's layout.
    public let parameters: [Float]
    /// Every `__metadata__` entry (string → string).
    public let metadata: [String: String]
    /// What a training run needs beyond the weights to continue exactly, if stored.
    public let resumeState: ResumeState?

    /// Tensor-name prefixes of the optional training state.
    static let firstMomentPrefix = "optimizer.exp_avg."
    static let secondMomentPrefix = "optimizer.exp_avg_sq."
    static let carriedHiddenName = "train_state.h"
    static let carriedCellName = "train_state.c"

    /// A checkpoint of `model`'s current weights. `metadata` adds to (and
    /// cannot replace) the entries the format defines. With `resumeState`,
    /// the file also holds Adam's moments and the carried LSTM state.
    public init(model: Model, vocabulary: Vocabulary, metadata: [String: String] = [:], resumeState: ResumeState? = nil) {
        self.configuration = model.configuration
        self.vocabulary = vocabulary
        self.parameters = model.parameters.toArray()
        self.resumeState = resumeState
        var all = metadata
        if let resumeState { all["optimizer_step"] = String(resumeState.optimizerStep) }
        all["format"] = "charrnn"
        all["format_version"] = Checkpoint.formatVersion
        all["vocab"] = Checkpoint.encodeVocabulary(vocabulary)
        all["vocab_size"] = String(model.configuration.vocabularySize)
        all["hidden_size"] = String(model.configuration.hiddenSize)
        all["num_layers"] = String(model.configuration.layerCount)
        self.metadata = all
    }

    /// The file's bytes: the model's tensors in block order, then (with a
    /// resume state) every tensor's first moments, every tensor's second
    /// moments, and the carried h and c.
    public func serialized() -> [UInt8] {
        let descriptors = configuration.tensors
        let moments = resumeState?.optimizerState ?? []
        let carried = resumeState?.carriedState.values ?? []
        return parameters.withUnsafeBufferPointer { block in
            moments.withUnsafeBufferPointer { moments in
                carried.withUnsafeBufferPointer { carried in
                    func slice(_ buffer: UnsafeBufferPointer<Float>, _ start: Int, _ count: Int) -> UnsafeBufferPointer<Float> {
                        UnsafeBufferPointer(rebasing: buffer[start..<start + count])
                    }
                    var tensors = descriptors.map {
                        SafeTensors.Tensor(name: $0.name, shape: $0.shape, values: slice(block, $0.offset, $0.count))
                    }
                    if let resumeState {
                        let count = parameters.count
                        tensors += descriptors.map {
                            SafeTensors.Tensor(name: Self.firstMomentPrefix + $0.name, shape: $0.shape,
                                               values: slice(moments, $0.offset, $0.count))
                        }
                        tensors += descriptors.map {
                            SafeTensors.Tensor(name: Self.secondMomentPrefix + $0.name, shape: $0.shape,
                                               values: slice(moments, count + $0.offset, $0.count))
                        }
                        let shape = [configuration.layerCount, resumeState.carriedState.batchSize, configuration.hiddenSize]
                        let half = carried.count / 2
                        tensors.append(SafeTensors.Tensor(name: Self.carriedHiddenName, shape: shape, values: slice(carried, 0, half)))
                        tensors.append(SafeTensors.Tensor(name: Self.carriedCellName, shape: shape, values: slice(carried, half, half)))
                    }
                    return SafeTensors.encode(tensors: tensors, metadata: metadata)
                }
            }
        }
    }

    /// Writes the checkpoint atomically: it appears under `url` only when complete.
    public func write(to url: URL) throws(CheckpointError) {
        try AtomicFile.write(serialized(), to: url)
    }

    /// Reads and checks a checkpoint file.
    public init(contentsOf url: URL) throws(CheckpointError) {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw CheckpointError(path: path, problem: .notFound)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CheckpointError(path: path, problem: .io("cannot read: \((error as NSError).localizedDescription)"))
        }
        do {
            try self.init(bytes: [UInt8](data))
        } catch {
            throw CheckpointError(path: path, problem: error)
        }
    }

    /// Parses and checks a checkpoint held in memory.
    public init(bytes: [UInt8]) throws(CheckpointProblem) {
        let (metadata, tensors) = try SafeTensors.decode(bytes)
        guard let fcWeight = tensors["fc.weight"] else { throw .missingTensor(name: "fc.weight") }
        guard fcWeight.shape.count == 2 else {
            throw .shapeMismatch(name: "fc.weight", expected: [-1, -1], actual: fcWeight.shape)
        }
        var layers = 0
        while tensors["lstm.weight_ih_l\(layers)"] != nil { layers += 1 }
        guard layers > 0 else { throw .missingTensor(name: "lstm.weight_ih_l0") }
        let configuration = ModelConfiguration(
            vocabularySize: fcWeight.shape[0], hiddenSize: fcWeight.shape[1], layerCount: layers)
        do { try configuration.validate() } catch {
            throw .invalidEntry(name: "fc.weight")
        }

        guard let vocabJSON = metadata["vocab"] else { throw .missingVocabulary }
        let vocabulary = try Checkpoint.decodeVocabulary(vocabJSON)
        guard vocabulary.count == configuration.vocabularySize else {
            throw .invalidVocabulary(
                "\(vocabulary.count) characters, but fc.weight has \(configuration.vocabularySize) rows")
        }

        let descriptors = configuration.tensors
        var parameters = [Float](repeating: 0, count: configuration.parameterCount)
        for descriptor in descriptors {
            guard let stored = tensors[descriptor.name] else { throw .missingTensor(name: descriptor.name) }
            guard stored.shape == descriptor.shape else {
                throw .shapeMismatch(name: descriptor.name, expected: descriptor.shape, actual: stored.shape)
            }
            guard stored.values.allSatisfy({ $0.isFinite }) else { throw .nonFiniteWeights(name: descriptor.name) }
            parameters.replaceSubrange(descriptor.offset..<descriptor.offset + descriptor.count, with: stored.values)
        }
        var known = Set(descriptors.map(\.name))
        let hasTrainingState = tensors.keys.contains {
            $0.hasPrefix("optimizer.") || $0.hasPrefix("train_state.")
        }
        if hasTrainingState {
            resumeState = try Checkpoint.decodeResumeState(tensors, metadata: metadata, configuration: configuration)
            for descriptor in descriptors {
                known.insert(Self.firstMomentPrefix + descriptor.name)
                known.insert(Self.secondMomentPrefix + descriptor.name)
            }
            known.formUnion([Self.carriedHiddenName, Self.carriedCellName])
        } else {
            resumeState = nil
        }
        if let extra = tensors.keys.sorted().first(where: { !known.contains($0) }) {
            throw .unexpectedTensor(name: extra)
        }
        self.configuration = configuration
        self.vocabulary = vocabulary
        self.parameters = parameters
        self.metadata = metadata
    }

    /// The optional training state: all of it, consistent, finite, or an error.
    private static func decodeResumeState(
        _ tensors: [String: SafeTensors.StoredTensor], metadata: [String: String], configuration: ModelConfiguration
    ) throws(CheckpointProblem) -> ResumeState {
        let descriptors = configuration.tensors
        let count = configuration.parameterCount
        var moments = [Float](repeating: 0, count: 2 * count)
        for (prefix, base) in [(firstMomentPrefix, 0), (secondMomentPrefix, count)] {
            for descriptor in descriptors {
                let name = prefix + descriptor.name
                guard let stored = tensors[name] else { throw .missingTensor(name: name) }
                guard stored.shape == descriptor.shape else {
                    throw .shapeMismatch(name: name, expected: descriptor.shape, actual: stored.shape)
                }
                guard stored.values.allSatisfy({ $0.isFinite }) else { throw .nonFiniteWeights(name: name) }
                moments.replaceSubrange(base + descriptor.offset..<base + descriptor.offset + descriptor.count, with: stored.values)
            }
        }
        guard let hidden = tensors[carriedHiddenName] else { throw .missingTensor(name: carriedHiddenName) }
        guard let cell = tensors[carriedCellName] else { throw .missingTensor(name: carriedCellName) }
        let layers = configuration.layerCount, units = configuration.hiddenSize
        guard hidden.shape.count == 3, hidden.shape[0] == layers, hidden.shape[2] == units, hidden.shape[1] >= 1 else {
            throw .shapeMismatch(name: carriedHiddenName, expected: [layers, -1, units], actual: hidden.shape)
        }
        guard cell.shape == hidden.shape else {
            throw .shapeMismatch(name: carriedCellName, expected: hidden.shape, actual: cell.shape)
        }
        for stored in [(carriedHiddenName, hidden), (carriedCellName, cell)] where !stored.1.values.allSatisfy({ $0.isFinite }) {
            throw .nonFiniteWeights(name: stored.0)
        }
        guard let stepText = metadata["optimizer_step"], let step = Int64(stepText), step >= 0 else {
            throw .invalidMetadataValue(key: "optimizer_step", value: metadata["optimizer_step"])
        }
        var carried = RecurrentState(configuration: configuration, batchSize: hidden.shape[1])
        carried.values = hidden.values + cell.values
        return ResumeState(optimizerState: moments, optimizerStep: step, carriedState: carried)
    }

    /// A model holding this checkpoint's weights.
    public func makeModel() throws(ModelError) -> Model {
        try Model(configuration: configuration, parameters: parameters)
    }

    static func encodeVocabulary(_ vocabulary: Vocabulary) -> String {
        "[" + vocabulary.scalars.map { SafeTensors.jsonString(String($0)) }.joined(separator: ",") + "]"
    }

    static func decodeVocabulary(_ json: String) throws(CheckpointProblem) -> Vocabulary {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [])
        } catch {
            throw .invalidVocabulary("'vocab' is not valid JSON")
        }
        guard let strings = parsed as? [String] else {
            throw .invalidVocabulary("'vocab' must be a JSON array of strings")
        }
        var scalars: [Unicode.Scalar] = []
        for (index, string) in strings.enumerated() {
            let unicodeScalars = Array(string.unicodeScalars)
            guard unicodeScalars.count == 1 else {
                throw .invalidVocabulary("entry \(index) holds \(unicodeScalars.count) characters, not 1")
            }
            scalars.append(unicodeScalars[0])
        }
        do {
            return try Vocabulary(scalars: scalars)
        } catch {
            throw .invalidVocabulary(error.description)
        }
    }
}

/// What a training run needs, beyond the weights, to continue exactly where
/// it stopped: Adam's moments and step count, and the LSTM state carried into
/// the next batch. (The rest, such as the iteration and the running loss, is
/// in the checkpoint's metadata.)
public struct ResumeState: Sendable, Equatable {
    /// Adam's first moments then second moments, each in the parameter layout.
    public var optimizerState: [Float]
    /// Adam steps taken.
    public var optimizerStep: Int64
    /// The carried (h, c) for the run's B streams.
    public var carriedState: RecurrentState

    /// Bundles the pieces.
    public init(optimizerState: [Float], optimizerStep: Int64, carriedState: RecurrentState) {
        self.optimizerState = optimizerState
        self.optimizerStep = optimizerStep
        self.carriedState = carriedState
    }
}
