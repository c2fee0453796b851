/// RFC 9180 Hybrid Public Key Encryption, base mode, single-shot, with
/// DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, built from OpenSSL 3.0
/// primitives (3.0 has no HPKE API). AES-256-GCM is what the vault uses;
/// AES-128-GCM exists so the RFC's published vectors (Appendix A.1) can be checked.
///
/// Single-shot means sequence number 0 only: one message per encapsulation,
/// which is how data keys are wrapped.
public enum HPKE {
    public enum AEAD: UInt16, Sendable {
        case aes128GCM = 0x0001
        case aes256GCM = 0x0002

        var keyByteCount: Int { self == .aes128GCM ? 16 : 32 }
    }

    static let kemID: UInt16 = 0x0020  // DHKEM(X25519, HKDF-SHA256)
    static let kdfID: UInt16 = 0x0001  // HKDF-SHA256
    static let nonceByteCount = 12

    /// The output of `seal`: the encapsulated ephemeral public key and the
    /// AEAD ciphertext (with tag).
    public struct Sealed: Sendable, Hashable {
        public let encapsulatedKey: [UInt8]
        public let ciphertext: [UInt8]

        public init(encapsulatedKey: [UInt8], ciphertext: [UInt8]) {
            self.encapsulatedKey = encapsulatedKey
            self.ciphertext = ciphertext
        }
    }

    /// Encrypts `plaintext` to `recipient`.
    public static func seal(
        _ plaintext: some ReadableBytes, to recipient: X25519.PublicKey, info: [UInt8], aad: [UInt8],
        aead: AEAD = .aes256GCM
    ) throws -> Sealed {
        try seal(plaintext, to: recipient, info: info, aad: aad, aead: aead, ephemeral: X25519.PrivateKey())
    }

    /// Decrypts what `seal` produced for `recipient`'s public key.
    public static func open(
        _ sealed: Sealed, with recipient: X25519.PrivateKey, info: [UInt8], aad: [UInt8], aead: AEAD = .aes256GCM
    ) throws -> SecureBytes {
        let encapsulated = try X25519.PublicKey(rawRepresentation: sealed.encapsulatedKey)
        let sharedSecret = try decapsulate(encapsulated, with: recipient)
        let context = try keySchedule(sharedSecret: sharedSecret, info: info, aead: aead)
        return try AESGCM(key: context.key).openSecret(sealed.ciphertext, nonce: context.baseNonce, aad: aad)
    }

    // MARK: RFC 9180 building blocks (internal, checked against the RFC's vectors)

    struct Context {
        let key: SecureBytes
        let baseNonce: [UInt8]
        let exporterSecret: SecureBytes
    }

    /// With a given ephemeral key: for published vectors and worked examples only.
    public static func seal(
        _ plaintext: some ReadableBytes, to recipient: X25519.PublicKey, info: [UInt8], aad: [UInt8], aead: AEAD = .aes256GCM,
        ephemeral: X25519.PrivateKey
    ) throws -> Sealed {
        let (sharedSecret, encapsulated) = try encapsulate(to: recipient, ephemeral: ephemeral)
        let context = try keySchedule(sharedSecret: sharedSecret, info: info, aead: aead)
        let ciphertext = try AESGCM(key: context.key).seal(plaintext, nonce: context.baseNonce, aad: aad)
        return Sealed(encapsulatedKey: encapsulated, ciphertext: ciphertext)
    }

    /// DeriveKeyPair (RFC 9180 §7.1.3) for X25519.
    static func deriveKeyPair(ikm: some ReadableBytes) throws -> X25519.PrivateKey {
        let prk = try labeledExtract(salt: [], label: "dkp_prk", ikm: ikm, suiteID: kemSuiteID)
        let secret = try labeledExpand(prk: prk, label: "sk", info: [], byteCount: 32, suiteID: kemSuiteID)
        return try X25519.PrivateKey(rawRepresentation: secret)
    }

    static func encapsulate(to recipient: X25519.PublicKey, ephemeral: X25519.PrivateKey) throws -> (SecureBytes, [UInt8]) {
        let dh = try ephemeral.sharedSecret(with: recipient)
        let encapsulated = ephemeral.publicKey.rawRepresentation
        let sharedSecret = try extractAndExpand(dh: dh, kemContext: encapsulated + recipient.rawRepresentation)
        return (sharedSecret, encapsulated)
    }

    static func decapsulate(_ encapsulated: X25519.PublicKey, with recipient: X25519.PrivateKey) throws -> SecureBytes {
        let dh = try recipient.sharedSecret(with: encapsulated)
        return try extractAndExpand(dh: dh, kemContext: encapsulated.rawRepresentation + recipient.publicKey.rawRepresentation)
    }

    static func keySchedule(sharedSecret: SecureBytes, info: [UInt8], aead: AEAD) throws -> Context {
        let suiteID = Array("HPKE".utf8) + bigEndian(kemID) + bigEndian(kdfID) + bigEndian(aead.rawValue)
        let pskIDHash = try labeledExtract(salt: [], label: "psk_id_hash", ikm: [UInt8](), suiteID: suiteID)
        let infoHash = try labeledExtract(salt: [], label: "info_hash", ikm: info, suiteID: suiteID)
        // mode_base = 0; the hashes are public values.
        let keyScheduleContext = [0] + pskIDHash.withUnsafeBytes(Array.init) + infoHash.withUnsafeBytes(Array.init)
        let secret = try labeledExtract(salt: sharedSecret, label: "secret", ikm: [UInt8](), suiteID: suiteID)
        let key = try labeledExpand(prk: secret, label: "key", info: keyScheduleContext, byteCount: aead.keyByteCount, suiteID: suiteID)
        let baseNonce = try labeledExpand(
            prk: secret, label: "base_nonce", info: keyScheduleContext, byteCount: nonceByteCount, suiteID: suiteID)
        let exporterSecret = try labeledExpand(prk: secret, label: "exp", info: keyScheduleContext, byteCount: 32, suiteID: suiteID)
        return Context(key: key, baseNonce: baseNonce.withUnsafeBytes(Array.init), exporterSecret: exporterSecret)
    }

    private static let kemSuiteID = Array("KEM".utf8) + bigEndian(kemID)

    private static func extractAndExpand(dh: SecureBytes, kemContext: [UInt8]) throws -> SecureBytes {
        let prk = try labeledExtract(salt: [], label: "eae_prk", ikm: dh, suiteID: kemSuiteID)
        return try labeledExpand(prk: prk, label: "shared_secret", info: kemContext, byteCount: 32, suiteID: kemSuiteID)
    }

    private static func labeledExtract(
        salt: some ReadableBytes, label: String, ikm: some ReadableBytes, suiteID: [UInt8]
    ) throws -> SecureBytes {
        let labeledIKM = concatenate(Array("HPKE-v1".utf8) + suiteID + Array(label.utf8), ikm)
        return try HKDF.extract(salt: salt, ikm: labeledIKM)
    }

    private static func labeledExpand(
        prk: SecureBytes, label: String, info: [UInt8], byteCount: Int, suiteID: [UInt8]
    ) throws -> SecureBytes {
        let labeledInfo = bigEndian(UInt16(byteCount)) + Array("HPKE-v1".utf8) + suiteID + Array(label.utf8) + info
        return try HKDF.expand(prk: prk, info: labeledInfo, byteCount: byteCount)
    }

    /// `prefix ‖ secret` in wiped memory.
    private static func concatenate(_ prefix: [UInt8], _ secret: some ReadableBytes) -> SecureBytes {
        secret.withUnsafeBytes { secret in
            SecureBytes(count: prefix.count + secret.count) { out in
                out.copyBytes(from: prefix)
                UnsafeMutableRawBufferPointer(rebasing: out[prefix.count...]).copyMemory(from: secret)
            }
        }
    }

    private static func bigEndian(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
}
