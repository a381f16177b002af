import ArgumentParser
import CharRNN
import Foundation

/// The `charrnn` command: train character-level recurrent networks and write text with them.
@main
struct CharRNNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "charrnn",
        abstract: "Train a character-level LSTM, GRU or RNN on any text, in the style of Karpathy's char-rnn.",
        version: CharRNNVersion.current,
        subcommands: [
            TrainCommand.self, SampleCommand.self, EvalCommand.self, TraceCommand.self, InspectCommand.self, BenchCommand.self, PlotCommand.self,
        ])

    static func main() {
        // A write past the file-size limit (ulimit -f) then fails with EFBIG
        // and is reported like a full disk, instead of killing the process.
        signal(SIGXFSZ, SIG_IGN)
        main(nil)
    }
}

/// Prints one error line to standard error and exits non-zero.
func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("charrnn: error: \(message)\n".utf8))
    return ExitCode.failure
}

/// Prints the line for a library or usage error (see `ErrorMessage`) and exits non-zero.
func fail(_ error: Error) -> ExitCode {
    fail(ErrorMessage.line(error))
}
