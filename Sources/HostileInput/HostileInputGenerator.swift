/// A seeded, structure-aware generator of hostile message bodies for fuzzing
/// the validator and the whole pipeline: valid login events, valid events with
/// one targeted mutation (the contract's edges and the classic attacks), and
/// random bytes. The same seed gives the same sequence, so any failure can be
/// replayed.
public struct HostileInputGenerator {
    public struct Input {
        public var body: [UInt8]
        /// What was generated ("valid", "mutation:wrong_type", "random_bytes", …).
        public var kind: String
        /// The ip and device_id values the body carries, when it has any: the
        /// PII that must never appear in an error, a log or the database.
        public var personalValues: [String]
    }

    /// Where the bodies go, and so what they may contain.
    public enum Channel {
        /// Anything: straight into the validator.
        case memory
        /// One body per line of a file: no line feed, not ending in a carriage
        /// return, never blank (the file source skips blank lines).
        case jsonLines
        /// As `jsonLines`, and only characters SQS accepts, under its 256 KiB limit.
        case sqs
    }

    private var random: SeededGenerator
    private let channel: Channel

    public init(seed: UInt64, channel: Channel = .memory) {
        random = SeededGenerator(seed: seed)
        self.channel = channel
    }

    public mutating func next() -> Input {
        var input: Input
        switch Int.random(in: 0..<100, using: &random) {
        case 0..<20: input = valid()
        case 20..<85: input = mutated()
        case 85..<95: input = randomBytes()
        default: input = jsonJunk()
        }
        fit(&input)
        return input
    }

    // MARK: - Valid events

    private struct Fields {
        var members: [(name: String, json: String)]
        var ip: String
        var deviceID: String
    }

    private mutating func validFields() -> Fields {
        let ip = pick([ipv4(), ipv4(), ipv6(), "::ffff:\(ipv4())"])
        let device = pick(["\(digits(3))-\(digits(2))-\(digits(4))", hex(16), "dev-\(digits(8))"])
        let version = pick(["\(small()).\(small()).\(small())", "\(small()).\(digits(2))", "\(small()).\(small())"])
        let locale = pick(["null", "\"RU\"", "\"en-US\"", "\"pt_BR\"", "\"\\u00e9t\\u00e9\""])
        return Fields(
            members: [
                ("user_id", quoted(uuid())), ("app_version", quoted(version)), ("device_type", quoted(pick(["android", "ios", "web"]))),
                ("ip", quoted(ip)), ("locale", locale), ("device_id", quoted(device)),
            ], ip: ip, deviceID: device)
    }

    private mutating func render(_ fields: Fields, spacing: String = " ") -> [UInt8] {
        Array(("{" + fields.members.map { "\"\($0.name)\":\(spacing)\($0.json)" }.joined(separator: ",\(spacing)") + "}").utf8)
    }

    private mutating func valid() -> Input {
        var fields = validFields()
        fields.members.shuffle(using: &random)
        let spacing = pick(["", " ", "\n  ", "\t"])
        return Input(body: render(fields, spacing: spacing), kind: "valid", personalValues: [fields.ip, fields.deviceID])
    }

    // MARK: - Targeted mutations of valid events

    private mutating func mutated() -> Input {
        var fields = validFields()
        let target = Int.random(in: 0..<fields.members.count, using: &random)
        let name = fields.members[target].name
        let mutation: String
        switch Int.random(in: 0..<24, using: &random) {
        case 0:
            mutation = "missing_field"
            fields.members.remove(at: target)
        case 1:
            mutation = "duplicate_field"
            fields.members.append((name, fields.members[target].json))
        case 2:
            mutation = "wrong_type"
            fields.members[target].json = pick(["42", "-0.5e7", "true", "false", "[]", "{}", "[\"x\"]", "{\"a\":1}"])
        case 3:
            mutation = "null"
            fields.members[target].json = "null"
        case 4:
            mutation = "huge_number"
            fields.members[target].json = pick([
                "1e999999", "123456789012345678901234567890123456789", "-" + String(repeating: "9", count: 5000),
            ])
        case 5:
            mutation = "empty_value"
            fields.members[target].json = "\"\""
        case 6:
            mutation = "too_long"
            fields.members[target].json = quoted(
                String(repeating: pick(["a", "é", "😀"]), count: Int.random(in: 33...5000, using: &random)))
        case 7:
            mutation = "control_character"
            fields.members[target].json = quoted(pick(["a\\u0000b", "tab\\there", "\\u001f", "bell\\u0007", "line\\nbreak"]))
        case 8:
            mutation = "raw_control_byte"
            fields.members[target].json = "\"a\u{01}b\""
        case 9:
            mutation = "ip_lookalike_digits"
            fields.members[3].json = quoted(pick(["１９２.１６８.０.１", "١٩٢.١٦٨.٠.١", "192.168.0.¹", "192.168.0.1\u{200B}", "192.168.o.1"]))
        case 10:
            mutation = "ip_edge"
            fields.members[3].json = quoted(
                pick([
                    "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "::1%eth0", "1:2:3:4:5:6:7:8:9",
                    "fe80::1::2", " 1.2.3.4", "1.2.3.4 ", "0x7f.0.0.1", "", "::", "1.2.3.-4",
                ]))
        case 11:
            mutation = "app_version_edge"
            fields.members[1].json = quoted(pick(["1000.0.0", "1.2.3.4", "v1.2", "1..2", ".1", "1.", "-1.0", "1.2.3-beta", "٣.١"]))
        case 12:
            mutation = "sql_metacharacters"
            fields.members[target].json = quoted(
                pick(["'; DROP TABLE user_logins; --", "\\\" OR 1=1 --", "a'b\\\"c\\\\d", "\\\\.\\n", "E'\\\\x00'"]))
        case 13:
            mutation = "shell_metacharacters"
            fields.members[target].json = quoted(pick(["$(rm -rf /)", "`id`", "a;b|c&d>e<f", "${IFS}", "*?[]~"]))
        case 14:
            mutation = "escaped_key"
            fields.members[target].name = pick(["\\u0069p", "user\\u005fid", "ip\\u0000", "IP", "ip "])
        case 15:
            mutation = "lone_surrogate"
            fields.members[target].json = quoted(pick(["\\ud800", "a\\udc00b", "\\ud83d\\u0041", "\\uZZZZ", "\\u12"]))
        case 16:
            mutation = "deep_nesting"
            let depth = Int.random(in: 1_000...200_000, using: &random)
            fields.members.append(("extra", String(repeating: "[", count: depth) + String(repeating: "]", count: depth)))
        case 17:
            mutation = "unknown_fields"
            for index in 0..<Int.random(in: 1...200, using: &random) { fields.members.append(("x\(index)", "\"\(index)\"")) }
        case 18:
            mutation = "large_body"
            fields.members.append(("padding", quoted(String(repeating: "p", count: pick([60_000, 70_000, 1 << 20])))))
        case 19:
            mutation = "trailing_garbage"
            var body = render(fields)
            body += Array(pick(["}", " x", ",{}", "\u{00}", "{\"a\":1}"]).utf8)
            return Input(body: body, kind: "mutation:\(mutation)", personalValues: [fields.ip, fields.deviceID])
        case 20:
            mutation = "truncated"
            let body = render(fields)
            return Input(
                body: Array(body.prefix(Int.random(in: 0..<body.count, using: &random))), kind: "mutation:\(mutation)",
                personalValues: [fields.ip, fields.deviceID])
        case 21:
            mutation = "invalid_utf8"
            var body = render(fields)
            let sequences: [[UInt8]] = [
                [0xC3, 0x28], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF5, 0x80, 0x80, 0x80], [0xFF], [0xE2, 0x82],
            ]
            let at = Int.random(in: 0..<body.count, using: &random)
            body.insert(contentsOf: pick(sequences), at: at)
            return Input(body: body, kind: "mutation:\(mutation)", personalValues: [fields.ip, fields.deviceID])
        case 22:
            mutation = "byte_order_mark"
            return Input(
                body: [0xEF, 0xBB, 0xBF] + render(fields), kind: "mutation:\(mutation)", personalValues: [fields.ip, fields.deviceID])
        default:
            mutation = "not_an_object"
            let object = String(decoding: render(fields), as: UTF8.self)
            return Input(
                body: Array(pick(["[\(object)]", "\"\(uuid())\"", "null", "42", ""]).utf8), kind: "mutation:\(mutation)",
                personalValues: [fields.ip, fields.deviceID])
        }
        return Input(body: render(fields), kind: "mutation:\(mutation)", personalValues: [fields.ip, fields.deviceID])
    }

    // MARK: - Noise

    private mutating func randomBytes() -> Input {
        let count = Int.random(in: 0...512, using: &random)
        return Input(body: (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }, kind: "random_bytes", personalValues: [])
    }

    private mutating func jsonJunk() -> Input {
        let tokens = ["{", "}", "[", "]", ":", ",", "\"", "\"ip\"", "\"user_id\"", "null", "true", "1e5", "-", "\\", "\\u", " ", "\"a\""]
        let count = Int.random(in: 1...64, using: &random)
        return Input(body: Array((0..<count).map { _ in pick(tokens) }.joined().utf8), kind: "json_junk", personalValues: [])
    }

    // MARK: - Fitting the channel

    private mutating func fit(_ input: inout Input) {
        guard channel != .memory else { return }
        for index in input.body.indices where input.body[index] == 0x0A { input.body[index] = 0x20 }
        if channel == .sqs {
            // SQS accepts #x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF, as valid UTF-8.
            let text = String(decoding: input.body, as: UTF8.self)
            let allowed = text.unicodeScalars.filter { scalar in
                scalar.value == 0x9 || scalar.value == 0xD || (scalar.value >= 0x20 && scalar.value != 0xFFFE && scalar.value != 0xFFFF)
            }
            input.body = Array(String(String.UnicodeScalarView(allowed)).utf8.prefix(200_000))
            // Cutting may split a character: drop the incomplete tail.
            while !input.body.isEmpty, String(validating: input.body, as: UTF8.self) == nil { input.body.removeLast() }
        }
        if input.body.last == 0x0D { input.body.append(0x78) }
        if input.body.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { input.body.append(0x78) }
    }

    // MARK: - Pieces

    private mutating func pick<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &random)] }
    private mutating func small() -> Int { Int.random(in: 0...12, using: &random) }
    private mutating func digits(_ count: Int) -> String {
        String((0..<count).map { _ in Character(String(Int.random(in: 0...9, using: &random))) })
    }
    private mutating func hex(_ count: Int) -> String { String((0..<count).map { _ in "0123456789abcdef".randomElement(using: &random)! }) }
    private mutating func ipv4() -> String { (0..<4).map { _ in String(Int.random(in: 0...255, using: &random)) }.joined(separator: ".") }
    private mutating func ipv6() -> String {
        let groups = (0..<8).map { _ in String(Int.random(in: 0...0xffff, using: &random), radix: 16) }
        return pick([
            groups.joined(separator: ":"), groups.prefix(3).joined(separator: ":") + "::" + groups.suffix(2).joined(separator: ":"),
        ])
    }
    private mutating func uuid() -> String { "\(hex(8))-\(hex(4))-4\(hex(3))-a\(hex(3))-\(hex(12))" }
    private func quoted(_ text: String) -> String { "\"\(text)\"" }
}

/// xorshift64: small, fast, and the same sequence for the same seed everywhere.
public struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    public mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
