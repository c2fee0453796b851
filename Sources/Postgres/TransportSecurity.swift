import CLibPQ
import Foundation

/// Encryption by default for every connection that leaves the machine.
///
/// libpq's own default, `sslmode=prefer`, falls back to plaintext without a
/// word, and an active attacker on the path can then fake any result, an audit
/// row's COMMIT included. So: when any host a connection may use is neither a
/// Unix socket nor a literal loopback address, and neither the URL/conninfo,
/// its service (`service=`, `PGSERVICE`) nor the environment (`PGSSLMODE`)
/// sets `sslmode`, the connection uses `sslmode=verify-full`. To such a host,
/// `allow`, `prefer` and `require` are refused before anything is sent: each
/// would hand the password to whoever answers, verified or not; only
/// `verify-ca`/`verify-full`, or `disable` given explicitly, are accepted.
public struct TransportSecurity: Sendable, Equatable {
    /// The hosts libpq may connect to (`host`/`hostaddr`, comma-separated lists split).
    public let hosts: [String]
    /// `sslmode` as the conninfo or the environment sets it; nil when unset.
    public let explicitMode: String?

    public init(hosts: [String], explicitMode: String?) {
        self.hosts = hosts
        self.explicitMode = explicitMode
    }

    /// Reads what libpq would use: the conninfo's keywords, then its service's
    /// (as libpq reads the service files), else its environment defaults
    /// (`PGHOST`, `PGHOSTADDR`, `PGSSLMODE`, `PGREQUIRESSL`). A service that
    /// cannot be found counts as leaving the machine with no `sslmode`.
    public static func of(conninfo: String) throws -> TransportSecurity {
        try of(conninfo: conninfo, environment: ProcessInfo.processInfo.environment)
    }

    public static func of(conninfo: String, environment: [String: String]) throws -> TransportSecurity {
        var options: [String: String] = [:]
        if !conninfo.isEmpty {
            var error: UnsafeMutablePointer<CChar>? = nil
            guard let parsed = PQconninfoParse(conninfo, &error) else {
                let message = error.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "unparseable"
                if let error { PQfreemem(error) }
                throw PostgresError(
                    .invalidConninfo,
                    "the database URL or conninfo is invalid: \(message); fix DATABASE_URL (postgresql://user@host:port/database) or --database-url"
                )
            }
            defer { PQconninfoFree(parsed) }
            options = values(of: parsed)
        }
        // A service's keywords fill in what the conninfo leaves unset (libpq's order).
        if let service = options["service"] ?? environment["PGSERVICE"].flatMap({ $0.isEmpty ? nil : $0 }) {
            guard let fromService = ServiceFile.lookUp(service, environment: environment) else {
                return TransportSecurity(hosts: ["service \(service)"], explicitMode: options["sslmode"] ?? environment["PGSSLMODE"])
            }
            options.merge(fromService) { conninfo, _ in conninfo }
        }
        var defaults: [String: String] = [:]
        if let parsed = PQconndefaults() {
            defer { PQconninfoFree(parsed) }
            defaults = values(of: parsed)
        }
        func effective(_ keyword: String) -> String? { options[keyword] ?? defaults[keyword] }
        var mode = effective("sslmode")
        // libpq's compiled-in default is "prefer": only a value that differs, or one the
        // caller, its service or the environment gave, counts as explicit.
        if options["sslmode"] == nil, environment["PGSSLMODE"] == nil {
            mode = environment["PGREQUIRESSL"] == "1" ? "require" : nil
        }
        let hosts = [effective("host"), effective("hostaddr")].compactMap { $0 }
            .flatMap { $0.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) } }
        return TransportSecurity(hosts: hosts, explicitMode: mode)
    }

    /// Refuses, before anything is sent, a connection off this machine whose
    /// `sslmode` would send the password to a server it has not verified.
    public func checkBeforeConnecting() throws {
        guard leavesTheMachine, let mode = explicitMode, ["allow", "prefer", "require"].contains(mode) else { return }
        throw PostgresError(
            .insecureTransport,
            """
            sslmode=\(mode) does not verify the database server's identity, so the password would go to whoever answers at \
            \(hosts.filter { !Self.isLocal($0) }.joined(separator: ", ")) (a server off this machine); use sslmode=verify-full with \
            sslrootcert=<the server's CA file>, or, on a network you trust, set sslmode=disable explicitly to allow plaintext
            """)
    }

    /// True for a Unix socket directory (or the default one, no host at all) and
    /// literal loopback addresses. A name, `localhost` included, is looked up
    /// (hosts file, then DNS where it lacks the name) and counts as leaving the machine.
    public static func isLocal(_ host: String) -> Bool {
        if host.isEmpty || host.hasPrefix("/") || host.hasPrefix("@") { return true }
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        var v4 = in_addr()
        if inet_pton(AF_INET, bare, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, bare, &v6) == 1 {
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }  // ::1
            // IPv4-mapped loopback, ::ffff:127.x.y.z
            return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
        }
        return false
    }

    /// Whether a connection may leave the machine.
    public var leavesTheMachine: Bool { hosts.isEmpty ? false : !hosts.allSatisfy(Self.isLocal) }

    /// The `sslmode` to add to the connection parameters, when there is one.
    public var defaultMode: String? { leavesTheMachine && explicitMode == nil ? "verify-full" : nil }

    /// `service`'s keywords from the first connection service file that has it,
    /// in libpq's order: `PGSERVICEFILE` (else `~/.pg_service.conf`), then
    /// `pg_service.conf` in `PGSYSCONFDIR` (else Debian's `/etc/postgresql-common`).
    enum ServiceFile {
        static func lookUp(_ service: String, environment: [String: String]) -> [String: String]? {
            let user = environment["PGSERVICEFILE"] ?? environment["HOME"].map { "\($0)/.pg_service.conf" }
            let system = "\(environment["PGSYSCONFDIR"] ?? "/etc/postgresql-common")/pg_service.conf"
            for path in [user, system].compactMap({ $0 }) {
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
                if let keywords = section(service, in: text) { return keywords }
            }
            return nil
        }

        /// The `key=value` lines of section `[service]` of an INI text.
        static func section(_ service: String, in text: String) -> [String: String]? {
            var keywords: [String: String]? = nil
            for raw in text.split(whereSeparator: \.isNewline) {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") { continue }
                if line.hasPrefix("[") && line.hasSuffix("]") {
                    if keywords != nil { break }
                    if line.dropFirst().dropLast() == Substring(service) { keywords = [:] }
                    continue
                }
                guard keywords != nil, let equals = line.firstIndex(of: "=") else { continue }
                keywords![line[..<equals].trimmingCharacters(in: .whitespaces)] = line[line.index(after: equals)...]
                    .trimmingCharacters(in: .whitespaces)
            }
            return keywords
        }
    }

    /// Refuses an established connection to `host` that is not encrypted,
    /// unless plaintext was asked for explicitly.
    public func check(connectedHost host: String, encrypted: Bool, port: String) throws {
        guard !encrypted, !Self.isLocal(host), explicitMode != "disable" else { return }
        throw PostgresError(
            .insecureTransport,
            """
            the connection to \(host):\(port) is not encrypted (sslmode=\(explicitMode ?? "prefer") let libpq fall back to plaintext), \
            so anyone on the path could read or change what is sent, audit rows included; use sslmode=verify-full with \
            sslrootcert=<the server's CA file>, or, on a network you trust, set sslmode=disable explicitly to allow plaintext
            """)
    }

    /// What to add to a failed connection's message when TLS was required by default.
    public var failureHint: String? {
        guard defaultMode != nil else { return nil }
        return "TLS is required by default for a database that is not on this machine (sslmode=verify-full): "
            + "give sslrootcert=<the server's CA file> in DATABASE_URL (or PGSSLROOTCERT), or set sslmode=disable explicitly to allow plaintext"
    }

    private static func values(of options: UnsafeMutablePointer<PQconninfoOption>) -> [String: String] {
        var values: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { values[String(cString: keyword)] = String(cString: value) }
            option += 1
        }
        return values
    }
}
