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

    /// A checkpoint of `model`'s current weights. `metadata` adds to (and
    /// cannot replace) the entries the format defines.
    public init(model: Model, vocabulary: Vocabulary, metadata: [String: String] = [:]) {
        self.configuration = model.configuration
        self.vocabulary = vocabulary
        self.parameters = model.parameters.toArray()
        var all = metadata
        all["format"] = "charrnn"
        all["format_version"] = Checkpoint.formatVersion
        all["vocab"] = Checkpoint.encodeVocabulary(vocabulary)
        all["vocab_size"] = String(model.configuration.vocabularySize)
        all["hidden_size"] = String(model.configuration.hiddenSize)
        all["num_layers"] = String(model.configuration.layerCount)
        self.metadata = all
    }

    /// The file's bytes.
    public func serialized() -> [UInt8] {
        parameters.withUnsafeBufferPointer { block in
            let tensors = configuration.tensors.map { descriptor in
                SafeTensors.Tensor(
                    name: descriptor.name, shape: descriptor.shape,
                    values: UnsafeBufferPointer(rebasing: block[descriptor.offset..<descriptor.offset + descriptor.count]))
            }
            return SafeTensors.encode(tensors: tensors, metadata: metadata)
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
        let known = Set(descriptors.map(\.name))
        if let extra = tensors.keys.sorted().first(where: { !known.contains($0) }) {
            throw .unexpectedTensor(name: extra)
        }
        self.configuration = configuration
        self.vocabulary = vocabulary
        self.parameters = parameters
        self.metadata = metadata
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
