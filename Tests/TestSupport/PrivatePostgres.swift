import Foundation

/// A PostgreSQL cluster of a test's own, for tests that stop the database:
/// stopping the shared one would break every test running beside it.
public final class PrivatePostgres: Sendable {
    public let port: Int
    public let url: String
    /// Where the cluster's files live (TLS files are made here).
    public let root: String
    private let bin: String
    private let listenAddresses: [String]

    /// The certificate and key a TLS-enabled cluster serves, and the CA that signed them.
    public struct TLSFiles: Sendable {
        public let caCertificate: String
        public let certificate: String
        public let key: String
    }

    /// initdb + start on a free port, with database `pseudonymizer`; it listens
    /// on loopback and on `extraAddresses` (trusting any client there), with
    /// TLS when `tls` makes files for it; `settings` go to postgresql.conf.
    public static func start(
        extraAddresses: [String] = [], tls: (@Sendable (String) async throws -> TLSFiles)? = nil, settings: [String] = []
    ) async throws -> PrivatePostgres {
        let bin = try TestEnvironment.variable("PSEUDO_PG_BIN")
        let root = "/tmp/test-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root + "/sockets", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + "/tool.log", contents: nil)
        let port = try await freePort()
        let cluster = PrivatePostgres(port: port, root: root, bin: bin, listenAddresses: ["127.0.0.1"] + extraAddresses)
        let files = try await tls?(root)
        if geteuid() == 0 { _ = try await runProgram("/bin/chown", ["-R", "postgres", root]) }
        try await cluster.asServerUser(
            "\(bin)/initdb", ["-D", "\(root)/data", "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8"])
        var settings = settings.map { $0 + "\n" }.joined()
        if !extraAddresses.isEmpty {
            try "host all all 0.0.0.0/0 trust\n".append(toFile: "\(root)/data/pg_hba.conf")
        }
        if let files {
            settings += "ssl = on\nssl_cert_file = '\(files.certificate)'\nssl_key_file = '\(files.key)'\n"
        }
        if !settings.isEmpty { try settings.append(toFile: "\(root)/data/postgresql.conf") }
        try await cluster.startServer()
        let created = try await runProgram(
            "\(bin)/psql",
            [
                "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres",
                "-qAt", "-c", "CREATE DATABASE pseudonymizer",
            ])
        guard created.status == 0 else { throw TestEnvironmentError("CREATE DATABASE failed: \(created.errors)") }
        return cluster
    }

    private init(port: Int, root: String, bin: String, listenAddresses: [String]) {
        self.port = port
        self.root = root
        self.bin = bin
        self.listenAddresses = listenAddresses
        self.url = "postgresql://postgres@127.0.0.1:\(port)/pseudonymizer"
    }

    public func startServer() async throws {
        try await asServerUser(
            "\(bin)/pg_ctl",
            [
                "-D", "\(root)/data", "-l", "\(root)/data/server.log", "-w", "-t", "60",
                "-o", "-c listen_addresses='\(listenAddresses.joined(separator: ","))' -p \(port) -k \(root)/sockets",
                "start",
            ])
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

extension String {
    /// Appends to the end of the file at `path`.
    func append(toFile path: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else { throw TestEnvironmentError("cannot open \(path)") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(utf8))
    }
}

/// An IPv4 address of this machine that is not loopback (the first global one).
public func nonLoopbackAddress() async throws -> String {
    let result = try await runProgram("/usr/bin/env", ["ip", "-4", "-o", "addr", "show", "scope", "global"])
    for line in result.output.split(separator: "\n") {
        let fields = line.split(separator: " ")
        if let index = fields.firstIndex(of: "inet"), index + 1 < fields.count, let address = fields[index + 1].split(separator: "/").first
        {
            return String(address)
        }
    }
    throw TestEnvironmentError("this machine has no non-loopback IPv4 address (ip -4 addr show scope global): the transport tests need one")
}

/// A throwaway CA and a server certificate for `address` (an IP SAN), made with the openssl CLI in `directory`.
public func makeTLSFiles(in directory: String, for address: String) async throws -> PrivatePostgres.TLSFiles {
    let script = """
        set -e
        cd "$1"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj "/CN=$2" 2>/dev/null
        printf 'subjectAltName=IP:%s\n' "$2" > san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
        chmod 600 server.key
        """
    let result = try await runProgram("/bin/bash", ["-c", script, "tls", directory, address])
    guard result.status == 0 else { throw TestEnvironmentError("making TLS files failed: \(result.errors)") }
    return .init(caCertificate: "\(directory)/ca.pem", certificate: "\(directory)/server.pem", key: "\(directory)/server.key")
}

/// A TCP port nothing listens on right now.
public func freePort() async throws -> Int {
    let result = try await runProgram(
        "/usr/bin/env",
        [
            "python3", "-c",
            "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
        ])
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

/// A loopback port held bound but never listening, so nothing else can take
/// it while a test counts on "nothing listening" there: connecting is refused.
public final class RefusingPort: Sendable {
    public let port: Int
    private let descriptor: Int32

    public init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw TestEnvironmentError("socket() failed: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(descriptor, address, length) == 0 && getsockname(descriptor, address, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw TestEnvironmentError("could not bind a loopback port: errno \(errno)")
        }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }
}
