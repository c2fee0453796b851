import Foundation
import Postgres
import Pseudonymization
import Storage
import TestSupport
import Testing

@Suite("Batch writer against PostgreSQL")
struct BatchWriterTests {
    func login(_ user: String, ip: String) -> LoginRow {
        LoginRow(
            userID: user, deviceType: "ios", maskedIP: ip, maskedDeviceID: "dev_t1_" + String(repeating: "D", count: 43), locale: nil,
            appVersion: AppVersion("1.0")!, createDate: UTCDate.string(fromMilliseconds: SentTime.noon(-2)))
    }

    func entry(_ token: String, dataKey: String) -> VaultEntryRecord {
        VaultEntryRecord(
            token: token, field: .ip, tokenKeyVersion: 1, dataKeyID: dataKey, nonce: Array(repeating: 1, count: 12),
            ciphertext: Array(repeating: 2, count: 23))
    }

    @Test("two writers storing the same new token at once: both commit, one vault entry")
    func concurrentNewToken() async throws {
        let url = try await TestDatabase.create("writer", keys: try TestKeys.create())
        let first = try await TestDatabase.connect(url)
        let second = try await TestDatabase.connect(url)
        let dataKey = UUID().uuidString.lowercased()
        try await BatchWriter.insertDataKey(id: dataKey, recoveryKeyVersion: 1, wrappedKey: [0], createdBy: "test", on: first)
        let shared = "ip_t1_" + String(repeating: "S", count: 43)
        let items = { (name: String, receipt: UInt8) in
            [
                BatchItem(
                    receiptID: Array(repeating: receipt, count: 16), sentDay: UTCDate.string(fromMilliseconds: SentTime.noon(0)),
                    payload: .login(
                        self.login(name, ip: shared),
                        [
                            self.entry(shared, dataKey: dataKey),
                            self.entry("ip_t1_" + String(repeating: Character(name), count: 43), dataKey: dataKey),
                        ]))
            ]
        }
        let firstItems = items("A", 1)
        let secondItems = items("B", 2)
        async let one: BatchResult = first.transaction { connection in
            let result = try BatchWriter.write(firstItems, keys: .init(tokenization: 1, recovery: 1), on: connection)
            Thread.sleep(forTimeInterval: 0.5)  // hold the uncommitted entry while the other writer arrives
            return result
        }
        try await Task.sleep(for: .milliseconds(100))
        let two = try await second.transaction { connection in
            try BatchWriter.write(secondItems, keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        let oneResult = try await one
        #expect(oneResult.loginRows == 1 && two.loginRows == 1)
        let counts = try await first.query(
            """
            SELECT (SELECT count(*) FROM vault_entries WHERE token = $1) AS shared, (SELECT count(*) FROM vault_entries) AS entries,
                   (SELECT count(*) FROM user_logins) AS rows
            """, [.text(shared)])[0]
        #expect(try counts.int("shared") == 1)
        #expect(try counts.int("entries") == 3)
        #expect(try counts.int("rows") == 2)
    }

    @Test("receipts go in without a probe while no message comes twice; a duplicate meets the unique index, and later batches probe")
    func receiptsWithoutProbe() async throws {
        let url = try await TestDatabase.create("writer", keys: try TestKeys.create())
        let connection = try await TestDatabase.connect(url)
        let day = UTCDate.string(fromMilliseconds: SentTime.noon(0))
        let item = { (receipt: UInt8) in
            BatchItem(
                receiptID: Array(repeating: receipt, count: 16), sentDay: day,
                payload: .login(self.login("u\(receipt)", ip: "ip_t1_" + String(repeating: "R", count: 43)), []))
        }
        let hints = WriterHints()
        let write = { (items: [BatchItem]) in
            try await connection.transaction { connection in
                try BatchWriter.write(items, keys: .init(tokenization: 1, recovery: 1), hints: hints, on: connection)
            }
        }
        let first = try await write([item(1), item(2)])
        #expect(first.written.count == 2 && !hints.receiptsMeetDuplicates)
        // Message 2 again, with a new one: the COPY fails on the index, the probe finds it.
        let second = try await write([item(3), item(2)])
        #expect(second.written == [Array(repeating: 3, count: 16)] && second.loginRows == 1)
        #expect(hints.receiptsMeetDuplicates)
        // Probed first now; a batch without duplicates goes back to copying at once.
        let third = try await write([item(4)])
        #expect(third.loginRows == 1 && !hints.receiptsMeetDuplicates)
        let fourth = try await write([item(4), item(5)])
        #expect(fourth.written == [Array(repeating: 5, count: 16)])
        let counts = try await connection.query(
            "SELECT (SELECT count(*) FROM ingest_receipts) AS receipts, (SELECT count(*) FROM user_logins) AS rows")[0]
        #expect(try counts.int("receipts") == 5 && counts.int("rows") == 5)
    }

    @Test("an entry another open batch is storing is left out and handed back; insertContended stores it only if nobody did")
    func contendedEntries() async throws {
        let url = try await TestDatabase.create("writer", keys: try TestKeys.create())
        let owner = try await TestDatabase.connect(url)
        let contender = try await TestDatabase.connect(url)
        let dataKey = UUID().uuidString.lowercased()
        try await BatchWriter.insertDataKey(id: dataKey, recoveryKeyVersion: 1, wrappedKey: [0], createdBy: "test", on: owner)
        let token = "ip_t1_" + String(repeating: "C", count: 43)
        let plain = entry(token, dataKey: dataKey)
        let contended = VaultEntryRecord(
            token: token, field: .ip, tokenKeyVersion: 1, dataKeyID: dataKey, nonce: plain.nonce, ciphertext: plain.ciphertext,
            contended: true)
        let item = BatchItem(
            receiptID: Array(repeating: 9, count: 16), sentDay: UTCDate.string(fromMilliseconds: SentTime.noon(0)),
            payload: .login(login("u", ip: token), [contended]))
        let result = try await contender.transaction { connection in
            try BatchWriter.write([item], keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(result.loginRows == 1 && result.contendedEntries.map(\.token) == [token])
        #expect(try await contender.query("SELECT count(*) AS n FROM vault_entries")[0].int("n") == 0)

        // The owner holds the token uncommitted: the contender's insert waits for
        // its outcome; after a rollback it stores the token itself.
        try await owner.execute("BEGIN")
        try await owner.perform { connection in _ = try VaultEntries.insert([plain], on: connection) }
        async let storedAfterRollback = contender.transaction { connection in
            try VaultEntries.insertContended([contended], on: connection)
        }
        try await Task.sleep(for: .milliseconds(300))
        try await owner.execute("ROLLBACK")
        #expect(try await storedAfterRollback == [])
        #expect(try await owner.query("SELECT count(*) AS n FROM vault_entries")[0].int("n") == 1)
        // Stored already: skipped, and reported as stored.
        let again = try await contender.transaction { connection in try VaultEntries.insertContended([contended], on: connection) }
        #expect(again == [token])
    }

    @Test("an entry carried by several rows of a batch is written once")
    func entryOnSeveralRows() async throws {
        let url = try await TestDatabase.create("writer", keys: try TestKeys.create())
        let connection = try await TestDatabase.connect(url)
        let dataKey = UUID().uuidString.lowercased()
        try await BatchWriter.insertDataKey(id: dataKey, recoveryKeyVersion: 1, wrappedKey: [0], createdBy: "test", on: connection)
        let token = "ip_t1_" + String(repeating: "M", count: 43)
        let items = (1...3).map { receipt in
            BatchItem(
                receiptID: Array(repeating: UInt8(receipt), count: 16), sentDay: UTCDate.string(fromMilliseconds: SentTime.noon(0)),
                payload: .login(login("u\(receipt)", ip: token), [entry(token, dataKey: dataKey)]))
        }
        let result = try await connection.transaction { connection in
            try BatchWriter.write(items, keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(result.loginRows == 3 && result.vaultEntriesOffered == 1)
        #expect(try await connection.query("SELECT count(*) AS n FROM vault_entries")[0].int("n") == 1)
    }

    @Test("a message twice in one batch, or already processed, is written once")
    func duplicates() async throws {
        let url = try await TestDatabase.create("writer", keys: try TestKeys.create())
        let connection = try await TestDatabase.connect(url)
        let receipt = Array(repeating: UInt8(7), count: 16)
        let item = BatchItem(
            receiptID: receipt, sentDay: UTCDate.string(fromMilliseconds: SentTime.noon(0)),
            payload: .login(login("u", ip: "ip_t1_" + String(repeating: "Q", count: 43)), []))
        let first = try await connection.transaction { connection in
            try BatchWriter.write([item, item], keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(first.loginRows == 1 && first.written.count == 1)
        let again = try await connection.transaction { connection in
            try BatchWriter.write([item], keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(again.loginRows == 0 && again.written.isEmpty)
    }

    @Test("a batch loaded by INSERT statements (how a Citus refusal learns its reason) stores exactly what COPY stores")
    func insertStatementsMatchCopy() async throws {
        let dataKey = UUID().uuidString.lowercased()
        let day = UTCDate.string(fromMilliseconds: SentTime.noon(-1))
        // More rows than one INSERT statement takes, nulls, and text COPY escapes.
        var items: [BatchItem] = (0..<1_100).map { index in
            let token = "ip_t1_" + String(format: "%043d", index)
            return BatchItem(
                receiptID: Array(withUnsafeBytes(of: UInt64(index).bigEndian) { Array($0) } + Array(repeating: 7, count: 8)),
                sentDay: day,
                payload: .login(login("user\t\(index)\\", ip: token), [entry(token, dataKey: dataKey)]))
        }
        for (index, digest) in [nil, Array(repeating: UInt8(9), count: 32)].enumerated() {
            items.append(
                BatchItem(
                    receiptID: Array(repeating: UInt8(200 + index), count: 16), sentDay: day,
                    payload: .quarantine(
                        QuarantineRow(
                            source: "file", messageID: "line \(index)", rejection: Rejection(.invalidJSON, "not JSON:\tat\nbyte \\1"),
                            bodyByteCount: 10, dataKeyID: dataKey, nonce: [1, 2], sealedBody: [0, 92, 10, 9], bodySHA256: digest))))
        }
        let batch = items
        var dumps: [[String]] = []
        for loading in [BatchWriter.Loading.copy, .insertStatements] {
            let connection = try await TestDatabase.connect(try await TestDatabase.create("loading", keys: try TestKeys.create()))
            defer { Task { await connection.close() } }
            try await BatchWriter.insertDataKey(id: dataKey, recoveryKeyVersion: 1, wrappedKey: [0], createdBy: "test", on: connection)
            try await BatchWriter.preparePartitions(days: [day], on: connection)
            let result = try await connection.transaction { connection in
                try BatchWriter.write(batch, keys: .init(tokenization: 1, recovery: 1), loading: loading, on: connection)
            }
            #expect(result.loginRows == 1_100 && result.quarantined.values.reduce(0, +) == 2)
            var dump: [String] = []
            for query in [
                "SELECT user_logins::text AS row FROM user_logins ORDER BY 1",
                "SELECT (token, field, token_key_version, data_key_id, nonce, ciphertext)::text AS row FROM vault_entries ORDER BY 1",
                "SELECT (receipt_id, sent_day)::text AS row FROM ingest_receipts ORDER BY 1",
                """
                SELECT (receipt_id, source, message_id, reason, field, detail, body_bytes, data_key_id, nonce, sealed_body, sent_day,
                        body_sha256)::text AS row FROM quarantine ORDER BY 1
                """,
            ] {
                dump += try await connection.query(query).map { try $0.string("row") }
            }
            dumps.append(dump)
        }
        let expectedRows = 1_100 + 1_100 + 1_102 + 2
        #expect(dumps[0].count == expectedRows)
        #expect(dumps[0] == dumps[1])
    }
}
