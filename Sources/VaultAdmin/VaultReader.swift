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
    public enum Kind: Sendable, Equatable {
        case malformedToken
        case unknownToken
        case erased
        case integrity
        case missingRecoveryKey
    }

    public let kind: Kind
    public let token: String
    public let message: String

    public var description: String { message }

    public static func == (lhs: RecoveryError, rhs: RecoveryError) -> Bool { lhs.kind == rhs.kind && lhs.token == rhs.token }
}

/// Opens vault entries: unwraps each data key once with the recovery private
/// key of the version that wrapped it, then opens entries with
/// AAD = token ‖ field ‖ data key id. Any mismatch is an integrity error that
/// names the token, never a wrong value.
public final class VaultReader {
    private let connection: PostgresConnection
    private let privateKey: (Int) throws -> X25519.PrivateKey
    private var dataKeys: [String: (key: SecureBytes, recoveryVersion: Int)] = [:]
    private var ciphers: [String: AESGCM] = [:]

    /// - Parameter privateKey: the recovery private key for a version (unlocked on demand).
    public init(connection: PostgresConnection, privateKey: @escaping (Int) throws -> X25519.PrivateKey) {
        self.connection = connection
        self.privateKey = privateKey
    }

    public func recover(_ token: String) async throws -> RecoveredValue {
        guard let parts = Token.parse(token) else {
            throw RecoveryError(kind: .malformedToken, token: token,
                                message: "\(token.prefix(80)) is not a token (expected ip_t<version>_… or dev_t<version>_…, 43 base64url characters)")
        }
        let rows = try await connection.query("""
            SELECT field, token_key_version, data_key_id::text AS data_key_id, nonce, ciphertext
            FROM vault_entries WHERE token = $1
            """, [.text(token)], prepared: true)
        guard let row = rows.first else {
            throw RecoveryError(kind: .unknownToken, token: token, message: "token \(token) is not in the vault (never ingested, or migrated to a newer key version)")
        }
        let storedField = try row.string("field")
        let dataKeyID = try row.string("data_key_id")
        guard storedField == parts.field.rawValue else {
            throw RecoveryError(kind: .integrity, token: token,
                                message: "integrity check failed for token \(token): the vault row is labelled \(storedField)")
        }
        let (cipher, recoveryVersion) = try await cipher(for: dataKeyID, token: token)
        let plaintext: [UInt8]
        do {
            plaintext = try cipher.open(try row.bytes("ciphertext"), nonce: try row.bytes("nonce"),
                                        aad: VaultAAD.entry(token: token, field: parts.field, dataKeyID: dataKeyID))
        } catch let error as CryptoError where error.code == .authenticationFailed || error.code == .invalidInput {
            throw RecoveryError(kind: .integrity, token: token,
                                message: "integrity check failed for token \(token): its vault entry was altered or belongs to another token; nothing was revealed")
        }
        return RecoveredValue(token: token, field: parts.field, value: String(decoding: plaintext, as: UTF8.self),
                              tokenKeyVersion: try row.int("token_key_version"), dataKeyID: dataKeyID, recoveryKeyVersion: recoveryVersion)
    }

    private func cipher(for dataKeyID: String, token: String) async throws -> (AESGCM, Int) {
        if let cipher = ciphers[dataKeyID], let known = dataKeys[dataKeyID] { return (cipher, known.recoveryVersion) }
        guard let row = try await connection.query(
            "SELECT recovery_key_version, wrapped_key FROM data_keys WHERE id = $1::uuid", [.text(dataKeyID)], prepared: true).first else {
            throw RecoveryError(kind: .integrity, token: token, message: "integrity check failed for token \(token): its data key \(dataKeyID) is missing")
        }
        let version = try row.int("recovery_key_version")
        let recoveryKey: X25519.PrivateKey
        do {
            recoveryKey = try privateKey(version)
        } catch let error as KeyFileError where error.code == .unknownVersion {
            throw RecoveryError(kind: .missingRecoveryKey, token: token,
                                message: "token \(token) needs recovery key v\(version), which is not in the key file (retired before `vault rewrap` finished?)")
        }
        let key: SecureBytes
        do {
            key = try DataKeyWrap.unwrap(try row.bytes("wrapped_key"), dataKeyID: dataKeyID, recoveryVersion: version, with: recoveryKey)
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw RecoveryError(kind: .integrity, token: token, message: "integrity check failed for token \(token): \(error.message)")
        }
        let cipher = try AESGCM(key: key)
        dataKeys[dataKeyID] = (key, version)
        ciphers[dataKeyID] = cipher
        return (cipher, version)
    }
}
