import CharRNN
import Dispatch
import Foundation
import Synchronization

/// Turns SIGINT and SIGTERM into a clean stop of a training run: the first
/// raises the trainer's `StopSignal` (it finishes the iteration, writes a
/// checkpoint and returns); a second one ends the process at once, as the
/// signal would have (the checkpoints already written stay valid: every file
/// is written under a temporary name and renamed when complete).
///
/// SIGUSR1 asks for the same clean stop and never ends the process: it is
/// the signal Open MPI's `mpirun` passes on to every process of a job
/// (`kill -USR1` to mpirun), whereas on SIGINT or SIGTERM mpirun kills the
/// job's processes after a grace period of its own.
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

    /// - Parameter announces: whether the first signal's notice is printed
    ///   (in a run of several processes, rank 0 alone prints it).
    init(announces: Bool = true) {
        let stop = self.stop
        let first = self.first
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM, SIGUSR1] {
            signal(number, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                _ = first.number.compareExchange(expected: 0, desired: number, ordering: .sequentiallyConsistent)
                if stop.request() {
                    // A second signal: stop now, the way the signal itself would.
                    guard number != SIGUSR1 else { return }
                    signal(number, SIG_DFL)
                    raise(number)
                } else if announces {
                    FileHandle.standardError.write(
                        Data(
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
