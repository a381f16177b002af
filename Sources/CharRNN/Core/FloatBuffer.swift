import Foundation

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

    /// Allocates `count` floats, all zero. Throws `MemoryShortfall` when the
    /// block is more than the process may take (checked first, so a block
    /// too large for the machine is refused instead of being half-touched
    /// before the kernel kills the process) or the allocation fails.
    public init(count: Int) throws(MemoryShortfall) {
        precondition(count >= 0, "FloatBuffer count must not be negative")
        let bytes = MemoryBudget.floatBytes(max(count, 1))
        try MemoryBudget.check(requiredBytes: bytes)
        var raw: UnsafeMutableRawPointer? = nil
        guard bytes < Int.max, posix_memalign(&raw, 64, bytes) == 0, let raw else {
            let (available, limit) = MemoryBudget.available()
            throw MemoryShortfall(requiredBytes: bytes, availableBytes: available, limit: limit)
        }
        self.count = count
        baseAddress = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        baseAddress.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { free(baseAddress) }

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
