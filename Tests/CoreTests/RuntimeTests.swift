import CCharRNN
import Foundation
import Testing

/// Protects what the core says it runs on: the BLAS that actually runs and
/// the threading it was built with, which every speed figure is reported
/// beside. The package tells these tests what it built with
/// (Package.swift's `testDefines`).
@Suite("Runtime report")
struct RuntimeTests {
    private static func report() -> charrnn_runtime {
        var raw = charrnn_runtime()
        charrnn_runtime_get(&raw)
        return raw
    }

    private static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    @Test("The BLAS is named by the file its sgemm comes from, and that file exists")
    func theBLASIsTheFileThatRuns() throws {
        let raw = Self.report()
        let file = Self.string(raw.blas_file)
        let library = Self.string(raw.blas_library)
        #expect(file.hasPrefix("/") && FileManager.default.fileExists(atPath: file), "\(file)")
        #expect(!library.isEmpty && library != "unknown")
        // The process's own map of loaded files agrees: that file is mapped.
        // (/proc reports a size of 0: read to the end rather than by size.)
        let maps = String(
            decoding: try #require(FileHandle(forReadingAtPath: "/proc/self/maps")).readDataToEndOfFile(),
            as: UTF8.self)
        #expect(maps.contains(file), "\(file) is not mapped into the process")
    }

    @Test("The chosen BLAS is the one reported as running")
    func theChosenBLASIsReported() {
        let library = Self.string(Self.report().blas_library)
        #if CHARRNN_BLAS_OPENBLAS
            #expect(library.hasPrefix("OpenBLAS "), "\(library)")
        #elseif CHARRNN_BLAS_BLIS
            #expect(library.hasPrefix("BLIS "), "\(library)")
        #elseif CHARRNN_BLAS_FLEXIBLAS
            #expect(library.hasPrefix("FlexiBLAS "), "\(library)")
        #else
            // The reference CBLAS, or flags given by hand: whatever runs is named
            // by its file (on Debian, libblas.so.3 may be OpenBLAS's).
            #expect(!library.isEmpty, "\(library)")
        #endif
    }

    @Test("Each BLAS that says how many threads it runs runs one under the core")
    func theBLASRunsOneThread() {
        let raw = Self.report()
        let library = Self.string(raw.blas_library)
        if library.hasPrefix("OpenBLAS") && Self.string(raw.blas_config).contains("USE_OPENMP") {
            // OpenBLAS's OpenMP build: the core leaves its threads alone (setting them would
            // shrink the core's own teams); nested in the core's regions it runs one anyway.
        } else if library.hasPrefix("OpenBLAS") || library.hasPrefix("BLIS") || library.hasPrefix("FlexiBLAS") {
            #expect(raw.blas_threads == 1, "\(library): \(raw.blas_threads) threads")
        } else {
            #expect(raw.blas_threads == 0, "a library the core cannot ask says 0, got \(raw.blas_threads)")
        }
    }

    #if CHARRNN_BUILT_WITHOUT_OPENMP
        @Test("Built without OpenMP, the core says so, runs one thread and refuses more")
        func withoutOpenMPTheCoreRunsOneThread() {
            let raw = Self.report()
            #expect(Self.string(raw.threading) == "none (built without OpenMP)")
            #expect(raw.compute_threads == 1)
            #expect(charrnn_set_compute_threads(1) == CHARRNN_OK)
            #expect(charrnn_set_compute_threads(2) == CHARRNN_ERR_INVALID_ARGUMENT)
        }
    #else
        @Test("Built with OpenMP, the core names its runtime and takes the thread count it is given")
        func withOpenMPTheCoreNamesItsRuntime() {
            let threading = Self.string(Self.report().threading)
            #expect(threading.hasPrefix("OpenMP (libomp") || threading.hasPrefix("OpenMP (libgomp"), "\(threading)")
            let outcome = ThreadCountOutcome.onNewThread()
            #expect(outcome.settingThree == CHARRNN_OK && outcome.reported == 3)
            #expect(outcome.settingZero == CHARRNN_ERR_INVALID_ARGUMENT)
        }
    #endif
}

/// What one thread set and then read of its OpenMP thread count (the
/// count is per calling thread, so a thread of its own leaves every other
/// test's alone).
private final class ThreadCountOutcome: @unchecked Sendable {
    var settingThree = CHARRNN_OK, settingZero = CHARRNN_OK
    var reported: Int32 = 0

    static func onNewThread() -> ThreadCountOutcome {
        let outcome = ThreadCountOutcome()
        let done = DispatchSemaphore(value: 0)
        Thread {
            outcome.settingThree = charrnn_set_compute_threads(3)
            var raw = charrnn_runtime()
            charrnn_runtime_get(&raw)
            outcome.reported = raw.compute_threads
            outcome.settingZero = charrnn_set_compute_threads(0)
            done.signal()
        }.start()
        done.wait()
        return outcome
    }
}
