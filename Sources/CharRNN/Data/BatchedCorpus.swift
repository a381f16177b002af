/// One batch: B streams of T steps, inputs and next-character targets,
/// each `[B, T]` row-major (row b is stream b).
public struct Batch: Sendable, Equatable {
    /// Number of streams (B).
    public let batchSize: Int
    /// Steps per stream (T).
    public let steps: Int
    /// Input indices, `[B, T]` row-major.
    public let inputs: [Int32]
    /// Target indices (each input's next character), `[B, T]` row-major.
    public let targets: [Int32]
    /// The index of row 0 in the whole batch when several processes share
    /// one (data-parallel training); 0 otherwise.
    public let firstStream: Int
    /// Streams in the whole batch these rows belong to (`batchSize` when
    /// this is the whole batch). Dropout draws each row's masks by its
    /// index in the whole batch, so a shard trains as its rows would in it.
    public let totalStreams: Int

    /// A batch from `[B, T]` row-major inputs and targets. Throws unless both
    /// hold exactly `batchSize * steps` indices and the sizes are positive.
    /// - Parameters:
    ///   - firstStream: where row 0 sits in the whole batch (see `totalStreams`).
    ///   - totalStreams: the whole batch's streams; `nil` for `batchSize`.
    public init(
        batchSize: Int, steps: Int, inputs: [Int32], targets: [Int32],
        firstStream: Int = 0, totalStreams: Int? = nil
    ) throws(BatchingError) {
        guard batchSize >= 1 else { throw .invalidBatchSize(batchSize) }
        guard steps >= 1 else { throw .invalidSteps(steps) }
        guard inputs.count == batchSize * steps, targets.count == batchSize * steps else {
            throw .batchShapeMismatch(expected: batchSize * steps, inputs: inputs.count, targets: targets.count)
        }
        let total = totalStreams ?? batchSize
        guard firstStream >= 0, total <= Int(Int32.max), firstStream + batchSize <= total else {
            throw .streamsOutsideBatch(first: firstStream, count: batchSize, total: total)
        }
        self.init(
            unchecked: batchSize, steps: steps, inputs: inputs, targets: targets,
            firstStream: firstStream, totalStreams: total)
    }

    init(unchecked batchSize: Int, steps: Int, inputs: [Int32], targets: [Int32], firstStream: Int = 0, totalStreams: Int? = nil) {
        self.batchSize = batchSize
        self.steps = steps
        self.inputs = inputs
        self.targets = targets
        self.firstStream = firstStream
        self.totalStreams = totalStreams ?? batchSize
    }
}

/// The original notebook's batching (`split_data` and `get_batch`), exactly:
///
/// - `batchCount = len // (B*T)`; `x = chars[:batchCount*B*T]`, `y = chars[1:batchCount*B*T+1]`;
/// - `x` and `y` are split into B equal rows: B long streams, each
///   `batchCount * T` characters;
/// - the first `int(batchCount * (1 - validationFraction))` blocks of T
///   columns are training, the rest validation;
/// - batch k of a split is columns `k*T ..< (k+1)*T` of every row.
///
/// One corner differs: when the text is exactly `batchCount*B*T` long, the
/// notebook's `y` is one character short and numpy fails; here one fewer
/// block is used instead.
///
/// Stream b is one contiguous stretch of the text, so a process that trains
/// some of the streams (`streams`, with others holding the rest) needs, and
/// holds, only their stretch: `layout.stretch(of:)`. Its batches have
/// `streams.count` rows and say where they sit in the whole batch.
public struct BatchedCorpus: Sendable {
    /// How the text divides into streams and batches.
    public let layout: BatchLayout
    /// The streams held here: rows `streams` of every batch (all by default).
    public let streams: Range<Int>
    /// Streams per whole batch (B).
    public var batchSize: Int { layout.batchSize }
    /// Steps per batch (T).
    public var steps: Int { layout.steps }
    /// Blocks of T columns in all (the notebook's `n_batches`).
    public var batchCount: Int { layout.batchCount }
    /// Blocks used for training (`int(n_batches * split_frac)`).
    public var trainingBatchCount: Int { layout.trainingBatchCount }
    /// Blocks used for validation.
    public var validationBatchCount: Int { layout.validationBatchCount }

    /// The held streams' stretch of the text, from character `base` on.
    private let tokens: TokenStore
    private let base: Int

    /// Splits encoded text into streams and batches.
    /// - Parameters:
    ///   - tokens: the encoded corpus.
    ///   - batchSize: streams per batch (B), at least 1.
    ///   - steps: characters per stream per batch (T), at least 1.
    ///   - validationFraction: share of blocks held out, in (0, 1).
    ///   - streams: the streams to hold (all when `nil`).
    /// - Throws: `BatchingError` when a size is out of range, the text is
    ///   too short for one training and one validation batch, or `streams`
    ///   is not inside `0 ..< batchSize`.
    public init(
        tokens: [Int32], batchSize: Int, steps: Int, validationFraction: Double,
        streams: Range<Int>? = nil
    ) throws(BatchingError) {
        let layout = try BatchLayout(
            characterCount: tokens.count, batchSize: batchSize, steps: steps, validationFraction: validationFraction)
        let streams = streams ?? 0..<batchSize
        let stretch = try layout.stretch(of: streams)
        try self.init(
            layout: layout, streams: streams,
            tokens: TokenStore(tokens[stretch], alphabetSize: Int(tokens.max() ?? 0) + 1))
    }

    /// Batches over the stretch `layout.stretch(of: streams)` of an encoded
    /// text (the rest of the text need not be held anywhere in this process).
    /// - Throws: `BatchingError.streamsOutsideBatch` unless `streams` is a
    ///   non-empty part of `0 ..< layout.batchSize`, `.stretchMismatch`
    ///   unless `tokens` has the stretch's length.
    public init(layout: BatchLayout, streams: Range<Int>, tokens: TokenStore) throws(BatchingError) {
        let stretch = try layout.stretch(of: streams)
        guard tokens.count == stretch.count else {
            throw .stretchMismatch(expected: stretch.count, got: tokens.count)
        }
        self.layout = layout
        self.streams = streams
        self.tokens = tokens
        self.base = stretch.lowerBound
    }

    /// The shortest text (in characters) that gives one training and one
    /// validation batch.
    public static func minimumLength(batchSize: Int, steps: Int, validationFraction: Double) -> Int {
        BatchLayout.minimumLength(batchSize: batchSize, steps: steps, validationFraction: validationFraction)
    }

    /// Bytes that hold the stretch's tokens (one per character when the
    /// vocabulary has at most 256 characters).
    public var tokenBytes: Int { tokens.byteCount }

    /// Training batch `index` in `0..<trainingBatchCount`.
    public func trainingBatch(_ index: Int) -> Batch {
        precondition(index >= 0 && index < trainingBatchCount, "training batch index out of range")
        return batch(block: index)
    }

    /// Validation batch `index` in `0..<validationBatchCount`.
    public func validationBatch(_ index: Int) -> Batch {
        precondition(index >= 0 && index < validationBatchCount, "validation batch index out of range")
        return batch(block: trainingBatchCount + index)
    }

    private func batch(block: Int) -> Batch {
        let rows = streams.count
        var inputs = [Int32](repeating: 0, count: rows * steps)
        var targets = inputs
        let column = block * steps
        let rowLength = layout.rowLength
        for row in 0..<rows {
            let start = (streams.lowerBound + row) * rowLength + column - base
            tokens.copy(from: start, count: steps, into: &inputs, at: row * steps)
            tokens.copy(from: start + 1, count: steps, into: &targets, at: row * steps)
        }
        return Batch(
            unchecked: rows, steps: steps, inputs: inputs, targets: targets,
            firstStream: streams.lowerBound, totalStreams: batchSize)
    }
}

/// How a text of some length divides into the notebook's streams and
/// batches (see `BatchedCorpus`), known before any of it is encoded.
public struct BatchLayout: Sendable, Equatable {
    /// Characters in the whole text.
    public let characterCount: Int
    /// Streams per batch (B).
    public let batchSize: Int
    /// Steps per batch (T).
    public let steps: Int
    /// Blocks of T columns in all (the notebook's `n_batches`).
    public let batchCount: Int
    /// Blocks used for training (`int(n_batches * split_frac)`).
    public let trainingBatchCount: Int
    /// Blocks used for validation.
    public var validationBatchCount: Int { batchCount - trainingBatchCount }
    /// Characters per stream (`batchCount * T`).
    public var rowLength: Int { batchCount * steps }

    /// The layout of a text of `characterCount` characters.
    /// - Throws: `BatchingError` when a size is out of range or the text is
    ///   too short for one training and one validation batch.
    public init(characterCount: Int, batchSize: Int, steps: Int, validationFraction: Double) throws(BatchingError) {
        guard batchSize >= 1 else { throw .invalidBatchSize(batchSize) }
        guard steps >= 1 else { throw .invalidSteps(steps) }
        guard validationFraction > 0, validationFraction < 1 else {
            throw .invalidValidationFraction(validationFraction)
        }
        let slice = batchSize.multipliedReportingOverflow(by: steps)
        guard !slice.overflow else { throw .invalidBatchSize(batchSize) }
        var blocks = characterCount / slice.partialValue
        if blocks > 0 && blocks * slice.partialValue + 1 > characterCount { blocks -= 1 }
        let training = Int(Double(blocks) * (1 - validationFraction))
        guard training >= 1, blocks - training >= 1 else {
            throw .corpusTooShort(
                length: characterCount,
                required: Self.minimumLength(batchSize: batchSize, steps: steps, validationFraction: validationFraction),
                batchSize: batchSize, steps: steps)
        }
        self.characterCount = characterCount
        self.batchSize = batchSize
        self.steps = steps
        self.batchCount = blocks
        self.trainingBatchCount = training
    }

    /// The characters streams `streams` read: their rows' inputs and the
    /// one target past the last.
    /// - Throws: `BatchingError.streamsOutsideBatch` unless `streams` is a
    ///   non-empty part of `0 ..< batchSize`.
    public func stretch(of streams: Range<Int>) throws(BatchingError) -> Range<Int> {
        guard !streams.isEmpty, streams.lowerBound >= 0, streams.upperBound <= batchSize else {
            throw .streamsOutsideBatch(first: streams.lowerBound, count: streams.count, total: batchSize)
        }
        return streams.lowerBound * rowLength..<streams.upperBound * rowLength + 1
    }

    /// The shortest text (in characters) that gives one training and one
    /// validation batch.
    public static func minimumLength(batchSize: Int, steps: Int, validationFraction: Double) -> Int {
        var blocks = 2
        while true {
            let training = Int(Double(blocks) * (1 - validationFraction))
            if training >= 1 && blocks - training >= 1 { break }
            blocks += 1
        }
        return blocks * batchSize * steps + 1
    }
}

/// Encoded characters held in the smallest unsigned integer type the
/// alphabet allows: one byte each up to 256 characters, two up to 65,536,
/// four beyond.
public struct TokenStore: Sendable, Equatable {
    /// Bytes per token: 1, 2 or 4.
    public let width: Int
    private var storage: [UInt8]

    /// An empty store for tokens below `alphabetSize`.
    public init(alphabetSize: Int) {
        width = alphabetSize <= 1 << 8 ? 1 : alphabetSize <= 1 << 16 ? 2 : 4
        storage = []
    }

    /// A store holding `tokens`, each below `alphabetSize`.
    public init<S: Sequence>(_ tokens: S, alphabetSize: Int) where S.Element == Int32 {
        self.init(alphabetSize: alphabetSize)
        for token in tokens { append(token) }
    }

    /// Tokens held.
    public var count: Int { storage.count / width }
    /// Bytes the tokens take.
    public var byteCount: Int { storage.count }

    /// Makes room for `count` tokens in all.
    public mutating func reserveCapacity(_ count: Int) { storage.reserveCapacity(count * width) }

    /// Adds a token (in `0 ..< alphabetSize`) at the end.
    public mutating func append(_ token: Int32) {
        let value = UInt32(bitPattern: token)
        switch width {
        case 1: storage.append(UInt8(truncatingIfNeeded: value))
        case 2:
            storage.append(UInt8(truncatingIfNeeded: value))
            storage.append(UInt8(truncatingIfNeeded: value >> 8))
        default: for shift in stride(from: 0, to: 32, by: 8) { storage.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
        }
    }

    /// Token `index`.
    public subscript(index: Int) -> Int32 {
        var value: UInt32 = 0
        for byte in 0..<width { value |= UInt32(storage[index * width + byte]) << UInt32(8 * byte) }
        return Int32(bitPattern: value)
    }

    /// Copies tokens `start ..< start + count` into `destination` from `offset` on.
    func copy(from start: Int, count: Int, into destination: inout [Int32], at offset: Int) {
        storage.withUnsafeBufferPointer { bytes in
            destination.withUnsafeMutableBufferPointer { out in
                if width == 1 {
                    for k in 0..<count { out[offset + k] = Int32(bytes[start + k]) }
                } else {
                    for k in 0..<count {
                        var value: UInt32 = 0
                        let at = (start + k) * width
                        for byte in 0..<width { value |= UInt32(bytes[at + byte]) << UInt32(8 * byte) }
                        out[offset + k] = Int32(bitPattern: value)
                    }
                }
            }
        }
    }
}

/// Why a corpus could not be batched.
public enum BatchingError: Error, Equatable, CustomStringConvertible {
    case invalidBatchSize(Int)
    case invalidSteps(Int)
    case invalidValidationFraction(Double)
    case corpusTooShort(length: Int, required: Int, batchSize: Int, steps: Int)
    case batchShapeMismatch(expected: Int, inputs: Int, targets: Int)
    /// Streams `first ..< first + count` are not all inside a batch of `total`.
    case streamsOutsideBatch(first: Int, count: Int, total: Int)
    /// The tokens given for a stretch of the text are not its length.
    case stretchMismatch(expected: Int, got: Int)

    public var description: String {
        switch self {
        case .invalidBatchSize(let value): return "batch size must be at least 1 (got \(value))"
        case .invalidSteps(let value): return "steps must be at least 1 (got \(value))"
        case .invalidValidationFraction(let value):
            return "validation fraction must be between 0 and 1, exclusive (got \(value))"
        case .corpusTooShort(let length, let required, let batchSize, let steps):
            return "corpus has \(length) characters; batch \(batchSize) × steps \(steps) needs at least "
                + "\(required) for one training and one validation batch"
        case .batchShapeMismatch(let expected, let inputs, let targets):
            return "a batch needs \(expected) inputs and targets; got \(inputs) and \(targets)"
        case .stretchMismatch(let expected, let got):
            return "the streams need \(expected) characters of the text; \(got) were given"
        case .streamsOutsideBatch(let first, let count, let total):
            return "streams \(first)..<\(first + count) are not inside a batch of \(total) streams"
        }
    }
}
