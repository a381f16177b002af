import CCharRNN

/// What the compute core runs on: the BLAS kernels and thread counts.
/// Report it beside any speed figure.
public struct ComputeRuntime: Sendable, Equatable, CustomStringConvertible {
    /// OpenBLAS's kernel set, e.g. `SkylakeX` (the slow fallback is `Prescott`).
    public let blasCore: String
    /// OpenBLAS's build configuration string.
    public let blasConfiguration: String
    /// Who chose the kernel set: the library, charrnn, or the user's `OPENBLAS_CORETYPE`.
    public let blasCoreSelectedBy: String
    /// OpenBLAS's own thread count (1: the core calls it from its OpenMP threads).
    public let blasThreads: Int
    /// OpenMP threads the core uses per call.
    public let computeThreads: Int
    /// How idle compute threads wait: charrnn's choice (sleep in training,
    /// spin in stepping) or the user's `KMP_BLOCKTIME` / `OMP_WAIT_POLICY`.
    public let threadWaiting: String

    /// Reads the facts from the core.
    public static var current: ComputeRuntime {
        var raw = charrnn_runtime()
        charrnn_runtime_get(&raw)
        func string<T>(_ tuple: T) -> String {
            withUnsafeBytes(of: tuple) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
        return ComputeRuntime(
            blasCore: string(raw.blas_core),
            blasConfiguration: string(raw.blas_config),
            blasCoreSelectedBy: string(raw.blas_core_selected_by),
            blasThreads: Int(raw.blas_threads),
            computeThreads: Int(raw.compute_threads),
            threadWaiting: string(raw.thread_waiting))
    }

    public var description: String {
        "OpenBLAS core \(blasCore) (chosen by \(blasCoreSelectedBy)), BLAS threads \(blasThreads), compute threads \(computeThreads), idle threads: \(threadWaiting)"
    }
}
