public import VaultCrypto

/// The recovery private keys, unlocked on demand with the passphrase (asked
/// for once) and kept for the rest of the command.
public final class RecoveryKeyring {
    private let store: KeyStore
    private let passphrase: () throws -> SecureBytes
    private var file: RecoveryPrivateKeys?
    private var cachedPassphrase: SecureBytes?
    private var unlocked: [Int: X25519.PrivateKey] = [:]
    /// Time spent in the deliberate passphrase KDF (for `--timing`).
    public private(set) var unlockDuration: Duration = .zero

    public init(store: KeyStore, passphrase: @escaping () throws -> SecureBytes) {
        self.store = store
        self.passphrase = passphrase
    }

    public func privateKey(version: Int) throws -> X25519.PrivateKey {
        if let key = unlocked[version] { return key }
        let file = try self.file ?? store.recoveryPrivateKeys()
        self.file = file
        let secret = try cachedPassphrase ?? passphrase()
        cachedPassphrase = secret
        let started = ContinuousClock.now
        let key = try file.unlock(version: version, passphrase: secret, path: store.recoveryPrivatePath)
        unlockDuration += ContinuousClock.now - started
        unlocked[version] = key
        return key
    }
}
