import CCharRNN
import CharRNN
import Foundation
import Testing

/// Protects the facts the C core states once (its cells, its limits, the
/// version in charrnn.h) from copies that drift: every place that shows or
/// checks them elsewhere must agree with the core.
@Suite("Facts stated once")
struct StatedOnceTests {
    /// A file of the package, by its path from the package's root.
    static func source(_ path: String) throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    /// The header's version, "major.minor.patch".
    static let headerVersion = "\(CHARRNN_VERSION_MAJOR).\(CHARRNN_VERSION_MINOR).\(CHARRNN_VERSION_PATCH)"

    @Test("The library's cells are the core's cell table, in its order, with its gate counts")
    func cellsAreTheCores() {
        #expect(Cell.allCases.map(\.rawValue) == Cell.coreCellNames)
        for (index, cell) in Cell.allCases.enumerated() {
            var info = charrnn_cell_info()
            #expect(charrnn_cell_info_get(Int32(index), &info) == CHARRNN_OK)
            #expect(cell.gateCount == Int(info.gates))
        }
    }

    @Test("The library's limits are the ones the core enforces: the largest size passes its check, one more is refused")
    func limitsAreTheCores() {
        func accepted(vocabulary: Int = 2, hidden: Int = 1, layers: Int = 1) -> Bool {
            var config = charrnn_config(vocab_size: Int32(vocabulary), hidden_size: Int32(hidden), num_layers: Int32(layers), cell: 0)
            var count = 0
            return charrnn_param_count(&config, &count) == CHARRNN_OK
        }
        #expect(accepted(vocabulary: ModelConfiguration.maximumVocabularySize))
        #expect(!accepted(vocabulary: ModelConfiguration.maximumVocabularySize + 1))
        #expect(accepted(hidden: ModelConfiguration.maximumHiddenSize))
        #expect(!accepted(hidden: ModelConfiguration.maximumHiddenSize + 1))
        #expect(accepted(layers: ModelConfiguration.maximumLayerCount))
        #expect(!accepted(layers: ModelConfiguration.maximumLayerCount + 1))
        var config = charrnn_config(vocab_size: 2, hidden_size: 1, num_layers: 1, cell: 0)
        var count = 0
        let rows = ModelConfiguration.maximumBatchCharacters
        #expect(charrnn_activation_count(&config, Int32(rows), 1, &count) == CHARRNN_OK)
        #expect(charrnn_activation_count(&config, Int32(rows + 1), 1, &count) == CHARRNN_ERR_INVALID_SHAPE)
        #expect(TrainingOptions.maximumBatchCharacters == rows)
        var options = TrainingOptions()
        options.hiddenSize = ModelConfiguration.maximumHiddenSize + 1
        #expect(
            throws: TrainingError.invalidOption(
                .hiddenSize, value: "\(options.hiddenSize)", requirement: "between 1 and \(ModelConfiguration.maximumHiddenSize)")
        ) {
            try options.validate()
        }
    }

    @Test("charrnn train --help states the core's cells and limits, and bench --help its cells")
    func helpStatesTheCoresFacts() throws {
        let train = try CLI.run(["train", "--help"]).stdout.replacingOccurrences(of: "\n", with: " ")
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        let names = Cell.coreCellNames
        let list = names.dropLast().joined(separator: ", ") + " or " + names[names.count - 1]
        #expect(train.contains("--cell <cell> The recurrent cell of every layer: \(list),"))
        #expect(train.contains("Units per recurrent layer, 1-\(CHARRNN_MAX_HIDDEN)."))
        #expect(train.contains("Stacked recurrent layers, 1-\(CHARRNN_MAX_LAYERS)."))
        let bench = try CLI.run(["bench", "--help"]).stdout.replacingOccurrences(of: "\n", with: " ")
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        #expect(bench.contains("comma-separated: \(list)."))
        let refused = try CLI.run(["train", "--data", "/dev/null", "--cell", "lstmx"])
        #expect(refused.status != 0 && refused.stderr.contains(names.joined(separator: ", ")))
    }

    @Test("The OpenAPI document's cells are the core's, and the playground names none of its own")
    func serverStatesTheCoresCells() throws {
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(Self.source("Sources/CharRNNServer/openapi.json").utf8)) as? [String: Any])
        let components = try #require(document["components"] as? [String: Any])
        let schemas = try #require(components["schemas"] as? [String: Any])
        let model = try #require(schemas["Model"] as? [String: Any])
        let properties = try #require(model["properties"] as? [String: Any])
        let cell = try #require(properties["cell"] as? [String: Any])
        #expect(cell["enum"] as? [String] == Cell.coreCellNames)
        let playground = try Self.source("Sources/CharRNNServer/Playground/playground.js").lowercased()
        for name in Cell.coreCellNames {
            #expect(
                playground.range(of: "\\b\(name)\\b", options: .regularExpression) == nil,
                "playground.js names the cell '\(name)' itself instead of showing the server's")
        }
    }

    @Test("Every executable prints the header's version, and checkpoints record it")
    func oneVersion() throws {
        #expect(CharRNNVersion.current == Self.headerVersion)
        #expect(try CLI.run(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == Self.headerVersion)
        if CLI.binary("charrnn-server") != nil {
            let server = try CLI.run(["--version"], binary: "charrnn-server")
            #expect(server.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == Self.headerVersion)
        }
        let configuration = ModelConfiguration(vocabularySize: 3, hiddenSize: 4, layerCount: 1)
        let checkpoint = Checkpoint(model: try Model(configuration: configuration, seed: 1), vocabulary: Vocabulary(corpus: "abc".unicodeScalars))
        #expect(checkpoint.metadata["charrnn_version"] == Self.headerVersion)
        let installer = try Self.source("Tools/install-c-library")
        #expect(installer.contains("awk '/#define CHARRNN_VERSION_(MAJOR|MINOR|PATCH)/"), "the installed charrnn.pc reads the header")
    }
}
