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
        /// For subject access, the row that names the user.
        var userSequence: Int64? = nil
        /// Set when the four-eyes policy refused: the rows say 'refused', nothing was released.
        var refused = false

        func requireAllowed(action: String, on connection: PostgresConnection) async throws {
            guard refused else { return }
            throw ApprovalError.refused(
                policy: try await Approvals.policy(on: connection), auditSequence: userSequence ?? sequences.first)
        }
    }

    /// Under whose authority values are revealed: the approved request, if
    /// any, and for subject access the user whose tokens they are.
    struct Scope: Sendable {
        var request: Approvals.Request? = nil
        var userID: String? = nil

        static let none = Scope()

        /// The reason on the rows: the request's, naming it, when there is one.
        func reason(_ given: String) -> String { request?.auditReason ?? given }
    }

    /// At most this many tokens per transaction.
    static let chunkSize = 5_000

    static func reveal(
        action: String, _ tokens: [String], reason: String, scope: Scope = .none, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> Released {
        // The keys first: a wrong passphrase must fail before any row says "revealed".
        try await reader.unlockKeys(on: connection)
        let reason = scope.reason(reason)
        return try await AuditLog.retryingChanges(on: connection) { connection in
            let head = try AuditLog.head(on: connection)
            let wellFormed = Array(Set(tokens.filter { Token.parse($0) != nil }))
            // What the vault holds for them (metadata only: no sealed column is
            // readable here), and whether an erasure row names them (a value
            // erased stays erased even when a ciphertext reappears): the
            // outcomes vault_reveal checks.
            var erased: [String: Bool] = [:]
            var tombstones: [String: SealedEntry] = [:]
            for row in try connection.query(
                """
                SELECT token, field, token_key_version, data_key_id::text AS data_key_id, NULL::bytea AS nonce, NULL::bytea AS ciphertext,
                       coalesce(to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                                CASE WHEN v.token = ANY(named.tokens) THEN 'after its erasure' END) AS erased_at,
                       erased_by, NULL::integer AS recovery_key_version, NULL::bytea AS wrapped_key
                -- The erasure rows' tokens apart, not per entry: on Citus the vault
                -- is on the workers and the audit log on the coordinator.
                FROM vault_entries v,
                     (SELECT ARRAY(SELECT a.subject FROM audit_log a WHERE a.subject = ANY($1::text[])
                                   AND a.action IN ('forget', 'forget.carry') AND a.outcome = 'erased') AS tokens) named
                WHERE token = ANY($1::text[])
                """, [.textArray(wellFormed)], prepared: true)
            {
                let entry = try SealedEntry(row)
                erased[entry.token] = entry.erasedAt != nil
                if entry.erasedAt != nil { tombstones[entry.token] = entry }
            }
            var records = tokens.map { token -> AuditRecord in
                guard Token.parse(token) != nil else {
                    // It might be anything someone pasted, even an original: described, not recorded.
                    return AuditRecord(
                        action: action, subject: "malformed input \(TokenShape.describe(token))", reason: reason,
                        outcome: RecoveryError.Kind.malformedToken.rawValue)
                }
                let outcome = erased[token].map { $0 ? "erased" : "revealed" } ?? "unknown"
                return AuditRecord(action: action, subject: token, reason: reason, outcome: outcome)
            }
            // Under the four-eyes policy without a request: the rows say 'refused', and nothing is released.
            let refused =
                try scope.request == nil && Approvals.needed(count: records.filter { $0.outcome == "revealed" }.count, on: connection)
            if refused {
                records = records.map {
                    $0.outcome == "revealed" ? AuditRecord(action: action, subject: $0.subject, reason: reason, outcome: "refused") : $0
                }
            }
            if let userID = scope.userID {
                records.insert(
                    AuditRecord(action: action, subject: "user:\(userID)", reason: reason, outcome: refused ? "refused" : "subject-access"),
                    at: 0)
            }
            var entries = try AuditLog.prepare(records, after: head, actor: actor)
            var parameters = AuditLog.rowParameters(entries, actions: false)
            parameters.insert(.text(action), at: 2)
            parameters += [scope.request.map { .int($0.id) } ?? .null, .optionalText(scope.userID)]
            var released = tombstones
            for row in try connection.query(
                """
                SELECT token, field, token_key_version, data_key_id, nonce, ciphertext, NULL::text AS erased_at, NULL::text AS erased_by,
                       recovery_key_version, wrapped_key
                FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                """, parameters, prepared: true)
            {
                let entry = try SealedEntry(row)
                released[entry.token] = entry
            }
            // The rows must really be there: a replaced vault_reveal that hands out
            // values without appending them is caught here, before anything is opened.
            try AuditLog.requireStored(entries.last!, on: connection)
            let userSequence = scope.userID == nil ? nil : entries.removeFirst().sequence
            return Released(
                sequences: entries.map(\.sequence), entries: refused ? [:] : released, userSequence: userSequence, refused: refused)
        }
    }

    /// Opens what was released; a value that fails to open or to verify after
    /// its release, or an erasure no authenticated audit row proves, gets a
    /// second audit row with the failure, committed before anything is shown.
    /// Returns each token's result and its last audit row.
    static func open(
        _ tokens: [String], action: String, released: Released, reader: VaultReader, reason: String, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> [(result: Result<RecoveredValue, RecoveryError>, auditSequence: Int64)] {
        // Only what the vault calls erased needs its proof (an entry an erasure row
        // names counts as erased there, whatever it holds).
        let tombstones = released.entries.values.filter { $0.erasedAt != nil }.map(\.token)
        let erasures = try await ErasureProofs(keys: actor.keys, minter: reader.minter).proofs(
            for: tombstones, tombstones: Set(tombstones), on: connection)
        var results = try await reader.open(tokens, entries: released.entries, erasures: erasures)
        var failed: [(index: Int, record: AuditRecord)] = []
        for (index, (token, result)) in zip(tokens, results).enumerated() {
            guard case .failure(let error) = result,
                ![.malformedToken, .unknownToken, .erased].contains(error.kind)
            else { continue }
            failed.append((index, AuditRecord(action: action, subject: token, reason: reason, outcome: error.kind.rawValue)))
        }
        // A value `vault forget` erased is not shown whatever entry holds it now
        // (one made again under another token, by hand or from a backup).
        for index in try await suppressed(results, minter: reader.minter, on: connection) {
            results[index] = .failure(
                RecoveryError(
                    kind: .erased, token: tokens[index],
                    message:
                        "the value behind token \(tokens[index]) was erased by vault forget (its suppression is recorded); this entry was made afterwards and is not shown"
                ))
            // (For forget: already erased. An erasure row is vault_forget's alone to write.)
            failed.append(
                (
                    index,
                    AuditRecord(
                        action: action, subject: tokens[index], reason: reason, outcome: action == "forget" ? "already-erased" : "erased")
                ))
        }
        var sequences = released.sequences
        if !failed.isEmpty {
            let appended = try await AuditLog.appendCommitted(failed.map(\.record), actor: actor, on: connection)
            for (failure, sequence) in zip(failed, appended) { sequences[failure.index] = sequence }
        }
        return zip(results, sequences).map { ($0, $1) }
    }

    /// The indices of opened values whose suppression `vault forget` recorded.
    static func suppressed(
        _ results: [Result<RecoveredValue, RecoveryError>], minter: TokenMinter, on connection: PostgresConnection
    ) async throws -> [Int] {
        guard minter.hasSuppressionKey else { return [] }
        let opened = results.enumerated().compactMap { index, result -> (Int, RecoveredValue)? in
            guard case .success(let value) = result else { return nil }
            return (index, value)
        }
        guard !opened.isEmpty, try await connection.query("SELECT EXISTS (SELECT FROM vault_suppressions) AS any")[0].bool("any")
        else { return [] }
        let tags = try await minter.suppressionTags(opened.map { TokenRequest(field: $0.1.field, value: $0.1.value) })
        let found = Set(
            try await connection.query("SELECT tag FROM vault_suppressions WHERE tag = ANY($1::bytea[])", [.byteArrays(tags)])
                .map { try $0.bytes("tag") })
        guard !found.isEmpty else { return [] }
        return zip(opened, tags).compactMap { found.contains($1) ? $0.0 : nil }
    }

    /// Reveals and opens `tokens` in chunks: each chunk's audit rows commit before it is opened.
    /// Throws `ApprovalError` when the four-eyes policy refused (after the refusal's rows committed).
    static func revealAndOpen(
        action: String, _ tokens: [String], reason: String, scope: Scope = .none, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> [(result: Result<RecoveredValue, RecoveryError>, auditSequence: Int64)] {
        var opened: [(result: Result<RecoveredValue, RecoveryError>, auditSequence: Int64)] = []
        opened.reserveCapacity(tokens.count)
        for start in stride(from: 0, to: tokens.count, by: chunkSize) {
            let chunk = Array(tokens[start..<min(start + chunkSize, tokens.count)])
            let released = try await reveal(
                action: action, chunk, reason: reason, scope: scope, reader: reader, actor: actor, connection: connection)
            try await released.requireAllowed(action: action, on: connection)
            opened += try await open(
                chunk, action: action, released: released, reader: reader, reason: scope.reason(reason), actor: actor,
                connection: connection)
        }
        return opened
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
        _ tokens: [String], reason: String, request: Approvals.Request? = nil, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> [Outcome] {
        let opened = try await AuditedReveal.revealAndOpen(
            action: "recover", tokens, reason: reason, scope: .init(request: request), reader: reader, actor: actor,
            connection: connection)
        return zip(tokens, opened).map { Outcome(token: $0, result: $1.result, auditSequence: $1.auditSequence) }
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

    public struct Result: Sendable {
        public let matches: [Match]
        /// The first audit row of the lookup.
        public let auditSequence: Int64
        /// Erased by `vault forget`: ingest stores this value no more (nil
        /// when the key files have no suppression key to tell).
        public let suppressed: Bool?
    }

    public static func lookup(
        _ value: String, field: PIIField, reason: String, request: Approvals.Request? = nil, minter: TokenMinter, reader: VaultReader,
        actor: AuditActor, connection: PostgresConnection
    ) async throws -> Result {
        let keyring = minter.keyring
        let tokens = try await ValueTokens.tokens(of: value, field: field, minter: minter).map(\.token)
        let column = field == .ip ? "masked_ip" : "masked_device_id"
        var rows: [String: Int] = [:]
        for row in try await connection.query(
            "SELECT \(column) AS token, count(*) AS n FROM user_logins WHERE \(column) = ANY($1::text[]) GROUP BY 1", [.textArray(tokens)])
        {
            rows[try row.string("token")] = try row.int("n")
        }
        let opened = try await AuditedReveal.revealAndOpen(
            action: "lookup", tokens, reason: reason, scope: .init(request: request), reader: reader, actor: actor,
            connection: connection)
        var suppressed: Bool? = nil
        if minter.hasSuppressionKey {
            let canonical = field == .ip ? CanonicalIP.canonicalize(value) ?? value : value
            let tag = try await minter.suppressionTags([TokenRequest(field: field, value: canonical)])[0]
            suppressed = try await !connection.query("SELECT 1 FROM vault_suppressions WHERE tag = $1", [.bytes(tag)]).isEmpty
        }
        let matches = zip(zip(keyring.keys, tokens), opened).map { keyAndToken, outcome -> Match in
            let vault: String
            switch outcome.result {
            case .success: vault = "stored"
            case .failure(let error) where error.kind == .unknownToken: vault = "absent"
            case .failure(let error): vault = error.kind.rawValue
            }
            return Match(keyVersion: keyAndToken.0.version, token: keyAndToken.1, rows: rows[keyAndToken.1] ?? 0, vault: vault)
        }
        return Result(matches: matches, auditSequence: opened.first?.auditSequence ?? 0, suppressed: suppressed)
    }
}

public struct LookupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// `vault forget`: crypto-shredding. The sealed originals are erased in place
/// (a tombstone records when and by whom) by the database's `vault_forget`, in
/// the same transaction as their audit rows; the tokens stay in `user_logins`.
///
/// Erasure sticks: each value is opened first (an audited reveal, action
/// `forget`) to erase it under every tokenization version the key file holds
/// and to record its suppression tag, so ingest stores it no more when it
/// comes again, under any later key version.
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
        /// For a token not given but erased with one that was: the given token
        /// whose value it is (the same value under another key version).
        public let sameValueAs: String?
        /// Whether the value's suppression was recorded (nil for a dry run, an
        /// erasure that was not, and tokens whose value did not open).
        public let suppressed: Bool?
    }

    /// What erasing `tokens` touches: for each, the `user_logins` rows that
    /// carry it and how many users those are; and over all of them, the rows
    /// and the users (counts only: never whose).
    public struct BlastRadius: Sendable {
        public let byToken: [String: (rows: Int, users: Int)]
        public let rows: Int
        public let users: Int

        public func describe(_ token: String) -> String {
            let (rows, users) = byToken[token] ?? (0, 0)
            return "on \(rows) row\(rows == 1 ? "" : "s") of \(users) user\(users == 1 ? "" : "s")"
        }

        public var summary: String {
            "\(rows) row\(rows == 1 ? "" : "s") of \(users) user\(users == 1 ? "" : "s") carry \(byToken.count == 1 ? "this token" : "these \(byToken.count) tokens")"
        }
    }

    public static func blastRadius(of tokens: [String], on connection: PostgresConnection) async throws -> BlastRadius {
        let unique = Array(Set(tokens)).sorted()
        var byToken: [String: (rows: Int, users: Int)] = [:]
        for row in try await connection.query(
            """
            SELECT token, count(*) AS rows, count(DISTINCT user_id) AS users
            FROM (SELECT masked_ip AS token, user_id FROM user_logins WHERE masked_ip = ANY($1::text[])
                  UNION ALL
                  SELECT masked_device_id, user_id FROM user_logins WHERE masked_device_id = ANY($1::text[])) carried
            GROUP BY token
            """, [.textArray(unique)])
        {
            byToken[try row.string("token")] = (try row.int("rows"), try row.int("users"))
        }
        let total = try await connection.query(
            """
            SELECT count(*) AS rows, count(DISTINCT user_id) AS users FROM user_logins
            WHERE masked_ip = ANY($1::text[]) OR masked_device_id = ANY($1::text[])
            """, [.textArray(unique)])[0]
        for token in unique where byToken[token] == nil { byToken[token] = (0, 0) }
        return BlastRadius(byToken: byToken, rows: try total.int("rows"), users: try total.int("users"))
    }

    /// The tokens on `userID`'s rows, apart: those no other user's row carries,
    /// and those shared, with how many other users carry each (never who).
    public static func tokens(ofUser userID: String, on connection: PostgresConnection) async throws -> (
        own: [String], shared: [(token: String, otherUsers: Int)]
    ) {
        let tokens = try await SubjectAccess.tokens(of: userID, on: connection)
        let radius = try await blastRadius(of: tokens, on: connection)
        var own: [String] = []
        var shared: [(token: String, otherUsers: Int)] = []
        for token in tokens {
            let others = (radius.byToken[token]?.users ?? 1) - 1
            if others > 0 { shared.append((token, others)) } else { own.append(token) }
        }
        return (own, shared)
    }

    /// Erases every token in `tokens` (each once), or with `dryRun` says what
    /// it would do. Throws for input that is not a token before anything happens.
    public static func forget(
        _ tokens: [String], reason: String, request: Approvals.Request? = nil, dryRun: Bool = false, reader: VaultReader,
        actor: AuditActor, connection: PostgresConnection
    ) async throws -> [Erasure] {
        if let malformed = tokens.first(where: { Token.parse($0) == nil }) { throw RecoveryError.malformed(malformed) }
        var seen = Set<String>()
        let unique = tokens.filter { seen.insert($0).inserted }
        guard !unique.isEmpty else { return [] }
        if dryRun {
            let current = try await connection.transaction { connection in try Self.states(of: unique, on: connection) }
            return unique.map {
                Erasure(token: $0, outcome: current[$0] ?? .unknown, auditSequence: nil, sameValueAs: nil, suppressed: nil)
            }
        }
        // The values, to find them under every key version and to suppress them.
        let minter = reader.minter
        let opened = try await AuditedReveal.revealAndOpen(
            action: "forget", unique, reason: reason, scope: .init(request: request), reader: reader, actor: actor,
            connection: connection)
        let reason = request?.auditReason ?? reason
        var sameValue: [String: String] = [:]
        var suppressions: [(tag: [UInt8], field: PIIField)] = []
        var suppressedTokens = Set<String>()
        let values = zip(unique, opened).compactMap { token, result -> (String, RecoveredValue)? in
            guard case .success(let value) = result.result else { return nil }
            return (token, value)
        }
        for (token, value) in values {
            for key in minter.keyring.keys where key.version != value.tokenKeyVersion {
                let other = try await minter.token(TokenRequest(field: value.field, value: value.value), version: key.version)
                // Under a request, only what it names (the database refuses the rest).
                guard request.map({ $0.scope.contains(other) }) ?? true else { continue }
                if !seen.contains(other), sameValue[other] == nil { sameValue[other] = token }
            }
        }
        if minter.hasSuppressionKey {
            let tags = try await minter.suppressionTags(values.map { TokenRequest(field: $0.1.field, value: $0.1.value) })
            suppressions = zip(tags, values).map { ($0, $1.1.field) }
            suppressedTokens = Set(values.map(\.0))
        }
        let others = sameValue.keys.sorted()
        let sameValueAs = sameValue
        let suppressionTags = suppressions
        let suppressedValues = suppressedTokens
        return try await AuditLog.retryingChanges(on: connection) { connection in
            let head = try AuditLog.head(on: connection)
            let states = try states(of: unique + others, on: connection)
            // Other versions' tokens count only where the vault holds them.
            let erasing = unique + others.filter { states[$0] != nil }
            let outcomes = erasing.map { states[$0] ?? .unknown }
            let entries = try AuditLog.prepare(
                zip(erasing, outcomes).map {
                    AuditRecord(action: "forget", subject: $0, reason: reason, outcome: $1.rawValue)
                }, after: head, actor: actor)
            // The rows' subjects are the tokens: the parameters are vault_forget's as they are, then the suppressions.
            try connection.query(
                "SELECT vault_forget($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                AuditLog.rowParameters(entries, actions: false) + [
                    .byteArrays(suppressionTags.map(\.tag)), .textArray(suppressionTags.map(\.field.rawValue)),
                    request.map { .int($0.id) } ?? .null,
                ], prepared: true)
            try AuditLog.requireStored(entries.last!, on: connection)
            return zip(erasing, zip(outcomes, entries)).map { token, outcomeAndEntry in
                let given = sameValueAs[token] ?? token
                return Erasure(
                    token: token, outcome: outcomeAndEntry.0, auditSequence: outcomeAndEntry.1.sequence, sameValueAs: sameValueAs[token],
                    suppressed: suppressedValues.contains(given) ? true : nil)
            }
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
