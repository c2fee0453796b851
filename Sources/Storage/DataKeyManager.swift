import Foundation
public import Logging
public import Postgres
import Pseudonymization
public import VaultCrypto

/// How long a data key may be used.
public struct DataKeyPolicy: Sendable {
    /// Encryptions per key. NIST SP 800-38D caps random-nonce GCM at 2^32
    /// invocations per key; 2^24 keeps the nonce-collision probability below 2^-49.
    public var maximumEncryptions: Int
    public var maximumAge: Duration

    public init(maximumEncryptions: Int = 1 << 24, maximumAge: Duration = .seconds(24 * 3600)) {
        self.maximumEncryptions = maximumEncryptions
        self.maximumAge = maximumAge
    }
}

/// A right to make `count` encryptions under one data key.
public struct DataKeyLease: Sendable {
    public let id: String
    public let key: SecureBytes
}

/// Creates, wraps, records and rotates the data keys `ingest` (and
/// `vault retokenize`) seal with.
///
/// A new key is wrapped (HPKE) to the active recovery public key and committed
/// to `data_keys` before it seals anything, so every vault entry's key is
/// recoverable. Keys rotate on encryption count and on age; a new recovery key
/// forces a rotation so new data is wrapped to it at once.
public actor DataKeyManager {
    private struct Current {
        let id: String
        let key: SecureBytes
        let created: ContinuousClock.Instant
        var encryptions: Int
    }

    private var current: Current?
    private var rotation: Task<Current, any Error>?
    private var recoveryKey: RecoveryPublicKey
    private let policy: DataKeyPolicy
    private let connect: @Sendable () async throws -> PostgresConnection
    private var connection: PostgresConnection?
    private let createdBy: String
    private let onCreate: @Sendable (String) -> Void
    private let logger: Logger

    public init(
        recoveryKey: RecoveryPublicKey, policy: DataKeyPolicy, createdBy: String, logger: Logger,
        onCreate: @escaping @Sendable (String) -> Void = { _ in },
        connect: @escaping @Sendable () async throws -> PostgresConnection
    ) {
        self.recoveryKey = recoveryKey
        self.policy = policy
        self.createdBy = createdBy
        self.onCreate = onCreate
        self.logger = logger
        self.connect = connect
    }

    /// Reserves `count` encryptions, rotating first when the current key would
    /// exceed its count or age.
    public func lease(encryptions count: Int) async throws -> DataKeyLease {
        if let current, current.encryptions + count <= policy.maximumEncryptions,
            ContinuousClock.now - current.created < policy.maximumAge
        {
            self.current!.encryptions += count
            return DataKeyLease(id: current.id, key: current.key)
        }
        // One rotation at a time; concurrent callers wait for it.
        let task = rotation ?? Task { try await self.createKey() }
        rotation = task
        let fresh: Current
        do {
            fresh = try await task.value
            rotation = nil
        } catch {
            rotation = nil
            throw error
        }
        if current?.id != fresh.id {
            let previous = current
            current = fresh
            if let previous { await retire(previous.id) }
        }
        self.current!.encryptions += count
        return DataKeyLease(id: fresh.id, key: fresh.key)
    }

    /// Marks the key in use retired (the process is stopping): the inventory then
    /// shows which data keys a running ingest can still add entries under.
    public func retireCurrent() async {
        guard let current else { return }
        self.current = nil
        await retire(current.id)
    }

    /// A new recovery public key: the next lease gets a data key wrapped to it.
    public func useRecoveryKey(_ key: RecoveryPublicKey) {
        guard key.version != recoveryKey.version || key.publicKey != recoveryKey.publicKey else { return }
        recoveryKey = key
        if let current {
            self.current = Current(
                id: current.id, key: current.key, created: current.created,
                encryptions: policy.maximumEncryptions + 1)
        }
    }

    private func createKey() async throws -> Current {
        let id = UUID().uuidString.lowercased()
        let key = try SecureBytes.random(count: DataKeyWrap.keyByteCount)
        let wrapped = try DataKeyWrap.wrap(key, dataKeyID: id, to: recoveryKey)
        do {
            try await BatchWriter.insertDataKey(
                id: id, recoveryKeyVersion: recoveryKey.version, wrappedKey: wrapped,
                createdBy: createdBy, on: try await liveConnection())
        } catch let error as PostgresError where error.sqlState == "PSK05" {
            // The database's active recovery key is newer than the one in hand.
            let active = try await liveConnection().query(
                "SELECT max(version) AS version FROM key_versions WHERE kind = 'recovery' AND state = 'active'")
            throw StaleKeysError(kind: .recovery, registered: try active.first?.optionalInt("version") ?? 0, local: recoveryKey.version)
        }
        onCreate(id)
        logger.info("new data key", metadata: ["data_key_id": "\(id)", "recovery_key_version": "\(recoveryKey.version)"])
        return Current(id: id, key: key, created: .now, encryptions: 0)
    }

    private func retire(_ id: String) async {
        do {
            try await BatchWriter.retireDataKey(id: id, on: try await liveConnection())
        } catch {
            logger.warning("could not mark data key retired", metadata: ["data_key_id": "\(id)", "error": "\(error)"])
        }
    }

    private func liveConnection() async throws -> PostgresConnection {
        if let connection, await connection.isHealthy { return connection }
        let fresh = try await connect()
        connection = fresh
        return fresh
    }
}
