/// A strict RFC 8259 parser for one flat JSON object whose interesting members
/// are strings or null.
///
/// It reads the body once, decodes only the members it is asked for, and
/// validates (without building) everything else, with a nesting limit, so
/// hostile input costs linear time and bounded stack. Errors say where the
/// JSON broke, never what it contained.
struct JSONObjectParser {
    enum Value: Equatable {
        case string(String)
        case null
        case other(String)  // the JSON type's name: number, boolean, object, array
    }

    static let maximumDepth = 64

    /// The members named in `wanted`, in a fixed order; unknown member count;
    /// duplicate members are an error.
    static func parse(
        _ bytes: UnsafeBufferPointer<UInt8>, wanted: [String]
    ) throws(Rejection) -> (values: [Value?], unknownMembers: Int) {
        var scanner = Scanner(bytes: bytes)
        var values = [Value?](repeating: nil, count: wanted.count)
        var seen = Set<String>()
        var unknown = 0
        scanner.skipWhitespace()
        guard scanner.peek() == UInt8(ascii: "{") else {
            if scanner.isAtEnd { throw Rejection(.invalidJSON, "the body is empty") }
            try scanner.skipValue(depth: 0)
            scanner.skipWhitespace()
            guard scanner.isAtEnd else { throw scanner.error("unexpected data after the JSON value") }
            throw Rejection(.notAnObject, "the body is JSON but not an object")
        }
        scanner.index += 1
        scanner.skipWhitespace()
        if scanner.peek() == UInt8(ascii: "}") {
            scanner.index += 1
        } else {
            while true {
                scanner.skipWhitespace()
                guard scanner.peek() == UInt8(ascii: "\"") else { throw scanner.error("expected a member name") }
                let key = try scanner.parseString()
                guard seen.insert(key).inserted else {
                    throw Rejection(
                        .duplicateField, field: wanted.contains(key) ? key : nil,
                        wanted.contains(key) ? "field \(key) appears more than once" : "a member name appears more than once")
                }
                scanner.skipWhitespace()
                guard scanner.peek() == UInt8(ascii: ":") else { throw scanner.error("expected ':'") }
                scanner.index += 1
                scanner.skipWhitespace()
                if let slot = wanted.firstIndex(of: key) {
                    values[slot] = try scanner.parseFieldValue()
                } else {
                    unknown += 1
                    try scanner.skipValue(depth: 1)
                }
                scanner.skipWhitespace()
                guard let next = scanner.peek() else { throw scanner.error("unterminated object") }
                scanner.index += 1
                if next == UInt8(ascii: "}") { break }
                guard next == UInt8(ascii: ",") else { throw scanner.error("expected ',' or '}'") }
            }
        }
        scanner.skipWhitespace()
        guard scanner.isAtEnd else { throw scanner.error("unexpected data after the object") }
        return (values, unknown)
    }

    struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        var isAtEnd: Bool { index >= bytes.count }

        func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

        func error(_ what: String) -> Rejection {
            Rejection(.invalidJSON, "invalid JSON at byte \(index): \(what)")
        }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0a, 0x0d: index += 1
                default: return
                }
            }
        }

        mutating func parseFieldValue() throws(Rejection) -> Value {
            switch peek() {
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "n"):
                try expectLiteral("null")
                return .null
            case UInt8(ascii: "t"), UInt8(ascii: "f"):
                try skipValue(depth: 1)
                return .other("boolean")
            case UInt8(ascii: "{"):
                try skipValue(depth: 1)
                return .other("object")
            case UInt8(ascii: "["):
                try skipValue(depth: 1)
                return .other("array")
            default:
                try skipValue(depth: 1)
                return .other("number")
            }
        }

        mutating func skipValue(depth: Int) throws(Rejection) {
            guard depth <= JSONObjectParser.maximumDepth else { throw error("nesting deeper than \(JSONObjectParser.maximumDepth) levels") }
            guard let first = peek() else { throw error("expected a value") }
            switch first {
            case UInt8(ascii: "\""): _ = try parseString(keep: false)
            case UInt8(ascii: "t"): try expectLiteral("true")
            case UInt8(ascii: "f"): try expectLiteral("false")
            case UInt8(ascii: "n"): try expectLiteral("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try skipNumber()
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                let isObject = first == UInt8(ascii: "{")
                let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
                index += 1
                skipWhitespace()
                if peek() == close {
                    index += 1
                    return
                }
                while true {
                    skipWhitespace()
                    if isObject {
                        guard peek() == UInt8(ascii: "\"") else { throw error("expected a member name") }
                        _ = try parseString(keep: false)
                        skipWhitespace()
                        guard peek() == UInt8(ascii: ":") else { throw error("expected ':'") }
                        index += 1
                        skipWhitespace()
                    }
                    try skipValue(depth: depth + 1)
                    skipWhitespace()
                    guard let next = peek() else { throw error("unterminated \(isObject ? "object" : "array")") }
                    index += 1
                    if next == close { return }
                    guard next == UInt8(ascii: ",") else { throw error("expected ',' or '\(Character(Unicode.Scalar(close)))'") }
                }
            default:
                throw error("unexpected character")
            }
        }

        mutating func expectLiteral(_ literal: StaticString) throws(Rejection) {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw error("truncated literal") }
            for offset in 0..<count where bytes[index + offset] != literal.utf8Start[offset] {
                throw error("invalid literal")
            }
            index += count
        }

        /// Validates the RFC 8259 number grammar; big numbers are fine (never converted).
        mutating func skipNumber() throws(Rejection) {
            if peek() == UInt8(ascii: "-") { index += 1 }
            guard let first = peek(), isDigit(first) else { throw error("invalid number") }
            index += 1
            if first != UInt8(ascii: "0") { skipDigits() }
            if peek() == UInt8(ascii: ".") {
                index += 1
                guard let digit = peek(), isDigit(digit) else { throw error("invalid number") }
                skipDigits()
            }
            if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
                index += 1
                if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { index += 1 }
                guard let digit = peek(), isDigit(digit) else { throw error("invalid number") }
                skipDigits()
            }
        }

        private mutating func skipDigits() {
            while let byte = peek(), isDigit(byte) { index += 1 }
        }

        private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        /// Parses a string starting at the opening quote. With `keep: false` it
        /// only validates (escapes, UTF-8) and returns "".
        mutating func parseString(keep: Bool = true) throws(Rejection) -> String {
            index += 1  // opening quote
            let start = index
            // Fast path: plain ASCII without escapes, the usual case.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    index += 1
                    return keep ? String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(index - 1)]), as: UTF8.self) : ""
                }
                if byte == UInt8(ascii: "\\") || byte >= 0x80 || byte < 0x20 { break }
                index += 1
            }
            var decoded: [UInt8] = []
            decoded.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
            while true {
                guard index < bytes.count else { throw error("unterminated string") }
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    guard let string = String(validating: decoded, as: UTF8.self) else {
                        throw Rejection(.invalidUTF8, "a string is not valid UTF-8")
                    }
                    return keep ? string : ""
                case 0..<0x20:
                    throw error("control character inside a string (must be escaped)")
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escape = peek() else { throw error("unterminated escape") }
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
                    case UInt8(ascii: "b"): decoded.append(0x08)
                    case UInt8(ascii: "f"): decoded.append(0x0c)
                    case UInt8(ascii: "n"): decoded.append(0x0a)
                    case UInt8(ascii: "r"): decoded.append(0x0d)
                    case UInt8(ascii: "t"): decoded.append(0x09)
                    case UInt8(ascii: "u"): try appendUnicodeEscape(to: &decoded)
                    default: throw error("invalid escape")
                    }
                default:
                    decoded.append(byte)
                    index += 1
                }
            }
        }

        private mutating func readHex4() throws(Rejection) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let nibble: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw error("invalid \\u escape")
                }
                value = value << 4 | nibble
                index += 1
            }
            return value
        }

        private mutating func appendUnicodeEscape(to decoded: inout [UInt8]) throws(Rejection) {
            var scalar = try readHex4()
            if (0xD800...0xDBFF).contains(scalar) {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                    throw Rejection(.invalidUTF8, "a \\u escape is an unpaired surrogate")
                }
                index += 2
                let low = try readHex4()
                guard (0xDC00...0xDFFF).contains(low) else { throw Rejection(.invalidUTF8, "a \\u escape is an unpaired surrogate") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw Rejection(.invalidUTF8, "a \\u escape is an unpaired surrogate")
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw Rejection(.invalidUTF8, "a \\u escape is not a Unicode scalar") }
            UTF8.encode(unicode) { decoded.append($0) }
        }
    }
}
