public import KeyCustody
public import Postgres
import Storage
public import VaultCrypto

/// `vault doctor`: what a key job or a compliance machine needs, checked
/// before any work, so that a broken Secret fails on the day it is deployed
/// rather than the first night a job has something to do. Each check says
/// what it found; a failed one carries the error that says what to fix.
public enum Preflight {
    public struct Check: Sendable {
        public let name: String
        public let detail: String
        public let failure: (any Error)?
    }

    /// A finding of the preflight itself, with the exit code it maps to.
    public struct Finding: Error, CustomStringConvertible, Sendable {
        public let description: String
        public let exitCode: Int32
    }

    public static func run(
        store: KeyStore, kms: LazyKMSClient, passphrase: @escaping () throws -> SecureBytes,
        connect: () async throws -> PostgresConnection
    ) async -> [Check] {
        var checks: [Check] = []
        func check(_ name: String, _ body: () async throws -> String) async {
            do {
                checks.append(Check(name: name, detail: try await body(), failure: nil))
            } catch {
                checks.append(Check(name: name, detail: "\(error)", failure: error))
            }
        }
        var reached: PostgresConnection?
        await check("database") {
            let connection = try await connect()
            reached = connection
            let row = try await connection.query("SELECT session_user AS login, current_setting('server_version') AS version")[0]
            return "reachable as \(try row.string("login")) (PostgreSQL \(try row.string("version")))"
        }
        guard let connection = reached else { return checks }
        await check("schema") {
            let version = try await Schema.currentVersion(connection)
            guard version == Schema.latestVersion else {
                throw Finding(
                    description:
                        "the schema is at version \(version), this build needs \(Schema.latestVersion): run `ingest migrate` as the database owner",
                    exitCode: 78)
            }
            return "version \(version)"
        }
        await check("key files") {
            let tokenization = try store.tokenizationKeyring()
            let keys = try await KeyRegistry.fileKeys(
                tokenization: tokenization, recovery: try store.recoveryPublicKeys(), store: store, kms: try kms.client(for: tokenization))
            try KeyRegistry.verify(keys, against: try await KeyRegistry.registered(on: connection))
            return "\(keys.count) key versions in \(store.directory) are the registered ones"
        }
        await check("recovery private keys") {
            guard store.hasRecoveryPrivateKeys else { return "none on this machine (only compliance machines and key jobs need them)" }
            let keyring = RecoveryKeyring(store: store, kms: kms, passphrase: passphrase)
            var opened: [Int] = []
            var absent: [Int] = []
            for row in try await connection.query(
                """
                SELECT DISTINCT recovery_key_version AS version FROM data_keys
                UNION SELECT version FROM key_versions WHERE kind = 'recovery' AND state = 'active' ORDER BY 1
                """)
            {
                let version = try row.int("version")
                do {
                    _ = try await keyring.privateKey(version: version)
                    opened.append(version)
                } catch let error as KeyFileError where error.code == .unknownVersion {
                    absent.append(version)
                }
            }
            guard absent.isEmpty else {
                throw Finding(
                    description:
                        "data keys are wrapped to recovery key version\(absent.count == 1 ? "" : "s") \(absent.map { "v\($0)" }.joined(separator: ", ")), which \(store.recoveryPrivatePath) does not hold: restore it, or run `vault rewrap` where it is",
                    exitCode: 77)
            }
            return "the passphrase (or KMS) opens \(opened.map { "v\($0)" }.joined(separator: ", "))"
        }
        await check("audit key") {
            let keys = try store.auditKeyring()
            switch try await AuditLog.newestRowAuthentic(keys: keys, on: connection) {
            case nil: return "no authenticated audit row yet"
            case (let sequence, true)?: return "authenticates the newest audit row (#\(sequence))"
            case (let sequence, false)?:
                throw Finding(
                    description:
                        "\(store.auditKeyPath) does not authenticate the newest audit row (#\(sequence)): it is not the key the log is written with; restore the genuine audit key",
                    exitCode: 65)
            }
        }
        await check("role") {
            let groups = try await connection.query(
                """
                SELECT coalesce(string_agg(r.rolname, ', ' ORDER BY r.rolname), '') AS groups FROM pg_roles r
                WHERE r.rolname LIKE 'pseudonymizer\\_%' AND pg_has_role(session_user, r.oid, 'MEMBER')
                """)[0].string("groups")
            return groups.isEmpty ? "member of no pseudonymizer_* role (the owner, or a login not set up yet)" : "member of \(groups)"
        }
        return checks
    }
}
