#if Server
    import CharRNN
    import Hummingbird
    import Logging
    import NIOCore
    import ServiceLifecycle

    /// The application `charrnn-server` runs: `server`'s routes on
    /// `host:port`, connections closed as HTTP/1.0 and `Connection: close`
    /// clients expect. Built here for the executable and the in-process
    /// tests alike, so the tests exercise the server users get.
    /// `onServerRunning` is given the port bound (the one asked, or the free
    /// one chosen for port 0).
    package func buildApplication(
        _ server: Server, host: String = "127.0.0.1", port: Int = 0, logger: Logger = Logger(label: "charrnn-server"),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> Application<RouterResponder<ServerContext>> {
        Application(
            router: server.router(),
            server: .closingHTTP1(idleTimeout: .seconds(60)),
            configuration: .init(address: .hostname(host, port: port), serverName: "charrnn-server"),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
            logger: logger)
    }

    /// Drains the scheduler when the service group shuts down. List it after
    /// the HTTP application, so the group stops it first: new requests get
    /// 503 at once, streams in flight run for up to the grace period and then
    /// end, and only then does the server close.
    package struct SchedulerService: Service {
        /// The batch to drain.
        package let scheduler: GenerationScheduler
        /// How long streams in flight may run on after the shut-down begins.
        package let gracePeriod: Duration

        /// A service draining `scheduler` within `gracePeriod`.
        package init(scheduler: GenerationScheduler, gracePeriod: Duration) {
            self.scheduler = scheduler
            self.gracePeriod = gracePeriod
        }

        /// Waits for the shut-down, then drains.
        package func run() async throws {
            try? await gracefulShutdown()
            await scheduler.shutDown(gracePeriod: gracePeriod)
        }
    }
#endif
