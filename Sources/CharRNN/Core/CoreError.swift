import CCharRNN

/// An error reported by the C core (`charrnn.h`): a status code and its message.
///
/// The Swift library checks its own inputs before calling the core, so seeing
/// one of these usually means a bug in the caller or a non-finite value
/// reaching the optimizer.
public struct CoreError: Error, Equatable, CustomStringConvertible {
    /// The raw `charrnn_status` value.
    public let code: UInt32
    /// The core's message for the code.
    public let message: String
    /// The core function that failed, for context.
    public let function: String

    init(_ status: charrnn_status, function: String) {
        self.code = status.rawValue
        self.message = String(cString: charrnn_status_message(status))
        self.function = function
    }

    public var description: String { "\(function): \(message)" }
}
