public import Foundation

/// Where a key version stands in its life.
public enum KeyState: String, Codable, Sendable, CustomStringConvertible {
    /// Used for new work (new tokens, new data-key wraps).
    case active
    /// Kept so existing data stays usable; no new work uses it.
    case decryptOnly = "decrypt-only"

    public var description: String { rawValue }
}

/// One tokenization (HMAC) key version.
public struct TokenizationKey: Sendable {
    public let version: Int
    public let state: KeyState
    public let createdAt: String
    public let secret: SecureBytes
}

/// `tokenization.json`: the HMAC keys, one active. Secret (mode 0600).
public struct TokenizationKeyring: Sendable {
    public static let format = "pseudonymizer.tokenization-keys"
    public let keys: [TokenizationKey]

    public var active: TokenizationKey { keys.first { $0.state == .active }! }

    public func key(version: Int) -> TokenizationKey? { keys.first { $0.version == version } }

    init(keys: [TokenizationKey]) throws {
        self.keys = keys.sorted { $0.version < $1.version }
        try validateVersions(keys.map { ($0.version, $0.state) }, what: "tokenization key")
    }

    public static func generate(now: Date) throws -> TokenizationKeyring {
        try TokenizationKeyring(keys: [TokenizationKey(version: 1, state: .active, createdAt: timestamp(now), secret: .random(count: 32))])
    }

    /// A new active version; the previous active one becomes decrypt-only.
    public func rotated(now: Date) throws -> TokenizationKeyring {
        let next = (keys.map(\.version).max() ?? 0) + 1
        let demoted = keys.map { TokenizationKey(version: $0.version, state: .decryptOnly, createdAt: $0.createdAt, secret: $0.secret) }
        return try TokenizationKeyring(
            keys: demoted + [TokenizationKey(version: next, state: .active, createdAt: timestamp(now), secret: .random(count: 32))])
    }

    /// Without `version` (its secret is gone with the returned keyring's file).
    public func removing(version: Int) throws -> TokenizationKeyring {
        guard let key = key(version: version) else { throw KeyFileError(.unknownVersion, "there is no tokenization key v\(version)") }
        guard key.state != .active else {
            throw KeyFileError(.refused, "tokenization key v\(version) is the active one; rotate first (`vault keys rotate --tokenization`)")
        }
        return try TokenizationKeyring(keys: keys.filter { $0.version != version })
    }

    private struct File: Codable {
        struct Key: Codable {
            let version: Int
            let state: KeyState
            let created_at: String
            let key: String
        }
        let format: String
        let format_version: Int
        let keys: [Key]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> TokenizationKeyring {
        let file = try decodeJSON(File.self, bytes, path: path, format: format)
        let keys = try file.keys.map { entry -> TokenizationKey in
            guard let secret = Base64.decode(entry.key), secret.count == 32 else {
                throw KeyFileError(.malformed, "\(path): tokenization key v\(entry.version) is not 32 bytes of base64")
            }
            return TokenizationKey(version: entry.version, state: entry.state, createdAt: entry.created_at, secret: SecureBytes(secret))
        }
        do { return try TokenizationKeyring(keys: keys) } catch let error as KeyFileError {
            throw KeyFileError(.malformed, "\(path): \(error.message)")
        }
    }

    func encoded() throws -> [UInt8] {
        try encodeJSON(File(
            format: Self.format, format_version: 1,
            keys: keys.map { key in
                File.Key(version: key.version, state: key.state, created_at: key.createdAt,
                         key: key.secret.withUnsafeBytes { Base64.encode($0) })
            }))
    }
}

/// One recovery public key version.
public struct RecoveryPublicKey: Sendable {
    public let version: Int
    public let state: KeyState
    public let createdAt: String
    public let publicKey: X25519.PublicKey
}

/// `recovery-public.json`: what `ingest` wraps data keys to. Public (mode 0644).
public struct RecoveryPublicKeys: Sendable {
    public static let format = "pseudonymizer.recovery-public-keys"
    public static let algorithm = "HPKE-base DHKEM(X25519,HKDF-SHA256) HKDF-SHA256 AES-256-GCM"
    public let keys: [RecoveryPublicKey]

    public var active: RecoveryPublicKey { keys.first { $0.state == .active }! }

    public func key(version: Int) -> RecoveryPublicKey? { keys.first { $0.version == version } }

    init(keys: [RecoveryPublicKey]) throws {
        self.keys = keys.sorted { $0.version < $1.version }
        try validateVersions(keys.map { ($0.version, $0.state) }, what: "recovery key")
    }

    /// `keys` plus `added` as the active version; the others become decrypt-only.
    public func adding(_ publicKey: X25519.PublicKey, version: Int, createdAt: String) throws -> RecoveryPublicKeys {
        let demoted = keys.map { RecoveryPublicKey(version: $0.version, state: .decryptOnly, createdAt: $0.createdAt, publicKey: $0.publicKey) }
        return try RecoveryPublicKeys(
            keys: demoted + [RecoveryPublicKey(version: version, state: .active, createdAt: createdAt, publicKey: publicKey)])
    }

    public func removing(version: Int) throws -> RecoveryPublicKeys {
        guard let key = key(version: version) else { throw KeyFileError(.unknownVersion, "there is no recovery key v\(version)") }
        guard key.state != .active else {
            throw KeyFileError(.refused, "recovery key v\(version) is the active one; rotate first (`vault keys rotate --recovery`)")
        }
        return try RecoveryPublicKeys(keys: keys.filter { $0.version != version })
    }

    private struct File: Codable {
        struct Key: Codable {
            let version: Int
            let state: KeyState
            let created_at: String
            let algorithm: String
            let public_key: String
        }
        let format: String
        let format_version: Int
        let keys: [Key]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> RecoveryPublicKeys {
        let file = try decodeJSON(File.self, bytes, path: path, format: format)
        let keys = try file.keys.map { entry -> RecoveryPublicKey in
            guard entry.algorithm == algorithm else {
                throw KeyFileError(.malformed, "\(path): recovery key v\(entry.version) uses \(entry.algorithm), expected \(algorithm)")
            }
            guard let raw = Base64.decode(entry.public_key), let publicKey = try? X25519.PublicKey(rawRepresentation: raw) else {
                throw KeyFileError(.malformed, "\(path): recovery key v\(entry.version) is not a 32-byte X25519 public key")
            }
            return RecoveryPublicKey(version: entry.version, state: entry.state, createdAt: entry.created_at, publicKey: publicKey)
        }
        do { return try RecoveryPublicKeys(keys: keys) } catch let error as KeyFileError {
            throw KeyFileError(.malformed, "\(path): \(error.message)")
        }
    }

    func encoded() throws -> [UInt8] {
        try encodeJSON(File(
            format: Self.format, format_version: 1,
            keys: keys.map { key in
                File.Key(version: key.version, state: key.state, created_at: key.createdAt, algorithm: Self.algorithm,
                         public_key: Base64.encode(key.publicKey.rawRepresentation))
            }))
    }
}

/// `recovery-private.json`: the recovery private keys, each sealed under a
/// passphrase (scrypt → AES-256-GCM). Only on compliance machines. Mode 0600.
public struct RecoveryPrivateKeys: Sendable {
    public static let format = "pseudonymizer.recovery-private-keys"

    public struct Sealed: Codable, Sendable {
        public struct KDF: Codable, Sendable {
            let algorithm: String
            let n: UInt64
            let r: UInt32
            let p: UInt32
            let salt: String
        }
        public let version: Int
        public let created_at: String
        public let public_key: String
        let kdf: KDF
        let cipher: String
        let nonce: String
        let sealed_private_key: String
    }

    public let keys: [Sealed]

    public var versions: [Int] { keys.map(\.version) }

    /// Seals `privateKey` under `passphrase` as recovery key `version`.
    public static func seal(
        _ privateKey: X25519.PrivateKey, version: Int, createdAt: String, passphrase: SecureBytes, parameters: Scrypt.Parameters
    ) throws -> Sealed {
        try parameters.validate()
        let salt = try SystemRandom.bytes(16)
        let nonce = try SystemRandom.bytes(AESGCM.nonceByteCount)
        let publicKey = Base64.encode(privateKey.publicKey.rawRepresentation)
        let key = try Scrypt.deriveKey(password: passphrase, salt: salt, parameters: parameters, byteCount: 32)
        let sealed = try AESGCM(key: key).seal(
            privateKey.rawRepresentation, nonce: nonce, aad: associatedData(version: version, publicKey: publicKey))
        return Sealed(
            version: version, created_at: createdAt, public_key: publicKey,
            kdf: .init(algorithm: "scrypt", n: parameters.n, r: parameters.r, p: parameters.p, salt: Base64.encode(salt)),
            cipher: "AES-256-GCM", nonce: Base64.encode(nonce), sealed_private_key: Base64.encode(sealed))
    }

    /// Opens recovery key `version` with `passphrase`.
    public func unlock(version: Int, passphrase: SecureBytes, path: String) throws -> X25519.PrivateKey {
        guard let entry = keys.first(where: { $0.version == version }) else {
            throw KeyFileError(.unknownVersion,
                "\(path) has no recovery private key v\(version) (it has \(versions.map { "v\($0)" }.joined(separator: ", "))); it may have been retired")
        }
        guard entry.kdf.algorithm == "scrypt", entry.cipher == "AES-256-GCM",
              let salt = Base64.decode(entry.kdf.salt), let nonce = Base64.decode(entry.nonce),
              let sealed = Base64.decode(entry.sealed_private_key) else {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version) is not in the expected scrypt/AES-256-GCM form")
        }
        let parameters = Scrypt.Parameters(n: entry.kdf.n, r: entry.kdf.r, p: entry.kdf.p)
        do { try parameters.validate() } catch let error as CryptoError {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version): \(error.message)")
        }
        let key = try Scrypt.deriveKey(password: passphrase, salt: salt, parameters: parameters, byteCount: 32)
        let raw: SecureBytes
        do {
            raw = try AESGCM(key: key).openSecret(sealed, nonce: nonce, aad: Self.associatedData(version: version, publicKey: entry.public_key))
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw KeyFileError(.wrongPassphrase,
                "the passphrase does not unlock recovery key v\(version) in \(path) (wrong passphrase, or the file was altered)")
        }
        let privateKey = try X25519.PrivateKey(rawRepresentation: raw)
        guard Base64.encode(privateKey.publicKey.rawRepresentation) == entry.public_key else {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version) does not match its recorded public key")
        }
        return privateKey
    }

    public func adding(_ sealed: Sealed) -> RecoveryPrivateKeys { RecoveryPrivateKeys(keys: keys + [sealed]) }

    public func removing(version: Int) -> RecoveryPrivateKeys { RecoveryPrivateKeys(keys: keys.filter { $0.version != version }) }

    /// Binds the sealed key to its version and public key: a sealed blob moved to
    /// another entry does not open.
    private static func associatedData(version: Int, publicKey: String) -> [UInt8] {
        Array("\(format)|v\(version)|\(publicKey)".utf8)
    }

    private struct File: Codable {
        let format: String
        let format_version: Int
        let keys: [Sealed]
    }

    static func decode(_ bytes: [UInt8], path: String) throws -> RecoveryPrivateKeys {
        let file = try decodeJSON(File.self, bytes, path: path, format: format)
        guard Set(file.keys.map(\.version)).count == file.keys.count else {
            throw KeyFileError(.malformed, "\(path): a recovery key version appears twice")
        }
        return RecoveryPrivateKeys(keys: file.keys)
    }

    func encoded() throws -> [UInt8] {
        try encodeJSON(File(format: Self.format, format_version: 1, keys: keys))
    }
}

// MARK: Shared helpers

private struct FormatHeader: Decodable {
    let format: String
    let format_version: Int
}

private func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], path: String, format: String) throws -> T {
    let data = Data(bytes)
    guard let header = try? JSONDecoder().decode(FormatHeader.self, from: data) else {
        throw KeyFileError(.malformed, "\(path) is not a key file (expected JSON with \"format\": \"\(format)\")")
    }
    guard header.format == format else {
        throw KeyFileError(.malformed, "\(path) holds \"\(header.format)\", expected \"\(format)\"; is it the right file?")
    }
    guard header.format_version == 1 else {
        throw KeyFileError(.malformed, "\(path) is format version \(header.format_version); this build reads version 1 (upgrade the tools)")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch {
        throw KeyFileError(.malformed, "\(path) is damaged: \(describe(error))")
    }
}

/// A decoding error in words, naming the field but never its value.
private func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "unreadable JSON" }
    func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    switch error {
    case .keyNotFound(let key, let context): return "field \(path(context)).\(key.stringValue) is missing"
    case .typeMismatch(_, let context), .valueNotFound(_, let context): return "field \(path(context)) has the wrong type"
    case .dataCorrupted(let context): return "field \(path(context)) is invalid"
    @unknown default: return "unreadable JSON"
    }
}

private func encodeJSON(_ value: some Encodable) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return try [UInt8](encoder.encode(value)) + [UInt8(ascii: "\n")]
}

private func validateVersions(_ versions: [(Int, KeyState)], what: String) throws {
    guard !versions.isEmpty else { throw KeyFileError(.malformed, "no \(what) is present") }
    guard versions.allSatisfy({ $0.0 > 0 }), Set(versions.map(\.0)).count == versions.count else {
        throw KeyFileError(.malformed, "\(what) versions must be positive and unique")
    }
    let active = versions.filter { $0.1 == .active }.count
    guard active == 1 else { throw KeyFileError(.malformed, "exactly one \(what) must be active, found \(active)") }
}

func timestamp(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}
