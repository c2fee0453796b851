public import KeyCustody
public import Postgres
import Pseudonymization
import Storage
public import VaultCrypto

/// What proves a token's value was erased: an audit row a holder of the
/// audit key wrote (`forget`, or `forget.carry` when `vault retokenize`
/// carried the erasure to a new token). A tombstone without one was planted
/// by someone without the audit key, and is an integrity failure, never
/// "erased by …".
public struct ErasureProof: Sendable, Equatable {
    public let sequence: Int64
    public let at: String
    public let osUser: String
    public let databaseRole: String
    /// Carried to this token by `vault retokenize`, not erased under it directly.
    public let carried: Bool

    init(_ row: AuditEntry) {
        sequence = row.sequence
        at = row.at
        osUser = row.osUser
        databaseRole = row.databaseRole
        carried = row.action != "forget"
    }

    /// How recovery describes the erasure.
    func describe(_ token: String) -> String {
        "token \(token) was erased on \(at) by \(osUser) as \(databaseRole) (\(carried ? "carried by vault retokenize" : "vault forget"), audit row \(sequence)); its original is gone"
    }
}

/// Finds the proofs of erasure for tokens.
public struct ErasureProofs {
    let keys: AuditKeyring
    let minter: TokenMinter

    public init(keys: AuditKeyring, minter: TokenMinter) {
        self.keys = keys
        self.minter = minter
    }

    /// The proof for each token that has one. `tombstones` are the tokens
    /// whose entries are erased: one carried by `vault retokenize` before
    /// carries were audited (schema migration 6) has no row of its own, and is
    /// proven through its lineage instead, each step recomputed as the erased
    /// token of the one before (which needs that step's tokenization key).
    public func proofs(for tokens: [String], tombstones: Set<String>, on connection: PostgresConnection) async throws
        -> [String: ErasureProof]
    {
        var proofs = try await AuditLog.erasures(of: tokens, keys: keys, on: connection).mapValues(ErasureProof.init)
        for token in tombstones where proofs[token] == nil {
            if let proof = try await carriedBeforeMigration6(token, on: connection) { proofs[token] = proof }
        }
        return proofs
    }

    private func carriedBeforeMigration6(_ token: String, depth: Int = 0, on connection: PostgresConnection) async throws -> ErasureProof? {
        guard depth < 64, let parts = Token.parse(token), minter.keyring.key(version: parts.keyVersion) != nil,
            let old = try await connection.query(
                "SELECT old_token FROM token_lineage WHERE new_token = $1", [.text(token)]
            ).first?.string("old_token"),
            try await minter.erasedTokens([(old, parts.field)], version: parts.keyVersion).first == token
        else { return nil }
        if let direct = try await AuditLog.erasures(of: [old], keys: keys, on: connection)[old] { return ErasureProof(direct) }
        return try await carriedBeforeMigration6(old, depth: depth + 1, on: connection)
    }
}
