#if Server
    import CharRNN
    import CharRNNTools
    import Foundation
    import Hummingbird
    import NIOCore

    /// A request's context: Hummingbird's, and the connection, so a request
    /// can end its stream when the client goes away.
    package struct ServerContext: RequestContext {
        package var coreContext: CoreRequestContextStorage
        /// The client's connection.
        let channel: any Channel

        package init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
            channel = source.channel
        }
    }

    /// Turns every error into a JSON answer (`{"error": …}`) and counts every
    /// answer by route and status. Outermost, so it sees what the client gets.
    struct ErrorAndMetricsMiddleware: RouterMiddleware {
        typealias Context = ServerContext
        let metrics: ServerMetrics

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            let response: Response
            do {
                response = try await next(request, context)
            } catch is ClientGone {
                // Not an error of the server's: counted apart, never logged, and answered to no one.
                metrics.countDisconnect(route: context.endpointPath ?? "unmatched")
                return Response(status: .init(code: 499, reasonPhrase: "Client Closed Request"))
            } catch let error as APIError {
                response = try error.response(from: request, context: context)
            } catch let error as any HTTPResponseError {
                let status = error.status
                let message = status == .notFound ? "no route \(request.method) \(request.uri.path)" : status.reasonPhrase
                var answer = APIError(status, message)
                answer.headers = (try? error.response(from: request, context: context).headers) ?? [:]
                answer.headers[.contentLength] = nil
                response = try answer.response(from: request, context: context)
            } catch {
                context.logger.error("request failed", metadata: ["error": "\(error)"])
                response = try APIError(.internalServerError, "internal error").response(from: request, context: context)
            }
            // Unknown paths are counted under one label, so a scan cannot grow the metrics without bound.
            metrics.countRequest(route: context.endpointPath ?? "unmatched", status: response.status.code)
            return response
        }
    }

    /// The client went away before its answer was made (while its body was
    /// read or its text generated): not a server error.
    struct ClientGone: Error {}

    /// How often a request looks at its connection while it waits for text.
    let connectionCheckInterval: Duration = .milliseconds(100)

    /// Runs `body` (which reads `streams`) while looking at the connection
    /// every `connectionCheckInterval`: a client that goes away while
    /// nothing is sent to it, as while a long prime is fed, ends the streams
    /// within that time instead of at their next chunk, and frees their
    /// places. The streams then end `.cancelled` and `body` sees the
    /// connection closed.
    func watchingConnection<Result>(
        _ connection: any Channel, ending streams: [GenerationStream], _ body: () async throws -> Result
    ) async rethrows -> Result {
        let watcher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: connectionCheckInterval)
                if !connection.isActive {
                    for stream in streams { stream.cancel() }
                    return
                }
            }
        }
        defer { watcher.cancel() }
        return try await body()
    }

    /// Cross-origin requests from the pages of `origins` (`--cors-origin`;
    /// "*" for any): preflights answered (before the key is checked: a
    /// browser sends none with them), and answers carry
    /// `Access-Control-Allow-Origin`. Pages of other origins get no such
    /// header, so their browsers refuse them the answers.
    struct CORSMiddleware: RouterMiddleware {
        typealias Context = ServerContext
        let origins: Set<String>

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            guard let origin = request.headers[.origin], !origins.isEmpty else { return try await next(request, context) }
            let allowed = origins.contains(origin) || origins.contains("*")
            if request.method == .options, request.headers[.accessControlRequestMethod] != nil {
                guard allowed else {
                    throw APIError(.forbidden, "pages of \(origin) may not call this server (it takes --cors-origin for those that may)")
                }
                return Response(
                    status: .noContent,
                    headers: [
                        .accessControlAllowOrigin: origin, .accessControlAllowMethods: "GET, POST",
                        .accessControlAllowHeaders: "Authorization, Content-Type", .accessControlMaxAge: "600", .vary: "Origin",
                    ])
            }
            var response = try await next(request, context)
            if allowed {
                response.headers[.accessControlAllowOrigin] = origin
                response.headers[.vary] = "Origin"
            }
            return response
        }
    }

    /// With a key set, every path but `open` needs `Authorization: Bearer <key>`;
    /// otherwise 401 with `WWW-Authenticate: Bearer`.
    struct BearerAuthMiddleware: RouterMiddleware {
        typealias Context = ServerContext
        let key: String?
        let open: Set<String>

        init(key: String?, open: [String]) {
            self.key = key
            self.open = Set(open)
        }

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            guard let key, !open.contains(request.uri.path) else { return try await next(request, context) }
            let given = request.headers[.authorization] ?? ""
            // The scheme's name is case-insensitive (RFC 7235 §2.1): "bearer KEY" is as good as "Bearer KEY".
            let words = given.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            let token = words.count == 2 && words[0].lowercased() == "bearer" ? words[1].drop(while: { $0 == " " }) : nil
            guard let token, Self.equalInConstantTime(Array(token.utf8), Array(key.utf8)) else {
                var error = APIError(
                    .unauthorized,
                    given.isEmpty
                        ? "this server needs an API key: send Authorization: Bearer <key>"
                        : "the API key is wrong")
                error.headers[.wwwAuthenticate] = "Bearer"
                throw error
            }
            return try await next(request, context)
        }

        /// Compares without stopping at the first difference, so the time taken says nothing of the key.
        static func equalInConstantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool {
            var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
            for index in 0..<max(a.count, b.count) {
                difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
            }
            return difference == 0
        }
    }
#endif
