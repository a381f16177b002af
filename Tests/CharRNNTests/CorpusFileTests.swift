import CharRNN
import Foundation
import Testing

/// Protects the streamed corpus: a file read in chunks gives the same
/// alphabet, length, tokens and fingerprint as the text read whole, holds
/// only the stretch asked for, one byte per token for small alphabets, and
/// reports bad UTF-8 at the same offset.
@Suite("Streamed corpora and token storage")
struct CorpusFileTests {
    /// Multi-byte characters, CRLF and lone CR, so chunk edges fall inside sequences and line endings.
    static let text = "Ünïcödé lines\r\nwith CRLF,\rlone CR, emoji 🐈 and 中文.\n" + sampleText(length: 400) + "\r\nend\r"

    @Test(
        "Read in chunks of 1 to 7 bytes or 1 MiB, a file gives the whole text's alphabet, length, tokens and fingerprint",
        arguments: [1, 2, 3, 5, 7, 1 << 20], Corpus.LineEndings.allCases)
    func chunkedReadingEqualsWholeReading(chunk: Int, endings: Corpus.LineEndings) throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let url = directory.file("text.txt")
        try Data(Self.text.utf8).write(to: url)
        let whole = try Corpus(contentsOf: url, lineEndings: endings)
        let file = CorpusFile(url: url, lineEndings: endings, chunkSize: chunk)
        let survey = try file.survey()
        #expect(survey == (try whole.survey()))
        #expect(survey.characterCount == whole.count)
        let stretch = 37..<211
        let streamed = try file.encode(stretch, with: survey.vocabulary)
        let held = try whole.encode(stretch, with: survey.vocabulary)
        let expected = try survey.vocabulary.encode(whole.scalars[stretch])
        #expect((0..<streamed.tokens.count).map { streamed.tokens[$0] } == expected)
        #expect((0..<held.tokens.count).map { held.tokens[$0] } == expected)
        #expect(streamed.fingerprint == held.fingerprint)
    }

    @Test(
        "Bad UTF-8 is reported at the same byte offset whole or in chunks, a cut-off sequence at the end included",
        arguments: [[0x61, 0x62, 0xFF, 0x63], [0x61, 0xE4, 0xB8, 0x41], [0x61, 0x62, 0xE4, 0xB8], [0xC0, 0x80], [0xED, 0xA0, 0x80]] as [[UInt8]])
    func badUTF8OffsetsAgree(bytes: [UInt8]) throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let url = directory.file("bad.txt")
        try Data(Array("header ✓ ".utf8) + bytes).write(to: url)
        var wholeError: CorpusError? = nil
        do { _ = try Corpus(contentsOf: url) } catch { wholeError = error }
        guard case .invalidUTF8(_, let offset)? = wholeError else {
            Issue.record("the whole read accepted it: \(String(describing: wholeError))")
            return
        }
        for chunk in [1, 2, 3, 1 << 20] {
            #expect(throws: CorpusError.invalidUTF8(path: url.path, byteOffset: offset)) {
                try CorpusFile(url: url, chunkSize: chunk).survey()
            }
        }
    }

    @Test("Missing, empty and directory files are refused by the streamed reader as by the whole one")
    func badFilesAreRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        try Data().write(to: directory.file("empty.txt"))
        #expect(throws: CorpusError.notFound(path: directory.file("none").path)) { try CorpusFile(url: directory.file("none")).survey() }
        #expect(throws: CorpusError.empty(path: directory.file("empty.txt").path)) { try CorpusFile(url: directory.file("empty.txt")).survey() }
        #expect(throws: CorpusError.isDirectory(path: directory.url.path)) { try CorpusFile(url: directory.url).survey() }
    }

    @Test("Tokens take one byte each up to 256 characters, two beyond, and read back as written")
    func tokensTakeTheSmallestType() {
        let small = TokenStore((0..<1000).map { Int32($0 % 256) }, alphabetSize: 256)
        #expect(small.width == 1 && small.byteCount == 1000 && small[999] == Int32(999 % 256))
        let wide = TokenStore((0..<1000).map { Int32($0 % 300) }, alphabetSize: 300)
        #expect(wide.width == 2 && wide.byteCount == 2000 && wide[299] == 299)
        let huge = TokenStore([70_000, 3], alphabetSize: 70_001)
        #expect(huge.width == 4 && huge[0] == 70_000 && huge[1] == 3)
    }

    @Test("A member of 2 holds only its streams' stretch of the text, and its batches are those streams' rows of the whole batches")
    func membersHoldTheirStretch() throws {
        let tokens = (0..<4_001).map { Int32($0 % 50) }
        let whole = try BatchedCorpus(tokens: tokens, batchSize: 4, steps: 10, validationFraction: 0.1)
        #expect(whole.tokenBytes == 4_001)
        for (rank, streams) in [(0, 0..<2), (1, 2..<4)] {
            let part = try BatchedCorpus(tokens: tokens, batchSize: 4, steps: 10, validationFraction: 0.1, streams: streams)
            #expect(part.tokenBytes == 2 * whole.layout.rowLength + 1, "member \(rank) holds half the text, plus one")
            for index in [0, whole.trainingBatchCount - 1] {
                let full = whole.trainingBatch(index)
                let mine = part.trainingBatch(index)
                #expect(mine.inputs == Array(full.inputs[streams.lowerBound * 10..<streams.upperBound * 10]))
                #expect(mine.targets == Array(full.targets[streams.lowerBound * 10..<streams.upperBound * 10]))
                #expect(mine.firstStream == streams.lowerBound && mine.totalStreams == 4)
            }
            let lastValidation = part.validationBatch(part.validationBatchCount - 1)
            #expect(
                lastValidation.targets
                    == Array(whole.validationBatch(whole.validationBatchCount - 1).targets[streams.lowerBound * 10..<streams.upperBound * 10]))
        }
    }

    @Test("A trainer streaming a file holds only its stretch, and trains as one reading the text whole")
    func trainerStreamsTheFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let url = directory.file("text.txt")
        try Data(sampleText(length: 1_300).utf8).write(to: url)
        var options = DataParallelTests.options(maxIterations: 4)
        options.saveEvery = 4
        let fromFile = try Trainer(corpus: CorpusFile(url: url, chunkSize: 100), options: options, outputDirectory: nil)
        let inMemory = try Trainer(corpus: Corpus(contentsOf: url), options: options, outputDirectory: nil)
        #expect(fromFile.batches.tokenBytes == fromFile.batches.layout.rowLength * 4 + 1)
        var streamed: [Float] = []
        var held: [Float] = []
        try fromFile.run { if case .iteration(let r) = $0 { streamed.append(r.batchLoss) } }
        try inMemory.run { if case .iteration(let r) = $0 { held.append(r.batchLoss) } }
        #expect(streamed.map(\.bitPattern) == held.map(\.bitPattern))
        let shares = ThreadGroup.run(size: 2) { member in
            (try? Trainer(corpus: CorpusFile(url: url), options: options, outputDirectory: nil, group: member))?.batches.tokenBytes
        }
        #expect(shares == [fromFile.batches.layout.rowLength * 2 + 1, fromFile.batches.layout.rowLength * 2 + 1])
    }
}
