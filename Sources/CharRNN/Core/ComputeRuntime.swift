import CCharRNN

/// What the compute core runs on: the BLAS library that actually runs, its
/// kernels, the threading and thread counts. Report it beside any speed figure.
public struct ComputeRuntime: Sendable, Equatable, CustomStringConvertible {
    /// The BLAS that runs, e.g. `OpenBLAS 0.3.21` or `BLIS 0.9.0`; for a
    /// library the core does not know by name, its file's name
    /// (`libblas.so.3.11.0`, the reference CBLAS on Debian).
    public let blasLibrary: String
    /// The file the core's matrix products come from, links resolved.
    public let blasFile: String
    /// The BLAS's kernels where it names them: OpenBLAS's kernel set
    /// (`SkylakeX`; the slow fallback is `Prescott`), BLIS's configuration,
    /// FlexiBLAS's backend; empty otherwise.
    public let blasCore: String
    /// OpenBLAS's build configuration string; empty for other libraries.
    public let blasConfiguration: String
    /// OpenBLAS only: who chose the kernel set, the library, charrnn, or the
    /// user's `OPENBLAS_CORETYPE`; empty for other libraries.
    public let blasCoreSelectedBy: String
    /// The BLAS's own thread count (1: the core calls it from its own
    /// threads); 0 when the library does not say.
    public let blasThreads: Int
    /// The threading the core was built with: `OpenMP (libomp.so.5)`, or
    /// `none (built without OpenMP)`.
    public let threading: String
    /// Threads a team of the core actually has (a region is run to count
    /// them; teams keep this size, `OMP_DYNAMIC` does not shrink them); 1
    /// without OpenMP.
    public let computeThreads: Int
    /// The fixed blocks training's work is split into, whatever the team:
    /// the processors the process could use when the core was loaded. A
    /// run's bits depend on this, never on the thread count.
    public let workBlocks: Int
    /// How idle compute threads wait: charrnn's choice (sleep in training,
    /// spin in stepping), the user's `KMP_BLOCKTIME` / `OMP_WAIT_POLICY`, or
    /// the OpenMP runtime's own.
    public let threadWaiting: String
    /// The kernel of bf16 products (`--precision bf16`): `AVX512_BF16`, or
    /// `portable (why)` (the same bits, several times slower than fp32).
    public let bf16Kernel: String
    /// The kernel of the recurrent products in training: `packed AVX-512` or
    /// `packed AVX2` (our own, on W_hh packed once per pass), or `BLAS (why)`.
    public let recurrentProducts: String

    /// Whether the core was built with OpenMP (and so can use more than one thread).
    public var hasOpenMP: Bool { threading.hasPrefix("OpenMP") }

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
            blasLibrary: string(raw.blas_library),
            blasFile: string(raw.blas_file),
            blasCore: string(raw.blas_core),
            blasConfiguration: string(raw.blas_config),
            blasCoreSelectedBy: string(raw.blas_core_selected_by),
            blasThreads: Int(raw.blas_threads),
            threading: string(raw.threading),
            computeThreads: Int(raw.compute_threads),
            workBlocks: Int(raw.work_blocks),
            threadWaiting: string(raw.thread_waiting),
            bf16Kernel: string(raw.bf16_kernel),
            recurrentProducts: string(raw.recurrent_products))
    }

    /// One line, e.g. `BLAS OpenBLAS 0.3.21 (kernels Haswell, chosen by
    /// charrnn; 1 thread), OpenMP (libomp.so.5) with 2 threads, work in 2
    /// fixed blocks, idle threads: sleep in training, spin 200 ms in stepping,
    /// recurrent products: packed AVX2, bf16 products: AVX512_BF16`.
    public var description: String {
        var blas: [String] = []
        if !blasCore.isEmpty {
            // FlexiBLAS forwards to a backend, which is what it names.
            let kind = blasLibrary.hasPrefix("FlexiBLAS") ? "backend" : "kernels"
            blas.append("\(kind) \(blasCore)" + (blasCoreSelectedBy.isEmpty ? "" : ", chosen by \(blasCoreSelectedBy)"))
        }
        blas.append(blasThreads > 0 ? "\(blasThreads) thread\(blasThreads == 1 ? "" : "s")" : "threads not known")
        let threads =
            hasOpenMP
            ? "\(threading) with \(computeThreads) thread\(computeThreads == 1 ? "" : "s"), work in \(workBlocks) fixed block\(workBlocks == 1 ? "" : "s")"
            : "no OpenMP (built without): 1 thread"
        return
            "BLAS \(blasLibrary) (\(blas.joined(separator: "; "))), \(threads), idle threads: \(threadWaiting), recurrent products: \(recurrentProducts), bf16 products: \(bf16Kernel)"
    }
}
