/// Just enough XML to read AWS query-protocol responses: elements, text,
/// entities, CDATA, comments, processing instructions; namespace prefixes and
/// attributes are ignored. No DTDs, so no entity expansion attacks.
struct XMLNode: Sendable {
    let name: String
    var children: [XMLNode] = []
    var text = ""

    func child(_ name: String) -> XMLNode? { children.first { $0.name == name } }
    func children(_ name: String) -> [XMLNode] { children.filter { $0.name == name } }

    /// The first descendant named `name`, depth first.
    func find(_ name: String) -> XMLNode? {
        for child in children {
            if child.name == name { return child }
            if let found = child.find(name) { return found }
        }
        return nil
    }
}

struct XMLError: Error, CustomStringConvertible {
    let description: String
}

enum MiniXML {
    static func parse(_ bytes: [UInt8]) throws -> XMLNode {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func document() throws -> XMLNode {
            var root: XMLNode? = nil
            while index < bytes.count {
                skipWhitespace()
                guard index < bytes.count else { break }
                guard bytes[index] == UInt8(ascii: "<") else { throw XMLError(description: "text outside the root element") }
                if try skipMarkup() { continue }
                guard root == nil else { throw XMLError(description: "more than one root element") }
                root = try element(depth: 0)
            }
            guard let root else { throw XMLError(description: "no root element") }
            return root
        }

        /// Skips `<?…?>`, `<!--…-->` and `<!DOCTYPE…>`; false if at an element.
        mutating func skipMarkup() throws -> Bool {
            if starts(with: "<?") {
                try skip(past: "?>")
                return true
            }
            if starts(with: "<!--") {
                try skip(past: "-->")
                return true
            }
            if starts(with: "<!DOCTYPE") { throw XMLError(description: "DTDs are not accepted") }
            return false
        }

        mutating func element(depth: Int) throws -> XMLNode {
            guard depth < 64 else { throw XMLError(description: "nesting too deep") }
            index += 1  // '<'
            let name = readName()
            guard !name.isEmpty else { throw XMLError(description: "element without a name") }
            // Attributes are not needed; skip to the end of the tag, honouring quotes.
            var selfClosing = false
            while true {
                guard index < bytes.count else { throw XMLError(description: "unterminated tag") }
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                    index += 1
                    while index < bytes.count, bytes[index] != byte { index += 1 }
                    index += 1
                } else if byte == UInt8(ascii: "/"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: ">") {
                    selfClosing = true
                    index += 2
                    break
                } else if byte == UInt8(ascii: ">") {
                    index += 1
                    break
                } else {
                    index += 1
                }
            }
            var node = XMLNode(name: localName(name))
            if selfClosing { return node }
            var text: [UInt8] = []
            while true {
                guard index < bytes.count else { throw XMLError(description: "unterminated element \(name)") }
                if bytes[index] == UInt8(ascii: "<") {
                    if starts(with: "</") {
                        index += 2
                        let closing = readName()
                        guard closing == name else { throw XMLError(description: "</\(closing)> closes <\(name)>") }
                        skipWhitespace()
                        guard index < bytes.count, bytes[index] == UInt8(ascii: ">") else { throw XMLError(description: "bad closing tag") }
                        index += 1
                        node.text = String(decoding: text, as: UTF8.self)
                        return node
                    }
                    if starts(with: "<![CDATA[") {
                        index += 9
                        let start = index
                        try skip(past: "]]>")
                        text.append(contentsOf: bytes[start..<(index - 3)])
                        continue
                    }
                    if try skipMarkup() { continue }
                    node.children.append(try element(depth: depth + 1))
                } else if bytes[index] == UInt8(ascii: "&") {
                    try appendEntity(to: &text)
                } else {
                    text.append(bytes[index])
                    index += 1
                }
            }
        }

        mutating func appendEntity(to text: inout [UInt8]) throws {
            let start = index + 1
            guard let end = bytes[start...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else {
                throw XMLError(description: "unterminated entity")
            }
            let name = String(decoding: bytes[start..<end], as: UTF8.self)
            index = end + 1
            switch name {
            case "lt": text.append(UInt8(ascii: "<"))
            case "gt": text.append(UInt8(ascii: ">"))
            case "amp": text.append(UInt8(ascii: "&"))
            case "quot": text.append(UInt8(ascii: "\""))
            case "apos": text.append(UInt8(ascii: "'"))
            default:
                let value: UInt32?
                if name.hasPrefix("#x") || name.hasPrefix("#X") {
                    value = UInt32(name.dropFirst(2), radix: 16)
                } else if name.hasPrefix("#") {
                    value = UInt32(name.dropFirst(), radix: 10)
                } else {
                    value = nil
                }
                guard let value, let scalar = Unicode.Scalar(value) else { throw XMLError(description: "unknown entity &\(name);") }
                UTF8.encode(scalar) { text.append($0) }
            }
        }

        mutating func readName() -> String {
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: ">") || byte == UInt8(ascii: "/") || byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d {
                    break
                }
                index += 1
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        func localName(_ name: String) -> String {
            guard let colon = name.lastIndex(of: ":") else { return name }
            return String(name[name.index(after: colon)...])
        }

        func starts(with prefix: String) -> Bool {
            let utf8 = Array(prefix.utf8)
            return index + utf8.count <= bytes.count && Array(bytes[index..<(index + utf8.count)]) == utf8
        }

        mutating func skip(past terminator: String) throws {
            let utf8 = Array(terminator.utf8)
            while index + utf8.count <= bytes.count {
                if Array(bytes[index..<(index + utf8.count)]) == utf8 {
                    index += utf8.count
                    return
                }
                index += 1
            }
            throw XMLError(description: "missing \(terminator)")
        }

        mutating func skipWhitespace() {
            while index < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[index]) { index += 1 }
        }
    }
}
