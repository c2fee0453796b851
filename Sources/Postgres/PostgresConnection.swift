import CLibPQ
import Foundation
public import Logging

/// One libpq connection, confined to its own thread.
///
/// Every method runs on the connection's dedicated `ThreadExecutor`, never on
/// the cooperative pool, so a blocking libpq call only ever delays this
/// connection. Statements take their values as separate parameters; there is no
/// API that splices a value into SQL text.
public actor PostgresConnection {
    private let executor: ThreadExecutor
    private var connection: OpaquePointer?
    private var preparedStatements: [String: String] = [:]
    private let logger: Logger

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private init(label: String, logger: Logger) {
        self.executor = ThreadExecutor(name: "postgres:\(label)")
        self.logger = logger
    }

    // Runs on the connection's own thread, like every other libpq call.
    isolated deinit {
        if let connection { PQfinish(connection) }
        executor.shutdown()
    }

    /// Connects with `conninfo` (a `postgresql://` URL or `key=value` string); an
    /// empty string uses libpq's defaults and the standard `PG*` variables.
    public static func connect(
        _ conninfo: String, applicationName: String, connectTimeoutSeconds: Int = 10, logger: Logger
    ) async throws -> PostgresConnection {
        let connection = PostgresConnection(label: applicationName, logger: logger)
        try await connection.open(conninfo, applicationName: applicationName, connectTimeoutSeconds: connectTimeoutSeconds)
        return connection
    }

    private func open(_ conninfo: String, applicationName: String, connectTimeoutSeconds: Int) throws {
        let security = try TransportSecurity.of(conninfo: conninfo)
        try security.checkBeforeConnecting()
        // Later keywords win and `dbname` is expanded in place, so the caller's
        // URL or conninfo overrides these defaults.
        var keywords = ["connect_timeout", "application_name"]
        var values = [String(connectTimeoutSeconds), applicationName]
        if let mode = security.defaultMode {
            keywords.append("sslmode")
            values.append(mode)
        }
        keywords.append("dbname")
        values.append(conninfo)
        let opened = withCStringArray(keywords) { keywords in
            withCStringArray(values) { values in PQconnectdbParams(keywords, values, 1) }
        }
        guard let opened else { throw PostgresError(.connectionFailed, "libpq could not allocate a connection") }
        guard PQstatus(opened) == CONNECTION_OK else {
            let message = Self.connectionMessage(opened)
            PQfinish(opened)
            throw PostgresError(.connectionFailed, security.failureHint.map { "\(message) (\($0))" } ?? message)
        }
        do {
            try security.check(
                connectedHost: PQhost(opened).map { String(cString: $0) } ?? "", encrypted: PQsslInUse(opened) == 1,
                port: PQport(opened).map { String(cString: $0) } ?? "")
        } catch {
            PQfinish(opened)
            throw error
        }
        connection = opened
        // NOTICEs ("relation already exists, skipping") would go to stderr.
        _ = try execute("SET client_min_messages TO warning")
    }

    /// Closes the connection now rather than when the actor is released.
    public func close() {
        if let connection { PQfinish(connection) }
        connection = nil
        preparedStatements.removeAll()
    }

    /// The OS thread this connection's calls run on (for tests: it is the
    /// same for every call and never a cooperative-pool thread).
    var executingThread: pthread_t { pthread_self() }

    /// The role this connection logged in as (the server's `session_user`).
    public var user: String {
        guard let connection, let user = PQuser(connection) else { return "" }
        return String(cString: user)
    }

    /// False once the server or network dropped the connection; the owner should
    /// then connect again.
    public var isHealthy: Bool {
        guard let connection else { return false }
        return PQstatus(connection) == CONNECTION_OK
    }

    // MARK: Statements

    /// Runs one parameterized statement and returns its rows.
    /// With `prepared`, the statement is parsed once per connection and reused.
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = [], prepared: Bool = false) throws -> [PostgresRow] {
        let result = try run(sql, parameters, prepared: prepared)
        defer { PQclear(result) }
        return Self.rows(of: result)
    }

    /// Runs one parameterized statement; returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = [], prepared: Bool = false) throws -> Int {
        let result = try run(sql, parameters, prepared: prepared)
        defer { PQclear(result) }
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    /// Runs a script of several statements without parameters (migrations).
    public func executeScript(_ sql: String) throws {
        let connection = try liveConnection()
        guard let result = PQexec(connection, sql) else { throw connectionError() }
        defer { PQclear(result) }
        try check(result, expecting: [PGRES_COMMAND_OK, PGRES_TUPLES_OK])
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    @discardableResult
    public func transaction<T: Sendable>(_ body: @Sendable (isolated PostgresConnection) throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            if isHealthy { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// `transaction` for a body that also waits on other work between its
    /// statements (it hops off the connection's thread while it waits).
    public nonisolated func suspendingTransaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await execute("BEGIN")
        do {
            let value = try await body(self)
            try await execute("COMMIT")
            return value
        } catch {
            if await isHealthy { _ = try? await execute("ROLLBACK") }
            throw error
        }
    }

    /// Runs several statements on the connection's thread, without a hop between them.
    public func perform<T: Sendable>(_ body: @Sendable (isolated PostgresConnection) throws -> T) throws -> T { try body(self) }

    /// Streams COPY text-format `data` into `COPY … FROM STDIN`; returns the row count.
    @discardableResult
    public func copy(_ sql: String, data: [UInt8]) throws -> Int {
        let connection = try liveConnection()
        guard let started = PQexec(connection, sql) else { throw connectionError() }
        let status = PQresultStatus(started)
        guard status == PGRES_COPY_IN else {
            defer { PQclear(started) }
            try check(started, expecting: [PGRES_COPY_IN])
            throw PostgresError(.unexpectedResult, "statement is not COPY FROM STDIN")
        }
        PQclear(started)
        let chunkSize = 1 << 20
        var offset = 0
        var sendFailure: String? = nil
        data.withUnsafeBytes { buffer in
            while offset < buffer.count {
                let length = min(chunkSize, buffer.count - offset)
                let pointer = buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self)
                if PQputCopyData(connection, pointer, Int32(length)) != 1 {
                    sendFailure = Self.connectionMessage(connection)
                    return
                }
                offset += length
            }
        }
        PQputCopyEnd(connection, sendFailure == nil ? nil : "client failed to send data")
        var rowCount = 0
        var serverError: PostgresError? = nil
        while let result = PQgetResult(connection) {
            defer { PQclear(result) }
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                rowCount = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if serverError == nil {
                serverError = Self.serverError(result, code: .copyFailed)
            }
        }
        if let serverError { throw serverError }
        if let sendFailure { throw PostgresError(.connectionFailed, sendFailure) }
        return rowCount
    }

    /// Inserts the rows of COPY text-format `data` (as `copy` takes them) with
    /// multi-row INSERT statements: `insert` names the table and columns
    /// (`INSERT INTO t (a, b)`). Slower than
    /// COPY, but a Citus coordinator relays a shard's refusal of an INSERT
    /// with its SQLSTATE, and of a COPY without it (`isRelayedCopyFailure`).
    @discardableResult
    public func insertRows(_ insert: String, columnCount: Int, copyText data: [UInt8]) throws -> Int {
        let rows = CopyTextBuilder.rows(of: data)
        // PostgreSQL takes at most 65,535 parameters a statement.
        let rowsPerStatement = max(1, min(1000, 65_535 / max(columnCount, 1)))
        var inserted = 0
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + rowsPerStatement, rows.count)]
            var parameters: [PostgresValue] = []
            parameters.reserveCapacity(chunk.count * columnCount)
            var tuples: [String] = []
            for row in chunk {
                guard row.count == columnCount else {
                    throw PostgresError(.unexpectedResult, "a COPY row has \(row.count) fields, not \(columnCount)")
                }
                let first = parameters.count + 1
                tuples.append("(" + (first..<first + columnCount).map { "$\($0)" }.joined(separator: ", ") + ")")
                parameters += row.map(PostgresValue.optionalText)
            }
            inserted += try execute("\(insert) VALUES \(tuples.joined(separator: ", "))", parameters)
            start += chunk.count
        }
        return inserted
    }

    // MARK: Internals

    private func liveConnection() throws -> OpaquePointer {
        guard let connection else { throw PostgresError(.connectionFailed, "the connection is closed") }
        return connection
    }

    private func run(_ sql: String, _ parameters: [PostgresValue], prepared: Bool) throws -> OpaquePointer {
        let connection = try liveConnection()
        let statementName = prepared ? try prepare(sql, parameterCount: parameters.count) : nil
        let encoded = parameters.map(\.wireBytes)
        let formats = parameters.map { Int32($0.isBinary ? 1 : 0) }
        let lengths = encoded.map { Int32($0?.count ?? 0) }
        let result: OpaquePointer? = withParameterPointers(encoded) { values in
            formats.withUnsafeBufferPointer { formats in
                lengths.withUnsafeBufferPointer { lengths in
                    if let statementName {
                        return PQexecPrepared(
                            connection, statementName, Int32(parameters.count), values, lengths.baseAddress,
                            formats.baseAddress, 0)
                    }
                    return PQexecParams(
                        connection, sql, Int32(parameters.count), nil, values, lengths.baseAddress, formats.baseAddress, 0)
                }
            }
        }
        guard let result else { throw connectionError() }
        do {
            try check(result, expecting: [PGRES_COMMAND_OK, PGRES_TUPLES_OK])
        } catch {
            PQclear(result)
            throw error
        }
        return result
    }

    private func prepare(_ sql: String, parameterCount: Int) throws -> String {
        if let name = preparedStatements[sql] { return name }
        let name = "s\(preparedStatements.count + 1)"
        guard let result = PQprepare(try liveConnection(), name, sql, Int32(parameterCount), nil) else { throw connectionError() }
        defer { PQclear(result) }
        try check(result, expecting: [PGRES_COMMAND_OK])
        preparedStatements[sql] = name
        return name
    }

    private func check(_ result: OpaquePointer, expecting statuses: [ExecStatusType]) throws {
        let status = PQresultStatus(result)
        guard !statuses.contains(status) else { return }
        if status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR {
            if let connection, PQstatus(connection) != CONNECTION_OK {
                throw PostgresError(.connectionFailed, Self.connectionMessage(connection))
            }
            throw Self.serverError(result, code: .server)
        }
        throw PostgresError(.unexpectedResult, "unexpected result status \(String(cString: PQresStatus(status)))")
    }

    private func connectionError() -> PostgresError {
        PostgresError(.connectionFailed, connection.map(Self.connectionMessage) ?? "the connection is closed")
    }

    /// libpq's message on one line (it wraps hints onto indented lines).
    private static func connectionMessage(_ connection: OpaquePointer) -> String {
        let message = String(cString: PQerrorMessage(connection))
            .split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: " ")
        return message.isEmpty ? "connection lost" : message
    }

    private static func serverError(_ result: OpaquePointer, code: PostgresError.Code) -> PostgresError {
        func field(_ name: Int32) -> String? {
            guard let value = PQresultErrorField(result, name) else { return nil }
            return String(cString: value)
        }
        let primary = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(result)).trimmingTrailingWhitespace()
        return PostgresError(
            code, PostgresError.redacted(primary), sqlState: field(Int32(UInt8(ascii: "C"))),
            table: field(Int32(UInt8(ascii: "t"))), column: field(Int32(UInt8(ascii: "c"))),
            constraint: field(Int32(UInt8(ascii: "n"))), sourceFunction: field(Int32(UInt8(ascii: "R"))))
    }

    private static func rows(of result: OpaquePointer) -> [PostgresRow] {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [String: Int] = [:]
        for column in 0..<columnCount { columns[String(cString: PQfname(result, Int32(column)))] = column }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                } else {
                    let length = Int(PQgetlength(result, Int32(row), Int32(column)))
                    let pointer = UnsafeRawPointer(PQgetvalue(result, Int32(row), Int32(column))!)
                    values.append(String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self))
                }
            }
            rows.append(PostgresRow(values: values, columns: columns))
        }
        return rows
    }
}

// libpq field codes for PQresultErrorField are the ASCII letters of
// PG_DIAG_* in postgres_ext.h: M primary message, C SQLSTATE, t table, c column, n constraint,
// R the server function that raised it.

private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicated = strings.map { strdup($0) }
    defer { for pointer in duplicated { free(pointer) } }
    let pointers = duplicated.map { UnsafePointer($0) } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withParameterPointers<R>(_ values: [[UInt8]?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    // Each value is copied into one contiguous allocation whose lifetime spans the call.
    let total = values.reduce(0) { $0 + ($1?.count ?? 0) + 1 }
    let storage = UnsafeMutablePointer<CChar>.allocate(capacity: max(total, 1))
    defer { storage.deallocate() }
    var pointers: [UnsafePointer<CChar>?] = []
    pointers.reserveCapacity(values.count)
    var offset = 0
    for value in values {
        guard let value else {
            pointers.append(nil)
            continue
        }
        let start = storage + offset
        value.withUnsafeBytes { bytes in
            if bytes.count > 0 { UnsafeMutableRawPointer(start).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        }
        start[value.count] = 0
        pointers.append(UnsafePointer(start))
        offset += value.count + 1
    }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
