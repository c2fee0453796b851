import CLibCrypto

/// HMAC-SHA256 with one key, reusable for many messages.
///
/// The keyed `EVP_MAC_CTX` is built once; each message only re-initialises it
/// (`EVP_MAC_init` with a NULL key keeps the key schedule), which is what makes
/// per-message tokenization cheap. Not thread-safe: give each task its own.
public final class HMACSHA256 {
    public static let byteCount = 32

    private let context: OpaquePointer

    public init(key: some ReadableBytes) throws {
        guard let context = EVP_MAC_CTX_new(Algorithms.shared.hmac) else { throw CryptoError.openSSL("EVP_MAC_CTX_new") }
        self.context = context
        try key.withUnsafeBytes { key in
            guard key.count > 0 else { throw CryptoError(.invalidKey, "an HMAC key must not be empty") }
            try Params.with([Params.utf8(vc_param_mac_digest(), vc_name_sha256())]) { params in
                try check(
                    EVP_MAC_init(context, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count, params),
                    "EVP_MAC_init(HMAC-SHA256)")
            }
        }
    }

    deinit { EVP_MAC_CTX_free(context) }

    /// Starts a message; follow with `update` calls and one `finalize`.
    public func reset() throws {
        try check(EVP_MAC_init(context, nil, 0, nil), "EVP_MAC_init(reset)")
    }

    public func update(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        try check(EVP_MAC_update(context, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count), "EVP_MAC_update")
    }

    public func update(_ bytes: some ReadableBytes) throws {
        try bytes.withUnsafeBytes { try update($0) }
    }

    /// Writes the 32-byte MAC into `output` (which must hold at least 32 bytes).
    public func finalize(into output: UnsafeMutableRawBufferPointer) throws {
        precondition(output.count >= Self.byteCount, "HMAC output buffer too small")
        var written = 0
        try check(
            EVP_MAC_final(context, output.baseAddress!.assumingMemoryBound(to: UInt8.self), &written, output.count),
            "EVP_MAC_final")
    }

    /// The MAC of one whole message.
    public func authenticationCode(for message: some ReadableBytes) throws -> [UInt8] {
        try reset()
        try update(message)
        var out = [UInt8](repeating: 0, count: Self.byteCount)
        try out.withUnsafeMutableBytes { try finalize(into: $0) }
        return out
    }
}

/// SHA-256 (audit hash chain, SigV4 payload hashes).
public enum SHA256 {
    public static let byteCount = 32

    public static func hash(_ data: UnsafeRawBufferPointer) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        try out.withUnsafeMutableBufferPointer { out in
            try check(
                EVP_Digest(
                    data.baseAddress ?? UnsafeRawPointer(out.baseAddress!), data.count, out.baseAddress, &length,
                    Algorithms.shared.sha256, nil),
                "EVP_Digest(SHA256)")
        }
        return out
    }

    public static func hash(_ data: some ReadableBytes) throws -> [UInt8] {
        try data.withUnsafeBytes { try hash($0) }
    }

    public static func hash(_ string: String) throws -> [UInt8] {
        var copy = string
        return try copy.withUTF8 { try hash(UnsafeRawBufferPointer($0)) }
    }
}
