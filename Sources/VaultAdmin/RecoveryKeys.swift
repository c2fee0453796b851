public import KeyCustody
public import VaultCrypto

/// The recovery private keys, opened on demand and kept for the rest of the
/// command: a passphrase-sealed one with the passphrase (asked for once), a
/// KMS-sealed one by KMS `Decrypt` (no passphrase asked).
public final class RecoveryKeyring {
    private let store: KeyStore
    private let passphrase: () throws -> SecureBytes
    private let kms: LazyKMSClient?
    private var file: RecoveryPrivateKeys?
    private var cachedPassphrase: SecureBytes?
    private var unlocked: [Int: X25519.PrivateKey] = [:]
    /// Time spent in the deliberate passphrase KDF (for `--timing`).
    public private(set) var unlockDuration: Duration = .zero

    /// `kms` is needed only for KMS-sealed versions.
    public init(store: KeyStore, kms: LazyKMSClient? = nil, passphrase: @escaping () throws -> SecureBytes) {
        self.store = store
        self.kms = kms
        self.passphrase = passphrase
    }

    public func privateKey(version: Int) async throws -> X25519.PrivateKey {
        if let key = unlocked[version] { return key }
        let file = try self.file ?? store.recoveryPrivateKeys()
        self.file = file
        let entry = try file.entry(version: version, path: store.recoveryPrivatePath)
        let started = ContinuousClock.now
        let key: X25519.PrivateKey
        if entry.kmsKeyID != nil {
            guard let kms else {
                throw KeyFileError(.refused, "recovery key v\(version) is sealed by AWS KMS, and this command has no KMS client")
            }
            key = try await KMSRecoverySealing.unseal(entry, kms: try kms.client(), path: store.recoveryPrivatePath)
        } else {
            let secret = try cachedPassphrase ?? passphrase()
            cachedPassphrase = secret
            key = try file.unlock(version: version, passphrase: secret, path: store.recoveryPrivatePath)
        }
        unlockDuration += ContinuousClock.now - started
        unlocked[version] = key
        return key
    }

}
