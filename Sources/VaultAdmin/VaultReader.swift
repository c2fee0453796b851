import Foundation
public import Postgres
public import Pseudonymization
public import VaultCrypto

/// An original value recovered from the vault.
public struct RecoveredValue: Sendable, Equatable {
    public let token: String
    public let field: PIIField
    public let value: String
    public let tokenKeyVersion: Int
    public let dataKeyID: String
    public let recoveryKeyVersion: Int
}

/// Why a token could not be recovered, worded for compliance staff.
public struct RecoveryError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case malformedToken = "malformed-token"
        case unknownToken = "unknown"
        case erased
        case integrity = "integrity-failure"
        case missingRecoveryKey = "missing-recovery-key"
    }

    public let kind: Kind
    public let token: String
    public let message: String

    public var description: String { message }

    public static func == (lhs: RecoveryError, rhs: RecoveryError) -> Bool { lhs.kind == rhs.kind && lhs.token == rhs.token }
}

/// Opens vault entries in bulk: one query per thousand tokens, each data key
/// unwrapped once (with the recovery private key of the version that wrapped
/// it), then each entry opened with AAD = token ‖ field ‖ data key id. Any
/// mismatch is an integrity error that names the token, never a wrong value.
/// Reveals nothing by itself: callers audit before they show.
public final class VaultReader {
    private let connection: PostgresConnection
    private let privateKey: (Int) throws -> X25519.PrivateKey
    private var ciphers: [String: (cipher: AESGCM, recoveryVersion: Int)] = [:]
    /// Data keys whose recovery key version is not in the key file.
    private var unavailable: [String: Int] = [:]

    public init(connection: PostgresConnection, privateKey: @escaping (Int) throws -> X25519.PrivateKey) {
        self.connection = connection
        self.privateKey = privateKey
    }

    public func recover(_ token: String) async throws -> RecoveredValue {
        try await recover([token])[0].get()
    }

    /// The columns `open` needs; select them with this list.
    public static let entryColumns = """
        token, field, token_key_version, data_key_id::text AS data_key_id, nonce, ciphertext,
        to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS erased_at, erased_by
        """

    /// One result per token, in order. Throws only for failures of the whole
    /// batch (database unreachable, wrong passphrase).
    public func recover(_ tokens: [String]) async throws -> [Result<RecoveredValue, RecoveryError>] {
        let wellFormed = Array(Set(tokens.filter { Token.parse($0) != nil }))
        var rows: [String: PostgresRow] = [:]
        for start in stride(from: 0, to: wellFormed.count, by: 1000) {
            let chunk = Array(wellFormed[start..<min(start + 1000, wellFormed.count)])
            for row in try await connection.query("SELECT \(Self.entryColumns) FROM vault_entries WHERE token = ANY($1::text[])",
                                                  [.textArray(chunk)], prepared: true) {
                rows[try row.string("token")] = row
            }
        }
        return try await open(tokens, rows: rows)
    }

    /// Opens already-fetched entry rows (selected with `entryColumns`).
    public func open(_ tokens: [String], rows: [String: PostgresRow]) async throws -> [Result<RecoveredValue, RecoveryError>] {
        try await loadDataKeys(Set(try rows.values.filter { $0["erased_at"] == nil }.map { try $0.string("data_key_id") }))
        return tokens.map { token in Result { () throws(RecoveryError) in try open(token, rows[token]) } }
    }

    private func open(_ token: String, _ row: PostgresRow?) throws(RecoveryError) -> RecoveredValue {
        guard let parts = Token.parse(token) else {
            throw RecoveryError(kind: .malformedToken, token: token,
                                message: "\(token.prefix(80)) is not a token (expected ip_t<version>_… or dev_t<version>_… with 43 base64url characters)")
        }
        guard let row else {
            throw RecoveryError(kind: .unknownToken, token: token,
                                message: "token \(token) is not in the vault (never ingested, or migrated to a newer tokenization key)")
        }
        if let erasedAt = row["erased_at"] {
            throw RecoveryError(kind: .erased, token: token,
                                message: "token \(token) was erased on \(erasedAt) by \(row["erased_by"] ?? "unknown") (vault forget); its original is gone")
        }
        do {
            let dataKeyID = try row.string("data_key_id")
            if let version = unavailable[dataKeyID] {
                throw RecoveryError(kind: .missingRecoveryKey, token: token,
                                    message: "token \(token) needs recovery key v\(version), which is not in the key file (retired before `vault rewrap` finished?)")
            }
            guard try row.string("field") == parts.field.rawValue, let key = ciphers[dataKeyID] else {
                throw RecoveryError(kind: .integrity, token: token,
                                    message: "integrity check failed for token \(token): its vault row is mislabelled or its data key is missing; nothing was revealed")
            }
            let plaintext = try key.cipher.open(try row.bytes("ciphertext"), nonce: try row.bytes("nonce"),
                                                aad: VaultAAD.entry(token: token, field: parts.field, dataKeyID: dataKeyID))
            return RecoveredValue(token: token, field: parts.field, value: String(decoding: plaintext, as: UTF8.self),
                                  tokenKeyVersion: try row.int("token_key_version"), dataKeyID: dataKeyID,
                                  recoveryKeyVersion: key.recoveryVersion)
        } catch let error as RecoveryError {
            throw error
        } catch {
            throw RecoveryError(kind: .integrity, token: token,
                                message: "integrity check failed for token \(token): its vault entry was altered or belongs to another token; nothing was revealed")
        }
    }

    /// Unwraps the data keys not unwrapped yet. A key that will not unwrap is
    /// left out: its entries then fail, each naming its token.
    private func loadDataKeys(_ ids: Set<String>) async throws {
        let missing = ids.subtracting(ciphers.keys).subtracting(unavailable.keys)
        guard !missing.isEmpty else { return }
        let rows = try await connection.query(
            "SELECT id::text AS id, recovery_key_version, wrapped_key FROM data_keys WHERE id = ANY($1::uuid[])",
            [.textArray(Array(missing))], prepared: true)
        for row in rows {
            let id = try row.string("id")
            let version = try row.int("recovery_key_version")
            let recoveryKey: X25519.PrivateKey
            do {
                recoveryKey = try privateKey(version)
            } catch let error as KeyFileError where error.code == .unknownVersion {
                unavailable[id] = version
                continue
            }
            guard let key = try? DataKeyWrap.unwrap(try row.bytes("wrapped_key"), dataKeyID: id, recoveryVersion: version, with: recoveryKey) else {
                continue
            }
            ciphers[id] = (try AESGCM(key: key), version)
        }
    }
}
