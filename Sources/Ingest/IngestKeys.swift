public import AWS
public import KeyCustody
public import Logging
public import Storage
import Synchronization
public import VaultCrypto

/// The key files as `ingest` last read them: the tokenization keyring and the
/// recovery public keys (never the private key). Reloaded on SIGHUP, on a
/// timer, and whenever the database says they are stale, so rotations reach
/// running replicas without a restart.
///
/// Every version must be the one registered in the database (its fingerprint):
/// a key file swapped by whoever can write the secret store is refused at
/// start, and on reload the keys in use are kept.
public final class IngestKeys: Sendable {
    public struct Snapshot: Sendable {
        public let keyring: TokenizationKeyring
        public let recovery: RecoveryPublicKeys
        let fingerprint: [UInt8]
    }

    public typealias Registry = @Sendable () async throws -> [KeyRegistry.Registered]

    public let store: KeyStore
    private let state: Mutex<Snapshot>
    private let registry: Registry
    /// For KMS-held tokenization versions: made when the key files first name one.
    private let kms: LazyKMSClient
    private let logger: Logger

    /// Reads the key files; `verifyRegistered` checks them before first use.
    public init(store: KeyStore, registry: @escaping Registry, kms: LazyKMSClient, logger: Logger) throws {
        self.store = store
        self.registry = registry
        self.kms = kms
        self.logger = logger
        state = Mutex(try Self.read(store))
    }

    /// The KMS client when `keyring` has a KMS-held version; nil when it needs none.
    public func kmsClient(for keyring: TokenizationKeyring) throws -> KMSClient? { try kms.client(for: keyring) }

    public func shutdown() async { await kms.shutdown() }

    /// Reads the key files again and refuses them unless their versions are
    /// the registered ones (and not older than the database's active ones):
    /// before the first use, so files fixed while ingest waits at start are seen.
    public func verifyRegistered() async throws {
        let fresh = try Self.read(store)
        try await verify(fresh, registered: try await registry())
        state.withLock { $0 = fresh }
    }

    public var current: Snapshot { state.withLock { $0 } }

    /// Reads the files again; returns the new snapshot when they changed and
    /// pass the registry check. A file caught half-written, invalid, or not
    /// registered keeps the previous keys (and is logged).
    @discardableResult
    public func reload() async -> Snapshot? {
        let fresh: Snapshot
        do {
            fresh = try Self.read(store)
        } catch {
            logger.warning("could not reload the key files; keeping the keys in use", metadata: ["error": "\(error)"])
            return nil
        }
        guard current.fingerprint != fresh.fingerprint else { return nil }
        do {
            try await verify(fresh, registered: try await registry())
        } catch let error as KeyRegistryError {
            logger.error("refusing the changed key files; keeping the keys in use", metadata: ["error": "\(error)"])
            return nil
        } catch {
            logger.warning(
                "cannot check the changed key files yet (database or KMS unavailable); keeping the keys in use",
                metadata: ["error": "\(error)"])
            return nil
        }
        let changed = state.withLock { current -> Bool in
            guard current.fingerprint != fresh.fingerprint else { return false }
            current = fresh
            return true
        }
        guard changed else { return nil }
        logger.info(
            "key files reloaded",
            metadata: [
                "tokenization_key_version": "\(fresh.keyring.active.version)", "recovery_key_version": "\(fresh.recovery.active.version)",
            ])
        return fresh
    }

    private func verify(_ snapshot: Snapshot, registered: [KeyRegistry.Registered]) async throws {
        try KeyRegistry.verify(
            try await KeyRegistry.fileKeys(
                tokenization: snapshot.keyring, recovery: snapshot.recovery, store: store, kms: try kmsClient(for: snapshot.keyring)),
            against: registered)
    }

    private static func read(_ store: KeyStore) throws -> Snapshot {
        let keyring = try store.tokenizationKeyring()
        let recovery = try store.recoveryPublicKeys()
        // What identifies this key material: versions, states, and key
        // fingerprints (a KMS-held version's key id: no KMS call for this).
        var description = try keyring.keys.map { key in
            let identity = try key.kmsKeyID.map { "kms:\($0)" } ?? Hex.encode(try key.localTokenizationFingerprint())
            return "t\(key.version):\(key.state):\(identity)"
        }.joined(separator: ",")
        description += try recovery.keys.map { "r\($0.version):\($0.state):\(Hex.encode(try $0.fingerprint))" }.joined(separator: ",")
        return Snapshot(keyring: keyring, recovery: recovery, fingerprint: try SHA256.hash(description))
    }
}
