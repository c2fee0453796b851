/// A query parameter. Values travel separately from the SQL text
/// (`PQexecParams`), so no value is ever spliced into a statement.
public enum PostgresValue: Sendable, Hashable {
    case null
    case text(String)
    case int(Int64)
    case bool(Bool)
    /// Sent in binary format: no hex round trip for ciphertexts.
    case bytes([UInt8])
    /// A `text[]` literal, for `unnest($1::text[])` batches.
    case textArray([String?])
    /// A `bytea[]` literal, for `unnest($1::bytea[])` batches.
    case byteArrays([[UInt8]?])

    public static func int(_ value: Int) -> PostgresValue { .int(Int64(value)) }

    public static func optionalText(_ value: String?) -> PostgresValue { value.map(PostgresValue.text) ?? .null }

    var isBinary: Bool {
        if case .bytes = self { return true }
        return false
    }

    /// The wire form: text for everything except `.bytes`.
    var wireBytes: [UInt8]? {
        switch self {
        case .null: return nil
        case .text(let value): return Array(value.utf8)
        case .int(let value): return Array(String(value).utf8)
        case .bool(let value): return Array((value ? "t" : "f").utf8)
        case .bytes(let value): return value
        case .textArray(let values): return Self.arrayLiteral(values)
        case .byteArrays(let values): return Self.arrayLiteral(values.map { $0.map { "\\x" + hexEncode($0) } })
        }
    }

    /// `{"a","b\"c",NULL}`: every element quoted, quotes and backslashes escaped.
    static func arrayLiteral(_ values: [String?]) -> [UInt8] {
        var literal: [UInt8] = [UInt8(ascii: "{")]
        literal.reserveCapacity(values.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (index, value) in values.enumerated() {
            if index > 0 { literal.append(UInt8(ascii: ",")) }
            guard var value else {
                literal.append(contentsOf: "NULL".utf8)
                continue
            }
            literal.append(UInt8(ascii: "\""))
            value.withUTF8 { utf8 in
                for byte in utf8 {
                    if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { literal.append(UInt8(ascii: "\\")) }
                    literal.append(byte)
                }
            }
            literal.append(UInt8(ascii: "\""))
        }
        literal.append(UInt8(ascii: "}"))
        return literal
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

func hexEncode(_ bytes: [UInt8]) -> String {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// One result row, values in PostgreSQL's text format.
public struct PostgresRow: Sendable {
    public let values: [String?]
    let columns: [String: Int]

    public subscript(_ column: String) -> String? {
        guard let index = columns[column] else { preconditionFailure("no column \(column) in result") }
        return values[index]
    }

    public func string(_ column: String) throws -> String {
        guard let value = self[column] else { throw PostgresError(.unexpectedResult, "column \(column) is NULL") }
        return value
    }

    public func int(_ column: String) throws -> Int {
        guard let value = Int(try string(column)) else { throw PostgresError(.unexpectedResult, "column \(column) is not an integer") }
        return value
    }

    public func optionalInt(_ column: String) throws -> Int? {
        guard self[column] != nil else { return nil }
        return try int(column)
    }

    public func bool(_ column: String) throws -> Bool { try string(column) == "t" }

    /// A `bytea` column (text format `\x…`).
    public func bytes(_ column: String) throws -> [UInt8] {
        let text = try string(column)
        guard text.hasPrefix("\\x"), let bytes = hexDecode(text.utf8.dropFirst(2)) else {
            throw PostgresError(.unexpectedResult, "column \(column) is not bytea hex")
        }
        return bytes
    }

    public func optionalBytes(_ column: String) throws -> [UInt8]? {
        guard self[column] != nil else { return nil }
        return try bytes(column)
    }

    /// A `bytea[]` column of non-null elements (text format `{"\\x…",…}`); a NULL array is empty.
    public func byteArrayValues(_ column: String) throws -> [[UInt8]] {
        guard let text = self[column] else { return [] }
        let utf8 = Array(text.utf8)
        guard utf8.first == UInt8(ascii: "{"), utf8.last == UInt8(ascii: "}") else {
            throw PostgresError(.unexpectedResult, "column \(column) is not an array")
        }
        guard utf8.count > 2 else { return [] }
        // bytea elements are never quoted-with-commas: split, unquote, unescape the backslashes.
        return try utf8[1..<(utf8.count - 1)].split(separator: UInt8(ascii: ",")).map { element in
            var bytes = Array(element)
            if bytes.first == UInt8(ascii: "\""), bytes.last == UInt8(ascii: "\"") { bytes = Array(bytes.dropFirst().dropLast()) }
            var unescaped: [UInt8] = []
            var index = 0
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\\"), index + 1 < bytes.count { index += 1 }
                unescaped.append(bytes[index])
                index += 1
            }
            guard unescaped.starts(with: Array("\\x".utf8)), let decoded = hexDecode(unescaped.dropFirst(2)) else {
                throw PostgresError(.unexpectedResult, "column \(column) is not a bytea array")
            }
            return decoded
        }
    }
}

func hexDecode(_ utf8: some Collection<UInt8>) -> [UInt8]? {
    guard utf8.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(utf8.count / 2)
    var high: UInt8? = nil
    for character in utf8 {
        let nibble: UInt8
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = character - UInt8(ascii: "A") + 10
        default: return nil
        }
        if let value = high {
            out.append(value << 4 | nibble)
            high = nil
        } else {
            high = nibble
        }
    }
    return out
}

/// Builds COPY text-format data (`COPY … FROM STDIN`): tab-separated fields,
/// `\N` for NULL, backslash escapes for the characters COPY treats specially.
public struct CopyTextBuilder: Sendable {
    public private(set) var bytes: [UInt8] = []
    public private(set) var rowCount = 0
    private var fieldsInRow = 0

    public init(reservingCapacity capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func append(_ value: String?) {
        separate()
        guard var value else {
            bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "N")])
            return
        }
        value.withUTF8 { utf8 in
            // Nearly every value (tokens, ids, dates) has nothing to escape: copied whole.
            guard utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 < 0x20 }) else {
                bytes.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                switch byte {
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case UInt8(ascii: "\t"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                default: bytes.append(byte)
                }
            }
        }
    }

    public mutating func append(_ value: Int) {
        separate()
        bytes.append(contentsOf: String(value).utf8)
    }

    /// A `bytea` field in COPY text form (`\\x` + hex).
    public mutating func append(bytes value: [UInt8]) {
        separate()
        // Reserved at once and filled in place: no capacity check per digit.
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "\\"), count: 3 + 2 * value.count))
        bytes.withUnsafeMutableBufferPointer { buffer in
            buffer[start + 2] = UInt8(ascii: "x")
            var digit = start + 3
            for byte in value {
                buffer[digit] = hexDigits[Int(byte >> 4)]
                buffer[digit + 1] = hexDigits[Int(byte & 0xf)]
                digit += 2
            }
        }
    }

    public mutating func endRow() {
        bytes.append(UInt8(ascii: "\n"))
        rowCount += 1
        fieldsInRow = 0
    }

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        rowCount = 0
        fieldsInRow = 0
    }

    private mutating func separate() {
        if fieldsInRow > 0 { bytes.append(UInt8(ascii: "\t")) }
        fieldsInRow += 1
    }

    /// The fields of COPY text-format rows, each in its type's text form
    /// (nil for `\N`): what `bytes` holds, decoded again.
    public static func rows(of data: [UInt8]) -> [[String?]] {
        var rows: [[String?]] = []
        var fields: [String?] = []
        var field: [UInt8] = []
        var isNull = false
        var index = 0
        func endField() {
            fields.append(isNull ? nil : String(decoding: field, as: UTF8.self))
            field.removeAll(keepingCapacity: true)
            isNull = false
        }
        while index < data.count {
            let byte = data[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\\") where index < data.count:
                let escaped = data[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "N"): isNull = true
                case UInt8(ascii: "t"): field.append(UInt8(ascii: "\t"))
                case UInt8(ascii: "n"): field.append(UInt8(ascii: "\n"))
                case UInt8(ascii: "r"): field.append(UInt8(ascii: "\r"))
                default: field.append(escaped)
                }
            case UInt8(ascii: "\t"):
                endField()
            case UInt8(ascii: "\n"):
                endField()
                rows.append(fields)
                fields.removeAll(keepingCapacity: true)
            default:
                field.append(byte)
            }
        }
        return rows
    }
}
