import Foundation
import Postgres
import Storage
import TestSupport
import Testing
import VaultAdmin

@Suite("user_logins partitioned by month")
struct PartitionedLoginsTests {
    @Test("retokenize (as a rotation login) sweeps every partition; logins retention drops a month and names the tokens left unreferenced")
    func retokenizeAndRetention() async throws {
        // Four months ago, then converted: one partition.
        let january = rotationBodies(prefix: "jan", count: 400)
        let harness = try await VaultHarness.make(bodies: january, sentDaysAgo: 125)
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        #expect(try await Partitions.partitionUserLoginsMonthly(on: connection))
        // Now, reusing some January values: a second partition, this month's.
        let recent = rotationBodies(prefix: "now", count: 300, reusing: january)
        let file = NSTemporaryDirectory() + "recent-\(UUID().uuidString).jsonl"
        try (recent.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let loaded = try await harness.ingest(["run", "--from-file", file])
        #expect(loaded.status == 0, "\(loaded.errors)")
        #expect(try await Partitions.leaves(of: "user_logins", on: connection).count == 2)

        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT-P"]).status == 0)
        let rotation = try await harness.loginRole(in: "pseudonymizer_rotation")
        let retokenize = try await harness.vault(["retokenize", "--reason", "ROT-P", "--json"], user: rotation)
        #expect(retokenize.status == 0, "\(retokenize.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 700)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t2_%' OR masked_device_id NOT LIKE 'dev_t2_%'") == 0)

        // What dropping January leaves unreferenced, computed independently.
        let expected = try await connection.query(
            """
            SELECT v.token FROM vault_entries v
            WHERE NOT EXISTS (SELECT FROM user_logins u WHERE u.create_date >= date_trunc('month', now()) - interval '3 months'
                                                          AND (u.masked_ip = v.token OR u.masked_device_id = v.token))
            ORDER BY 1
            """
        ).map { try $0.string("token") }
        #expect(!expected.isEmpty)
        var policy = Partitions.Policy()
        policy.loginsRetentionMonths = 3
        let report = try await Partitions.maintain(policy: policy, auditActor: nil, on: connection)
        #expect(report.dropped.contains("user_logins_before_partitioning"))
        #expect(report.unreferencedVaultEntries == expected)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 300)
        let again = try await Partitions.maintain(policy: policy, auditActor: nil, on: connection)
        #expect(again.dropped.isEmpty && again.unreferencedVaultEntries == nil)
    }
}
