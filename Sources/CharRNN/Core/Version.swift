import CCharRNN

/// CharRNN's version.
public enum CharRNNVersion {
    /// The version, "major.minor.patch", as the C core states it
    /// (`CHARRNN_VERSION_*` in charrnn.h, the one place it is written; the
    /// installed `charrnn.pc` reads it there too). Every executable prints it
    /// and every checkpoint records it (`charrnn_version`).
    public static let current = "\(CHARRNN_VERSION_MAJOR).\(CHARRNN_VERSION_MINOR).\(CHARRNN_VERSION_PATCH)"
}
