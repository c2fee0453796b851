import CLibCrypto

/// A failure of a cryptographic operation.
///
/// `description` never contains key material or plaintext: only what failed and,
/// for library failures, OpenSSL's own reason string. Equality compares the
/// code only, so callers can match on `CryptoError.authenticationFailed` without
/// caring about the message.
public struct CryptoError: Error, Hashable, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case authenticationFailed = "authentication failed"
            case invalidKey = "invalid key"
            case invalidInput = "invalid input"
            case weakSharedSecret = "weak shared secret"
            case library = "OpenSSL failure"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A tag, ciphertext, AAD or key did not verify: the data was modified,
        /// belongs elsewhere, or the key is wrong. Never a partial plaintext.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// Key bytes of the wrong length or form.
        public static let invalidKey = Code(.invalidKey)
        /// An argument outside what the primitive accepts (nonce length, sizes).
        public static let invalidInput = Code(.invalidInput)
        /// X25519 produced the all-zero output (a low-order peer key, RFC 7748 §6.1).
        public static let weakSharedSecret = Code(.weakSharedSecret)
        /// OpenSSL reported an error; the message carries its reason string.
        public static let library = Code(.library)

        public var description: String { base.rawValue }
    }

    public let code: Code
    public let message: String
    public let file: String
    public let line: Int

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public static let authenticationFailed = CryptoError(.authenticationFailed, "authentication failed")

    public var description: String { "\(code): \(message)" }

    public static func == (lhs: CryptoError, rhs: CryptoError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// A library failure for `operation`, carrying (and clearing) OpenSSL's error queue.
    static func openSSL(_ operation: String, file: String = #fileID, line: Int = #line) -> CryptoError {
        CryptoError(.library, "\(operation) failed: \(drainOpenSSLErrors())", file: file, line: line)
    }
}

/// Reads and clears this thread's OpenSSL error queue. OpenSSL's reason strings
/// name the failing function and reason; they never contain key or data bytes.
func drainOpenSSLErrors() -> String {
    var reasons: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return reasons.isEmpty ? "no reason reported" : reasons.joined(separator: "; ")
}

/// Throws the library error for `operation` unless OpenSSL returned 1 (success).
@inline(__always)
func check(_ result: Int32, _ operation: @autoclosure () -> String, file: String = #fileID, line: Int = #line) throws {
    guard result == 1 else { throw CryptoError.openSSL(operation(), file: file, line: line) }
}
