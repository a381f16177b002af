import CharRNN
import CharRNNTools
import Foundation
import Testing

/// Protects generation in bf16 from Swift: every way of generating gives
/// the same bf16 text (alone, in a batch, through the scheduler, after a
/// cached prime), which is not the fp32 text; and the tools' `--precision`
/// check says in one line what a CPU lacks.
@Suite("Precision")
struct PrecisionTests {
    static func generator(_ precision: Precision, cell: Cell = .lstm) throws -> TextGenerator {
        let base = try SchedulerTests.untrained(cell: cell)
        return try TextGenerator(model: base.model, vocabulary: base.vocabulary, precision: precision)
    }

    @Test(
        "A bf16 generator writes one text for a seed alone, as a batch's sample and through the scheduler, for every cell", arguments: Cell.allCases)
    func bf16TextIsTheSameEveryWay(cell: Cell) async throws {
        let generator = try Self.generator(.bfloat16, cell: cell)
        #expect(generator.precision == .bfloat16)
        var options = SamplingOptions()
        options.seed = 77
        options.topK = 5
        let prime = String(repeating: "ана abc ", count: 40)
        let alone = try generator.generate(prime: prime, length: 150, options: options)
        let batch = try generator.samples(count: 3, prime: prime, length: 150, options: options)
        #expect(batch[0] == alone, "sample 0 of a batch draws with the seed itself")
        let scheduler = try GenerationScheduler(generator: generator)
        var request = GenerationRequest()
        request.prime = prime
        request.length = 150
        request.options = options
        // Twice: the second starts from the cached prime state.
        for _ in 0..<2 {
            let (text, end) = await (try scheduler.submit(request)).collect()
            #expect(end == .completed)
            #expect(text == alone)
        }
        // The texts may agree (a draw flips only when scores move across a
        // boundary); the log-probabilities of the first characters cannot.
        func logprobs(_ generator: TextGenerator) throws -> [Double] {
            var completion = CompletionOptions()
            completion.logprobs = 0
            return try generator.completion(prime: prime, length: 5, options: options, completion: completion).compactMap { $0.logprob?.logprob }
        }
        let narrow = try logprobs(generator)
        let wide = try logprobs(try Self.generator(.float32, cell: cell))
        #expect(narrow.count == 5 && narrow != wide, "the products really ran in bf16")
        #expect(zip(narrow, wide).allSatisfy { abs($0 - $1) < 0.05 }, "and stayed close to fp32's: \(narrow) against \(wide)")
    }

    @Test("Evaluation stepped in fp32 gives the training pass's loss, and in bf16 a loss close to it")
    func steppedEvaluation() throws {
        let generator = SamplingTests.makeTrained()
        let text = String(repeating: "Война и мир. Guerre et paix — «Анна» 🙂\n", count: 5)
        let tokens = try generator.vocabulary.encode(text.unicodeScalars)
        let forward = try Evaluation.wholeText(of: generator.model, tokens: tokens)
        let wide = try Evaluation.stepped(of: generator.model, tokens: tokens, precision: .float32)
        let narrow = try Evaluation.stepped(of: generator.model, tokens: tokens, precision: .bfloat16)
        #expect(wide.predictions == tokens.count - 1 && narrow.predictions == wide.predictions)
        #expect(abs(wide.meanLoss - forward.meanLoss) <= 1e-5 * forward.meanLoss, "\(wide.meanLoss) against \(forward.meanLoss)")
        #expect(
            narrow.meanLoss != wide.meanLoss && abs(narrow.meanLoss - wide.meanLoss) <= 0.02 * wide.meanLoss,
            "\(narrow.meanLoss) against \(wide.meanLoss)")
    }

    @Test("--precision takes fp32 or bf16, and refuses bf16 in one line on a CPU without AVX512_BF16 unless the portable kernel was asked for")
    func precisionFlag() throws {
        #expect(try Precision.fromFlag("fp32", kernel: .portableOnly) == .float32)
        #expect(try Precision.fromFlag("bf16", kernel: .avx512) == .bfloat16)
        #expect(try Precision.fromFlag("bf16", kernel: .portableAsked) == .bfloat16)
        let refused = #expect(throws: PrecisionFlagError.self) { try Precision.fromFlag("bf16", kernel: .portableOnly) }
        #expect(refused?.description.contains("AVX512_BF16") == true && refused?.description.contains("CHARRNN_BF16=portable") == true)
        #expect(refused?.description.contains("\n") == false)
        let unknown = #expect(throws: PrecisionFlagError.self) { try Precision.fromFlag("fp16") }
        #expect(unknown?.description == "--precision must be fp32 or bf16 (got 'fp16')")
    }
}
