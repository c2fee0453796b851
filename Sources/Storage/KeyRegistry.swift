public import AWS
import KeyCustody
public import Postgres
public import VaultCrypto

/// The database's record of key versions (`key_versions`), kept by `vault keys`.
///
/// It is what lets a running `ingest` notice that its key files are stale: the
/// key files travel through a secret store, the registry through the database
/// every replica already talks to.
public enum KeyRegistry {
    public enum Kind: String, Sendable {
        case tokenization
        case recovery
        /// The key of the suppression tags of erased values (one version, never rotated).
        case suppression
    }

    /// Retires `version` (through `key_retire`, bound to the run): refused
    /// by the database while entries or data keys still depend on it.
    public static func retire(_ kind: Kind, version: Int, run: RotationRun, on connection: isolated PostgresConnection) throws {
        try connection.execute("SELECT key_retire($1, $2, $3)", [.int(run.sequence), .text(kind.rawValue), .int(version)])
    }

    /// A key version as the database knows it.
    public struct Registered: Sendable, Equatable {
        public let kind: Kind
        public let version: Int
        /// "active", "decrypt-only" or "retired".
        public let state: String
        /// Nil for a version recorded before fingerprints existed (migration 4).
        public let fingerprint: [UInt8]?

        public init(kind: Kind, version: Int, state: String, fingerprint: [UInt8]?) {
            self.kind = kind
            self.version = version
            self.state = state
            self.fingerprint = fingerprint
        }
    }

    public static func registered(on connection: PostgresConnection) async throws -> [Registered] {
        try await connection.query("SELECT kind, version, state, fingerprint FROM key_versions ORDER BY kind, version").map { row in
            Registered(
                kind: Kind(rawValue: try row.string("kind")) ?? .recovery, version: try row.int("version"),
                state: try row.string("state"), fingerprint: try row.optionalBytes("fingerprint"))
        }
    }

    /// One key version of the key files, by the fingerprint that identifies it.
    public struct FileKey: Sendable {
        public let kind: Kind
        public let version: Int
        public let state: KeyState
        public let fingerprint: [UInt8]
        /// The file it came from, for messages.
        public let path: String
    }

    /// The versions in the files of `store` that the database checks: the
    /// tokenization keyring (a KMS-held version's fingerprint is a KMS call)
    /// and the recovery public keys.
    public static func fileKeys(
        tokenization: TokenizationKeyring?, recovery: RecoveryPublicKeys?, store: KeyStore, kms: KMSClient?
    ) async throws -> [FileKey] {
        var keys: [FileKey] = []
        for key in tokenization?.keys ?? [] {
            keys.append(
                FileKey(
                    kind: .tokenization, version: key.version, state: key.state,
                    fingerprint: try await TokenMinter.fingerprint(of: key, kms: kms), path: store.tokenizationPath))
        }
        if let suppression = tokenization?.suppression {
            keys.append(
                FileKey(
                    kind: .suppression, version: suppression.version, state: suppression.state,
                    fingerprint: try await TokenMinter.suppressionFingerprint(of: suppression, kms: kms), path: store.tokenizationPath))
        }
        for key in recovery?.keys ?? [] {
            keys.append(
                FileKey(
                    kind: .recovery, version: key.version, state: key.state, fingerprint: try key.fingerprint,
                    path: store.recoveryPublicPath))
        }
        return keys
    }

    /// Refuses key files that are not the ones registered: a version whose
    /// fingerprint differs (the file was swapped), one never registered, or
    /// one retired; and files whose active version is older than the
    /// database's active one (rolled back, or not distributed yet after a
    /// rotation). Pure: the caller reads `registered` from the database.
    public static func verify(_ keys: [FileKey], against registered: [Registered]) throws {
        if let tokenization = keys.first(where: { $0.kind == .tokenization }), !keys.contains(where: { $0.kind == .suppression }),
            registered.contains(where: { $0.kind == .suppression })
        {
            throw KeyRegistryError(
                .rolledBack,
                "\(tokenization.path) has no suppression key, but the database has one registered: without it erased values would be stored again. Distribute the current tokenization.json (the one `vault keys rotate --suppression` wrote)"
            )
        }
        for key in keys where key.state == .active {
            guard let newest = registered.filter({ $0.kind == key.kind && $0.state == "active" }).map(\.version).max(),
                newest > key.version
            else { continue }
            throw KeyRegistryError(
                .rolledBack,
                "\(key.kind.rawValue) key v\(key.version) is the active one in \(key.path), but the database's active \(key.kind.rawValue) key is v\(newest): the key file is older than the registry (rolled back, or the rotated file has not arrived). Nothing is written with it; distribute the current key files (if nobody rotated back, find out who replaced them)"
            )
        }
        for key in keys {
            guard let entry = registered.first(where: { $0.kind == key.kind && $0.version == key.version }),
                let fingerprint = entry.fingerprint
            else {
                throw KeyRegistryError(
                    .unregistered,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) is not registered in the database: if this key set is genuine, run `vault keys register` (as the rotation role) on the compliance machine that created it"
                )
            }
            guard constantTimeEquals(fingerprint, key.fingerprint) else {
                throw KeyRegistryError(
                    .mismatch,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) is not the key registered for v\(key.version) in the database (fingerprint \(Hex.encode(key.fingerprint.prefix(8))), registered \(Hex.encode(fingerprint.prefix(8)))): the key file was replaced or belongs to another installation; restore the genuine file and investigate who changed it"
                )
            }
            guard entry.state != "retired" else {
                throw KeyRegistryError(
                    .retired,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) was retired; remove it from the key file (`vault keys retire` did, on the machine that ran it)"
                )
            }
        }
    }

    /// Registers every version in `keys` not registered yet (its fingerprint is
    /// set once, by `key_register` in the audited run `run`); refuses one
    /// registered with another fingerprint, or one older than a registered
    /// version. Returns the versions newly registered.
    @discardableResult
    public static func register(_ keys: [FileKey], run: RotationRun, on connection: isolated PostgresConnection) throws -> [FileKey] {
        var added: [FileKey] = []
        for key in keys.sorted(by: { ($0.kind.rawValue, $0.version) < ($1.kind.rawValue, $1.version) }) {
            do {
                let outcome = try connection.query(
                    "SELECT key_register($1, $2, $3, $4, $5) AS outcome",
                    [.int(run.sequence), .text(key.kind.rawValue), .int(key.version), .text(key.state.rawValue), .bytes(key.fingerprint)])
                if try outcome.first?.string("outcome") == "registered" { added.append(key) }
            } catch let error as PostgresError where error.sqlState == "PSK01" {
                throw KeyRegistryError(
                    .mismatch,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) differs from the key registered for v\(key.version) in the database; it was replaced, or the key set belongs to another installation; nothing was registered"
                )
            } catch let error as PostgresError where error.sqlState == "PSK04" {
                throw KeyRegistryError(
                    .rolledBack,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) is older than a version the database has registered (or a second suppression key): key versions only move forward; nothing was registered"
                )
            }
        }
        return added
    }

    /// The tokenization version writers must have at least (set by `vault retokenize`).
    public static func enforcedTokenizationVersion(on connection: isolated PostgresConnection) throws -> Int? {
        try connection.query(
            "SELECT max(version) AS version FROM key_versions WHERE kind = 'tokenization' AND enforced",
            prepared: true
        ).first?.optionalInt("version")
    }

    /// From now on, writers with an older tokenization key wait instead of
    /// writing (`key_enforce`: only the active registered version).
    public static func enforceTokenization(version: Int, run: RotationRun, on connection: PostgresConnection) async throws {
        try await connection.execute("SELECT key_enforce($1, $2)", [.int(run.sequence), .int(version)])
    }

    /// The advisory lock held (shared) by every transaction that writes tokens of
    /// `version`, and (exclusively) by `vault retokenize` when it drops that
    /// version's entries: no entry is dropped while a row referring to it is
    /// being written.
    public static func writerLock(tokenizationVersion version: Int) -> Int64 {
        writerLockBase | Int64(version & 0xffff)
    }

    static let writerLockBase: Int64 = 0x746f_6b65_6e00_0000  // "token"
}

/// Key files that are not the ones the database registered.
public struct KeyRegistryError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Code: Sendable {
        /// A version the database does not know (or knows without a fingerprint).
        case unregistered
        /// A version whose key differs from the registered one: swapped.
        case mismatch
        /// A version the database records as retired.
        case retired
        /// Files whose active version is older than the database's active one.
        case rolledBack
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func == (lhs: KeyRegistryError, rhs: KeyRegistryError) -> Bool { lhs.code == rhs.code }
}

/// The database requires a newer key than the writer has: a newer active
/// tokenization or recovery key (rotated), or an enforced tokenization key (a
/// retokenization is under way).
public struct StaleKeysError: Error, CustomStringConvertible {
    public let kind: KeyRegistry.Kind
    public let registered: Int
    public let local: Int

    public init(kind: KeyRegistry.Kind, registered: Int, local: Int) {
        self.kind = kind
        self.registered = registered
        self.local = local
    }

    public var description: String {
        "the database's active \(kind.rawValue) key is v\(registered) but this process has v\(local); nothing is written with it until the new key files arrive (if nobody rotated, find out who rolled them back)"
    }
}
