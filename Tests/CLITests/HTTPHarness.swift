import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A running `charrnn-server`, started on a free loopback port (`--port 0`;
/// the port is read from the line it prints when listening).
final class ServerProcess: @unchecked Sendable {
    let process = Process()
    let port: Int
    let listeningLine: String
    private let output = Pipe()
    private let errors = Pipe()

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        guard let executable = CLI.binary("charrnn-server") else { throw CLI.CLIError.binaryNotFound }
        process.executableURL = executable
        process.arguments = arguments + ["--port", "0"]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // The first line says where it listens.
        var received = Data()
        let deadline = Date().addingTimeInterval(60)
        while !received.contains(0x0A) && Date() < deadline && process.isRunning {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { Thread.sleep(forTimeInterval: 0.01) }
            received.append(chunk)
        }
        listeningLine = String(decoding: received.prefix { $0 != 0x0A }, as: UTF8.self)
        guard let match = listeningLine.firstMatch(of: #/listening on http://127\.0\.0\.1:(\d+)//#), let port = Int(match.output.1) else {
            process.terminate()
            let stderr = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
            throw ServerError.didNotStart(listeningLine + stderr)
        }
        self.port = port
    }

    enum ServerError: Error { case didNotStart(String) }

    /// Sends SIGTERM and waits for the exit; the exit status.
    @discardableResult
    func stop(timeout: TimeInterval = 60) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// What the server printed on standard output after its first line (read once it has exited).
    var remainingOutput: String { String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }

    deinit { if process.isRunning { process.terminate() } }

    func request(_ method: String, _ path: String, json: String? = nil, headers: [String: String] = [:]) throws -> HTTPReply {
        try HTTP.request(port: port, method: method, path: path, body: json.map { Data($0.utf8) }, headers: headers)
    }

    /// The value of an unlabelled Prometheus metric.
    func metric(_ name: String) throws -> Double? {
        let text = try request("GET", "/metrics").text
        return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
    }
}

/// An HTTP answer as the tests read it.
struct HTTPReply {
    let status: Int
    /// Header names in lower case.
    let headers: [String: String]
    let body: Data

    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }

    /// Server-Sent Events: (event name, data object) in order.
    var events: [(name: String, data: [String: Any])] {
        text.components(separatedBy: "\n\n").compactMap { block in
            guard !block.isEmpty else { return nil }
            var name = "message"
            var data = ""
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:]
            return (name, object)
        }
    }
}

/// A small HTTP/1.1 client over a loopback socket, for tests only: one
/// request per connection (`Connection: close`), chunked bodies decoded.
enum HTTP {
    enum Failure: Error {
        case connect(Int32)
        case send
        case timeout
        case malformed(String)
    }

    /// A connected socket to 127.0.0.1:`port`, reads timing out after `timeout`.
    static func connect(port: Int, timeout: TimeInterval = 60) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure.connect(errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(descriptor)
            throw Failure.connect(code)
        }
        var limit = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        return descriptor
    }

    static func send(_ descriptor: Int32, method: String, path: String, body: Data?, headers: [String: String]) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if let body {
            // JSON unless the test says otherwise.
            if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) { head += "Content-Type: application/json\r\n" }
            head += "Content-Length: \(body.count)\r\n"
        }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let bytes = Data((head + "\r\n").utf8) + (body ?? Data())
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw Failure.send }
            sent += count
        }
    }

    /// Sends `bytes` as they are and reads until the server closes the
    /// connection: what arrived, and whether it closed within `timeout`
    /// seconds (false: it was still open, the read timed out).
    static func exchange(port: Int, _ bytes: String, timeout: TimeInterval = 5) throws -> (received: String, closed: Bool) {
        let descriptor = try connect(port: port, timeout: timeout)
        defer { close(descriptor) }
        let data = Data(bytes.utf8)
        let count = data.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress!, data.count, Int32(MSG_NOSIGNAL)) }
        guard count == data.count else { throw Failure.send }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
            if count < 0 { return (String(decoding: received, as: UTF8.self), false) }
            received.append(contentsOf: buffer[..<count])
        }
    }

    static func request(port: Int, method: String, path: String, body: Data? = nil, headers: [String: String] = [:]) throws -> HTTPReply {
        let descriptor = try connect(port: port)
        defer { close(descriptor) }
        try send(descriptor, method: method, path: path, body: body, headers: headers)
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                if received.isEmpty { throw Failure.timeout }
                break
            }
            received.append(contentsOf: buffer[0..<count])
        }
        return try parse(received)
    }

    static func parse(_ raw: Data) throws -> HTTPReply {
        guard let split = raw.firstRange(of: Data("\r\n\r\n".utf8)) else { throw Failure.malformed(String(decoding: raw, as: UTF8.self)) }
        let lines = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw Failure.malformed(lines.first ?? "")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(raw[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = dechunk(body) }
        return HTTPReply(status: status, headers: headers, body: body)
    }

    /// The body of a chunked transfer (what has arrived of it).
    static func dechunk(_ data: Data) -> Data {
        var out = Data()
        var index = data.startIndex
        while let lineEnd = data[index...].firstRange(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText, radix: 16), size > 0 else { break }
            let start = lineEnd.upperBound
            guard start + size <= data.endIndex else {
                out.append(data[start...])
                break
            }
            out.append(data[start..<start + size])
            index = start + size + 2
            if index >= data.endIndex { break }
        }
        return out
    }
}
