public import Logging
import Synchronization
public import VaultCrypto

/// The key files as `ingest` last read them: the tokenization keyring and the
/// recovery public keys (never the private key). Reloaded on SIGHUP, on a
/// timer, and whenever the database says they are stale, so rotations reach
/// running replicas without a restart.
public final class IngestKeys: Sendable {
    public struct Snapshot: Sendable {
        public let keyring: TokenizationKeyring
        public let recovery: RecoveryPublicKeys
        let fingerprint: [UInt8]
    }

    public let store: KeyStore
    private let state: Mutex<Snapshot>
    private let logger: Logger

    public init(store: KeyStore, logger: Logger) throws {
        self.store = store
        self.logger = logger
        state = Mutex(try Self.read(store))
    }

    public var current: Snapshot { state.withLock { $0 } }

    /// Reads the files again; returns the new snapshot when they changed.
    /// A file caught half-written or invalid keeps the previous keys (and is logged).
    @discardableResult
    public func reload() -> Snapshot? {
        let fresh: Snapshot
        do {
            fresh = try Self.read(store)
        } catch {
            logger.warning("could not reload the key files; keeping the keys in use", metadata: ["error": "\(error)"])
            return nil
        }
        let changed = state.withLock { current -> Bool in
            guard current.fingerprint != fresh.fingerprint else { return false }
            current = fresh
            return true
        }
        guard changed else { return nil }
        logger.info("key files reloaded", metadata: [
            "tokenization_key_version": "\(fresh.keyring.active.version)", "recovery_key_version": "\(fresh.recovery.active.version)"])
        return fresh
    }

    private static func read(_ store: KeyStore) throws -> Snapshot {
        let keyring = try store.tokenizationKeyring()
        let recovery = try store.recoveryPublicKeys()
        // What identifies this key material: versions, states and public keys
        // (never a hash of the secret bytes themselves).
        var description = keyring.keys.map { "t\($0.version):\($0.state)" }.joined(separator: ",")
        description += recovery.keys.map { "r\($0.version):\($0.state):\(Hex.encode($0.publicKey.rawRepresentation))" }.joined(separator: ",")
        return Snapshot(keyring: keyring, recovery: recovery, fingerprint: try SHA256.hash(description))
    }
}
