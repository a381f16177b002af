import CharRNN
import Foundation
import Testing

/// Protects text generation from Swift: reproducibility, options, batching, characters.
@Suite("Sampling")
struct SamplingTests {
    /// A model briefly trained on a text with multi-byte characters.
    static var trained: TextGenerator { makeTrained() }

    static func makeTrained(cell: Cell = .lstm) -> TextGenerator {
        let text = String(repeating: "Война и мир. Guerre et paix — «Анна» 🙂\n", count: 30)
        var options = TrainingOptions()
        options.cell = cell
        options.hiddenSize = 24
        options.batchSize = 4
        options.steps = 16
        options.epochs = 4
        options.learningRate = 0.01
        options.keepProbability = 1
        let trainer = try! Trainer(corpus: Corpus(text: text), options: options, outputDirectory: nil)
        try! trainer.run()
        return try! TextGenerator(model: trainer.model, vocabulary: trainer.vocabulary)
    }

    static func options(seed: UInt64, _ edit: (inout SamplingOptions) -> Void = { _ in }) -> SamplingOptions {
        var options = SamplingOptions()
        options.seed = seed
        edit(&options)
        return options
    }

    @Test("The same seed gives the same text; another seed gives another")
    func seedsReproduce() throws {
        let generator = Self.trained
        let a = try generator.generate(prime: "Вой", length: 300, options: Self.options(seed: 1))
        let b = try generator.generate(prime: "Вой", length: 300, options: Self.options(seed: 1))
        let c = try generator.generate(prime: "Вой", length: 300, options: Self.options(seed: 2))
        #expect(a == b)
        #expect(a != c)
        #expect(a.hasPrefix("Вой") && a.unicodeScalars.count == 303)
    }

    @Test("Top-k 1 gives the greedy text")
    func topKOneIsGreedy() throws {
        let generator = Self.trained
        let topOne = try generator.generate(prime: "G", length: 200, options: Self.options(seed: 4) { $0.topK = 1 })
        let greedy = try generator.generate(prime: "G", length: 200, options: Self.options(seed: 9) { $0.greedy = true })
        #expect(topOne == greedy)
    }

    @Test("Generated text uses only the vocabulary's characters and is valid UTF-8")
    func outputIsValidText() throws {
        let generator = Self.trained
        let text = try generator.generate(prime: "«", length: 500, options: Self.options(seed: 3) { $0.temperature = 1.5 })
        let known = Set(generator.vocabulary.scalars)
        #expect(text.unicodeScalars.allSatisfy { known.contains($0) })
        #expect(text.unicodeScalars.contains { $0.value > 0x7F }, "multi-byte characters appear")
        #expect(String(validating: Array(text.utf8), as: UTF8.self) == text)
    }

    @Test("The character sequence streams lazily and replays the same characters")
    func sequenceReplays() throws {
        let characters = try Self.trained.characters(prime: "и", length: 50, options: Self.options(seed: 6))
        let first = Array(characters)
        let second = Array(characters)
        #expect(first.count == 50)
        #expect(first == second)
        #expect(Array(characters.prefix(10)) == Array(first.prefix(10)))
    }

    @Test("Samples generated together each match the same sample generated alone, for every cell", arguments: Cell.allCases)
    func batchedSamplesMatchSingle(cell: Cell) throws {
        let generator = Self.makeTrained(cell: cell)
        #expect(generator.model.configuration.cell == cell)
        let options = Self.options(seed: 21) { $0.topK = 4 }
        let batch = try generator.samples(count: 3, prime: "Анна", length: 120, options: options)
        #expect(batch.count == 3)
        #expect(Set(batch).count == 3, "different streams draw differently")
        for (index, sample) in batch.enumerated() {
            var alone = options
            alone.seed = options.seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15
            #expect(sample == (try generator.generate(prime: "Анна", length: 120, options: alone)))
        }
    }

    @Test("A prime with unknown characters names them, or drops them when asked")
    func unknownPrimeCharacters() throws {
        let generator = Self.trained
        #expect(throws: SamplingError.unknownCharacters(["Z", "q"])) {
            try generator.characters(prime: "ZиqZ", length: 5, options: SamplingOptions())
        }
        #expect(try generator.encodePrime("ZиqZ", dropUnknown: true) == [generator.vocabulary.index(of: "и")!])
        #expect(throws: SamplingError.emptyPrime) { try generator.encodePrime("ZZ", dropUnknown: true) }
    }

    @Test("Out-of-range options are refused with an error that names the option and carries the value")
    func badOptions() {
        let generator = Self.trained
        let cases: [(SamplingOptions, SamplingOptions.Option, String)] = [
            (Self.options(seed: 0) { $0.temperature = -1 }, .temperature, "-1.0"),
            (Self.options(seed: 0) { $0.topK = 0 }, .topK, "0"),
            (Self.options(seed: 0) { $0.topK = 1000 }, .topK, "1000"),
            (Self.options(seed: 0) { $0.topP = 0 }, .topP, "0.0"),
            (Self.options(seed: 0) { $0.topP = 1.01 }, .topP, "1.01"),
        ]
        for (options, option, value) in cases {
            #expect {
                _ = try generator.characters(prime: "и", length: 5, options: options)
            } throws: { error in
                guard case .invalidOption(let named, let given, _) = error as? SamplingError else { return false }
                return named == option && given == value && !"\(error)".contains("--")
            }
        }
        #expect(throws: SamplingError.self) { try generator.characters(prime: "и", length: -1, options: SamplingOptions()) }
    }
}
