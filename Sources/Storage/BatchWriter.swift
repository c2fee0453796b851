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

    public init(
        token: String, field: PIIField, tokenKeyVersion: Int, dataKeyID: String, nonce: [UInt8], ciphertext: [UInt8],
        suppressionTag: [UInt8]? = nil
    ) {
        self.token = token
        self.field = field
        self.tokenKeyVersion = tokenKeyVersion
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.ciphertext = ciphertext
        self.suppressionTag = suppressionTag
    }
}

/// Inserting vault entries: probe which tokens are stored, COPY the rest; a
/// collision with a concurrent writer falls back, under a savepoint, to an
/// idempotent insert for those entries only.
public enum VaultEntries {
    /// Inserts the entries whose tokens are not stored yet. Returns the tokens
    /// that were already stored, found by a probe first; with
    /// `probeExisting: false` (for callers whose tokens are nearly always new)
    /// there is no probe first, an existing token is skipped by the fallback,
    /// and the result holds only the stored tokens a conflict revealed.
    @discardableResult
    public static func insert(
        _ records: [VaultEntryRecord], probeExisting: Bool = true, loading: BatchWriter.Loading = .copy,
        on connection: isolated PostgresConnection
    ) throws -> [String] {
        guard !records.isEmpty else { return [] }
        var byToken: [String: VaultEntryRecord] = [:]
        for record in records { byToken[record.token] = record }
        // Sorted: concurrent writers take index locks in the same order.
        let candidates = byToken.keys.sorted()
        let stored =
            probeExisting
            ? try connection.query(
                "SELECT token FROM vault_entries WHERE token = ANY($1::text[])",
                [.textArray(candidates)], prepared: true
            ).map { try $0.string("token") }
            : []
        var alreadyStored = stored
        let storedSet = Set(stored)
        var fresh = candidates.filter { !storedSet.contains($0) }.map { byToken[$0]! }
        guard !fresh.isEmpty else { return stored }
        guard loading == .copy else {
            try insertSkippingStored(fresh, on: connection)
            return stored
        }
        // Two writers meet on the same new token (a returning user in both
        // batches) and the second COPY fails once the first commits; or,
        // without the probe, a token was stored already; or, on Citus, a
        // shard's reason was lost on the way. Ask again which tokens are
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
                let nowStored = Set(
                    try connection.query(
                        "SELECT token FROM vault_entries WHERE token = ANY($1::text[])", [.textArray(fresh.map(\.token))], prepared: true
                    ).map { try $0.string("token") })
                guard !nowStored.isEmpty, attempt < 3 else { break }
                alreadyStored += nowStored
                fresh.removeAll { nowStored.contains($0.token) }
                if fresh.isEmpty { return alreadyStored }
            }
        }
        try insertSkippingStored(fresh, on: connection)
        return alreadyStored
    }

    /// One statement for all the rows (on Citus, one per shard, not one per
    /// row-VALUES chunk: a multi-row INSERT is routed row by row there).
    private static func insertSkippingStored(_ entries: [VaultEntryRecord], on connection: isolated PostgresConnection) throws {
        try connection.execute(
            """
            INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext)
            SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::uuid[], $5::bytea[], $6::bytea[])
            ON CONFLICT (token) DO NOTHING
            """,
            [
                .textArray(entries.map(\.token)), .textArray(entries.map(\.field.rawValue)),
                .textArray(entries.map { String($0.tokenKeyVersion) }), .textArray(entries.map(\.dataKeyID)),
                .byteArrays(entries.map(\.nonce)), .byteArrays(entries.map(\.ciphertext)),
            ], prepared: true)
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
        /// A login row and the vault entries it needs (none for tokens already stored).
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
    public let alreadyStoredTokens: [String]
    /// New values not stored because `vault forget` erased them (their rows are written).
    public let suppressedEntries: Int

    public init(
        written: Set<[UInt8]>, loginRows: Int, quarantined: [String: Int], vaultEntriesOffered: Int, alreadyStoredTokens: [String] = [],
        suppressedEntries: Int = 0
    ) {
        self.written = written
        self.loginRows = loginRows
        self.quarantined = quarantined
        self.vaultEntriesOffered = vaultEntriesOffered
        self.alreadyStoredTokens = alreadyStoredTokens
        self.suppressedEntries = suppressedEntries
    }
}

/// Whether `vault forget` has suppressed any value, as a writer last saw it
/// (the database says so on every batch). Starts out assuming so.
public final class SuppressionHint: Sendable {
    private let state = Atomic<Bool>(true)

    public init() {}

    public var anySuppressed: Bool {
        get { state.load(ordering: .relaxed) }
        set { state.store(newValue, ordering: .relaxed) }
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

    /// Runs inside a transaction the caller opened. The batch is refused
    /// (`StaleKeysError`) when the database's active tokenization or
    /// recovery key, or the tokenization key a retokenization enforces, is
    /// newer than `keys`: key files rolled back, or not arrived yet.
    /// `suppressions` remembers whether any value is suppressed, so that
    /// batches do not send their tags while none is.
    public static func write(
        _ items: [BatchItem], keys: KeyVersions, suppressions: SuppressionHint = SuppressionHint(), loading: Loading = .copy,
        on connection: isolated PostgresConnection
    ) throws -> BatchResult {
        let days = Set(items.map(\.sentDay)).sorted()
        // The suppression tags of the values this batch would store.
        var tags: [[UInt8]] = []
        for item in items {
            if case .login(_, let entries) = item.payload { tags += entries.compactMap(\.suppressionTag) }
        }
        // One round trip: the writer and suppression locks (shared, to commit),
        // the versions the database requires, the partitions, the suppressed tags.
        let sentTags = suppressions.anySuppressed ? tags : []
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
        suppressions.anySuppressed = try begun.bool("any_suppressed")
        if suppressions.anySuppressed, sentTags.isEmpty, !tags.isEmpty {
            // `vault forget` suppressed a value since this writer last looked: ask now.
            suppressed = Set(
                try connection.query("SELECT ingest_suppressed($1::bytea[]) AS tags", [.byteArrays(tags)], prepared: true)[0]
                    .byteArrayValues("tags"))
        }
        // Optimistic claiming: find the messages already processed (redeliveries,
        // replays), then COPY receipts for the rest. If a concurrent consumer
        // claims one of them between the two, the COPY fails with a unique
        // violation and the caller retries the batch, which then sees it.
        // One probe per send day (nearly always one): `sent_day IN ($2,
        // <placeholder>)` prunes to that day's partition and the receipts kept
        // from before partitioning, even in a generic plan (`= ANY($2)` probed
        // every day kept: a cost that grew with retention).
        // Sorted, so concurrent writers take index locks in the same order.
        let claims = Set(items.map { Receipt(id: $0.receiptID, sentDay: $0.sentDay) }).sorted()
        var seen = Set<Receipt>()
        for day in days {
            for row in try connection.query(
                """
                SELECT receipt_id FROM ingest_receipts
                WHERE receipt_id = ANY($1::bytea[]) AND sent_day IN ($2::date, DATE '\(Receipt.legacyDay)')
                """, [.byteArrays(claims.filter { $0.sentDay == day }.map(\.id)), .text(day)], prepared: true)
            {
                seen.insert(Receipt(id: try row.bytes("receipt_id"), sentDay: day))
            }
        }
        var fresh = Set(claims.filter { !seen.contains($0) })
        let written = Set(fresh.map(\.id))
        if !fresh.isEmpty {
            var receipts = CopyTextBuilder(reservingCapacity: fresh.count * 52)
            for claim in claims where fresh.contains(claim) {
                receipts.append(bytes: claim.id)
                receipts.append(claim.sentDay)
                receipts.endRow()
            }
            try Table.receipts.load(receipts, loading, on: connection)
        }

        var logins = CopyTextBuilder(reservingCapacity: items.count * 160)
        var vault: [String: VaultEntryRecord] = [:]
        var quarantine = CopyTextBuilder()
        var quarantinedByReason: [String: Int] = [:]
        var versions: [Int32: String] = [:]
        var suppressedEntries = 0
        for item in items where fresh.remove(Receipt(id: item.receiptID, sentDay: item.sentDay)) != nil {
            switch item.payload {
            case .login(let row, let entries):
                for entry in entries where entry.suppressionTag.map(suppressed.contains) == true { suppressedEntries += 1 }
                logins.append(row.userID)
                logins.append(row.deviceType)
                logins.append(row.maskedIP)
                logins.append(row.maskedDeviceID)
                logins.append(row.locale)
                logins.append(Int(row.appVersion.code))
                logins.append(row.createDate)
                logins.endRow()
                versions[row.appVersion.code] = row.appVersion.canonical
                for entry in entries where entry.suppressionTag.map(suppressed.contains) != true { vault[entry.token] = entry }
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
        let storedTokens = try VaultEntries.insert(Array(vault.values), loading: loading, on: connection)
        if logins.rowCount > 0 { try Table.logins.load(logins, loading, on: connection) }
        if quarantine.rowCount > 0 { try Table.quarantine.load(quarantine, loading, on: connection) }
        if !versions.isEmpty {
            let codes = versions.keys.sorted()
            try connection.execute(
                """
                INSERT INTO app_versions (code, version)
                SELECT * FROM unnest($1::integer[], $2::text[]) ORDER BY 1
                ON CONFLICT (code) DO NOTHING
                """, [.textArray(codes.map { String($0) }), .textArray(codes.map { versions[$0] })], prepared: true)
        }
        return BatchResult(
            written: written, loginRows: logins.rowCount, quarantined: quarantinedByReason,
            vaultEntriesOffered: vault.count, alreadyStoredTokens: storedTokens, suppressedEntries: suppressedEntries)
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
