import CharRNN
import CharRNNTools
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Prints a training run's events in one of four ways:
/// - `.notebook`: the original notebook's lines, one flushed line per
///   iteration (every `printEvery`-th when thinned), so the log can be
///   followed live or piped to a file;
/// - `.terminal`: one status line kept up to date in place (percent,
///   iteration, epoch, running loss, best validation, characters per second,
///   elapsed time, ETA), with validations and checkpoints scrolling above it;
/// - `.json`: one JSON object per event (README, "JSON output");
/// - `.quiet`: nothing (errors still go to standard error).
///
/// The notebook's "Validation loss: X  Saving checkpoint!" is printed once
/// the checkpoint is saved, so it never announces a save that then fails.
final class TrainingLog {
    enum Mode: Equatable {
        case notebook(printEvery: Int)
        case terminal
        case json(printEvery: Int)
        case quiet
    }

    let mode: Mode
    let dataPath: String
    /// The checkpoint a resumed run continues from.
    let resumedFrom: URL?
    /// A validation loss whose checkpoint is being written.
    private var pendingValidation: Float?
    /// The plan, once the run has started.
    private var plan: TrainingPlan?
    private var started = ContinuousClock.now
    private var bestValidation: Float?
    private var lastStatusDrawn: ContinuousClock.Instant?
    /// Whether a status line is on screen (and must be cleared before other output).
    private var statusShown = false

    init(mode: Mode, dataPath: String, resumedFrom: URL?) {
        self.mode = mode
        self.dataPath = dataPath
        self.resumedFrom = resumedFrom
    }

    /// Prints a validation whose checkpoint was not written (the run failed
    /// while saving) and clears the status line, before an error is printed.
    func flush() {
        if let loss = pendingValidation {
            switch mode {
            case .notebook, .terminal: line("Validation loss: \(String(format: "%.4f", loss))")
            case .json, .quiet: break
            }
        }
        pendingValidation = nil
        clearStatus()
    }

    /// Reports a failure as a JSON event (the one-line message also goes to standard error).
    func failed(_ message: String) {
        guard case .json = mode else { return }
        Self.printErrorEvent(message)
    }

    /// The `error` event `--json` prints, also before a log exists (a run refused at set-up).
    static func printErrorEvent(_ message: String) {
        JSONValue.object(["event": .string("error"), "message": .string(message)]).print()
    }

    func handle(_ event: TrainingEvent) {
        switch mode {
        case .quiet: return
        case .json(let printEvery): json(event, printEvery: printEvery)
        case .notebook(let printEvery): human(event, printEvery: printEvery)
        case .terminal: human(event, printEvery: nil)
        }
    }

    // MARK: - Human

    private func human(_ event: TrainingEvent, printEvery: Int?) {
        switch event {
        case .started(let plan):
            self.plan = plan
            started = .now
            bestValidation = plan.bestValidationLoss
            let o = plan.options
            line("Corpus: \(dataPath), \(grouped(plan.corpusLength)) characters, \(plan.vocabularySize) distinct")
            line(
                "Model: \(o.layerCount) \(o.cell.displayName) \(o.layerCount == 1 ? "layer" : "layers") × \(o.hiddenSize) units, \(grouped(plan.parameterCount)) parameters"
            )
            line(
                "Batches: \(o.batchSize) streams × \(o.steps) steps; \(plan.trainingBatches) training and "
                    + "\(plan.validationBatches) validation batches per epoch; \(o.epochs) epochs; "
                    + "\(plan.totalIterations) iterations")
            line(
                "Training: Adam \(o.learningRate)" + (o.learningRateSchedule == .constant && o.warmupIterations == 0 ? "" : " \(o.scheduleSummary)")
                    + ", keep probability \(o.keepProbability), gradient clip \(o.gradientClip), validation every \(o.saveEvery)"
                    + (o.patience.map { ", patience \($0)" } ?? "") + ", seed \(o.seed)"
                    + (o.precision == .bfloat16 ? ", bf16 products (\(plan.runtime.bf16Kernel))" : ""))
            line(
                "Compute: \(plan.runtime)"
                    + (plan.processCount > 1
                        ? "; \(plan.processCount) processes (MPI), \(o.batchSize / plan.processCount) streams each, gradients summed every step" : "")
            )
            if let resumed = plan.resumedFromIteration {
                line("Resuming from iteration \(resumed) of \(plan.totalIterations)" + (resumedFrom.map { " (\($0.path))" } ?? ""))
            }
        case .iteration(let r):
            if let printEvery {
                guard r.iteration % printEvery == 0 || r.iteration == r.totalIterations else { return }
                line(
                    "Epoch \(r.epoch)/\(r.epochs)  Iteration \(r.iteration)/\(r.totalIterations)  "
                        + "Training loss: \(String(format: "%.4f", r.runningLoss))  "
                        + "\(String(format: "%.4f", r.secondsPerBatch)) sec/batch")
            } else {
                status(r)
            }
        case .validated(_, let loss, let isBest):
            pendingValidation = loss
            if isBest { bestValidation = loss }
        case .checkpointSaved(let url, let isBest):
            line("Validation loss: \(String(format: "%.4f", pendingValidation ?? .nan))  Saving checkpoint!")
            pendingValidation = nil
            line("Saved \(url.path)\(isBest ? " (best so far: best.safetensors)" : "")")
        case .stopped(let summary):
            line(
                "Stopped at iteration \(summary.iterations), best validation loss "
                    + "\(String(format: "%.4f", summary.bestValidationLoss))")
        case .finished(let summary):
            if summary.stoppedByPatience, let patience = plan?.options.patience {
                line("Stopped early at iteration \(summary.iterations): \(patience) validations without a new best (--patience \(patience))")
            }
            line(
                "Done: \(summary.iterations) iterations, final validation loss "
                    + "\(String(format: "%.4f", summary.finalValidationLoss)), best "
                    + "\(String(format: "%.4f", summary.bestValidationLoss)), median "
                    + "\(String(format: "%.3f", summary.medianSecondsPerBatch)) sec/batch")
        }
    }

    /// Redraws the status line (at most five times a second, and at the last iteration).
    private func status(_ r: IterationReport) {
        let now = ContinuousClock.now
        if let last = lastStatusDrawn, (now - last) < .milliseconds(200), r.iteration < r.totalIterations { return }
        lastStatusDrawn = now
        let elapsed = Self.seconds(now - started)
        let done = r.iteration - (plan?.resumedFromIteration ?? 0)
        let remaining = r.totalIterations - r.iteration
        let eta = done > 0 ? elapsed / Double(done) * Double(remaining) : .nan
        // Most wanted first: a narrow terminal cuts the end.
        var parts = [
            String(format: "%3.0f%%", 100 * Double(r.iteration) / Double(max(r.totalIterations, 1))),
            "\(r.iteration)/\(r.totalIterations)",
            "ETA \(Self.clock(eta))",
            "loss \(String(format: "%.4f", r.runningLoss))",
            "best val " + (bestValidation.map { String(format: "%.4f", $0) } ?? "–"),
            "epoch \(r.epoch)/\(r.epochs)",
            "\(grouped(Int((Double(r.characters) / max(r.secondsPerBatch, 1e-9)).rounded()))) chars/s",
            "elapsed \(Self.clock(elapsed))",
        ]
        if let plan, plan.options.learningRateSchedule != .constant || plan.options.warmupIterations > 0 {
            parts.append("lr \(String(format: "%.2e", r.learningRate))")
        }
        var text = parts.joined(separator: "  ")
        let width = Self.terminalWidth()
        if text.count >= width { text = String(text.prefix(max(width - 1, 10))) }
        write("\r\u{1B}[2K" + text)
        statusShown = true
    }

    /// Clears the status line so the next output starts on a clean line.
    private func clearStatus() {
        guard statusShown else { return }
        write("\r\u{1B}[2K")
        statusShown = false
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    /// Seconds as h:mm:ss or m:ss.
    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "–" }
        let total = Int(seconds.rounded())
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60)
        return h > 0 ? String(format: "%d:%02d:%02d", h, m, s) : String(format: "%d:%02d", m, s)
    }

    static func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return 100
    }

    // MARK: - JSON

    private func json(_ event: TrainingEvent, printEvery: Int) {
        switch event {
        case .started(let plan):
            let o = plan.options
            JSONValue.object([
                "event": .string("started"), "data": .string(dataPath), "characters": .int(plan.corpusLength),
                "vocabulary_size": .int(plan.vocabularySize), "parameters": .int(plan.parameterCount),
                "cell": .string(o.cell.rawValue), "hidden_size": .int(o.hiddenSize), "layers": .int(o.layerCount),
                "batch_size": .int(o.batchSize), "steps": .int(o.steps), "epochs": .int(o.epochs),
                "training_batches": .int(plan.trainingBatches), "validation_batches": .int(plan.validationBatches),
                "total_iterations": .int(plan.totalIterations), "learning_rate": .float(o.learningRate),
                "lr_schedule": .string(o.learningRateSchedule.rawValue), "warmup": .int(o.warmupIterations),
                "keep_prob": .float(o.keepProbability), "grad_clip": .float(o.gradientClip), "save_every": .int(o.saveEvery),
                "patience": o.patience.json { .int($0) }, "seed": .string(String(o.seed)), "precision": .string(o.precision.rawValue),
                "resumed_from": plan.resumedFromIteration.json { .int($0) }, "compute": .string("\(plan.runtime)"),
                "processes": .int(plan.processCount),
            ]).print()
        case .iteration(let r):
            guard r.iteration % printEvery == 0 || r.iteration == r.totalIterations else { return }
            JSONValue.object([
                "event": .string("iteration"), "iteration": .int(r.iteration), "total_iterations": .int(r.totalIterations),
                "epoch": .int(r.epoch), "loss": .float(r.batchLoss), "running_loss": .float(r.runningLoss),
                "grad_norm": .float(r.gradientNorm), "lr": .float(r.learningRate), "seconds": .double(r.secondsPerBatch),
                "chars_per_second": .double(Double(r.characters) / max(r.secondsPerBatch, 1e-9)),
            ]).print()
        case .validated(let iteration, let loss, let isBest):
            JSONValue.object([
                "event": .string("validation"), "iteration": .int(iteration), "val_loss": .float(loss),
                "bpc": .float(loss / Float(M_LN2)), "best": .bool(isBest),
            ]).print()
        case .checkpointSaved(let url, let isBest):
            JSONValue.object(["event": .string("checkpoint"), "path": .string(url.path), "best": .bool(isBest)]).print()
        case .finished(let summary), .stopped(let summary):
            let name: String
            if case .stopped = event { name = "stopped" } else { name = "finished" }
            JSONValue.object([
                "event": .string(name), "iterations": .int(summary.iterations),
                "final_val_loss": .float(summary.finalValidationLoss), "best_val_loss": .float(summary.bestValidationLoss),
                "median_seconds_per_batch": .double(summary.medianSecondsPerBatch),
                "stopped_by_patience": .bool(summary.stoppedByPatience),
                "last_checkpoint": summary.lastCheckpoint.json { .string($0.path) },
            ]).print()
        }
    }

    // MARK: - Output

    private func line(_ text: String) {
        clearStatus()
        write(text + "\n")
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    private func grouped(_ value: Int) -> String {
        let digits = Array(String(value))
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out += "," }
            out.append(digit)
        }
        return out
    }
}
