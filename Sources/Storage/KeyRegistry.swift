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
            try connection.execute("""
                INSERT INTO key_versions (kind, version, state) VALUES ($1, $2, $3)
                ON CONFLICT (kind, version) DO UPDATE SET state = EXCLUDED.state, retired_at = NULL
                """, [.text(kind.rawValue), .int(version), .text(state.rawValue)])
        }
        for version in retired {
            try connection.execute("""
                INSERT INTO key_versions (kind, version, state, retired_at) VALUES ($1, $2, 'retired', now())
                ON CONFLICT (kind, version) DO UPDATE SET state = 'retired', retired_at = now()
                """, [.text(kind.rawValue), .int(version)])
        }
    }

    /// The tokenization version writers must have at least (set by `vault retokenize`).
    public static func enforcedTokenizationVersion(on connection: isolated PostgresConnection) throws -> Int? {
        try connection.query("SELECT max(version) AS version FROM key_versions WHERE kind = 'tokenization' AND enforced",
                             prepared: true).first?.optionalInt("version")
    }

    /// From now on, writers with an older tokenization key wait instead of writing.
    public static func enforceTokenization(version: Int, on connection: isolated PostgresConnection) throws {
        try connection.execute("""
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

/// The database requires a newer tokenization key than the writer has.
public struct StaleKeysError: Error, CustomStringConvertible {
    public let registered: Int
    public let local: Int

    public var description: String {
        "the database requires tokenization key v\(registered) (a retokenization is under way) but this process has v\(local); distribute the new key files"
    }
}
