import CCharRNN
import Testing

@testable import CharRNN

/// Protects the Swift side's view of the core's cells: every `Cell` is a cell
/// the core knows, under the same name, with the core's sizes.
@Suite("Cells in the library")
struct CellTests {
    @Test(
        "Every cell maps to the core's cell of the same name, with its gates and state tensors",
        arguments: [(Cell.lstm, 4, 2), (.gru, 3, 1), (.rnn, 1, 1)])
    func cellsMatchTheCore(cell: Cell, gates: Int, states: Int) {
        var info = charrnn_cell_info()
        #expect(charrnn_cell_info_get(cell.raw, &info) == CHARRNN_OK)
        #expect(String(cString: info.name) == cell.rawValue)
        #expect(cell.gateCount == gates && cell.stateTensorCount == states)
        #expect(Cell(cell.description) == cell)
    }

    @Test("The core refuses cells it does not have, by number and by name")
    func unknownCellsAreRefused() {
        var info = charrnn_cell_info()
        var value: Int32 = 0
        #expect(charrnn_cell_info_get(Int32(CHARRNN_CELL_COUNT), &info) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_cell_info_get(-1, &info) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_cell_from_name("LSTM", &value) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(charrnn_cell_from_name(nil, &value) == CHARRNN_ERR_NULL_POINTER)
        var config = charrnn_config(vocab_size: 5, hidden_size: 4, num_layers: 1, cell: 7)
        #expect(charrnn_config_validate(&config) == CHARRNN_ERR_INVALID_CONFIG)
        #expect(Cell("tree") == nil)
    }

    @Test("Sizes follow the cell: parameters, state and the tensor table's rows")
    func sizesFollowTheCell() throws {
        for (cell, gates) in [(Cell.lstm, 4), (.gru, 3), (.rnn, 1)] {
            let configuration = ModelConfiguration(vocabularySize: 10, hiddenSize: 6, layerCount: 2, cell: cell)
            let perLayer0 = gates * 6 * 10 + gates * 6 * 6 + 2 * gates * 6
            let perLayer1 = 2 * gates * 6 * 6 + 2 * gates * 6
            #expect(configuration.parameterCount == perLayer0 + perLayer1 + 10 * 6 + 10)
            #expect(try configuration.stateCount(batchSize: 3) == cell.stateTensorCount * 2 * 3 * 6)
            #expect(configuration.tensors.first?.name == "\(cell).weight_ih_l0")
            #expect(configuration.tensors.first?.shape == [gates * 6, 10])
            #expect(configuration.optimizerStateCount == 2 * configuration.parameterCount)
        }
    }
}
