import Foundation

/// One line of a run's metrics file (`metrics.jsonl` in the run directory):
/// a JSON object per training iteration and per validation, in order.
///
/// Iteration records hold `loss` (the batch's loss), `running_loss` (the
/// epoch's mean so far, what the log prints), `grad_norm` (before clipping),
/// `lr`, `seconds` (the step's wall time) and `chars_per_second`; validation
/// records hold `val_loss`, `bpc` (bits per character, `val_loss / ln 2`) and
/// `best` (whether it is the lowest so far). In a run of several
/// processes, iteration records also hold `comm_seconds`: the part of the
/// step spent summing the gradient and loss over the processes (waiting
/// for the slowest included). Both hold `kind`, `iteration`
/// (from 1 over the whole run), `epoch` (from 1) and `time` (seconds since
/// 1970, UTC). Fields a kind does not have are absent.
public struct MetricsRecord: Sendable, Equatable, Codable {
    /// What a record reports.
    public enum Kind: String, Sendable, Codable {
        /// A training iteration.
        case iteration
        /// A validation of the model after an iteration.
        case validation
    }

    /// What the record reports.
    public var kind: Kind
    /// The iteration, from 1 over the whole run.
    public var iteration: Int
    /// The epoch, from 1.
    public var epoch: Int
    /// The batch's training loss (iteration records).
    public var loss: Float?
    /// The epoch's mean training loss so far (iteration records).
    public var runningLoss: Float?
    /// The gradient's global norm before clipping (iteration records).
    public var gradientNorm: Float?
    /// The learning rate of the step (iteration records).
    public var learningRate: Float?
    /// The step's wall time (iteration records).
    public var seconds: Double?
    /// Characters trained per second of the step (iteration records).
    public var charactersPerSecond: Double?
    /// The part of the step spent summing over the processes (iteration
    /// records of runs of several processes).
    public var communicationSeconds: Double?
    /// Mean loss over the validation split (validation records).
    public var validationLoss: Float?
    /// The validation loss in bits per character (validation records).
    public var bitsPerCharacter: Float?
    /// Whether the validation loss is the run's lowest so far (validation records).
    public var isBest: Bool?
    /// When the record was made, in seconds since 1970 (UTC).
    public var time: Double

    enum CodingKeys: String, CodingKey {
        case kind, iteration, epoch, loss
        case runningLoss = "running_loss"
        case gradientNorm = "grad_norm"
        case learningRate = "lr"
        case seconds
        case charactersPerSecond = "chars_per_second"
        case communicationSeconds = "comm_seconds"
        case validationLoss = "val_loss"
        case bitsPerCharacter = "bpc"
        case isBest = "best"
        case time
    }

    /// An iteration's record.
    public static func iteration(
        _ iteration: Int, epoch: Int, loss: Float, runningLoss: Float, gradientNorm: Float, learningRate: Float,
        seconds: Double, characters: Int, communicationSeconds: Double? = nil, time: Date = Date()
    ) -> MetricsRecord {
        MetricsRecord(
            kind: .iteration, iteration: iteration, epoch: epoch, loss: loss, runningLoss: runningLoss,
            gradientNorm: gradientNorm, learningRate: learningRate, seconds: seconds,
            charactersPerSecond: seconds > 0 ? Double(characters) / seconds : nil,
            communicationSeconds: communicationSeconds, time: time.timeIntervalSince1970)
    }

    /// A validation's record.
    public static func validation(_ iteration: Int, epoch: Int, loss: Float, isBest: Bool, time: Date = Date()) -> MetricsRecord {
        MetricsRecord(
            kind: .validation, iteration: iteration, epoch: epoch, validationLoss: loss,
            bitsPerCharacter: loss / Float(M_LN2), isBest: isBest, time: time.timeIntervalSince1970)
    }

    /// The record as one line of JSON (keys sorted), without the newline.
    public var jsonLine: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { preconditionFailure("a metrics record holds finite numbers") }
        return String(decoding: data, as: UTF8.self)
    }

    /// The records in a metrics file's text, in order. A line that is not a
    /// record (the last line of a run killed while writing it) is skipped.
    public static func records(inJSONLines text: String) -> [MetricsRecord] {
        let decoder = JSONDecoder()
        return text.split(separator: "\n").compactMap { line in try? decoder.decode(MetricsRecord.self, from: Data(line.utf8)) }
    }

    /// The records of the metrics file at `url`.
    /// - Throws: `RunDirectoryError.cannotRead` if it cannot be read.
    public static func records(contentsOf url: URL) throws(RunDirectoryError) -> [MetricsRecord] {
        do {
            return records(inJSONLines: try String(contentsOf: url, encoding: .utf8))
        } catch {
            throw .cannotRead(path: url.path, reason: (error as NSError).localizedDescription)
        }
    }
}
