import CLibCrypto

/// The JSON of key files, read and written without leaving a copy of a secret
/// in memory that is not wiped.
///
/// Foundation's JSON coders copy every string into ordinary heap memory that is
/// freed without being cleared, so a key file parsed with them leaves its keys
/// behind in the process. Here the file's bytes live in `SecureBytes`, strings
/// are ranges into them until a caller asks for a (non-secret) `String`, secret
/// fields are base64-decoded straight into `SecureBytes`, and output is built
/// in a buffer that wipes every allocation it lets go of.
enum KeyFileJSON {
    /// A parsed value. Strings and numbers are ranges of the source bytes.
    indirect enum Node {
        case object([(key: String, value: Node)])
        case array([Node])
        case string(Range<Int>, escaped: Bool)
        case number(Range<Int>)
        case bool(Bool)
        case null
    }

    struct SyntaxError: Error {
        let offset: Int
        let problem: String
    }

    /// Parses a whole document (one value, surrounded by whitespace only).
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SyntaxError) -> Node {
        var parser = Parser(bytes: bytes)
        let node = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw SyntaxError(offset: parser.index, problem: "unexpected text after the document") }
        return node
    }

    /// Decodes a string node's bytes (escapes resolved), validating UTF-8.
    static func string(_ range: Range<Int>, escaped: Bool, in bytes: UnsafeRawBufferPointer) -> String? {
        let raw = UnsafeRawBufferPointer(rebasing: bytes[range])
        guard escaped else { return String(validating: raw, as: UTF8.self) }
        var out: [UInt8] = []
        var index = 0
        while index < raw.count {
            let byte = raw[index]
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                index += 1
                continue
            }
            guard index + 1 < raw.count else { return nil }
            let escape = raw[index + 1]
            index += 2
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard var scalar = hex4(raw, at: index) else { return nil }
                index += 4
                if (0xd800..<0xdc00).contains(scalar) {
                    guard index + 6 <= raw.count, raw[index] == UInt8(ascii: "\\"), raw[index + 1] == UInt8(ascii: "u"),
                        let low = hex4(raw, at: index + 2), (0xdc00..<0xe000).contains(low)
                    else { return nil }
                    index += 6
                    scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                }
                guard let unicode = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: Array(String(Character(unicode)).utf8))
            default: return nil
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hex4(_ raw: UnsafeRawBufferPointer, at index: Int) -> UInt32? {
        guard index + 4 <= raw.count else { return nil }
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = raw[index + offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        static let maximumDepth = 16

        mutating func skipWhitespace() {
            while index < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[index]) { index += 1 }
        }

        mutating func value(depth: Int) throws(SyntaxError) -> Node {
            guard depth < Self.maximumDepth else { throw SyntaxError(offset: index, problem: "nested too deeply") }
            skipWhitespace()
            guard index < bytes.count else { throw SyntaxError(offset: index, problem: "unexpected end of file") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""):
                let (range, escaped) = try string()
                return .string(range, escaped: escaped)
            case UInt8(ascii: "t"):
                try literal("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
            default: throw SyntaxError(offset: index, problem: "unexpected character")
            }
        }

        mutating func object(depth: Int) throws(SyntaxError) -> Node {
            index += 1
            var members: [(key: String, value: Node)] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                    throw SyntaxError(offset: index, problem: "expected a field name")
                }
                let (range, escaped) = try string()
                guard let key = KeyFileJSON.string(range, escaped: escaped, in: bytes) else {
                    throw SyntaxError(offset: range.lowerBound, problem: "a field name is not valid UTF-8")
                }
                guard !members.contains(where: { $0.key == key }) else {
                    throw SyntaxError(offset: range.lowerBound, problem: "field \(key) appears twice")
                }
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                    throw SyntaxError(offset: index, problem: "expected ':'")
                }
                index += 1
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard index < bytes.count else { throw SyntaxError(offset: index, problem: "unexpected end of file") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "}") else { throw SyntaxError(offset: index, problem: "expected ',' or '}'") }
                index += 1
                return .object(members)
            }
        }

        mutating func array(depth: Int) throws(SyntaxError) -> Node {
            index += 1
            var elements: [Node] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            while true {
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard index < bytes.count else { throw SyntaxError(offset: index, problem: "unexpected end of file") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "]") else { throw SyntaxError(offset: index, problem: "expected ',' or ']'") }
                index += 1
                return .array(elements)
            }
        }

        /// The range between the quotes; escapes are only checked here.
        mutating func string() throws(SyntaxError) -> (Range<Int>, Bool) {
            index += 1
            let start = index
            var escaped = false
            while index < bytes.count {
                switch bytes[index] {
                case UInt8(ascii: "\""):
                    index += 1
                    return (start..<(index - 1), escaped)
                case UInt8(ascii: "\\"):
                    escaped = true
                    index += 2
                case 0..<0x20:
                    throw SyntaxError(offset: index, problem: "a control character inside a string")
                default:
                    index += 1
                }
            }
            throw SyntaxError(offset: start, problem: "unterminated string")
        }

        mutating func number() throws(SyntaxError) -> Range<Int> {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            let digitsStart = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            guard index > digitsStart else { throw SyntaxError(offset: start, problem: "a number without digits") }
            // Key files hold integers only; a fraction or exponent is a syntax error here.
            if index < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[index]) {
                throw SyntaxError(offset: index, problem: "only integers are allowed")
            }
            return start..<index
        }

        mutating func literal(_ word: StaticString) throws(SyntaxError) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count,
                UnsafeRawBufferPointer(rebasing: bytes[index..<(index + count)]).elementsEqual(
                    UnsafeRawBufferPointer(start: word.utf8Start, count: count))
            else {
                throw SyntaxError(offset: index, problem: "unexpected character")
            }
            index += count
        }
    }
}

/// Typed access to one JSON object of a key file, with errors that name the
/// file and the field (never a value).
struct KeyFileObject {
    let fields: [(key: String, value: KeyFileJSON.Node)]
    let bytes: UnsafeRawBufferPointer
    let path: String
    /// Where this object sits in the document, e.g. `keys[1]`.
    let location: String

    private func malformed(_ field: String, _ problem: String) -> KeyFileError {
        KeyFileError(.malformed, "\(path) is damaged: field \(location.isEmpty ? "" : location + ".")\(field) \(problem)")
    }

    func node(_ key: String) throws -> KeyFileJSON.Node {
        guard let node = optionalNode(key) else { throw malformed(key, "is missing") }
        return node
    }

    func optionalNode(_ key: String) -> KeyFileJSON.Node? {
        guard let node = fields.first(where: { $0.key == key })?.value else { return nil }
        if case .null = node { return nil }
        return node
    }

    func string(_ key: String) throws -> String {
        guard case .string(let range, let escaped) = try node(key),
            let value = KeyFileJSON.string(range, escaped: escaped, in: bytes)
        else { throw malformed(key, "is not a string") }
        return value
    }

    func optionalString(_ key: String) throws -> String? {
        optionalNode(key) == nil ? nil : try string(key)
    }

    func integer<T: FixedWidthInteger>(_ key: String, as type: T.Type = Int.self) throws -> T {
        guard case .number(let range) = try node(key),
            let text = String(validating: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self),
            let value = T(text)
        else { throw malformed(key, "is not an integer in range") }
        return value
    }

    /// Standard base64 of exactly `byteCount` bytes, decoded straight into wiped memory.
    func secret(_ key: String, byteCount: Int) throws -> SecureBytes {
        guard case .string(let range, escaped: false) = try node(key),
            let secret = Base64.decodeSecret(UnsafeRawBufferPointer(rebasing: bytes[range])), secret.count == byteCount
        else {
            throw malformed(key, "is not \(byteCount) bytes of base64")
        }
        return secret
    }

    /// Base64 of a public value (a public key, a salt, a nonce).
    func bytes(_ key: String, byteCount: Int? = nil) throws -> [UInt8] {
        guard let decoded = Base64.decode(try string(key)), byteCount.map({ decoded.count == $0 }) ?? true else {
            throw malformed(key, byteCount.map { "is not \($0) bytes of base64" } ?? "is not base64")
        }
        return decoded
    }

    /// Lowercase or uppercase hex of exactly `byteCount` bytes.
    func hex(_ key: String, byteCount: Int) throws -> [UInt8] {
        guard let decoded = Hex.decode(try string(key)), decoded.count == byteCount else {
            throw malformed(key, "is not \(byteCount) bytes of hex")
        }
        return decoded
    }

    func object(_ key: String) throws -> KeyFileObject {
        guard case .object(let members) = try node(key) else { throw malformed(key, "is not an object") }
        return KeyFileObject(fields: members, bytes: bytes, path: path, location: location.isEmpty ? key : "\(location).\(key)")
    }

    func objects(_ key: String) throws -> [KeyFileObject] {
        guard case .array(let elements) = try node(key) else { throw malformed(key, "is not a list") }
        return try elements.enumerated().map { index, element in
            guard case .object(let members) = element else { throw malformed("\(key)[\(index)]", "is not an object") }
            return KeyFileObject(
                fields: members, bytes: bytes, path: path,
                location: location.isEmpty ? "\(key)[\(index)]" : "\(location).\(key)[\(index)]")
        }
    }
}

/// A value to write into a key file. Secrets are written as base64 straight
/// from `SecureBytes` into wiped memory.
indirect enum KeyFileValue {
    case object([(String, KeyFileValue)])
    case array([KeyFileValue])
    case string(String)
    case integer(Int64)
    case bytes([UInt8])
    case secret(SecureBytes)

    /// Pretty-printed with two-space indentation, keys in the given order,
    /// and a final newline.
    func encoded() -> SecureBytes {
        let buffer = SecureBuffer()
        write(to: buffer, indent: 0)
        buffer.append(0x0a)
        return buffer.take()
    }

    private func write(to buffer: SecureBuffer, indent: Int) {
        switch self {
        case .object(let members):
            guard !members.isEmpty else { return buffer.append("{}") }
            buffer.append("{\n")
            for (index, (key, value)) in members.enumerated() {
                buffer.append(String(repeating: " ", count: indent + 2))
                KeyFileValue.string(key).write(to: buffer, indent: 0)
                buffer.append(": ")
                value.write(to: buffer, indent: indent + 2)
                buffer.append(index == members.count - 1 ? "\n" : ",\n")
            }
            buffer.append(String(repeating: " ", count: indent) + "}")
        case .array(let elements):
            guard !elements.isEmpty else { return buffer.append("[]") }
            buffer.append("[\n")
            for (index, element) in elements.enumerated() {
                buffer.append(String(repeating: " ", count: indent + 2))
                element.write(to: buffer, indent: indent + 2)
                buffer.append(index == elements.count - 1 ? "\n" : ",\n")
            }
            buffer.append(String(repeating: " ", count: indent) + "]")
        case .string(let text):
            buffer.append(0x22)
            for byte in text.utf8 {
                switch byte {
                case 0x22: buffer.append("\\\"")
                case 0x5c: buffer.append("\\\\")
                case 0x0a: buffer.append("\\n")
                case 0..<0x20: buffer.append("\\u00" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16))
                default: buffer.append(byte)
                }
            }
            buffer.append(0x22)
        case .integer(let value):
            buffer.append(String(value))
        case .bytes(let bytes):
            KeyFileValue.string(Base64.encode(bytes)).write(to: buffer, indent: indent)
        case .secret(let secret):
            buffer.append(0x22)
            secret.withUnsafeBytes { Base64.appendEncoded($0, to: buffer) }
            buffer.append(0x22)
        }
    }
}

/// A growable byte buffer that wipes every allocation it releases: what the
/// key-file writer builds output in.
final class SecureBuffer {
    private var storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 16)
    private(set) var count = 0

    deinit {
        OPENSSL_cleanse(storage.baseAddress, storage.count)
        storage.deallocate()
    }

    func append(_ byte: UInt8) {
        reserve(1)
        storage[count] = byte
        count += 1
    }

    func append(_ text: String) {
        for byte in text.utf8 { append(byte) }
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        reserve(bytes.count)
        UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + bytes.count)]).copyMemory(from: bytes)
        count += bytes.count
    }

    private func reserve(_ extra: Int) {
        guard count + extra > storage.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(storage.count * 2, count + extra), alignment: 16)
        grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[0..<count]))
        OPENSSL_cleanse(storage.baseAddress, storage.count)
        storage.deallocate()
        storage = grown
    }

    /// The bytes written so far, as `SecureBytes`; the buffer is left empty.
    func take() -> SecureBytes {
        let bytes = SecureBytes(count: count) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[0..<count])) }
        OPENSSL_cleanse(storage.baseAddress, count)
        count = 0
        return bytes
    }
}
