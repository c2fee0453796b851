/// Hexadecimal encoding (lowercase).
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes hex of either case; nil for odd length or a non-hex character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return character - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Where encoders and decoders put their bytes: an array, or wiped memory.
protocol ByteSink {
    mutating func append(_ byte: UInt8)
}

extension Array: ByteSink where Element == UInt8 {}

extension SecureBuffer: ByteSink {}

/// Writes into a fixed-size buffer (decoding a secret straight into `SecureBytes`).
private struct FixedSink: ByteSink {
    let buffer: UnsafeMutableRawBufferPointer
    var count = 0

    mutating func append(_ byte: UInt8) {
        buffer[count] = byte
        count += 1
    }
}

/// Base64 (RFC 4648 §4, padded) and base64url (§5, unpadded), strict on decode.
public enum Base64 {
    private static let standardAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        String(decoding: encodeBytes(bytes, alphabet: standardAlphabet, pad: true), as: UTF8.self)
    }

    public static func encodeURL(_ bytes: some Collection<UInt8>) -> String {
        String(decoding: encodeBytes(bytes, alphabet: urlAlphabet, pad: false), as: UTF8.self)
    }

    /// Appends the unpadded base64url form of `bytes` to `output` (hot path: tokens).
    public static func appendURL(_ bytes: UnsafeRawBufferPointer, to output: inout [UInt8]) {
        appendEncoded(bytes, alphabet: urlAlphabet, pad: false, to: &output)
    }

    /// Appends the padded base64 form of a secret to wiped memory.
    static func appendEncoded(_ bytes: UnsafeRawBufferPointer, to output: SecureBuffer) {
        var sink = output
        appendEncoded(bytes, alphabet: standardAlphabet, pad: true, to: &sink)
    }

    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let text = Array(text.utf8)
        return text.withUnsafeBytes { text in
            var out: [UInt8] = []
            out.reserveCapacity(text.count * 3 / 4)
            return decode(text, url: false, into: &out) ? out : nil
        }
    }

    public static func decodeURL(_ text: some StringProtocol) -> [UInt8]? {
        let text = Array(text.utf8)
        return text.withUnsafeBytes { text in
            var out: [UInt8] = []
            out.reserveCapacity(text.count * 3 / 4)
            return decode(text, url: true, into: &out) ? out : nil
        }
    }

    /// Decodes padded base64 straight into wiped memory (key files).
    static func decodeSecret(_ text: UnsafeRawBufferPointer) -> SecureBytes? {
        guard text.count % 4 == 0 else { return nil }
        var padding = 0
        while padding < 2, padding < text.count, text[text.count - 1 - padding] == UInt8(ascii: "=") { padding += 1 }
        let length = text.count / 4 * 3 - padding
        return try? SecureBytes(count: length) { buffer in
            var sink = FixedSink(buffer: buffer)
            guard decode(text, url: false, into: &sink), sink.count == length else { throw CryptoError(.invalidInput, "not base64") }
        }
    }

    private static func encodeBytes(_ bytes: some Collection<UInt8>, alphabet: [UInt8], pad: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        Array(bytes).withUnsafeBytes { appendEncoded($0, alphabet: alphabet, pad: pad, to: &out) }
        return out
    }

    private static func appendEncoded(_ bytes: UnsafeRawBufferPointer, alphabet: [UInt8], pad: Bool, to out: inout some ByteSink) {
        var index = 0
        while index + 3 <= bytes.count {
            let chunk = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            out.append(alphabet[Int(chunk >> 18 & 63)])
            out.append(alphabet[Int(chunk >> 12 & 63)])
            out.append(alphabet[Int(chunk >> 6 & 63)])
            out.append(alphabet[Int(chunk & 63)])
            index += 3
        }
        let remaining = bytes.count - index
        guard remaining > 0 else { return }
        let chunk = UInt32(bytes[index]) << 16 | (remaining == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
        out.append(alphabet[Int(chunk >> 18 & 63)])
        out.append(alphabet[Int(chunk >> 12 & 63)])
        if remaining == 2 { out.append(alphabet[Int(chunk >> 6 & 63)]) }
        if pad { for _ in remaining..<3 { out.append(UInt8(ascii: "=")) } }
    }

    /// Strict decoding: padding exactly as RFC 4648 writes it (none for
    /// base64url), and the leftover bits zero, so every byte string has one encoding.
    private static func decode(_ text: UnsafeRawBufferPointer, url: Bool, into out: inout some ByteSink) -> Bool {
        var bodyCount = text.count
        if !url {
            guard text.count % 4 == 0 else { return false }
            while bodyCount > 0, text[bodyCount - 1] == UInt8(ascii: "=") { bodyCount -= 1 }
            guard text.count - bodyCount <= 2 else { return false }
        } else if text.count % 4 == 1 {
            return false
        }
        var accumulator: UInt32 = 0
        var bits = 0
        for index in 0..<bodyCount {
            guard let value = sextet(text[index], url: url) else { return false }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return accumulator & ((1 << UInt32(bits)) - 1) == 0
    }

    private static func sextet(_ character: UInt8, url: Bool) -> UInt8? {
        switch character {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return character - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return character - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+") where !url, UInt8(ascii: "-") where url: return 62
        case UInt8(ascii: "/") where !url, UInt8(ascii: "_") where url: return 63
        default: return nil
        }
    }
}
