import CLibCrypto

/// HKDF-SHA256 (RFC 5869) through `EVP_KDF`.
public enum HKDF {
    /// HKDF-Extract: a 32-byte pseudorandom key from `ikm` and `salt`.
    public static func extract(salt: some ReadableBytes, ikm: some ReadableBytes) throws -> SecureBytes {
        try salt.withUnsafeBytes { salt in
            try ikm.withUnsafeBytes { ikm in
                try SecureBytes(count: SHA256.byteCount) { out in
                    try derive(mode: EVP_KDF_HKDF_MODE_EXTRACT_ONLY, key: ikm, salt: salt, info: nil, into: out)
                }
            }
        }
    }

    /// HKDF-Expand: `byteCount` bytes (at most 255 × 32) from `prk` and `info`.
    public static func expand(prk: some ReadableBytes, info: some ReadableBytes, byteCount: Int) throws -> SecureBytes {
        guard byteCount > 0, byteCount <= 255 * SHA256.byteCount else {
            throw CryptoError(.invalidInput, "HKDF-SHA256 can expand to 1…8160 bytes, not \(byteCount)")
        }
        return try prk.withUnsafeBytes { prk in
            try info.withUnsafeBytes { info in
                try SecureBytes(count: byteCount) { out in
                    try derive(mode: EVP_KDF_HKDF_MODE_EXPAND_ONLY, key: prk, salt: nil, info: info, into: out)
                }
            }
        }
    }

    /// Extract then expand.
    public static func deriveKey(
        ikm: some ReadableBytes, salt: some ReadableBytes, info: some ReadableBytes, byteCount: Int
    ) throws -> SecureBytes {
        try expand(prk: extract(salt: salt, ikm: ikm), info: info, byteCount: byteCount)
    }

    private static func derive(
        mode: Int32, key: UnsafeRawBufferPointer, salt: UnsafeRawBufferPointer?, info: UnsafeRawBufferPointer?,
        into out: UnsafeMutableRawBufferPointer
    ) throws {
        guard let context = EVP_KDF_CTX_new(Algorithms.shared.hkdf) else { throw CryptoError.openSSL("EVP_KDF_CTX_new(HKDF)") }
        defer { EVP_KDF_CTX_free(context) }
        var mode = mode
        try withUnsafeMutablePointer(to: &mode) { modePointer in
            var params = [
                Params.utf8(vc_param_kdf_digest(), vc_name_sha256()),
                OSSL_PARAM_construct_int(vc_param_kdf_mode(), modePointer),
                Params.octets(vc_param_kdf_key(), key),
            ]
            // An absent salt means the RFC's default (HashLen zero bytes); an empty
            // one must not be passed, as OpenSSL treats "set but empty" as missing.
            if let salt, salt.count > 0 { params.append(Params.octets(vc_param_kdf_salt(), salt)) }
            if let info, info.count > 0 { params.append(Params.octets(vc_param_kdf_info(), info)) }
            try Params.with(params) { params in
                try check(
                    EVP_KDF_derive(context, out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, params),
                    "EVP_KDF_derive(HKDF)")
            }
        }
    }
}
