import Foundation
public import KeyCustody
public import Logging
public import Postgres
import Pseudonymization
public import Storage
public import VaultCrypto

/// `vault retokenize`: moves every vault entry and every `user_logins` token
/// from older tokenization key versions to the active one, online.
///
/// 1. Enforce the target version in the key registry, then wait for the
///    ingest transactions still writing older tokens to finish (their shared
///    writer lock): from here on no old token is written.
/// 2. Move the entries, in token order, in batches: decrypt, compute the new
///    token, seal the value again under it, commit the new entries, then their
///    old → new lineage rows. (Erased entries move to a token derived from the
///    old one and stay erased.)
/// 3. Sweep `user_logins` in ranges of heap pages, rewriting both token
///    columns of each row at once through the lineage, one bounded statement per range.
/// 4. When no row carries an old token any more, drop the old entries.
///
/// Until step 4 every old token still has its entry, and from step 2 every new
/// one too, so no row is ever unrecoverable. Killed anywhere, a second run
/// finishes the work: moved entries are skipped, rewritten rows match nothing.
public enum Retokenize {
    static let runLock: Int64 = 0x7265_746f_6b65_6e  // "retoken"

    public struct Options: Sendable {
        public var entryBatch = 1000
        /// Heap pages of `user_logins` per rewrite statement (~50 rows per page).
        public var pagesPerStatement = 200
        public var maximumPasses = 10
        public var dryRun = false

        public init() {}
    }

    public struct Summary: Sendable {
        public let target: Int
        /// Entries per old version at the start.
        public let pending: [Int: Int]
        public var movedEntries = 0
        public var carriedErasures = 0
        public var rewrittenRows = 0
        public var droppedEntries = 0
        public var passes = 0
        /// Left when it stopped: old entries, and rows still carrying old tokens.
        public var remainingEntries = 0
        public var remainingRows = 0
    }

    public static func run(
        store: KeyStore, keyring recoveryKeys: RecoveryKeyring, kms: LazyKMSClient, options: Options, reason: String,
        actor: AuditActor, connection: PostgresConnection, connect: @escaping @Sendable () async throws -> PostgresConnection,
        logger: Logger
    ) async throws -> Summary {
        let tokenization = try store.tokenizationKeyring()
        let recoveryPublicKeys = try store.recoveryPublicKeys()
        let target = tokenization.active
        var summary = Summary(target: target.version, pending: try await pendingEntries(except: target.version, on: connection))
        if options.dryRun { return try await finish(summary, connection: connection) }
        // Tokens and new data-key wraps only under the registered keys.
        try await KeyAdministration.verifyRegistered(
            tokenization: tokenization, recovery: recoveryPublicKeys, store: store, kms: kms, connection: connection)

        // One retokenize at a time (the lineage COPY relies on it); a session
        // lock, so a killed run's lock goes with its connection.
        guard try await connection.query("SELECT pg_try_advisory_lock($1) AS locked", [.int(Self.runLock)])[0].bool("locked") else {
            throw RetokenizeError("another `vault retokenize` is running on this database; wait for it (or for its connection to end)")
        }
        try await connection.transaction { connection in try KeyRegistry.enforceTokenization(version: target.version, on: connection) }
        let total = summary.pending.values.reduce(0, +)
        let subject = "tokenization → v\(target.version)"
        try await AuditLog.appendCommitted(
            [
                AuditRecord(
                    action: "retokenize", subject: subject, reason: reason,
                    outcome: "started: \(total) entries")
            ], actor: actor, on: connection)
        let minter = try TokenMinter(keyring: tokenization, kms: try kms.client(for: tokenization), maximumConcurrentCalls: 32)
        let reader = VaultReader(minter: minter, privateKey: recoveryKeys.privateKey(version:))
        let dataKeys = DataKeyManager(
            recoveryKey: recoveryPublicKeys.active, policy: DataKeyPolicy(),
            createdBy: "vault retokenize (\(actor.osUser))", logger: logger, connect: connect)
        var sealer: VaultSealer? = nil
        let progress = Progress(label: "retokenize", total: total, logger: logger)
        // A batch's new entries commit on a second connection and then its
        // lineage on a third, while the next batch is read and prepared: the
        // database and the crypto overlap. Lineage commits one at a time, in
        // token order, and only after their entries, so the lineage stays a
        // safe resume point (entries committed without lineage are simply
        // moved again; the insert skips them). The row sweep uses two connections.
        let entryWriter = try await connect()
        let lineageWriter = try await connect()
        defer {
            Task {
                await entryWriter.close()
                await lineageWriter.close()
            }
        }

        // Step 1 (continued): in-flight writers of old tokens finish first.
        for version in summary.pending.keys.sorted() {
            try await connection.transaction { connection in
                try connection.execute("SELECT pg_advisory_xact_lock($1)", [.int(KeyRegistry.writerLock(tokenizationVersion: version))])
            }
        }
        // Steps 2–4, repeated while rows written meanwhile still carry old tokens.
        func passes(_ summary: inout Summary) async throws {
            while summary.passes < options.maximumPasses {
                summary.passes += 1
                var phaseStarted = ContinuousClock.now
                func phaseDone(_ phase: String, _ count: Int) {
                    logger.info(
                        "retokenize phase done",
                        metadata: [
                            "phase": "\(phase)", "count": "\(count)", "pass": "\(summary.passes)",
                            "seconds": "\(String(format: "%.2f", (ContinuousClock.now - phaseStarted) / .seconds(1)))",
                        ])
                    phaseStarted = .now
                }
                // Step 2: entries not moved yet.
                for oldVersion in try await pendingEntries(except: target.version, on: connection).keys.sorted() {
                    // Resume after the last token a previous (killed) run moved.
                    var after = try await connection.query(
                        """
                        SELECT coalesce(max(old_token), '') AS last FROM token_lineage WHERE old_version = $1 AND new_version = $2
                        """, [.int(oldVersion), .int(target.version)])[0].string("last")
                    let batch = options.entryBatch
                    let fetch = { @Sendable (after: String) async throws -> [SealedEntry] in
                        // Each data key's wrapped key once per batch (on its first entry):
                        // decoding it for every entry was a tenth of the job's time.
                        try await connection.query(
                            """
                            SELECT e.*, d.recovery_key_version,
                                   CASE WHEN row_number() OVER (PARTITION BY e.data_key_id) = 1 THEN d.wrapped_key END AS wrapped_key
                            FROM (SELECT v.token, v.field, v.token_key_version, v.data_key_id::text AS data_key_id, v.nonce, v.ciphertext,
                                         to_char(v.erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS erased_at, v.erased_by
                                  FROM vault_entries v WHERE v.token > $2 AND v.token_key_version = $1 ORDER BY v.token LIMIT $3) e
                            LEFT JOIN data_keys d ON d.id = e.data_key_id::uuid
                            ORDER BY e.token
                            """, [.int(oldVersion), .text(after), .int(batch)], prepared: true
                        ).map(SealedEntry.init)
                    }
                    // Four stages at once: batch N's lineage commits, N + 1's
                    // entries commit, N + 2 is prepared (this task), N + 3 is read.
                    var entriesCommitted: Task<Void, any Error>? = nil
                    var lineageCommitted: Task<Void, any Error>? = nil
                    var rows = try await fetch(after)
                    while let last = rows.last, !Task.isCancelled {
                        after = last.token
                        let next = Task { [after] in try await fetch(after) }
                        var byToken: [String: SealedEntry] = [:]
                        for row in rows { byToken[row.token] = row }
                        let oldTokens = rows.map(\.token)
                        let lease = try await dataKeys.lease(encryptions: oldTokens.count)
                        if sealer?.dataKeyID != lease.id { sealer = try VaultSealer(dataKeyID: lease.id, key: lease.key) }
                        let moves = try await prepareMoves(
                            oldTokens, rows: byToken, reader: reader, minter: minter, target: target.version,
                            sealer: sealer!, oldVersion: oldVersion)
                        try await entriesCommitted?.value
                        let entries = Task { try await commitEntries(moves, on: entryWriter) }
                        entriesCommitted = entries
                        try await lineageCommitted?.value
                        lineageCommitted = Task {
                            try await entries.value
                            try await commitLineage(moves, on: lineageWriter)
                        }
                        summary.movedEntries += moves.filter { !$0.isErasure }.count
                        summary.carriedErasures += moves.filter(\.isErasure).count
                        progress.advance(by: rows.count)
                        rows = try await next.value
                    }
                    // Stopping or not, what was prepared commits in order first.
                    try await lineageCommitted?.value
                    try Task.checkCancellation()
                }
                phaseDone("move entries", summary.movedEntries + summary.carriedErasures)
                // Step 3: rows.
                summary.rewrittenRows += try await rewriteRows(
                    target: target.version, pages: options.pagesPerStatement,
                    on: [connection, entryWriter])
                phaseDone("rewrite rows", summary.rewrittenRows)
                try Task.checkCancellation()
                // Step 4: old entries, once nothing refers to them.
                guard try await rowsWithOldTokens(target: target.version, on: connection) == 0 else {
                    logger.warning("rows with old tokens remain after the sweep; another pass", metadata: ["pass": "\(summary.passes)"])
                    continue
                }
                for version in try await pendingEntries(except: target.version, on: connection).keys.sorted() {
                    summary.droppedEntries += try await connection.transaction { connection in
                        try connection.execute(
                            "SELECT pg_advisory_xact_lock($1)", [.int(KeyRegistry.writerLock(tokenizationVersion: version))])
                        return try connection.execute("DELETE FROM vault_entries WHERE token_key_version = $1", [.int(version)])
                    }
                }
                phaseDone("drop old entries", summary.droppedEntries)
                if try await pendingEntries(except: target.version, on: connection).isEmpty { break }
            }
        }
        do {
            try await passes(&summary)
        } catch is CancellationError {
            // Stopped (SIGTERM): what committed stays, the next run resumes after it.
            summary = try await finish(summary, connection: connection)
            try await AuditLog.appendCommitted(
                [
                    AuditRecord(
                        action: "retokenize", subject: subject, reason: reason,
                        outcome:
                            "interrupted: moved \(summary.movedEntries) entries, rewrote \(summary.rewrittenRows) rows; left: \(summary.remainingEntries) entries, \(summary.remainingRows) rows"
                    )
                ],
                actor: actor, on: connection)
            throw CancellationError()
        }
        progress.finish()
        summary = try await finish(summary, connection: connection)
        try await AuditLog.appendCommitted(
            [
                AuditRecord(
                    action: "retokenize", subject: subject, reason: reason,
                    outcome:
                        "\(summary.remainingEntries == 0 && summary.remainingRows == 0 ? "completed" : "incomplete"): moved \(summary.movedEntries) entries, carried \(summary.carriedErasures) erasures, rewrote \(summary.rewrittenRows) rows, dropped \(summary.droppedEntries) old entries"
                )
            ],
            actor: actor, on: connection)
        return summary
    }

    struct Move: Sendable {
        let oldToken: String
        let oldVersion: Int
        /// The new entry: sealed again, or a tombstone for an erased one.
        let record: VaultEntryRecord

        var isErasure: Bool { record.ciphertext == nil }
    }

    private static func prepareMoves(
        _ tokens: [String], rows: [String: SealedEntry], reader: VaultReader, minter: TokenMinter, target: Int, sealer: VaultSealer,
        oldVersion: Int
    ) async throws -> [Move] {
        let opened = try await reader.open(tokens, entries: rows)
        var values: [(token: String, value: RecoveredValue)] = []
        var erased: [(token: String, field: PIIField, row: SealedEntry)] = []
        for (token, result) in zip(tokens, opened) {
            guard let parts = Token.parse(token), let row = rows[token] else { continue }
            switch result {
            case .success(let value): values.append((token, value))
            case .failure(let error) where error.kind == .erased: erased.append((token, parts.field, row))
            case .failure(let error):
                // Never guess: an entry that does not open, or whose value does
                // not produce its token, stays where it is, and the job reports it.
                throw RetokenizeError("cannot move token \(token): \(error.message)")
            }
        }
        let newTokens = try await minter.tokens(
            values.map { TokenRequest(field: $0.value.field, value: $0.value.value) }, version: target)
        let tombstones = try await minter.erasedTokens(erased.map { ($0.token, $0.field) }, version: target)
        var moves: [Move] = []
        for ((token, value), newToken) in zip(values, newTokens) {
            let (nonce, ciphertext) = try sealer.seal(value.value, token: newToken, field: value.field)
            moves.append(
                Move(
                    oldToken: token, oldVersion: oldVersion,
                    record: VaultEntryRecord(
                        token: newToken, field: value.field, tokenKeyVersion: target, dataKeyID: sealer.dataKeyID,
                        nonce: nonce, ciphertext: ciphertext)))
        }
        for ((token, field, row), tombstone) in zip(erased, tombstones) {
            moves.append(
                Move(
                    oldToken: token, oldVersion: oldVersion,
                    record: VaultEntryRecord(
                        tombstone: tombstone, field: field, tokenKeyVersion: target, dataKeyID: row.dataKeyID,
                        erasedAt: row.erasedAt, erasedBy: row.erasedBy)))
        }
        return moves
    }

    /// New entries (and tombstones). Their tokens are new unless ingest wrote
    /// the same value under the new key since the rotation: rare, so no probe;
    /// the insert's fallback skips those (and entries a killed run committed
    /// without their lineage).
    private static func commitEntries(_ moves: [Move], on connection: PostgresConnection) async throws {
        try await connection.transaction { connection in
            try VaultEntries.insert(moves.map(\.record), probeExisting: false, on: connection)
        }
    }

    /// The old → new lineage of committed entries. New by construction
    /// (batches resume after the last moved token, and one retokenize runs at
    /// a time), so it goes in by COPY.
    private static func commitLineage(_ moves: [Move], on connection: PostgresConnection) async throws {
        var lineage = CopyTextBuilder(reservingCapacity: moves.count * 120)
        for move in moves {
            lineage.append(move.oldToken)
            lineage.append(move.record.token)
            lineage.append(move.record.field.rawValue)
            lineage.append(move.oldVersion)
            lineage.append(move.record.tokenKeyVersion)
            lineage.endRow()
        }
        try await connection.copy(
            "COPY token_lineage (old_token, new_token, field, old_version, new_version) FROM STDIN",
            data: lineage.bytes)
    }

    /// Sweeps `user_logins` in ranges of heap pages (a TID range scan each),
    /// rewriting both token columns of every row that still carries an old
    /// token, through the committed lineage. Each statement is its own
    /// transaction, so locks and WAL stay bounded. A partitioned `user_logins`
    /// is swept partition by partition (page numbers are per table).
    private static func rewriteRows(target: Int, pages: Int, on connections: [PostgresConnection]) async throws -> Int {
        var rewritten = 0
        for table in try await Partitions.leaves(of: "user_logins", on: connections[0]) {
            rewritten += try await rewriteRows(of: table, target: target, pages: pages, on: connections)
        }
        return rewritten
    }

    private static func rewriteRows(of table: String, target: Int, pages: Int, on connections: [PostgresConnection]) async throws -> Int {
        let (ip, device) = prefixes(target)
        let total = try await connections[0].query(
            "SELECT (pg_relation_size($1::regclass) / current_setting('block_size')::bigint) AS pages", [.text(table)]
        )[0].int("pages")
        // Connection i takes ranges i, i + n, i + 2n, …: disjoint rows, so the
        // statements neither wait for nor deadlock with each other.
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, connection) in connections.enumerated() {
                group.addTask {
                    var rewritten = 0
                    for page in stride(from: index * pages, through: total, by: connections.count * pages) {
                        try Task.checkCancellation()
                        rewritten += try await connection.execute(
                            """
                            UPDATE \(table) u SET
                                masked_ip = coalesce((SELECT l.new_token FROM token_lineage l WHERE l.old_token = u.masked_ip), u.masked_ip),
                                masked_device_id = coalesce((SELECT l.new_token FROM token_lineage l WHERE l.old_token = u.masked_device_id),
                                                            u.masked_device_id)
                            WHERE u.ctid >= format('(%s,0)', $1::bigint)::tid AND u.ctid < format('(%s,0)', $2::bigint)::tid
                              AND (left(u.masked_ip, $3) <> $4 OR left(u.masked_device_id, $5) <> $6)
                            """, [.int(page), .int(page + pages), .int(ip.count), .text(ip), .int(device.count), .text(device)],
                            prepared: true)
                    }
                    return rewritten
                }
            }
            return try await group.reduce(0, +)
        }
    }

    private static func prefixes(_ target: Int) -> (ip: String, device: String) {
        ("\(PIIField.ip.tag)_t\(target)_", "\(PIIField.deviceID.tag)_t\(target)_")
    }

    private static func rowsWithOldTokens(target: Int, on connection: PostgresConnection) async throws -> Int {
        let (ip, device) = prefixes(target)
        return try await connection.query(
            """
            SELECT count(*) AS n FROM user_logins WHERE left(masked_ip, $1) <> $2 OR left(masked_device_id, $3) <> $4
            """, [.int(ip.count), .text(ip), .int(device.count), .text(device)])[0].int("n")
    }

    static func pendingEntries(except target: Int, on connection: PostgresConnection) async throws -> [Int: Int] {
        var pending: [Int: Int] = [:]
        for row in try await connection.query(
            "SELECT token_key_version AS v, count(*) AS n FROM vault_entries WHERE token_key_version <> $1 GROUP BY 1", [.int(target)])
        {
            pending[try row.int("v")] = try row.int("n")
        }
        return pending
    }

    /// Counts what is left: old entries, and rows whose tokens are not of the target version.
    private static func finish(_ summary: Summary, connection: PostgresConnection) async throws -> Summary {
        var summary = summary
        summary.remainingEntries = try await pendingEntries(except: summary.target, on: connection).values.reduce(0, +)
        summary.remainingRows = try await rowsWithOldTokens(target: summary.target, on: connection)
        return summary
    }
}

public struct RetokenizeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
