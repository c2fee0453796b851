import AWS
import Foundation
import Postgres
import Pseudonymization
import Storage
import Synchronization
import TestSupport
import Testing
import VaultCrypto

@testable import Ingest

@Suite("retention by partitions")
struct PartitionTests {
    static let day = SentTime.day
    static func noon(_ days: Int) -> Int64 { SentTime.noon(days) }

    /// A login item sent at `sent` (Unix milliseconds).
    static func item(_ receipt: [UInt8], user: String, sent: Int64) -> BatchItem {
        let day = UTCDate.string(fromMilliseconds: sent)
        return BatchItem(
            receiptID: receipt, sentDay: day,
            payload: .login(
                LoginRow(
                    userID: user, deviceType: "ios", maskedIP: "ip_t1_" + String(repeating: "A", count: 43),
                    maskedDeviceID: "dev_t1_" + String(repeating: "B", count: 43), locale: nil, appVersion: AppVersion("1.0")!,
                    createDate: day), []))
    }

    func writeFile(_ bodies: [String]) throws -> String {
        let file = NSTemporaryDirectory() + "partitions-\(UUID().uuidString).jsonl"
        try (bodies.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func partitions(of table: String, _ harness: IngestHarness) async throws -> [String] {
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        return try await connection.query(
            "SELECT partition::text AS name FROM partition_ranges($1::regclass) ORDER BY lower", [.text(table)]
        )
        .map { try $0.string("name") }
    }

    @Test("maintain makes partitions ahead, is a no-op when run again, and audits the quarantine it drops")
    func aheadIdempotentAudited() async throws {
        let harness = try await IngestHarness.make()
        // Line 13 of the sample is malformed: one quarantined message, today.
        try await harness.run(try harness.configuration(.file(path: try writeFile(try sampleBodies()), sentTimestamp: Self.noon(0))))
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        let actor = try AuditActor.current(store: harness.keys.store)

        let first = try await Partitions.maintain(policy: .init(), auditActor: actor, on: connection)
        let today = UTCDate.string(fromMilliseconds: Self.noon(0)).replacingOccurrences(of: "-", with: "")
        let lastAhead = UTCDate.string(fromMilliseconds: Self.noon(7)).replacingOccurrences(of: "-", with: "")
        #expect(first.created.contains("ingest_receipts_d\(lastAhead)") && first.created.contains("quarantine_d\(lastAhead)"))
        #expect(!first.created.contains("ingest_receipts_d\(today)"), "ingest made today's receipts partition on demand")
        #expect(first.created.count == 14)
        // The (empty) receipts table from before partitioning goes at once.
        #expect(first.dropped == ["ingest_receipts_legacy"])

        let second = try await Partitions.maintain(policy: .init(), auditActor: actor, on: connection)
        #expect(second.created.isEmpty && second.dropped.isEmpty && second.keptForAudit.isEmpty)
        #expect(try await partitions(of: "ingest_receipts", harness).count == 8)

        // Age the quarantined message past retention: without the audit key
        // its day is kept; with it, dropped and audited with its count.
        let old = UTCDate.string(fromMilliseconds: Self.noon(-100))
        try await connection.execute(
            "SELECT partition_ensure('quarantine', $1::date, $1::date + 1, 'quarantine_d' || to_char($1::date, 'YYYYMMDD'))", [.text(old)])
        #expect(try await connection.execute("UPDATE quarantine SET quarantined_on = $1::date", [.text(old)]) == 1)
        let unaudited = try await Partitions.maintain(policy: .init(), auditActor: nil, on: connection)
        #expect(unaudited.keptForAudit == ["quarantine_d\(old.replacingOccurrences(of: "-", with: ""))"] && unaudited.dropped.isEmpty)
        let audited = try await Partitions.maintain(policy: .init(), auditActor: actor, on: connection)
        #expect(audited.dropped == ["quarantine_d\(old.replacingOccurrences(of: "-", with: ""))"])
        #expect(audited.droppedQuarantinedMessages == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 0)
        let row = try await connection.query("SELECT action, outcome FROM audit_log ORDER BY seq DESC LIMIT 1")[0]
        #expect(try row.string("action") == "maintain.drop-quarantine" && row.string("outcome") == "dropped 1 messages")
        #expect(try await Partitions.maintain(policy: .init(), auditActor: actor, on: connection).dropped.isEmpty)
    }

    @Test("a receipts day past retention is dropped while ingest writes; nothing is lost or doubled")
    func dropWhileIngesting() async throws {
        let harness = try await IngestHarness.make()
        let old = generatedBodies(count: 300, seed: 11)
        // Receipts were kept longer then; maintain below brings the retention down to 15 days.
        try await harness.connect().execute("UPDATE partition_policy SET receipts_retention_days = 40")
        try await harness.run(try harness.configuration(.file(path: try writeFile(old), sentTimestamp: Self.noon(-30))))
        let oldDay = "ingest_receipts_d" + UTCDate.string(fromMilliseconds: Self.noon(-30)).replacingOccurrences(of: "-", with: "")
        #expect(try await partitions(of: "ingest_receipts", harness).contains(oldDay))

        let live = generatedBodies(count: 300, seed: 12)
        try await Boto3.send(harness.queueURL, bodies: live)
        var configuration = try harness.configuration()
        configuration.batchSize = 20
        let ingest = Task { try await harness.run(configuration) }
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        // maintain again and again while the writers commit batches.
        var dropped: [String] = []
        var rows = 0
        let deadline = ContinuousClock.now + .seconds(180)
        while dropped.isEmpty || rows < 600, ContinuousClock.now < deadline {
            dropped += try await Partitions.maintain(policy: .init(), auditActor: nil, lockTimeout: "200ms", on: connection).dropped
            rows = try await harness.scalar("SELECT count(*) FROM user_logins")
            try await Task.sleep(for: .milliseconds(50))
        }
        let statistics = try await ingest.value
        #expect(dropped.contains(oldDay))
        #expect(statistics.written == 300 && statistics.quarantinedTotal == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 600)
        #expect(try await harness.scalar("SELECT count(*) FROM ingest_receipts") == 300)
        #expect(!(try await partitions(of: "ingest_receipts", harness).contains(oldDay)))
        // A receive the run abandoned as it stopped may still have leased a
        // message the emulator also delivered to another (at least once): it
        // comes back after its visibility timeout, and must add nothing.
        for _ in 0..<3 {
            guard try await AWSCLI.depth(harness.queueURL).inFlight > 0 else { break }
            try await waitUntil(.seconds(120)) { try await AWSCLI.depth(harness.queueURL).inFlight == 0 }
            let again = try await harness.run()
            #expect(again.written == 0 && again.duplicates == again.received)
        }
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 600)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)
    }

    @Test("exactly once across a day boundary: messages sent either side of midnight, redelivered after maintain")
    func acrossMidnight() async throws {
        let harness = try await IngestHarness.make()
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        let dataKey = UUID().uuidString.lowercased()
        try await BatchWriter.insertDataKey(id: dataKey, recoveryKeyVersion: 1, wrappedKey: [0], createdBy: "test", on: connection)
        let midnight = Self.noon(1) - Self.day / 2
        let items = (0..<10).map { index in
            Self.item(
                Array(repeating: UInt8(index), count: 16), user: "u\(index)",
                sent: midnight + (index < 5 ? -1_000 : 1_000) * Int64(index + 1))
        }
        #expect(Set(items.map(\.sentDay)).count == 2)
        let first = try await connection.transaction { connection in
            try BatchWriter.write(items, keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(first.written.count == 10 && first.loginRows == 10)
        _ = try await Partitions.maintain(policy: .init(), auditActor: nil, on: connection)
        let again = try await connection.transaction { connection in
            try BatchWriter.write(items.reversed(), keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(again.written.isEmpty && again.loginRows == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 10)
        // The receipts are in two day partitions (counted per partition: on Citus
        // a row's tableoid is its shard's).
        var filled = 0
        for partition in try await Partitions.leaves(of: "ingest_receipts", on: connection)
        where try await harness.scalar("SELECT count(*) FROM \(partition)") > 0 {
            filled += 1
        }
        #expect(filled == 2)
    }

    @Test("a file sent on two days is two sets of messages, each written (or quarantined) once")
    func sameFileTwoDays() async throws {
        let harness = try await IngestHarness.make()
        let file = try writeFile(try sampleBodies())
        for (days, written) in [(-1, 99), (0, 99), (-1, 0), (0, 0)] {
            let run = try await harness.run(try harness.configuration(.file(path: file, sentTimestamp: Self.noon(days))))
            #expect(run.written == written && run.quarantinedTotal == (written == 0 ? 0 : 1), "sent \(days) days from today")
        }
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 198)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 2)
    }

    @Test("maintain cannot drop a day a batch is writing to: the drop waits for the commit, and gives up at its lock timeout")
    func dropWaitsForWritingBatch() async throws {
        let harness = try await IngestHarness.make()
        let writer = try await harness.connect()
        let maintainer = try await harness.connect()
        defer {
            Task {
                await writer.close()
                await maintainer.close()
            }
        }
        let old = Self.noon(-30)
        let oldDay = "ingest_receipts_d" + UTCDate.string(fromMilliseconds: old).replacingOccurrences(of: "-", with: "")
        // Receipts were kept longer when this batch was sent; maintain brings the retention down to 15 days.
        try await maintainer.execute("UPDATE partition_policy SET receipts_retention_days = 40")
        let batch = [Self.item(Array(repeating: 1, count: 16), user: "old", sent: old)]
        try await BatchWriter.preparePartitions(days: Set(batch.map(\.sentDay)), on: writer)
        // The batch stays uncommitted until maintain has given up.
        let maintainDone = Atomic<Bool>(false)
        async let committed = writer.transaction { connection in
            let result = try BatchWriter.write(batch, keys: .init(tokenization: 1, recovery: 1), on: connection)
            let deadline = ContinuousClock.now + .seconds(120)
            while !maintainDone.load(ordering: .acquiring), ContinuousClock.now < deadline { usleep(10_000) }
            return result
        }
        try await waitUntil {
            try await harness.scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'ingest_receipts'::regclass AND mode = 'RowExclusiveLock'") > 0
        }
        await #expect {
            try await Partitions.maintain(policy: .init(), auditActor: nil, lockTimeout: "100ms", on: maintainer)
        } throws: { ($0 as? PostgresError)?.sqlState == "55P03" }
        maintainDone.store(true, ordering: .releasing)
        #expect(try await committed.loginRows == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM ingest_receipts") == 1, "the batch committed into its day")
        let report = try await Partitions.maintain(policy: .init(), auditActor: nil, on: maintainer)
        #expect(report.dropped.contains(oldDay))
    }

    @Test("ingest --from-file without --sent-at dates rows by the file's time, so replaying the file another day adds nothing")
    func fileTimeIsSendTime() async throws {
        let harness = try await IngestHarness.make()
        let file = try writeFile(try sampleBodies())
        let fileTime = Date(timeIntervalSince1970: TimeInterval(Self.noon(-3) / 1000))
        try FileManager.default.setAttributes([.modificationDate: fileTime], ofItemAtPath: file)
        let arguments = [
            "run", "--from-file", file, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
        ]
        for _ in 0..<2 {
            let run = try await runProgram(try TestEnvironment.executable("ingest"), arguments)
            #expect(run.status == 0, "\(run.errors)")
        }
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 99)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM user_logins WHERE create_date = $1::date", [.text(UTCDate.string(fromMilliseconds: Self.noon(-3)))])
                == 99)
    }

    @Test("an installation from before partitioning converts with every row; old receipts still catch redeliveries")
    func convertPopulated() async throws {
        let url = try await TestDatabase.createEmpty("convert")
        let connection = try await TestDatabase.connect(url)
        defer { Task { await connection.close() } }
        try await Schema.migrate(connection, through: 4, logger: TestEnvironment.logger)
        let dataKey = UUID().uuidString.lowercased()
        try await connection.executeScript(
            """
            INSERT INTO ingest_receipts (receipt_id) SELECT decode(md5(i::text), 'hex') FROM generate_series(1, 5000) i;
            INSERT INTO data_keys (id, recovery_key_version, wrapped_key, created_by) VALUES ('\(dataKey)', 1, '\\x00', 'test');
            INSERT INTO quarantine (receipt_id, source, message_id, reason, field, detail, body_bytes, data_key_id, nonce, sealed_body,
                                    quarantined_at)
            SELECT decode(md5('q' || i), 'hex'), 'sqs', 'm' || i, 'invalid-json', NULL, 'not JSON', 10, '\(dataKey)', '\\x01', '\\x02',
                   now() - make_interval(days => i)
            FROM generate_series(1, 40) i;
            INSERT INTO user_logins SELECT 'u' || i, 'ios', 'ip_t1_x', 'dev_t1_y', NULL, 1, DATE '2026-09-01' + (i % 80)
            FROM generate_series(1, 3000) i;
            """)
        try await Schema.migrate(connection, logger: TestEnvironment.logger)
        #expect(try await connection.query("SELECT count(*) AS n FROM ingest_receipts")[0].int("n") == 5000)
        #expect(try await connection.query("SELECT count(*) AS n FROM quarantine")[0].int("n") == 40)
        #expect(
            try await connection.query("SELECT count(DISTINCT tableoid) AS n FROM quarantine")[0].int("n") == 40,
            "each quarantined message in the partition of its day")
        // A message processed before the conversion, delivered again: a duplicate.
        let receipt = try await connection.query("SELECT decode(md5('7'), 'hex') AS id")[0].bytes("id")
        let redelivered = Self.item(receipt, user: "late", sent: Self.noon(0))
        let result = try await connection.transaction { connection in
            try BatchWriter.write([redelivered], keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(result.written.isEmpty && result.loginRows == 0)

        // Opt-in: user_logins by month, the old table its first partition.
        let before = try await columns(on: connection)
        #expect(try await Partitions.partitionUserLoginsMonthly(on: connection))
        #expect(!(try await Partitions.partitionUserLoginsMonthly(on: connection)), "a second run changes nothing")
        #expect(try await Partitions.isPartitioned("user_logins", on: connection))
        #expect(try await columns(on: connection) == before)
        #expect(
            before == [
                "user_id varchar(128)", "device_type varchar(32)", "masked_ip varchar(256)", "masked_device_id varchar(256)",
                "locale varchar(32)", "app_version integer", "create_date date",
            ])
        #expect(try await connection.query("SELECT count(*) AS n FROM user_logins")[0].int("n") == 3000)
        #expect(try await Partitions.leaves(of: "user_logins", on: connection) == ["user_logins_before_partitioning"])

        // A login two months on gets its month's partition on demand.
        // (Sent days that far ahead need the window `ingest maintain --days-ahead` sets.)
        try await connection.execute("UPDATE partition_policy SET days_ahead = 70")
        let later = Self.item(Array(repeating: 9, count: 16), user: "later", sent: Self.noon(62))
        _ = try await connection.transaction { connection in
            try BatchWriter.write([later], keys: .init(tokenization: 1, recovery: 1), on: connection)
        }
        #expect(try await Partitions.leaves(of: "user_logins", on: connection).count == 2)
        #expect(try await connection.query("SELECT count(*) AS n FROM user_logins")[0].int("n") == 3001)
    }

    @Test(
        "ingest maintain: refuses receipts kept shorter than the queue keeps messages; prints a JSON summary; exit 78 when quarantine waits for the audit key"
    )
    func maintainCommand() async throws {
        let harness = try await IngestHarness.make(queueAttributes: ["MessageRetentionPeriod": "1209600"])
        let ingest = try TestEnvironment.executable("ingest")
        let short = try await runProgram(
            ingest, ["maintain", "--receipts-retention", "13", "--queue-url", harness.queueURL, "--database-url", harness.databaseURL])
        #expect(short.status == 64)
        #expect(short.errors.contains("shorter than the queue's message retention (1209600 s, 14 days)"), "\(short.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM partition_ranges('ingest_receipts')") == 1, "nothing done")

        // A dry run says the same and changes nothing.
        let dryRun = try await runProgram(
            ingest, ["maintain", "--dry-run", "--json", "--queue-url", harness.queueURL, "--database-url", harness.databaseURL])
        #expect(dryRun.status == 0, "\(dryRun.errors)")
        let planned = try JSONSerialization.jsonObject(with: Data(dryRun.output.utf8)) as? [String: Any]
        #expect((planned?["created"] as? [String])?.count == 16 && planned?["dry_run"] as? Bool == true)
        #expect(planned?["dropped"] as? [String] == ["ingest_receipts_legacy"])
        #expect(try await harness.scalar("SELECT count(*) FROM partition_ranges('ingest_receipts')") == 1, "nothing done")

        let run = try await runProgram(
            ingest, ["maintain", "--json", "--queue-url", harness.queueURL, "--database-url", harness.databaseURL])
        #expect(run.status == 0, "\(run.errors)")
        let summary = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
        #expect((summary?["created"] as? [String])?.count == 16)
        #expect(summary?["dropped"] as? [String] == ["ingest_receipts_legacy"])
        let migrate = try await runProgram(ingest, ["migrate", "--dry-run", "--database-url", harness.databaseURL])
        #expect(migrate.status == 0 && migrate.output.contains("nothing to apply"), "\(migrate.errors)")

        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        let old = UTCDate.string(fromMilliseconds: Self.noon(-200))
        try await connection.execute(
            "SELECT partition_ensure('quarantine', $1::date, $1::date + 1, 'quarantine_old')", [.text(old)])
        try await connection.execute(
            """
            INSERT INTO data_keys (id, recovery_key_version, wrapped_key, created_by) VALUES ('00000000-0000-4000-8000-000000000001', 1, '\\x00', 't');
            """)
        try await connection.execute(
            """
            INSERT INTO quarantine (receipt_id, source, message_id, reason, detail, body_bytes, data_key_id, nonce, sealed_body, sent_day,
                                    quarantined_on)
            VALUES ('\\x01', 'sqs', 'm', 'invalid-json', 'not JSON', 1, '00000000-0000-4000-8000-000000000001', '\\x01', '\\x02', $1::date,
                    $1::date)
            """, [.text(old)])
        let unaudited = try await runProgram(ingest, ["maintain", "--database-url", harness.databaseURL])
        #expect(unaudited.status == 78 && unaudited.errors.contains("quarantine_old") && unaudited.errors.contains("--audit-keys-dir"))
        let audited = try await runProgram(
            ingest, ["maintain", "--database-url", harness.databaseURL, "--audit-keys-dir", harness.keys.store.directory])
        #expect(audited.status == 0 && audited.output.contains("1 quarantined messages, audited"), "\(audited.errors)")
    }

    /// `user_logins`' columns as "name type(length)", in order.
    func columns(on connection: PostgresConnection) async throws -> [String] {
        try await connection.query(
            """
            SELECT column_name || ' ' || CASE data_type WHEN 'character varying' THEN 'varchar(' || character_maximum_length || ')'
                                                         ELSE data_type END AS c
            FROM information_schema.columns WHERE table_name = 'user_logins' ORDER BY ordinal_position
            """
        ).map { try $0.string("c") }
    }
}
