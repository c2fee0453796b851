import CLibCrypto

/// Helpers to build `OSSL_PARAM` arrays from Swift.
///
/// An `OSSL_PARAM` only points at its key and value; OpenSSL reads them during
/// the call it is passed to. Keys come from the shim's static literals; values
/// must be pinned by the caller (`withUnsafeBytes`) for the duration of `body`.
enum Params {
    static func octets(_ key: UnsafePointer<CChar>, _ bytes: UnsafeRawBufferPointer) -> OSSL_PARAM {
        // OpenSSL rejects a NULL data pointer even for an empty string.
        OSSL_PARAM_construct_octet_string(
            key, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafeRawPointer(EmptyBuffer.pointer)), bytes.count)
    }

    static func utf8(_ key: UnsafePointer<CChar>, _ value: UnsafePointer<CChar>) -> OSSL_PARAM {
        OSSL_PARAM_construct_utf8_string(key, UnsafeMutablePointer(mutating: value), 0)
    }

    static func with<Result>(_ params: [OSSL_PARAM], _ body: (UnsafePointer<OSSL_PARAM>) throws -> Result) rethrows -> Result {
        let terminated = params + [OSSL_PARAM_construct_end()]
        return try terminated.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }
}

/// A process-lifetime, one-byte allocation that stands in for the address of an
/// empty buffer (Swift gives empty buffers a nil base address).
private enum EmptyBuffer {
    nonisolated(unsafe) static let pointer: UnsafeMutableRawPointer = {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)
        pointer.storeBytes(of: 0, as: UInt8.self)
        return pointer
    }()
}
