import CCharRNN

/// The recurrent cell of every layer of a model: PyTorch's `nn.LSTM`,
/// `nn.GRU` or `nn.RNN` (tanh). The raw value is the cell's name in the core,
/// in checkpoints' `cell` metadata and as the prefix of its tensors
/// (`gru.weight_ih_l0`).
public enum Cell: String, CaseIterable, Codable, Sendable {
    /// Long short-term memory: gates i, f, g, o; state h and c.
    case lstm
    /// Gated recurrent unit: gates r, z, n; state h.
    case gru
    /// Plain recurrent layer, h' = tanh(W_ih x + b_ih + W_hh h + b_hh).
    case rnn

    /// The core's `charrnn_cell` value.
    var raw: Int32 {
        var value: Int32 = 0
        // Every case is a cell the core has (tested); a core without it is
        // a build mismatch, not a fallback to the LSTM.
        let status = charrnn_cell_from_name(rawValue, &value)
        precondition(status == CHARRNN_OK, "the linked core has no cell '\(rawValue)'")
        return value
    }

    private var info: charrnn_cell_info { Self.coreInfo(raw) }

    /// Entry `cell` of the core's cell table; every index asked for is one
    /// the core has (a case of this type, or below `CHARRNN_CELL_COUNT`).
    private static func coreInfo(_ cell: Int32) -> charrnn_cell_info {
        var info = charrnn_cell_info()
        let status = charrnn_cell_info_get(cell, &info)
        precondition(status == CHARRNN_OK, "the linked core has no cell \(cell)")
        return info
    }

    /// Gate blocks of H rows in each weight and bias (4, 3, 1), as the core states them.
    public var gateCount: Int { Int(info.gates) }

    /// Recurrent state tensors per layer (2 for the LSTM's h and c, else 1), as the core states them.
    public var stateTensorCount: Int { Int(info.state_tensors) }

    /// The name people write it with: "LSTM", "GRU", "RNN".
    public var displayName: String { rawValue.uppercased() }

    /// PyTorch's module for the cell: `nn.LSTM`, `nn.GRU`, `nn.RNN` (tanh).
    public var pytorchModule: String { "nn.\(displayName)" + (self == .rnn ? " (tanh)" : "") }

    /// Every cell's name, as a list for messages: "lstm, gru or rnn" with `or`.
    public static func names(or conjunction: String) -> String {
        let names = allCases.map(\.rawValue)
        guard names.count > 1 else { return names.joined() }
        return names.dropLast().joined(separator: ", ") + " \(conjunction) " + names[names.count - 1]
    }

    /// The cells the linked core has, by name, in its own order
    /// (`charrnn_cell_info_get` for 0 ..< `CHARRNN_CELL_COUNT`); a test
    /// checks that they are exactly `allCases`.
    public static var coreCellNames: [String] {
        (0..<CHARRNN_CELL_COUNT).map { String(cString: coreInfo(Int32($0)).name) }
    }
}

extension Cell: LosslessStringConvertible {
    /// The cell named `description` ("lstm", "gru", "rnn"), or `nil`.
    public init?(_ description: String) { self.init(rawValue: description) }

    /// The cell's name, as the command line and the metadata write it.
    public var description: String { rawValue }
}
