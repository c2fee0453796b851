import Foundation

/// A PostgreSQL cluster of a test's own, for tests that stop the database:
/// stopping the shared one would break every test running beside it.
public final class PrivatePostgres: Sendable {
    public let port: Int
    public let url: String
    private let root: String
    private let bin: String

    /// initdb + start on a free loopback port, with database `pseudonymizer`.
    public static func start() async throws -> PrivatePostgres {
        let bin = try TestEnvironment.variable("PSEUDO_PG_BIN")
        let root = "/tmp/test-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/sockets", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + "/tool.log", contents: nil)
        let port = try await freePort()
        let cluster = PrivatePostgres(port: port, root: root, bin: bin)
        if geteuid() == 0 { _ = try await runProgram("/bin/chown", ["-R", "postgres", root]) }
        try await cluster.asServerUser("\(bin)/initdb", ["-D", "\(root)/data", "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"])
        try await cluster.startServer()
        let created = try await runProgram("\(bin)/psql", ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres",
                                                           "-qAt", "-c", "CREATE DATABASE pseudonymizer"])
        guard created.status == 0 else { throw TestEnvironmentError("CREATE DATABASE failed: \(created.errors)") }
        return cluster
    }

    private init(port: Int, root: String, bin: String) {
        self.port = port
        self.root = root
        self.bin = bin
        self.url = "postgresql://postgres@127.0.0.1:\(port)/pseudonymizer"
    }

    public func startServer() async throws {
        try await asServerUser("\(bin)/pg_ctl", ["-D", "\(root)/data", "-l", "\(root)/data/server.log", "-w", "-t", "60",
                                                  "-o", "-c listen_addresses=127.0.0.1 -p \(port) -k \(root)/sockets", "start"])
    }

    public func stopServer() async throws {
        try await asServerUser("\(bin)/pg_ctl", ["-D", "\(root)/data", "-m", "fast", "-w", "stop"])
    }

    /// Stops the server and deletes the cluster.
    public func destroy() async {
        _ = try? await stopServer()
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Runs a server tool through Python's subprocess, which closes every
    /// inherited descriptor: `pg_ctl start` leaves a server running, and a
    /// descriptor it inherited from this process (a pipe, or the socket
    /// Foundation watches for the child's exit) would stay open for good.
    private func asServerUser(_ program: String, _ arguments: [String]) async throws {
        let log = "\(root)/tool.log"
        let command = (geteuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [program] + arguments
        let launcher = """
            import subprocess, sys
            with open(sys.argv[1], "ab") as log:
                sys.exit(subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True).returncode)
            """
        let result = try await runProgram("/usr/bin/env", ["python3", "-c", launcher, log] + command)
        guard result.status == 0 else {
            throw TestEnvironmentError("\(program) failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }
}

/// A TCP port nothing listens on right now.
public func freePort() async throws -> Int {
    let result = try await runProgram("/usr/bin/env", ["python3", "-c",
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"])
    guard let port = Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw TestEnvironmentError("could not find a free port")
    }
    return port
}

/// GETs `url` with curl: status code and body.
public func httpGet(_ url: String) async throws -> (status: Int, body: String) {
    let result = try await runProgram("/usr/bin/env", ["curl", "-s", "-m", "5", "-w", "\n%{http_code}", url])
    let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
}
