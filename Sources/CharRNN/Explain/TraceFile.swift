import Foundation

/// A trace written as safetensors, for numpy and PyTorch users: T
/// characters, L layers, U recorded units, K alternatives.
///
/// | tensor | dtype | shape | holds |
/// | --- | --- | --- | --- |
/// | `tokens` | I32 | [T] | the text as vocabulary indices |
/// | `probability` | F32 | [T] | each character's probability (NaN for the first) |
/// | `surprise` | F32 | [T] | `-log p` in nats (NaN for the first) |
/// | `entropy` | F32 | [T] | the predicting distribution's entropy in nats (NaN for the first) |
/// | `top_tokens` | I32 | [T, K] | the K likeliest indices (-1 in the first row); when K > 0 |
/// | `top_probabilities` | F32 | [T, K] | their probabilities (NaN in the first row); when K > 0 |
/// | `units` | I32 | [U] | the recorded units, ascending; when U > 0 |
/// | `h` | F32 | [T, L, U] | the hidden values after each character; when U > 0 |
/// | `c` | F32 | [T, L, U] | the LSTM's cell state; when recorded |
///
/// The metadata hold `format` (`charrnn-trace`), `vocabulary` (a JSON array
/// of the characters, index order) and whatever the caller adds.
///
/// The header is written first (T is known), then each tensor's rows at
/// their places as the trace runs, a few hundred characters at a time: the
/// memory used does not grow with the text. The file appears under its name
/// only when complete.
public enum TraceFile {
    /// Why a trace file was not written.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// The file exists already; it is left as it was.
        case exists(path: String)
        /// Creating, writing or renaming the file failed.
        case file(path: String, reason: String)
        /// The model failed part-way; no file is left.
        case model(ModelError)

        public var description: String {
            switch self {
            case .exists(let path): return "'\(path)' exists already; choose another name or remove it"
            case .file(let path, let reason): return "cannot write '\(path)': \(reason)"
            case .model(let error): return error.description
            }
        }
    }

    /// Characters held per tensor before they are written.
    static let rowsPerWrite = 256

    /// Runs `trace` from where it is to its end, writing every character to
    /// a new file at `url`, with `metadata` added to the header's.
    /// `progress` is called after each character with the count done.
    /// - Throws: `Failure`; the file does not exist unless it is complete.
    public static func write(
        _ trace: inout TextTrace, to url: URL, metadata: [String: String] = [:], progress: (Int) -> Void = { _ in }
    ) throws(Failure) {
        guard !FileManager.default.fileExists(atPath: url.path) else { throw .exists(path: url.path) }
        let characters = trace.tokens.count - trace.position
        var layout = Layout(trace: trace, characters: characters)
        var allMetadata = metadata
        allMetadata["format"] = "charrnn-trace"
        allMetadata["vocabulary"] = "[" + trace.vocabulary.scalars.map { JSONString.literal(String($0)) }.joined(separator: ",") + "]"
        let header = SafeTensors.header(entries: layout.entries, metadata: allMetadata)
        var modelFailure: ModelError? = nil
        do throws(CheckpointError) {
            try AtomicFile.write(to: url) { (sink) throws(FileSink.Failure) in
                try sink.write(header)
                var done = 0
                while true {
                    let next: TracedCharacter?
                    do throws(ModelError) { next = try trace.next() } catch {
                        modelFailure = error
                        throw FileSink.Failure(operation: "stopped", code: 0)
                    }
                    guard let character = next else { break }
                    layout.append(character)
                    done += 1
                    if layout.heldRows == rowsPerWrite || done == characters {
                        try layout.flush(to: sink, dataStart: header.count)
                    }
                    progress(done)
                }
            }
        } catch {
            if let modelFailure { throw .model(modelFailure) }
            guard case .io(let reason) = error.problem else { throw .file(path: url.path, reason: error.problem.description) }
            throw .file(path: url.path, reason: reason)
        }
    }

    /// The tensors' places in the data section, and the rows held for each.
    struct Layout {
        let entries: [(name: String, dtype: String, shape: [Int], bytes: Int)]
        /// Each tensor's byte offset in the data section, and its bytes per character.
        private let offsets: [Int]
        private let rowBytes: [Int]
        /// The rows held, per tensor, for the characters from `firstHeld` on.
        private var held: [[UInt8]]
        private var firstHeld = 0
        private(set) var heldRows = 0
        private let top: Int
        private let units: [Int]
        private let recordsCell: Bool
        private let layers: Int

        init(trace: TextTrace, characters: Int) {
            let T = characters
            top = trace.top
            units = trace.units
            recordsCell = trace.recordsCell
            layers = trace.units.isEmpty ? 0 : trace.layerCount
            let U = units.count
            var entries: [(name: String, dtype: String, shape: [Int], bytes: Int)] = [
                ("tokens", "I32", [T], 4 * T), ("probability", "F32", [T], 4 * T), ("surprise", "F32", [T], 4 * T),
                ("entropy", "F32", [T], 4 * T),
            ]
            var rows = [4, 4, 4, 4]
            if top > 0 {
                entries += [("top_tokens", "I32", [T, top], 4 * T * top), ("top_probabilities", "F32", [T, top], 4 * T * top)]
                rows += [4 * top, 4 * top]
            }
            if U > 0 {
                // `units` is not per character: written once, before the first flush.
                entries.append(("units", "I32", [U], 4 * U))
                rows.append(0)
                entries.append(("h", "F32", [T, layers, U], 4 * T * layers * U))
                rows.append(4 * layers * U)
                if recordsCell {
                    entries.append(("c", "F32", [T, layers, U], 4 * T * layers * U))
                    rows.append(4 * layers * U)
                }
            }
            self.entries = entries
            var offset = 0
            var offsets: [Int] = []
            for entry in entries {
                offsets.append(offset)
                offset += entry.bytes
            }
            self.offsets = offsets
            rowBytes = rows
            held = rows.map { _ in [] }
            if U > 0, let index = entries.firstIndex(where: { $0.name == "units" }) {
                held[index] = Self.bytes(of: units.map { Int32($0) })
            }
        }

        mutating func append(_ character: TracedCharacter) {
            var index = 0
            func add(_ bytes: [UInt8]) {
                held[index] += bytes
                index += 1
            }
            add(Self.bytes(of: [character.token]))
            add(Self.bytes(of: [Float(character.probability ?? .nan)]))
            add(Self.bytes(of: [Float(character.surprise ?? .nan)]))
            add(Self.bytes(of: [Float(character.entropy ?? .nan)]))
            if top > 0 {
                // The first character has no alternatives: its row says so.
                let tokens = character.top.map(\.token)
                add(Self.bytes(of: tokens + [Int32](repeating: -1, count: top - tokens.count)))
                let probabilities = character.top.map { Float($0.probability) }
                add(Self.bytes(of: probabilities + [Float](repeating: .nan, count: top - probabilities.count)))
            }
            if !units.isEmpty {
                index += 1  // units: written once
                add(Self.bytes(of: Array(character.hidden.joined())))
                if recordsCell { add(Self.bytes(of: Array(character.cell.joined()))) }
            }
            heldRows += 1
        }

        /// Writes the held rows at their places and forgets them.
        mutating func flush(to sink: FileSink, dataStart: Int) throws(FileSink.Failure) {
            for index in entries.indices where !held[index].isEmpty {
                let place = dataStart + offsets[index] + (rowBytes[index] == 0 ? 0 : firstHeld * rowBytes[index])
                var failure: FileSink.Failure? = nil
                held[index].withUnsafeBytes { bytes in
                    do throws(FileSink.Failure) { try sink.write(bytes, at: place) } catch { failure = error }
                }
                if let failure { throw failure }
                held[index].removeAll(keepingCapacity: true)
            }
            firstHeld += heldRows
            heldRows = 0
        }

        static func bytes<T: FixedWidthInteger>(of values: [T]) -> [UInt8] {
            values.flatMap { value in withUnsafeBytes(of: value.littleEndian, Array.init) }
        }

        static func bytes(of values: [Float]) -> [UInt8] { bytes(of: values.map(\.bitPattern)) }
    }
}
