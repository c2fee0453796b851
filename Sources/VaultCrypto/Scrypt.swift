import CLibCrypto

/// scrypt (RFC 7914) through `EVP_KDF`, for passphrase-protected key files.
public enum Scrypt {
    public struct Parameters: Codable, Hashable, Sendable {
        /// CPU/memory cost; a power of two.
        public var n: UInt64
        /// Block size.
        public var r: UInt32
        /// Parallelism.
        public var p: UInt32

        public init(n: UInt64, r: UInt32, p: UInt32) {
            self.n = n
            self.r = r
            self.p = p
        }

        /// 2^17 × 8 × 128 B = 128 MiB and roughly half a second here: the
        /// interactive-login cost the scrypt paper and RFC 7914 discuss, scaled up.
        public static let `default` = Parameters(n: 1 << 17, r: 8, p: 1)

        /// Memory the derivation needs, in bytes (128 · r · N, plus p blocks).
        public var memoryByteCount: UInt64 { 128 * UInt64(r) * (n + UInt64(p)) }

        /// Rejects parameters that are unsafe or that a hostile key file could use
        /// to exhaust memory: N a power of two in 2^10…2^22, r 1…32, p 1…16, ≤ 4 GiB.
        public func validate() throws {
            guard n >= 1 << 10, n <= 1 << 22, n & (n - 1) == 0 else {
                throw CryptoError(.invalidInput, "scrypt N must be a power of two between 2^10 and 2^22, not \(n)")
            }
            guard (1...32).contains(r), (1...16).contains(p) else {
                throw CryptoError(.invalidInput, "scrypt r must be 1…32 and p 1…16 (got r=\(r), p=\(p))")
            }
            guard memoryByteCount <= 4 << 30 else {
                throw CryptoError(.invalidInput, "scrypt parameters need \(memoryByteCount >> 20) MiB, more than the 4 GiB allowed")
            }
        }
    }

    /// Derives `byteCount` bytes from `password` and `salt`. Does not validate
    /// `parameters` (the RFC's own vectors use N = 16); callers reading
    /// parameters from a file call `validate()` first.
    public static func deriveKey(
        password: some ReadableBytes, salt: some ReadableBytes, parameters: Parameters, byteCount: Int
    ) throws -> SecureBytes {
        guard let context = EVP_KDF_CTX_new(Algorithms.shared.scrypt) else { throw CryptoError.openSSL("EVP_KDF_CTX_new(SCRYPT)") }
        defer { EVP_KDF_CTX_free(context) }
        var n = parameters.n
        var r = parameters.r
        var p = parameters.p
        var maxMemory = parameters.memoryByteCount + (1 << 20)
        return try password.withUnsafeBytes { password in
            try salt.withUnsafeBytes { salt in
                try SecureBytes(count: byteCount) { out in
                    try withUnsafeMutablePointer(to: &n) { n in
                        try withUnsafeMutablePointer(to: &r) { r in
                            try withUnsafeMutablePointer(to: &p) { p in
                                try withUnsafeMutablePointer(to: &maxMemory) { maxMemory in
                                    let params = [
                                        Params.octets(vc_param_kdf_password(), password),
                                        Params.octets(vc_param_kdf_salt(), salt),
                                        OSSL_PARAM_construct_uint64(vc_param_scrypt_n(), n),
                                        OSSL_PARAM_construct_uint32(vc_param_scrypt_r(), r),
                                        OSSL_PARAM_construct_uint32(vc_param_scrypt_p(), p),
                                        OSSL_PARAM_construct_uint64(vc_param_scrypt_maxmem(), maxMemory),
                                    ]
                                    try Params.with(params) { params in
                                        try check(
                                            EVP_KDF_derive(
                                                context, out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, params),
                                            "EVP_KDF_derive(SCRYPT)")
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
