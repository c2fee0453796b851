import CLibCrypto

/// AES-GCM with one key (128 or 256 bits), 96-bit nonces and 128-bit tags.
///
/// The key schedule is set up once per instance; each operation only sets a new
/// nonce. Sealed output is `ciphertext ‖ tag`. Opening checks the tag before any
/// plaintext is returned: a modified ciphertext, nonce, tag or AAD, a truncated
/// input or a wrong key all throw `CryptoError.authenticationFailed`.
/// Not thread-safe: give each task its own instance.
public final class AESGCM {
    public static let nonceByteCount = 12
    public static let tagByteCount = 16

    private let encryptor: OpaquePointer
    private let decryptor: OpaquePointer

    /// - Parameter key: 16 bytes (AES-128-GCM) or 32 bytes (AES-256-GCM).
    public init(key: some ReadableBytes) throws {
        let cipher: OpaquePointer = try key.withUnsafeBytes { key in
            switch key.count {
            case 16: return Algorithms.shared.aes128GCM
            case 32: return Algorithms.shared.aes256GCM
            default: throw CryptoError(.invalidKey, "an AES-GCM key has 16 or 32 bytes, not \(key.count)")
            }
        }
        guard let encryptor = EVP_CIPHER_CTX_new() else { throw CryptoError.openSSL("EVP_CIPHER_CTX_new") }
        guard let decryptor = EVP_CIPHER_CTX_new() else {
            EVP_CIPHER_CTX_free(encryptor)
            throw CryptoError.openSSL("EVP_CIPHER_CTX_new")
        }
        self.encryptor = encryptor
        self.decryptor = decryptor
        try key.withUnsafeBytes { key in
            let keyPointer = key.baseAddress!.assumingMemoryBound(to: UInt8.self)
            try check(EVP_EncryptInit_ex2(encryptor, cipher, keyPointer, nil, nil), "EVP_EncryptInit_ex2(key)")
            try check(EVP_DecryptInit_ex2(decryptor, cipher, keyPointer, nil, nil), "EVP_DecryptInit_ex2(key)")
        }
    }

    deinit {
        EVP_CIPHER_CTX_free(encryptor)
        EVP_CIPHER_CTX_free(decryptor)
    }

    /// Encrypts `plaintext` into `output`, which must hold `plaintext.count + 16` bytes.
    public func seal(
        _ plaintext: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        guard nonce.count == Self.nonceByteCount else {
            throw CryptoError(.invalidInput, "an AES-GCM nonce has 12 bytes, not \(nonce.count)")
        }
        precondition(output.count >= plaintext.count + Self.tagByteCount, "AES-GCM output buffer too small")
        let out = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written: Int32 = 0
        try check(EVP_EncryptInit_ex2(encryptor, nil, nil, bytePointer(nonce), nil), "EVP_EncryptInit_ex2(nonce)")
        if aad.count > 0 {
            try check(EVP_EncryptUpdate(encryptor, nil, &written, bytePointer(aad), Int32(aad.count)), "EVP_EncryptUpdate(aad)")
        }
        var total = 0
        if plaintext.count > 0 {
            try check(EVP_EncryptUpdate(encryptor, out, &written, bytePointer(plaintext), Int32(plaintext.count)), "EVP_EncryptUpdate")
            total = Int(written)
        }
        try check(EVP_EncryptFinal_ex(encryptor, out + total, &written), "EVP_EncryptFinal_ex")
        total += Int(written)
        try check(
            EVP_CIPHER_CTX_ctrl(encryptor, EVP_CTRL_GCM_GET_TAG, Int32(Self.tagByteCount), out + total),
            "EVP_CTRL_GCM_GET_TAG")
    }

    /// Returns `ciphertext ‖ tag`.
    public func seal(_ plaintext: some ReadableBytes, nonce: some ReadableBytes, aad: some ReadableBytes) throws -> [UInt8] {
        try plaintext.withUnsafeBytes { plaintext in
            try nonce.withUnsafeBytes { nonce in
                try aad.withUnsafeBytes { aad in
                    var out = [UInt8](repeating: 0, count: plaintext.count + Self.tagByteCount)
                    try out.withUnsafeMutableBytes { try seal(plaintext, nonce: nonce, aad: aad, into: $0) }
                    return out
                }
            }
        }
    }

    /// Verifies and decrypts `sealed` (`ciphertext ‖ tag`) into `output`, which
    /// must hold `sealed.count - 16` bytes. On failure `output` is zeroed.
    public func open(
        _ sealed: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer, aad: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) throws {
        guard nonce.count == Self.nonceByteCount else {
            throw CryptoError(.invalidInput, "an AES-GCM nonce has 12 bytes, not \(nonce.count)")
        }
        guard sealed.count >= Self.tagByteCount else {
            throw CryptoError(.authenticationFailed, "sealed data is shorter than its tag")
        }
        let ciphertextCount = sealed.count - Self.tagByteCount
        precondition(output.count >= ciphertextCount, "AES-GCM output buffer too small")
        let out = output.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) }
        var written: Int32 = 0
        var total = 0
        do {
            try check(EVP_DecryptInit_ex2(decryptor, nil, nil, bytePointer(nonce), nil), "EVP_DecryptInit_ex2(nonce)")
            if aad.count > 0 {
                try check(EVP_DecryptUpdate(decryptor, nil, &written, bytePointer(aad), Int32(aad.count)), "EVP_DecryptUpdate(aad)")
            }
            if ciphertextCount > 0 {
                try check(EVP_DecryptUpdate(decryptor, out, &written, bytePointer(sealed), Int32(ciphertextCount)), "EVP_DecryptUpdate")
                total = Int(written)
            }
            let tag = UnsafeMutableRawPointer(mutating: sealed.baseAddress! + ciphertextCount)
            try check(EVP_CIPHER_CTX_ctrl(decryptor, EVP_CTRL_GCM_SET_TAG, Int32(Self.tagByteCount), tag), "EVP_CTRL_GCM_SET_TAG")
        } catch {
            if ciphertextCount > 0 { OPENSSL_cleanse(output.baseAddress, ciphertextCount) }
            throw error
        }
        // GCM writes nothing at the final step; a scratch byte stands in for an empty output.
        var scratch: UInt8 = 0
        let verified = withUnsafeMutablePointer(to: &scratch) { scratch in
            EVP_DecryptFinal_ex(decryptor, out.map { $0 + total } ?? scratch, &written) == 1
        }
        guard verified else {
            // A tag mismatch leaves nothing on OpenSSL's error queue; clear it anyway.
            _ = drainOpenSSLErrors()
            if ciphertextCount > 0 { OPENSSL_cleanse(output.baseAddress, ciphertextCount) }
            throw CryptoError.authenticationFailed
        }
    }

    /// Verifies and decrypts `ciphertext ‖ tag`.
    public func open(_ sealed: some ReadableBytes, nonce: some ReadableBytes, aad: some ReadableBytes) throws -> [UInt8] {
        try sealed.withUnsafeBytes { sealed in
            try nonce.withUnsafeBytes { nonce in
                try aad.withUnsafeBytes { aad in
                    var out = [UInt8](repeating: 0, count: max(sealed.count - Self.tagByteCount, 0))
                    try out.withUnsafeMutableBytes { try open(sealed, nonce: nonce, aad: aad, into: $0) }
                    return out
                }
            }
        }
    }

    /// Like `open`, for plaintexts that are themselves secrets (wrapped keys).
    public func openSecret(_ sealed: some ReadableBytes, nonce: some ReadableBytes, aad: some ReadableBytes) throws -> SecureBytes {
        try sealed.withUnsafeBytes { sealed in
            try nonce.withUnsafeBytes { nonce in
                try aad.withUnsafeBytes { aad in
                    guard sealed.count >= Self.tagByteCount else {
                        throw CryptoError(.authenticationFailed, "sealed data is shorter than its tag")
                    }
                    return try SecureBytes(count: sealed.count - Self.tagByteCount) { out in
                        try open(sealed, nonce: nonce, aad: aad, into: out)
                    }
                }
            }
        }
    }
}

@inline(__always)
func bytePointer(_ buffer: UnsafeRawBufferPointer) -> UnsafePointer<UInt8>? {
    buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
}
