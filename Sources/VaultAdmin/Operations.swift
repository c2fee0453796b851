public import KeyCustody
public import Postgres
public import Pseudonymization
public import Storage
import VaultCrypto

/// Sealed values reach a compliance login only through the database's
/// `vault_reveal`, which appends one audit row per token in the same
/// transaction: no audit row, no ciphertext (PostgreSQL enforces it, not this
/// client). The rows' outcomes (`revealed`, `unknown`, `erased`,
/// `malformed-token`) are checked there against the vault.
enum AuditedReveal {
    struct Released {
        /// The audit row of each input, in order.
        let sequences: [Int64]
        let entries: [String: SealedEntry]
    }

    /// At most this many tokens per transaction.
    static let chunkSize = 5_000

    static func reveal(action: String, _ tokens: [String], reason: String, actor: AuditActor, connection: PostgresConnection) async throws
        -> Released
    {
        try await AuditLog.retryingChanges(on: connection) { connection in
            let head = try AuditLog.head(on: connection)
            let wellFormed = Array(Set(tokens.filter { Token.parse($0) != nil }))
            // What the vault holds for them (metadata only: no sealed column is readable here).
            var erased: [String: Bool] = [:]
            var tombstones: [String: SealedEntry] = [:]
            for row in try connection.query(
                """
                SELECT token, field, token_key_version, data_key_id::text AS data_key_id, NULL::bytea AS nonce, NULL::bytea AS ciphertext,
                       to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS erased_at, erased_by,
                       NULL::integer AS recovery_key_version, NULL::bytea AS wrapped_key
                FROM vault_entries WHERE token = ANY($1::text[])
                """, [.textArray(wellFormed)], prepared: true)
            {
                let entry = try SealedEntry(row)
                erased[entry.token] = entry.erasedAt != nil
                if entry.erasedAt != nil { tombstones[entry.token] = entry }
            }
            let records = tokens.map { token -> AuditRecord in
                guard Token.parse(token) != nil else {
                    // It might be anything someone pasted, even an original: described, not recorded.
                    return AuditRecord(
                        action: action, subject: "malformed input \(TokenShape.describe(token))", reason: reason,
                        outcome: RecoveryError.Kind.malformedToken.rawValue)
                }
                let outcome = erased[token].map { $0 ? "erased" : "revealed" } ?? "unknown"
                return AuditRecord(action: action, subject: token, reason: reason, outcome: outcome)
            }
            let entries = try AuditLog.prepare(records, after: head, actor: actor)
            var parameters = AuditLog.rowParameters(entries, actions: false)
            parameters.insert(.text(action), at: 2)
            var released = tombstones
            for row in try connection.query(
                """
                SELECT token, field, token_key_version, data_key_id, nonce, ciphertext, NULL::text AS erased_at, NULL::text AS erased_by,
                       recovery_key_version, wrapped_key
                FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8)
                """, parameters, prepared: true)
            {
                let entry = try SealedEntry(row)
                released[entry.token] = entry
            }
            // The rows must really be there: a replaced vault_reveal that hands out
            // values without appending them is caught here, before anything is opened.
            try AuditLog.requireStored(entries.last!, on: connection)
            return Released(sequences: entries.map(\.sequence), entries: released)
        }
    }

    /// Opens what was released; a value that fails to open or to verify after
    /// its release gets a second audit row with the failure, committed before
    /// anything is shown. Returns each token's result and its last audit row.
    static func open(
        _ tokens: [String], action: String, released: Released, reader: VaultReader, reason: String, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> [(result: Result<RecoveredValue, RecoveryError>, auditSequence: Int64)] {
        let results = try await reader.open(tokens, entries: released.entries)
        var failed: [(index: Int, record: AuditRecord)] = []
        for (index, (token, result)) in zip(tokens, results).enumerated() {
            guard case .failure(let error) = result,
                ![.malformedToken, .unknownToken, .erased].contains(error.kind)
            else { continue }
            failed.append((index, AuditRecord(action: action, subject: token, reason: reason, outcome: error.kind.rawValue)))
        }
        var sequences = released.sequences
        if !failed.isEmpty {
            let appended = try await AuditLog.appendCommitted(failed.map(\.record), actor: actor, on: connection)
            for (failure, sequence) in zip(failed, appended) { sequences[failure.index] = sequence }
        }
        return zip(results, sequences).map { ($0, $1) }
    }
}

/// `vault recover`: audit (committed, by the database), decrypt and verify,
/// then hand back for display. Nothing leaves this function unless its audit
/// rows committed: fail closed.
public enum Recovery {
    public struct Outcome: Sendable {
        public let token: String
        public let result: Result<RecoveredValue, RecoveryError>
        public let auditSequence: Int64
    }

    public static func recover(
        _ tokens: [String], reason: String, reader: VaultReader, actor: AuditActor, connection: PostgresConnection
    ) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(tokens.count)
        for start in stride(from: 0, to: tokens.count, by: AuditedReveal.chunkSize) {
            let chunk = Array(tokens[start..<min(start + AuditedReveal.chunkSize, tokens.count)])
            let released = try await AuditedReveal.reveal(action: "recover", chunk, reason: reason, actor: actor, connection: connection)
            let opened = try await AuditedReveal.open(
                chunk, action: "recover", released: released, reader: reader, reason: reason,
                actor: actor, connection: connection)
            for (token, (result, sequence)) in zip(chunk, opened) {
                outcomes.append(Outcome(token: token, result: result, auditSequence: sequence))
            }
        }
        return outcomes
    }
}

/// `vault lookup`: the tokens a value has under every tokenization key version
/// in the key file, how many rows carry each, and whether the vault holds it.
/// "Stored" is only said of an entry that opens and whose value is the one
/// looked up, so the entries are revealed (and audited, one row per token).
public enum Lookup {
    public struct Match: Sendable, Equatable {
        public let keyVersion: Int
        public let token: String
        public let rows: Int
        /// "stored", "erased", "absent", or the failure ("integrity-failure", …).
        public let vault: String
    }

    public static func lookup(
        _ value: String, field: PIIField, reason: String, minter: TokenMinter, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> (matches: [Match], auditSequence: Int64) {
        let keyring = minter.keyring
        let tokens = try await ValueTokens.tokens(of: value, field: field, minter: minter).map(\.token)
        let column = field == .ip ? "masked_ip" : "masked_device_id"
        var rows: [String: Int] = [:]
        for row in try await connection.query(
            "SELECT \(column) AS token, count(*) AS n FROM user_logins WHERE \(column) = ANY($1::text[]) GROUP BY 1", [.textArray(tokens)])
        {
            rows[try row.string("token")] = try row.int("n")
        }
        let released = try await AuditedReveal.reveal(action: "lookup", tokens, reason: reason, actor: actor, connection: connection)
        let opened = try await AuditedReveal.open(
            tokens, action: "lookup", released: released, reader: reader, reason: reason,
            actor: actor, connection: connection)
        let matches = zip(zip(keyring.keys, tokens), opened).map { keyAndToken, outcome -> Match in
            let vault: String
            switch outcome.result {
            case .success: vault = "stored"
            case .failure(let error) where error.kind == .unknownToken: vault = "absent"
            case .failure(let error): vault = error.kind.rawValue
            }
            return Match(keyVersion: keyAndToken.0.version, token: keyAndToken.1, rows: rows[keyAndToken.1] ?? 0, vault: vault)
        }
        return (matches, released.sequences.first ?? 0)
    }
}

public struct LookupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// `vault forget`: crypto-shredding. The sealed originals are erased in place
/// (a tombstone records when and by whom) by the database's `vault_forget`, in
/// the same transaction as their audit rows; the tokens stay in `user_logins`.
public enum Forget {
    public enum Outcome: String, Sendable {
        case erased
        case alreadyErased = "already-erased"
        case unknown
    }

    public struct Erasure: Sendable {
        public let token: String
        public let outcome: Outcome
        /// Nil for a dry run (nothing is audited: nothing is revealed or changed).
        public let auditSequence: Int64?
    }

    /// Erases every token in `tokens` (each once), or with `dryRun` says what
    /// it would do. Throws for input that is not a token before anything happens.
    public static func forget(
        _ tokens: [String], reason: String, dryRun: Bool = false, actor: AuditActor, connection: PostgresConnection
    ) async throws -> [Erasure] {
        if let malformed = tokens.first(where: { Token.parse($0) == nil }) { throw RecoveryError.malformed(malformed) }
        var seen = Set<String>()
        let unique = tokens.filter { seen.insert($0).inserted }
        guard !unique.isEmpty else { return [] }
        if dryRun {
            let states = try await states(of: unique, on: connection)
            return unique.map { Erasure(token: $0, outcome: states[$0] ?? .unknown, auditSequence: nil) }
        }
        return try await AuditLog.retryingChanges(on: connection) { connection in
            let head = try AuditLog.head(on: connection)
            let states = try states(of: unique, on: connection)
            let outcomes = unique.map { states[$0] ?? .unknown }
            let entries = try AuditLog.prepare(
                zip(unique, outcomes).map {
                    AuditRecord(action: "forget", subject: $0, reason: reason, outcome: $1.rawValue)
                }, after: head, actor: actor)
            // The rows' subjects are the tokens: the parameters are vault_forget's as they are.
            try connection.query(
                "SELECT vault_forget($1, $2, $3, $4, $5, $6, $7)", AuditLog.rowParameters(entries, actions: false),
                prepared: true)
            try AuditLog.requireStored(entries.last!, on: connection)
            return zip(unique, zip(outcomes, entries)).map { Erasure(token: $0, outcome: $1.0, auditSequence: $1.1.sequence) }
        }
    }

    private static func states(of tokens: [String], on connection: isolated PostgresConnection) throws -> [String: Outcome] {
        var states: [String: Outcome] = [:]
        for row in try connection.query(
            "SELECT token, erased_at IS NOT NULL AS erased FROM vault_entries WHERE token = ANY($1::text[])",
            [.textArray(tokens)], prepared: true)
        {
            states[try row.string("token")] = try row.bool("erased") ? .alreadyErased : .erased
        }
        return states
    }

    private static func states(of tokens: [String], on connection: PostgresConnection) async throws -> [String: Outcome] {
        try await connection.transaction { connection in try states(of: tokens, on: connection) }
    }
}

/// The tokens a value has under every version of a tokenization keyring.
public enum ValueTokens {
    public static func tokens(of value: String, field: PIIField, minter: TokenMinter) async throws -> [(version: Int, token: String)] {
        let canonical: String
        switch field {
        case .ip:
            guard let ip = CanonicalIP.canonicalize(value) else { throw LookupError("the value given is not a valid IPv4 or IPv6 address") }
            canonical = ip
        case .deviceID:
            guard !value.isEmpty else { throw LookupError("the device id given is empty") }
            canonical = value
        }
        var tokens: [(version: Int, token: String)] = []
        for key in minter.keyring.keys {
            tokens.append((key.version, try await minter.token(TokenRequest(field: field, value: canonical), version: key.version)))
        }
        return tokens
    }
}
