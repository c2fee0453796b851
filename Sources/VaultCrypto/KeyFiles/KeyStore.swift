public import Foundation

/// The key directory (`keys/` by default, `KEYS_DIR` in containers).
///
/// | file                    | holds                                    | who gets it             |
/// |-------------------------|------------------------------------------|-------------------------|
/// | `tokenization.json`     | HMAC keys (secret, 0600)                 | ingest, vault           |
/// | `recovery-public.json`  | recovery public keys (0644)              | ingest, vault           |
/// | `recovery-private.json` | recovery private keys, passphrase-sealed | vault on compliance hosts only |
/// | `audit-key.json`        | audit MAC keys (secret, 0600)            | vault only              |
public struct KeyStore: Sendable {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public var tokenizationPath: String { "\(directory)/tokenization.json" }
    public var recoveryPublicPath: String { "\(directory)/recovery-public.json" }
    public var recoveryPrivatePath: String { "\(directory)/recovery-private.json" }
    public var auditKeyPath: String { "\(directory)/audit-key.json" }

    public var hasRecoveryPrivateKeys: Bool { FileManager.default.fileExists(atPath: recoveryPrivatePath) }

    /// Creates a fresh key set: tokenization v1, recovery keypair v1
    /// (passphrase-sealed) and audit key v1. Refuses if any key file already exists.
    public func initialize(passphrase: SecureBytes, parameters: Scrypt.Parameters = .default, now: Date = Date()) throws {
        let recovery = try X25519.PrivateKey()
        try create(
            tokenization: try TokenizationKeyring.generate(now: now),
            recoveryPrivateKey: try RecoveryPrivateKeys.seal(
                recovery, version: 1, createdAt: timestamp(now), passphrase: passphrase, parameters: parameters),
            recoveryPublicKey: recovery.publicKey, now: now)
    }

    /// Writes a fresh key set: `tokenization`, the recovery keypair v1 (its
    /// private half already sealed), and a new audit key v1 recording the
    /// audit log's `unauthenticatedAuditRows`. Refuses if any key file already exists.
    public func create(
        tokenization: TokenizationKeyring, recoveryPrivateKey: RecoveryPrivateKeys.Sealed, recoveryPublicKey: X25519.PublicKey,
        unauthenticatedAuditRows: UnauthenticatedAuditRows = .allAuthenticated, now: Date = Date()
    ) throws {
        for path in [tokenizationPath, recoveryPublicPath, recoveryPrivatePath, auditKeyPath]
        where FileManager.default.fileExists(atPath: path) {
            throw KeyFileError(
                .alreadyExists,
                "\(path) already exists; refusing to overwrite keys (data protected by them would become unrecoverable). Use another --keys-dir, or rotate with `vault keys rotate`"
            )
        }
        try SecureFile.createDirectory(directory)
        let publicKeys = try RecoveryPublicKeys(
            keys: [RecoveryPublicKey(version: 1, state: .active, createdAt: recoveryPrivateKey.createdAt, publicKey: recoveryPublicKey)])
        // The private key first: if anything fails later, no public key exists
        // that data could be wrapped to without a way back.
        try SecureFile.write(
            RecoveryPrivateKeys(keys: [recoveryPrivateKey]).encoded(), to: recoveryPrivatePath, visibility: .secret, replace: false)
        try SecureFile.write(publicKeys.encoded(), to: recoveryPublicPath, visibility: .public, replace: false)
        try SecureFile.write(tokenization.encoded(), to: tokenizationPath, visibility: .secret, replace: false)
        try SecureFile.write(
            AuditKeyring.generate(now: now, unauthenticatedRows: unauthenticatedAuditRows).encoded(), to: auditKeyPath, visibility: .secret,
            replace: false)
    }

    public func tokenizationKeyring() throws -> TokenizationKeyring {
        try TokenizationKeyring.decode(SecureFile.readSecret(tokenizationPath), path: tokenizationPath)
    }

    public func recoveryPublicKeys() throws -> RecoveryPublicKeys {
        try RecoveryPublicKeys.decode(SecureFile.readPublic(recoveryPublicPath), path: recoveryPublicPath)
    }

    public func recoveryPrivateKeys() throws -> RecoveryPrivateKeys {
        guard FileManager.default.fileExists(atPath: recoveryPrivatePath) else {
            throw KeyFileError(
                .missing,
                "\(recoveryPrivatePath) does not exist: this machine holds no recovery private key (by design, only compliance machines do); run this command where the recovery key is installed"
            )
        }
        return try RecoveryPrivateKeys.decode(SecureFile.readSecret(recoveryPrivatePath), path: recoveryPrivatePath)
    }

    public var hasAuditKeys: Bool { FileManager.default.fileExists(atPath: auditKeyPath) }

    public func auditKeyring() throws -> AuditKeyring {
        guard hasAuditKeys else {
            throw KeyFileError(
                .missing,
                "\(auditKeyPath) does not exist: audit rows cannot be authenticated without it. It comes with the vault key set (`vault keys init`); on a key set made before it existed, create it with `vault keys rotate --audit`"
            )
        }
        return try AuditKeyring.decode(SecureFile.readSecret(auditKeyPath), path: auditKeyPath)
    }

    public func save(_ keyring: AuditKeyring) throws {
        try SecureFile.write(keyring.encoded(), to: auditKeyPath, visibility: .secret, replace: true)
    }

    public func save(_ keyring: TokenizationKeyring) throws {
        try SecureFile.write(keyring.encoded(), to: tokenizationPath, visibility: .secret, replace: true)
    }

    public func save(_ keys: RecoveryPublicKeys) throws {
        try SecureFile.write(keys.encoded(), to: recoveryPublicPath, visibility: .public, replace: true)
    }

    public func save(_ keys: RecoveryPrivateKeys) throws {
        try SecureFile.write(keys.encoded(), to: recoveryPrivatePath, visibility: .secret, replace: true)
    }
}
