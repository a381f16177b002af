import CharRNN
import Foundation

extension JSONValue {
    /// What `charrnn inspect` shows, as one JSON object: the file, the model, the
    /// vocabulary (one string per character), the tensors, the run's progress
    /// and options (typed values under their metadata keys), and whether it
    /// can resume.
    public static func describing(_ checkpoint: Checkpoint, url: URL, size: Int) -> JSONValue {
        let c = checkpoint.configuration
        let meta = checkpoint.metadata
        var object: [String: JSONValue] = [
            "file": .string(url.path), "bytes": .int(size),
            "format": meta["format"].json { .string($0) }, "format_version": meta["format_version"].json { .parsing($0) },
            "cell": .string(c.cell.rawValue), "layers": .int(c.layerCount), "hidden_size": .int(c.hiddenSize),
            "vocabulary_size": .int(c.vocabularySize), "parameters": .int(c.parameterCount),
            "vocabulary": .array(checkpoint.vocabulary.scalars.map { .string(String($0)) }),
            "tensors": .array(
                c.tensors.map { tensor in
                    .object([
                        "name": .string(tensor.name), "shape": .array(tensor.shape.map { .int($0) }),
                        "dtype": .string("F32"), "offset": .int(tensor.offset),
                    ])
                }),
            "can_resume": .bool(checkpoint.hasTrainingState && checkpoint.progress != nil && checkpoint.trainingOptions != nil),
        ]
        if let progress = checkpoint.progress, let options = checkpoint.trainingOptions {
            object["run"] = .object([
                "run_id": .string(progress.runIdentity(options: options)), "iteration": .int(progress.iteration),
                "epoch": .int(progress.epoch), "val_loss": .float(progress.validationLoss),
                "best_val_loss": .float(progress.bestValidationLoss), "train_loss": .float(progress.trainingLoss),
                "lr": progress.learningRate.json { .float($0) },
            ])
        }
        let trainingKeys = [
            "cell", "hidden_size", "num_layers", "batch_size", "steps", "epochs", "learning_rate", "lr_schedule",
            "warmup", "lr_decay", "lr_decay_after", "lr_min", "lr_schedule_iterations", "patience", "keep_prob",
            "grad_clip", "precision", "val_frac", "save_every", "seed", "max_iterations", "keep",
        ]
        let options = trainingKeys.compactMap { key in meta[key].map { (key, key == "seed" ? JSONValue.string($0) : .parsing($0)) } }
        object["options"] = options.isEmpty ? .null : .object(Dictionary(uniqueKeysWithValues: options))
        return .object(object)
    }

}
