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
    }

    /// Records every version in `versions` with its state (upsert) and marks
    /// `retired` versions retired.
    public static func record(
        _ kind: Kind, versions: [(version: Int, state: KeyState)], retired: [Int] = [], on connection: isolated PostgresConnection
    ) throws {
        for (version, state) in versions {
            try connection.execute(
                """
                INSERT INTO key_versions (kind, version, state) VALUES ($1, $2, $3)
                ON CONFLICT (kind, version) DO UPDATE SET state = EXCLUDED.state, retired_at = NULL
                """, [.text(kind.rawValue), .int(version), .text(state.rawValue)])
        }
        for version in retired {
            try connection.execute(
                """
                INSERT INTO key_versions (kind, version, state, retired_at) VALUES ($1, $2, 'retired', now())
                ON CONFLICT (kind, version) DO UPDATE SET state = 'retired', retired_at = now()
                """, [.text(kind.rawValue), .int(version)])
        }
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
    /// one retired. Pure: the caller reads `registered` from the database.
    public static func verify(_ keys: [FileKey], against registered: [Registered]) throws {
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
    /// set once, by `register_key`); refuses one registered with another fingerprint.
    /// Returns the versions newly registered.
    @discardableResult
    public static func register(_ keys: [FileKey], on connection: isolated PostgresConnection) throws -> [FileKey] {
        var added: [FileKey] = []
        for key in keys {
            do {
                let outcome = try connection.query(
                    "SELECT register_key($1, $2, $3, $4) AS outcome",
                    [.text(key.kind.rawValue), .int(key.version), .text(key.state.rawValue), .bytes(key.fingerprint)])
                if try outcome.first?.string("outcome") == "registered" { added.append(key) }
            } catch let error as PostgresError where error.sqlState == "PSK01" {
                throw KeyRegistryError(
                    .mismatch,
                    "\(key.kind.rawValue) key v\(key.version) in \(key.path) differs from the key registered for v\(key.version) in the database; it was replaced, or the key set belongs to another installation; nothing was registered"
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

    /// From now on, writers with an older tokenization key wait instead of writing.
    public static func enforceTokenization(version: Int, on connection: isolated PostgresConnection) throws {
        try connection.execute(
            """
            INSERT INTO key_versions (kind, version, state, enforced) VALUES ('tokenization', $1, 'active', true)
            ON CONFLICT (kind, version) DO UPDATE SET enforced = true
            """, [.int(version)])
    }

    /// The advisory lock held (shared) by every transaction that writes tokens of
    /// `version`, and (exclusively) by `vault retokenize` when it drops that
    /// version's entries: no entry is dropped while a row referring to it is
    /// being written.
    public static func writerLock(tokenizationVersion version: Int) -> Int64 {
        0x746f_6b65_6e00_0000 | Int64(version & 0xffff)
    }
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

/// The database requires a newer tokenization key than the writer has.
public struct StaleKeysError: Error, CustomStringConvertible {
    public let registered: Int
    public let local: Int

    public var description: String {
        "the database requires tokenization key v\(registered) (a retokenization is under way) but this process has v\(local); distribute the new key files"
    }
}
