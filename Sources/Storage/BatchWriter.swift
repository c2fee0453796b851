public import Postgres
public import Pseudonymization
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

/// A row for `vault_entries`: a sealed original, or (when retokenizing an
/// erased entry) a tombstone with no nonce or ciphertext.
public struct VaultEntryRecord: Sendable {
    public let token: String
    public let field: PIIField
    public let tokenKeyVersion: Int
    public let dataKeyID: String
    public let nonce: [UInt8]?
    public let ciphertext: [UInt8]?
    public let erasedAt: String?
    public let erasedBy: String?

    public init(token: String, field: PIIField, tokenKeyVersion: Int, dataKeyID: String, nonce: [UInt8], ciphertext: [UInt8]) {
        self.token = token
        self.field = field
        self.tokenKeyVersion = tokenKeyVersion
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.ciphertext = ciphertext
        erasedAt = nil
        erasedBy = nil
    }

    /// An erased entry: the token exists, its original is gone.
    public init(tombstone token: String, field: PIIField, tokenKeyVersion: Int, dataKeyID: String, erasedAt: String?, erasedBy: String?) {
        self.token = token
        self.field = field
        self.tokenKeyVersion = tokenKeyVersion
        self.dataKeyID = dataKeyID
        nonce = nil
        ciphertext = nil
        self.erasedAt = erasedAt ?? "now"
        self.erasedBy = erasedBy
    }
}

/// Inserting vault entries: probe which tokens are stored, COPY the rest; a
/// collision with a concurrent writer falls back, under a savepoint, to an
/// idempotent insert for those entries only.
public enum VaultEntries {
    /// Inserts the entries whose tokens are not stored yet. Returns the tokens
    /// that were already stored, found by a probe first; with
    /// `probeExisting: false` (for callers whose tokens are nearly always new)
    /// there is no probe, an existing token is skipped by the fallback, and the
    /// result is empty.
    @discardableResult
    public static func insert(
        _ records: [VaultEntryRecord], probeExisting: Bool = true, on connection: isolated PostgresConnection
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
        let storedSet = Set(stored)
        let fresh = candidates.filter { !storedSet.contains($0) }.map { byToken[$0]! }
        guard !fresh.isEmpty else { return stored }
        var copy = CopyTextBuilder(reservingCapacity: fresh.count * 200)
        for entry in fresh {
            copy.append(entry.token)
            copy.append(entry.field.rawValue)
            copy.append(entry.tokenKeyVersion)
            copy.append(entry.dataKeyID)
            if let nonce = entry.nonce { copy.append(bytes: nonce) } else { copy.append(nil as String?) }
            if let ciphertext = entry.ciphertext { copy.append(bytes: ciphertext) } else { copy.append(nil as String?) }
            copy.append(entry.erasedAt)
            copy.append(entry.erasedBy)
            copy.endRow()
        }
        try connection.execute("SAVEPOINT vault_copy")
        do {
            try connection.copy(
                """
                COPY vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext, erased_at, erased_by) FROM STDIN
                """, data: copy.bytes)
            try connection.execute("RELEASE SAVEPOINT vault_copy")
        } catch let error as PostgresError where error.sqlState == "23505" {
            // Two writers met on the same new token (a returning user in both
            // batches), or, without the probe, the token was already stored.
            try connection.execute("ROLLBACK TO SAVEPOINT vault_copy")
            try connection.execute(
                """
                INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext, erased_at, erased_by)
                SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::uuid[], $5::bytea[], $6::bytea[], $7::timestamptz[], $8::text[])
                ON CONFLICT (token) DO NOTHING
                """,
                [
                    .textArray(fresh.map(\.token)), .textArray(fresh.map(\.field.rawValue)),
                    .textArray(fresh.map { String($0.tokenKeyVersion) }), .textArray(fresh.map(\.dataKeyID)),
                    .textArray(fresh.map { $0.nonce.map { "\\x" + Hex.encode($0) } }),
                    .textArray(fresh.map { $0.ciphertext.map { "\\x" + Hex.encode($0) } }),
                    .textArray(fresh.map(\.erasedAt)), .textArray(fresh.map(\.erasedBy)),
                ], prepared: true)
        }
        return stored
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

    public init(
        source: String, messageID: String, rejection: Rejection, bodyByteCount: Int, dataKeyID: String,
        nonce: [UInt8], sealedBody: [UInt8]
    ) {
        self.source = source
        self.messageID = messageID
        self.rejection = rejection
        self.bodyByteCount = bodyByteCount
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.sealedBody = sealedBody
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

    public init(
        written: Set<[UInt8]>, loginRows: Int, quarantined: [String: Int], vaultEntriesOffered: Int, alreadyStoredTokens: [String] = []
    ) {
        self.written = written
        self.loginRows = loginRows
        self.quarantined = quarantined
        self.vaultEntriesOffered = vaultEntriesOffered
        self.alreadyStoredTokens = alreadyStoredTokens
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
    /// Runs inside a transaction the caller opened. `tokenKeyVersion` is the
    /// version of the tokens in `items`; the batch is refused (`StaleKeysError`)
    /// when a retokenization to a newer version is under way.
    public static func write(_ items: [BatchItem], tokenKeyVersion: Int, on connection: isolated PostgresConnection) throws -> BatchResult {
        try connection.execute(
            "SELECT pg_advisory_xact_lock_shared($1)",
            [.int(KeyRegistry.writerLock(tokenizationVersion: tokenKeyVersion))], prepared: true)
        if let registered = try KeyRegistry.enforcedTokenizationVersion(on: connection), registered > tokenKeyVersion {
            throw StaleKeysError(registered: registered, local: tokenKeyVersion)
        }
        let days = Set(items.map(\.sentDay)).sorted()
        try connection.execute("SELECT ingest_prepare_partitions($1::date[])", [.textArray(days)], prepared: true)
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
            try connection.copy("COPY ingest_receipts (receipt_id, sent_day) FROM STDIN", data: receipts.bytes)
        }

        var logins = CopyTextBuilder(reservingCapacity: items.count * 160)
        var vault: [String: VaultEntryRecord] = [:]
        var quarantine = CopyTextBuilder()
        var quarantinedByReason: [String: Int] = [:]
        var versions: [Int32: String] = [:]
        for item in items where fresh.remove(Receipt(id: item.receiptID, sentDay: item.sentDay)) != nil {
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
                for entry in entries { vault[entry.token] = entry }
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
                quarantine.endRow()
                quarantinedByReason[row.rejection.reason.rawValue, default: 0] += 1
            }
        }
        let storedTokens = try VaultEntries.insert(Array(vault.values), on: connection)
        if logins.rowCount > 0 {
            try connection.copy(
                """
                COPY user_logins (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date) FROM STDIN
                """, data: logins.bytes)
        }
        if quarantine.rowCount > 0 {
            try connection.copy(
                """
                COPY quarantine (receipt_id, source, message_id, reason, field, detail, body_bytes, data_key_id, nonce, sealed_body,
                                 sent_day) FROM STDIN
                """, data: quarantine.bytes)
        }
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
            vaultEntriesOffered: vault.count, alreadyStoredTokens: storedTokens)
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
