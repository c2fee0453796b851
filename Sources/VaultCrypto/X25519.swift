import CLibCrypto

/// X25519 (RFC 7748) key agreement.
public enum X25519 {
    public static let keyByteCount = 32

    public struct PublicKey: Hashable, Sendable, CustomStringConvertible {
        public let rawRepresentation: [UInt8]

        public init(rawRepresentation: [UInt8]) throws {
            guard rawRepresentation.count == X25519.keyByteCount else {
                throw CryptoError(.invalidKey, "an X25519 public key has 32 bytes, not \(rawRepresentation.count)")
            }
            self.rawRepresentation = rawRepresentation
        }

        public var description: String { "X25519.PublicKey(\(Hex.encode(rawRepresentation)))" }
    }

    /// A private key. The `EVP_PKEY` is immutable after creation and OpenSSL
    /// allows concurrent derivations from it, each with its own `EVP_PKEY_CTX`.
    public final class PrivateKey: @unchecked Sendable, CustomStringConvertible {
        let key: OpaquePointer
        public let publicKey: PublicKey
        public let rawRepresentation: SecureBytes

        public convenience init() throws {
            try self.init(rawRepresentation: SecureBytes.random(count: X25519.keyByteCount))
        }

        /// Any 32 bytes are a valid X25519 private key (clamping happens at use).
        public init(rawRepresentation: SecureBytes) throws {
            guard rawRepresentation.count == X25519.keyByteCount else {
                throw CryptoError(.invalidKey, "an X25519 private key has 32 bytes, not \(rawRepresentation.count)")
            }
            let created = rawRepresentation.withUnsafeBytes { raw in
                EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nil, bytePointer(raw), raw.count)
            }
            guard let key = created else { throw CryptoError.openSSL("EVP_PKEY_new_raw_private_key(X25519)") }
            var publicBytes = [UInt8](repeating: 0, count: X25519.keyByteCount)
            var length = publicBytes.count
            guard EVP_PKEY_get_raw_public_key(key, &publicBytes, &length) == 1, length == X25519.keyByteCount else {
                EVP_PKEY_free(key)
                throw CryptoError.openSSL("EVP_PKEY_get_raw_public_key(X25519)")
            }
            self.key = key
            self.rawRepresentation = rawRepresentation
            self.publicKey = try PublicKey(rawRepresentation: publicBytes)
        }

        deinit { EVP_PKEY_free(key) }

        /// The raw X25519 shared secret with `peer`. Refuses the all-zero result
        /// that a low-order peer key forces (RFC 7748 §6.1).
        public func sharedSecret(with peer: PublicKey) throws -> SecureBytes {
            let created = peer.rawRepresentation.withUnsafeBytes { raw in
                EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nil, bytePointer(raw), raw.count)
            }
            guard let peerKey = created else { throw CryptoError.openSSL("EVP_PKEY_new_raw_public_key(X25519)") }
            defer { EVP_PKEY_free(peerKey) }
            guard let context = EVP_PKEY_CTX_new(key, nil) else { throw CryptoError.openSSL("EVP_PKEY_CTX_new") }
            defer { EVP_PKEY_CTX_free(context) }
            try check(EVP_PKEY_derive_init(context), "EVP_PKEY_derive_init")
            try check(EVP_PKEY_derive_set_peer(context, peerKey), "EVP_PKEY_derive_set_peer")
            let secret = try SecureBytes(count: X25519.keyByteCount) { out in
                var length = out.count
                guard EVP_PKEY_derive(context, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &length) == 1 else {
                    // OpenSSL itself fails the derivation when the result is all zero.
                    _ = drainOpenSSLErrors()
                    throw CryptoError(.weakSharedSecret, "X25519 with this peer key gives the all-zero shared secret (a low-order point)")
                }
                guard length == X25519.keyByteCount else { throw CryptoError(.library, "X25519 derived \(length) bytes") }
            }
            let allZero = secret.withUnsafeBytes { bytes in bytes.reduce(UInt8(0)) { $0 | $1 } == 0 }
            guard !allZero else {
                throw CryptoError(.weakSharedSecret, "X25519 with this peer key gives the all-zero shared secret (a low-order point)")
            }
            return secret
        }

        public var description: String { "X25519.PrivateKey(public: \(Hex.encode(publicKey.rawRepresentation)))" }
    }
}
