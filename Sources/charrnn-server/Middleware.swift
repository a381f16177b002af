#if Server
    import CharRNNTools
    import Foundation
    import Hummingbird
    import NIOCore

    /// A request's context: Hummingbird's, and the connection, so a request
    /// can end its stream when the client goes away.
    struct ServerContext: RequestContext {
        var coreContext: CoreRequestContextStorage
        /// The client's connection.
        let channel: any Channel

        init(source: ApplicationRequestContextSource) {
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
            let prefix = "Bearer "
            guard given.hasPrefix(prefix), Self.equalInConstantTime(Array(given.utf8.dropFirst(prefix.utf8.count)), Array(key.utf8)) else {
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
