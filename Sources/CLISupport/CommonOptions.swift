public import ArgumentParser
public import Foundation

/// Options both tools take: where the keys are and which database to use.
public struct KeyOptions: ParsableArguments {
    @Option(
        name: .customLong("keys-dir"),
        help: ArgumentHelp(
            "Directory with the key files (default: $KEYS_DIR, else ./keys).", valueName: "dir"),
        completion: .directory)
    public var keysDirectory: String?

    public init() {}

    public var resolvedKeysDirectory: String {
        keysDirectory ?? ProcessInfo.processInfo.environment["KEYS_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "keys"
    }
}

public struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: ArgumentHelp(
            "PostgreSQL URL or conninfo (default: $DATABASE_URL, else libpq's PG* variables).", valueName: "url"))
    public var databaseURL: String?

    public init() {}

    /// What libpq gets: the option, `DATABASE_URL`, or "" (libpq then reads PGHOST, PGPORT, …).
    public var conninfo: String {
        databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
    }
}

/// Options that can also come from the environment: the option wins, then the
/// variable, then the default. A variable that does not parse is a usage error
/// naming the variable.
public enum EnvironmentFallback {
    public static func value<T: LosslessStringConvertible>(
        _ option: T?, _ variable: String, default fallback: T,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> T {
        if let option { return option }
        guard let text = environment[variable], !text.isEmpty else { return fallback }
        guard let value = T(text) else { throw ValidationError("\(variable)=\(text) is not a valid value") }
        return value
    }

    public static func string(
        _ option: String?, _ variable: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String? {
        option ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 }
    }

    public static func flag(
        _ option: Bool, _ variable: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Bool {
        option || ["1", "true", "yes"].contains(environment[variable]?.lowercased() ?? "")
    }
}
