import CharRNN
import Foundation

/// Turns a `--checkpoint`/`--resume`/`--init-from` argument into a file: a
/// file as it is, a run directory as the file its `RunDirectory` names.
public enum CheckpointLocator {
    /// A file, or a run directory's best checkpoint.
    public static func best(_ path: String) throws -> URL {
        let url = URL(fileURLWithPath: path)
        return isDirectory(url) ? try RunDirectory.best(in: url) : url
    }

    /// A file, or the checkpoint a run directory's run continues from.
    public static func latest(_ path: String) throws -> URL {
        let url = URL(fileURLWithPath: path)
        return isDirectory(url) ? try RunDirectory.latest(in: url).url : url
    }

    private static func isDirectory(_ url: URL) -> Bool {
        var flag: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &flag) && flag.boolValue
    }
}
