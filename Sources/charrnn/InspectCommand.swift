import ArgumentParser
import CharRNN
import CharRNNTools
import Foundation

/// `charrnn inspect`: what a checkpoint holds.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a checkpoint's configuration, vocabulary, tensors, training state and whether it can resume.")

    @Argument(help: "A checkpoint file, or a training output directory (its best.safetensors).")
    var path: String

    @Flag(name: .long, help: "Print one JSON object instead of the text (see README, JSON output).")
    var json = false

    func run() throws {
        do {
            let url = try CheckpointLocator.best(path)
            let checkpoint = try Checkpoint(contentsOf: url, trainingState: false)
            let meta = checkpoint.metadata
            let c = checkpoint.configuration
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            if json {
                JSONValue.describing(checkpoint, url: url, size: size).print()
                return
            }
            print("File: \(url.path) (\(size) bytes), format \(meta["format"] ?? "unnamed") \(meta["format_version"] ?? "")")
            print(
                "Model: \(c.layerCount) \(c.cell.displayName) \(c.layerCount == 1 ? "layer" : "layers") × \(c.hiddenSize) units, vocabulary \(c.vocabularySize), \(c.parameterCount) parameters"
            )
            print("Vocabulary: \(Self.printable(checkpoint.vocabulary))")
            print("Tensors:")
            for tensor in c.tensors {
                let shape = "[" + tensor.shape.map(String.init).joined(separator: ", ") + "]"
                print(
                    "  \(tensor.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(shape.padding(toLength: 12, withPad: " ", startingAt: 0)) F32  offset \(tensor.offset)"
                )
            }
            if let progress = checkpoint.progress, let options = checkpoint.trainingOptions {
                print("Run: \(progress.runIdentity(options: options))" + (progress.runID == nil ? " (written before runs had identities)" : ""))
                print(
                    "Training: iteration \(progress.iteration), epoch \(progress.epoch) of \(options.epochs), "
                        + "validation loss \(progress.validationLoss), best so far \(progress.bestValidationLoss), "
                        + "training loss \(progress.trainingLoss)" + (progress.learningRate.map { ", learning rate \($0)" } ?? ""))
            }
            let settings = [
                "batch_size", "steps", "learning_rate", "lr_schedule", "warmup", "lr_decay", "lr_decay_after", "lr_min",
                "lr_schedule_iterations", "keep_prob", "grad_clip", "precision", "val_frac", "save_every", "seed",
                "max_iterations", "keep", "patience",
            ]
            .compactMap { key in meta[key].map { "\(key) \($0)" } }
            if !settings.isEmpty { print("Hyperparameters: " + settings.joined(separator: ", ")) }
            if checkpoint.hasTrainingState, let progress = checkpoint.progress, let options = checkpoint.trainingOptions {
                print("Can resume: yes (Adam step \(progress.iteration), carried state for \(options.batchSize) streams)")
            } else {
                print("Can resume: no (weights only; use it with sample, eval or train --init-from)")
            }
        } catch {
            throw fail(error)
        }
    }

    /// The vocabulary as one JSON string, control characters escaped.
    static func printable(_ vocabulary: Vocabulary) -> String {
        var text = ""
        text.unicodeScalars.append(contentsOf: vocabulary.scalars)
        return JSONString.literal(text) + " (\(vocabulary.count) characters)"
    }
}
