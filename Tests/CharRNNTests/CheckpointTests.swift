import CharRNN
import Foundation
import Testing

/// Protects the checkpoint format: safetensors layout, names, round trips, refusals.
@Suite("Checkpoint format")
struct CheckpointTests {
    static func smallModel() throws -> (Model, Vocabulary) {
        let vocabulary = Vocabulary(corpus: "héllo wörld\n\"\\".unicodeScalars)
        let model = try Model(configuration: ModelConfiguration(vocabularySize: vocabulary.count, hiddenSize: 6, layerCount: 2), seed: 3)
        return (model, vocabulary)
    }

    @Test("Saving then loading gives identical tensors, vocabulary and metadata")
    func roundTrip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanUp() }
        let (model, vocabulary) = try Self.smallModel()
        let url = directory.file("m.safetensors")
        try Checkpoint(model: model, vocabulary: vocabulary, metadata: ["iteration": "12"]).write(to: url)
        let loaded = try Checkpoint(contentsOf: url)
        #expect(loaded.configuration == model.configuration)
        #expect(loaded.vocabulary == vocabulary)
        #expect(loaded.parameters.map(\.bitPattern) == model.parameters.toArray().map(\.bitPattern))
        #expect(loaded.metadata["iteration"] == "12")
        #expect(loaded.metadata["format"] == "charrnn")
        let rebuilt = try loaded.makeModel()
        #expect(rebuilt.tensor(named: "lstm.weight_hh_l1") == model.tensor(named: "lstm.weight_hh_l1"))
    }

    @Test("The file is safetensors: little-endian header length, JSON header padded to 8 bytes, PyTorch names and shapes")
    func layoutIsSafetensors() throws {
        let (model, vocabulary) = try Self.smallModel()
        let bytes = Checkpoint(model: model, vocabulary: vocabulary).serialized()
        let headerLength = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
        #expect((8 + headerLength) % 8 == 0)
        #expect(bytes.count == 8 + headerLength + 4 * model.parameterCount)
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as! [String: Any]
        let V = vocabulary.count
        let expected: [String: [Int]] = [
            "lstm.weight_ih_l0": [24, V], "lstm.weight_hh_l0": [24, 6], "lstm.bias_ih_l0": [24], "lstm.bias_hh_l0": [24],
            "lstm.weight_ih_l1": [24, 6], "lstm.weight_hh_l1": [24, 6], "lstm.bias_ih_l1": [24], "lstm.bias_hh_l1": [24],
            "fc.weight": [V, 6], "fc.bias": [V],
        ]
        #expect(Set(header.keys) == Set(expected.keys).union(["__metadata__"]))
        for (name, shape) in expected {
            let entry = header[name] as! [String: Any]
            #expect(entry["dtype"] as? String == "F32")
            #expect(entry["shape"] as? [Int] == shape, "\(name)")
        }
        let metadata = header["__metadata__"] as! [String: String]
        let vocab = try JSONSerialization.jsonObject(with: Data(metadata["vocab"]!.utf8)) as! [String]
        #expect(vocab == vocabulary.scalars.map { String($0) })
    }

    @Test("A file with only the tensors and a vocab entry is a complete model")
    func minimalFileLoads() throws {
        let (model, vocabulary) = try Self.smallModel()
        var bytes = Checkpoint(model: model, vocabulary: vocabulary).serialized()
        // Rewrite the header keeping only "vocab" in the metadata, as a PyTorch writer would.
        let headerLength = (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
        var header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as! [String: Any]
        let metadata = header["__metadata__"] as! [String: String]
        header["__metadata__"] = ["vocab": metadata["vocab"]!]
        var json = try JSONSerialization.data(withJSONObject: header)
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + Array(json) + Array(bytes[(8 + headerLength)...])
        let loaded = try Checkpoint(bytes: bytes)
        #expect(loaded.configuration == model.configuration)
        #expect(loaded.parameters == model.parameters.toArray())
    }

    @Test("Malformed files each give their own error")
    func malformedFilesAreRefused() throws {
        let (model, vocabulary) = try Self.smallModel()
        let good = Checkpoint(model: model, vocabulary: vocabulary).serialized()
        let headerLength = (0..<8).reduce(0) { $0 | Int(good[$1]) << (8 * $1) }
        func withHeader(_ edit: (inout [String: Any]) -> Void) throws -> [UInt8] {
            var header = try JSONSerialization.jsonObject(with: Data(good[8..<(8 + headerLength)])) as! [String: Any]
            edit(&header)
            let json = try JSONSerialization.data(withJSONObject: header)
            return withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + Array(json) + Array(good[(8 + headerLength)...])
        }
        #expect(throws: CheckpointProblem.truncated(size: 5)) { try Checkpoint(bytes: Array(good[0..<5])) }
        #expect(throws: CheckpointProblem.headerPastEnd(length: UInt64(headerLength), fileSize: 100)) {
            try Checkpoint(bytes: Array(good[0..<100]))
        }
        var lying = good
        lying[7] = 0x7F
        #expect(throws: CheckpointProblem.headerTooLarge(length: UInt64(headerLength) | 0x7F << 56)) { try Checkpoint(bytes: lying) }
        var badJSON = good
        badJSON[8] = UInt8(ascii: "[")
        #expect(throws: CheckpointProblem.invalidJSON) { try Checkpoint(bytes: badJSON) }
        #expect(throws: CheckpointProblem.unsupportedDType(name: "fc.bias", dtype: "F16")) {
            try Checkpoint(
                bytes: try withHeader { h in
                    var e = h["fc.bias"] as! [String: Any]
                    e["dtype"] = "F16"
                    h["fc.bias"] = e
                })
        }
        // Removing a tensor leaves a hole in the data, which is caught first; a tensor
        // that is present but named otherwise is a missing one.
        #expect(throws: CheckpointProblem.overlappingOrGap(name: "fc.weight")) {
            try Checkpoint(bytes: try withHeader { h in h.removeValue(forKey: "lstm.bias_hh_l1") })
        }
        #expect(throws: CheckpointProblem.missingTensor(name: "lstm.bias_hh_l1")) {
            try Checkpoint(bytes: try withHeader { h in h["lstm.bias_hh_l9"] = h.removeValue(forKey: "lstm.bias_hh_l1") })
        }
        // Same number of elements, transposed: the shape itself is wrong.
        #expect(throws: CheckpointProblem.shapeMismatch(name: "lstm.weight_hh_l0", expected: [24, 6], actual: [6, 24])) {
            try Checkpoint(
                bytes: try withHeader { h in
                    var e = h["lstm.weight_hh_l0"] as! [String: Any]
                    e["shape"] = [6, 24]
                    h["lstm.weight_hh_l0"] = e
                })
        }
        #expect(throws: CheckpointProblem.invalidEntry(name: "fc.bias")) {
            try Checkpoint(
                bytes: try withHeader { h in
                    var e = h["fc.bias"] as! [String: Any]
                    e["shape"] = [true]
                    h["fc.bias"] = e
                })
        }
        #expect(throws: CheckpointProblem.offsetsOutsideFile(name: "fc.bias")) {
            try Checkpoint(
                bytes: try withHeader { h in
                    var e = h["fc.bias"] as! [String: Any]
                    e["data_offsets"] = [0, 1 << 40]
                    h["fc.bias"] = e
                })
        }
        #expect(throws: CheckpointProblem.missingVocabulary) {
            try Checkpoint(bytes: try withHeader { h in h["__metadata__"] = ["format": "charrnn"] })
        }
        #expect(throws: CheckpointProblem.invalidVocabulary("entry 0 holds 2 characters, not 1")) {
            try Checkpoint(bytes: try withHeader { h in h["__metadata__"] = ["vocab": "[\"ab\"]"] })
        }
        var nan = good
        let lastFloat = nan.count - 4
        nan.replaceSubrange(lastFloat..<nan.count, with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian, Array.init))
        #expect(throws: CheckpointProblem.nonFiniteWeights(name: "fc.bias")) { try Checkpoint(bytes: nan) }
    }
}

/// The fuzzer's seed corpus doubles as a regression set for the loader.
@Suite("Checkpoint fuzzing seeds")
struct CheckpointSeedTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Tools/CheckpointFuzzer/corpus").standardized

    @Test("Every seed loads or is refused with a CheckpointProblem, and the valid ones load")
    func seedsReplay() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        #expect(names.count >= 4)
        for name in names {
            let bytes = [UInt8](try Data(contentsOf: Self.corpus.appendingPathComponent(name)))
            if name.hasPrefix("truncated") {
                #expect(throws: CheckpointProblem.self) { try Checkpoint(bytes: bytes) }
            } else {
                #expect(throws: Never.self, "\(name)") { try Checkpoint(bytes: bytes) }
            }
        }
        let resumable = try Checkpoint(bytes: [UInt8](Data(contentsOf: Self.corpus.appendingPathComponent("resumable.safetensors"))))
        #expect(resumable.resumeState != nil)
    }
}
