import CharRNN
import Foundation

/// A mistake in the command line itself, found by the CLI.
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Turns the library's errors, which carry values and name options by their
/// property names, into the one line the user sees: flag names, and what to
/// do about it. The only place that knows both.
enum ErrorMessage {
    /// The flag of a training option.
    static func flag(_ option: TrainingOptions.Option) -> String {
        switch option {
        case .cell: return "--cell"
        case .hiddenSize: return "--hidden"
        case .layerCount: return "--layers"
        case .batchSize: return "--batch"
        case .steps: return "--steps"
        case .epochs: return "--epochs"
        case .learningRate: return "--learning-rate"
        case .keepProbability: return "--keep-prob"
        case .gradientClip: return "--grad-clip"
        case .validationFraction: return "--val-frac"
        case .saveEvery: return "--save-every"
        case .seed: return "--seed"
        case .maxIterations: return "--max-iterations"
        case .keepBest: return "--keep"
        case .learningRateSchedule: return "--lr-schedule"
        case .warmupIterations: return "--warmup"
        case .learningRateDecay: return "--lr-decay"
        case .learningRateDecayAfter: return "--lr-decay-after"
        case .minimumLearningRate: return "--lr-min"
        case .scheduleIterations: return "--lr-schedule-iterations"
        case .patience: return "--patience"
        }
    }

    /// The flag of a sampling option.
    static func flag(_ option: SamplingOptions.Option) -> String {
        switch option {
        case .temperature: return "--temperature"
        case .topK: return "--top-k"
        case .topP: return "--top-p"
        case .length: return "--length"
        case .count: return "--count"
        case .stop: return "--stop"
        case .logprobs: return "--logprobs"
        }
    }

    /// The line for any error.
    static func line(_ error: Error) -> String {
        switch error {
        case let error as TrainingError: return training(error)
        case let error as RunDirectoryError: return runDirectory(error)
        case let error as SamplingError: return sampling(error)
        case let error as TraceError: return trace(error)
        case let error as TraceFile.Failure: return error.description.replacingOccurrences(of: "choose another name", with: "choose another --out")
        case let error as ModelError: return model(error)
        case let error as BatchingError: return batching(error)
        case let error as CustomStringConvertible: return error.description
        default: return "\(error)"
        }
    }

    static func training(_ error: TrainingError) -> String {
        switch error {
        case .invalidOption(let option, let value, let requirement):
            return "\(flag(option)) must be \(requirement) (got \(value))"
        case .batchTooLarge(let batchSize, let steps, let limit):
            return "--batch × --steps must be at most \(limit) (got \(batchSize) × \(steps))"
        case .runDirectory(let error): return runDirectory(error)
        case .batching(let error): return batching(error)
        case .model(let error): return model(error)
        case .diverged:
            return error.description + " (try a lower --learning-rate or a smaller --grad-clip); "
                + "no checkpoint with non-finite weights was written"
        case .incompatible(.weightsOnly, true):
            return error.description + " (use --init-from to start a new run from its weights)"
        case .incompatible(.shape(let checkpoint, _), false):
            return error.description
                + " (pass --cell \(checkpoint.cell) --hidden \(checkpoint.hiddenSize) --layers \(checkpoint.layerCount))"
        case .alreadyFinished(let iteration, _):
            return error.description + "; give --max-iterations above \(iteration) to train further"
        case .insufficientMemory:
            return error.description + "; a smaller --hidden, --layers, --batch or --steps needs less"
        case .patienceExhausted(let iteration, let validations, let patience):
            return "the run stopped at iteration \(iteration) after \(validations) validations without a new best "
                + "(--patience \(patience)); give a larger --patience to go on"
        case .corpus(let error):
            return error.description
        case .batchNotShared(let batchSize, let processes):
            return "--batch \(batchSize) cannot be shared equally among \(processes) processes (mpirun -np); "
                + "give a --batch that is a multiple of \(processes), or another process count"
        case .checkpoint, .incompatible, .processGroup, .otherProcessFailed, .processesDisagree, .processesDisagreeOnText:
            return error.description
        }
    }

    static func runDirectory(_ error: RunDirectoryError) -> String {
        switch error {
        case .notADirectory(let path): return "--out '\(path)' is a file; give a directory"
        case .holdsAnotherRun(let path, _):
            return error.description + "; continue that run with --resume \(path), or choose another --out"
        case .locked:
            return error.description + "; wait for it to end, or choose another --out"
        case .severalRuns:
            return error.description + "; give one checkpoint file instead of the directory"
        case .holdsForeignFile:
            return error.description + "; move it away, or choose another --out"
        default: return error.description
        }
    }

    static func sampling(_ error: SamplingError) -> String {
        switch error {
        case .invalidOption(let option, let value, let requirement):
            return "\(flag(option)) must be \(requirement) (got \(value))"
        case .unknownCharacters:
            return error.description + " (use --drop-unknown to leave them out)"
        case .model(let error): return model(error)
        default: return error.description
        }
    }

    static func trace(_ error: TraceError) -> String {
        switch error {
        case .unitOutOfRange(let unit, let hiddenSize):
            return "--units must be in 0-\(hiddenSize - 1), the model's layers having \(hiddenSize) units (got \(unit))"
        case .topOutOfRange(let top, let vocabularySize):
            return "--top must be in 0-\(vocabularySize), the size of the model's vocabulary (got \(top))"
        case .model(let error): return model(error)
        default: return error.description
        }
    }

    static func model(_ error: ModelError) -> String {
        switch error {
        case .nonFinite(.loss), .nonFinite(.logits):
            return error.description + ": the model's weights are too large for float arithmetic"
        default: return error.description
        }
    }

    static func batching(_ error: BatchingError) -> String {
        switch error {
        case .corpusTooShort: return error.description + " (try a smaller --batch or --steps)"
        default: return error.description
        }
    }
}
