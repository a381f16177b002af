import Foundation

/// A model's weights, vocabulary and metadata, stored as one safetensors file.
///
/// Tensors use PyTorch's `nn.LSTM`, `nn.GRU` or `nn.RNN` + `nn.Linear`
/// state-dict names under the prefixes `lstm.`, `gru.` or `rnn.` (the cell's
/// name) and `fc.`, so the file loads in PyTorch unchanged. The model's
/// tensors come first, in the core's block order, so the data section
/// starts with the parameter block exactly as the core lays it out.
/// `__metadata__` holds `vocab` (a JSON array of one-scalar strings in index
/// order), the model configuration, and whatever the writer adds (the
/// trainer adds its options and its `RunProgress`). A file with only the
/// tensors and `vocab` is a complete model: the configuration follows from
/// the shapes. See docs/CHECKPOINT.md.
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
    /// What a training run needs beyond the weights to continue exactly, if
    /// stored and read (see `init(contentsOf:trainingState:)`).
    public let resumeState: ResumeState?
    /// Whether the file holds a training state (read or not).
    public let hasTrainingState: Bool
    /// The run's options, read and checked from the metadata; present in
    /// every checkpoint that can resume.
    public let trainingOptions: TrainingOptions?
    /// Where the run stood, read and checked from the metadata; present in
    /// every checkpoint that can resume.
    public let progress: RunProgress?

    /// Tensor-name prefixes of the optional training state.
    static let firstMomentPrefix = "optimizer.exp_avg."
    static let secondMomentPrefix = "optimizer.exp_avg_sq."
    /// Names of the carried state's tensors, one per state tensor of the
    /// cell (h, and the LSTM's c), each `[L, B, H]`.
    static func carriedNames(_ cell: Cell) -> [String] {
        Array(["train_state.h", "train_state.c"].prefix(cell.stateTensorCount))
    }

    /// A checkpoint of `model`'s current weights. `metadata` adds to (and
    /// cannot replace) the entries the format defines. With `resumeState`,
    /// the file also holds Adam's moments and the carried recurrent state.
    public init(model: Model, vocabulary: Vocabulary, metadata: [String: String] = [:], resumeState: ResumeState? = nil) {
        self.configuration = model.configuration
        self.vocabulary = vocabulary
        self.parameters = model.parameters.toArray()
        self.resumeState = resumeState
        self.metadata = Self.fullMetadata(
            metadata, configuration: model.configuration, vocabulary: vocabulary,
            optimizerStep: resumeState?.optimizerStep)
        self.trainingOptions = nil
        self.progress = nil
        self.hasTrainingState = resumeState != nil
    }

    /// `metadata` with the entries the format defines.
    static func fullMetadata(
        _ metadata: [String: String], configuration: ModelConfiguration, vocabulary: Vocabulary,
        optimizerStep: Int64?
    ) -> [String: String] {
        var all = metadata
        if let optimizerStep { all["optimizer_step"] = String(optimizerStep) }
        all["format"] = "charrnn"
        all["format_version"] = Checkpoint.formatVersion
        all["charrnn_version"] = CharRNNVersion.current
        all["vocab"] = Checkpoint.encodeVocabulary(vocabulary)
        all["vocab_size"] = String(configuration.vocabularySize)
        all["hidden_size"] = String(configuration.hiddenSize)
        all["num_layers"] = String(configuration.layerCount)
        all["cell"] = configuration.cell.rawValue
        return all
    }

    /// The file's tensors, pointing at the values where they are: the
    /// model's tensors in block order, then (with a training state) every
    /// tensor's first moments, every tensor's second moments, and the carried
    /// state tensors (`carried` is `[C, L, B, H]`, C the cell's state tensors).
    static func tensors(
        configuration: ModelConfiguration, parameters: UnsafeBufferPointer<Float>,
        moments: UnsafeBufferPointer<Float>?, carried: (values: UnsafeBufferPointer<Float>, batchSize: Int)?
    )
        -> [SafeTensors.Tensor]
    {
        func slice(_ buffer: UnsafeBufferPointer<Float>, _ start: Int, _ count: Int) -> UnsafeBufferPointer<Float> {
            UnsafeBufferPointer(rebasing: buffer[start..<start + count])
        }
        let descriptors = configuration.tensors
        var tensors = descriptors.map {
            SafeTensors.Tensor(name: $0.name, shape: $0.shape, values: slice(parameters, $0.offset, $0.count))
        }
        if let moments {
            let count = parameters.count
            tensors += descriptors.map {
                SafeTensors.Tensor(name: firstMomentPrefix + $0.name, shape: $0.shape, values: slice(moments, $0.offset, $0.count))
            }
            tensors += descriptors.map {
                SafeTensors.Tensor(
                    name: secondMomentPrefix + $0.name, shape: $0.shape,
                    values: slice(moments, count + $0.offset, $0.count))
            }
        }
        if let carried {
            let shape = [configuration.layerCount, carried.batchSize, configuration.hiddenSize]
            let names = carriedNames(configuration.cell)
            let plane = carried.values.count / names.count
            for (index, name) in names.enumerated() {
                tensors.append(SafeTensors.Tensor(name: name, shape: shape, values: slice(carried.values, index * plane, plane)))
            }
        }
        return tensors
    }

    /// Calls `body` with this checkpoint's tensors.
    private func withTensors<R>(_ body: ([SafeTensors.Tensor]) -> R) -> R {
        let moments = resumeState?.optimizerState ?? []
        let carried = resumeState?.carriedState.values ?? []
        return parameters.withUnsafeBufferPointer { block in
            moments.withUnsafeBufferPointer { moments in
                carried.withUnsafeBufferPointer { carried in
                    body(
                        Self.tensors(
                            configuration: configuration, parameters: block, moments: resumeState == nil ? nil : moments,
                            carried: resumeState.map { (carried, $0.carriedState.batchSize) }))
                }
            }
        }
    }

    /// The file's bytes.
    public func serialized() -> [UInt8] {
        withTensors { SafeTensors.encode(tensors: $0, metadata: metadata) }
    }

    /// Writes the checkpoint atomically: it appears under `url` only when complete.
    public func write(to url: URL) throws(CheckpointError) {
        let failure: CheckpointError? = withTensors { tensors -> CheckpointError? in
            do throws(CheckpointError) {
                try AtomicFile.write(to: url) { (sink) throws(FileSink.Failure) in
                    try SafeTensors.write(tensors: tensors, metadata: metadata, to: sink)
                }
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    // MARK: - Reading

    /// Reads and checks a checkpoint file. The header is read and checked
    /// against the file first, then every tensor's name and shape, then the
    /// memory the tensors need; only then are the tensors read, one by one,
    /// so memory is bounded by the model's size, whatever the file's.
    /// - Parameter trainingState: read Adam's moments and the carried state
    ///   too (needed to resume); without it they are checked in the header
    ///   but not read, and `resumeState` is `nil`: a third of the memory, for
    ///   sampling and evaluation.
    public init(contentsOf url: URL, trainingState: Bool = true) throws(CheckpointError) {
        do {
            try self.init(source: try FileSource(path: url.path), trainingState: trainingState)
        } catch {
            throw CheckpointError(path: url.path, problem: error)
        }
    }

    /// Parses and checks a checkpoint held in memory.
    public init(bytes: [UInt8]) throws(CheckpointProblem) {
        try self.init(source: MemorySource(bytes: bytes), trainingState: true)
    }

    /// The metadata of a checkpoint file, reading only its header (checked
    /// against the file's size).
    public static func metadata(of url: URL) throws(CheckpointError) -> [String: String] {
        do {
            return try SafeTensors.readLayout(from: try FileSource(path: url.path)).metadata
        } catch {
            throw CheckpointError(path: url.path, problem: error)
        }
    }

    private init(source: ByteSource, trainingState: Bool) throws(CheckpointProblem) {
        let layout = try SafeTensors.readLayout(from: source)
        let entries = layout.entries
        let metadata = layout.metadata

        // The shape, from the tensors.
        guard let fcWeight = entries["fc.weight"] else { throw .missingTensor(name: "fc.weight") }
        guard fcWeight.shape.count == 2 else {
            throw .shapeMismatch(name: "fc.weight", expected: [-1, -1], actual: fcWeight.shape)
        }
        let cell = try Self.cell(of: entries, metadata: metadata)
        var layers = 0
        while entries["\(cell).weight_ih_l\(layers)"] != nil { layers += 1 }
        guard layers > 0 else { throw .missingTensor(name: "\(cell).weight_ih_l0") }
        let configuration = ModelConfiguration(
            vocabularySize: fcWeight.shape[0], hiddenSize: fcWeight.shape[1], layerCount: layers, cell: cell)
        do { try configuration.validate() } catch {
            throw .unsupportedModel(
                vocabularySize: configuration.vocabularySize, hiddenSize: configuration.hiddenSize,
                layerCount: layers)
        }
        for (key, value) in [
            ("vocab_size", configuration.vocabularySize), ("hidden_size", configuration.hiddenSize),
            ("num_layers", layers),
        ] {
            if let stated = metadata[key], stated != String(value) {
                throw .metadataDisagrees(key: key, metadata: stated, tensors: String(value))
            }
        }

        guard let vocabJSON = metadata["vocab"] else { throw .missingVocabulary }
        let vocabulary = try Checkpoint.decodeVocabulary(vocabJSON)
        guard vocabulary.count == configuration.vocabularySize else {
            throw .invalidVocabulary(
                "\(vocabulary.count) characters, but fc.weight has \(configuration.vocabularySize) rows")
        }

        // Every name and shape, before any data is read.
        let descriptors = configuration.tensors
        for descriptor in descriptors {
            guard let stored = entries[descriptor.name] else { throw .missingTensor(name: descriptor.name) }
            guard stored.shape == descriptor.shape else {
                throw .shapeMismatch(name: descriptor.name, expected: descriptor.shape, actual: stored.shape)
            }
        }
        let hasTrainingState = entries.keys.contains { $0.hasPrefix("optimizer.") || $0.hasPrefix("train_state.") }
        var known = Set(descriptors.map(\.name))
        var carriedShape: [Int] = []
        if hasTrainingState {
            carriedShape = try Self.checkTrainingStateLayout(entries, configuration: configuration)
            for descriptor in descriptors {
                known.insert(Self.firstMomentPrefix + descriptor.name)
                known.insert(Self.secondMomentPrefix + descriptor.name)
            }
            known.formUnion(Self.carriedNames(cell))
        }
        if let extra = entries.keys.sorted().first(where: { !known.contains($0) }) {
            throw .unexpectedTensor(name: extra)
        }

        // The typed metadata of a run's checkpoint, checked against itself and the tensors.
        var trainingOptions: TrainingOptions? = nil
        var progress: RunProgress? = nil
        var optimizerStep: Int64 = 0
        if hasTrainingState {
            let options = try TrainingOptions(checkpointMetadata: metadata)
            guard options.cell == cell else {
                throw .metadataDisagrees(key: "cell", metadata: options.cell.rawValue, tensors: cell.rawValue)
            }
            guard options.hiddenSize == configuration.hiddenSize, options.layerCount == configuration.layerCount else {
                throw .metadataDisagrees(
                    key: "hidden_size", metadata: "\(options.layerCount) × \(options.hiddenSize)",
                    tensors: "\(layers) × \(configuration.hiddenSize)")
            }
            guard carriedShape[1] == options.batchSize else {
                throw .metadataDisagrees(key: "batch_size", metadata: String(options.batchSize), tensors: String(carriedShape[1]))
            }
            let run = try RunProgress(metadata: metadata)
            guard let stepText = metadata["optimizer_step"], let step = Int64(stepText), step == Int64(run.iteration) else {
                throw .invalidMetadataValue(key: "optimizer_step", value: metadata["optimizer_step"])
            }
            (trainingOptions, progress, optimizerStep) = (options, run, step)
        }

        // Memory: the model, and the training state when it is to be read.
        let parameterCount = configuration.parameterCount
        let momentCount = configuration.optimizerStateCount
        let readsTrainingState = hasTrainingState && trainingState
        var carriedCount = 0
        if readsTrainingState {
            do { carriedCount = try configuration.stateCount(batchSize: carriedShape[1]) } catch {
                throw .shapeMismatch(name: Self.carriedNames(cell)[0], expected: [layers, -1, configuration.hiddenSize], actual: carriedShape)
            }
        }
        do {
            try MemoryBudget.check(
                requiredBytes: MemoryBudget.sum(
                    MemoryBudget.floatBytes(parameterCount),
                    readsTrainingState ? MemoryBudget.floatBytes(momentCount) : 0,
                    MemoryBudget.floatBytes(carriedCount)))
        } catch {
            throw .insufficientMemory(error)
        }

        // Now the data, each tensor read straight into its place and checked.
        func read(_ name: String, into block: inout [Float], at offset: Int) throws(CheckpointProblem) {
            let entry = entries[name]!  // checked above
            var failure: CheckpointProblem? = nil
            block.withUnsafeMutableBufferPointer { all in
                let destination = UnsafeMutableBufferPointer(rebasing: all[offset..<offset + entry.count])
                do throws(CheckpointProblem) {
                    try SafeTensors.readFloats(entry, of: layout, from: source, into: destination)
                    if !destination.allSatisfy({ $0.isFinite }) { failure = .nonFiniteWeights(name: name) }
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        }
        var parameters = [Float](repeating: 0, count: parameterCount)
        for descriptor in descriptors { try read(descriptor.name, into: &parameters, at: descriptor.offset) }
        if readsTrainingState {
            var moments = [Float](repeating: 0, count: momentCount)
            for descriptor in descriptors {
                try read(Self.firstMomentPrefix + descriptor.name, into: &moments, at: descriptor.offset)
                try read(Self.secondMomentPrefix + descriptor.name, into: &moments, at: parameterCount + descriptor.offset)
            }
            var carried = RecurrentState(configuration: configuration, batchSize: carriedShape[1])
            let names = Self.carriedNames(cell)
            let plane = carried.values.count / names.count
            for (index, name) in names.enumerated() { try read(name, into: &carried.values, at: index * plane) }
            resumeState = ResumeState(optimizerState: moments, optimizerStep: optimizerStep, carriedState: carried)
        } else {
            resumeState = nil
        }
        self.configuration = configuration
        self.vocabulary = vocabulary
        self.parameters = parameters
        self.metadata = metadata
        self.trainingOptions = trainingOptions
        self.progress = progress
        self.hasTrainingState = hasTrainingState
    }

    /// The cell whose tensors the file holds: the one cell name that prefixes
    /// its recurrent tensors (model or optimizer), checked against the `cell`
    /// metadata when there is one. Files without the entry predate the
    /// choice of cell; their tensors say which it is.
    private static func cell(of entries: [String: SafeTensors.Entry], metadata: [String: String]) throws(CheckpointProblem) -> Cell {
        let found = Cell.allCases.filter { cell in
            entries.keys.contains { name in
                [cell.rawValue + ".", firstMomentPrefix + cell.rawValue + ".", secondMomentPrefix + cell.rawValue + "."]
                    .contains { name.hasPrefix($0) }
            }
        }
        if found.count > 1 { throw .mixedCells(found) }
        if let stated = metadata["cell"] {
            guard let cell = Cell(stated) else { throw .invalidMetadataValue(key: "cell", value: stated) }
            if let first = found.first, first != cell {
                throw .metadataDisagrees(key: "cell", metadata: stated, tensors: "\(first) tensors")
            }
            return cell
        }
        return found.first ?? .lstm
    }

    /// Checks that the optional training state is all there with the right
    /// shapes; returns the carried state's shape `[L, B, H]`.
    private static func checkTrainingStateLayout(
        _ entries: [String: SafeTensors.Entry], configuration: ModelConfiguration
    ) throws(CheckpointProblem) -> [Int] {
        for prefix in [firstMomentPrefix, secondMomentPrefix] {
            for descriptor in configuration.tensors {
                let name = prefix + descriptor.name
                guard let stored = entries[name] else { throw .missingTensor(name: name) }
                guard stored.shape == descriptor.shape else {
                    throw .shapeMismatch(name: name, expected: descriptor.shape, actual: stored.shape)
                }
            }
        }
        let names = carriedNames(configuration.cell)
        guard let hidden = entries[names[0]] else { throw .missingTensor(name: names[0]) }
        let layers = configuration.layerCount
        let units = configuration.hiddenSize
        guard hidden.shape.count == 3, hidden.shape[0] == layers, hidden.shape[2] == units, hidden.shape[1] >= 1,
            hidden.shape[1] <= TrainingOptions.maximumBatchCharacters
        else {
            throw .shapeMismatch(name: names[0], expected: [layers, -1, units], actual: hidden.shape)
        }
        for name in names.dropFirst() {
            guard let other = entries[name] else { throw .missingTensor(name: name) }
            guard other.shape == hidden.shape else { throw .shapeMismatch(name: name, expected: hidden.shape, actual: other.shape) }
        }
        return hidden.shape
    }

    /// A model holding this checkpoint's weights, for training (with room for
    /// gradients and Adam's moments) or for inference only.
    public func makeModel(purpose: Model.Purpose = .training) throws(ModelError) -> Model {
        try Model(configuration: configuration, parameters: parameters, purpose: purpose)
    }

    static func encodeVocabulary(_ vocabulary: Vocabulary) -> String {
        "[" + vocabulary.scalars.map { JSONString.literal(String($0)) }.joined(separator: ",") + "]"
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
/// it stopped: Adam's moments and step count, and the recurrent state carried into
/// the next batch. (The rest, such as the iteration and the running loss, is
/// the checkpoint's `RunProgress`.)
public struct ResumeState: Sendable, Equatable {
    /// Adam's first moments then second moments, each in the parameter layout.
    public var optimizerState: [Float]
    /// Adam steps taken.
    public var optimizerStep: Int64
    /// The carried state (h, and the LSTM's c) for the run's B streams.
    public var carriedState: RecurrentState

    /// Bundles the pieces.
    public init(optimizerState: [Float], optimizerStep: Int64, carriedState: RecurrentState) {
        self.optimizerState = optimizerState
        self.optimizerStep = optimizerStep
        self.carriedState = carriedState
    }
}
