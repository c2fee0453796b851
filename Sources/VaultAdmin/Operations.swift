public import Postgres
public import Pseudonymization
public import VaultCrypto

/// `vault recover`: decrypt, audit (committed), then hand back for display.
/// Nothing leaves this function unless its audit rows committed: fail closed.
public enum Recovery {
    public struct Outcome: Sendable {
        public let token: String
        public let result: Result<RecoveredValue, RecoveryError>
        public let auditSequence: Int64
    }

    public static func recover(
        _ tokens: [String], reason: String, reader: VaultReader, actor: AuditActor, connection: PostgresConnection
    ) async throws -> [Outcome] {
        let results = try await reader.recover(tokens)
        let records = zip(tokens, results).map { token, result in
            let outcome: String
            switch result {
            case .success: outcome = "revealed"
            case .failure(let error): outcome = error.kind.rawValue
            }
            // A malformed "token" might be anything someone pasted, even an original: not recorded verbatim.
            let subject = Token.parse(token) == nil ? "(malformed input, \(token.utf8.count) bytes)" : token
            return AuditRecord(action: "recover", subject: subject, reason: reason, outcome: outcome)
        }
        let sequences = try await AuditLog.appendCommitted(records, actor: actor, on: connection)
        return zip(zip(tokens, results), sequences).map { Outcome(token: $0.0, result: $0.1, auditSequence: $1) }
    }
}

/// `vault lookup`: the tokens a value has under every live tokenization key
/// version, how many rows carry each, and whether the vault still holds it.
public enum Lookup {
    public struct Match: Sendable, Equatable {
        public let keyVersion: Int
        public let token: String
        public let rows: Int
        /// "stored", "erased" or "absent".
        public let vault: String
    }

    public static func lookup(
        _ value: String, field: PIIField, reason: String, keyring: TokenizationKeyring, actor: AuditActor, connection: PostgresConnection
    ) async throws -> (matches: [Match], auditSequence: Int64) {
        let canonical: String
        switch field {
        case .ip:
            guard let ip = CanonicalIP.canonicalize(value) else {
                throw LookupError("the value given with --ip is not a valid IPv4 or IPv6 address")
            }
            canonical = ip
        case .deviceID:
            guard !value.isEmpty else { throw LookupError("the value given with --device-id is empty") }
            canonical = value
        }
        var matches: [Match] = []
        let column = field == .ip ? "masked_ip" : "masked_device_id"
        for key in keyring.keys {
            let token = try Tokenizer(key: key).token(for: canonical, field: field)
            let rows = try await connection.query("SELECT count(*) AS n FROM user_logins WHERE \(column) = $1", [.text(token)])
            let vault = try await connection.query("SELECT erased_at IS NOT NULL AS erased FROM vault_entries WHERE token = $1", [.text(token)])
            matches.append(Match(keyVersion: key.version, token: token, rows: try rows[0].int("n"),
                                 vault: try vault.first.map { try $0.bool("erased") ? "erased" : "stored" } ?? "absent"))
        }
        let found = matches.contains { $0.rows > 0 || $0.vault != "absent" }
        let record = AuditRecord(action: "lookup", subject: "\(field.rawValue): " + matches.map(\.token).joined(separator: " "),
                                 reason: reason, outcome: found ? "found" : "not-found")
        let sequence = try await AuditLog.appendCommitted([record], actor: actor, on: connection)[0]
        return (matches, sequence)
    }
}

public struct LookupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// `vault forget`: crypto-shredding. The sealed original is erased in place
/// (a tombstone records when and by whom) in the same transaction as its
/// audit row; the token stays in `user_logins`.
public enum Forget {
    public enum Outcome: String, Sendable {
        case erased
        case alreadyErased = "already-erased"
        case unknown
    }

    public static func forget(
        _ token: String, reason: String, actor: AuditActor, connection: PostgresConnection
    ) async throws -> (outcome: Outcome, auditSequence: Int64) {
        guard Token.parse(token) != nil else {
            throw RecoveryError(kind: .malformedToken, token: token,
                                message: "\(token.prefix(80)) is not a token (expected ip_t<version>_… or dev_t<version>_…)")
        }
        return try await connection.transaction { connection in
            let state = try connection.query("SELECT erased_at IS NOT NULL AS erased FROM vault_entries WHERE token = $1 FOR UPDATE",
                                              [.text(token)])
            let outcome: Outcome = try state.first.map { try $0.bool("erased") ? .alreadyErased : .erased } ?? .unknown
            let sequence = try AuditLog.append([AuditRecord(action: "forget", subject: token, reason: reason, outcome: outcome.rawValue)],
                                               actor: actor, on: connection)[0]
            if outcome == .erased {
                try connection.execute("""
                    UPDATE vault_entries SET nonce = NULL, ciphertext = NULL, erased_at = now(), erased_by = $2,
                                             erasure_audit_seq = $3
                    WHERE token = $1
                    """, [.text(token), .text("\(actor.osUser) as \(actor.databaseRole)"), .int(sequence)])
            }
            return (outcome, sequence)
        }
    }
}
