import Foundation
public import Logging
public import Postgres
import Pseudonymization
import Storage
public import VaultCrypto

/// `vault retokenize`: moves every vault entry and every `user_logins` token
/// from older tokenization key versions to the active one, online.
///
/// For each batch of old entries (in token order): decrypt, compute the new
/// token, seal the value again under it, and commit the new entries with an
/// old → new lineage row; then rewrite the rows that carry the old tokens in
/// bounded chunks; then drop the old entries that no row refers to any more,
/// holding the old version's writer lock so no ingest transaction can be adding
/// a reference at that moment. At every step each row's token has an entry, so
/// nothing becomes unrecoverable. A killed run leaves consistent state; running
/// again finishes the work (every step is idempotent). Erased entries move to a
/// token derived from the old one and stay erased.
public enum Retokenize {
    public struct Options: Sendable {
        public var entryBatch = 1000
        public var rowBatch = 10_000
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
        store: KeyStore, keyring recoveryKeys: RecoveryKeyring, options: Options, reason: String, actor: AuditActor,
        connection: PostgresConnection, connect: @escaping @Sendable () async throws -> PostgresConnection, logger: Logger
    ) async throws -> Summary {
        let target = try store.tokenizationKeyring().active
        var summary = Summary(target: target.version, pending: try await pendingEntries(except: target.version, on: connection))
        if options.dryRun { return try await finish(summary, connection: connection) }

        try await connection.transaction { connection in try KeyRegistry.enforceTokenization(version: target.version, on: connection) }
        let total = summary.pending.values.reduce(0, +)
        let subject = "tokenization → v\(target.version)"
        try await AuditLog.appendCommitted([AuditRecord(action: "retokenize", subject: subject, reason: reason,
                                                        outcome: "started: \(total) entries")], actor: actor, on: connection)
        let tokenizer = try Tokenizer(key: target)
        let reader = VaultReader(connection: connection, privateKey: recoveryKeys.privateKey(version:))
        let dataKeys = DataKeyManager(recoveryKey: try store.recoveryPublicKeys().active, policy: DataKeyPolicy(),
                                      createdBy: "vault retokenize (\(actor.osUser))", logger: logger, connect: connect)
        var sealer: VaultSealer? = nil
        let progress = Progress(label: "retokenize", total: total, logger: logger)

        while summary.passes < options.maximumPasses {
            summary.passes += 1
            let oldVersions = try await pendingEntries(except: target.version, on: connection).keys.sorted()
            for oldVersion in oldVersions {
                var after = ""
                while true {
                    let rows = try await connection.query("""
                        SELECT \(VaultReader.entryColumns) FROM vault_entries
                        WHERE token > $2 AND token_key_version = $1 ORDER BY token LIMIT $3
                        """, [.int(oldVersion), .text(after), .int(options.entryBatch)])
                    guard let last = rows.last else { break }
                    after = try last.string("token")
                    var byToken: [String: PostgresRow] = [:]
                    for row in rows { byToken[try row.string("token")] = row }
                    let oldTokens = rows.compactMap { $0["token"] }
                    let lease = try await dataKeys.lease(encryptions: oldTokens.count)
                    if sealer?.dataKeyID != lease.id { sealer = try VaultSealer(dataKeyID: lease.id, key: lease.key) }
                    let moves = try await prepareMoves(oldTokens, rows: byToken, reader: reader, tokenizer: tokenizer,
                                                       sealer: sealer!, oldVersion: oldVersion)
                    try await commitMoves(moves, on: connection)
                    summary.movedEntries += moves.filter { $0.sealed != nil }.count
                    summary.carriedErasures += moves.filter { $0.sealed == nil }.count
                    for field in PIIField.allCases {
                        let old = moves.filter { $0.field == field }.map(\.oldToken)
                        if !old.isEmpty { summary.rewrittenRows += try await rewriteRows(old, field: field, chunk: options.rowBatch, on: connection) }
                    }
                    summary.droppedEntries += try await dropUnreferenced(oldTokens, version: oldVersion, on: connection)
                    progress.advance(by: rows.count)
                }
            }
            if try await pendingEntries(except: target.version, on: connection).isEmpty { break }
            logger.info("old entries appeared during the pass (a replica still writing an old version?); another pass",
                        metadata: ["pass": "\(summary.passes)"])
        }
        progress.finish()
        summary = try await finish(summary, connection: connection)
        try await AuditLog.appendCommitted([AuditRecord(
            action: "retokenize", subject: subject, reason: reason,
            outcome: "\(summary.remainingEntries == 0 && summary.remainingRows == 0 ? "completed" : "incomplete"): moved \(summary.movedEntries) entries, carried \(summary.carriedErasures) erasures, rewrote \(summary.rewrittenRows) rows, dropped \(summary.droppedEntries) old entries")],
            actor: actor, on: connection)
        return summary
    }

    struct Move: Sendable {
        let oldToken: String
        let newToken: String
        let field: PIIField
        let oldVersion: Int
        /// nil for an erased entry (carried as a tombstone).
        let sealed: SealedVaultEntry?
        let erasedAt: String?
        let erasedBy: String?
        let dataKeyID: String
    }

    private static func prepareMoves(
        _ tokens: [String], rows: [String: PostgresRow], reader: VaultReader, tokenizer: Tokenizer, sealer: VaultSealer, oldVersion: Int
    ) async throws -> [Move] {
        let opened = try await reader.open(tokens, rows: rows)
        var moves: [Move] = []
        for (token, result) in zip(tokens, opened) {
            guard let parts = Token.parse(token), let row = rows[token] else { continue }
            switch result {
            case .success(let value):
                let newToken = try tokenizer.token(for: value.value, field: parts.field)
                let (nonce, ciphertext) = try sealer.seal(value.value, token: newToken, field: parts.field)
                moves.append(Move(oldToken: token, newToken: newToken, field: parts.field, oldVersion: oldVersion,
                                  sealed: SealedVaultEntry(token: newToken, field: parts.field, tokenKeyVersion: tokenizer.keyVersion,
                                                           dataKeyID: sealer.dataKeyID, nonce: nonce, ciphertext: ciphertext),
                                  erasedAt: nil, erasedBy: nil, dataKeyID: sealer.dataKeyID))
            case .failure(let error) where error.kind == .erased:
                moves.append(Move(oldToken: token, newToken: try tokenizer.token(forErased: token, field: parts.field), field: parts.field,
                                  oldVersion: oldVersion, sealed: nil, erasedAt: row["erased_at"], erasedBy: row["erased_by"],
                                  dataKeyID: try row.string("data_key_id")))
            case .failure(let error):
                // Never guess: an entry that does not open stays where it is, and the job reports it.
                throw RetokenizeError("cannot move token \(token): \(error.message)")
            }
        }
        return moves
    }

    /// New entries (and tombstones) plus lineage, in one transaction.
    private static func commitMoves(_ moves: [Move], on connection: PostgresConnection) async throws {
        try await connection.transaction { connection in
            var staging = CopyTextBuilder(reservingCapacity: moves.count * 200)
            var lineage = CopyTextBuilder(reservingCapacity: moves.count * 120)
            for move in moves {
                staging.append(move.newToken)
                staging.append(move.field.rawValue)
                staging.append(move.sealed?.tokenKeyVersion ?? Token.parse(move.newToken)?.keyVersion ?? 0)
                staging.append(move.sealed?.dataKeyID ?? move.dataKeyID)
                if let sealed = move.sealed {
                    staging.append(bytes: sealed.nonce)
                    staging.append(bytes: sealed.ciphertext)
                } else {
                    staging.append(nil as String?)
                    staging.append(nil as String?)
                }
                staging.append(move.erasedAt)
                staging.append(move.erasedBy)
                staging.endRow()
                lineage.append(move.oldToken)
                lineage.append(move.newToken)
                lineage.append(move.field.rawValue)
                lineage.append(move.oldVersion)
                lineage.append(Token.parse(move.newToken)?.keyVersion ?? 0)
                lineage.endRow()
            }
            try connection.executeScript("""
                CREATE TEMP TABLE IF NOT EXISTS retokenize_staging
                    (token text, field text, token_key_version integer, data_key_id uuid, nonce bytea, ciphertext bytea,
                     erased_at timestamptz, erased_by text) ON COMMIT DELETE ROWS;
                CREATE TEMP TABLE IF NOT EXISTS lineage_staging
                    (old_token text, new_token text, field text, old_version integer, new_version integer) ON COMMIT DELETE ROWS
                """)
            try connection.copy("COPY retokenize_staging FROM STDIN", data: staging.bytes)
            try connection.copy("COPY lineage_staging FROM STDIN", data: lineage.bytes)
            try connection.execute("""
                INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext, erased_at, erased_by)
                SELECT * FROM retokenize_staging ORDER BY token ON CONFLICT (token) DO NOTHING
                """)
            try connection.execute("""
                INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version)
                SELECT * FROM lineage_staging ORDER BY old_token ON CONFLICT (old_token) DO NOTHING
                """)
        }
    }

    /// Rewrites rows carrying `oldTokens`, at most `chunk` rows per statement
    /// (each its own transaction), through the committed lineage.
    private static func rewriteRows(_ oldTokens: [String], field: PIIField, chunk: Int, on connection: PostgresConnection) async throws -> Int {
        let column = field == .ip ? "masked_ip" : "masked_device_id"
        var rewritten = 0
        while true {
            let count = try await connection.execute("""
                WITH chunk AS (
                    SELECT u.ctid AS row_id, l.new_token FROM user_logins u JOIN token_lineage l ON l.old_token = u.\(column)
                    WHERE u.\(column) = ANY($1::text[]) LIMIT $2)
                UPDATE user_logins u SET \(column) = chunk.new_token FROM chunk WHERE u.ctid = chunk.row_id
                """, [.textArray(oldTokens), .int(chunk)])
            rewritten += count
            if count < chunk { return rewritten }
        }
    }

    /// Drops old entries no row refers to, under the old version's writer lock.
    private static func dropUnreferenced(_ oldTokens: [String], version: Int, on connection: PostgresConnection) async throws -> Int {
        try await connection.transaction { connection in
            try connection.execute("SELECT pg_advisory_xact_lock($1)", [.int(KeyRegistry.writerLock(tokenizationVersion: version))])
            return try connection.execute("""
                DELETE FROM vault_entries v WHERE v.token = ANY($1::text[])
                AND NOT EXISTS (SELECT 1 FROM user_logins u WHERE u.masked_ip = v.token)
                AND NOT EXISTS (SELECT 1 FROM user_logins u WHERE u.masked_device_id = v.token)
                """, [.textArray(oldTokens)])
        }
    }

    static func pendingEntries(except target: Int, on connection: PostgresConnection) async throws -> [Int: Int] {
        var pending: [Int: Int] = [:]
        for row in try await connection.query(
            "SELECT token_key_version AS v, count(*) AS n FROM vault_entries WHERE token_key_version <> $1 GROUP BY 1", [.int(target)]) {
            pending[try row.int("v")] = try row.int("n")
        }
        return pending
    }

    /// Counts what is left: old entries, and rows whose tokens are not of the target version.
    private static func finish(_ summary: Summary, connection: PostgresConnection) async throws -> Summary {
        var summary = summary
        summary.remainingEntries = try await pendingEntries(except: summary.target, on: connection).values.reduce(0, +)
        let prefixIP = "ip_t\(summary.target)_", prefixDevice = "dev_t\(summary.target)_"
        summary.remainingRows = try await connection.query("""
            SELECT count(*) AS n FROM user_logins WHERE left(masked_ip, $1) <> $2 OR left(masked_device_id, $3) <> $4
            """, [.int(prefixIP.count), .text(prefixIP), .int(prefixDevice.count), .text(prefixDevice)])[0].int("n")
        return summary
    }
}

public struct RetokenizeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
