public import Foundation
public import Postgres
import Pseudonymization
public import VaultCrypto

/// Who is acting: the OS user running the tool, and the audit key its rows are
/// authenticated with. (The database role is the server's `session_user`.)
public struct AuditActor: Sendable {
    public let osUser: String
    let keys: AuditKeyring

    public init(osUser: String, keys: AuditKeyring) {
        self.osUser = osUser
        self.keys = keys
    }

    /// The running OS user, with the audit keys of `store`.
    public static func current(store: KeyStore) throws -> AuditActor {
        let user =
            getpwuid(geteuid()).flatMap { String(validatingCString: $0.pointee.pw_name) }
            ?? ProcessInfo.processInfo.environment["USER"] ?? "uid \(geteuid())"
        return AuditActor(osUser: user, keys: try store.auditKeyring())
    }
}

/// One thing to record: an action on a subject (a token, a key job), why, and
/// how it ended. Never an original value.
public struct AuditRecord: Sendable {
    public let action: String
    public let subject: String
    public let reason: String
    public let outcome: String

    public init(action: String, subject: String, reason: String, outcome: String) {
        self.action = action
        self.subject = subject
        self.reason = reason
        self.outcome = outcome
    }
}

/// A stored audit row.
public struct AuditEntry: Sendable, Equatable {
    public let sequence: Int64
    public let at: String
    public let osUser: String
    public let databaseRole: String
    public let action: String
    public let subject: String
    public let reason: String
    public let outcome: String
    public let previousHash: [UInt8]
    public let hash: [UInt8]
    /// Nil only for rows written before migration 4.
    public let macKeyVersion: Int?
    public let mac: [UInt8]?
}

/// The append-only audit log: a hash chain whose every row also carries an
/// HMAC under an audit key the database never holds (FORMATS.md, "Audit rows").
///
/// Rows are appended only through the database's `audit_append`,
/// `vault_reveal` and `vault_forget` functions, which take the chain lock,
/// stamp the server's time and `session_user`, and recompute each row's hash;
/// the client supplies the MACs. So a database owner who edits, deletes,
/// inserts or re-chains rows (even with the triggers disabled and every plain
/// hash recomputed) cannot produce valid MACs, and `verify` names the row.
/// Rows cut off the end leave a valid log: `verify(head:)` checks a head
/// recorded elsewhere.
public enum AuditLog {
    package static let genesis = [UInt8](repeating: 0, count: 32)
    /// The action of the row that vouches for rows written before migration 4.
    public static let anchorAction = "audit.anchor"

    /// What `audit_head()` returns: where the chain stands, the server's time
    /// and the session's role, under the chain lock until the transaction ends.
    package struct Head {
        package let sequence: Int64
        package let hash: [UInt8]
        package let at: String
        package let databaseRole: String

        package init(sequence: Int64, hash: [UInt8], at: String, databaseRole: String) {
            self.sequence = sequence
            self.hash = hash
            self.at = at
            self.databaseRole = databaseRole
        }
    }

    package static func head(on connection: isolated PostgresConnection) throws -> Head {
        let row = try connection.query("SELECT head_seq, head_hash, at, db_role FROM audit_head()", prepared: true)[0]
        return Head(
            sequence: Int64(try row.int("head_seq")), hash: try row.bytes("head_hash"), at: try row.string("at"),
            databaseRole: try row.string("db_role"))
    }

    /// The rows `records` become after `head`, chained and authenticated.
    package static func prepare(_ records: [AuditRecord], after head: Head, actor: AuditActor) throws -> [AuditEntry] {
        let key = actor.keys.active
        let mac = try HMACSHA256(key: key.localSecret(keyName: "audit key"))
        var previous = head.hash
        var entries: [AuditEntry] = []
        entries.reserveCapacity(records.count)
        for (offset, record) in records.enumerated() {
            let sequence = head.sequence + Int64(offset) + 1
            let hash = try rowHash(
                previous: previous, sequence: sequence, at: head.at, osUser: actor.osUser,
                databaseRole: head.databaseRole, record: record)
            entries.append(
                AuditEntry(
                    sequence: sequence, at: head.at, osUser: actor.osUser, databaseRole: head.databaseRole, action: record.action,
                    subject: record.subject, reason: record.reason, outcome: record.outcome, previousHash: previous, hash: hash,
                    macKeyVersion: key.version, mac: try mac.authenticationCode(for: macInput(hash))))
            previous = hash
        }
        return entries
    }

    /// The parameters every appending function takes after its own:
    /// os user, MAC key version, then per row action?, subject, reason, outcome, hash, MAC.
    package static func rowParameters(_ entries: [AuditEntry], actions: Bool) -> [PostgresValue] {
        [.text(entries.first?.osUser ?? ""), .int(entries.first?.macKeyVersion ?? 0)]
            + (actions ? [.textArray(entries.map(\.action))] : [])
            + [
                .textArray(entries.map(\.subject)), .textArray(entries.map(\.reason)), .textArray(entries.map(\.outcome)),
                .byteArrays(entries.map(\.hash)), .byteArrays(entries.compactMap(\.mac)),
            ]
    }

    /// Appends `records` inside the caller's transaction (they commit or vanish
    /// together with it); returns their sequence numbers.
    @discardableResult
    public static func append(_ records: [AuditRecord], actor: AuditActor, on connection: isolated PostgresConnection) throws -> [Int64] {
        guard !records.isEmpty else { return [] }
        let entries = try prepare(records, after: try head(on: connection), actor: actor)
        try connection.query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8)", rowParameters(entries, actions: true), prepared: true)
        return entries.map(\.sequence)
    }

    /// Refuses to go on unless `entry` is the chain's row at its sequence now
    /// (checked inside the transaction that appended it).
    package static func requireStored(_ entry: AuditEntry, on connection: isolated PostgresConnection) throws {
        let stored = try connection.query("SELECT hash FROM audit_log WHERE seq = $1", [.int(entry.sequence)], prepared: true)
        guard let hash = try stored.first?.bytes("hash"), hash == entry.hash else {
            throw AuditError(
                "the database did not store the audit row the reveal should have appended (sequence \(entry.sequence)): its audit functions were changed; nothing is shown. Tell whoever audits the database owners"
            )
        }
    }

    /// Appends in a transaction of its own and commits.
    @discardableResult
    public static func appendCommitted(_ records: [AuditRecord], actor: AuditActor, on connection: PostgresConnection) async throws
        -> [Int64]
    {
        try await connection.transaction { connection in try append(records, actor: actor, on: connection) }
    }

    /// Runs `body` in a transaction, again when the vault changed between the
    /// rows being prepared and `vault_reveal` or `vault_forget` checking them.
    package static func retryingChanges<T: Sendable>(
        on connection: PostgresConnection, _ body: @Sendable (isolated PostgresConnection) throws -> T
    ) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await connection.transaction(body)
            } catch let error as PostgresError where error.sqlState == "40001" && attempt < 5 {
                attempt += 1
            }
        }
    }

    public enum Verification: Sendable, Equatable {
        /// `authenticated` rows carry a valid MAC; the rest (a prefix) predate
        /// migration 4 and are vouched for by the anchor row.
        case intact(rows: Int, authenticated: Int, headSequence: Int64, head: [UInt8])
        case broken(sequence: Int64, problem: String)
    }

    /// Walks the whole chain in order, checking each row's hash and MAC, and,
    /// when given, that the row `recordedHead` names is still there unchanged.
    public static func verify(
        keys: AuditKeyring, recordedHead: (sequence: Int64, hash: [UInt8])? = nil, on connection: PostgresConnection
    ) async throws -> Verification {
        var expectedSequence: Int64 = 1
        var previous = genesis
        var rows = 0
        var authenticated = 0
        var legacy = 0
        var macs: [Int: HMACSHA256] = [:]
        var after: Int64 = 0
        while true {
            let page = try await entries(after: after, limit: 10_000, on: connection)
            for entry in page {
                if entry.sequence != expectedSequence {
                    return .broken(
                        sequence: expectedSequence,
                        problem: entry.sequence > expectedSequence ? "row \(expectedSequence) is missing" : "rows out of order")
                }
                if entry.previousHash != previous {
                    return .broken(sequence: entry.sequence, problem: "its previous-hash does not match row \(entry.sequence - 1)")
                }
                let recomputed = try rowHash(
                    previous: previous, sequence: entry.sequence, at: entry.at, osUser: entry.osUser, databaseRole: entry.databaseRole,
                    record: AuditRecord(action: entry.action, subject: entry.subject, reason: entry.reason, outcome: entry.outcome))
                if recomputed != entry.hash { return .broken(sequence: entry.sequence, problem: "its contents were altered") }
                if let mac = entry.mac, let version = entry.macKeyVersion {
                    guard let key = keys.key(version: version) else {
                        return .broken(
                            sequence: entry.sequence,
                            problem: "it is authenticated with audit key v\(version), which audit-key.json does not hold")
                    }
                    if macs[version] == nil { macs[version] = try HMACSHA256(key: key.localSecret(keyName: "audit key")) }
                    guard constantTimeEquals(try macs[version]!.authenticationCode(for: macInput(entry.hash)), mac) else {
                        return .broken(
                            sequence: entry.sequence,
                            problem: "its MAC does not match: the row was edited, inserted or re-chained by someone without the audit key")
                    }
                    if legacy > 0 && authenticated == 0 && entry.action != anchorAction {
                        return .broken(
                            sequence: entry.sequence,
                            problem: "rows 1…\(legacy) before it are not authenticated and no anchor vouches for them")
                    }
                    authenticated += 1
                } else {
                    guard authenticated == 0 else {
                        return .broken(
                            sequence: entry.sequence, problem: "it has no MAC (removed, or the row was inserted without the audit key)")
                    }
                    legacy += 1
                }
                if let recordedHead, recordedHead.sequence == entry.sequence, entry.hash != recordedHead.hash {
                    return .broken(
                        sequence: entry.sequence, problem: "it differs from the head recorded earlier (\(Hex.encode(recordedHead.hash)))")
                }
                previous = entry.hash
                expectedSequence += 1
                rows += 1
            }
            guard let last = page.last else { break }
            after = last.sequence
        }
        if legacy > 0 && authenticated == 0 {
            return .broken(
                sequence: 1,
                problem: """
                    rows 1…\(legacy) are not authenticated (written before migration 4, or every MAC was removed); \
                    if you have checked them, vouch for them once with `vault audit anchor`
                    """)
        }
        if let recordedHead, recordedHead.sequence > Int64(rows) {
            return .broken(
                sequence: recordedHead.sequence,
                problem: "it is gone: the log ends at row \(rows), below the head recorded earlier; rows were cut off the end")
        }
        return .intact(rows: rows, authenticated: authenticated, headSequence: Int64(rows), head: previous)
    }

    /// Vouches for rows written before migration 4 (no MAC) with one
    /// authenticated row after them; refused once any row is authenticated.
    public static func anchor(reason: String, actor: AuditActor, on connection: PostgresConnection) async throws -> (
        rows: Int64, sequence: Int64
    ) {
        try await connection.transaction { connection in
            let head = try head(on: connection)
            let authenticated = try connection.query("SELECT count(*) AS n FROM audit_log WHERE mac IS NOT NULL")[0].int("n")
            guard authenticated == 0, head.sequence > 0 else {
                throw AuditError(
                    authenticated > 0
                        ? "the audit log already has authenticated rows; an anchor is only for rows written before migration 4 (a request to anchor again is a sign of tampering)"
                        : "the audit log is empty; there is nothing to anchor")
            }
            let record = AuditRecord(
                action: anchorAction, subject: "rows 1…\(head.sequence), head \(Hex.encode(head.hash))", reason: reason,
                outcome: "anchored")
            let entries = try prepare([record], after: head, actor: actor)
            try connection.query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8)", rowParameters(entries, actions: true))
            return (head.sequence, entries[0].sequence)
        }
    }

    /// Rows in sequence order after `after`, optionally only those at or after `since`.
    public static func entries(after: Int64 = 0, since: Date? = nil, limit: Int, on connection: PostgresConnection) async throws
        -> [AuditEntry]
    {
        let rows = try await connection.query(
            """
            SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, os_user, db_role, action,
                   subject, reason, outcome, prev_hash, hash, mac_key_version, mac
            FROM audit_log WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2::timestamptz)
            ORDER BY seq LIMIT $3
            """, [.int(after), .optionalText(since.map(timestamp)), .int(limit)])
        return try rows.map { row in
            AuditEntry(
                sequence: Int64(try row.int("seq")), at: try row.string("at"), osUser: try row.string("os_user"),
                databaseRole: try row.string("db_role"), action: try row.string("action"), subject: try row.string("subject"),
                reason: try row.string("reason"), outcome: try row.string("outcome"),
                previousHash: try row.bytes("prev_hash"), hash: try row.bytes("hash"),
                macKeyVersion: try row.optionalInt("mac_key_version"),
                mac: try row.optionalBytes("mac"))
        }
    }

    /// SHA-256("pseudonymizer.audit.v1" ‖ previous hash ‖ sequence (8 bytes, big-endian) ‖
    /// each of at, os user, database role, action, subject, reason, outcome as
    /// a 4-byte big-endian length and UTF-8). The database's `audit_row_hash` is the same.
    package static func rowHash(previous: [UInt8], sequence: Int64, at: String, osUser: String, databaseRole: String, record: AuditRecord)
        throws
        -> [UInt8]
    {
        var encoding = Array("pseudonymizer.audit.v1".utf8) + previous
        withUnsafeBytes(of: sequence.bigEndian) { encoding.append(contentsOf: $0) }
        for field in [at, osUser, databaseRole, record.action, record.subject, record.reason, record.outcome] {
            let utf8 = Array(field.utf8)
            withUnsafeBytes(of: UInt32(utf8.count).bigEndian) { encoding.append(contentsOf: $0) }
            encoding.append(contentsOf: utf8)
        }
        return try SHA256.hash(encoding)
    }

    /// What the audit key authenticates: `"pseudonymizer.audit.mac.v1" ‖ 0 ‖ row hash`.
    /// The hash covers the row and, through the previous hash, every row before it.
    package static func macInput(_ hash: [UInt8]) -> [UInt8] {
        Array("pseudonymizer.audit.mac.v1".utf8) + [0] + hash
    }

    /// UTC with microseconds, exactly as PostgreSQL formats it back in `entries`.
    package static func timestamp(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded(.down))
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let fraction = micros - seconds * 1_000_000
        let day = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - day * 86_400
        func pad(_ value: Int64, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let date = UTCDate.string(fromMilliseconds: day * 86_400_000)
        return "\(date)T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(fraction, 6))Z"
    }
}

public struct AuditError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
