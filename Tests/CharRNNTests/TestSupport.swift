import Foundation

/// A fresh directory under the system's temporary directory, removed by `cleanUp()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("charrnn-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> URL { url.appendingPathComponent(name) }

    func cleanUp() { try? FileManager.default.removeItem(at: url) }
}

/// A deterministic English-like text of exactly `length` characters.
func sampleText(length: Int) -> String {
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs", "home", "again"]
    var text = ""
    var index = 0
    while text.count < length {
        text += words[(index * 7 + index / 3) % words.count]
        text += index % 11 == 10 ? ".\n" : " "
        index += 1
    }
    return String(text.prefix(length))
}
