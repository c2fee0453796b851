import Foundation
import KeyCustody
import Postgres
import Pseudonymization
import Storage
import TestSupport
import Testing

/// What only a Citus cluster has: distribution as a command, a later migration
/// on a distributed schema, a worker added and the shards rebalanced onto it,
/// the shards' own checks. Run with `CITUS=1 scripts/test`; skipped otherwise
/// (the rest of the suite runs against the cluster then too).
@Suite("Citus distribution", .enabled(if: TestDatabase.onCitus, "needs a Citus cluster: CITUS=1 scripts/test"))
struct DistributionTests {
    /// `ingest distribute --json`'s summary.
    private func distribute(_ url: String) async throws -> [String: Any] {
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"), ["distribute", "--json"], environment: ["DATABASE_URL": url])
        #expect(run.status == 0, "\(run.errors)")
        return try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
    }

    private func placements(_ connection: PostgresConnection) async throws -> [String: String] {
        Dictionary(
            uniqueKeysWithValues: try await connection.query(
                """
                SELECT logicalrelid::text AS name, CASE partmethod WHEN 'n' THEN 'reference' ELSE column_to_column_name(logicalrelid, partkey) END AS placement
                FROM pg_dist_partition
                """
            ).map { (try $0.string("name"), try $0.string("placement")) })
    }

    @Test(
        "distribute twice: the first run places every table of the plan, the second changes nothing; a later migration runs on the distributed schema"
    )
    func distributeTwiceThenMigrate() async throws {
        let url = try await TestDatabase.createEmpty("dist")
        let connection = try await TestDatabase.connect(url)
        defer { Task { await connection.close() } }
        try await Schema.migrate(connection, through: 5, logger: TestEnvironment.logger)

        let first = try await distribute(url)
        #expect(Set(first["distributed"] as? [String] ?? []) == Set(Distribution.plan.map(\.table)))
        #expect(first["workers"] as? Int == TestDatabase.citusWorkerPorts.count)
        let second = try await distribute(url)
        #expect((second["distributed"] as? [String])?.isEmpty == true)
        #expect(Set(second["already_distributed"] as? [String] ?? []) == Set(Distribution.plan.map(\.table)))

        // Migration 6 on the distributed schema: its tables, functions and
        // triggers work on the shards, and the placements are what the plan says.
        try await Schema.migrate(connection, logger: TestEnvironment.logger)
        let placed = try await placements(connection)
        for (table, placement) in Distribution.plan {
            switch placement {
            case .reference: #expect(placed[table] == "reference", "\(table)")
            case .distributed(let column, _): #expect(placed[table] == column, "\(table)")
            }
        }
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 20), database: url)
        let tokens = harness.originals.keys.sorted()
        let recovered = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "DIST-1"], input: tokens.joined(separator: "\n"))
        #expect(recovered.status == 0, "\(recovered.errors)")
        #expect(recovered.output.split(separator: "\n").count == tokens.count)
    }

    @Test("a worker added and the shards rebalanced onto it: every value still recovers, ingest goes on, nothing is written twice")
    func addWorkerAndRebalance() async throws {
        let bodies = rotationBodies(prefix: "rebal", count: 300)
        let harness = try await VaultHarness.make(bodies: bodies)
        let node = try await PrivatePostgres.start(settings: [
            "shared_preload_libraries = 'citus'", "max_prepared_transactions = 100", "wal_level = logical",
        ])
        defer { Task { await node.destroy() } }
        // The database and the extension on the new node, as on the others.
        let name = try #require(harness.databaseURL.split(separator: "/").last.map(String.init))
        let admin = try await TestDatabase.connect(node.url)
        try await admin.execute("CREATE DATABASE \(name)")
        await admin.close()
        let nodeDatabase = try await TestDatabase.connect(node.url.replacingOccurrences(of: "/pseudonymizer", with: "/\(name)"))
        try await nodeDatabase.execute("CREATE EXTENSION citus")
        await nodeDatabase.close()

        let coordinator = try await harness.connect()
        defer { Task { await coordinator.close() } }
        try await coordinator.execute("SELECT citus_add_node('127.0.0.1', $1)", [.int(node.port)])
        try await coordinator.execute("SELECT rebalance_table_shards(shard_transfer_mode => 'block_writes')")
        let onNewNode = try await coordinator.query(
            "SELECT count(*) AS n FROM citus_shards WHERE table_name = 'vault_entries'::regclass AND nodeport = $1", [.int(node.port)])[0]
            .int("n")
        #expect(onNewNode > 0, "the rebalancer moved vault shards to the new worker")

        let tokens = harness.originals.keys.sorted()
        let recovered = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "REBAL-1"], input: tokens.joined(separator: "\n"))
        #expect(recovered.status == 0, "\(recovered.errors)")
        #expect(recovered.output.split(separator: "\n").count == tokens.count)

        // The same file again (nothing new) and new messages.
        let more = rotationBodies(prefix: "after", count: 100)
        let file = NSTemporaryDirectory() + "rebalanced-\(UUID().uuidString).jsonl"
        try ((bodies + more).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let loaded = try await harness.ingest([
            "run", "--from-file", file, "--sent-at", UTCDate.string(fromMilliseconds: SentTime.noon(-1)) + "T12:00:00Z",
        ])
        #expect(loaded.status == 0, "\(loaded.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 400)
        #expect(try await harness.scalar("SELECT count(*) FROM ingest_receipts") == 400)
    }

    @Test("ingest login on a worker, writing a shard directly: the shard's trigger refuses erasure columns and unregistered versions")
    func shardRefusesIngestLogin() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 4))
        let role = try await harness.loginRole(in: "pseudonymizer_ingest")
        let port = try #require(TestDatabase.citusWorkerPorts.first)
        let owner = try await harness.connect()
        defer { Task { await owner.close() } }
        let shard = try await owner.query(
            "SELECT shard_name FROM citus_shards WHERE table_name = 'vault_entries'::regclass AND nodeport = $1 LIMIT 1", [.int(port)])[0]
            .string("shard_name")
        let dataKey = try await owner.query("SELECT id::text AS id FROM data_keys LIMIT 1")[0].string("id")
        let workerURL = try TestDatabase.url(harness.databaseURL, as: role).replacingOccurrences(
            of: ":\(try TestEnvironment.variable("PGPORT"))/", with: ":\(port)/")
        let worker = try await TestDatabase.connect(workerURL)
        defer { Task { await worker.close() } }
        let unseen = try await harness.keys.minter().token(TokenRequest(field: .ip, value: "198.51.100.78"), version: 1)
        await #expect {
            try await worker.execute(
                """
                INSERT INTO \(shard) (token, field, token_key_version, data_key_id, erased_at, erased_by)
                VALUES ($1, 'ip', 1, $2::uuid, now(), 'root as compliance_alice')
                """, [.text(unseen), .text(dataKey)])
        } throws: { ($0 as? PostgresError)?.sqlState == "42501" }
        let unregistered = "ip_t9_" + String(repeating: "B", count: 43)
        await #expect {
            try await worker.execute(
                "INSERT INTO \(shard) (token, field, token_key_version, data_key_id, nonce, ciphertext) VALUES ($1, 'ip', 9, $2::uuid, '\\x00', '\\x00')",
                [.text(unregistered), .text(dataKey)])
        } throws: { ($0 as? PostgresError)?.sqlState == "PSK02" }
        #expect(
            try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token IN ($1, $2)", [.text(unseen), .text(unregistered)])
                == 0)
    }
}
