public import Postgres

/// Spreading the schema over a Citus cluster (`ingest distribute`): which
/// tables are sharded, on which column, which go to every node, and which stay
/// on the coordinator. Idempotent; `Schema.migrate` runs it again after
/// migrating a distributed database, so tables a later migration adds follow.
public enum Distribution {
    public enum Placement: Sendable, Equatable {
        /// A copy on every node: small, read everywhere (by the shards' own
        /// triggers and joins), written rarely.
        case reference
        /// Hash-sharded on `column`; tables sharing `colocatedWith` keep their
        /// rows with the same value on the same node.
        case distributed(column: String, colocatedWith: String?)
    }

    /// The tables Citus manages. The rest (audit_log: one hash chain appended
    /// under one lock; rotation_runs, vault_suppressions, partition_policy,
    /// schema_migrations) stay plain tables on the coordinator, where every
    /// function that writes them runs.
    public static let plan: [(table: String, placement: Placement)] = [
        // Read by the shards' triggers (key_versions) and joined with the vault
        // (data_keys); quarantine's foreign key needs data_keys on every node.
        ("key_versions", .reference),
        ("data_keys", .reference),
        ("app_versions", .reference),
        // Old → new token: the retokenize rewrite joins it with every shard of
        // user_logins, whose rows are not placed by token.
        ("token_lineage", .reference),
        // Looked up by token, inserted by token (ON CONFLICT needs the
        // distribution column in the key).
        ("vault_entries", .distributed(column: "token", colocatedWith: nil)),
        // A user's logins together.
        ("user_logins", .distributed(column: "user_id", colocatedWith: nil)),
        // A message's receipt and its quarantine row on one node: their keys
        // (receipt_id, sent_day[, quarantined_on]) start with the receipt id.
        ("ingest_receipts", .distributed(column: "receipt_id", colocatedWith: nil)),
        ("quarantine", .distributed(column: "receipt_id", colocatedWith: "ingest_receipts")),
    ]

    /// Shards per distributed table unless told otherwise: a batch touches
    /// every shard, so fewer shards are fewer round trips (on 2 workers, 8
    /// shards ran at 1.75× the rate of Citus's default 32), and 8 still spread
    /// over up to 8 workers without splitting.
    public static let defaultShardCount = 8

    /// What a `distribute` run found and did.
    public struct Report: Sendable {
        public var distributed: [String] = []
        public var alreadyDistributed: [String] = []
        public var workers = 0
        public var shardCount = 0
    }

    /// Whether this database has the Citus extension.
    public static func hasCitus(on connection: PostgresConnection) async throws -> Bool {
        try await connection.query("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS citus")[0].bool("citus")
    }

    /// Whether `distribute` has run on this database (some table of the plan
    /// is managed by Citus).
    public static func isDistributed(on connection: PostgresConnection) async throws -> Bool {
        guard try await hasCitus(on: connection) else { return false }
        return try await !managedTables(on: connection).isEmpty
    }

    /// Distributes every table of the plan that exists and is not distributed
    /// yet; checks those that are. Needs the schema at migration 5 or later.
    public static func apply(shardCount: Int? = defaultShardCount, on connection: PostgresConnection) async throws -> Report {
        guard try await hasCitus(on: connection) else {
            throw DistributionError(
                "this database has no Citus extension: on the coordinator, CREATE EXTENSION citus and add the workers (SELECT citus_add_node(host, port)), in this database; then run distribute again"
            )
        }
        var report = Report()
        report.workers = try await connection.query("SELECT count(*) AS n FROM citus_get_active_worker_nodes()")[0].int("n")
        guard report.workers > 0 else {
            throw DistributionError(
                "the Citus coordinator has no active worker in this database: add them with SELECT citus_add_node(host, port) (Citus keeps its nodes per database), then run distribute again"
            )
        }
        let version = try await Schema.currentVersion(connection)
        guard version >= 5 else {
            throw DistributionError(
                "the schema is at version \(version): run `ingest migrate` first (distribute needs the partitioned receipts of migration 5)"
            )
        }
        // Migrations and distribution one at a time, whichever replica runs them.
        try await connection.execute("SELECT pg_advisory_lock($1)", [.int(Schema.advisoryLockKey)])
        do {
            report = try await distribute(shardCount: shardCount, report: report, on: connection)
            try await connection.execute("SELECT pg_advisory_unlock($1)", [.int(Schema.advisoryLockKey)])
            return report
        } catch {
            _ = try? await connection.execute("SELECT pg_advisory_unlock($1)", [.int(Schema.advisoryLockKey)])
            throw error
        }
    }

    /// The body of `apply`, under the migration lock (`Schema.migrate` holds it already).
    static func distribute(shardCount: Int?, report: Report, on connection: PostgresConnection) async throws -> Report {
        var report = report
        let managed = try await managedTables(on: connection)
        // The vault's and the data keys' triggers check every insert against
        // key_versions; on the cluster they run on the shards, reading its copy
        // there (they read nothing else, so Citus's caveat for triggers, a
        // trigger seeing another shard's rows, does not apply).
        try await connection.execute("SET citus.enable_unsafe_triggers = on")
        if let shardCount {
            guard (1...4096).contains(shardCount) else { throw DistributionError("--shard-count must be between 1 and 4096") }
            try await connection.execute("SELECT set_config('citus.shard_count', $1, false)", [.text(String(shardCount))])
        }
        for (table, placement) in plan {
            guard try await connection.query("SELECT to_regclass($1) IS NOT NULL AS present", [.text(table)])[0].bool("present") else {
                continue
            }
            if let existing = managed[table] {
                guard existing == placement.citusForm else {
                    throw DistributionError(
                        "\(table) is already managed by Citus, but not as planned (\(existing.described) instead of \(placement.citusForm.described)): undo it with SELECT undistribute_table('\(table)') and run distribute again"
                    )
                }
                report.alreadyDistributed.append(table)
                continue
            }
            switch placement {
            case .reference:
                try await connection.execute("SELECT create_reference_table($1)", [.text(table)])
            case .distributed(let column, let colocatedWith):
                try await connection.execute(
                    "SELECT create_distributed_table($1, $2, colocate_with => $3)",
                    [.text(table), .text(column), .text(colocatedWith ?? "default")])
            }
            report.distributed.append(table)
        }
        try await connection.execute("RESET citus.enable_unsafe_triggers")
        // Citus sends a shard every column: an INSERT with the defaults the
        // coordinator evaluated, a COPY with NULLs for the rest. The ingest
        // login may then name columns it leaves alone on one node; the vault's
        // trigger refuses erasure columns from anyone but the owner's
        // functions, on each shard, and nothing decides by created_at.
        if report.distributed.contains("vault_entries") {
            try await connection.execute(
                "GRANT INSERT (created_at, erased_at, erased_by, erasure_audit_seq) ON vault_entries TO pseudonymizer_ingest")
        }
        report.shardCount = try await connection.query(
            "SELECT count(*) AS n FROM pg_dist_shard WHERE logicalrelid = to_regclass('vault_entries')")[0].int("n")
        // One connection per worker in a transaction, for every session of this
        // database: a batch then prepares one transaction per worker, not per
        // shard (3× the rate with 32 shards, BENCHMARKS.md), and partitions
        // made inside a batch may follow its COPYs (with a foreign key to a
        // reference table, Citus refuses DDL after parallel access).
        try await connection.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET citus.multi_shard_modify_mode = sequential', current_database()); END $$")
        return report
    }

    /// How Citus manages a table: reference, or hash on a column (co-location
    /// is compared by group, so `colocatedWith` is left out).
    struct CitusForm: Equatable {
        let method: String
        let column: String?

        var described: String { method == "n" ? "a reference table" : "distributed on \(column ?? "?")" }
    }

    private static func managedTables(on connection: PostgresConnection) async throws -> [String: CitusForm] {
        var tables: [String: CitusForm] = [:]
        for row in try await connection.query(
            """
            SELECT p.logicalrelid::regclass::text AS name, p.partmethod::text AS method,
                   CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END AS column
            FROM pg_dist_partition p
            """)
        {
            tables[try row.string("name")] = CitusForm(method: try row.string("method"), column: row["column"])
        }
        return tables.filter { name, _ in plan.contains { $0.table == name } }
    }

    /// Whether Citus hash-distributes `table` (spreads its rows over shards).
    public static func isSharded(_ table: String, on connection: PostgresConnection) async throws -> Bool {
        guard try await hasCitus(on: connection) else { return false }
        return
            !(try await connection.query(
                "SELECT FROM pg_dist_partition WHERE logicalrelid = $1::regclass AND partmethod = 'h'", [.text(table)]
            ).isEmpty)
    }

    /// Heap pages of `table`, or, when Citus distributes it, of its largest
    /// shard: a range of pages in a statement on a distributed table applies
    /// to each shard's own pages.
    public static func heapPages(of table: String, on connection: PostgresConnection) async throws -> Int {
        try await connection.query(
            try await isSharded(table, on: connection)
                ? "SELECT coalesce(max(shard_size), 0) / current_setting('block_size')::bigint AS pages FROM citus_shards WHERE table_name = $1::regclass"
                : "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint AS pages",
            [.text(table)])[0].int("pages")
    }

    public static func describe(_ report: Report) -> String {
        """
        \(report.workers) worker\(report.workers == 1 ? "" : "s"), \(report.shardCount) shards of the vault; \
        distributed now: \(report.distributed.isEmpty ? "none" : report.distributed.joined(separator: ", ")); \
        already: \(report.alreadyDistributed.isEmpty ? "none" : report.alreadyDistributed.joined(separator: ", "))
        """
    }
}

extension Distribution.Placement {
    var citusForm: Distribution.CitusForm {
        switch self {
        case .reference: Distribution.CitusForm(method: "n", column: nil)
        case .distributed(let column, _): Distribution.CitusForm(method: "h", column: column)
        }
    }
}

public struct DistributionError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
