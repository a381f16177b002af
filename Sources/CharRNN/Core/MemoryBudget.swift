import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What bounds the memory a process may take.
public enum MemoryLimit: String, Sendable, Equatable, Codable {
    /// The machine's available memory (`MemAvailable` in /proc/meminfo).
    case availableMemory
    /// The process's address-space limit (`ulimit -v`, RLIMIT_AS).
    case addressSpace
    /// The memory limit of the process's control group (a container's limit).
    case controlGroup

    /// The limit in words.
    public var description: String {
        switch self {
        case .availableMemory: return "the memory available on this machine"
        case .addressSpace: return "the process's address-space limit (ulimit -v), after what its libraries and threads map"
        case .controlGroup: return "its control group's memory limit"
        }
    }
}

/// More memory needed than the process may take: both figures, and which
/// limit applies.
public struct MemoryShortfall: Error, Equatable, Sendable, CustomStringConvertible {
    /// Bytes the work needs.
    public let requiredBytes: Int
    /// Bytes the process may still take.
    public let availableBytes: Int
    /// The limit that sets `availableBytes`.
    public let limit: MemoryLimit

    public var description: String {
        "needs \(MemoryBudget.format(requiredBytes)) of memory, but \(MemoryBudget.format(availableBytes)) "
            + "is left under \(limit.description)"
    }
}

/// How much memory this process may still take, so that work too large for
/// it is refused with figures before it starts, instead of ending in an
/// allocation failure or the kernel's out-of-memory killer halfway through.
public enum MemoryBudget {
    /// The smallest of: the machine's available memory, what the address-space
    /// limit leaves, and what the control group's limit leaves.
    public static func available() -> (bytes: Int, limit: MemoryLimit) {
        var best = (bytes: meminfo("MemAvailable") ?? Int.max, limit: MemoryLimit.availableMemory)
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {  // RLIM_INFINITY
            // Address space is taken by more than what the process fills (see
            // `addressSpaceReserve`); keep that much in hand.
            let used = status("VmSize") ?? 0
            let left = max(0, Int(clamping: limit.rlim_cur) - used - addressSpaceReserve)
            if left < best.bytes { best = (left, .addressSpace) }
        }
        if let left = controlGroupBytesLeft(), left < best.bytes { best = (left, .controlGroup) }
        return best
    }

    /// Address space kept back under an address-space limit for what the
    /// process maps without filling: per compute thread, OpenBLAS's 128 MB
    /// buffer (mapped at the thread's first product; when the map fails,
    /// OpenBLAS 0.3.21 retries forever instead of failing) and a 64 MB malloc
    /// arena; and 64 MB for stacks and the rest.
    public static var addressSpaceReserve: Int {
        max(1, ComputeRuntime.current.computeThreads) * (192 << 20) + (64 << 20)
    }

    /// Throws when `requiredBytes` is more than the process may take.
    public static func check(requiredBytes: Int) throws(MemoryShortfall) {
        let (bytes, limit) = available()
        if requiredBytes > bytes { throw MemoryShortfall(requiredBytes: requiredBytes, availableBytes: bytes, limit: limit) }
    }

    /// Bytes for `count` floats, saturating instead of overflowing.
    public static func floatBytes(_ count: Int) -> Int {
        let bytes = count.multipliedReportingOverflow(by: MemoryLayout<Float>.stride)
        return bytes.overflow ? Int.max : bytes.partialValue
    }

    /// Adds byte counts, saturating instead of overflowing.
    public static func sum(_ parts: Int...) -> Int {
        parts.reduce(0) { total, part in
            let next = total.addingReportingOverflow(part)
            return next.overflow ? Int.max : next.partialValue
        }
    }

    /// A byte count for people: "512 MB", "1.7 GB".
    public static func format(_ bytes: Int) -> String {
        let value = Double(bytes)
        if value >= 1e12 { return String(format: "%.1f TB", value / 1e12) }
        if value >= 1e9 { return String(format: "%.1f GB", value / 1e9) }
        if value >= 1e6 { return String(format: "%.0f MB", value / 1e6) }
        return String(format: "%.0f kB", value / 1e3)
    }

    /// A "Key:   N kB" line of /proc/meminfo, in bytes.
    private static func meminfo(_ key: String) -> Int? { kilobyteField(key, in: "/proc/meminfo") }

    /// A "Key:   N kB" line of /proc/self/status, in bytes.
    private static func status(_ key: String) -> Int? { kilobyteField(key, in: "/proc/self/status") }

    private static func kilobyteField(_ key: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let digits = line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first
            return digits.flatMap { Int($0) }.map { $0 * 1024 }
        }
        return nil
    }

    /// What the process's control group still allows: cgroup v2's
    /// memory.max − memory.current, or v1's limit_in_bytes − usage_in_bytes.
    private static func controlGroupBytesLeft() -> Int? {
        guard let lines = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        for line in lines.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let path = String(fields[2])
            var candidates: [(limit: String, usage: String)] = []
            if fields[0] == "0" && fields[1].isEmpty {
                candidates = [("/sys/fs/cgroup\(path)/memory.max", "/sys/fs/cgroup\(path)/memory.current")]
            } else if fields[1].split(separator: ",").contains("memory") {
                // Inside a container the group's own directory is often mounted as the root.
                candidates = [
                    ("/sys/fs/cgroup/memory\(path)/memory.limit_in_bytes", "/sys/fs/cgroup/memory\(path)/memory.usage_in_bytes"),
                    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
                ]
            }
            for candidate in candidates {
                guard let limit = number(candidate.limit) else { continue }  // "max" (no limit) does not parse
                if limit >= 1 << 62 { return nil }  // v1 writes "no limit" as a huge number
                return max(0, limit - (number(candidate.usage) ?? 0))
            }
        }
        return nil
    }
}
