/// The recurrent states after recent primes, so a request whose prime equals
/// or extends one fed before starts from its state and feeds only the rest:
/// an RNN's whole memory of a text is a few kilobytes, however long the text.
///
/// An entry is the state after all of a prime but its last character (a
/// request must feed at least one character to get the scores of its first
/// draw), keyed by those characters. `charrnn_prime` gives the same bits
/// however a prime is cut into calls, so the state a request starts from is
/// the one it would reach alone, and its text is exactly the text it gets
/// without the cache. Bounded in bytes (keys and states counted); the
/// least recently used entries go first. Used by the scheduler's thread alone.
final class PrimeStateCache {
    /// Primes shorter than this are not cached: feeding them costs little.
    static let minimumCharacters = 64

    private struct Entry {
        let key: [Int32]
        let state: RecurrentState
        var lastUse: UInt64
        var bytes: Int { key.count * MemoryLayout<Int32>.size + state.values.count * MemoryLayout<Float>.size }
    }

    /// The most bytes the entries may hold.
    let capacityBytes: Int
    private var entries: [Entry] = []
    private var clock: UInt64 = 0
    /// Bytes the entries hold now.
    private(set) var bytes = 0
    /// Entries held now.
    var count: Int { entries.count }

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    /// The longest entry whose key begins `prime` and is shorter than it: the
    /// characters it stands for, and the state after them (one stream).
    func longestPrefix(of prime: [Int32]) -> (characters: Int, state: RecurrentState)? {
        var best: Int? = nil
        for index in entries.indices {
            let key = entries[index].key
            let longestSoFar = best.map { entries[$0].key.count } ?? 0
            guard key.count < prime.count && key.count > longestSoFar else { continue }
            if prime.starts(with: key) { best = index }
        }
        guard let best else { return nil }
        clock += 1
        entries[best].lastUse = clock
        return (entries[best].key.count, entries[best].state)
    }

    /// Keeps `state`, the state after `key`, evicting the least recently used
    /// entries to make room; an entry larger than the whole cache is not kept.
    func insert(key: [Int32], state: RecurrentState) {
        clock += 1
        if let existing = entries.firstIndex(where: { $0.key == key }) {
            entries[existing].lastUse = clock
            return
        }
        let entry = Entry(key: key, state: state, lastUse: clock)
        guard entry.bytes <= capacityBytes else { return }
        while bytes + entry.bytes > capacityBytes, let oldest = entries.indices.min(by: { entries[$0].lastUse < entries[$1].lastUse }) {
            bytes -= entries[oldest].bytes
            entries.remove(at: oldest)
        }
        entries.append(entry)
        bytes += entry.bytes
    }
}
