public import VaultCrypto

/// Data keys (DEKs) are stored wrapped to a recovery public key with HPKE, so
/// that `ingest` (which only has the public key) can create them and only
/// `vault` (with the private key) can open them.
///
/// Stored form: `enc (32 bytes) ‖ AES-256-GCM ciphertext of the key (32 + 16)`.
/// The associated data binds the wrap to the data key's id and the recovery
/// key version, so a wrapped key copied to another row does not open.
public enum DataKeyWrap {
    public static let keyByteCount = 32
    static let info = Array("pseudonymizer data key v1".utf8)

    static func aad(dataKeyID: String, recoveryVersion: Int) -> [UInt8] {
        Array("pseudonymizer.dek.v1\u{0}\(dataKeyID)\u{0}recovery-v\(recoveryVersion)".utf8)
    }

    public static func wrap(_ key: SecureBytes, dataKeyID: String, to recipient: RecoveryPublicKey) throws -> [UInt8] {
        try wrap(key, dataKeyID: dataKeyID, to: recipient, ephemeral: X25519.PrivateKey())
    }

    /// With a given ephemeral key (FORMATS.md's worked example); real wraps draw it at random.
    static func wrap(_ key: SecureBytes, dataKeyID: String, to recipient: RecoveryPublicKey, ephemeral: X25519.PrivateKey) throws -> [UInt8]
    {
        let sealed = try HPKE.seal(
            key, to: recipient.publicKey, info: info,
            aad: aad(dataKeyID: dataKeyID, recoveryVersion: recipient.version), ephemeral: ephemeral)
        return sealed.encapsulatedKey + sealed.ciphertext
    }

    public static func unwrap(
        _ wrapped: [UInt8], dataKeyID: String, recoveryVersion: Int, with privateKey: X25519.PrivateKey
    ) throws -> SecureBytes {
        guard wrapped.count == X25519.keyByteCount + keyByteCount + AESGCM.tagByteCount else {
            throw CryptoError(.authenticationFailed, "wrapped data key \(dataKeyID) has \(wrapped.count) bytes, not 80")
        }
        let sealed = HPKE.Sealed(
            encapsulatedKey: Array(wrapped.prefix(X25519.keyByteCount)),
            ciphertext: Array(wrapped.dropFirst(X25519.keyByteCount)))
        do {
            return try HPKE.open(sealed, with: privateKey, info: info, aad: aad(dataKeyID: dataKeyID, recoveryVersion: recoveryVersion))
        } catch let error as CryptoError where error.code == .authenticationFailed {
            throw CryptoError(
                .authenticationFailed,
                "data key \(dataKeyID) does not open with recovery key v\(recoveryVersion) (wrong key, or the wrapped key was altered)")
        }
    }
}
