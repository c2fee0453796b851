import CLibCrypto

/// Secret bytes (keys, shared secrets, passphrases) in a heap buffer that is
/// wiped with `OPENSSL_cleanse` when the last reference goes away.
///
/// The bytes are only reachable through `withUnsafeBytes`; `description` never
/// shows them; `==` runs in constant time.
public final class SecureBytes: @unchecked Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    // Immutable after init, so sharing across threads is safe. The allocation is
    // at least one byte so that an empty secret still has a valid base address.
    private let storage: UnsafeMutableRawBufferPointer
    public let count: Int

    /// Takes a copy of `bytes`. Callers holding secrets in ordinary arrays should
    /// move them here as early as they can and wipe the original.
    public init(_ bytes: some Collection<UInt8>) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        _ = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count]).initializeMemory(as: UInt8.self, from: bytes)
        storage = buffer
        count = bytes.count
    }

    /// Allocates `count` bytes and lets `fill` write them (e.g. a KDF output),
    /// so the secret never exists outside this buffer.
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        do {
            try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        } catch {
            OPENSSL_cleanse(buffer.baseAddress, buffer.count)
            buffer.deallocate()
            throw error
        }
        storage = buffer
        self.count = count
    }

    /// `count` fresh random bytes from OpenSSL's CSPRNG.
    public static func random(count: Int) throws -> SecureBytes {
        try SecureBytes(count: count) { buffer in try SystemRandom.fill(buffer) }
    }

    deinit {
        OPENSSL_cleanse(storage.baseAddress, storage.count)
        storage.deallocate()
    }

    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    public static func == (lhs: SecureBytes, rhs: SecureBytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in constantTimeEquals(left, right) } }
    }

    public var description: String { "SecureBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ lhs: UnsafeRawBufferPointer, _ rhs: UnsafeRawBufferPointer) -> Bool {
    guard lhs.count == rhs.count else { return false }
    guard lhs.count > 0 else { return true }
    return CRYPTO_memcmp(lhs.baseAddress, rhs.baseAddress, lhs.count) == 0
}

/// Constant-time comparison of two byte collections (MACs, tokens).
public func constantTimeEquals(_ lhs: some ReadableBytes, _ rhs: some ReadableBytes) -> Bool {
    lhs.withUnsafeBytes { left in rhs.withUnsafeBytes { right in constantTimeEquals(left, right) } }
}

/// Types that expose contiguous bytes without copying: `[UInt8]`, slices of it,
/// and `SecureBytes`-held data through its own closure.
public protocol ReadableBytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ReadableBytes where Element == UInt8 {}
extension ArraySlice: ReadableBytes where Element == UInt8 {}
extension ContiguousArray: ReadableBytes where Element == UInt8 {}

/// OpenSSL's CSPRNG.
public enum SystemRandom {
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        guard buffer.count > 0 else { return }
        try check(RAND_bytes(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(buffer.count)), "RAND_bytes")
    }

    public static func bytes(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { buffer in try fill(buffer) }
        return out
    }
}

extension SecureBytes: ReadableBytes {}

/// Overwrites `bytes` with zeros in a way the optimizer keeps (`OPENSSL_cleanse`):
/// for secrets that had to pass through ordinary buffers (an HTTP body).
public func wipe(_ bytes: UnsafeMutableRawBufferPointer) {
    guard let base = bytes.baseAddress else { return }
    OPENSSL_cleanse(base, bytes.count)
}
