import Foundation
public import Postgres
import Pseudonymization
public import Storage
import VaultCrypto

/// Quarantined messages, reviewed: counts by day and reason code, one message's
/// metadata, its body revealed (audited, through the database's
/// `quarantine_reveal`, under the four-eyes policy like any reveal), and a
/// replay file for `ingest run --from-file`, where the bodies go through
/// validation again under identities derived from the quarantined ones.
public enum QuarantineReview {
    public struct Group: Sendable {
        public let day: String
        public let reason: String
        public let count: Int
        public let bytes: Int
    }

    /// A quarantined message's metadata (never its body). `detail` says what
    /// failed by shape only, as ingest wrote it.
    public struct Item: Sendable {
        public let id: String
        public let sentDay: String
        public let quarantinedOn: String
        public let reason: String
        public let field: String?
        public let detail: String
        public let bodyBytes: Int
    }

    public struct Revealed: Sendable {
        public let item: Item
        /// Nil when it did not open (its data key's recovery key is not here, or it was altered).
        public let body: [UInt8]?
        /// The body was longer than ingest keeps: only its start was sealed.
        public var truncated: Bool { (body?.count ?? 0) < item.bodyBytes }
        public let auditSequence: Int64
    }

    struct Sealed {
        let receiptID: [UInt8]
        let dataKeyID: String
        let nonce: [UInt8]
        let sealedBody: [UInt8]
        let recoveryKeyVersion: Int?
        let wrappedKey: [UInt8]?
    }

    public static func summary(since: String?, on connection: PostgresConnection) async throws -> [Group] {
        try await connection.query(
            """
            SELECT to_char(quarantined_on, 'YYYY-MM-DD') AS day, reason, count(*) AS n, sum(body_bytes) AS bytes FROM quarantine
            WHERE quarantined_on >= coalesce($1::date, '-infinity') GROUP BY 1, 2 ORDER BY 1 DESC, 2
            """, [.optionalText(since)]
        ).map { Group(day: try $0.string("day"), reason: try $0.string("reason"), count: try $0.int("n"), bytes: try $0.int("bytes")) }
    }

    /// The messages of a day (and reason code), or with these ids (hex receipt ids).
    public static func items(day: String?, reason: String?, ids: [String]?, limit: Int, on connection: PostgresConnection) async throws
        -> [Item]
    {
        try await connection.query(
            """
            SELECT encode(receipt_id, 'hex') AS id, to_char(sent_day, 'YYYY-MM-DD') AS sent_day,
                   to_char(quarantined_on, 'YYYY-MM-DD') AS quarantined_on, reason, field, detail, body_bytes
            FROM quarantine
            WHERE ($1::date IS NULL OR quarantined_on = $1::date) AND ($2::text IS NULL OR reason = $2)
              AND ($3::text[] IS NULL OR encode(receipt_id, 'hex') = ANY($3::text[]))
            ORDER BY quarantined_on DESC, receipt_id LIMIT $4
            """, [.optionalText(day), .optionalText(reason), ids.map { .textArray($0) } ?? .null, .int(limit)]
        ).map(item)
    }

    static func item(_ row: PostgresRow) throws -> Item {
        Item(
            id: try row.string("id"), sentDay: try row.string("sent_day"), quarantinedOn: try row.string("quarantined_on"),
            reason: try row.string("reason"), field: row["field"], detail: try row.string("detail"), bodyBytes: try row.int("body_bytes"))
    }

    static func subject(_ id: String) -> String { "quarantine:\(id)" }

    /// Reveals the bodies of the messages with these ids: one audit row each
    /// (`action`: "quarantine-show" or "quarantine-replay"), committed before
    /// anything is opened. Ids not in the quarantine are audited 'unknown' and left out.
    public static func reveal(
        ids: [String], action: String, reason: String, request: Approvals.Request? = nil, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> [Revealed] {
        if let bad = ids.first(where: { Hex.decode($0)?.count != 16 || $0 != $0.lowercased() }) {
            // Bad input (65), described, not echoed: whatever was typed there might be a value.
            throw LookupError(
                "an id of \(bad.count) characters is not a quarantine id (32 lowercase hex digits, as vault quarantine list prints them)")
        }
        try await reader.unlockKeys(on: connection)
        let unique = Array(Set(ids)).sorted()
        let reason = request?.auditReason ?? reason
        let (sealed, items, sequences, refused) = try await AuditLog.retryingChanges(on: connection) { connection in
            let head = try AuditLog.head(on: connection)
            let held = Set(
                try connection.query(
                    "SELECT DISTINCT encode(receipt_id, 'hex') AS id FROM quarantine WHERE receipt_id = ANY($1::bytea[])",
                    [.byteArrays(unique.map { Hex.decode($0)! })]
                ).map { try $0.string("id") })
            let refused = try request == nil && Approvals.needed(count: held.count, on: connection)
            let records = unique.map { id in
                AuditRecord(
                    action: action, subject: subject(id), reason: reason,
                    outcome: held.contains(id) ? (refused ? "refused" : "revealed") : "unknown")
            }
            let entries = try AuditLog.prepare(records, after: head, actor: actor)
            var parameters = AuditLog.rowParameters(entries, actions: false)
            parameters.insert(.text(action), at: 2)
            parameters.append(request.map { .int($0.id) } ?? .null)
            var sealed: [Sealed] = []
            var items: [Item] = []
            for row in try connection.query(
                """
                SELECT encode(receipt_id, 'hex') AS id, receipt_id, to_char(sent_day, 'YYYY-MM-DD') AS sent_day,
                       to_char(quarantined_on, 'YYYY-MM-DD') AS quarantined_on, reason, field, detail, body_bytes, data_key_id, nonce, sealed_body, recovery_key_version, wrapped_key
                FROM quarantine_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9)
                """, parameters)
            {
                items.append(try item(row))
                sealed.append(
                    Sealed(
                        receiptID: try row.bytes("receipt_id"), dataKeyID: try row.string("data_key_id"), nonce: try row.bytes("nonce"),
                        sealedBody: try row.bytes("sealed_body"), recoveryKeyVersion: try row.optionalInt("recovery_key_version"),
                        wrappedKey: try row.optionalBytes("wrapped_key")))
            }
            try AuditLog.requireStored(entries.last!, on: connection)
            return (sealed, items, Dictionary(uniqueKeysWithValues: zip(unique, entries.map(\.sequence))), refused)
        }
        if refused {
            throw ApprovalError.refused(policy: try await Approvals.policy(on: connection), auditSequence: sequences.values.min())
        }
        let bodies = try await reader.openQuarantined(sealed)
        let failed = zip(items, bodies).filter { $0.1 == nil }.map {
            AuditRecord(action: action, subject: subject($0.0.id), reason: reason, outcome: "integrity-failure")
        }
        if !failed.isEmpty { try await AuditLog.appendCommitted(failed, actor: actor, on: connection) }
        return zip(items, bodies).map { Revealed(item: $0, body: $1, auditSequence: sequences[$0.id] ?? 0) }
    }

    /// Writes the replay file (0600, never over an existing file): the
    /// bodies that opened whole. Returns how many it holds and why the others are not in it.
    public static func writeReplay(_ revealed: [Revealed], to path: String) throws -> (written: Int, left: [(id: String, why: String)]) {
        var lines = [ReplayFile.header]
        var left: [(id: String, why: String)] = []
        for message in revealed {
            guard let body = message.body else {
                left.append((message.item.id, "its body did not open (integrity failure, or its recovery key is not in the key file)"))
                continue
            }
            guard !message.truncated else {
                left.append((message.item.id, "only the first \(body.count) of its \(message.item.bodyBytes) bytes were kept"))
                continue
            }
            lines.append(
                ReplayFile.Line(receiptID: Hex.decode(message.item.id)!, sentDay: message.item.sentDay, body: body).encoded)
        }
        try PrivateFile.create(path, contents: Array((lines.joined(separator: "\n") + "\n").utf8))
        return (lines.count - 1, left)
    }
}

/// Files only their owner may read (0600), never written over an existing one
/// (nor through a link): exports of revealed values.
public enum PrivateFile {
    public static func create(_ path: String, contents: [UInt8]) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw PrivateFileError(
                errno == EEXIST
                    ? "\(path) exists already: nothing was written; choose a new file name (revealed values are never written over another file)"
                    : "cannot create \(path) (\(reason)); check the directory exists and is writable")
        }
        defer { close(descriptor) }
        fchmod(descriptor, 0o600)
        var offset = 0
        while offset < contents.count {
            let written = contents[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            guard written > 0 else {
                if written < 0, errno == EINTR { continue }
                unlink(path)
                throw PrivateFileError("writing \(path) failed (\(String(cString: strerror(errno)))); it was removed")
            }
            offset += written
        }
        guard fsync(descriptor) == 0 else {
            unlink(path)
            throw PrivateFileError("writing \(path) failed (\(String(cString: strerror(errno)))); it was removed")
        }
    }
}

public struct PrivateFileError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
