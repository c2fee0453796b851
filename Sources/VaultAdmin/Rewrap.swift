import Foundation
public import Logging
public import Postgres
import Pseudonymization
public import Storage
public import VaultCrypto

/// `vault rewrap`: re-wraps every data key still wrapped to an older recovery
/// key version to the active one. Cost grows with the number of data keys
/// (each is unwrapped and wrapped once), not with the entries they protect.
/// Resumable and idempotent: each batch commits on its own, and a key is only
/// updated if it is still at the version it was read at.
public enum Rewrap {
    public struct Summary: Sendable {
        public let pending: [Int: Int]
        public let rewrapped: Int
        public let target: Int
    }

    public static func run(
        store: KeyStore, keyring: RecoveryKeyring, dryRun: Bool, reason: String, actor: AuditActor, connection: PostgresConnection,
        logger: Logger
    ) async throws -> Summary {
        let publicKeys = try store.recoveryPublicKeys()
        let target = publicKeys.active
        // Never move data keys to a key that is not the registered one, or
        // whose private half is not here to open them again.
        try await KeyAdministration.verifyRegistered(tokenization: nil, recovery: publicKeys, store: store, connection: connection)
        var pending: [Int: Int] = [:]
        for row in try await connection.query(
            "SELECT recovery_key_version AS v, count(*) AS n FROM data_keys WHERE recovery_key_version <> $1 GROUP BY 1",
            [.int(target.version)])
        {
            pending[try row.int("v")] = try row.int("n")
        }
        let total = pending.values.reduce(0, +)
        guard !dryRun, total > 0 else { return Summary(pending: pending, rewrapped: 0, target: target.version) }
        try await KeyAdministration.requirePrivateHalf(of: target, keyring: keyring, store: store)

        // The rotation role re-wraps only through `rewrap_data_keys`, bound to this audited run.
        let run = try await RotationRun.beginCommitted(
            action: "rewrap", subject: "data keys → recovery v\(target.version)", reason: reason,
            outcome: "started: \(total) data keys", actor: actor, on: connection)
        let progress = Progress(label: "rewrap", total: total, logger: logger)
        var rewrapped = 0
        var after = "00000000-0000-0000-0000-000000000000"
        while true {
            if Task.isCancelled {
                // Stopped (SIGTERM): each batch committed on its own; the next run goes on.
                try await run.end(reason: reason, outcome: "interrupted: \(rewrapped) data keys", actor: actor, on: connection)
                throw CancellationError()
            }
            let rows = try await connection.query(
                """
                SELECT id::text AS id, recovery_key_version, wrapped_key FROM data_keys
                WHERE recovery_key_version <> $1 AND id > $2::uuid ORDER BY id LIMIT 200
                """, [.int(target.version), .text(after)])
            guard let last = rows.last else { break }
            var updates: [(id: String, from: Int, wrapped: [UInt8])] = []
            for row in rows {
                let id = try row.string("id")
                let version = try row.int("recovery_key_version")
                let key = try DataKeyWrap.unwrap(
                    try row.bytes("wrapped_key"), dataKeyID: id, recoveryVersion: version,
                    with: try await keyring.privateKey(version: version))
                updates.append((id, version, try DataKeyWrap.wrap(key, dataKeyID: id, to: target)))
            }
            // Only keys still at the version they were read at (a key is updated once).
            rewrapped += try await connection.query(
                "SELECT rewrap_data_keys($1, $2::uuid[], $3::integer[], $4::bytea[]) AS updated",
                [
                    .int(run.sequence), .textArray(updates.map(\.id)), .textArray(updates.map { String($0.from) }),
                    .byteArrays(updates.map(\.wrapped)),
                ], prepared: true)[0].int("updated")
            progress.advance(by: rows.count)
            after = try last.string("id")
        }
        progress.finish()
        try await run.end(reason: reason, outcome: "completed: \(rewrapped) data keys", actor: actor, on: connection)
        return Summary(pending: pending, rewrapped: rewrapped, target: target.version)
    }
}
