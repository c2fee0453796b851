public import Foundation
public import Postgres
import Pseudonymization
import VaultCrypto

/// Who is acting: the OS user running the tool and the database role it uses.
public struct AuditActor: Sendable {
    public let osUser: String
    public let databaseRole: String

    public static func current(on connection: PostgresConnection) async throws -> AuditActor {
        let role = try await connection.query("SELECT session_user AS role").first?.string("role") ?? "unknown"
        let user = getpwuid(geteuid()).flatMap { String(validatingCString: $0.pointee.pw_name) }
            ?? ProcessInfo.processInfo.environment["USER"] ?? "uid \(geteuid())"
        return AuditActor(osUser: user, databaseRole: role)
    }
}

/// One thing to record: an action on a subject (a token, a lookup field, a key
/// job), why, and how it ended. Never an original value.
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
}

/// The append-only, hash-chained audit log.
///
/// Each row's hash is SHA-256 over a domain tag, the previous row's hash and
/// the row's fields, length-prefixed (so no two rows encode alike). Editing,
/// deleting or reordering any row breaks the chain from that row on;
/// `verify` names the first broken sequence number. (Removing rows from the
/// end is only visible against a head hash recorded elsewhere: `verify` prints it.)
public enum AuditLog {
    static let genesis = [UInt8](repeating: 0, count: 32)
    /// Serializes appenders across processes so the chain never forks.
    static let chainLock: Int64 = 0x6175_6469_74  // "audit"

    /// Appends `records` inside the caller's transaction (they commit or vanish
    /// together with it); returns their sequence numbers.
    @discardableResult
    public static func append(_ records: [AuditRecord], actor: AuditActor, on connection: isolated PostgresConnection) throws -> [Int64] {
        guard !records.isEmpty else { return [] }
        try connection.execute("SELECT pg_advisory_xact_lock($1)", [.int(chainLock)])
        let head = try connection.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").first
        var sequence = try head.map { try Int64($0.int("seq")) } ?? 0
        var previous = try head?.bytes("hash") ?? genesis
        let at = timestamp(Date())
        var copy = CopyTextBuilder(reservingCapacity: records.count * 200)
        var sequences: [Int64] = []
        for record in records {
            sequence += 1
            let entry = try entry(sequence: sequence, at: at, actor: actor, record: record, previous: previous)
            copy.append(Int(sequence))
            copy.append(at)
            copy.append(actor.osUser)
            copy.append(actor.databaseRole)
            copy.append(record.action)
            copy.append(record.subject)
            copy.append(record.reason)
            copy.append(record.outcome)
            copy.append(bytes: previous)
            copy.append(bytes: entry.hash)
            copy.endRow()
            previous = entry.hash
            sequences.append(sequence)
        }
        try connection.copy("COPY audit_log (seq, at, os_user, db_role, action, subject, reason, outcome, prev_hash, hash) FROM STDIN",
                            data: copy.bytes)
        return sequences
    }

    /// Appends in a transaction of its own and commits.
    @discardableResult
    public static func appendCommitted(_ records: [AuditRecord], actor: AuditActor, on connection: PostgresConnection) async throws -> [Int64] {
        try await connection.transaction { connection in try append(records, actor: actor, on: connection) }
    }

    public enum Verification: Sendable, Equatable {
        case intact(rows: Int, head: [UInt8])
        case broken(sequence: Int64, problem: String)
    }

    /// Walks the whole chain in order.
    public static func verify(on connection: PostgresConnection) async throws -> Verification {
        var expectedSequence: Int64 = 1
        var previous = genesis
        var rows = 0
        var after: Int64 = 0
        while true {
            let page = try await entries(after: after, limit: 10_000, on: connection)
            for entry in page {
                if entry.sequence != expectedSequence {
                    return .broken(sequence: expectedSequence,
                                   problem: entry.sequence > expectedSequence ? "row \(expectedSequence) is missing" : "rows out of order")
                }
                if entry.previousHash != previous {
                    return .broken(sequence: entry.sequence, problem: "its previous-hash does not match row \(entry.sequence - 1)")
                }
                let recomputed = try self.entry(
                    sequence: entry.sequence, at: entry.at, actor: AuditActor(osUser: entry.osUser, databaseRole: entry.databaseRole),
                    record: AuditRecord(action: entry.action, subject: entry.subject, reason: entry.reason, outcome: entry.outcome),
                    previous: previous)
                if recomputed.hash != entry.hash { return .broken(sequence: entry.sequence, problem: "its contents were altered") }
                previous = entry.hash
                expectedSequence += 1
                rows += 1
            }
            guard let last = page.last else { break }
            after = last.sequence
        }
        return .intact(rows: rows, head: previous)
    }

    /// Rows in sequence order after `after`, optionally only those at or after `since`.
    public static func entries(after: Int64 = 0, since: Date? = nil, limit: Int, on connection: PostgresConnection) async throws -> [AuditEntry] {
        let rows = try await connection.query("""
            SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, os_user, db_role, action,
                   subject, reason, outcome, prev_hash, hash
            FROM audit_log WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2::timestamptz)
            ORDER BY seq LIMIT $3
            """, [.int(after), .optionalText(since.map(timestamp)), .int(limit)])
        return try rows.map { row in
            AuditEntry(sequence: Int64(try row.int("seq")), at: try row.string("at"), osUser: try row.string("os_user"),
                       databaseRole: try row.string("db_role"), action: try row.string("action"), subject: try row.string("subject"),
                       reason: try row.string("reason"), outcome: try row.string("outcome"),
                       previousHash: try row.bytes("prev_hash"), hash: try row.bytes("hash"))
        }
    }

    static func entry(sequence: Int64, at: String, actor: AuditActor, record: AuditRecord, previous: [UInt8]) throws -> AuditEntry {
        var encoding = Array("pseudonymizer.audit.v1".utf8) + previous
        withUnsafeBytes(of: sequence.bigEndian) { encoding.append(contentsOf: $0) }
        for field in [at, actor.osUser, actor.databaseRole, record.action, record.subject, record.reason, record.outcome] {
            let utf8 = Array(field.utf8)
            withUnsafeBytes(of: UInt32(utf8.count).bigEndian) { encoding.append(contentsOf: $0) }
            encoding.append(contentsOf: utf8)
        }
        return AuditEntry(sequence: sequence, at: at, osUser: actor.osUser, databaseRole: actor.databaseRole, action: record.action,
                          subject: record.subject, reason: record.reason, outcome: record.outcome,
                          previousHash: previous, hash: try SHA256.hash(encoding))
    }

    /// UTC with microseconds, exactly as PostgreSQL formats it back in `entries`.
    static func timestamp(_ date: Date) -> String {
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
