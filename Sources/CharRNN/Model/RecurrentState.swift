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

    /// Resets every value to zero.
    public mutating func reset() {
        for index in values.indices { values[index] = 0 }
    }
}
