#if Server
    import Hummingbird
    import HummingbirdCore
    import Logging
    import NIOCore
    import NIOHTTP1
    import NIOHTTPTypesHTTP1

    extension HTTPServerBuilder {
        /// Hummingbird's HTTP/1.1 server, closing connections as clients expect (`ClosingHTTP1Channel`).
        package static func closingHTTP1(idleTimeout: TimeAmount) -> HTTPServerBuilder {
            HTTPServerBuilder { responder in
                ClosingHTTP1Channel(inner: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout)))
            }
        }
    }

    /// Hummingbird's HTTP/1.1 channel, with connections closed as clients
    /// expect: Hummingbird's request type has no HTTP version, so without
    /// this an HTTP/1.0 request would be answered as HTTP/1.1 (its body
    /// perhaps chunked) on a connection left open, and a client that reads
    /// to the end of the connection would wait forever.
    struct ClosingHTTP1Channel: ServerChildChannel {
        let inner: HTTP1Channel

        func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<HTTP1Channel.Value> {
            inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
                // Next to the socket's side of the conversion to HTTP types, where the version is still known.
                let conversion = try channel.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self)
                try channel.pipeline.syncOperations.addHandler(ConnectionCloseHandler(), position: .before(conversion))
                try channel.pipeline.syncOperations.addHandler(InputClosedHandler(), position: .first)
                return value
            }
        }

        func handle(value: HTTP1Channel.Value, logger: Logger) async {
            await inner.handle(value: value, logger: logger)
        }
    }

    /// Closes the connection when the client's side of it ends. Hummingbird
    /// allows half-closed connections, so a client that closes its socket
    /// while its answer is being made (a whole answer sends nothing until
    /// the end) would otherwise go unnoticed until the request's timeout,
    /// holding its place in the batch: nothing is written to it that could
    /// fail. As Go's net/http does, the end of the client's input while it
    /// waits is taken as the client gone; the connection watch then ends its
    /// request. (A client that only shuts down its sending side and still
    /// reads gets no answer: few do, and none that sends keep-alive.)
    final class InputClosedHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Marks each request that ends its connection: every HTTP/1.0 request
    /// (a 1.0 client cannot read a chunked body, and a body of unknown length
    /// ends with the connection), and any whose `Connection` header has the
    /// `close` token in any case or list. Its `Connection` becomes exactly
    /// `close`, the form Hummingbird looks for before closing after the
    /// answer, and the answer says `Connection: close` (as HTTP/1.0 to a 1.0
    /// client).
    final class ConnectionCloseHandler: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = HTTPServerResponsePart

        /// For each request read and not yet answered, in order: the version
        /// to answer with, when the connection closes after it.
        private var closing: [HTTPVersion?] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(var head) = unwrapInboundIn(data) else {
                context.fireChannelRead(data)
                return
            }
            let tokens = head.headers["connection"].flatMap { $0.split(separator: ",") }.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            }
            if head.version.major == 1 && head.version.minor == 0 || tokens.contains("close") {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                closing.append(head.version)
            } else {
                closing.append(nil)
            }
            context.fireChannelRead(wrapInboundOut(.head(head)))
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard case .head(var head) = unwrapOutboundIn(data), head.status.code >= 200 else {
                context.write(data, promise: promise)
                return
            }
            // An answer without a request (a parse error's 400) closes the connection anyway.
            if !closing.isEmpty, let version = closing.removeFirst() {
                head.version = version.minor == 0 ? .http1_0 : head.version
                head.headers.replaceOrAdd(name: "connection", value: "close")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        }
    }
#endif
