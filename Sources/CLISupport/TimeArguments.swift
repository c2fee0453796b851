public import Foundation

/// A point in time given as a date (`2026-11-29`, midnight UTC), a timestamp
/// (ISO 8601, `2026-11-29T12:00:00Z`, fractions and offsets allowed), or a
/// duration back from now (`90s`, `30m`, `24h`, `7d`, `2w`, or sums like `1d12h`).
public enum PointInTime {
    public static func parse(_ text: String, now: Date = Date()) -> Date? {
        if let seconds = duration(text) { return now.addingTimeInterval(-seconds) }
        for options: ISO8601DateFormatter.Options in [
            [.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime],
            [.withFullDate],
        ] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            formatter.timeZone = TimeZone(identifier: "UTC")
            if let date = formatter.date(from: text) { return date }
        }
        return nil
    }

    /// Seconds in a duration such as `24h` or `1d12h`; nil if it is not one.
    public static func duration(_ text: String) -> TimeInterval? {
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]
        var total: TimeInterval = 0
        var digits = ""
        for character in text {
            if character.isASCII, character.isNumber {
                digits.append(character)
            } else if let unit = units[character], let value = Double(digits), !digits.isEmpty {
                total += value * unit
                digits = ""
            } else {
                return nil
            }
        }
        return digits.isEmpty && total > 0 ? total : nil
    }

    public static let help =
        "a date (2026-11-29, UTC), an ISO 8601 time (2026-11-29T12:00:00Z) or a duration back from now (24h, 7d, 1d12h)"
}
