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

    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        decodeBytes(Array(text.utf8), url: false)
    }

    public static func decodeURL(_ text: some StringProtocol) -> [UInt8]? {
        decodeBytes(Array(text.utf8), url: true)
    }

    private static func encodeBytes(_ bytes: some Collection<UInt8>, alphabet: [UInt8], pad: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        Array(bytes).withUnsafeBytes { appendEncoded($0, alphabet: alphabet, pad: pad, to: &out) }
        return out
    }

    private static func appendEncoded(_ bytes: UnsafeRawBufferPointer, alphabet: [UInt8], pad: Bool, to out: inout [UInt8]) {
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
        if pad { out.append(contentsOf: Array(repeating: UInt8(ascii: "="), count: 3 - remaining)) }
    }

    private static func decodeBytes(_ text: [UInt8], url: Bool) -> [UInt8]? {
        var body = text[...]
        if !url {
            guard text.count % 4 == 0 else { return nil }
            while body.last == UInt8(ascii: "=") { body = body.dropLast() }
            guard text.count - body.count <= 2 else { return nil }
        } else if text.count % 4 == 1 {
            return nil
        }
        var out: [UInt8] = []
        out.reserveCapacity(body.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for character in body {
            guard let value = sextet(character, url: url) else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // Leftover bits must be zero, so that every byte string has one encoding.
        guard accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
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
