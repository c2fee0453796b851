import AsyncHTTPClient
public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle

/// Serves `/metrics` (Prometheus text format), `/health/live` and
/// `/health/ready` for orchestrators and scrapers. A `Service`: it stops with
/// the group's graceful shutdown.
public struct HTTPEndpoint: Service {
    let host: String
    let port: Int
    let registry: PrometheusCollectorRegistry
    let health: HealthState
    let logger: Logger

    public init(host: String, port: Int, registry: PrometheusCollectorRegistry, health: HealthState, logger: Logger) {
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.logger = logger
    }

    public func run() async throws {
        let respond = Self.responder(registry: registry, health: health, process: ProcessMetrics(registry: registry))
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPHandler(respond: respond))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("serving /metrics, /health/live and /health/ready", metadata: ["address": "\(host):\(port)"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }

    typealias Response = (status: HTTPResponseStatus, contentType: String, body: [UInt8])

    static func responder(registry: PrometheusCollectorRegistry, health: HealthState, process: ProcessMetrics)
        -> @Sendable (String) -> Response
    {
        { path in
            switch path.split(separator: "?").first.map(String.init) ?? path {
            case "/metrics":
                process.update()
                return (.ok, "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
            case "/health/live":
                return (.ok, "text/plain; charset=utf-8", Array("live\n".utf8))
            case "/health/ready":
                let (ready, problems) = health.readiness
                return ready
                    ? (.ok, "text/plain; charset=utf-8", Array("ready\n".utf8))
                    : (.serviceUnavailable, "text/plain; charset=utf-8", Array((problems.joined(separator: "; ") + "\n").utf8))
            default:
                return (.notFound, "text/plain; charset=utf-8", Array("not found: try /metrics, /health/live or /health/ready\n".utf8))
            }
        }
    }
}

/// One request, one response, then the connection may be reused.
private final class HTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: @Sendable (String) -> HTTPEndpoint.Response
    private var request: HTTPRequestHead?

    init(respond: @escaping @Sendable (String) -> HTTPEndpoint.Response) {
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let request else { return }
            self.request = nil
            let response: HTTPEndpoint.Response =
                request.method == .GET || request.method == .HEAD
                ? respond(request.uri)
                : (.methodNotAllowed, "text/plain; charset=utf-8", Array("GET only\n".utf8))
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: String(response.body.count))
            if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: response.status, headers: headers))),
                promise: nil)
            if request.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
            }
            let keepAlive = request.isKeepAlive
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }
}

/// Asks a running `ingest` for its health, for container health checks (the
/// runtime image has no curl). True when the endpoint answers 200.
public enum HealthProbe {
    public static func check(url: String, timeout: Duration = .seconds(3)) async -> Result<Void, IngestError> {
        do {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(timeout.components.seconds))
            guard response.status == .ok else {
                return .failure(IngestError("\(url) answered \(response.status.code): the service is not healthy"))
            }
            return .success(())
        } catch {
            return .failure(IngestError("\(url) did not answer (\(error)); is ingest running with --http-port?"))
        }
    }
}
