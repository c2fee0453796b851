import Glibc

/// The one spelling of an IP address that is tokenized and stored, so that two
/// spellings of one address get one token.
///
/// IPv4: dotted decimal, no leading zeros. IPv6: RFC 5952 (lowercase hex, no
/// leading zeros, the longest run of two or more zero groups as `::`, the first
/// such run on a tie). IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4
/// address it maps. Zone indexes (`fe80::1%eth0`) are not addresses and are refused.
public enum CanonicalIP {
    public static func canonicalize(_ text: String) -> String? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 45, utf8.allSatisfy({ $0 < 0x80 }) else { return nil }
        if utf8.contains(UInt8(ascii: ":")) {
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            let bytes = withUnsafeBytes(of: &address) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
                return ipv4(bytes[12], bytes[13], bytes[14], bytes[15])
            }
            return ipv6(bytes)
        }
        // glibc's inet_pton takes exactly four decimal parts without leading zeros.
        var address = in_addr()
        guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &address) { Array($0) }
        return ipv4(bytes[0], bytes[1], bytes[2], bytes[3])
    }

    static func ipv4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> String { "\(a).\(b).\(c).\(d)" }

    static func ipv6(_ bytes: [UInt8]) -> String {
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        // The longest run of at least two zero groups; the first one on a tie.
        var bestStart = -1
        var bestLength = 0
        var runStart = -1
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                let length = index - runStart
                if length > bestLength && length >= 2 { (bestStart, bestLength) = (runStart, length) }
                runStart = -1
            }
        }
        var text = ""
        var index = 0
        while index < 8 {
            if index == bestStart {
                text += "::"
                index += bestLength
                continue
            }
            if !text.isEmpty && !text.hasSuffix(":") { text += ":" }
            text += String(groups[index], radix: 16)
            index += 1
        }
        return text
    }
}

/// `app_version` as an order-preserving, collision-free integer:
/// `major·1 000 000 + minor·1 000 + patch`, each component 0…999.
/// `2.0`, `2.00` and `2.0.0` are one version (code 2 000 000, readable "2.0.0");
/// `0.26`, `0.2.6` and `2.6` are three.
public struct AppVersion: Sendable, Hashable {
    public let major: Int
    public let minor: Int
    public let patch: Int

    public var code: Int32 { Int32(major * 1_000_000 + minor * 1_000 + patch) }
    public var canonical: String { "\(major).\(minor).\(patch)" }

    /// One to three dot-separated components of one to three ASCII digits.
    public init?(_ text: String) {
        var components: [Int] = []
        var current = 0
        var digits = 0
        for byte in text.utf8 {
            if byte == UInt8(ascii: ".") {
                guard digits > 0 else { return nil }
                components.append(current)
                (current, digits) = (0, 0)
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                guard digits < 3 else { return nil }
                current = current * 10 + Int(byte - UInt8(ascii: "0"))
                digits += 1
            } else {
                return nil
            }
        }
        guard digits > 0 else { return nil }
        components.append(current)
        guard components.count <= 3 else { return nil }
        major = components[0]
        minor = components.count > 1 ? components[1] : 0
        patch = components.count > 2 ? components[2] : 0
    }
}

/// The UTC calendar date (`YYYY-MM-DD`) of a Unix time in milliseconds, without
/// a formatter: Howard Hinnant's days-to-civil algorithm.
public enum UTCDate {
    public static func string(fromMilliseconds milliseconds: Int64) -> String {
        let dayLength: Int64 = 86_400_000
        let days = milliseconds >= 0 ? milliseconds / dayLength : (milliseconds - dayLength + 1) / dayLength
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    /// Microseconds since the epoch of an RFC 3339 time (`2026-11-29T12:00:00Z`,
    /// fractional seconds of any length, cut to microseconds, `Z` or `±HH:MM`),
    /// or of a bare date (midnight UTC); nil for anything else.
    public static func microseconds(fromRFC3339 text: String) -> Int64? {
        let utf8 = Array(text.utf8)
        var index = 0
        func number(_ digits: Int) -> Int64? {
            guard index + digits <= utf8.count else { return nil }
            var value: Int64 = 0
            for _ in 0..<digits {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(utf8[index]) else { return nil }
                value = value * 10 + Int64(utf8[index] - UInt8(ascii: "0"))
                index += 1
            }
            return value
        }
        func expect(_ character: Character) -> Bool {
            guard index < utf8.count, utf8[index] == character.asciiValue! else { return false }
            index += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2), (1...12).contains(month),
            (1...31).contains(day)
        else { return nil }
        // Days from the civil date (proleptic Gregorian), Howard Hinnant's days_from_civil.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let days = era * 146_097 + yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear - 719_468
        guard index < utf8.count else { return days * 86_400_000_000 }
        guard expect("T"), let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2), hour < 24,
            minute < 60, second < 61
        else { return nil }
        var fraction: Int64 = 0
        if expect(".") {
            var digits = 0
            while index < utf8.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(utf8[index]) {
                if digits < 6 { fraction = fraction * 10 + Int64(utf8[index] - UInt8(ascii: "0")) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 6) { fraction *= 10 }
        }
        var offset: Int64 = 0
        if expect("Z") || expect("z") {
        } else if index < utf8.count, utf8[index] == UInt8(ascii: "+") || utf8[index] == UInt8(ascii: "-") {
            let sign: Int64 = utf8[index] == UInt8(ascii: "-") ? -1 : 1
            index += 1
            guard let hours = number(2), expect(":"), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
            offset = sign * (hours * 3600 + minutes * 60)
        } else {
            return nil
        }
        guard index == utf8.count else { return nil }
        return (days * 86_400 + hour * 3600 + minute * 60 + second - offset) * 1_000_000 + fraction
    }
}
