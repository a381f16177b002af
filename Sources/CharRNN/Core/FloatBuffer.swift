/// A fixed-size, 64-byte-aligned, zero-initialised block of `Float`s that the
/// Swift side owns and lends to the C core.
///
/// A reference type on purpose: the blocks are large (hundreds of MB for the
/// reference model's activations) and must never be copied implicitly.
public final class FloatBuffer {
    /// Number of floats in the block.
    public let count: Int
    /// The block's base address; valid for the buffer's lifetime.
    public let baseAddress: UnsafeMutablePointer<Float>

    /// Allocates `count` floats, all zero.
    public init(count: Int) {
        precondition(count >= 0, "FloatBuffer count must not be negative")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        baseAddress = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        baseAddress.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { baseAddress.deallocate() }

    /// A view of the whole block.
    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: baseAddress, count: count)
    }

    /// Sets every float to zero.
    public func zero() { baseAddress.update(repeating: 0, count: count) }

    /// Copies the block into an array.
    public func toArray() -> [Float] { Array(buffer) }

    /// Overwrites the block from `values`, which must have `count` elements.
    public func copy(from values: [Float]) {
        precondition(values.count == count, "copy(from:) needs exactly \(count) values")
        values.withUnsafeBufferPointer { baseAddress.update(from: $0.baseAddress!, count: count) }
    }
}
