import AWS
import Foundation
import Logging
import Postgres
import Pseudonymization
import TestSupport
import Testing
import VaultAdmin
import VaultCrypto

@testable import Ingest

@Suite("Ingest against PostgreSQL and the SQS emulator")
struct IngestIntegrationTests {
    @Test("the real sample: 99 rows, 1 quarantined, NULL locales, version codes, send date, empty queue, recoverable vault")
    func realSample() async throws {
        let harness = try await IngestHarness.make()
        let bodies = try sampleBodies()
        try await AWSCLI.send(harness.queueURL, bodies: bodies)
        let stats = try await harness.run()
        // At-least-once: under load a message may be delivered twice; it is then skipped.
        #expect(stats.received - stats.duplicates == 100)
        #expect(stats.written == 99)
        #expect(stats.quarantined == ["missing_field": 1])

        let connection = try await harness.connect()
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 99)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE locale IS NULL") == 29)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE locale = 'None'") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine WHERE reason = 'missing_field'") == 1)
        // The send date, in UTC (the messages were sent moments ago).
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM user_logins WHERE create_date = (now() AT TIME ZONE 'UTC')::date") == 99)
        for (version, code) in [("2.3.0", 2_003_000), ("0.96", 96_000), ("2.0", 2_000_000), ("2.00", 2_000_000)] {
            let users = bodies.filter { $0.contains(#""app_version": "\#(version)""#) }.compactMap { userID(in: $0) }
            #expect(!users.isEmpty)
            for user in users {
                #expect(try await harness.scalar("SELECT app_version FROM user_logins WHERE user_id = $1", [.text(user)]) == code)
            }
        }
        #expect(try await connection.query("SELECT version FROM app_versions WHERE code = 2000000").first?["version"] == "2.0.0")
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)

        // Every token decrypts, with the recovery private key, to the original.
        // (Counted, not compared in #expect, so a failure never prints an original.)
        var checked = 0
        var mismatches = 0
        for body in bodies {
            guard let user = userID(in: body), let ip = field("ip", in: body), let device = field("device_id", in: body) else { continue }
            let row = try #require(
                try await connection.query(
                    "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = $1", [.text(user)]
                ).first)
            if try await harness.recover(try row.string("masked_ip")).value != ip { mismatches += 1 }
            if try await harness.recover(try row.string("masked_device_id")).value != device { mismatches += 1 }
            checked += 2
        }
        #expect(checked == 198)
        #expect(mismatches == 0)
    }

    @Test("the same bodies sent again get the same tokens and no new vault entries")
    func deterministicTokens() async throws {
        let harness = try await IngestHarness.make()
        let bodies = try sampleBodies()
        try await AWSCLI.send(harness.queueURL, bodies: bodies)
        try await harness.run()
        let entries = try await harness.scalar("SELECT count(*) FROM vault_entries")
        try await AWSCLI.send(harness.queueURL, bodies: bodies)
        let second = try await harness.run()
        #expect(second.written == 99)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 198)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries") == entries)
        // Each user now has two identical rows.
        #expect(
            try await harness.scalar(
                """
                SELECT count(*) FROM (SELECT user_id FROM user_logins GROUP BY user_id
                                      HAVING count(*) = 2 AND count(DISTINCT masked_ip) = 1 AND count(DISTINCT masked_device_id) = 1) AS pairs
                """) == 99)
    }

    @Test("a message redelivered after commit (crash before delete) adds no row and is deleted")
    func redelivery() async throws {
        let harness = try await IngestHarness.make()
        let bodies = Array(try sampleBodies().prefix(20))
        try await AWSCLI.send(harness.queueURL, bodies: bodies)
        var crashing = try harness.configuration()
        // Released for long enough that this run sees each message once.
        crashing.redeliverAfterSecondsInsteadOfDelete = 20
        let first = try await harness.run(crashing)
        // Line 13 of the sample is the malformed message.
        #expect(first.written == 19 && first.quarantinedTotal == 1)
        try await waitUntil { try await AWSCLI.depth(harness.queueURL).visible == 20 }
        // SQS delivers at least once: two concurrent receives may both get a
        // message, and on a loaded machine a receive the first run abandoned
        // can still take some (they return after their visibility timeout).
        // So run until the queue is empty, and count what matters: every
        // delivery was a duplicate.
        var received = 0
        var duplicates = 0
        for _ in 0..<3 {
            let second = try await harness.run()
            received += second.received
            duplicates += second.duplicates
            #expect(second.written == 0 && second.quarantinedTotal == 0)
            guard try await AWSCLI.depth(harness.queueURL).inFlight > 0 else { break }
            try await waitUntil(.seconds(120)) { try await AWSCLI.depth(harness.queueURL).inFlight == 0 }
        }
        #expect(received >= 20)
        #expect(duplicates == received)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 19)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 1)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)
    }

    @Test("a row the database refuses for its data is quarantined alone; the rest of the batch is written")
    func databaseRejectsOneRow() async throws {
        let harness = try await IngestHarness.make()
        let admin = try await harness.connect()
        try await admin.execute("ALTER TABLE user_logins ADD CONSTRAINT test_no_rejects CHECK (user_id NOT LIKE 'reject-%')")
        await admin.close()
        try await AWSCLI.send(harness.queueURL, bodies: (0..<10).map { loginBody(user: $0 == 6 ? "reject-6" : "user-\($0)", index: $0) })
        let run = try await harness.run()
        #expect(run.written == 9 && run.quarantined == ["database_rejected": 1])
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 9)
        #expect(
            try await harness.scalar("SELECT count(*) FROM quarantine WHERE reason = 'database_rejected' AND detail LIKE '%23514%'") == 1)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)
    }

    @Test("two writers on the same few values, some rows refused: one vault entry per value, and every written token has its entry")
    func contendedValuesWithRefusedRows() async throws {
        let harness = try await IngestHarness.make()
        let admin = try await harness.connect()
        try await admin.execute("ALTER TABLE user_logins ADD CONSTRAINT test_refused CHECK (user_id NOT LIKE 'refused-%')")
        await admin.close()
        // Ten IPs and ten device ids in 600 messages: nearly every batch meets the
        // other writer's open batch on a value; every seventh row is refused.
        let bodies = (0..<600).map { index in
            #"{"user_id": "\#(index % 7 == 0 ? "refused" : "user")-\#(index)", "app_version": "1.0", "device_type": "ios", "ip": "10.9.0.\#(index % 10 + 1)", "locale": null, "device_id": "dev-\#(index / 10 % 10)"}"#
        }
        let file = NSTemporaryDirectory() + "contended-\(UUID().uuidString).jsonl"
        try (bodies.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        var configuration = try harness.configuration(.file(path: file, sentTimestamp: SentTime.noon(0)))
        configuration.batchSize = 8
        configuration.writers = 2
        let run = try await harness.run(configuration)
        #expect(run.written == 514 && run.quarantined == ["database_rejected": 86])
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries") == 20)
        // Every token a written row carries has its entry (two queries: on Citus
        // the two tables are not co-located).
        let connection = try await harness.connect()
        let carried = try await connection.query(
            "SELECT DISTINCT masked_ip AS token FROM user_logins UNION SELECT DISTINCT masked_device_id FROM user_logins"
        ).map { try $0.string("token") }
        let stored = try await connection.query(
            "SELECT count(*) AS n FROM vault_entries WHERE token = ANY($1::text[])", [.textArray(carried)])[0].int("n")
        await connection.close()
        #expect(carried.count == 20 && stored == 20)
    }

    @Test("a database that refuses every write (grant revoked) quarantines and deletes nothing, and resumes when fixed")
    func databaseRefusesEveryWrite() async throws {
        let harness = try await IngestHarness.make()
        let role = try await TestDatabase.createLoginRole(in: "pseudonymizer_ingest", via: harness.databaseURL)
        let admin = try await harness.connect()
        try await admin.execute("REVOKE INSERT ON user_logins FROM pseudonymizer_ingest")
        try await AWSCLI.send(harness.queueURL, bodies: (0..<10).map { loginBody(user: "user-\($0)", index: $0) })
        var configuration = try harness.configuration()
        configuration.conninfo = try TestDatabase.url(harness.databaseURL, as: role)
        configuration.untilEmpty = false
        configuration.maximumMessages = 10
        let service = IngestService(configuration: configuration, logger: Logger(label: "ingest-tests"))
        let running = Task { try await service.run() }
        try await waitUntil { service.statistics.snapshot.databaseRetries >= 2 }
        // The database answers pings but refuses writes: not ready.
        #expect(service.health.readiness.problems.contains("database refuses writes"))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 0)
        #expect(try await AWSCLI.depth(harness.queueURL).inFlight == 10)
        try await admin.execute("GRANT INSERT ON user_logins TO pseudonymizer_ingest")
        await admin.close()
        try await waitUntil { service.statistics.snapshot.written == 10 }
        #expect(!service.health.readiness.problems.contains("database refuses writes"))
        try await running.value
        #expect(service.statistics.snapshot.written == 10 && service.statistics.snapshot.quarantinedTotal == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 10)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)
    }

    @Test("replaying a file adds nothing")
    func fileReplay() async throws {
        let harness = try await IngestHarness.make()
        let file = NSTemporaryDirectory() + "replay-\(UUID().uuidString).jsonl"
        try (try sampleBodies().joined(separator: "\n") + "\n\n").write(toFile: file, atomically: true, encoding: .utf8)
        let sent = SentTime.noon(-2)
        let source = IngestConfiguration.Source.file(path: file, sentTimestamp: sent)
        let first = try await harness.run(try harness.configuration(source))
        #expect(first.written == 99 && first.quarantinedTotal == 1)
        let second = try await harness.run(try harness.configuration(source))
        #expect(second.written == 0 && second.duplicates == 100 && second.quarantinedTotal == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 99)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM user_logins WHERE create_date = $1::date", [.text(UTCDate.string(fromMilliseconds: sent))]) == 99)
    }

    @Test("malformed input is quarantined with a reason and never stops the service")
    func hostileInput() async throws {
        let harness = try await IngestHarness.make()
        let good =
            #"{"user_id": "u", "app_version": "1.2.3", "device_type": "ios", "ip": "10.0.0.1", "locale": "FR", "device_id": "111-22-3333"}"#
        let cases: [(String, String)] = [
            ("{not json", "invalid_json"),
            (
                #"{"user_id": 5, "app_version": "1.0", "device_type": "ios", "ip": "10.0.0.1", "locale": null, "device_id": "d"}"#,
                "wrong_type"
            ),
            (#"{"user_id": "u"}"#, "missing_field"),
            (good.replacingOccurrences(of: #""u""#, with: "\"" + String(repeating: "u", count: 200) + "\""), "too_long"),
            (good.replacingOccurrences(of: #""u""#, with: #""a\u0000b""#), "control_character"),
            (good.replacingOccurrences(of: "10.0.0.1", with: "10.0.0.1' OR '1'='1"), "invalid_ip"),
            (good.replacingOccurrences(of: "1.2.3", with: "1.2.3-beta"), "invalid_app_version"),
            ("[]", "not_an_object"),
            (good.replacingOccurrences(of: #""user_id": "u""#, with: #""user_id": "u", "user_id": "v""#), "duplicate_field"),
        ]
        try await AWSCLI.send(harness.queueURL, bodies: cases.map(\.0) + [good])
        let stats = try await harness.run()
        #expect(stats.written == 1)
        #expect(stats.quarantinedTotal == cases.count)
        let connection = try await harness.connect()
        let reasons = try await connection.query("SELECT reason FROM quarantine ORDER BY reason").map { $0["reason"] ?? "" }
        #expect(reasons == cases.map(\.1).sorted())
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)

        // A 1 MiB body (larger than SQS allows) through the file path.
        let file = NSTemporaryDirectory() + "huge-\(UUID().uuidString).jsonl"
        try ("{\"x\": \"" + String(repeating: "a", count: 1 << 20) + "\"}\n").write(toFile: file, atomically: true, encoding: .utf8)
        let huge = try await harness.run(try harness.configuration(.file(path: file, sentTimestamp: SentTime.noon(0))))
        #expect(huge.quarantined == ["body_too_large": 1])
        #expect(try await harness.scalar("SELECT body_bytes FROM quarantine WHERE reason = 'body_too_large'") == (1 << 20) + 9)
        // Bounded storage whatever anyone sends: a 4 KiB prefix sealed, the rest by its
        // SHA-256 (of the first 1 MiB received; the line's length is body_bytes).
        let kept = try await connection.query(
            "SELECT octet_length(sealed_body) AS sealed, body_sha256 FROM quarantine WHERE reason = 'body_too_large'")[0]
        #expect(try kept.int("sealed") == 4096 + 16)
        let received = Array(("{\"x\": \"" + String(repeating: "a", count: 1 << 20)).utf8.prefix(1 << 20))
        #expect(try kept.bytes("body_sha256") == SHA256.hash(received))
        #expect(
            try await harness.scalar("SELECT count(*) FROM quarantine WHERE body_sha256 IS NOT NULL") == 1, "bodies kept whole have none")
    }

    @Test("a message delivered too often is quarantined instead of retried forever")
    func poisonMessage() async throws {
        let harness = try await IngestHarness.make()
        try await AWSCLI.send(harness.queueURL, bodies: [try sampleBodies()[0]])
        var configuration = try harness.configuration()
        configuration.maximumReceiveCount = 0
        let stats = try await harness.run(configuration)
        #expect(stats.quarantined == ["too_many_deliveries": 1])
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 0)
    }
}

func userID(in body: String) -> String? { field("user_id", in: body) }

func field(_ name: String, in body: String) -> String? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
    return object[name] as? String
}

/// A valid login message for `user`, with an address and device derived from `index`.
func loginBody(user: String, index: Int) -> String {
    #"{"user_id": "\#(user)", "app_version": "1.0", "device_type": "ios", "ip": "10.7.0.\#(index)", "locale": null, "device_id": "dev-\#(index)"}"#
}
