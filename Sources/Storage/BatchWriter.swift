public import Postgres
public import Pseudonymization
import Synchronization
import VaultCrypto

/// A row of `user_logins`.
public struct LoginRow: Sendable {
    public let userID: String
    public let deviceType: String
    public let maskedIP: String
    public let maskedDeviceID: String
    public let locale: String?
    public let appVersion: AppVersion
    public let createDate: String

    public init(
        userID: String, deviceType: String, maskedIP: String, maskedDeviceID: String, locale: String?,
        appVersion: AppVersion, createDate: String
    ) {
        self.userID = userID
        self.deviceType = deviceType
        self.maskedIP = maskedIP
        self.maskedDeviceID = maskedDeviceID
        self.locale = locale
        self.appVersion = appVersion
        self.createDate = createDate
    }
}

/// A row for `vault_entries`: a sealed original.
public struct VaultEntryRecord: Sendable {
    public let token: String
    public let field: PIIField
    public let tokenKeyVersion: Int
    public let dataKeyID: String
    public let nonce: [UInt8]
    public let ciphertext: [UInt8]
    /// The value's suppression tag (not stored): an entry whose tag `vault
    /// forget` recorded is not written. Nil without a suppression key.
    public let suppressionTag: [UInt8]?
    /// Another open batch of this process is storing the same token: left out
    /// of the batch's insert and handed back (`BatchResult.contendedEntries`),
    /// to be stored only if that batch does not commit.
    public let contended: Bool

    public init(
        token: String, field: PIIField, tokenKeyVersion: Int, dataKeyID: String, nonce: [UInt8], ciphertext: [UInt8],
        suppressionTag: [UInt8]? = nil, contended: Bool = false
    ) {
        self.token = token
        self.field = field
        self.tokenKeyVersion = tokenKeyVersion
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.ciphertext = ciphertext
        self.suppressionTag = suppressionTag
        self.contended = contended
    }
}

/// Inserting vault entries: probe which tokens are stored, COPY the rest; a
/// collision with a concurrent writer falls back, under a savepoint, to an
/// idempotent insert for those entries only.
public enum VaultEntries {
    /// One entry per token, sorted by token: the order concurrent writers
    /// take index locks in.
    public static func sortedByToken(_ records: [VaultEntryRecord]) -> [VaultEntryRecord] {
        // The indices are sorted, not the records: moving a record retains and releases its fields.
        let order = records.indices.sorted { records[$0].token < records[$1].token }
        var unique: [VaultEntryRecord] = []
        unique.reserveCapacity(records.count)
        for index in order where unique.last?.token != records[index].token { unique.append(records[index]) }
        return unique
    }

    /// Inserts the entries (`sortedByToken`) whose tokens are not stored yet.
    /// Returns the tokens that were already stored.
    @discardableResult
    public static func insert(
        _ entries: [VaultEntryRecord], loading: BatchWriter.Loading = .copy, on connection: isolated PostgresConnection
    ) throws -> [String] {
        guard !entries.isEmpty else { return [] }
        let stored = try storedTokens(among: entries, on: connection)
        var alreadyStored = stored
        var fresh = entries
        if !stored.isEmpty {
            let storedSet = Set(stored)
            fresh.removeAll { storedSet.contains($0.token) }
        }
        guard !fresh.isEmpty else { return stored }
        guard loading == .copy else {
            try insertSkippingStored(fresh, on: connection)
            return stored
        }
        // Two writers meet on the same new token (a returning user in both
        // batches; another process, or the same one when `InFlightTokens`
        // did not see it) and the second COPY fails once the first commits;
        // or, on Citus, a shard's reason was lost on the way. Ask again which tokens are
        // stored now and COPY the rest (a statement per row-set is several
        // times dearer on Citus); when asking finds nothing new, one INSERT
        // skips what is stored, and its errors keep their code.
        for attempt in 1...3 {
            var copy = CopyTextBuilder(reservingCapacity: fresh.count * 200)
            for entry in fresh {
                copy.append(entry.token)
                copy.append(entry.field.rawValue)
                copy.append(entry.tokenKeyVersion)
                copy.append(entry.dataKeyID)
                copy.append(bytes: entry.nonce)
                copy.append(bytes: entry.ciphertext)
                copy.endRow()
            }
            try connection.execute("SAVEPOINT vault_copy")
            do {
                try BatchWriter.Table.vaultEntries.load(copy, .copy, on: connection)
                try connection.execute("RELEASE SAVEPOINT vault_copy")
                return alreadyStored
            } catch let error as PostgresError where error.sqlState == "23505" || error.isRelayedCopyFailure {
                try connection.execute("ROLLBACK TO SAVEPOINT vault_copy")
                let nowStored = Set(try storedTokens(among: fresh, on: connection))
                guard !nowStored.isEmpty, attempt < 3 else { break }
                alreadyStored += nowStored
                fresh.removeAll { nowStored.contains($0.token) }
                if fresh.isEmpty { return alreadyStored }
            }
        }
        try insertSkippingStored(fresh, on: connection)
        return alreadyStored
    }

    /// The tokens of `entries` the vault holds.
    private static func storedTokens(among entries: [VaultEntryRecord], on connection: isolated PostgresConnection) throws -> [String] {
        try connection.query(
            "SELECT token FROM vault_entries WHERE token = ANY($1::text[])", [.textArray(entries.map(\.token))], prepared: true
        ).map { try $0.string("token") }
    }

    /// Inserts entries another open batch may be storing: one statement
    /// that skips what is stored and waits for an uncommitted insert of the
    /// same token to end (then skips it, or inserts it if that batch rolled
    /// back). Returns the tokens that were already stored.
    public static func insertContended(_ records: [VaultEntryRecord], on connection: isolated PostgresConnection) throws -> [String] {
        guard !records.isEmpty else { return [] }
        let entries = sortedByToken(records)
        let inserted = Set(try insertSkippingStored(entries, returning: true, on: connection))
        return entries.map(\.token).filter { !inserted.contains($0) }
    }

    /// One statement for all the rows (on Citus, one per shard, not one per
    /// row-VALUES chunk: a multi-row INSERT is routed row by row there).
    /// Returns the tokens inserted when asked to.
    @discardableResult
    private static func insertSkippingStored(
        _ entries: [VaultEntryRecord], returning: Bool = false, on connection: isolated PostgresConnection
    ) throws -> [String] {
        try connection.query(
            """
            INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext)
            SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::uuid[], $5::bytea[], $6::bytea[])
            ON CONFLICT (token) DO NOTHING
            \(returning ? "RETURNING token" : "")
            """,
            [
                .textArray(entries.map(\.token)), .textArray(entries.map(\.field.rawValue)),
                .textArray(entries.map { String($0.tokenKeyVersion) }), .textArray(entries.map(\.dataKeyID)),
                .byteArrays(entries.map(\.nonce)), .byteArrays(entries.map(\.ciphertext)),
            ], prepared: true
        ).map { try $0.string("token") }
    }
}

/// A message set aside, its body sealed.
public struct QuarantineRow: Sendable {
    public let source: String
    public let messageID: String
    public let rejection: Rejection
    public let bodyByteCount: Int
    public let dataKeyID: String
    public let nonce: [UInt8]
    public let sealedBody: [UInt8]
    /// SHA-256 of the whole body when only a prefix of it is sealed.
    public let bodySHA256: [UInt8]?

    public init(
        source: String, messageID: String, rejection: Rejection, bodyByteCount: Int, dataKeyID: String,
        nonce: [UInt8], sealedBody: [UInt8], bodySHA256: [UInt8]? = nil
    ) {
        self.source = source
        self.messageID = messageID
        self.rejection = rejection
        self.bodyByteCount = bodyByteCount
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.sealedBody = sealedBody
        self.bodySHA256 = bodySHA256
    }
}

/// What one message becomes.
public struct BatchItem: Sendable {
    public enum Payload: Sendable {
        /// A login row and the vault entries it needs (none for tokens known to
        /// be stored; an entry may come with several rows of a batch, and is
        /// written once).
        case login(LoginRow, [VaultEntryRecord])
        case quarantine(QuarantineRow)
    }

    /// 16 bytes identifying the message across deliveries (see `ReceiptID`).
    public let receiptID: [UInt8]
    /// The UTC day the message was sent (YYYY-MM-DD): the same on every
    /// delivery, so with the receipt id it names the message.
    public let sentDay: String
    public let payload: Payload

    public init(receiptID: [UInt8], sentDay: String, payload: Payload) {
        self.receiptID = receiptID
        self.sentDay = sentDay
        self.payload = payload
    }
}

/// What a committed batch did.
public struct BatchResult: Sendable {
    /// Receipt ids written now (the rest were already processed: duplicates).
    public let written: Set<[UInt8]>
    public let loginRows: Int
    /// Quarantined messages written now, by reason.
    public let quarantined: [String: Int]
    public let vaultEntriesOffered: Int
    /// Tokens the batch found already in the vault (worth remembering).
    public var alreadyStoredTokens: [String]
    /// New values not stored because `vault forget` erased them (their rows are written).
    public let suppressedEntries: Int
    /// Entries left out because another open batch is storing their tokens
    /// (`VaultEntryRecord.contended`): the caller inserts, before it commits,
    /// those whose other batch did not commit (`VaultEntries.insertContended`).
    public var contendedEntries: [VaultEntryRecord]

    public init(
        written: Set<[UInt8]>, loginRows: Int, quarantined: [String: Int], vaultEntriesOffered: Int, alreadyStoredTokens: [String] = [],
        suppressedEntries: Int = 0, contendedEntries: [VaultEntryRecord] = []
    ) {
        self.written = written
        self.loginRows = loginRows
        self.quarantined = quarantined
        self.vaultEntriesOffered = vaultEntriesOffered
        self.alreadyStoredTokens = alreadyStoredTokens
        self.suppressedEntries = suppressedEntries
        self.contendedEntries = contendedEntries
    }
}

/// What a writer learned from its earlier batches, so that the next one
/// skips work the database would only confirm. Each guess is safe when wrong:
/// it costs a round trip or a retried statement, never a lost or doubled row.
public final class WriterHints: Sendable {
    private struct State {
        var anySuppressed = true
        var receiptsMeetDuplicates = false
        var legacyReceipts: Bool?
        var storedAppVersions: Set<Int32> = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Whether `vault forget` has suppressed any value, as the database said
    /// on the last batch (it says so on every batch). Starts out assuming so.
    public var anySuppressed: Bool {
        get { state.withLock { $0.anySuppressed } }
        set { state.withLock { $0.anySuppressed = newValue } }
    }

    /// Whether the last batch met messages already written (redeliveries, a
    /// file run again): then receipts are probed before they are copied.
    public internal(set) var receiptsMeetDuplicates: Bool {
        get { state.withLock { $0.receiptsMeetDuplicates } }
        set { state.withLock { $0.receiptsMeetDuplicates = newValue } }
    }

    /// Whether receipts from before partitioning are kept (nil: not asked yet).
    var legacyReceipts: Bool? {
        get { state.withLock { $0.legacyReceipts } }
        set { state.withLock { $0.legacyReceipts = newValue } }
    }

    /// The app versions committed by this writer (`BatchWriter.storeAppVersions`).
    var storedAppVersions: Set<Int32> { state.withLock { $0.storedAppVersions } }

    func stored(appVersions codes: some Sequence<Int32>) {
        state.withLock { $0.storedAppVersions.formUnion(codes) }
    }
}

/// A message's claim in `ingest_receipts`.
struct Receipt: Hashable, Comparable {
    /// The day given to receipts written before partitioning (migration 5).
    static let legacyDay = "1970-01-01"

    let id: [UInt8]
    let sentDay: String

    static func < (left: Receipt, right: Receipt) -> Bool {
        left.sentDay == right.sentDay ? left.id.lexicographicallyPrecedes(right.id) : left.sentDay < right.sentDay
    }
}

/// Writes a batch of processed messages in one transaction: receipts first
/// (claiming each message once, even against a concurrent consumer), then
/// vault entries, login rows, quarantine and app versions, all or nothing.
/// Everything goes in by COPY; a unique violation means a concurrent writer
/// got there first, and the batch is simply retried.
public enum BatchWriter {
    /// How a batch's rows go in. COPY is the fast way; INSERT statements are
    /// the way to learn why a Citus cluster refused rows: its coordinator
    /// relays a shard's refusal of a COPY without the SQLSTATE
    /// (`PostgresError.isRelayedCopyFailure`), and of an INSERT with it.
    public enum Loading: Sendable {
        case copy
        case insertStatements
    }

    /// A table a batch loads, and the columns it fills (in COPY order).
    struct Table {
        static let receipts = Table(name: "ingest_receipts", columns: ["receipt_id", "sent_day"])
        static let vaultEntries = Table(
            name: "vault_entries", columns: ["token", "field", "token_key_version", "data_key_id", "nonce", "ciphertext"])
        static let logins = Table(
            name: "user_logins",
            columns: ["user_id", "device_type", "masked_ip", "masked_device_id", "locale", "app_version", "create_date"])
        static let quarantine = Table(
            name: "quarantine",
            columns: [
                "receipt_id", "source", "message_id", "reason", "field", "detail", "body_bytes", "data_key_id", "nonce", "sealed_body",
                "sent_day", "body_sha256",
            ])

        let name: String
        let columns: [String]

        func load(_ rows: CopyTextBuilder, _ loading: Loading, on connection: isolated PostgresConnection) throws {
            switch loading {
            case .copy: try connection.copy("COPY \(name) (\(columns.joined(separator: ", "))) FROM STDIN", data: rows.bytes)
            case .insertStatements: try insert(rows, on: connection)
            }
        }

        func insert(_ rows: CopyTextBuilder, on connection: isolated PostgresConnection) throws {
            try connection.insertRows(
                "INSERT INTO \(name) (\(columns.joined(separator: ", ")))", columnCount: columns.count, copyText: rows.bytes)
        }
    }

    /// The key versions a batch was made with: its tokens', and the recovery
    /// key new data keys are wrapped to.
    public struct KeyVersions: Sendable {
        public let tokenization: Int
        public let recovery: Int

        public init(tokenization: Int, recovery: Int) {
            self.tokenization = tokenization
            self.recovery = recovery
        }
    }

    /// Makes the partitions a batch of `days` needs (and today's quarantine
    /// partition), each in its own transaction, before the batch's: on a
    /// Citus cluster a partition of a distributed table cannot be made in a
    /// transaction that has written rows (or as another role than the one
    /// writing them). `ingest_begin_batch` checks again inside the batch and
    /// makes what is still missing (one node takes it there too).
    public static func preparePartitions(days: Set<String>, on connection: PostgresConnection) async throws {
        try await connection.execute(
            "SELECT ingest_prepare_partitions($1::date[])", [.textArray(days.sorted())], prepared: true)
    }

    /// Stores the app versions of `items` not stored yet, in their own
    /// transaction before the batch's: two writers meeting on a new version
    /// then wait for each other only this long, not for a whole batch.
    public static func storeAppVersions(of items: [BatchItem], hints: WriterHints, on connection: PostgresConnection) async throws {
        let stored = hints.storedAppVersions
        var versions: [Int32: String] = [:]
        for item in items {
            if case .login(let row, _) = item.payload, !stored.contains(row.appVersion.code) {
                versions[row.appVersion.code] = row.appVersion.canonical
            }
        }
        guard !versions.isEmpty else { return }
        try await connection.perform { [versions] connection in try insertAppVersions(versions, on: connection) }
        hints.stored(appVersions: versions.keys)
    }

    private static func insertAppVersions(_ versions: [Int32: String], on connection: isolated PostgresConnection) throws {
        let codes = versions.keys.sorted()
        try connection.execute(
            """
            INSERT INTO app_versions (code, version)
            SELECT * FROM unnest($1::integer[], $2::text[]) ORDER BY 1
            ON CONFLICT (code) DO NOTHING
            """, [.textArray(codes.map { String($0) }), .textArray(codes.map { versions[$0] })], prepared: true)
    }

    /// Runs inside a transaction the caller opened. The batch is refused
    /// (`StaleKeysError`) when the database's active tokenization or
    /// recovery key, or the tokenization key a retokenization enforces, is
    /// newer than `keys`: key files rolled back, or not arrived yet.
    /// `hints` carries what the writer's earlier batches learned (whether any
    /// value is suppressed, whether messages come again, the app versions
    /// `storeAppVersions` committed), so that a batch skips round trips the
    /// database would only confirm.
    public static func write(
        _ items: [BatchItem], keys: KeyVersions, hints: WriterHints = WriterHints(), loading: Loading = .copy,
        on connection: isolated PostgresConnection
    ) throws -> BatchResult {
        let claims = Claims(items)
        let days = claims.days
        // The suppression tags of the values this batch would store.
        var tags: [[UInt8]] = []
        for item in items {
            if case .login(_, let entries) = item.payload { tags += entries.compactMap(\.suppressionTag) }
        }
        // One round trip: the writer and suppression locks (shared, to commit),
        // the versions the database requires, the partitions, the suppressed tags.
        let sentTags = hints.anySuppressed ? tags : []
        let begun = try connection.query(
            """
            SELECT enforced, active_tokenization, active_recovery, any_suppressed, suppressed
            FROM ingest_begin_batch($1, $2::date[], $3::bytea[])
            """, [.int(keys.tokenization), .textArray(days), .byteArrays(sentTags)], prepared: true)[0]
        for (kind, required, local) in [
            (
                KeyRegistry.Kind.tokenization,
                max(try begun.optionalInt("enforced") ?? 0, try begun.optionalInt("active_tokenization") ?? 0),
                keys.tokenization
            ),
            (.recovery, try begun.optionalInt("active_recovery") ?? 0, keys.recovery),
        ] where required > local {
            throw StaleKeysError(kind: kind, registered: required, local: local)
        }
        var suppressed = Set(try begun.byteArrayValues("suppressed"))
        hints.anySuppressed = try begun.bool("any_suppressed")
        if hints.anySuppressed, sentTags.isEmpty, !tags.isEmpty {
            // `vault forget` suppressed a value since this writer last looked: ask now.
            suppressed = Set(
                try connection.query("SELECT ingest_suppressed($1::bytea[]) AS tags", [.byteArrays(tags)], prepared: true)[0]
                    .byteArrayValues("tags"))
        }
        let writes = try claimReceipts(claims, hints: hints, loading: loading, on: connection)
        let written = Set(items.indices.lazy.filter { writes[$0] }.map { items[$0].receiptID })

        var logins = CopyTextBuilder(reservingCapacity: items.count * 160)
        var vault: [VaultEntryRecord] = []
        vault.reserveCapacity(items.count * 2)
        var quarantine = CopyTextBuilder()
        var quarantinedByReason: [String: Int] = [:]
        var versions: [Int32: String] = [:]
        for (item, write) in zip(items, writes) where write {
            switch item.payload {
            case .login(let row, let entries):
                logins.append(row.userID)
                logins.append(row.deviceType)
                logins.append(row.maskedIP)
                logins.append(row.maskedDeviceID)
                logins.append(row.locale)
                logins.append(Int(row.appVersion.code))
                logins.append(row.createDate)
                logins.endRow()
                versions[row.appVersion.code] = row.appVersion.canonical
                vault += entries
            case .quarantine(let row):
                quarantine.append(bytes: item.receiptID)
                quarantine.append(row.source)
                quarantine.append(row.messageID)
                quarantine.append(row.rejection.reason.rawValue)
                quarantine.append(row.rejection.field)
                quarantine.append(row.rejection.detail)
                quarantine.append(row.bodyByteCount)
                quarantine.append(row.dataKeyID)
                quarantine.append(bytes: row.nonce)
                quarantine.append(bytes: row.sealedBody)
                quarantine.append(item.sentDay)
                if let digest = row.bodySHA256 { quarantine.append(bytes: digest) } else { quarantine.append(nil as String?) }
                quarantine.endRow()
                quarantinedByReason[row.rejection.reason.rawValue, default: 0] += 1
            }
        }
        var entries = VaultEntries.sortedByToken(vault)
        let offered = entries.count
        entries.removeAll { $0.suppressionTag.map(suppressed.contains) == true }
        let storedTokens = try VaultEntries.insert(entries.filter { !$0.contended }, loading: loading, on: connection)
        if logins.rowCount > 0 { try Table.logins.load(logins, loading, on: connection) }
        if quarantine.rowCount > 0 { try Table.quarantine.load(quarantine, loading, on: connection) }
        let stored = hints.storedAppVersions
        let unstored = versions.filter { !stored.contains($0.key) }
        if !unstored.isEmpty { try insertAppVersions(unstored, on: connection) }
        return BatchResult(
            written: written, loginRows: logins.rowCount, quarantined: quarantinedByReason,
            vaultEntriesOffered: entries.count, alreadyStoredTokens: storedTokens, suppressedEntries: offered - entries.count,
            contendedEntries: entries.filter(\.contended))
    }

    /// Claims each message once, even against a concurrent consumer; returns,
    /// for each item, whether it is written now (the first of its message in
    /// the batch, and not processed before: a redelivery or a replay). While
    /// the last batch met no duplicates, receipts are copied at once and the
    /// unique index finds a duplicate (the COPY fails, under a savepoint, and
    /// the batch probes instead). Otherwise, and while receipts from before
    /// partitioning are kept (their placeholder day is not in the unique key a
    /// message's receipt would collide on), the messages already processed
    /// are probed for first and the rest copied; a concurrent consumer
    /// claiming one between the two fails the COPY with a unique violation,
    /// and the caller retries the batch, which then sees it.
    private static func claimReceipts(
        _ claims: Claims, hints: WriterHints, loading: Loading, on connection: isolated PostgresConnection
    ) throws -> [Bool] {
        func copy(_ indices: [Int]) throws {
            var rows = CopyTextBuilder(reservingCapacity: indices.count * 52)
            for index in indices {
                rows.append(bytes: claims.receipts[index].id)
                rows.append(claims.receipts[index].sentDay)
                rows.endRow()
            }
            if rows.rowCount > 0 { try Table.receipts.load(rows, loading, on: connection) }
        }
        var writes = [Bool](repeating: false, count: claims.receipts.count)
        if hints.legacyReceipts == nil {
            hints.legacyReceipts = try connection.query(
                "SELECT EXISTS (SELECT 1 FROM ingest_receipts WHERE sent_day = DATE '\(Receipt.legacyDay)') AS kept"
            )[0].bool("kept")
        }
        if !hints.receiptsMeetDuplicates, hints.legacyReceipts == false, loading == .copy {
            try connection.execute("SAVEPOINT receipts_copy")
            do {
                try copy(claims.firsts)
                try connection.execute("RELEASE SAVEPOINT receipts_copy")
                for index in claims.firsts { writes[index] = true }
                return writes
            } catch let error as PostgresError where error.sqlState == "23505" || error.isRelayedCopyFailure {
                // On Citus a shard's unique violation may arrive without its code.
                try connection.execute("ROLLBACK TO SAVEPOINT receipts_copy")
                hints.receiptsMeetDuplicates = true
            }
        }
        // One probe per send day (nearly always one): `sent_day IN ($2,
        // <placeholder>)` prunes to that day's partition and the receipts kept
        // from before partitioning, even in a generic plan (`= ANY($2)` probed
        // every day kept: a cost that grew with retention).
        var seen = Set<Receipt>()
        for day in claims.days {
            let ids = claims.firsts.lazy.map { claims.receipts[$0] }.filter { $0.sentDay == day }.map(\.id)
            for row in try connection.query(
                """
                SELECT receipt_id FROM ingest_receipts
                WHERE receipt_id = ANY($1::bytea[]) AND sent_day IN ($2::date, DATE '\(Receipt.legacyDay)')
                """, [.byteArrays(Array(ids)), .text(day)], prepared: true)
            {
                seen.insert(Receipt(id: try row.bytes("receipt_id"), sentDay: day))
            }
        }
        hints.receiptsMeetDuplicates = !seen.isEmpty
        let fresh = claims.firsts.filter { !seen.contains(claims.receipts[$0]) }
        try copy(fresh)
        for index in fresh { writes[index] = true }
        return writes
    }

    /// A batch's receipts, in the order concurrent writers lock them.
    struct Claims {
        /// One per item.
        let receipts: [Receipt]
        /// The first item of each message, by receipt order (send day, then id).
        let firsts: [Int]
        /// The send days, in order.
        let days: [String]

        init(_ items: [BatchItem]) {
            let receipts = items.map { Receipt(id: $0.receiptID, sentDay: $0.sentDay) }
            let order = receipts.indices.sorted { receipts[$0] < receipts[$1] || (receipts[$0] == receipts[$1] && $0 < $1) }
            var firsts: [Int] = []
            firsts.reserveCapacity(order.count)
            var days: [String] = []
            for index in order where firsts.last.map({ receipts[$0] != receipts[index] }) ?? true {
                firsts.append(index)
                if days.last != receipts[index].sentDay { days.append(receipts[index].sentDay) }
            }
            self.receipts = receipts
            self.firsts = firsts
            self.days = days
        }
    }

    /// Records a new data key; committed before any entry uses it.
    public static func insertDataKey(
        id: String, recoveryKeyVersion: Int, wrappedKey: [UInt8], createdBy: String, on connection: PostgresConnection
    ) async throws {
        try await connection.execute(
            "INSERT INTO data_keys (id, recovery_key_version, wrapped_key, created_by) VALUES ($1, $2, $3, $4)",
            [.text(id), .int(recoveryKeyVersion), .bytes(wrappedKey), .text(createdBy)])
    }

    /// Marks a data key as no longer used for new entries.
    public static func retireDataKey(id: String, on connection: PostgresConnection) async throws {
        try await connection.execute("UPDATE data_keys SET retired_at = now() WHERE id = $1 AND retired_at IS NULL", [.text(id)])
    }
}
