public import Foundation

/// `scripts/tcp-proxy` in front of a loopback service, so a test can take the
/// service away from a client and give it back: `cut()` closes every open
/// connection and stops listening (new ones are refused), `restore()` listens again.
public final class TCPProxy: @unchecked Sendable {
    public let port: Int
    private let process: Process

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    /// A proxy on a free loopback port to `target`'s host and port.
    public static func start(to target: URL) async throws -> TCPProxy {
        let port = try await freePort()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/tcp-proxy").path
        let process = try PythonHelper.start(
            script: script, arguments: [String(port), target.host ?? "127.0.0.1", String(target.port ?? 80)])
        let proxy = TCPProxy(port: port, process: process)
        try await waitUntil(.seconds(60)) { (try? await httpGet("http://127.0.0.1:\(port)/").status) ?? 0 != 0 }
        return proxy
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    public func cut() { kill(process.processIdentifier, SIGUSR1) }

    public func restore() { kill(process.processIdentifier, SIGUSR2) }

    public func stop() { if process.isRunning { process.terminate() } }
}
