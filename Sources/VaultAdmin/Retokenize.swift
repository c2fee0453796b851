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
/// Every change goes through database functions bound to the job's audited
/// run (`rotation_begin`): the rotation role has no write grant on the vault,
/// the lineage or the login tokens.
///
/// 1. Enforce the target version in the key registry, then wait for the
///    ingest transactions still writing older tokens to finish (their shared
///    writer lock): from here on no old token is written.
/// 2. Move the entries not linked yet, in token order, in batches: decrypt,
///    check, compute the new token, seal the value again under it, commit
///    the new entries with their old → new lineage (`retokenize_move`). An
///    entry already at the new token is opened and compared first: the same
///    value is only linked; anything else is replaced, audited. Erasures move
///    to a token derived from the old one and stay erased, each with an
///    audit row (`forget.carry`), and only when an authenticated audit row
///    proves them.
/// 3. Sweep `user_logins` in ranges of heap pages, rewriting both token
///    columns of each row at once through the lineage. Tokens rows carry
///    that the vault never held (values `vault forget` suppressed) are
///    linked to tokens derived from them.
/// 4. When no row carries an old token any more, drop the old entries whose
///    lineage leads to an entry in the same state.
///
/// Until step 4 every old token still has its entry, and from step 2 every new
/// one too, so no row is ever unrecoverable. Killed anywhere, a second run
/// finishes the work: linked entries are skipped, rewritten rows match nothing.
public enum Retokenize {
    static let runLock: Int64 = 0x7265_746f_6b65_6e  // "retoken"

    /// One retokenize at a time: a session lock, so a killed run's lock goes
    /// with its connection. A run killed mid-statement leaves a backend that
    /// learns of it only when the statement ends (later on a cluster, where a
    /// statement waits on its workers), so the next run waits a minute for it.
    static func takeRunLock(on connection: PostgresConnection, logger: Logger) async throws {
        if try await connection.query("SELECT pg_try_advisory_lock($1) AS locked", [.int(runLock)])[0].bool("locked") { return }
        logger.notice("another retokenize holds the run lock; waiting up to 60 s for it to end")
        try await connection.execute("SET lock_timeout = '60s'")
        do {
            try await connection.execute("SELECT pg_advisory_lock($1)", [.int(runLock)])
        } catch let error as PostgresError where error.sqlState == "55P03" {
            throw RetokenizeError("another `vault retokenize` is running on this database; wait for it (or for its connection to end)")
        }
        try await connection.execute("RESET lock_timeout")
    }

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
        /// Entries already at a new token that did not hold the moved value, replaced (audited).
        public var replacedEntries = 0
        /// Tokens rows carried that the vault never held, linked to derived tokens.
        public var linkedOrphans = 0
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
        // Tokens and new data-key wraps only under the registered, current keys.
        try await KeyAdministration.verifyRegistered(
            tokenization: tokenization, recovery: recoveryPublicKeys, store: store, kms: kms, connection: connection)

        try await takeRunLock(on: connection, logger: logger)
        let total = summary.pending.values.reduce(0, +)
        let run = try await RotationRun.beginCommitted(
            action: "retokenize", subject: "tokenization → v\(target.version)", reason: reason, outcome: "started: \(total) entries",
            actor: actor, on: connection)
        try await KeyRegistry.enforceTokenization(version: target.version, run: run, on: connection)
        let minter = try TokenMinter(keyring: tokenization, kms: try kms.client(for: tokenization), maximumConcurrentCalls: 32)
        var mover = Mover(
            reader: VaultReader(minter: minter, privateKey: recoveryKeys.privateKey(version:)),
            proofs: ErasureProofs(keys: actor.keys, minter: minter), target: target.version, run: run, reason: reason, actor: actor)
        let dataKeys = DataKeyManager(
            recoveryKey: recoveryPublicKeys.active, policy: DataKeyPolicy(),
            createdBy: "vault retokenize (\(actor.osUser))", logger: logger, connect: connect)
        let progress = Progress(label: "retokenize", total: total, logger: logger)
        // Batches commit on two more connections, two at a time, while the next
        // is read and prepared: the database and the crypto overlap. Each batch
        // commits whole (entries with their lineage), so any order is safe: the
        // next pass takes up what has no lineage. The row sweep uses two of them.
        let writers = [try await connect(), try await connect()]
        defer {
            Task { for writer in writers { await writer.close() } }
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
                    progress.log(
                        "retokenize phase done",
                        metadata: [
                            "phase": "\(phase)", "count": "\(count)", "pass": "\(summary.passes)",
                            "seconds": "\(String(format: "%.2f", (ContinuousClock.now - phaseStarted) / .seconds(1)))",
                        ])
                    phaseStarted = .now
                }
                // Step 2: entries not linked yet (after the first pass, those whose new
                // token was already taken: opened and compared now).
                mover.openExistingTargets = summary.passes > 1
                mover.anySuppressions = try await connection.query("SELECT EXISTS (SELECT FROM vault_suppressions) AS any")[0].bool("any")
                // The tokens erasure rows name (few): such an entry is erased, whatever it holds.
                mover.erasureRows = Set(
                    try await connection.query(
                        "SELECT DISTINCT subject FROM audit_log WHERE action IN ('forget', 'forget.carry') AND outcome = 'erased'"
                    ).map { try $0.string("subject") })
                for oldVersion in try await pendingEntries(except: target.version, on: connection).keys.sorted() {
                    let batch = options.entryBatch
                    // Entries an earlier run linked are skipped; a first run has none to look for.
                    let resuming = try await connection.query(
                        "SELECT EXISTS (SELECT FROM token_lineage WHERE old_version = $1 AND new_version = $2) AS resuming",
                        [.int(oldVersion), .int(target.version)])[0].bool("resuming")
                    // A page of old entries in token order, and those of them not linked
                    // yet: the lineage is looked up for the page's entries only.
                    let fetch = { @Sendable [resuming] (after: String) async throws -> (end: String?, entries: [SealedEntry]) in
                        // Each data key's wrapped key once per batch (on its first entry):
                        // decoding it for every entry was a tenth of the job's time.
                        let rows = try await connection.query(
                            """
                            WITH page AS MATERIALIZED (
                                SELECT v.token, v.field, v.token_key_version, v.data_key_id, v.nonce, v.ciphertext, v.erased_at, v.erased_by
                                FROM vault_entries v WHERE v.token > $2 AND v.token_key_version = $1 ORDER BY v.token LIMIT $3),
                            -- OFFSET 0: a probe per entry of the page (as an anti-join the
                            -- planner hashed the whole, growing lineage every batch).
                            todo AS (SELECT p.* FROM page p
                                     WHERE NOT $4 OR NOT EXISTS (SELECT FROM token_lineage l WHERE l.old_token = p.token OFFSET 0))
                            SELECT e.token, e.field, e.token_key_version, e.data_key_id::text AS data_key_id, e.nonce, e.ciphertext,
                                   to_char(e.erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS erased_at, e.erased_by,
                                   d.recovery_key_version,
                                   CASE WHEN row_number() OVER (PARTITION BY e.data_key_id) = 1 THEN d.wrapped_key END AS wrapped_key,
                                   pe.page_end
                            FROM (SELECT max(token) AS page_end FROM page) pe
                            LEFT JOIN todo e ON true
                            LEFT JOIN data_keys d ON d.id = e.data_key_id
                            ORDER BY e.token
                            """, [.int(oldVersion), .text(after), .int(batch), .bool(resuming)], prepared: true)
                        return (rows.first?["page_end"], try rows.filter { $0["token"] != nil }.map(SealedEntry.init))
                    }
                    // Four stages at once: batches N and N + 1 commit (one on each
                    // writer), N + 2 is prepared (this task), N + 3 is read.
                    var committing: [Task<Void, any Error>?] = [nil, nil]
                    var batchNumber = 0
                    var page = try await fetch("")
                    while let end = page.end, !Task.isCancelled {
                        let next = Task { try await fetch(end) }
                        let rows = page.entries
                        let moves = try await mover.prepare(rows, dataKeys: dataKeys, on: connection)
                        let writer = batchNumber % 2
                        try await committing[writer]?.value
                        committing[writer] = Task { try await commit(moves, run: run, reason: reason, actor: actor, on: writers[writer]) }
                        batchNumber += 1
                        summary.movedEntries += moves.moves.filter { $0.sealed != nil }.count
                        summary.carriedErasures += moves.erasures.count
                        summary.replacedEntries += moves.replacements.count
                        progress.advance(by: rows.count)
                        page = try await next.value
                    }
                    // Stopping or not, what was prepared commits first.
                    for task in committing { try await task?.value }
                    try Task.checkCancellation()
                }
                phaseDone("move entries", summary.movedEntries + summary.carriedErasures)
                // Step 3: rows, after linking the tokens the vault never held.
                summary.linkedOrphans += try await linkOrphans(run: run, target: target.version, minter: minter, on: connection)
                summary.rewrittenRows += try await rewriteRows(run: run, pages: options.pagesPerStatement, on: writers)
                phaseDone("rewrite rows", summary.rewrittenRows)
                try Task.checkCancellation()
                // Step 4: old entries, once nothing refers to them.
                guard try await rowsWithOldTokens(target: target.version, on: connection) == 0 else {
                    logger.warning("rows with old tokens remain after the sweep; another pass", metadata: ["pass": "\(summary.passes)"])
                    continue
                }
                for version in try await pendingEntries(except: target.version, on: connection).keys.sorted() {
                    summary.droppedEntries += try await connection.query(
                        "SELECT dropped FROM retokenize_drop($1, $2)", [.int(run.sequence), .int(version)])[0].int("dropped")
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
            try await run.end(
                reason: reason,
                outcome:
                    "interrupted: moved \(summary.movedEntries) entries, rewrote \(summary.rewrittenRows) rows; left: \(summary.remainingEntries) entries, \(summary.remainingRows) rows",
                actor: actor, on: connection)
            throw CancellationError()
        }
        progress.finish()
        summary = try await finish(summary, connection: connection)
        try await run.end(
            reason: reason,
            outcome:
                "\(summary.remainingEntries == 0 && summary.remainingRows == 0 ? "completed" : "incomplete"): moved \(summary.movedEntries) entries, carried \(summary.carriedErasures) erasures, replaced \(summary.replacedEntries) false entries, linked \(summary.linkedOrphans) tokens without entries, rewrote \(summary.rewrittenRows) rows, dropped \(summary.droppedEntries) old entries",
            actor: actor, on: connection)
        return summary
    }

    /// One old entry's value sealed again under its new token, or (no
    /// ciphertext) only linked to the entry already there with the same value.
    struct Move: Sendable {
        let oldToken: String
        let newToken: String
        let sealed: (dataKeyID: String, nonce: [UInt8], ciphertext: [UInt8])?
    }

    /// What one batch of old entries becomes.
    struct Moves: Sendable {
        var moves: [Move] = []
        /// Entries at the new token that do not hold the moved value: replaced, each audited.
        var replacements: [Move] = []
        /// Erased entries, old → derived token.
        var erasures: [(old: String, new: String)] = []
    }

    /// Prepares batches for one run (on the job's task: its reader is not thread-safe).
    struct Mover {
        let reader: VaultReader
        let proofs: ErasureProofs
        let target: Int
        let run: RotationRun
        let reason: String
        let actor: AuditActor
        /// Whether to open and compare what the vault already holds at the new tokens.
        var openExistingTargets = false
        /// Whether `vault forget` has suppressed any value (then each opened value is checked).
        var anySuppressions = false
        /// The tokens erasure rows name.
        var erasureRows = Set<String>()

        /// Opens and checks each entry (a tombstone only with its proof of
        /// erasure); seals each value under its new token; opens and compares
        /// what the vault already holds at those tokens. Anything that does not
        /// open or verify stops the job, named: never guess.
        func prepare(_ rows: [SealedEntry], dataKeys: DataKeyManager, on connection: PostgresConnection) async throws -> Moves {
            let minter = reader.minter
            // An entry an erasure row names counts as erased (its ciphertext was written back).
            let rows = rows.map { erasureRows.contains($0.token) && $0.erasedAt == nil ? $0.erased(at: "after its erasure") : $0 }
            let tokens = rows.map(\.token)
            let entries = Dictionary(rows.map { ($0.token, $0) }, uniquingKeysWith: { first, _ in first })
            // Only tombstones (or entries an erasure row names) need a proof.
            let tombstones = rows.filter { $0.erasedAt != nil }.map(\.token)
            let erasures = try await proofs.proofs(for: tombstones, tombstones: Set(tombstones), on: connection)
            var values: [RecoveredValue] = []
            var erased: [(token: String, field: PIIField)] = []
            for (token, result) in zip(tokens, try await reader.open(tokens, entries: entries, erasures: erasures)) {
                switch result {
                case .success(let value): values.append(value)
                case .failure(let error) where error.kind == .erased: erased.append((token, Token.parse(token)!.field))
                case .failure(let error):
                    throw RetokenizeError("cannot move token \(token): \(error.message)", integrity: error.kind == .integrity)
                }
            }
            // A live entry of a value `vault forget` erased was written against its suppression.
            if anySuppressions,
                let index = try await AuditedReveal.suppressed(values.map { .success($0) }, minter: minter, on: connection).first
            {
                throw RetokenizeError(
                    "cannot move token \(values[index].token): its value was erased by vault forget, and this entry was written afterwards against its suppression; erase it (`vault forget --token \(values[index].token)`), then run retokenize again",
                    integrity: true)
            }
            let newTokens = try await minter.tokens(values.map { TokenRequest(field: $0.field, value: $0.value) }, version: target)
            // What the vault already holds at the new tokens: ingest wrote the value
            // under the new key since the rotation, or someone put a false entry there.
            // Rare, so only looked for once a pass has left entries unlinked (the
            // move links none whose new token it did not insert itself).
            let existing: [String: SealedEntry] =
                !openExistingTargets
                ? [:]
                : Dictionary(
                    try await connection.query(
                        "SELECT \(SealedEntry.columns) FROM vault_entries v LEFT JOIN data_keys d ON d.id = v.data_key_id WHERE v.token = ANY($1::text[])",
                        [.textArray(newTokens)]
                    ).map { entry in
                        let entry = try SealedEntry(entry)
                        return (entry.token, entry)
                    }, uniquingKeysWith: { first, _ in first })
            var held: [String: Result<RecoveredValue, RecoveryError>] = [:]
            if !existing.isEmpty {
                let heldTokens = Array(existing.keys)
                let heldErasures = try await proofs.proofs(
                    for: heldTokens, tombstones: Set(existing.values.filter { $0.erasedAt != nil }.map(\.token)), on: connection)
                held = Dictionary(
                    uniqueKeysWithValues: zip(heldTokens, try await reader.open(heldTokens, entries: existing, erasures: heldErasures)))
            }
            let lease = try await dataKeys.lease(encryptions: values.count)
            let sealer = try VaultSealer(dataKeyID: lease.id, key: lease.key)
            var moves = Moves()
            for (value, newToken) in zip(values, newTokens) {
                switch held[newToken] {
                case nil:
                    let (nonce, ciphertext) = try sealer.seal(value.value, token: newToken, field: value.field)
                    moves.moves.append(Move(oldToken: value.token, newToken: newToken, sealed: (lease.id, nonce, ciphertext)))
                case .success(let present) where present.value == value.value:
                    moves.moves.append(Move(oldToken: value.token, newToken: newToken, sealed: nil))
                case .failure(let error) where error.kind == .erased:
                    throw RetokenizeError(
                        "token \(value.token) holds a value that is erased under the new key (\(newToken)), but not under its own: erase it too (`vault forget --token \(value.token)`), then run retokenize again",
                        integrity: true)
                default:
                    let (nonce, ciphertext) = try sealer.seal(value.value, token: newToken, field: value.field)
                    moves.replacements.append(Move(oldToken: value.token, newToken: newToken, sealed: (lease.id, nonce, ciphertext)))
                }
            }
            let derived = try await minter.erasedTokens(erased, version: target)
            moves.erasures = zip(erased, derived).map { ($0.token, $1) }
            return moves
        }

    }

    /// Commits a batch in one transaction, through the run's functions: the
    /// moved entries and their lineage, replacements, carried erasures. Old
    /// tokens left unlinked (a concurrent ingest stored one of the new tokens
    /// meanwhile) are taken up again by the next pass.
    static func commit(_ batch: Moves, run: RotationRun, reason: String, actor: AuditActor, on connection: PostgresConnection) async throws
    {
        try await connection.transaction { connection in
            if !batch.moves.isEmpty {
                try connection.query(
                    "SELECT retokenize_move($1, $2, $3, $4, $5, $6)",
                    [
                        .int(run.sequence), .textArray(batch.moves.map(\.oldToken)), .textArray(batch.moves.map(\.newToken)),
                        .textArray(batch.moves.map { $0.sealed?.dataKeyID }), .byteArrays(batch.moves.map { $0.sealed?.nonce }),
                        .byteArrays(batch.moves.map { $0.sealed?.ciphertext }),
                    ], prepared: true)
            }
            for replacement in batch.replacements {
                guard let sealed = replacement.sealed else { continue }
                let entry = try AuditLog.prepare(
                    [
                        AuditRecord(
                            action: "retokenize.replace", subject: replacement.newToken, reason: reason,
                            outcome: "replaced an entry that did not hold \(replacement.oldToken)'s value")
                    ], after: try AuditLog.head(on: connection), actor: actor)[0]
                try connection.query(
                    "SELECT retokenize_replace($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    [
                        .int(run.sequence), .text(replacement.oldToken), .text(sealed.dataKeyID), .bytes(sealed.nonce),
                        .bytes(sealed.ciphertext),
                    ]
                        + AuditLog.singleRowParameters(entry, action: false))
            }
            if !batch.erasures.isEmpty {
                let entries = try AuditLog.prepare(
                    batch.erasures.map {
                        AuditRecord(action: "forget.carry", subject: $0.new, reason: "\(reason) (from \($0.old))", outcome: "erased")
                    }, after: try AuditLog.head(on: connection), actor: actor)
                try connection.query(
                    "SELECT retokenize_carry_erasures($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    [.int(run.sequence), .textArray(batch.erasures.map(\.old))] + AuditLog.rowParameters(entries, actions: false))
            }
        }
    }

    /// Links the old tokens rows carry that have neither an entry nor a
    /// lineage (values `vault forget` suppressed, ingested again under a
    /// later key) to tokens derived from them. Returns how many.
    static func linkOrphans(run: RotationRun, target: Int, minter: TokenMinter, on connection: PostgresConnection) async throws -> Int {
        let (ip, device) = prefixes(target)
        var unlinked: [(token: String, field: PIIField)] = []
        for row in try await connection.query(
            """
            SELECT DISTINCT o.token, o.field FROM (
                SELECT masked_ip AS token, 'ip' AS field FROM user_logins WHERE left(masked_ip, $1) <> $2
                UNION ALL
                SELECT masked_device_id, 'device_id' FROM user_logins WHERE left(masked_device_id, $3) <> $4) o
            WHERE o.token IS NOT NULL AND NOT EXISTS (SELECT FROM token_lineage l WHERE l.old_token = o.token)
            """, [.int(ip.count), .text(ip), .int(device.count), .text(device)])
        {
            unlinked.append((try row.string("token"), try row.string("field") == "ip" ? .ip : .deviceID))
        }
        // Those the vault holds are moved, not linked. Asked apart: on Citus the
        // vault and the rows are sharded on different columns.
        var held = Set<String>()
        for chunk in stride(from: 0, to: unlinked.count, by: 10_000) {
            let tokens = unlinked[chunk..<min(chunk + 10_000, unlinked.count)].map(\.token)
            held.formUnion(
                try await connection.query("SELECT token FROM vault_entries WHERE token = ANY($1::text[])", [.textArray(tokens)]).map {
                    try $0.string("token")
                })
        }
        let orphans = unlinked.filter { !held.contains($0.token) }
        guard !orphans.isEmpty else { return 0 }
        let derived = try await minter.erasedTokens(orphans, version: target)
        return try await connection.query(
            "SELECT retokenize_link_orphans($1, $2, $3, $4) AS linked",
            [
                .int(run.sequence), .textArray(orphans.map(\.token)), .textArray(derived),
                .textArray(orphans.map(\.field.rawValue)),
            ])[0].int("linked")
    }

    /// Sweeps `user_logins` in ranges of heap pages (a TID range scan each,
    /// through `retokenize_rewrite_rows`), rewriting both token columns of
    /// every row that still carries an old token, through the committed
    /// lineage. Each statement is its own transaction, so locks and WAL stay
    /// bounded. A partitioned `user_logins` is swept partition by partition
    /// (page numbers are per table).
    private static func rewriteRows(run: RotationRun, pages: Int, on connections: [PostgresConnection]) async throws -> Int {
        var rewritten = 0
        for table in try await Partitions.leaves(of: "user_logins", on: connections[0]) {
            rewritten += try await rewriteRows(of: table, run: run, pages: pages, on: connections)
        }
        return rewritten
    }

    private static func rewriteRows(of table: String, run: RotationRun, pages: Int, on connections: [PostgresConnection]) async throws
        -> Int
    {
        let total = try await Distribution.heapPages(of: table, on: connections[0])
        // Connection i takes ranges i, i + n, i + 2n, …: disjoint rows, so the
        // statements neither wait for nor deadlock with each other.
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, connection) in connections.enumerated() {
                group.addTask {
                    var rewritten = 0
                    for page in stride(from: index * pages, through: total, by: connections.count * pages) {
                        try Task.checkCancellation()
                        rewritten += try await connection.query(
                            "SELECT retokenize_rewrite_rows($1, $2::regclass, $3, $4) AS rewritten",
                            [.int(run.sequence), .text(table), .int(page), .int(page + pages)], prepared: true)[0].int("rewritten")
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
    /// An entry failed its integrity check (exit 65), rather than the job being unable to go on.
    public let isIntegrityFailure: Bool

    init(_ description: String, integrity: Bool = false) {
        self.description = description
        isIntegrityFailure = integrity
    }
}
