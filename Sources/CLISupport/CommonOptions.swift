public import ArgumentParser
import Foundation

/// Options both tools take: where the keys are and which database to use.
public struct KeyOptions: ParsableArguments {
    @Option(name: .customLong("keys-dir"), help: ArgumentHelp(
        "Directory with the key files (default: $KEYS_DIR, else ./keys).", valueName: "dir"))
    public var keysDirectory: String?

    public init() {}

    public var resolvedKeysDirectory: String {
        keysDirectory ?? ProcessInfo.processInfo.environment["KEYS_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "keys"
    }
}

public struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: ArgumentHelp(
        "PostgreSQL URL or conninfo (default: $DATABASE_URL, else libpq's PG* variables).", valueName: "url"))
    public var databaseURL: String?

    public init() {}

    /// What libpq gets: the option, `DATABASE_URL`, or "" (libpq then reads PGHOST, PGPORT, …).
    public var conninfo: String {
        databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
    }
}
