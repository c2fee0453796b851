public import Foundation

/// Where a key version stands in its life.
public enum KeyState: String, Sendable, CustomStringConvertible {
    /// Used for new work (new tokens, new data-key wraps, new audit rows).
    case active
    /// Kept so existing data stays usable; no new work uses it.
    case decryptOnly = "decrypt-only"

    public var description: String { rawValue }
}

/// One version of a 32-byte secret key: a tokenization (HMAC) key or an audit (MAC) key.
public struct SecretKeyVersion: Sendable {
    public let version: Int
    public let state: KeyState
    public let createdAt: String
    public let secret: SecureBytes
}

public typealias TokenizationKey = SecretKeyVersion

/// What distinguishes the files that hold versions of secret keys.
public protocol SecretKeyFileKind: Sendable {
    /// The `format` field of the file.
    static var format: String { get }
    /// How messages name one key ("tokenization key").
    static var keyName: String { get }
}

public enum TokenizationKeys: SecretKeyFileKind {
    public static let format = "pseudonymizer.tokenization-keys"
    public static let keyName = "tokenization key"
}

public enum AuditKeys: SecretKeyFileKind {
    public static let format = "pseudonymizer.audit-keys"
    public static let keyName = "audit key"
}

/// `tokenization.json`: the HMAC keys behind tokens.
public typealias TokenizationKeyring = SecretKeyring<TokenizationKeys>
/// `audit-key.json`: the keys that authenticate audit rows. The database never
/// has them, so database rights alone cannot rewrite the audit log.
public typealias AuditKeyring = SecretKeyring<AuditKeys>

/// Versions of a secret key, exactly one active. Secret (mode 0600).
public struct SecretKeyring<Kind: SecretKeyFileKind>: Sendable {
    public let keys: [SecretKeyVersion]

    public var active: SecretKeyVersion { keys.first { $0.state == .active }! }

    public func key(version: Int) -> SecretKeyVersion? { keys.first { $0.version == version } }

    init(keys: [SecretKeyVersion]) throws {
        self.keys = keys.sorted { $0.version < $1.version }
        try validateVersions(keys.map { ($0.version, $0.state) }, what: Kind.keyName)
    }

    public static func generate(now: Date) throws -> SecretKeyring {
        try SecretKeyring(keys: [SecretKeyVersion(version: 1, state: .active, createdAt: timestamp(now), secret: .random(count: 32))])
    }

    /// A new active version; the previous active one becomes decrypt-only.
    public func rotated(now: Date) throws -> SecretKeyring {
        let next = (keys.map(\.version).max() ?? 0) + 1
        let demoted = keys.map { SecretKeyVersion(version: $0.version, state: .decryptOnly, createdAt: $0.createdAt, secret: $0.secret) }
        return try SecretKeyring(
            keys: demoted + [SecretKeyVersion(version: next, state: .active, createdAt: timestamp(now), secret: .random(count: 32))])
    }

    /// Without `version` (its secret is gone with the returned keyring's file).
    public func removing(version: Int) throws -> SecretKeyring {
        guard let key = key(version: version) else { throw KeyFileError(.unknownVersion, "there is no \(Kind.keyName) v\(version)") }
        guard key.state != .active else {
            throw KeyFileError(.refused, "\(Kind.keyName) v\(version) is the active one; rotate first")
        }
        return try SecretKeyring(keys: keys.filter { $0.version != version })
    }

    static func decode(_ bytes: SecureBytes, path: String) throws -> SecretKeyring {
        try parseKeyFile(bytes, path: path, format: Kind.format) { file in
            let keys = try file.objects("keys").map { entry in
                SecretKeyVersion(
                    version: try entry.integer("version"), state: try keyState(entry), createdAt: try entry.string("created_at"),
                    secret: try entry.secret("key", byteCount: 32))
            }
            do { return try SecretKeyring(keys: keys) } catch let error as KeyFileError {
                throw KeyFileError(.malformed, "\(path): \(error.message)")
            }
        }
    }

    func encoded() -> SecureBytes {
        keyFile(
            format: Kind.format,
            keys: keys.map { key in
                [
                    ("version", .integer(Int64(key.version))), ("state", .string(key.state.rawValue)),
                    ("created_at", .string(key.createdAt)),
                    ("key", .secret(key.secret)),
                ]
            })
    }
}

extension SecretKeyVersion {
    /// What the database registers for a tokenization key version: a MAC of a
    /// fixed label under the key (a key check value), so a key file swapped for
    /// another is noticed without the database ever holding the key.
    /// `HMAC-SHA256(key, "pseudonymizer.key-fingerprint.v1" ‖ 0 ‖ "tokenization" ‖ 0 ‖ decimal version)`.
    public func tokenizationFingerprint() throws -> [UInt8] {
        try HMACSHA256(key: secret).authenticationCode(for: Array("\(keyFingerprintDomain)\u{0}tokenization\u{0}\(version)".utf8))
    }
}

let keyFingerprintDomain = "pseudonymizer.key-fingerprint.v1"

/// One recovery public key version.
public struct RecoveryPublicKey: Sendable {
    public let version: Int
    public let state: KeyState
    public let createdAt: String
    public let publicKey: X25519.PublicKey

    /// What the database registers for a recovery key version:
    /// `SHA-256("pseudonymizer.key-fingerprint.v1" ‖ 0 ‖ "recovery" ‖ 0 ‖ decimal version ‖ 0 ‖ public key)`.
    public var fingerprint: [UInt8] {
        get throws {
            try SHA256.hash(Array("\(keyFingerprintDomain)\u{0}recovery\u{0}\(version)\u{0}".utf8) + publicKey.rawRepresentation)
        }
    }
}

/// `recovery-public.json`: what `ingest` wraps data keys to. Public, but not
/// writable by anyone else (mode 0644 at most).
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
        let demoted = keys.map {
            RecoveryPublicKey(version: $0.version, state: .decryptOnly, createdAt: $0.createdAt, publicKey: $0.publicKey)
        }
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

    static func decode(_ bytes: SecureBytes, path: String) throws -> RecoveryPublicKeys {
        try parseKeyFile(bytes, path: path, format: format) { file in
            let keys = try file.objects("keys").map { entry -> RecoveryPublicKey in
                let version: Int = try entry.integer("version")
                let algorithm = try entry.string("algorithm")
                guard algorithm == Self.algorithm else {
                    throw KeyFileError(.malformed, "\(path): recovery key v\(version) uses \(algorithm), expected \(Self.algorithm)")
                }
                return RecoveryPublicKey(
                    version: version, state: try keyState(entry), createdAt: try entry.string("created_at"),
                    publicKey: try X25519.PublicKey(rawRepresentation: try entry.bytes("public_key", byteCount: 32)))
            }
            do { return try RecoveryPublicKeys(keys: keys) } catch let error as KeyFileError {
                throw KeyFileError(.malformed, "\(path): \(error.message)")
            }
        }
    }

    func encoded() -> SecureBytes {
        keyFile(
            format: Self.format,
            keys: keys.map { key in
                [
                    ("version", .integer(Int64(key.version))), ("state", .string(key.state.rawValue)),
                    ("created_at", .string(key.createdAt)),
                    ("algorithm", .string(Self.algorithm)), ("public_key", .bytes(key.publicKey.rawRepresentation)),
                ]
            })
    }
}

/// `recovery-private.json`: the recovery private keys, each sealed under a
/// passphrase (scrypt → AES-256-GCM). Only on compliance machines. Mode 0600.
public struct RecoveryPrivateKeys: Sendable {
    public static let format = "pseudonymizer.recovery-private-keys"

    /// One sealed private key. Nothing in it is secret without the passphrase.
    public struct Sealed: Sendable {
        public let version: Int
        public let createdAt: String
        public let publicKey: [UInt8]
        let scrypt: Scrypt.Parameters
        let salt: [UInt8]
        let nonce: [UInt8]
        let sealedPrivateKey: [UInt8]
    }

    public let keys: [Sealed]

    public var versions: [Int] { keys.map(\.version) }

    /// Seals `privateKey` under `passphrase` as recovery key `version`.
    public static func seal(
        _ privateKey: X25519.PrivateKey, version: Int, createdAt: String, passphrase: SecureBytes, parameters: Scrypt.Parameters
    ) throws -> Sealed {
        try seal(
            privateKey, version: version, createdAt: createdAt, passphrase: passphrase, parameters: parameters,
            salt: try SystemRandom.bytes(16), nonce: try SystemRandom.bytes(AESGCM.nonceByteCount))
    }

    /// With a given salt and nonce (FORMATS.md's worked example); real seals draw them at random.
    static func seal(
        _ privateKey: X25519.PrivateKey, version: Int, createdAt: String, passphrase: SecureBytes, parameters: Scrypt.Parameters,
        salt: [UInt8], nonce: [UInt8]
    ) throws -> Sealed {
        try parameters.validate()
        let publicKey = privateKey.publicKey.rawRepresentation
        let key = try Scrypt.deriveKey(password: passphrase, salt: salt, parameters: parameters, byteCount: 32)
        let sealed = try AESGCM(key: key).seal(
            privateKey.rawRepresentation, nonce: nonce, aad: associatedData(version: version, publicKey: publicKey))
        return Sealed(
            version: version, createdAt: createdAt, publicKey: publicKey, scrypt: parameters, salt: salt, nonce: nonce,
            sealedPrivateKey: sealed)
    }

    /// Opens recovery key `version` with `passphrase`.
    public func unlock(version: Int, passphrase: SecureBytes, path: String) throws -> X25519.PrivateKey {
        guard let entry = keys.first(where: { $0.version == version }) else {
            throw KeyFileError(
                .unknownVersion,
                "\(path) has no recovery private key v\(version) (it has \(versions.map { "v\($0)" }.joined(separator: ", "))); it may have been retired"
            )
        }
        do { try entry.scrypt.validate() } catch let error as CryptoError {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version): \(error.message)")
        }
        let key = try Scrypt.deriveKey(password: passphrase, salt: entry.salt, parameters: entry.scrypt, byteCount: 32)
        let raw: SecureBytes
        do {
            raw = try AESGCM(key: key).openSecret(
                entry.sealedPrivateKey, nonce: entry.nonce,
                aad: Self.associatedData(version: version, publicKey: entry.publicKey))
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw KeyFileError(
                .wrongPassphrase,
                "the passphrase does not unlock recovery key v\(version) in \(path) (wrong passphrase, or the file was altered)")
        }
        let privateKey = try X25519.PrivateKey(rawRepresentation: raw)
        guard privateKey.publicKey.rawRepresentation == entry.publicKey else {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version) does not match its recorded public key")
        }
        return privateKey
    }

    public func adding(_ sealed: Sealed) -> RecoveryPrivateKeys { RecoveryPrivateKeys(keys: keys + [sealed]) }

    public func removing(version: Int) -> RecoveryPrivateKeys { RecoveryPrivateKeys(keys: keys.filter { $0.version != version }) }

    /// Binds the sealed key to its version and public key: a sealed blob moved to
    /// another entry does not open. `format "|v" version "|" base64(public key)`.
    static func associatedData(version: Int, publicKey: [UInt8]) -> [UInt8] {
        Array("\(format)|v\(version)|\(Base64.encode(publicKey))".utf8)
    }

    static func decode(_ bytes: SecureBytes, path: String) throws -> RecoveryPrivateKeys {
        try parseKeyFile(bytes, path: path, format: format) { file in
            let keys = try file.objects("keys").map { entry -> Sealed in
                let version: Int = try entry.integer("version")
                let kdf = try entry.object("kdf")
                guard try kdf.string("algorithm") == "scrypt", try entry.string("cipher") == "AES-256-GCM" else {
                    throw KeyFileError(.malformed, "\(path): recovery key v\(version) is not in the expected scrypt/AES-256-GCM form")
                }
                return Sealed(
                    version: version, createdAt: try entry.string("created_at"), publicKey: try entry.bytes("public_key", byteCount: 32),
                    scrypt: Scrypt.Parameters(
                        n: try kdf.integer("n", as: UInt64.self), r: try kdf.integer("r", as: UInt32.self),
                        p: try kdf.integer("p", as: UInt32.self)),
                    salt: try kdf.bytes("salt"), nonce: try entry.bytes("nonce", byteCount: AESGCM.nonceByteCount),
                    sealedPrivateKey: try entry.bytes("sealed_private_key", byteCount: X25519.keyByteCount + AESGCM.tagByteCount))
            }
            guard Set(keys.map(\.version)).count == keys.count else {
                throw KeyFileError(.malformed, "\(path): a recovery key version appears twice")
            }
            return RecoveryPrivateKeys(keys: keys)
        }
    }

    func encoded() -> SecureBytes {
        keyFile(
            format: Self.format,
            keys: keys.map { key in
                [
                    ("version", .integer(Int64(key.version))), ("created_at", .string(key.createdAt)),
                    ("public_key", .bytes(key.publicKey)),
                    (
                        "kdf",
                        .object([
                            ("algorithm", .string("scrypt")), ("n", .integer(Int64(key.scrypt.n))), ("r", .integer(Int64(key.scrypt.r))),
                            ("p", .integer(Int64(key.scrypt.p))), ("salt", .bytes(key.salt)),
                        ])
                    ),
                    ("cipher", .string("AES-256-GCM")), ("nonce", .bytes(key.nonce)), ("sealed_private_key", .bytes(key.sealedPrivateKey)),
                ]
            })
    }
}

// MARK: Shared helpers

/// Parses a key file's JSON inside its wiped buffer and checks its header.
private func parseKeyFile<T>(_ bytes: SecureBytes, path: String, format: String, _ body: (KeyFileObject) throws -> T) throws -> T {
    try bytes.withUnsafeBytes { buffer in
        let root: KeyFileJSON.Node
        do throws(KeyFileJSON.SyntaxError) {
            root = try KeyFileJSON.parse(buffer)
        } catch {
            throw KeyFileError(.malformed, "\(path) is not a key file (invalid JSON at byte \(error.offset): \(error.problem))")
        }
        guard case .object(let members) = root else {
            throw KeyFileError(.malformed, "\(path) is not a key file (expected a JSON object with \"format\": \"\(format)\")")
        }
        let file = KeyFileObject(fields: members, bytes: buffer, path: path, location: "")
        guard let found = try? file.string("format") else {
            throw KeyFileError(.malformed, "\(path) is not a key file (expected JSON with \"format\": \"\(format)\")")
        }
        guard found == format else {
            throw KeyFileError(.malformed, "\(path) holds \"\(found)\", expected \"\(format)\"; is it the right file?")
        }
        let version: Int = try file.integer("format_version")
        guard version == 1 else {
            throw KeyFileError(.malformed, "\(path) is format version \(version); this build reads version 1 (upgrade the tools)")
        }
        return try body(file)
    }
}

private func keyFile(format: String, keys: [[(String, KeyFileValue)]]) -> SecureBytes {
    KeyFileValue.object([("format", .string(format)), ("format_version", .integer(1)), ("keys", .array(keys.map { .object($0) }))])
        .encoded()
}

private func keyState(_ entry: KeyFileObject) throws -> KeyState {
    let text = try entry.string("state")
    guard let state = KeyState(rawValue: text) else {
        throw KeyFileError(.malformed, "\(entry.path) is damaged: field \(entry.location).state is neither active nor decrypt-only")
    }
    return state
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
