import CharRNN
import Foundation

/// Turns a `--checkpoint`/`--resume` argument into a file: a file as it is,
/// a training output directory as its best or its latest checkpoint.
enum CheckpointLocator {
    /// A file, or a directory's `best.safetensors`.
    static func best(_ path: String) throws -> URL {
        let url = URL(fileURLWithPath: path)
        guard isDirectory(url) else { return url }
        let best = url.appendingPathComponent("best.safetensors")
        guard FileManager.default.fileExists(atPath: best.path) else {
            throw SamplingError.invalidOption("'\(path)' is a directory without a best.safetensors checkpoint")
        }
        return best
    }

    /// A file, or a directory's checkpoint with the highest iteration.
    static func latest(_ path: String) throws -> URL {
        let url = URL(fileURLWithPath: path)
        guard isDirectory(url) else { return url }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        let latest = names.compactMap { name -> (String, Int)? in
            guard let match = name.wholeMatch(of: #/^i(\d+)_l\d+_v.*\.safetensors$/#), let iteration = Int(match.output.1) else { return nil }
            return (name, iteration)
        }.max { $0.1 < $1.1 }
        guard let latest else {
            throw TrainingError.invalidOption("'\(path)' is a directory with no i{iteration}_l{hidden}_v{loss}.safetensors checkpoint to resume")
        }
        return url.appendingPathComponent(latest.0)
    }

    private static func isDirectory(_ url: URL) -> Bool {
        var flag: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &flag) && flag.boolValue
    }
}
