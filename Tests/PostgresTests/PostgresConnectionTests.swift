import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import Postgres

func connect(_ name: String = "tests") async throws -> PostgresConnection {
    try await PostgresConnection.connect(
        try TestEnvironment.variable("DATABASE_URL"), applicationName: name, logger: Logger(label: "tests"))
}

@Suite("PostgreSQL client")
struct PostgresConnectionTests {
    @Test("parameters round-trip exactly, whatever characters they hold")
    func parameters() async throws {
        let connection = try await connect()
        let awkward = "O'Brien\"; DROP TABLE x; --\t\n\\ é 日本 🙂"
        let rows = try await connection.query(
            "SELECT $1::text AS t, $2::bigint AS i, $3::bytea AS b, $4::text AS n, $5::bool AS f, $6::text[] AS a",
            [.text(awkward), .int(-42), .bytes([0, 1, 254, 255]), .null, .bool(true), .textArray(["a\"b", "c\\d", nil, ""])])
        #expect(rows.count == 1)
        #expect(rows[0]["t"] == awkward)
        #expect(try rows[0].int("i") == -42)
        #expect(try rows[0].bytes("b") == [0, 1, 254, 255])
        #expect(rows[0]["n"] == nil)
        #expect(try rows[0].bool("f"))
        #expect(rows[0]["a"] == #"{"a\"b","c\\d",NULL,""}"#)
        // The same statement again through the prepared path.
        for _ in 0..<2 {
            let again = try await connection.query("SELECT $1::text AS t", [.text(awkward)], prepared: true)
            #expect(again[0]["t"] == awkward)
        }
    }

    @Test("transactions commit on return and roll back on throw")
    func transactions() async throws {
        let connection = try await connect()
        let table = "tx_test_\(UInt32.random(in: 0...UInt32.max))"
        try await connection.execute("CREATE TABLE \(table) (v int)")
        try await connection.transaction { connection in
            try connection.execute("INSERT INTO \(table) VALUES (1)")
        }
        struct Abort: Error {}
        await #expect(throws: Abort.self) {
            try await connection.transaction { connection in
                try connection.execute("INSERT INTO \(table) VALUES (2)")
                throw Abort()
            }
        }
        let rows = try await connection.query("SELECT v FROM \(table) ORDER BY v")
        #expect(try rows.map { try $0.int("v") } == [1])
        try await connection.execute("DROP TABLE \(table)")
    }

    @Test("COPY FROM STDIN loads escaped text, NULLs and bytea")
    func copy() async throws {
        let connection = try await connect()
        let table = "copy_test_\(UInt32.random(in: 0...UInt32.max))"
        try await connection.execute("CREATE TABLE \(table) (t text, i int, b bytea)")
        var builder = CopyTextBuilder()
        let values = ["tab\there", "new\nline", "back\\slash", "\\N", "plain"]
        for (index, value) in values.enumerated() {
            builder.append(value)
            builder.append(index)
            builder.append(bytes: [UInt8(index), 0xff])
            builder.endRow()
        }
        builder.append(nil as String?)
        builder.append(99)
        builder.append(bytes: [])
        builder.endRow()
        let loaded = try await connection.copy("COPY \(table) (t, i, b) FROM STDIN", data: builder.bytes)
        #expect(loaded == values.count + 1)
        let rows = try await connection.query("SELECT t, i, b FROM \(table) ORDER BY i")
        #expect(rows.map { $0["t"] } == values + [nil])
        #expect(try rows[1].bytes("b") == [1, 0xff])
        try await connection.execute("DROP TABLE \(table)")
    }

    @Test("server errors carry the SQLSTATE and never the offending value")
    func serverErrors() async throws {
        let connection = try await connect()
        let secretLookingValue = "203.0.113.77 not an address"
        do {
            try await connection.query("SELECT $1::inet", [.text(secretLookingValue)])
            Issue.record("invalid inet was accepted")
        } catch let error as PostgresError {
            #expect(error.code == .server)
            #expect(error.sqlState == "22P02")
            #expect(!error.description.contains("203.0.113.77"))
            #expect(error.description.contains("inet"))
            #expect(!error.isTransient)
        }
        // The connection is still usable after an error.
        #expect(try await connection.query("SELECT 1 AS one")[0]["one"] == "1")
    }

    @Test("a refused connection says where it tried")
    func refusedConnection() async throws {
        await #expect {
            _ = try await PostgresConnection.connect(
                "postgresql://nobody@127.0.0.1:1/none", applicationName: "tests", connectTimeoutSeconds: 2,
                logger: Logger(label: "tests"))
        } throws: { error in
            guard let error = error as? PostgresError else { return false }
            return error.code == .connectionFailed && error.isTransient && error.description.contains("127.0.0.1")
        }
    }

    @Test("blocking queries do not stall the cooperative pool")
    func blockingStaysOffThePool() async throws {
        // More concurrent blocking queries than the machine has cores: if libpq
        // ran on the cooperative pool, no other task could run until they end.
        let sleepers = max(ProcessInfo.processInfo.activeProcessorCount, 2) * 2
        var connections: [PostgresConnection] = []
        for index in 0..<sleepers { connections.append(try await connect("sleeper-\(index)")) }
        let running = SharedCount(sleepers)
        let ticksWhileBlocked = try await withThrowingTaskGroup(of: Int.self) { group in
            for connection in connections {
                group.addTask {
                    try await connection.query("SELECT pg_sleep(2)")
                    running.decrement()
                    return 0
                }
            }
            group.addTask {
                var ticks = 0
                while running.value > 0 {
                    try await Task.sleep(for: .milliseconds(10))
                    if running.value == sleepers { ticks += 1 }
                }
                return ticks
            }
            return try await group.reduce(0, +)
        }
        // Up to ~200 ticks are possible; a blocked pool allows none. (Lenient:
        // the whole suite runs in parallel on two cores.)
        #expect(ticksWhileBlocked >= 1, "the ticker ran \(ticksWhileBlocked) times while all queries blocked")
    }

    @Test("each connection runs all its calls on one thread of its own, never a pool thread")
    func dedicatedThread() async throws {
        let first = try await connect("first")
        let second = try await connect("second")
        let firstThread = await first.executingThread
        #expect(await first.executingThread == firstThread)
        #expect(await second.executingThread != firstThread)
        let poolThreads = await withTaskGroup(of: pthread_t.self) { group in
            for _ in 0..<50 { group.addTask { pthread_self() } }
            return await group.reduce(into: Set<pthread_t>()) { $0.insert($1) }
        }
        #expect(!poolThreads.contains(firstThread))
        #expect(!poolThreads.contains(await second.executingThread))
    }
}

final class SharedCount: Sendable {
    private let count: Mutex<Int>
    init(_ value: Int) { count = Mutex(value) }
    var value: Int { count.withLock { $0 } }
    func decrement() { count.withLock { $0 -= 1 } }
}

@Suite("COPY text encoding")
struct CopyTextBuilderTests {
    @Test("special characters are escaped, NULL is \\N")
    func escaping() {
        var builder = CopyTextBuilder()
        builder.append("a\tb\\c\nd\re")
        builder.append(nil as String?)
        builder.append(bytes: [0xab])
        builder.endRow()
        #expect(String(decoding: builder.bytes, as: UTF8.self) == "a\\tb\\\\c\\nd\\re\t\\N\t\\\\xab\n")
        #expect(builder.rowCount == 1)
    }
}
