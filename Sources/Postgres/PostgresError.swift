import Foundation

/// A PostgreSQL failure.
///
/// `message` is the server's primary message with any quoted value removed;
/// the server's DETAIL and the query parameters are never kept, because they can
/// carry row values. What is left names the failing SQLSTATE, table, column or
/// constraint, which is schema, not data.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Could not connect, or the connection was lost.
        public static let connectionFailed = Code("connection failed")
        /// The server rejected a statement (see `sqlState`).
        public static let server = Code("server error")
        /// COPY did not complete.
        public static let copyFailed = Code("COPY failed")
        /// The server answered in a way the client did not expect.
        public static let unexpectedResult = Code("unexpected result")
        /// The database URL or conninfo cannot be parsed.
        public static let invalidConninfo = Code("invalid database URL")
        /// The connection would leave the machine unencrypted.
        public static let insecureTransport = Code("insecure transport")

        public var description: String { name }
    }

    public let code: Code
    public let sqlState: String?
    public let message: String
    public let table: String?
    public let column: String?
    public let constraint: String?
    /// The server function that raised the error (PostgreSQL's or an extension's).
    public let sourceFunction: String?
    public let file: String
    public let line: Int

    public init(
        _ code: Code, _ message: String, sqlState: String? = nil, table: String? = nil, column: String? = nil,
        constraint: String? = nil, sourceFunction: String? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.table = table
        self.column = column
        self.constraint = constraint
        self.sourceFunction = sourceFunction
        self.file = file
        self.line = line
    }

    /// A Citus coordinator relaying a worker's refusal of COPY rows (a
    /// COPY, or an INSERT … SELECT it runs as one): the shard's SQLSTATE is
    /// lost (XX000), so whether it was a conflict, bad data or a refused key
    /// version is unknown. The same rows by INSERT statements tell
    /// (`PostgresConnection.insertRows`).
    public var isRelayedCopyFailure: Bool { sqlState == "XX000" && sourceFunction == "ReportCopyError" }

    public var description: String {
        var text = "PostgreSQL \(code)"
        if let sqlState { text += " [\(sqlState)]" }
        text += ": \(message)"
        if let table { text += " (table \(table)" + (column.map { ", column \($0)" } ?? "") + ")" }
        if let constraint { text += " (constraint \(constraint))" }
        return text
    }

    /// True when trying again later can succeed: the connection broke, the server
    /// is starting or shutting down, out of resources, or a transaction lost a
    /// serialization race. False for errors in the statement or the data.
    public var isTransient: Bool {
        if code == .connectionFailed { return true }
        guard let sqlState else { return false }
        return sqlState.hasPrefix("08")  // connection exception
            || sqlState.hasPrefix("53")  // insufficient resources (disk full, too many connections)
            || sqlState.hasPrefix("57P")  // admin/crash shutdown, cannot connect now
            || sqlState == "40001"  // serialization failure
            || sqlState == "40P01"  // deadlock detected
            || sqlState == "25006"  // read-only transaction (e.g. a standby during failover)
    }

    /// The server is unreachable, shutting down or out of resources (not a
    /// lost serialization race): waiting for it is all there is to do.
    public var isUnavailable: Bool { isTransient && sqlState?.hasPrefix("40") != true }

    /// True when the server refused a row for its data (a value it cannot
    /// take, a constraint, a size limit): the other rows of the batch would go
    /// in. False for errors about the database itself (permissions, missing
    /// tables, a read-only or full disk), which no message can cause or fix.
    public var isDataError: Bool {
        guard let sqlState else { return false }
        return sqlState.hasPrefix("22")  // data exception
            || sqlState.hasPrefix("23")  // integrity constraint violation
            || sqlState.hasPrefix("54")  // program limit exceeded (row or index entry too large)
    }

    /// The server's primary message with quoted values cut out: PostgreSQL
    /// quotes the offending input after a colon (`invalid input syntax for type
    /// inet: "…"`), while identifiers elsewhere in the text are schema names.
    static func redacted(_ message: String) -> String {
        guard let colon = message.range(of: ": \"") else { return message }
        return message[..<colon.lowerBound] + ": \"<redacted>\""
    }
}
