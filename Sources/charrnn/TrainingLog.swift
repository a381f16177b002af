import CharRNN
import Foundation

/// Prints a training run's events in the original notebook's format, one
/// flushed line each, so the log can be followed live or piped to a file.
/// The notebook's "Validation loss: X  Saving checkpoint!" is printed once
/// the checkpoint is saved, so it never announces a save that then fails.
final class TrainingLog {
    let dataPath: String
    /// The checkpoint a resumed run continues from.
    let resumedFrom: URL?
    /// A validation loss whose checkpoint is being written.
    private var pendingValidation: Float?

    init(dataPath: String, resumedFrom: URL?) {
        self.dataPath = dataPath
        self.resumedFrom = resumedFrom
    }

    /// Prints a validation whose checkpoint was not written (the run failed while saving).
    func flush() {
        if let loss = pendingValidation { line("Validation loss: \(String(format: "%.4f", loss))") }
        pendingValidation = nil
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case .started(let plan):
            let o = plan.options
            line("Corpus: \(dataPath), \(grouped(plan.corpusLength)) characters, \(plan.vocabularySize) distinct")
            line("Model: \(o.layerCount) \(o.cell.displayName) \(o.layerCount == 1 ? "layer" : "layers") × \(o.hiddenSize) units, \(grouped(plan.parameterCount)) parameters")
            line("Batches: \(o.batchSize) streams × \(o.steps) steps; \(plan.trainingBatches) training and "
                 + "\(plan.validationBatches) validation batches per epoch; \(o.epochs) epochs; "
                 + "\(plan.totalIterations) iterations")
            line("Training: Adam \(o.learningRate), keep probability \(o.keepProbability), "
                 + "gradient clip \(o.gradientClip), validation every \(o.saveEvery), seed \(o.seed)")
            line("Compute: \(plan.runtime)")
            if let resumed = plan.resumedFromIteration {
                line("Resuming from iteration \(resumed) of \(plan.totalIterations)" + (resumedFrom.map { " (\($0.path))" } ?? ""))
            }
        case .iteration(let r):
            line("Epoch \(r.epoch)/\(r.epochs)  Iteration \(r.iteration)/\(r.totalIterations)  "
                 + "Training loss: \(String(format: "%.4f", r.runningLoss))  "
                 + "\(String(format: "%.4f", r.secondsPerBatch)) sec/batch")
        case .validated(_, let loss):
            pendingValidation = loss
        case .checkpointSaved(let url, let isBest):
            line("Validation loss: \(String(format: "%.4f", pendingValidation ?? .nan))  Saving checkpoint!")
            pendingValidation = nil
            line("Saved \(url.path)\(isBest ? " (best so far: best.safetensors)" : "")")
        case .stopped(let summary):
            line("Stopped at iteration \(summary.iterations), best validation loss "
                 + "\(String(format: "%.4f", summary.bestValidationLoss))")
        case .finished(let summary):
            line("Done: \(summary.iterations) iterations, final validation loss "
                 + "\(String(format: "%.4f", summary.finalValidationLoss)), best "
                 + "\(String(format: "%.4f", summary.bestValidationLoss)), median "
                 + "\(String(format: "%.3f", summary.medianSecondsPerBatch)) sec/batch")
        }
    }

    private func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
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
