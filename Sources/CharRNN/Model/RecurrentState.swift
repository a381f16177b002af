/// The recurrent state carried between batches: every layer's h (and, for
/// the LSTM, c) for B streams, laid out `[C, L, B, H]` (all h, then all c) as
/// the core expects, C the cell's state tensors per layer.
public struct RecurrentState: Sendable, Equatable {
    /// Streams the state is for (B).
    public let batchSize: Int
    /// The flat `[C, L, B, H]` values.
    public var values: [Float]

    /// The zero state for `batchSize` streams of a model, sized as the core
    /// counts it (empty when the core refuses the configuration or batch size).
    public init(configuration: ModelConfiguration, batchSize: Int) {
        self.batchSize = batchSize
        self.values = [Float](repeating: 0, count: (try? configuration.stateCount(batchSize: batchSize)) ?? 0)
    }

    /// A state from its flat `[C, L, batchSize, H]` values.
    public init(values: [Float], batchSize: Int) {
        self.batchSize = batchSize
        self.values = values
    }

    /// The state of streams `streams` (a part of `0 ..< batchSize`) alone.
    public func streams(_ streams: Range<Int>, configuration: ModelConfiguration) -> RecurrentState {
        rearranged(streams.map { Optional($0) }, configuration: configuration)
    }

    /// The states of consecutive stream ranges, joined in order into one
    /// (the inverse of `streams(_:configuration:)`).
    public init(joining parts: [RecurrentState], configuration: ModelConfiguration) {
        let width = configuration.hiddenSize
        let batchSize = parts.reduce(0) { $0 + $1.batchSize }
        let slabs = parts.first.map { $0.values.count / max($0.batchSize * width, 1) } ?? 0
        var values: [Float] = []
        values.reserveCapacity(slabs * batchSize * width)
        for slab in 0..<slabs {
            for part in parts {
                let rows = part.batchSize * width
                values.append(contentsOf: part.values[slab * rows..<(slab + 1) * rows])
            }
        }
        self.init(values: values, batchSize: batchSize)
    }

    /// A state whose stream i is this state's stream `sources[i]`, or a zero
    /// stream where `sources[i]` is nil: streams leave, join and move in one copy.
    /// Slabs (state tensors × layers) are counted by the core, so an empty
    /// state can grow.
    public func rearranged(_ sources: [Int?], configuration: ModelConfiguration) -> RecurrentState {
        let width = configuration.hiddenSize
        let slabs = ((try? configuration.stateCount(batchSize: 1)) ?? 0) / max(width, 1)
        precondition(values.count == slabs * batchSize * width, "state made for another model")
        var result = [Float](repeating: 0, count: slabs * sources.count * width)
        for slab in 0..<slabs {
            for (stream, source) in sources.enumerated() {
                guard let source else { continue }
                precondition(source >= 0 && source < batchSize, "stream outside the state")
                let from = (slab * batchSize + source) * width
                let to = (slab * sources.count + stream) * width
                result.replaceSubrange(to..<to + width, with: values[from..<from + width])
            }
        }
        return RecurrentState(values: result, batchSize: sources.count)
    }

    /// Sets stream `stream` to `single`, a one-stream state of the same model.
    public mutating func setStream(_ stream: Int, to single: RecurrentState, configuration: ModelConfiguration) {
        let width = configuration.hiddenSize
        let slabs = values.count / max(batchSize * width, 1)
        precondition(
            stream >= 0 && stream < batchSize && single.batchSize == 1 && single.values.count == slabs * width, "state made for another model")
        for slab in 0..<slabs {
            let to = (slab * batchSize + stream) * width
            values.replaceSubrange(to..<to + width, with: single.values[slab * width..<(slab + 1) * width])
        }
    }

    /// Resets every value to zero.
    public mutating func reset() {
        for index in values.indices { values[index] = 0 }
    }
}
