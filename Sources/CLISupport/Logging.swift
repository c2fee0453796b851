public import Foundation
public import Logging

/// Logging for both tools: swift-log to stderr, the level from `LOG_LEVEL`
/// (trace…critical, default info), and `LOG_FORMAT=json` for one JSON object per
/// line (for log collectors). Metadata carries tokens, ids and counts, never
/// an original value.
public enum ToolLogging {
    /// `LOG_FORMAT=json`: logs, and the fatal error, as JSON lines.
    public static func isJSON(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["LOG_FORMAT"]?.lowercased() == "json"
    }

    public static func bootstrap(label: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Logger {
        let level = environment["LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        let json = isJSON(environment)
        LoggingSystem.bootstrap { label in
            if json {
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

/// `{"time":…,"level":…,"logger":…,"message":…,"source":…,<metadata>…}` per line on stderr.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: Any] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { fields[key] = Self.plain(value) }
        fields["source"] = event.source
        FileHandle.standardError.write(Self.line(level: event.level.rawValue, logger: label, message: "\(event.message)", fields: fields))
    }

    /// One log line: `time`, `level`, `logger`, `message`, then `fields`.
    public static func line(level: String, logger: String, message: String, fields: [String: Any] = [:]) -> Data {
        var object = fields
        object["time"] = ISO8601DateFormatter().string(from: Date())
        object["level"] = level
        object["logger"] = logger
        object["message"] = message
        guard var line = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return Data()
        }
        line.append(0x0a)
        return line
    }

    private static func plain(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let string): return number(string) ?? string
        case .stringConvertible(let convertible): return number(convertible.description) ?? convertible.description
        case .array(let values): return values.map(plain)
        case .dictionary(let values): return values.mapValues(plain)
        }
    }

    /// A count, duration or rate (`42`, `-3`, `0.25`) as a JSON number, so log
    /// queries can compare it; anything else (versions, ids) stays a string.
    static func number(_ text: String) -> Any? {
        guard let first = text.utf8.first, first == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first),
            text.utf8.count <= 18, text.wholeMatch(of: /-?(0|[1-9][0-9]*)(\.[0-9]+)?/) != nil
        else { return nil }
        return text.contains(".") ? Double(text) : Int(text)
    }
}
