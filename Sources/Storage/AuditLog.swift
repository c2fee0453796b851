public import Foundation
public import Postgres
import Pseudonymization
public import VaultCrypto

/// Who is acting: the OS user running the tool, and the audit key its rows are
/// authenticated with. (The database role is the server's `session_user`.)
public struct AuditActor: Sendable {
    public let osUser: String
    package let keys: AuditKeyring

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

    /// The head, checked before anything is authenticated after it: the
    /// server's stamps must be this session's own role and a time near this
    /// machine's clock, not earlier than the row before (a replaced
    /// `audit_head()` would otherwise have `vault` MAC a row as someone else,
    /// or back-dated).
    package static func head(on connection: isolated PostgresConnection) throws -> Head {
        let row = try connection.query(
            """
            SELECT h.head_seq, h.head_hash, h.at, h.db_role,
                   (SELECT to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM audit_log a WHERE a.seq = h.head_seq)
                       AS previous_at
            FROM audit_head() h
            """, prepared: true)[0]
        let head = Head(
            sequence: Int64(try row.int("head_seq")), hash: try row.bytes("head_hash"), at: try row.string("at"),
            databaseRole: try row.string("db_role"))
        try checkStamps(head, previousAt: row["previous_at"], sessionUser: connection.user, now: Date())
        return head
    }

    /// How far the server's time may be from this machine's, either way, and
    /// how far back a row's time may be from the row before it (rows written
    /// before migration 6 were stamped with their transaction's start, which
    /// can precede a row that took the chain lock first).
    package static let clockTolerance: Int64 = 300 * 1_000_000

    /// Refuses stamps this session did not get from an honest server.
    package static func checkStamps(_ head: Head, previousAt: String?, sessionUser: String, now: Date) throws {
        guard head.databaseRole == sessionUser else {
            throw AuditError(
                "the database would stamp this session's audit rows with role \(head.databaseRole), but this session is \(sessionUser): its audit functions were changed; nothing was written. Tell whoever audits the database owners"
            )
        }
        guard let at = microseconds(head.at) else {
            throw AuditError("the database's audit time \(head.at) is not a time; nothing was written")
        }
        let clock = Int64((now.timeIntervalSince1970 * 1_000_000).rounded(.down))
        guard abs(at - clock) <= clockTolerance else {
            throw AuditError(
                "the database would stamp this session's audit rows \(head.at), but this machine's clock says \(timestamp(now)): one of the clocks is wrong (check NTP on both), or the audit functions were changed; nothing was written"
            )
        }
        if let previousAt, let previous = microseconds(previousAt), at < previous {
            throw AuditError(
                "the database would stamp this session's audit rows \(head.at), earlier than the row before (\(previousAt)): times only go forward; its audit functions were changed; nothing was written"
            )
        }
    }

    /// Microseconds since the epoch of an audit time (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
    package static func microseconds(_ text: String) -> Int64? { UTCDate.microseconds(fromRFC3339: text) }

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

    /// One row's parameters for the functions that append a single row:
    /// os user, MAC key version, action (when `action`), subject, reason, outcome, hash, MAC.
    package static func singleRowParameters(_ entry: AuditEntry, action: Bool) -> [PostgresValue] {
        [.text(entry.osUser), .int(entry.macKeyVersion ?? 0)] + (action ? [.text(entry.action)] : [])
            + [.text(entry.subject), .text(entry.reason), .text(entry.outcome), .bytes(entry.hash), .bytes(entry.mac ?? [])]
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

    /// Whether `entry` was written by a holder of the audit key: its hash
    /// recomputes from its contents and its MAC verifies. (Its place in the
    /// chain is `verify`'s to check.)
    package static func isAuthentic(_ entry: AuditEntry, keys: AuditKeyring) -> Bool {
        guard let mac = entry.mac, let version = entry.macKeyVersion, let key = keys.key(version: version),
            let secret = try? key.localSecret(keyName: "audit key"),
            let hash = try? rowHash(
                previous: entry.previousHash, sequence: entry.sequence, at: entry.at, osUser: entry.osUser,
                databaseRole: entry.databaseRole,
                record: AuditRecord(action: entry.action, subject: entry.subject, reason: entry.reason, outcome: entry.outcome)),
            hash == entry.hash, let expected = try? HMACSHA256(key: secret).authenticationCode(for: macInput(hash))
        else { return false }
        return constantTimeEquals(expected, mac)
    }

    /// The actions of rows that say a token's value was erased (outcome `erased`).
    /// Whether the newest row with a MAC is authentic under `keys` (nil when
    /// no row has one): that the audit key is the one the log is written with.
    public static func newestRowAuthentic(keys: AuditKeyring, on connection: PostgresConnection) async throws -> (
        sequence: Int64, authentic: Bool
    )? {
        guard
            let row = try await connection.query("SELECT \(entryColumns) FROM audit_log WHERE mac IS NOT NULL ORDER BY seq DESC LIMIT 1")
                .first
        else { return nil }
        let newest = try entry(row)
        return (newest.sequence, isAuthentic(newest, keys: keys))
    }

    public static let erasureActions = ["forget", "forget.carry"]

    /// For each token that has one, an authenticated row saying its value was
    /// erased: `vault forget`'s, or `vault retokenize`'s when it carried the
    /// erasure to a new token. A tombstone is believed only with one; a
    /// ciphertext found for a token that has one was written back after the
    /// erasure and is never shown.
    package static func erasures(of tokens: [String], keys: AuditKeyring, on connection: isolated PostgresConnection) throws
        -> [String: AuditEntry]
    {
        guard !tokens.isEmpty else { return [:] }
        var found: [String: AuditEntry] = [:]
        for entry in try connection.query(
            """
            SELECT \(entryColumns) FROM audit_log
            WHERE action IN ('forget', 'forget.carry') AND outcome = 'erased' AND subject = ANY($1::text[]) ORDER BY seq
            """, [.textArray(tokens)], prepared: true
        ).map(entry) where found[entry.subject] == nil && isAuthentic(entry, keys: keys) {
            found[entry.subject] = entry
        }
        return found
    }

    package static func erasures(of tokens: [String], keys: AuditKeyring, on connection: PostgresConnection) async throws
        -> [String: AuditEntry]
    {
        try await connection.transaction { connection in try erasures(of: tokens, keys: keys, on: connection) }
    }

    public enum Verification: Sendable, Equatable {
        /// `authenticated` rows carry a valid MAC; the rest (a prefix) predate
        /// migration 4 and are vouched for by the anchor row.
        case intact(rows: Int, authenticated: Int, headSequence: Int64, head: [UInt8])
        case broken(sequence: Int64, problem: String)
    }

    /// The actions rows could have before migration 4 (the only rows without a MAC).
    static let actionsBeforeMACs: Set<String> = ["recover", "lookup", "forget", "keys.rotate", "keys.retire", "retokenize", "rewrap"]

    /// Why a row without a MAC cannot be one written before migration 4, or
    /// nil when it can: `audit-key.json` records how many such rows there were
    /// when it was made (outside the database); a file made before that was
    /// recorded bounds them by its first key's creation time and by the
    /// actions that existed then.
    static func unauthenticatedRowProblem(_ entry: AuditEntry, keys: AuditKeyring) -> String? {
        if let recorded = keys.unauthenticatedRows {
            guard entry.sequence <= recorded.count else {
                return recorded.count == 0
                    ? "it has no MAC, and audit-key.json records that every row was authenticated when the audit key was made: its MAC was removed"
                    : "it has no MAC, and audit-key.json records only rows 1…\(recorded.count) without one: its MAC was removed"
            }
            return nil
        }
        guard actionsBeforeMACs.contains(entry.action) else {
            return "it has no MAC, but its action \(entry.action) only exists since audit rows carry MACs: its MAC was removed"
        }
        if let created = keys.keys.first.flatMap({ microseconds($0.createdAt) }), let at = microseconds(entry.at), at > created {
            return "it has no MAC, but it is newer than the audit key (created \(keys.keys.first!.createdAt)): its MAC was removed"
        }
        return nil
    }

    /// Walks the whole chain in order, checking each row's hash, MAC and time
    /// (never earlier than the row before), and, when given, that the row
    /// `recordedHead` names is still there unchanged. Rows without a MAC are
    /// accepted only as the prefix `audit-key.json` records (see
    /// `unauthenticatedRowProblem`).
    public static func verify(
        keys: AuditKeyring, recordedHead: (sequence: Int64, hash: [UInt8])? = nil, on connection: PostgresConnection
    ) async throws -> Verification {
        var expectedSequence: Int64 = 1
        var previous = genesis
        var latest: (at: Int64, text: String)? = nil
        var rows = 0
        var authenticated = 0
        var legacy = 0
        var anchored = false
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
                guard let at = microseconds(entry.at) else {
                    return .broken(sequence: entry.sequence, problem: "its time \(entry.at) is not a time")
                }
                if let latest, at < latest.at - clockTolerance {
                    return .broken(
                        sequence: entry.sequence,
                        problem:
                            "its time \(entry.at) is earlier than \(latest.text), the time of a row before it: times only go forward, so it was stamped falsely"
                    )
                }
                if at > latest?.at ?? Int64.min { latest = (at, entry.at) }
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
                    if legacy > 0 && authenticated == 0 {
                        if let recorded = keys.unauthenticatedRows {
                            guard Int64(legacy) == recorded.count, entry.previousHash == recorded.head else {
                                return .broken(
                                    sequence: entry.sequence,
                                    problem:
                                        "rows 1…\(legacy) before it have no MAC, but audit-key.json records \(recorded.count) such rows ending in \(Hex.encode(recorded.head)): the early rows were replaced"
                                )
                            }
                        } else if entry.action != anchorAction {
                            return .broken(
                                sequence: entry.sequence,
                                problem: "rows 1…\(legacy) before it are not authenticated and no anchor vouches for them")
                        }
                    }
                    if entry.action == anchorAction { anchored = true }
                    authenticated += 1
                } else {
                    guard authenticated == 0 else {
                        return .broken(
                            sequence: entry.sequence, problem: "it has no MAC (removed, or the row was inserted without the audit key)")
                    }
                    if let problem = unauthenticatedRowProblem(entry, keys: keys) {
                        return .broken(sequence: entry.sequence, problem: problem)
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
        if legacy > 0 && keys.unauthenticatedRows == nil && !anchored {
            return .broken(
                sequence: 1,
                problem: """
                    rows 1…\(legacy) are not authenticated (written before migration 4, or every MAC was removed); \
                    if you have checked them, vouch for them once with `vault audit anchor`
                    """)
        }
        if let recorded = keys.unauthenticatedRows, recorded.count > 0,
            Int64(legacy) != recorded.count || (authenticated == 0 && previous != recorded.head)
        {
            return .broken(
                sequence: 1,
                problem:
                    "audit-key.json records \(recorded.count) rows without a MAC at the start of the log, and the log has \(legacy): the early rows were replaced"
            )
        }
        if let recordedHead, recordedHead.sequence > Int64(rows) {
            return .broken(
                sequence: recordedHead.sequence,
                problem: "it is gone: the log ends at row \(rows), below the head recorded earlier; rows were cut off the end")
        }
        return .intact(rows: rows, authenticated: authenticated, headSequence: Int64(rows), head: previous)
    }

    /// The rows without a MAC now (a prefix written before migration 4): what
    /// a new `audit-key.json` records, outside the database.
    public static func unauthenticatedRows(on connection: PostgresConnection) async throws -> UnauthenticatedAuditRows {
        let row = try await connection.query(
            """
            SELECT count(*) AS n, coalesce(max(seq), 0) AS last,
                   (SELECT a.hash FROM audit_log a WHERE a.seq = (SELECT max(seq) FROM audit_log WHERE mac IS NULL)) AS hash
            FROM audit_log WHERE mac IS NULL
            """)[0]
        let count = Int64(try row.int("n"))
        guard count == Int64(try row.int("last")) else {
            throw AuditError(
                "the audit log has rows without a MAC after rows with one: they were removed by someone without the audit key; run `vault audit verify` and investigate before making an audit key"
            )
        }
        return count == 0 ? .allAuthenticated : UnauthenticatedAuditRows(count: count, head: try row.bytes("hash"))
    }

    /// Vouches, in the log, for the rows written before migration 4 (no MAC):
    /// exactly the rows `audit-key.json` records, or, for a file that records
    /// none, rows no newer than the audit key with actions that existed then.
    /// Refused when the audit key was made with every row authenticated, and
    /// once an anchor exists.
    public static func anchor(reason: String, actor: AuditActor, on connection: PostgresConnection) async throws -> (
        rows: Int64, sequence: Int64
    ) {
        try await connection.transaction { connection in
            let head = try head(on: connection)
            let counts = try connection.query(
                """
                SELECT count(*) FILTER (WHERE mac IS NULL) AS unauthenticated, count(*) FILTER (WHERE mac IS NOT NULL) AS authenticated,
                       count(*) FILTER (WHERE action = $1) AS anchors
                FROM audit_log
                """, [.text(anchorAction)])[0]
            let unauthenticated = Int64(try counts.int("unauthenticated"))
            if let recorded = actor.keys.unauthenticatedRows, recorded.count == 0 {
                throw AuditError(
                    "audit-key.json was made when every audit row was authenticated: there is nothing to anchor. Rows without a MAC now had it removed; this is tampering, not an upgrade: run `vault audit verify` and investigate"
                )
            }
            guard unauthenticated > 0, try counts.int("anchors") == 0 else {
                throw AuditError(
                    unauthenticated == 0
                        ? "every audit row is authenticated; there is nothing to anchor"
                        : "the unauthenticated rows are anchored already (a request to anchor again is a sign of tampering)")
            }
            if actor.keys.unauthenticatedRows == nil, try counts.int("authenticated") > 0 {
                throw AuditError(
                    "the audit log already has authenticated rows; an anchor must come before them (a request to anchor now is a sign of tampering)"
                )
            }
            var last = AuditLog.genesis
            var seen: Int64 = 0
            for entry in try connection.query(
                "SELECT \(entryColumns) FROM audit_log WHERE mac IS NULL ORDER BY seq"
            ).map(entry) {
                seen += 1
                guard entry.sequence == seen, unauthenticatedRowProblem(entry, keys: actor.keys) == nil else {
                    throw AuditError(
                        "row \(entry.sequence) has no MAC, but \(unauthenticatedRowProblem(entry, keys: actor.keys) ?? "it follows authenticated rows"); nothing was anchored: run `vault audit verify` and investigate"
                    )
                }
                last = entry.hash
            }
            if let recorded = actor.keys.unauthenticatedRows, recorded.count != unauthenticated || recorded.head != last {
                throw AuditError(
                    "audit-key.json records \(recorded.count) rows without a MAC, the log has \(unauthenticated) others: the early rows were replaced; nothing was anchored"
                )
            }
            let record = AuditRecord(
                action: anchorAction, subject: anchorSubject(rows: unauthenticated, head: last), reason: reason, outcome: "anchored")
            let entries = try prepare([record], after: head, actor: actor)
            try connection.query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8)", rowParameters(entries, actions: true))
            return (unauthenticated, entries[0].sequence)
        }
    }

    /// What an anchor row says it vouches for.
    package static func anchorSubject(rows: Int64, head: [UInt8]) -> String { "rows 1…\(rows), head \(Hex.encode(head))" }

    /// Rows in sequence order after `after`, optionally only those at or after `since`.
    public static func entries(after: Int64 = 0, since: Date? = nil, limit: Int, on connection: PostgresConnection) async throws
        -> [AuditEntry]
    {
        try await connection.query(
            """
            SELECT \(entryColumns)
            FROM audit_log WHERE seq > $1 AND ($2::timestamptz IS NULL OR at >= $2::timestamptz)
            ORDER BY seq LIMIT $3
            """, [.int(after), .optionalText(since.map(timestamp)), .int(limit)]
        ).map(entry)
    }

    /// What `search` selects; every given part must hold.
    public struct Filter: Sendable {
        /// These actions only (e.g. recover, forget, lookup).
        public var actions: [String] = []
        /// Rows whose subject names this token (or contains this text).
        public var subject: String?
        /// Rows whose reason contains this text, ignoring case (a ticket id).
        public var reason: String?
        /// Rows by this operating-system user or database role.
        public var actor: String?
        public var outcome: String?
        public var since: Date?
        public var until: Date?

        public init() {}
    }

    /// The rows matching `filter`, newest first unless `oldestFirst`, at most
    /// `limit` of them, and how many matched in all.
    public static func search(_ filter: Filter, limit: Int, oldestFirst: Bool = false, on connection: PostgresConnection)
        async throws -> (entries: [AuditEntry], matching: Int)
    {
        let rows = try await connection.query(
            """
            SELECT \(entryColumns), count(*) OVER () AS matching
            FROM audit_log
            WHERE (cardinality($1::text[]) = 0 OR action = ANY($1::text[]))
              AND ($2::text IS NULL OR strpos(subject, $2) > 0)
              AND ($3::text IS NULL OR strpos(lower(reason), lower($3)) > 0)
              AND ($4::text IS NULL OR os_user = $4 OR db_role = $4)
              AND ($5::text IS NULL OR outcome = $5)
              AND ($6::timestamptz IS NULL OR at >= $6::timestamptz)
              AND ($7::timestamptz IS NULL OR at < $7::timestamptz)
            ORDER BY seq \(oldestFirst ? "ASC" : "DESC") LIMIT $8
            """,
            [
                .textArray(filter.actions), .optionalText(filter.subject), .optionalText(filter.reason), .optionalText(filter.actor),
                .optionalText(filter.outcome), .optionalText(filter.since.map(timestamp)), .optionalText(filter.until.map(timestamp)),
                .int(limit),
            ])
        return (try rows.map(entry), try rows.first?.int("matching") ?? 0)
    }

    static let entryColumns = """
        seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at, os_user, db_role, action,
        subject, reason, outcome, prev_hash, hash, mac_key_version, mac
        """

    static func entry(_ row: PostgresRow) throws -> AuditEntry {
        AuditEntry(
            sequence: Int64(try row.int("seq")), at: try row.string("at"), osUser: try row.string("os_user"),
            databaseRole: try row.string("db_role"), action: try row.string("action"), subject: try row.string("subject"),
            reason: try row.string("reason"), outcome: try row.string("outcome"),
            previousHash: try row.bytes("prev_hash"), hash: try row.bytes("hash"),
            macKeyVersion: try row.optionalInt("mac_key_version"),
            mac: try row.optionalBytes("mac"))
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
