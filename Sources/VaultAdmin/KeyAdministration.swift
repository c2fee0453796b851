import Foundation
public import Postgres
import Pseudonymization
import Storage
public import VaultCrypto

/// What every key version still protects: the inventory behind `vault keys
/// status` and the refusal behind `vault keys retire`. Exact counts, from the
/// database, beside the state in the key files.
public struct KeyInventory: Sendable {
    public struct Tokenization: Sendable {
        public let version: Int
        /// "active", "decrypt-only", or "missing" (in the data, not in the key file).
        public let state: String
        public let createdAt: String?
        public let vaultEntries: Int
        public let erasedEntries: Int
        public let ipRows: Int
        public let deviceRows: Int

        public var dependents: Int { vaultEntries + erasedEntries + ipRows + deviceRows }
    }

    public struct Recovery: Sendable {
        public let version: Int
        public let state: String
        public let createdAt: String?
        public let privateKeyPresent: Bool
        public let dataKeys: Int
        public let dataKeysInUse: Int
        public let vaultEntries: Int
        public let quarantined: Int
    }

    public let tokenization: [Tokenization]
    public let recovery: [Recovery]
    public let dataKeys: Int
    public let dataKeysInUse: Int
    /// Vault entries whose data key row is missing: unrecoverable. Always 0
    /// unless something outside these tools deleted data keys.
    public let entriesWithoutDataKey: Int
}

public enum KeyAdministration {
    // MARK: Inventory

    public static func inventory(store: KeyStore, connection: PostgresConnection) async throws -> KeyInventory {
        let keyring = try store.tokenizationKeyring()
        let publicKeys = try store.recoveryPublicKeys()
        let privateVersions = Set((try? store.recoveryPrivateKeys().versions) ?? [])

        var entries: [Int: (live: Int, erased: Int)] = [:]
        for row in try await connection.query("""
            SELECT token_key_version AS v, count(*) FILTER (WHERE erased_at IS NULL) AS live,
                   count(*) FILTER (WHERE erased_at IS NOT NULL) AS erased
            FROM vault_entries GROUP BY 1
            """) {
            entries[try row.int("v")] = (try row.int("live"), try row.int("erased"))
        }
        // One pass over user_logins for both columns; the version is in the token ("ip_t3_…").
        var ipRows: [Int: Int] = [:]
        var deviceRows: [Int: Int] = [:]
        for row in try await connection.query("""
            SELECT split_part(masked_ip, '_', 2) AS ip, split_part(masked_device_id, '_', 2) AS device, count(*) AS n
            FROM user_logins GROUP BY GROUPING SETS ((1), (2))
            """) {
            if let version = row["ip"].flatMap(tokenVersion) { ipRows[version, default: 0] += try row.int("n") }
            if let version = row["device"].flatMap(tokenVersion) { deviceRows[version, default: 0] += try row.int("n") }
        }
        let tokenVersions = Set(keyring.keys.map(\.version)).union(entries.keys).union(ipRows.keys).union(deviceRows.keys)
        let tokenization = tokenVersions.sorted().map { version in
            let key = keyring.key(version: version)
            return KeyInventory.Tokenization(
                version: version, state: key?.state.rawValue ?? "missing", createdAt: key?.createdAt,
                vaultEntries: entries[version]?.live ?? 0, erasedEntries: entries[version]?.erased ?? 0,
                ipRows: ipRows[version] ?? 0, deviceRows: deviceRows[version] ?? 0)
        }

        var keysByVersion: [Int: (all: Int, inUse: Int)] = [:]
        for row in try await connection.query("""
            SELECT recovery_key_version AS v, count(*) AS n, count(*) FILTER (WHERE retired_at IS NULL) AS in_use
            FROM data_keys GROUP BY 1
            """) {
            keysByVersion[try row.int("v")] = (try row.int("n"), try row.int("in_use"))
        }
        var sealedByVersion: [Int: Int] = [:]
        for row in try await connection.query("""
            SELECT d.recovery_key_version AS v, count(*) AS n FROM vault_entries e JOIN data_keys d ON d.id = e.data_key_id
            WHERE e.erased_at IS NULL GROUP BY 1
            """) {
            sealedByVersion[try row.int("v")] = try row.int("n")
        }
        var quarantinedByVersion: [Int: Int] = [:]
        for row in try await connection.query("""
            SELECT d.recovery_key_version AS v, count(*) AS n FROM quarantine q JOIN data_keys d ON d.id = q.data_key_id GROUP BY 1
            """) {
            quarantinedByVersion[try row.int("v")] = try row.int("n")
        }
        let recoveryVersions = Set(publicKeys.keys.map(\.version)).union(keysByVersion.keys)
        let recovery = recoveryVersions.sorted().map { version in
            let key = publicKeys.key(version: version)
            return KeyInventory.Recovery(
                version: version, state: key?.state.rawValue ?? "missing", createdAt: key?.createdAt,
                privateKeyPresent: privateVersions.contains(version), dataKeys: keysByVersion[version]?.all ?? 0,
                dataKeysInUse: keysByVersion[version]?.inUse ?? 0, vaultEntries: sealedByVersion[version] ?? 0,
                quarantined: quarantinedByVersion[version] ?? 0)
        }
        let orphans = try await connection.query("""
            SELECT count(*) AS n FROM vault_entries e WHERE NOT EXISTS (SELECT 1 FROM data_keys d WHERE d.id = e.data_key_id)
            """)[0].int("n")
        return KeyInventory(tokenization: tokenization, recovery: recovery,
                            dataKeys: keysByVersion.values.reduce(0) { $0 + $1.all },
                            dataKeysInUse: keysByVersion.values.reduce(0) { $0 + $1.inUse }, entriesWithoutDataKey: orphans)
    }

    private static func tokenVersion(_ tag: String) -> Int? {
        guard tag.first == "t" else { return nil }
        return Int(tag.dropFirst())
    }

    // MARK: Rotation

    /// Adds tokenization key v(n+1) as the active one; v(n) becomes decrypt-only.
    public static func rotateTokenization(store: KeyStore, reason: String, actor: AuditActor, connection: PostgresConnection) async throws -> Int {
        let rotated = try store.tokenizationKeyring().rotated(now: Date())
        try store.save(rotated)
        try await connection.transaction { connection in
            try KeyRegistry.record(.tokenization, versions: rotated.keys.map { ($0.version, $0.state) }, on: connection)
            try AuditLog.append([AuditRecord(action: "keys.rotate", subject: "tokenization v\(rotated.active.version)",
                                             reason: reason, outcome: "created")], actor: actor, on: connection)
        }
        return rotated.active.version
    }

    /// Adds recovery keypair v(n+1): the private key sealed under the same
    /// passphrase (checked by opening the current key first), the public key active.
    public static func rotateRecovery(
        store: KeyStore, passphrase: SecureBytes, parameters: Scrypt.Parameters, reason: String, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> Int {
        var privateKeys = try store.recoveryPrivateKeys()
        let publicKeys = try store.recoveryPublicKeys()
        // The passphrase must open the current key: one passphrase for the whole file.
        _ = try privateKeys.unlock(version: publicKeys.active.version, passphrase: passphrase, path: store.recoveryPrivatePath)
        let publicMax = publicKeys.keys.map(\.version).max() ?? 0
        let newKey: X25519.PrivateKey
        let version: Int
        let createdAt: String
        if let pending = privateKeys.keys.first(where: { $0.version > publicMax }) {
            // A rotation interrupted after the private file was written: finish it.
            version = pending.version
            createdAt = pending.created_at
            newKey = try privateKeys.unlock(version: version, passphrase: passphrase, path: store.recoveryPrivatePath)
        } else {
            version = publicMax + 1
            newKey = try X25519.PrivateKey()
            createdAt = ISO8601DateFormatter().string(from: Date())
            privateKeys = privateKeys.adding(try RecoveryPrivateKeys.seal(
                newKey, version: version, createdAt: createdAt, passphrase: passphrase, parameters: parameters))
            // The private half first: a public key must never exist without its way back.
            try store.save(privateKeys)
        }
        let rotated = try publicKeys.adding(newKey.publicKey, version: version, createdAt: createdAt)
        try store.save(rotated)
        try await connection.transaction { connection in
            try KeyRegistry.record(.recovery, versions: rotated.keys.map { ($0.version, $0.state) }, on: connection)
            try AuditLog.append([AuditRecord(action: "keys.rotate", subject: "recovery v\(version)", reason: reason, outcome: "created")],
                                actor: actor, on: connection)
        }
        return version
    }

    // MARK: Retirement

    public static func retireTokenization(
        version: Int, store: KeyStore, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws {
        let keyring = try store.tokenizationKeyring()
        guard keyring.key(version: version) != nil else { throw KeyFileError(.unknownVersion, "there is no tokenization key v\(version) in \(store.tokenizationPath)") }
        guard keyring.active.version != version else {
            throw KeyFileError(.refused, "tokenization key v\(version) is the active one; rotate first (`vault keys rotate --tokenization`)")
        }
        let inventory = try await inventory(store: store, connection: connection)
        if let entry = inventory.tokenization.first(where: { $0.version == version }), entry.dependents > 0 {
            throw KeyFileError(.refused, """
                tokenization key v\(version) still protects \(entry.vaultEntries) vault entries, \(entry.erasedEntries) erased entries, \
                \(entry.ipRows) ip and \(entry.deviceRows) device_id rows of user_logins; run `vault retokenize` first
                """)
        }
        try store.save(try keyring.removing(version: version))
        try await connection.transaction { connection in
            try KeyRegistry.record(.tokenization, versions: [], retired: [version], on: connection)
            try AuditLog.append([AuditRecord(action: "keys.retire", subject: "tokenization v\(version)", reason: reason, outcome: "retired")],
                                actor: actor, on: connection)
        }
    }

    /// Removes recovery key `version`, private key material included.
    public static func retireRecovery(
        version: Int, store: KeyStore, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws {
        let publicKeys = try store.recoveryPublicKeys()
        guard publicKeys.key(version: version) != nil else { throw KeyFileError(.unknownVersion, "there is no recovery key v\(version) in \(store.recoveryPublicPath)") }
        guard publicKeys.active.version != version else {
            throw KeyFileError(.refused, "recovery key v\(version) is the active one; rotate first (`vault keys rotate --recovery`)")
        }
        let inventory = try await inventory(store: store, connection: connection)
        if let entry = inventory.recovery.first(where: { $0.version == version }), entry.dataKeys > 0 {
            throw KeyFileError(.refused, """
                recovery key v\(version) still wraps \(entry.dataKeys) data keys (protecting \(entry.vaultEntries) vault entries \
                and \(entry.quarantined) quarantined messages); run `vault rewrap` first
                """)
        }
        if store.hasRecoveryPrivateKeys {
            try store.save(try store.recoveryPrivateKeys().removing(version: version))
        }
        try store.save(try publicKeys.removing(version: version))
        try await connection.transaction { connection in
            try KeyRegistry.record(.recovery, versions: [], retired: [version], on: connection)
            try AuditLog.append([AuditRecord(action: "keys.retire", subject: "recovery v\(version)", reason: reason, outcome: "retired")],
                                actor: actor, on: connection)
        }
    }
}
