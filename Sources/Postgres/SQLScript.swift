/// A script of SQL statements split into its statements, at the semicolons
/// outside quotes, dollar quotes and comments. Citus forwards some DDL to the
/// workers as the text of the whole query it arrived in, and a worker refuses
/// several statements there, so a script for a distributed database is sent a
/// statement at a time.
public enum SQLScript {
    public static func statements(_ script: String) -> [String] {
        let text = Array(script.utf8)
        var statements: [String] = []
        var start = 0
        var index = 0
        func skip(past terminator: [UInt8], from position: Int) -> Int {
            var position = position
            while position < text.count {
                if text[position...].starts(with: terminator) { return position + terminator.count }
                position += 1
            }
            return position
        }
        while index < text.count {
            switch text[index] {
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                // A doubled quote inside is two strings back to back: the same split.
                index = skip(past: [text[index]], from: index + 1)
            case UInt8(ascii: "-") where index + 1 < text.count && text[index + 1] == UInt8(ascii: "-"):
                index = skip(past: [UInt8(ascii: "\n")], from: index + 2)
            case UInt8(ascii: "/") where index + 1 < text.count && text[index + 1] == UInt8(ascii: "*"):
                index = skip(past: Array("*/".utf8), from: index + 2)
            case UInt8(ascii: "$"):
                if let tag = dollarTag(in: text, at: index) {
                    index = skip(past: tag, from: index + tag.count)
                } else {
                    index += 1
                }
            case UInt8(ascii: ";"):
                statements.append(String(decoding: text[start..<index], as: UTF8.self))
                index += 1
                start = index
            default:
                index += 1
            }
        }
        statements.append(String(decoding: text[start...], as: UTF8.self))
        return statements.filter { !isBlank($0) }
    }

    /// `$tag$` (or `$$`) opening at `index`; nil for `$1` and the like.
    private static func dollarTag(in text: [UInt8], at index: Int) -> [UInt8]? {
        var end = index + 1
        while end < text.count,
            text[end] == UInt8(ascii: "_") || (text[end] >= 0x41 && text[end] <= 0x5A)
                || (text[end] >= 0x61 && text[end] <= 0x7A) || (end > index + 1 && text[end] >= 0x30 && text[end] <= 0x39)
        {
            end += 1
        }
        guard end < text.count, text[end] == UInt8(ascii: "$") else { return nil }
        return Array(text[index...end])
    }

    /// Only whitespace and comments.
    private static func isBlank(_ statement: String) -> Bool {
        var rest = Substring(statement)
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.hasPrefix("--") {
                rest = rest.drop { $0 != "\n" }
            } else if rest.hasPrefix("/*"), let end = rest.firstRange(of: "*/") {
                rest = rest[end.upperBound...]
            } else {
                return rest.isEmpty
            }
        }
    }
}
