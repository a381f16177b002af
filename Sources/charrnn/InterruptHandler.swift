import CharRNN
import Dispatch
import Foundation
import Synchronization

/// Turns SIGINT and SIGTERM into a clean stop of a training run: the first
/// raises the trainer's `StopSignal` (it finishes the iteration, writes a
/// checkpoint and returns); a second one ends the process at once, as the
/// signal would have (the checkpoints already written stay valid: every file
/// is written under a temporary name and renamed when complete).
final class InterruptHandler {
    /// What the trainer watches.
    let stop = StopSignal()
    /// The first signal received, or 0.
    private let first = FirstSignal()
    private let sources: [any DispatchSourceSignal]

    /// Where the first signal's number is kept.
    final class FirstSignal: Sendable {
        let number = Atomic<Int32>(0)
    }

    init() {
        let stop = self.stop, first = self.first
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                _ = first.number.compareExchange(expected: 0, desired: number, ordering: .sequentiallyConsistent)
                if stop.request() {
                    // A second signal: stop now, the way the signal itself would.
                    signal(number, SIG_DFL)
                    raise(number)
                } else {
                    FileHandle.standardError.write(Data(
                        "charrnn: stopping after this iteration and saving a checkpoint (press Ctrl-C again to stop at once)\n".utf8))
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// The exit status for a stopped run: 128 + the signal's number (130 for
    /// SIGINT, 143 for SIGTERM), as a shell reports a process a signal ended.
    var exitStatus: Int32 {
        let number = first.number.load(ordering: .sequentiallyConsistent)
        return 128 + (number == 0 ? SIGINT : number)
    }
}
