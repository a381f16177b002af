// A fuzzing harness for the checkpoint loader: every byte string must give a
// checkpoint or a CheckpointProblem, never a crash, a hang or a huge allocation.
//
// Fuzz (libFuzzer, instrumenting the Swift library) for a bounded time:
//   Tools/CheckpointFuzzer/fuzz.sh 300
//
// Replay (a normal build; what CI builds): checkpoint-fuzzer FILE...
// prints what the loader says of each file.
import CharRNN
import Foundation

#if FUZZING
    /// libFuzzer's driver entry point (compiler-rt's FuzzerDriver).
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    /// SwiftPM links an executable's entry point as `<module>_main`, so libFuzzer's
    /// own `main` is not used; this one hands control to libFuzzer's driver.
    @_cdecl("checkpoint_fuzzer_main")
    func checkpointFuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
        var count = argc
        var arguments = argv
        return LLVMFuzzerRunDriver(&count, &arguments) { data, size in
            guard let data else { return 0 }
            _ = try? Checkpoint(bytes: Array(UnsafeBufferPointer(start: data, count: size)))
            return 0
        }
    }
#else
    @main
    struct CheckpointFuzzerReplay {
        static func main() {
            let paths = CommandLine.arguments.dropFirst()
            if paths.isEmpty {
                print("usage: checkpoint-fuzzer FILE... (build with -DFUZZING -sanitize=fuzzer to fuzz)")
            }
            for path in paths {
                guard let data = FileManager.default.contents(atPath: path) else {
                    print("\(path): unreadable")
                    continue
                }
                do {
                    let checkpoint = try Checkpoint(bytes: [UInt8](data))
                    let c = checkpoint.configuration
                    print("\(path): ok, V=\(c.vocabularySize) H=\(c.hiddenSize) L=\(c.layerCount), resumable: \(checkpoint.resumeState != nil)")
                } catch {
                    print("\(path): refused: \(error)")
                }
            }
        }
    }
#endif
