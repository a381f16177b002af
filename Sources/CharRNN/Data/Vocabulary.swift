/// The model's alphabet: distinct Unicode scalars, each mapped to an index.
///
/// Built over Unicode scalars, not Swift `Character`s: a `Character` merges
/// "\r\n" and a letter with its combining marks into one grapheme, which
/// would hide characters of the file from a character-level model. Built from
/// a corpus, the scalars are sorted by value, so the same text always gives
/// the same indices (the original notebook used Python's set order, which is
/// not stable across runs).
public struct Vocabulary: Hashable, Sendable {
    /// The scalars in index order.
    public let scalars: [Unicode.Scalar]
    private let indexByScalar: [Unicode.Scalar: Int32]

    /// The vocabulary of a text: its distinct scalars, sorted by value.
    public init<S: Sequence>(corpus: S) where S.Element == Unicode.Scalar {
        var seen = Set<Unicode.Scalar>()
        for scalar in corpus { seen.insert(scalar) }
        let sorted = seen.sorted { $0.value < $1.value }
        self.scalars = sorted
        self.indexByScalar = Dictionary(uniqueKeysWithValues: sorted.enumerated().map { ($1, Int32($0)) })
    }

    /// A vocabulary with the given scalars in the given index order (as stored
    /// in a checkpoint). Throws if it is empty or has a duplicate.
    public init(scalars: [Unicode.Scalar]) throws(VocabularyError) {
        guard !scalars.isEmpty else { throw .empty }
        var index: [Unicode.Scalar: Int32] = [:]
        for (position, scalar) in scalars.enumerated() {
            if index.updateValue(Int32(position), forKey: scalar) != nil {
                throw .duplicate(scalar)
            }
        }
        self.scalars = scalars
        self.indexByScalar = index
    }

    /// Number of scalars (V).
    public var count: Int { scalars.count }

    /// The index of `scalar`, or `nil` if the vocabulary lacks it.
    public func index(of scalar: Unicode.Scalar) -> Int32? { indexByScalar[scalar] }

    /// The indices of `text`'s scalars. Throws `VocabularyError.unknownScalars`
    /// naming every scalar the vocabulary lacks.
    public func encode<S: Sequence>(_ text: S) throws(VocabularyError) -> [Int32]
    where S.Element == Unicode.Scalar {
        var result: [Int32] = []
        result.reserveCapacity(text.underestimatedCount)
        var unknown: [Unicode.Scalar] = []
        for scalar in text {
            if let index = indexByScalar[scalar] {
                result.append(index)
            } else if !unknown.contains(scalar) {
                unknown.append(scalar)
            }
        }
        if !unknown.isEmpty { throw .unknownScalars(unknown) }
        return result
    }

    /// The text of a sequence of indices; each index must be in `0..<count`.
    public func decode<S: Sequence>(_ indices: S) -> String where S.Element == Int32 {
        var text = String.UnicodeScalarView()
        for index in indices { text.append(scalars[Int(index)]) }
        return String(text)
    }
}

/// Why a vocabulary could not be built or used.
public enum VocabularyError: Error, Equatable, CustomStringConvertible {
    /// A vocabulary needs at least one character.
    case empty
    /// The same character appears twice.
    case duplicate(Unicode.Scalar)
    /// The text has characters the vocabulary lacks.
    case unknownScalars([Unicode.Scalar])

    public var description: String {
        switch self {
        case .empty: return "the vocabulary is empty"
        case .duplicate(let scalar): return "the vocabulary lists \(Vocabulary.describe(scalar)) twice"
        case .unknownScalars(let scalars):
            let names = scalars.prefix(20).map(Vocabulary.describe).joined(separator: ", ")
            let more = scalars.count > 20 ? " and \(scalars.count - 20) more" : ""
            return "the text has characters the vocabulary lacks: \(names)\(more)"
        }
    }
}

extension Vocabulary {
    /// A printable name for a scalar: the character in quotes with its code
    /// point, or just the code point for controls and whitespace.
    public static func describe(_ scalar: Unicode.Scalar) -> String {
        let code = "U+" + String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4)
        switch scalar {
        case "\n": return "'\\n' (\(code))"
        case "\r": return "'\\r' (\(code))"
        case "\t": return "'\\t' (\(code))"
        case " ": return "' ' (\(code))"
        default:
            if scalar.properties.generalCategory == .control || scalar.properties.isWhitespace
                || scalar.properties.generalCategory == .format
            {
                return code
            }
            return "'\(Character(scalar))' (\(code))"
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
