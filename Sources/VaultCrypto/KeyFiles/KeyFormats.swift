public import Foundation

/// Where a key version stands in its life.
public enum KeyState: String, Sendable, CustomStringConvertible {
    /// Used for new work (new tokens, new data-key wraps, new audit rows).
    case active
    /// Kept so existing data stays usable; no new work uses it.
    case decryptOnly = "decrypt-only"

    public var description: String { rawValue }
}

/// Where a MAC key's secret is.
public enum MACKeyMaterial: Sendable {
    /// The 32 key bytes, in the key file.
    case local(SecureBytes)
    /// An AWS KMS `HMAC_256` key (id, alias or ARN): the key file holds no
    /// secret, and every MAC is a KMS `GenerateMac` call.
    case awsKMS(keyID: String)

    /// "local" or "aws-kms", as the key file and `vault keys status` name it.
    public var backend: String {
        switch self {
        case .local: return "local"
        case .awsKMS: return "aws-kms"
        }
    }
}

/// One version of an HMAC-SHA256 key: a tokenization key or an audit key.
public struct MACKeyVersion: Sendable {
    public let version: Int
    public let state: KeyState
    public let createdAt: String
    public let material: MACKeyMaterial

    public init(version: Int, state: KeyState, createdAt: String, material: MACKeyMaterial) {
        self.version = version
        self.state = state
        self.createdAt = createdAt
        self.material = material
    }

    /// The key bytes of a local key; a KMS key's never leave KMS.
    public func localSecret(keyName: String = "tokenization key") throws -> SecureBytes {
        switch material {
        case .local(let secret): return secret
        case .awsKMS(let keyID):
            throw KeyFileError(.refused, "\(keyName) v\(version) is held in AWS KMS (\(keyID)); it can only be used through KMS")
        }
    }

    /// The KMS key id of a KMS-held version.
    public var kmsKeyID: String? {
        if case .awsKMS(let keyID) = material { return keyID }
        return nil
    }

    func withState(_ state: KeyState) -> MACKeyVersion {
        MACKeyVersion(version: version, state: state, createdAt: createdAt, material: material)
    }
}

public typealias TokenizationKey = MACKeyVersion

/// What distinguishes the files that hold versions of MAC keys.
public protocol MACKeyFileKind: Sendable {
    /// The `format` field of the file.
    static var format: String { get }
    /// How messages name one key ("tokenization key").
    static var keyName: String { get }
    /// Whether a version may live in AWS KMS.
    static var allowsKMS: Bool { get }
    /// Whether the file carries the suppression key (`suppression_key`).
    static var hasSuppressionKey: Bool { get }
    /// Whether the file records the audit log's unauthenticated rows (`unauthenticated_rows`).
    static var recordsUnauthenticatedRows: Bool { get }
}

public enum TokenizationKeys: MACKeyFileKind {
    public static let format = "pseudonymizer.tokenization-keys"
    public static let keyName = "tokenization key"
    public static let allowsKMS = true
    public static let hasSuppressionKey = true
    public static let recordsUnauthenticatedRows = false
}

public enum AuditKeys: MACKeyFileKind {
    public static let format = "pseudonymizer.audit-keys"
    public static let keyName = "audit key"
    public static let allowsKMS = false
    public static let hasSuppressionKey = false
    public static let recordsUnauthenticatedRows = true
}

/// The rows of the audit log that carried no MAC when the audit key was made
/// (written before schema migration 4): recorded in `audit-key.json`, outside
/// the database, so that only exactly those rows can ever be vouched for by
/// an anchor. `count` 0 means every row must be authenticated.
public struct UnauthenticatedAuditRows: Sendable, Equatable {
    public let count: Int64
    /// The hash of row `count` (32 zero bytes when `count` is 0).
    public let head: [UInt8]

    public init(count: Int64, head: [UInt8]) {
        self.count = count
        self.head = head
    }

    public static let allAuthenticated = UnauthenticatedAuditRows(count: 0, head: [UInt8](repeating: 0, count: 32))
}

/// `tokenization.json`: the HMAC keys behind tokens.
public typealias TokenizationKeyring = MACKeyring<TokenizationKeys>
/// `audit-key.json`: the keys that authenticate audit rows. The database never
/// has them, so database rights alone cannot rewrite the audit log.
public typealias AuditKeyring = MACKeyring<AuditKeys>

/// Versions of a MAC key, exactly one active. Secret (mode 0600) while any
/// version is local.
public struct MACKeyring<Kind: MACKeyFileKind>: Sendable {
    public let keys: [MACKeyVersion]
    /// `tokenization.json` only: the key of the suppression tags of erased
    /// values (version 1, never rotated: a rotation would forget every
    /// erasure). Nil in a key set made before it existed.
    public let suppression: MACKeyVersion?
    /// `audit-key.json` only: the unauthenticated rows the audit log held when
    /// the file was made. Nil in a file made before this was recorded.
    public let unauthenticatedRows: UnauthenticatedAuditRows?

    public var active: MACKeyVersion { keys.first { $0.state == .active }! }

    public func key(version: Int) -> MACKeyVersion? { keys.first { $0.version == version } }

    /// Whether any version (the suppression key included) is held in AWS KMS.
    public var usesKMS: Bool { keys.contains { $0.kmsKeyID != nil } || suppression?.kmsKeyID != nil }

    init(keys: [MACKeyVersion], suppression: MACKeyVersion? = nil, unauthenticatedRows: UnauthenticatedAuditRows? = nil) throws {
        self.keys = keys.sorted { $0.version < $1.version }
        self.suppression = suppression
        self.unauthenticatedRows = unauthenticatedRows
        try validateVersions(keys.map { ($0.version, $0.state) }, what: Kind.keyName)
    }

    /// Version 1, active: `material`, or a fresh random local key; for a
    /// tokenization keyring also a suppression key (`suppression`, or a fresh
    /// local one); for audit keys, the unauthenticated rows of the log now.
    public static func generate(
        now: Date, material: MACKeyMaterial? = nil, suppression: MACKeyMaterial? = nil,
        unauthenticatedRows: UnauthenticatedAuditRows? = nil
    ) throws -> MACKeyring {
        try MACKeyring(
            keys: [
                MACKeyVersion(version: 1, state: .active, createdAt: timestamp(now), material: try material ?? .local(.random(count: 32)))
            ],
            suppression: Kind.hasSuppressionKey
                ? MACKeyVersion(
                    version: 1, state: .active, createdAt: timestamp(now), material: try suppression ?? .local(.random(count: 32)))
                : nil,
            unauthenticatedRows: Kind.recordsUnauthenticatedRows ? unauthenticatedRows ?? .allAuthenticated : nil)
    }

    /// A new active version (`material`, or a fresh random local key); the
    /// previous active one becomes decrypt-only.
    public func rotated(now: Date, material: MACKeyMaterial? = nil) throws -> MACKeyring {
        let next = (keys.map(\.version).max() ?? 0) + 1
        return try MACKeyring(
            keys: keys.map { $0.withState(.decryptOnly) }
                + [
                    MACKeyVersion(
                        version: next, state: .active, createdAt: timestamp(now), material: try material ?? .local(.random(count: 32)))
                ], suppression: suppression, unauthenticatedRows: unauthenticatedRows)
    }

    /// With a suppression key (`material`, or a fresh local one), for a key
    /// set made before it existed; refused when there is one.
    public func addingSuppressionKey(now: Date, material: MACKeyMaterial? = nil) throws -> MACKeyring {
        guard Kind.hasSuppressionKey, suppression == nil else {
            throw KeyFileError(
                .refused,
                "the key file already has a suppression key, and it never rotates: a new one would forget every erasure recorded under it")
        }
        return try MACKeyring(
            keys: keys,
            suppression: MACKeyVersion(
                version: 1, state: .active, createdAt: timestamp(now), material: try material ?? .local(.random(count: 32))),
            unauthenticatedRows: unauthenticatedRows)
    }

    /// Without `version` (its secret is gone with the returned keyring's file).
    public func removing(version: Int) throws -> MACKeyring {
        guard let key = key(version: version) else { throw KeyFileError(.unknownVersion, "there is no \(Kind.keyName) v\(version)") }
        guard key.state != .active else {
            throw KeyFileError(.refused, "\(Kind.keyName) v\(version) is the active one; rotate first")
        }
        return try MACKeyring(
            keys: keys.filter { $0.version != version }, suppression: suppression, unauthenticatedRows: unauthenticatedRows)
    }

    static func decode(_ bytes: SecureBytes, path: String) throws -> MACKeyring {
        try parseKeyFile(bytes, path: path, format: Kind.format) { file in
            let keys = try file.objects("keys").map { entry in
                MACKeyVersion(
                    version: try entry.integer("version"), state: try keyState(entry), createdAt: try entry.string("created_at"),
                    material: try material(of: entry, path: path))
            }
            var suppression: MACKeyVersion? = nil
            if Kind.hasSuppressionKey, file.optionalNode("suppression_key") != nil {
                let entry = try file.object("suppression_key")
                suppression = MACKeyVersion(
                    version: 1, state: .active, createdAt: try entry.string("created_at"), material: try material(of: entry, path: path))
            }
            var unauthenticated: UnauthenticatedAuditRows? = nil
            if Kind.recordsUnauthenticatedRows, file.optionalNode("unauthenticated_rows") != nil {
                let entry = try file.object("unauthenticated_rows")
                unauthenticated = UnauthenticatedAuditRows(
                    count: try entry.integer("count", as: Int64.self), head: try entry.hex("head", byteCount: 32))
            }
            do { return try MACKeyring(keys: keys, suppression: suppression, unauthenticatedRows: unauthenticated) } catch let error
                as KeyFileError
            {
                throw KeyFileError(.malformed, "\(path): \(error.message)")
            }
        }
    }

    private static func material(of entry: KeyFileObject, path: String) throws -> MACKeyMaterial {
        switch try entry.optionalString("backend") ?? "local" {
        case "local": return .local(try entry.secret("key", byteCount: 32))
        case "aws-kms" where Kind.allowsKMS: return .awsKMS(keyID: try entry.string("kms_key_id"))
        case let other:
            throw KeyFileError(
                .malformed,
                "\(path): \(Kind.keyName) field \(entry.location) has backend \"\(other)\"; expected \(Kind.allowsKMS ? "local or aws-kms" : "local")"
            )
        }
    }

    private static func fields(of material: MACKeyMaterial) -> [(String, KeyFileValue)] {
        switch material {
        case .local(let secret): return [("key", .secret(secret))]
        case .awsKMS(let keyID): return [("backend", .string("aws-kms")), ("kms_key_id", .string(keyID))]
        }
    }

    func encoded() -> SecureBytes {
        var extra: [(String, KeyFileValue)] = []
        if let suppression {
            extra.append(
                ("suppression_key", .object([("created_at", .string(suppression.createdAt))] + Self.fields(of: suppression.material))))
        }
        if let unauthenticatedRows {
            extra.append(
                (
                    "unauthenticated_rows",
                    .object([("count", .integer(unauthenticatedRows.count)), ("head", .string(Hex.encode(unauthenticatedRows.head)))])
                ))
        }
        return keyFile(
            format: Kind.format,
            keys: keys.map { key in
                [("version", .integer(Int64(key.version))), ("state", .string(key.state.rawValue)), ("created_at", .string(key.createdAt))]
                    + Self.fields(of: key.material)
            }, extra: extra)
    }
}

extension MACKeyVersion {
    /// The fixed label a tokenization key's fingerprint is the MAC of:
    /// `"pseudonymizer.key-fingerprint.v1" ‖ 0 ‖ "tokenization" ‖ 0 ‖ decimal version`.
    public var tokenizationFingerprintInput: [UInt8] { fingerprintInput(kind: "tokenization") }

    /// `"pseudonymizer.key-fingerprint.v1" ‖ 0 ‖ kind ‖ 0 ‖ decimal version`: what a MAC key's fingerprint is the MAC of.
    public func fingerprintInput(kind: String) -> [UInt8] { Array("\(keyFingerprintDomain)\u{0}\(kind)\u{0}\(version)".utf8) }

    /// What the database registers for a local tokenization key version: a MAC
    /// of a fixed label under the key (a key check value), so a key file
    /// swapped for another is noticed without the database ever holding the
    /// key. A KMS version's is the same MAC, computed by KMS.
    public func localTokenizationFingerprint() throws -> [UInt8] {
        try HMACSHA256(key: localSecret()).authenticationCode(for: tokenizationFingerprintInput)
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
/// passphrase (scrypt → AES-256-GCM) or by an AWS KMS key (`Encrypt` with an
/// encryption context). Only on compliance machines. Mode 0600.
public struct RecoveryPrivateKeys: Sendable {
    public static let format = "pseudonymizer.recovery-private-keys"

    /// What keeps a sealed private key closed.
    public enum Protection: Sendable {
        case passphrase(scrypt: Scrypt.Parameters, salt: [UInt8], nonce: [UInt8])
        /// A symmetric KMS key: `sealedPrivateKey` is its `CiphertextBlob`.
        case awsKMS(keyID: String)
    }

    /// One sealed private key. Nothing in it is secret without the passphrase
    /// or the KMS key.
    public struct Sealed: Sendable {
        public let version: Int
        public let createdAt: String
        public let publicKey: [UInt8]
        public let protection: Protection
        public let sealedPrivateKey: [UInt8]

        /// The KMS key id of a KMS-sealed key.
        public var kmsKeyID: String? {
            if case .awsKMS(let keyID) = protection { return keyID }
            return nil
        }

        /// What a KMS-sealed key's `Encrypt` and `Decrypt` bind it to: KMS
        /// refuses to open the blob for another version or public key.
        public var kmsEncryptionContext: [(String, String)] {
            RecoveryPrivateKeys.kmsEncryptionContext(version: version, publicKey: publicKey)
        }
    }

    public let keys: [Sealed]

    public var versions: [Int] { keys.map(\.version) }

    public func entry(version: Int, path: String) throws -> Sealed {
        guard let entry = keys.first(where: { $0.version == version }) else {
            throw KeyFileError(
                .unknownVersion,
                "\(path) has no recovery private key v\(version) (it has \(versions.map { "v\($0)" }.joined(separator: ", "))); it may have been retired"
            )
        }
        return entry
    }

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
            version: version, createdAt: createdAt, publicKey: publicKey,
            protection: .passphrase(scrypt: parameters, salt: salt, nonce: nonce), sealedPrivateKey: sealed)
    }

    /// A private key KMS sealed: `blob` is what `Encrypt` returned for its raw
    /// bytes under `keyID` with `kmsEncryptionContext(version:publicKey:)`.
    public static func kmsSealed(publicKey: X25519.PublicKey, version: Int, createdAt: String, keyID: String, blob: [UInt8]) -> Sealed {
        Sealed(
            version: version, createdAt: createdAt, publicKey: publicKey.rawRepresentation, protection: .awsKMS(keyID: keyID),
            sealedPrivateKey: blob)
    }

    /// `pseudonymizer.purpose=recovery-private-key`, `version=<n>`,
    /// `public_key=<base64>`: also what CloudTrail shows for every unseal.
    public static func kmsEncryptionContext(version: Int, publicKey: [UInt8]) -> [(String, String)] {
        [("pseudonymizer.purpose", "recovery-private-key"), ("version", String(version)), ("public_key", Base64.encode(publicKey))]
    }

    /// Opens passphrase-sealed recovery key `version` with `passphrase`.
    public func unlock(version: Int, passphrase: SecureBytes, path: String) throws -> X25519.PrivateKey {
        let entry = try entry(version: version, path: path)
        guard case .passphrase(let scrypt, let salt, let nonce) = entry.protection else {
            throw KeyFileError(.refused, "\(path): recovery key v\(version) is sealed by AWS KMS, not by a passphrase")
        }
        do { try scrypt.validate() } catch let error as CryptoError {
            throw KeyFileError(.malformed, "\(path): recovery key v\(version): \(error.message)")
        }
        let key = try Scrypt.deriveKey(password: passphrase, salt: salt, parameters: scrypt, byteCount: 32)
        let raw: SecureBytes
        do {
            raw = try AESGCM(key: key).openSecret(
                entry.sealedPrivateKey, nonce: nonce, aad: Self.associatedData(version: version, publicKey: entry.publicKey))
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw KeyFileError(
                .wrongPassphrase,
                "the passphrase does not unlock recovery key v\(version) in \(path) (wrong passphrase, or the file was altered)")
        }
        return try Self.privateKey(raw, matching: entry, path: path)
    }

    /// The private key in `raw` (what KMS decrypted), checked against the entry's public key.
    public static func privateKey(_ raw: SecureBytes, matching entry: Sealed, path: String) throws -> X25519.PrivateKey {
        guard raw.count == X25519.keyByteCount else {
            throw KeyFileError(.malformed, "\(path): recovery key v\(entry.version) does not open to a 32-byte private key")
        }
        let privateKey = try X25519.PrivateKey(rawRepresentation: raw)
        guard privateKey.publicKey.rawRepresentation == entry.publicKey else {
            throw KeyFileError(.malformed, "\(path): recovery key v\(entry.version) does not match its recorded public key")
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
                let createdAt = try entry.string("created_at")
                let publicKey = try entry.bytes("public_key", byteCount: 32)
                if try entry.optionalString("protection") == "aws-kms" {
                    return Sealed(
                        version: version, createdAt: createdAt, publicKey: publicKey,
                        protection: .awsKMS(keyID: try entry.string("kms_key_id")), sealedPrivateKey: try entry.bytes("sealed_private_key"))
                }
                let kdf = try entry.object("kdf")
                guard try kdf.string("algorithm") == "scrypt", try entry.string("cipher") == "AES-256-GCM" else {
                    throw KeyFileError(.malformed, "\(path): recovery key v\(version) is not in the expected scrypt/AES-256-GCM form")
                }
                return Sealed(
                    version: version, createdAt: createdAt, publicKey: publicKey,
                    protection: .passphrase(
                        scrypt: Scrypt.Parameters(
                            n: try kdf.integer("n", as: UInt64.self), r: try kdf.integer("r", as: UInt32.self),
                            p: try kdf.integer("p", as: UInt32.self)),
                        salt: try kdf.bytes("salt"), nonce: try entry.bytes("nonce", byteCount: AESGCM.nonceByteCount)),
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
                var fields: [(String, KeyFileValue)] = [
                    ("version", .integer(Int64(key.version))), ("created_at", .string(key.createdAt)),
                    ("public_key", .bytes(key.publicKey)),
                ]
                switch key.protection {
                case .passphrase(let scrypt, let salt, let nonce):
                    fields += [
                        (
                            "kdf",
                            .object([
                                ("algorithm", .string("scrypt")), ("n", .integer(Int64(scrypt.n))), ("r", .integer(Int64(scrypt.r))),
                                ("p", .integer(Int64(scrypt.p))), ("salt", .bytes(salt)),
                            ])
                        ),
                        ("cipher", .string("AES-256-GCM")), ("nonce", .bytes(nonce)),
                    ]
                case .awsKMS(let keyID):
                    fields += [("protection", .string("aws-kms")), ("kms_key_id", .string(keyID))]
                }
                fields.append(("sealed_private_key", .bytes(key.sealedPrivateKey)))
                return fields
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

private func keyFile(format: String, keys: [[(String, KeyFileValue)]], extra: [(String, KeyFileValue)] = []) -> SecureBytes {
    KeyFileValue.object([("format", .string(format)), ("format_version", .integer(1)), ("keys", .array(keys.map { .object($0) }))] + extra)
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
