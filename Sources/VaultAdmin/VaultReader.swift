import Foundation
public import KeyCustody
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

/// Why a token could not be recovered, worded for compliance staff. Never
/// repeats an input that is not a token: it might be an original someone pasted.
public struct RecoveryError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case malformedToken = "malformed-token"
        case unknownToken = "unknown"
        case erased
        case integrity = "integrity-failure"
        case missingRecoveryKey = "missing-recovery-key"
        case missingTokenizationKey = "missing-tokenization-key"
    }

    public let kind: Kind
    public let token: String
    public let message: String

    public var description: String { message }

    public static func == (lhs: RecoveryError, rhs: RecoveryError) -> Bool { lhs.kind == rhs.kind && lhs.token == rhs.token }

    /// The error for input that is not a token, described by its shape only.
    public static func malformed(_ input: String) -> RecoveryError {
        RecoveryError(
            kind: .malformedToken, token: input,
            message:
                "the input \(TokenShape.describe(input)) is not a token (expected ip_t<version>_… or dev_t<version>_… with 43 base64url characters)"
        )
    }
}

/// What an input looks like, without showing it: its length and the kinds of
/// characters in it. A pasted IP address is "11 characters: digits, dots".
public enum TokenShape {
    public static func describe(_ input: String) -> String {
        var kinds: [String] = []
        func note(_ kind: String) { if !kinds.contains(kind) { kinds.append(kind) } }
        for scalar in input.unicodeScalars {
            switch scalar {
            case "0"..."9": note("digits")
            case "a"..."z", "A"..."Z": note("letters")
            case ".": note("dots")
            case ":": note("colons")
            case "-", "_": note("dashes or underscores")
            case " ", "\t": note("spaces")
            default: note(scalar.isASCII ? "punctuation" : "non-ASCII characters")
            }
        }
        let count = input.unicodeScalars.count
        return "(\(count) character\(count == 1 ? "" : "s")\(kinds.isEmpty ? "" : ": " + kinds.joined(separator: ", ")))"
    }
}

/// A vault entry as fetched (by `vault_reveal`, or by the rotation role directly),
/// with the data key it is sealed under.
public struct SealedEntry: Sendable {
    public let token: String
    public let field: String
    public let tokenKeyVersion: Int
    public let dataKeyID: String
    public let nonce: [UInt8]?
    public let ciphertext: [UInt8]?
    public let erasedAt: String?
    public let erasedBy: String?
    public let recoveryKeyVersion: Int?
    public let wrappedKey: [UInt8]?

    /// Columns to select from `vault_entries v LEFT JOIN data_keys d ON d.id = v.data_key_id`.
    public static let columns = """
        v.token, v.field, v.token_key_version, v.data_key_id::text AS data_key_id, v.nonce, v.ciphertext,
        to_char(v.erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS erased_at, v.erased_by,
        d.recovery_key_version, d.wrapped_key
        """

    /// This entry, taken as erased (`erasedAt`), whatever it holds.
    func erased(at erasedAt: String) -> SealedEntry {
        SealedEntry(
            token: token, field: field, tokenKeyVersion: tokenKeyVersion, dataKeyID: dataKeyID, nonce: nonce, ciphertext: ciphertext,
            erasedAt: erasedAt, erasedBy: erasedBy, recoveryKeyVersion: recoveryKeyVersion, wrappedKey: wrappedKey)
    }

    private init(
        token: String, field: String, tokenKeyVersion: Int, dataKeyID: String, nonce: [UInt8]?, ciphertext: [UInt8]?, erasedAt: String?,
        erasedBy: String?, recoveryKeyVersion: Int?, wrappedKey: [UInt8]?
    ) {
        self.token = token
        self.field = field
        self.tokenKeyVersion = tokenKeyVersion
        self.dataKeyID = dataKeyID
        self.nonce = nonce
        self.ciphertext = ciphertext
        self.erasedAt = erasedAt
        self.erasedBy = erasedBy
        self.recoveryKeyVersion = recoveryKeyVersion
        self.wrappedKey = wrappedKey
    }

    public init(_ row: PostgresRow) throws {
        token = try row.string("token")
        field = try row.string("field")
        tokenKeyVersion = try row.int("token_key_version")
        dataKeyID = try row.string("data_key_id")
        nonce = try row.optionalBytes("nonce")
        ciphertext = try row.optionalBytes("ciphertext")
        erasedAt = row["erased_at"]
        erasedBy = row["erased_by"]
        recoveryKeyVersion = try row.optionalInt("recovery_key_version")
        wrappedKey = try row.optionalBytes("wrapped_key")
    }
}

/// Opens vault entries: each data key unwrapped once (with the recovery
/// private key of the version that wrapped it), each entry opened with AAD =
/// token ‖ field ‖ data key id, and then the value is tokenized again under
/// the token's key version (locally or by KMS, a batch at a time) and compared
/// with the token in constant time. Whatever does not hold is an integrity
/// error that names the token: a ciphertext moved to another row, or an entry
/// forged by someone who only has the public key (HPKE base mode
/// authenticates no sender), never shows a value.
/// Reveals nothing by itself: callers audit before they show.
public final class VaultReader {
    private let privateKey: (Int) async throws -> X25519.PrivateKey
    let minter: TokenMinter
    private var ciphers: [String: (cipher: AESGCM, recoveryVersion: Int)] = [:]
    /// Data keys whose recovery key version is not in the key file.
    private var unavailable: [String: Int] = [:]

    public init(minter: TokenMinter, privateKey: @escaping (Int) async throws -> X25519.PrivateKey) {
        self.minter = minter
        self.privateKey = privateKey
    }

    /// Unlocks, before anything is revealed, the recovery keys data keys are
    /// wrapped to (the active one when there are none yet): a wrong passphrase
    /// (or a KMS refusal) fails here, so no audit row says a value was revealed
    /// that nobody could see. Usually one version (more only until `vault
    /// rewrap` has run); asking which the tokens need cost a scan per chunk. A
    /// version not in the key file is left for each token to report.
    func unlockKeys(on connection: PostgresConnection) async throws {
        for row in try await connection.query(
            """
            SELECT DISTINCT recovery_key_version AS version FROM data_keys
            UNION SELECT version FROM key_versions WHERE kind = 'recovery' AND state = 'active'
            """)
        {
            do {
                _ = try await privateKey(try row.int("version"))
            } catch let error as KeyFileError where error.code == .unknownVersion {
                continue
            }
        }
    }

    /// One result per token, in order; `entries` holds the entries found, by
    /// token (erased ones without a ciphertext), `erasures` the proofs of
    /// erasure found: an erased entry without one is an integrity failure.
    /// Throws only for failures of the whole batch (a wrong passphrase, KMS unavailable).
    public func open(_ tokens: [String], entries: [String: SealedEntry], erasures: [String: ErasureProof]) async throws
        -> [Result<RecoveredValue, RecoveryError>]
    {
        // The keys live entries need; a wrapped key may come on any row of its
        // data key, a tombstone's included (retokenize sends it once per key).
        let needed = Set(entries.values.filter { $0.erasedAt == nil }.map(\.dataKeyID))
        try await loadDataKeys(
            entries.values.filter { needed.contains($0.dataKeyID) }.map { ($0.dataKeyID, $0.recoveryKeyVersion, $0.wrappedKey) })
        var results = tokens.map { token in Result { () throws(RecoveryError) in try decrypt(token, entries[token], erasures[token]) } }
        // Every opened value must produce its token again: one minting call per key version.
        var byVersion: [Int: [Int]] = [:]
        for (index, result) in results.enumerated() {
            if case .success(let value) = result { byVersion[value.tokenKeyVersion, default: []].append(index) }
        }
        for (version, indices) in byVersion {
            let values = indices.map { try! results[$0].get() }
            let recomputed = try await minter.tokens(values.map { TokenRequest(field: $0.field, value: $0.value) }, version: version)
            for (index, (value, token)) in zip(indices, zip(values, recomputed))
            where !constantTimeEquals(Array(token.utf8), Array(value.token.utf8)) {
                results[index] = .failure(
                    integrityFailure(
                        value.token, "the value in its vault entry does not produce this token (a forged or substituted entry)"))
            }
        }
        return results
    }

    /// Opens one entry; the value is not verified against its token yet.
    private func decrypt(_ token: String, _ entry: SealedEntry?, _ erasure: ErasureProof?) throws(RecoveryError) -> RecoveredValue {
        guard let parts = Token.parse(token) else { throw RecoveryError.malformed(token) }
        if let erasure {
            // Proven erased: whatever ciphertext a row holds now was written back afterwards.
            throw RecoveryError(kind: .erased, token: token, message: erasure.describe(token))
        }
        guard let entry else {
            throw RecoveryError(
                kind: .unknownToken, token: token,
                message: "token \(token) is not in the vault (never ingested, or migrated to a newer tokenization key)")
        }
        if entry.erasedAt != nil {
            throw integrityFailure(
                token,
                "its vault entry is marked erased, but no audit row authenticated with the audit key says it was (vault forget writes one): the erasure was written by someone else"
            )
        }
        if let version = unavailable[entry.dataKeyID] {
            throw RecoveryError(
                kind: .missingRecoveryKey, token: token,
                message:
                    "token \(token) needs recovery key v\(version), which is not in the key file (retired before `vault rewrap` finished?)")
        }
        guard entry.field == parts.field.rawValue, entry.tokenKeyVersion == parts.keyVersion, let key = ciphers[entry.dataKeyID],
            let nonce = entry.nonce, let ciphertext = entry.ciphertext
        else {
            throw integrityFailure(token, "its vault row is mislabelled or its data key is missing")
        }
        guard minter.keyring.key(version: parts.keyVersion) != nil else {
            throw RecoveryError(
                kind: .missingTokenizationKey, token: token,
                message:
                    "token \(token) is of tokenization key v\(parts.keyVersion), which is not in the key file; its value cannot be verified, so it is not shown"
            )
        }
        let plaintext: [UInt8]
        do {
            plaintext = try key.cipher.open(
                ciphertext, nonce: nonce, aad: VaultAAD.entry(token: token, field: parts.field, dataKeyID: entry.dataKeyID))
        } catch {
            throw integrityFailure(token, "its vault entry was altered or belongs to another token")
        }
        return RecoveredValue(
            token: token, field: parts.field, value: String(decoding: plaintext, as: UTF8.self), tokenKeyVersion: parts.keyVersion,
            dataKeyID: entry.dataKeyID, recoveryKeyVersion: key.recoveryVersion)
    }

    /// Opens quarantined bodies (AAD = receipt id ‖ data key id): nil for one
    /// whose data key is not available or that does not open (altered).
    func openQuarantined(_ sealed: [QuarantineReview.Sealed]) async throws -> [[UInt8]?] {
        try await loadDataKeys(sealed.map { ($0.dataKeyID, $0.recoveryKeyVersion, $0.wrappedKey) })
        return sealed.map { body in
            guard let key = ciphers[body.dataKeyID] else { return nil }
            return try? key.cipher.open(
                body.sealedBody, nonce: body.nonce, aad: VaultAAD.quarantine(receiptID: body.receiptID, dataKeyID: body.dataKeyID))
        }
    }

    private func integrityFailure(_ token: String, _ why: String) -> RecoveryError {
        RecoveryError(kind: .integrity, token: token, message: "integrity check failed for token \(token): \(why); nothing was revealed")
    }

    /// Unwraps the data keys not unwrapped yet. A key that will not unwrap is
    /// left out: its entries then fail, each naming its token.
    /// (An entry may carry its data key's wrapped key or leave it to another
    /// entry under the same key.)
    private func loadDataKeys(_ entries: [(dataKeyID: String, recoveryKeyVersion: Int?, wrappedKey: [UInt8]?)]) async throws {
        for entry in entries where ciphers[entry.dataKeyID] == nil && unavailable[entry.dataKeyID] == nil {
            guard let version = entry.recoveryKeyVersion, let wrapped = entry.wrappedKey else { continue }
            let recoveryKey: X25519.PrivateKey
            do {
                recoveryKey = try await privateKey(version)
            } catch let error as KeyFileError where error.code == .unknownVersion {
                unavailable[entry.dataKeyID] = version
                continue
            }
            guard let key = try? DataKeyWrap.unwrap(wrapped, dataKeyID: entry.dataKeyID, recoveryVersion: version, with: recoveryKey) else {
                continue
            }
            ciphers[entry.dataKeyID] = (try AESGCM(key: key), version)
        }
    }
}
