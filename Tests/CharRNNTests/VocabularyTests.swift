import CharRNN
import Foundation
import Testing

/// Protects the character mapping and corpus decoding.
@Suite("Vocabulary and corpus")
struct VocabularyTests {
    @Test("A vocabulary lists a text's distinct scalars sorted by value")
    func vocabularyIsSortedByScalar() {
        let vocabulary = Vocabulary(corpus: "hello, world".unicodeScalars)
        #expect(vocabulary.scalars.map { String($0) } == [" ", ",", "d", "e", "h", "l", "o", "r", "w"])
        #expect(vocabulary.index(of: "l") == 5)
        #expect(vocabulary.index(of: "z") == nil)
    }

    @Test("Carriage returns and combining marks stay separate characters")
    func scalarsNotGraphemes() {
        let text = "e\u{301}\r\n"  // é as e + combining acute, then CRLF: 2 graphemes, 4 scalars
        let corpus = Corpus(text: text, lineEndings: .preserve)
        #expect(corpus.count == 4)
        #expect(Vocabulary(corpus: corpus.scalars).count == 4)
    }

    @Test("Universal line endings read CRLF and CR as LF, as Python's text mode does")
    func universalLineEndings() {
        #expect(Corpus(text: "a\r\nb\rc\n", lineEndings: .universal).scalars == Array("a\nb\nc\n".unicodeScalars))
        #expect(Corpus(text: "a\r\nb", lineEndings: .preserve).count == 4)
    }

    @Test("Encoding then decoding gives the text back, multi-byte characters included")
    func roundTrip() throws {
        let text = "Война и мир — «Guerre et paix» 🙂\n"
        let vocabulary = Vocabulary(corpus: text.unicodeScalars)
        let encoded = try vocabulary.encode(text.unicodeScalars)
        #expect(encoded.count == text.unicodeScalars.count)
        #expect(vocabulary.decode(encoded) == text)
    }

    @Test("Encoding text with unknown characters names each of them")
    func unknownCharactersAreNamed() {
        let vocabulary = Vocabulary(corpus: "abc".unicodeScalars)
        #expect(throws: VocabularyError.unknownScalars(["x", "\n"])) {
            try vocabulary.encode("abxcx\n".unicodeScalars)
        }
        let message = VocabularyError.unknownScalars(["x", "\n"]).description
        #expect(message.contains("'x' (U+0078)") && message.contains("'\\n' (U+000A)"))
    }

    @Test("A vocabulary from a list refuses duplicates and emptiness")
    func vocabularyFromListIsChecked() {
        #expect(throws: VocabularyError.duplicate("a")) { try Vocabulary(scalars: ["a", "b", "a"]) }
        #expect(throws: VocabularyError.empty) { try Vocabulary(scalars: []) }
    }

    @Test("Invalid UTF-8 is reported with the offset of the first bad byte")
    func invalidUTF8HasOffset() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let cases: [([UInt8], Int)] = [
            (Array("abc".utf8) + [0xFF] + Array("def".utf8), 3),
            (Array("ab".utf8) + [0xE2, 0x82], 2),  // truncated 3-byte sequence at the end
            (Array("ok ".utf8) + [0xC3, 0x28], 3),  // bad continuation byte
            ([0xC0, 0xAF], 0),  // overlong
            (Array("x".utf8) + [0xED, 0xA0, 0x80], 1),  // UTF-16 surrogate
        ]
        for (bytes, offset) in cases {
            let url = directory.file("bad.txt")
            try Data(bytes).write(to: url)
            #expect(throws: CorpusError.invalidUTF8(path: url.path, byteOffset: offset)) {
                try Corpus(contentsOf: url)
            }
        }
    }

    @Test("Missing, empty and directory corpora each get their own error")
    func missingEmptyDirectory() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let missing = directory.file("nope.txt")
        #expect(throws: CorpusError.notFound(path: missing.path)) { try Corpus(contentsOf: missing) }
        let empty = directory.file("empty.txt")
        try Data().write(to: empty)
        #expect(throws: CorpusError.empty(path: empty.path)) { try Corpus(contentsOf: empty) }
        #expect(throws: CorpusError.isDirectory(path: directory.url.path)) { try Corpus(contentsOf: directory.url) }
    }

    @Test(
        "The reference corpus has the notebook's 1,985,223 characters and 83 distinct",
        .enabled(if: FileManager.default.fileExists(atPath: VocabularyTests.annaPath), "../shared/data/anna.txt is absent"))
    func referenceCorpusCounts() throws {
        let corpus = try Corpus(contentsOf: URL(fileURLWithPath: Self.annaPath))
        #expect(corpus.count == 1_985_223)
        #expect(Vocabulary(corpus: corpus.scalars).count == 83)
    }

    static let annaPath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("../../../shared/data/anna.txt").standardized.path
}
