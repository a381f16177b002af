import CharRNN

/// A `--precision` value the tools refuse, as the one line they print.
public struct PrecisionFlagError: Error, CustomStringConvertible {
    /// The line: what was asked and why it cannot be had.
    public let description: String
}

extension Precision {
    /// The precision `--precision value` asks for, if this process can
    /// give it: `fp32` always; `bf16` where its products are faster than
    /// fp32 (the CPU's AVX512_BF16), or where the user asked for the
    /// portable kernel (`CHARRNN_BF16=portable`: the same bits, slowly).
    public static func fromFlag(_ value: String, kernel: BF16Kernel = Precision.bf16Kernel) throws(PrecisionFlagError) -> Precision {
        guard let precision = Precision(rawValue: value) else {
            throw PrecisionFlagError(description: "--precision must be fp32 or bf16 (got '\(value)')")
        }
        if precision == .bfloat16 && kernel == .portableOnly {
            throw PrecisionFlagError(
                description: "--precision bf16 needs a CPU with AVX512_BF16, and this one has none "
                    + "(CHARRNN_BF16=portable runs the same arithmetic in portable C, several times slower than fp32)")
        }
        return precision
    }
}
