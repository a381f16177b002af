/// JSON string literals (RFC 8259), written the same way everywhere: a
/// safetensors header, `charrnn inspect`'s vocabulary line, the server's
/// streamed events.
public enum JSONString {
    /// Appends `text` to `out` as a JSON string literal: the quote, the
    /// backslash and the control characters (below U+0020, and U+007F)
    /// escaped, `\n`, `\r` and `\t` by name; everything else as it is.
    public static func append(_ text: String, to out: inout String) {
        out.append("\"")
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out.append("\\\"")
            case "\\": out.append("\\\\")
            case "\n": out.append("\\n")
            case "\r": out.append("\\r")
            case "\t": out.append("\\t")
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                out.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
            default: out.unicodeScalars.append(scalar)
            }
        }
        out.append("\"")
    }

    /// `text` as a JSON string literal (see `append(_:to:)`).
    public static func literal(_ text: String) -> String {
        var out = ""
        append(text, to: &out)
        return out
    }
}
