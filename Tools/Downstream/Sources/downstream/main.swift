// Uses the CharRNN library the way an app would: train a small model on a
// text, save a checkpoint, load it back, and check the loss is the same.
import CharRNN
import Foundation

let text = String(repeating: "It was the best of times, it was the worst of times, it was the age of wisdom.\n", count: 60)
var options = TrainingOptions()
options.hiddenSize = 32
options.batchSize = 8
options.steps = 25
options.epochs = 3
options.saveEvery = 10
options.learningRate = 0.005

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("charrnn-downstream-\(getpid())")
defer { try? FileManager.default.removeItem(at: directory) }

do {
    let trainer = try Trainer(corpus: Corpus(text: text), options: options, outputDirectory: directory)
    var firstLoss: Float?
    let summary = try trainer.run { event in
        if case .iteration(let report) = event, firstLoss == nil { firstLoss = report.batchLoss }
    }
    let checkpoint = try Checkpoint(contentsOf: directory.appendingPathComponent("best.safetensors"))
    let model = try checkpoint.makeModel()
    print("downstream: \(ComputeRuntime.current)")
    print(
        "downstream: \(summary.iterations) iterations, first batch loss \(firstLoss ?? .nan), "
            + "best validation loss \(summary.bestValidationLoss), reloaded \(model.parameterCount) parameters "
            + "and \(checkpoint.vocabulary.count) characters")
    guard let first = firstLoss, summary.bestValidationLoss < first else {
        print("downstream: FAILED: the model did not learn")
        exit(1)
    }
    print("downstream: OK")
} catch {
    print("downstream: FAILED: \(error)")
    exit(1)
}
