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
        if TestDatabase.onCitus {
            // As README says for Citus: refused while distributed; back to the
            // coordinator, partitioned, distributed again.
            await #expect(throws: PartitionError.self) { try await Partitions.partitionUserLoginsMonthly(on: connection) }
            try await connection.execute("SELECT undistribute_table('user_logins')")
            #expect(try await Partitions.partitionUserLoginsMonthly(on: connection))
            _ = try await Distribution.apply(on: connection)
        } else {
            #expect(try await Partitions.partitionUserLoginsMonthly(on: connection))
        }
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
        let kept = Set(
            try await connection.query(
                """
                SELECT unnest(ARRAY[masked_ip, masked_device_id]) AS token FROM user_logins
                WHERE create_date >= date_trunc('month', now()) - interval '3 months'
                """
            ).map { try $0.string("token") })
        let expected = try await connection.query("SELECT token FROM vault_entries").map { try $0.string("token") }
            .filter { !kept.contains($0) }.sorted()
        #expect(!expected.isEmpty)
        var policy = Partitions.Policy()
        policy.loginsRetentionMonths = 3
        let report = try await Partitions.maintain(policy: policy, auditActor: nil, on: connection)
        #expect(report.dropped.contains("user_logins_before_partitioning"))
        #expect(report.unreferencedVaultEntries.map { $0.sorted() } == expected)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 300)
        let again = try await Partitions.maintain(policy: policy, auditActor: nil, on: connection)
        #expect(again.dropped.isEmpty && again.unreferencedVaultEntries == nil)
    }
}
