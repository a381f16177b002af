import CharRNN
import Foundation
import Testing

/// Protects `TextTrace` and `TraceFile`: a trace's surprise is the model's
/// evaluation loss, its activations are the model's state, its
/// alternatives are the distribution's likeliest, and its file holds the
/// same numbers as its stream.
@Suite("Traces")
struct TraceTests {
    static let vocabulary = try! Vocabulary(scalars: Array("abcdefghijklmnopqrstuvwxyz .,\"\n".unicodeScalars))
    static let text = "the \"quick\" brown fox, jumps over.\nthe lazy dog \"runs\" home."

    /// A model with weights large enough for peaked distributions (set from
    /// their position, so no generator is shared with the code under test).
    static func generator(cell: Cell, hiddenSize: Int = 24, layers: Int = 2) throws -> TextGenerator {
        let configuration = ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: hiddenSize, layerCount: layers, cell: cell)
        let values = (0..<configuration.parameterCount).map { Float(0.6 * sin(Double($0) * 0.917 + 0.2)) }
        let model = try Model(configuration: configuration, parameters: values, purpose: .training)
        return try TextGenerator(model: model, vocabulary: vocabulary)
    }

    static func all(_ trace: inout TextTrace) throws -> [TracedCharacter] {
        var characters: [TracedCharacter] = []
        while let character = try trace.next() { characters.append(character) }
        return characters
    }

    @Test("The mean surprise of a trace equals the evaluation loss of the text, for every cell", arguments: Cell.allCases)
    func meanSurpriseIsTheEvaluationLoss(cell: Cell) throws {
        let generator = try Self.generator(cell: cell)
        let tokens = try Self.vocabulary.encode(Self.text.unicodeScalars)
        var trace = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions())
        let characters = try Self.all(&trace)
        let evaluation = try Evaluation.wholeText(of: generator.model, tokens: tokens)
        #expect(characters.count == tokens.count)
        #expect(trace.predictions == evaluation.predictions)
        #expect(abs(trace.meanSurprise - evaluation.meanLoss) <= 1e-5 * evaluation.meanLoss, "\(trace.meanSurprise) against \(evaluation.meanLoss)")
        let summed = characters.compactMap(\.surprise).reduce(0, +) / Double(evaluation.predictions)
        #expect(summed == trace.meanSurprise, "the characters' surprises are what the mean averages")
        #expect(characters[0].logprob == nil && characters[0].entropy == nil && characters[0].top.isEmpty, "nothing predicts the first character")
    }

    @Test("A trace's hidden values and cell state equal the model's state after feeding the same characters", arguments: Cell.allCases)
    func activationsAreTheState(cell: Cell) throws {
        let generator = try Self.generator(cell: cell)
        let configuration = generator.model.configuration
        let tokens = try Self.vocabulary.encode("a \"b\" c.".unicodeScalars)
        var trace = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .all))
        let characters = try Self.all(&trace)
        let H = configuration.hiddenSize
        let L = configuration.layerCount
        for length in 1...tokens.count {
            // The training pass over the prefix, from a zero state: its final state.
            var state = RecurrentState(configuration: configuration, batchSize: 1)
            let batch = try Batch(batchSize: 1, steps: length, inputs: Array(tokens[0..<length]), targets: [Int32](repeating: 0, count: length))
            _ = try generator.model.loss(on: batch, state: &state)
            let traced = characters[length - 1]
            for layer in 0..<L {
                let h = Array(state.values[layer * H..<(layer + 1) * H])
                #expect(zip(traced.hidden[layer], h).allSatisfy { abs($0 - $1) <= 1e-5 }, "h, layer \(layer), after \(length)")
                if cell == .lstm {
                    let c = Array(state.values[(L + layer) * H..<(L + layer + 1) * H])
                    #expect(zip(traced.cell[layer], c).allSatisfy { abs($0 - $1) <= 1e-5 }, "c, layer \(layer), after \(length)")
                } else {
                    #expect(traced.cell.isEmpty, "only the LSTM has a cell state")
                }
            }
        }
    }

    @Test("Chosen units are recorded in ascending order, once each, from every layer")
    func chosenUnitsAreASliceOfAllUnits() throws {
        let generator = try Self.generator(cell: .lstm)
        let tokens = try Self.vocabulary.encode("abc".unicodeScalars)
        var everything = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .all))
        var chosen = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .listed([17, 3, 17, 0])))
        #expect(chosen.units == [0, 3, 17])
        for (whole, part) in zip(try Self.all(&everything), try Self.all(&chosen)) {
            #expect(part.hidden == whole.hidden.map { [$0[0], $0[3], $0[17]] })
            #expect(part.cell == whole.cell.map { [$0[0], $0[3], $0[17]] })
        }
        var none = try TextTrace(generator: generator, tokens: tokens, options: TraceOptions())
        #expect(try Self.all(&none).allSatisfy { $0.hidden.allSatisfy(\.isEmpty) && $0.cell.isEmpty })
    }

    @Test("The alternatives are the distribution's likeliest, in order, and the entropy is the distribution's")
    func alternativesAndEntropyDescribeTheDistribution() throws {
        let generator = try Self.generator(cell: .gru)
        let size = Self.vocabulary.count
        var trace = try TextTrace(generator: generator, text: Self.text, options: TraceOptions(units: .none, top: size))
        var few = try TextTrace(generator: generator, text: Self.text, options: TraceOptions(units: .none, top: 3))
        let whole = try Self.all(&trace)
        // A few of many are picked in one pass, not by sorting: the same characters, in the same order.
        #expect(try Self.all(&few).map { $0.top.map(\.token) } == whole.map { Array($0.top.prefix(3).map(\.token)) })
        for character in whole.dropFirst() {
            let probabilities = character.top.map(\.probability)
            #expect(character.top.count == size)
            #expect(abs(probabilities.reduce(0, +) - 1) < 1e-9, "the whole distribution sums to 1")
            #expect(zip(probabilities, probabilities.dropFirst()).allSatisfy { $0 >= $1 }, "likeliest first")
            #expect(Set(character.top.map(\.character)).count == size)
            let own = character.top.first { $0.character == character.character }
            #expect(own.map { abs($0.probability - (character.probability ?? -1)) < 1e-12 } == true)
            let entropy = -probabilities.reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }
            #expect(abs(entropy - (character.entropy ?? -1)) < 1e-9)
            #expect(probabilities[0] > 2 * probabilities[size - 1], "the weights make a peaked distribution, so order matters")
        }
    }

    @Test("A trace at a temperature scores each generated character as sampling at that temperature did", arguments: [0.6, 1.0, 1.7])
    func temperedTraceScoresAsSamplingDid(temperature: Double) throws {
        let generator = try Self.generator(cell: .lstm)
        var options = SamplingOptions()
        options.temperature = Float(temperature)
        options.seed = 5
        var asked = CompletionOptions()
        asked.logprobs = 4
        let prime = "the \"quick"
        let generated = try generator.complete(prime: prime, length: 40, options: options, completion: asked)
        let logprobs = try #require(generated.logprobs)
        var trace = try TextTrace(
            generator: generator, text: prime + generated.text, options: TraceOptions(units: .none, top: 4, temperature: temperature))
        let scored = try Self.all(&trace).suffix(logprobs.count)
        #expect(scored.count == 40)
        for (character, drawn) in zip(scored, logprobs) {
            #expect(character.character == drawn.character)
            // The prime is fed in one pass for generation, a step at a time here: the last bits may differ.
            #expect(abs((character.logprob ?? 1) - drawn.logprob) <= 1e-5 * max(1, abs(drawn.logprob)), "\(character.position)")
            #expect(character.top.map(\.character) == drawn.top.map(\.character))
            #expect(zip(character.top, drawn.top).allSatisfy { abs($0.logprob - $1.logprob) <= 1e-5 * max(1, abs($1.logprob)) })
        }
        if temperature != 1 {
            var plain = try TextTrace(generator: generator, text: prime + generated.text, options: TraceOptions())
            let model = try Self.all(&plain).suffix(logprobs.count)
            #expect(zip(model, scored).contains { abs(($0.logprob ?? 0) - ($1.logprob ?? 0)) > 1e-3 }, "the temperature changes the scores")
        }
    }

    @Test("A trace refuses units, tops and temperatures outside the model, an empty text and unknown characters, naming each")
    func badRequestsAreRefused() throws {
        let generator = try Self.generator(cell: .rnn, hiddenSize: 8)
        let tokens: [Int32] = [0, 1]
        #expect(throws: TraceError.unitOutOfRange(unit: 8, hiddenSize: 8)) {
            try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .listed([2, 8])))
        }
        #expect(throws: TraceError.unitOutOfRange(unit: -1, hiddenSize: 8)) {
            try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .listed([-1])))
        }
        #expect(throws: TraceError.topOutOfRange(top: Self.vocabulary.count + 1, vocabularySize: Self.vocabulary.count)) {
            try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .none, top: Self.vocabulary.count + 1))
        }
        #expect(throws: TraceError.emptyText) { try TextTrace(generator: generator, tokens: [], options: TraceOptions()) }
        for temperature in [0, -1, .infinity, .nan] {
            let refused = #expect(throws: TraceError.self) {
                try TextTrace(generator: generator, tokens: tokens, options: TraceOptions(units: .none, temperature: temperature))
            }
            guard case .temperatureOutOfRange(let value) = refused else {
                Issue.record("temperature \(temperature): \(String(describing: refused))")
                continue
            }
            #expect(value == temperature || (value.isNaN && temperature.isNaN))
        }
        #expect(throws: TraceError.unknownCharacters(["X", "€"])) { try TextTrace(generator: generator, text: "aXb€", options: TraceOptions()) }
    }

    @Test("A trace file holds the streamed trace's numbers in [T, L, U] tensors, and an existing file is never overwritten")
    func traceFileHoldsTheStream() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let generator = try Self.generator(cell: .lstm)
        let options = TraceOptions(units: .listed([1, 5, 9]), top: 3)
        var streamed = try TextTrace(generator: generator, text: Self.text, options: options)
        let expected = try Self.all(&streamed)
        var written = try TextTrace(generator: generator, text: Self.text, options: options)
        let url = directory.file("trace.safetensors")
        var reported = 0
        try TraceFile.write(&written, to: url, metadata: ["note": "test"]) { reported = $0 }
        #expect(reported == expected.count)
        let file = try SafeTensorsFile(url)
        #expect(file.metadata["format"] == "charrnn-trace" && file.metadata["note"] == "test")
        #expect(file.metadata["vocabulary"].map { JSONValueArray($0) } == Self.vocabulary.scalars.map { String($0) })
        let T = expected.count
        #expect(file.shapes["h"] == [T, 2, 3] && file.shapes["c"] == [T, 2, 3] && file.shapes["top_tokens"] == [T, 3])
        #expect(file.int32("tokens") == expected.map(\.token))
        #expect(file.int32("units") == [1, 5, 9])
        #expect(file.float32("h") == expected.flatMap { $0.hidden.joined() })
        #expect(file.float32("c") == expected.flatMap { $0.cell.joined() })
        let surprise = file.float32("surprise")
        #expect(surprise[0].isNaN && Array(surprise.dropFirst()) == expected.dropFirst().map { Float($0.surprise!) })
        #expect(Array(file.int32("top_tokens").prefix(3)) == [-1, -1, -1])
        #expect(Array(file.int32("top_tokens").dropFirst(3)) == expected.dropFirst().flatMap { $0.top.map(\.token) })

        // Long enough for several writes per tensor.
        let long = String(repeating: Self.text, count: 12)
        var longTrace = try TextTrace(generator: generator, text: long, options: options)
        let longURL = directory.file("long.safetensors")
        try TraceFile.write(&longTrace, to: longURL)
        var again = try TextTrace(generator: generator, text: long, options: options)
        #expect(try SafeTensorsFile(longURL).float32("h") == (try Self.all(&again)).flatMap { $0.hidden.joined() })

        let before = try Data(contentsOf: url)
        var another = try TextTrace(generator: generator, text: "abc", options: options)
        #expect(throws: TraceFile.Failure.exists(path: url.path)) { try TraceFile.write(&another, to: url) }
        #expect(try Data(contentsOf: url) == before)
    }
}

/// A safetensors file read whole, for checking what a writer wrote.
struct SafeTensorsFile {
    let metadata: [String: String]
    let shapes: [String: [Int]]
    private let ranges: [String: Range<Int>]
    private let data: Data

    init(_ url: URL) throws {
        let bytes = try Data(contentsOf: url)
        let length = Int(bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<8 + length)) as! [String: Any]
        metadata = header["__metadata__"] as? [String: String] ?? [:]
        var shapes: [String: [Int]] = [:]
        var ranges: [String: Range<Int>] = [:]
        for (name, value) in header where name != "__metadata__" {
            let entry = value as! [String: Any]
            shapes[name] = entry["shape"] as? [Int]
            let offsets = entry["data_offsets"] as! [Int]
            ranges[name] = 8 + length + offsets[0]..<8 + length + offsets[1]
        }
        self.shapes = shapes
        self.ranges = ranges
        #expect(ranges.values.map(\.upperBound).max() == bytes.count, "the tensors end where the file does")
        data = bytes
    }

    func int32(_ name: String) -> [Int32] {
        let bytes = [UInt8](data.subdata(in: ranges[name]!))
        return stride(from: 0, to: bytes.count, by: 4).map { i in
            Int32(bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
        }
    }

    func float32(_ name: String) -> [Float] { int32(name).map { Float(bitPattern: UInt32(bitPattern: $0)) } }
}

/// A JSON array of strings, as the trace file's `vocabulary` metadata holds.
func JSONValueArray(_ text: String) -> [String]? {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String]
}
