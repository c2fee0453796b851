import AWS
public import Foundation
public import KeyCustody
public import Postgres
import Pseudonymization
public import Storage
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
        /// "local", "aws-kms", or nil when not in the key file.
        public let backend: String?
        /// The KMS key of an aws-kms version.
        public let kmsKeyID: String?
        public let vaultEntries: Int
        public let erasedEntries: Int
        public let ipRows: Int
        public let deviceRows: Int
        /// Whether the key file's version is the one registered in the database.
        public let registration: KeyInventory.Registration

        public var dependents: Int { vaultEntries + erasedEntries + ipRows + deviceRows }
    }

    /// A key file's version against the database's registry.
    public enum Registration: String, Sendable {
        case registered
        /// The database has no fingerprint for it: `vault keys register`.
        case unregistered
        /// The file holds another key than the one registered: swapped.
        case mismatch
        /// Not in the key file (only in the data or the registry).
        case notInFile = "not-in-file"
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
        public let registration: KeyInventory.Registration
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

    public static func inventory(store: KeyStore, kms: LazyKMSClient, connection: PostgresConnection) async throws -> KeyInventory {
        let keyring = try store.tokenizationKeyring()
        let publicKeys = try store.recoveryPublicKeys()
        let privateVersions = Set((try? store.recoveryPrivateKeys().versions) ?? [])
        let registered = try await KeyRegistry.registered(on: connection)
        func registration(_ key: KeyRegistry.FileKey?) -> KeyInventory.Registration {
            guard let key else { return .notInFile }
            do {
                try KeyRegistry.verify([key], against: registered)
                return .registered
            } catch let error as KeyRegistryError {
                return error.code == .mismatch ? .mismatch : .unregistered
            } catch {
                return .unregistered
            }
        }
        let fileKeys = try await KeyRegistry.fileKeys(
            tokenization: keyring, recovery: publicKeys, store: store, kms: try kms.client(for: keyring))
        func fileKey(_ kind: KeyRegistry.Kind, _ version: Int) -> KeyRegistry.FileKey? {
            fileKeys.first { $0.kind == kind && $0.version == version }
        }

        var entries: [Int: (live: Int, erased: Int)] = [:]
        for row in try await connection.query(
            """
            SELECT token_key_version AS v, count(*) FILTER (WHERE erased_at IS NULL) AS live,
                   count(*) FILTER (WHERE erased_at IS NOT NULL) AS erased
            FROM vault_entries GROUP BY 1
            """)
        {
            entries[try row.int("v")] = (try row.int("live"), try row.int("erased"))
        }
        // One pass over user_logins for both columns, by pairs of versions (a
        // few; Citus distributes no GROUPING SETS); the version is in the token ("ip_t3_…").
        var ipRows: [Int: Int] = [:]
        var deviceRows: [Int: Int] = [:]
        for row in try await connection.query(
            """
            SELECT split_part(masked_ip, '_', 2) AS ip, split_part(masked_device_id, '_', 2) AS device, count(*) AS n
            FROM user_logins GROUP BY 1, 2
            """)
        {
            if let version = row["ip"].flatMap(tokenVersion) { ipRows[version, default: 0] += try row.int("n") }
            if let version = row["device"].flatMap(tokenVersion) { deviceRows[version, default: 0] += try row.int("n") }
        }
        let tokenVersions = Set(keyring.keys.map(\.version)).union(entries.keys).union(ipRows.keys).union(deviceRows.keys)
        let tokenization = tokenVersions.sorted().map { version in
            let key = keyring.key(version: version)
            return KeyInventory.Tokenization(
                version: version, state: key?.state.rawValue ?? "missing", createdAt: key?.createdAt,
                backend: key?.material.backend, kmsKeyID: key?.kmsKeyID, vaultEntries: entries[version]?.live ?? 0,
                erasedEntries: entries[version]?.erased ?? 0,
                ipRows: ipRows[version] ?? 0, deviceRows: deviceRows[version] ?? 0,
                registration: registration(fileKey(.tokenization, version)))
        }

        var keysByVersion: [Int: (all: Int, inUse: Int)] = [:]
        for row in try await connection.query(
            """
            SELECT recovery_key_version AS v, count(*) AS n, count(*) FILTER (WHERE retired_at IS NULL) AS in_use
            FROM data_keys GROUP BY 1
            """)
        {
            keysByVersion[try row.int("v")] = (try row.int("n"), try row.int("in_use"))
        }
        var sealedByVersion: [Int: Int] = [:]
        for row in try await connection.query(
            """
            SELECT d.recovery_key_version AS v, count(*) AS n FROM vault_entries e JOIN data_keys d ON d.id = e.data_key_id
            WHERE e.erased_at IS NULL GROUP BY 1
            """)
        {
            sealedByVersion[try row.int("v")] = try row.int("n")
        }
        var quarantinedByVersion: [Int: Int] = [:]
        for row in try await connection.query(
            """
            SELECT d.recovery_key_version AS v, count(*) AS n FROM quarantine q JOIN data_keys d ON d.id = q.data_key_id GROUP BY 1
            """)
        {
            quarantinedByVersion[try row.int("v")] = try row.int("n")
        }
        let recoveryVersions = Set(publicKeys.keys.map(\.version)).union(keysByVersion.keys)
        let recovery = recoveryVersions.sorted().map { version in
            let key = publicKeys.key(version: version)
            return KeyInventory.Recovery(
                version: version, state: key?.state.rawValue ?? "missing", createdAt: key?.createdAt,
                privateKeyPresent: privateVersions.contains(version), dataKeys: keysByVersion[version]?.all ?? 0,
                dataKeysInUse: keysByVersion[version]?.inUse ?? 0, vaultEntries: sealedByVersion[version] ?? 0,
                quarantined: quarantinedByVersion[version] ?? 0, registration: registration(fileKey(.recovery, version)))
        }
        let orphans = try await connection.query(
            """
            SELECT count(*) AS n FROM vault_entries e WHERE NOT EXISTS (SELECT 1 FROM data_keys d WHERE d.id = e.data_key_id)
            """)[0].int("n")
        return KeyInventory(
            tokenization: tokenization, recovery: recovery,
            dataKeys: keysByVersion.values.reduce(0) { $0 + $1.all },
            dataKeysInUse: keysByVersion.values.reduce(0) { $0 + $1.inUse }, entriesWithoutDataKey: orphans)
    }

    private static func tokenVersion(_ tag: String) -> Int? {
        guard tag.first == "t" else { return nil }
        return Int(tag.dropFirst())
    }

    // MARK: Registration

    /// Registers the fingerprint of every version in the key files that the
    /// database does not know yet (`vault keys init` and `rotate` do it for the
    /// versions they create; this is for key sets made offline). A version
    /// registered with another key is refused. Returns what was registered.
    public static func register(
        store: KeyStore, kms: LazyKMSClient, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws -> [String] {
        let tokenization = try store.tokenizationKeyring()
        let keys = try await KeyRegistry.fileKeys(
            tokenization: tokenization, recovery: try store.recoveryPublicKeys(), store: store, kms: try kms.client(for: tokenization))
        let registered = try await KeyRegistry.registered(on: connection)
        let new = keys.filter { key in
            !registered.contains { $0.kind == key.kind && $0.version == key.version && $0.fingerprint == key.fingerprint }
        }
        guard !new.isEmpty else { return [] }
        let subject = new.map { "\($0.kind.rawValue) v\($0.version)" }.joined(separator: ", ")
        return try await connection.transaction { connection in
            let run = try RotationRun.begin(
                action: "keys.register", subject: subject, reason: reason, outcome: "registered", actor: actor, on: connection)
            return try KeyRegistry.register(keys, run: run, on: connection).map { "\($0.kind.rawValue) v\($0.version)" }
        }
    }

    /// Refuses key files whose versions are not the ones registered in the
    /// database (a key file writer swapped one). Every job that writes data
    /// under a key checks first.
    public static func verifyRegistered(
        tokenization: TokenizationKeyring?, recovery: RecoveryPublicKeys?, store: KeyStore, kms: LazyKMSClient? = nil,
        connection: PostgresConnection
    ) async throws {
        try KeyRegistry.verify(
            try await KeyRegistry.fileKeys(
                tokenization: tokenization, recovery: recovery, store: store, kms: try tokenization.flatMap { try kms?.client(for: $0) }),
            against: try await KeyRegistry.registered(on: connection))
    }

    /// Refuses an active recovery public key that is not the public half of a
    /// private key in recovery-private.json: data wrapped to it could never be
    /// opened again (and whoever added it may hold its private half).
    public static func requirePrivateHalf(of key: RecoveryPublicKey, keyring: RecoveryKeyring, store: KeyStore) async throws {
        let privateKey: X25519.PrivateKey
        do {
            privateKey = try await keyring.privateKey(version: key.version)
        } catch let error as KeyFileError where error.code == .unknownVersion {
            throw KeyFileError(
                .refused,
                """
                recovery key v\(key.version) in \(store.recoveryPublicPath) has no private key in \(store.recoveryPrivatePath): \
                it was not made by `vault keys rotate --recovery`; nothing will be wrapped to it. Restore the genuine public key file
                """)
        }
        guard privateKey.publicKey == key.publicKey else {
            throw KeyFileError(
                .refused,
                """
                recovery key v\(key.version) in \(store.recoveryPublicPath) is not the public half of private key v\(key.version) \
                in \(store.recoveryPrivatePath): the public key file was replaced; nothing will be wrapped to it
                """)
        }
    }

    // MARK: Rotation

    /// Adds tokenization key v(n+1) as the active one; v(n) becomes decrypt-only.
    /// With `kmsKeyID`, the new version is that AWS KMS `HMAC_256` key (checked
    /// with `DescribeKey`, recorded by its ARN): the key file holds no secret for it.
    public static func rotateTokenization(
        store: KeyStore, kmsKeyID: String? = nil, kms: LazyKMSClient, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws -> Int {
        let current = try store.tokenizationKeyring()
        try await verifyRegistered(tokenization: current, recovery: nil, store: store, kms: kms, connection: connection)
        var material: MACKeyMaterial? = nil
        if let kmsKeyID {
            let description = try await KMSTokenizationKeyCheck.requireUsable(kmsKeyID, kms: try kms.client())
            material = .awsKMS(keyID: description.arn)
        }
        let rotated = try current.rotated(now: Date(), material: material)
        // The fingerprint first: a KMS key that does not answer leaves the files as they were.
        let fileKeys = try await KeyRegistry.fileKeys(tokenization: rotated, recovery: nil, store: store, kms: try kms.client(for: rotated))
        try store.save(rotated)
        try await registerRotation(
            fileKeys, subject: "tokenization v\(rotated.active.version) (\(rotated.active.material.backend))", reason: reason, actor: actor,
            connection: connection)
        return rotated.active.version
    }

    /// Records a rotation's key versions in an audited `keys.rotate` run.
    private static func registerRotation(
        _ fileKeys: [KeyRegistry.FileKey], subject: String, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws {
        try await connection.transaction { connection in
            let run = try RotationRun.begin(
                action: "keys.rotate", subject: subject, reason: reason, outcome: "created", actor: actor, on: connection)
            try KeyRegistry.register(fileKeys, run: run, on: connection)
        }
    }

    /// Adds the suppression key to a key set made before it existed (it
    /// never rotates: a new one would forget every erasure recorded under
    /// it). With `kmsKeyID`, it is that AWS KMS `HMAC_256` key.
    public static func addSuppressionKey(
        store: KeyStore, kmsKeyID: String?, kms: LazyKMSClient, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws -> String {
        let current = try store.tokenizationKeyring()
        try await verifyRegistered(tokenization: current, recovery: nil, store: store, kms: kms, connection: connection)
        var material: MACKeyMaterial? = nil
        if let kmsKeyID {
            material = .awsKMS(keyID: try await KMSTokenizationKeyCheck.requireUsable(kmsKeyID, kms: try kms.client()).arn)
        }
        let added = try current.addingSuppressionKey(now: Date(), material: material)
        let fileKeys = try await KeyRegistry.fileKeys(tokenization: added, recovery: nil, store: store, kms: try kms.client(for: added))
        try store.save(added)
        let backend = added.suppression!.material.backend
        try await registerRotation(fileKeys, subject: "suppression v1 (\(backend))", reason: reason, actor: actor, connection: connection)
        return backend
    }

    /// How a new recovery private key is sealed.
    public enum RecoverySealing {
        case passphrase(SecureBytes, Scrypt.Parameters)
        /// A symmetric AWS KMS key (`Encrypt` with an encryption context).
        case awsKMS(keyID: String, LazyKMSClient)

        func seal(_ privateKey: X25519.PrivateKey, version: Int, createdAt: String) async throws -> RecoveryPrivateKeys.Sealed {
            switch self {
            case .passphrase(let passphrase, let parameters):
                return try RecoveryPrivateKeys.seal(
                    privateKey, version: version, createdAt: createdAt, passphrase: passphrase, parameters: parameters)
            case .awsKMS(let keyID, let kms):
                return try await KMSRecoverySealing.seal(
                    privateKey, version: version, createdAt: createdAt, keyID: keyID, kms: try kms.client())
            }
        }
    }

    /// Creates a fresh key set in `store`: tokenization v1 (a new local key, or
    /// the KMS key `tokenizationKMSKeyID`), recovery keypair v1 sealed as
    /// `sealing` says, audit key v1. The KMS calls come first: a key that does
    /// not work leaves no files behind.
    public static func createKeySet(
        store: KeyStore, sealing: RecoverySealing, tokenizationKMSKeyID: String?, suppressionKMSKeyID: String? = nil, kms: LazyKMSClient,
        unauthenticatedAuditRows: UnauthenticatedAuditRows = .allAuthenticated, now: Date = Date()
    ) async throws {
        func kmsMaterial(_ keyID: String?) async throws -> MACKeyMaterial? {
            guard let keyID else { return nil }
            return .awsKMS(keyID: try await KMSTokenizationKeyCheck.requireUsable(keyID, kms: try kms.client()).arn)
        }
        let tokenization = try TokenizationKeyring.generate(
            now: now, material: try await kmsMaterial(tokenizationKMSKeyID), suppression: try await kmsMaterial(suppressionKMSKeyID))
        let recovery = try X25519.PrivateKey()
        let sealed = try await sealing.seal(recovery, version: 1, createdAt: ISO8601DateFormatter().string(from: now))
        try store.create(
            tokenization: tokenization, recoveryPrivateKey: sealed, recoveryPublicKey: recovery.publicKey,
            unauthenticatedAuditRows: unauthenticatedAuditRows, now: now)
    }

    /// Adds recovery keypair v(n+1), the private key sealed as `sealing` says,
    /// the public key active. The current public key must be registered and be
    /// the public half of the current private key (opened with `keyring`: the
    /// passphrase, or KMS).
    public static func rotateRecovery(
        store: KeyStore, keyring: RecoveryKeyring, sealing: RecoverySealing, reason: String, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> Int {
        var privateKeys = try store.recoveryPrivateKeys()
        let publicKeys = try store.recoveryPublicKeys()
        let publicMax = publicKeys.keys.map(\.version).max() ?? 0
        try await verifyRegistered(tokenization: nil, recovery: publicKeys, store: store, connection: connection)
        try await requirePrivateHalf(of: publicKeys.active, keyring: keyring, store: store)
        let newKey: X25519.PrivateKey
        let version: Int
        let createdAt: String
        if let pending = privateKeys.keys.first(where: { $0.version > publicMax }) {
            // A rotation interrupted after the private file was written: finish it.
            version = pending.version
            createdAt = pending.createdAt
            newKey = try await keyring.privateKey(version: version)
        } else {
            version = publicMax + 1
            newKey = try X25519.PrivateKey()
            createdAt = ISO8601DateFormatter().string(from: Date())
            privateKeys = privateKeys.adding(try await sealing.seal(newKey, version: version, createdAt: createdAt))
            // The private half first: a public key must never exist without its way back.
            try store.save(privateKeys)
        }
        let rotated = try publicKeys.adding(newKey.publicKey, version: version, createdAt: createdAt)
        try store.save(rotated)
        let fileKeys = try await KeyRegistry.fileKeys(tokenization: nil, recovery: rotated, store: store, kms: nil)
        try await registerRotation(fileKeys, subject: "recovery v\(version)", reason: reason, actor: actor, connection: connection)
        return version
    }

    /// Adds audit key v(n+1) as the one new rows are authenticated with (or
    /// creates audit-key.json for a key set made before it existed). Older
    /// versions stay: `vault audit verify` needs them for older rows.
    public static func rotateAudit(store: KeyStore, reason: String, connection: PostgresConnection) async throws -> Int {
        let rotated =
            store.hasAuditKeys
            ? try store.auditKeyring().rotated(now: Date())
            : try AuditKeyring.generate(now: Date(), unauthenticatedRows: try await AuditLog.unauthenticatedRows(on: connection))
        try store.save(rotated)
        let actor = try AuditActor.current(store: store)
        try await AuditLog.appendCommitted(
            [
                AuditRecord(
                    action: "keys.rotate", subject: "audit v\(rotated.active.version)", reason: reason,
                    outcome: "created")
            ], actor: actor, on: connection)
        return rotated.active.version
    }

    // MARK: Retirement

    /// With `dryRun`, every check runs and nothing is removed.
    public static func retireTokenization(
        version: Int, store: KeyStore, kms: LazyKMSClient, dryRun: Bool = false, reason: String, actor: AuditActor,
        connection: PostgresConnection
    ) async throws {
        let keyring = try store.tokenizationKeyring()
        guard keyring.key(version: version) != nil else {
            throw KeyFileError(.unknownVersion, "there is no tokenization key v\(version) in \(store.tokenizationPath)")
        }
        guard keyring.active.version != version else {
            throw KeyFileError(
                .refused, "tokenization key v\(version) is the active one; rotate first (`vault keys rotate --tokenization`)")
        }
        let inventory = try await inventory(store: store, kms: kms, connection: connection)
        if let entry = inventory.tokenization.first(where: { $0.version == version }), entry.dependents > 0 {
            throw KeyFileError(
                .refused,
                """
                tokenization key v\(version) still protects \(entry.vaultEntries) vault entries, \(entry.erasedEntries) erased entries, \
                \(entry.ipRows) ip and \(entry.deviceRows) device_id rows of user_logins; run `vault retokenize` first
                """)
        }
        guard !dryRun else { return }
        try await recordRetirement(.tokenization, version: version, reason: reason, actor: actor, connection: connection)
        try store.save(try keyring.removing(version: version))
    }

    /// Retires a version in the registry, in an audited `keys.retire` run (the
    /// database refuses while anything still depends on it).
    private static func recordRetirement(
        _ kind: KeyRegistry.Kind, version: Int, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws {
        try await connection.transaction { connection in
            let run = try RotationRun.begin(
                action: "keys.retire", subject: "\(kind.rawValue) v\(version)", reason: reason, outcome: "retired", actor: actor,
                on: connection)
            try KeyRegistry.retire(kind, version: version, run: run, on: connection)
        }
    }

    /// Removes recovery key `version`, private key material included, only when
    /// every data key stays openable without it: each one is unwrapped with the
    /// private key of the version that wraps it (a public key added by someone
    /// else, and data keys rewrapped to it, would otherwise lose everything).
    public static func retireRecovery(
        version: Int, store: KeyStore, keyring: RecoveryKeyring, kms: LazyKMSClient, dryRun: Bool = false, reason: String,
        actor: AuditActor, connection: PostgresConnection
    ) async throws {
        let publicKeys = try store.recoveryPublicKeys()
        guard publicKeys.key(version: version) != nil else {
            throw KeyFileError(.unknownVersion, "there is no recovery key v\(version) in \(store.recoveryPublicPath)")
        }
        guard publicKeys.active.version != version else {
            throw KeyFileError(.refused, "recovery key v\(version) is the active one; rotate first (`vault keys rotate --recovery`)")
        }
        let inventory = try await inventory(store: store, kms: kms, connection: connection)
        if let entry = inventory.recovery.first(where: { $0.version == version }), entry.dataKeys > 0 {
            throw KeyFileError(
                .refused,
                """
                recovery key v\(version) still wraps \(entry.dataKeys) data keys (protecting \(entry.vaultEntries) vault entries \
                and \(entry.quarantined) quarantined messages); run `vault rewrap` first
                """)
        }
        let unopenable = try await unopenableDataKeys(keyring: keyring, excluding: version, connection: connection)
        guard unopenable.count == 0 else {
            throw KeyFileError(
                .refused,
                """
                retiring recovery key v\(version) would leave \(unopenable.count) data keys that no remaining private key opens \
                (first: \(unopenable.first!)); they are wrapped to a key whose private half is not in \(store.recoveryPrivatePath) \
                or does not match. Nothing was retired: find out who changed the recovery keys
                """)
        }
        guard !dryRun else { return }
        try await recordRetirement(.recovery, version: version, reason: reason, actor: actor, connection: connection)
        if store.hasRecoveryPrivateKeys {
            try store.save(try store.recoveryPrivateKeys().removing(version: version))
        }
        try store.save(try publicKeys.removing(version: version))
    }

    /// The data keys not wrapped to `excluded` that the private keys in the key
    /// file cannot unwrap (each is tried: O(#data keys), not O(#entries)).
    static func unopenableDataKeys(keyring: RecoveryKeyring, excluding excluded: Int, connection: PostgresConnection) async throws
        -> [String]
    {
        var unopenable: [String] = []
        var after = "00000000-0000-0000-0000-000000000000"
        while true {
            let rows = try await connection.query(
                """
                SELECT id::text AS id, recovery_key_version, wrapped_key FROM data_keys
                WHERE recovery_key_version <> $1 AND id > $2::uuid ORDER BY id LIMIT 1000
                """, [.int(excluded), .text(after)])
            guard let last = rows.last else { return unopenable }
            for row in rows {
                let id = try row.string("id")
                let version = try row.int("recovery_key_version")
                do {
                    _ = try DataKeyWrap.unwrap(
                        try row.bytes("wrapped_key"), dataKeyID: id, recoveryVersion: version,
                        with: try await keyring.privateKey(version: version))
                } catch let error as KeyFileError where error.code == .wrongPassphrase {
                    throw error
                } catch {
                    unopenable.append(id)
                }
            }
            after = try last.string("id")
        }
    }
}
