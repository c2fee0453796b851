public import Postgres

/// Upkeep of the range-partitioned tables (migration 5): receipts by sent day,
/// quarantine by day, and, once converted, `user_logins` by month. Retention is
/// dropping whole partitions: no DELETE, no bloat, no vacuum debt.
public enum Partitions {
    public struct Policy: Sendable {
        /// Days (and for `user_logins`, months) made ahead of today.
        public var daysAhead = 7
        public var monthsAhead = 2
        /// Receipts are what makes a redelivery a duplicate: they must outlive
        /// the queue's retention (SQS keeps a message at most 14 days).
        public var receiptsRetentionDays = 15
        public var quarantineRetentionDays = 90
        /// Months of `user_logins` kept (nil: kept forever).
        public var loginsRetentionMonths: Int? = nil

        public init() {}
    }

    /// What one `maintain` run did.
    public struct Report: Sendable, Encodable {
        public var created: [String] = []
        public var dropped: [String] = []
        /// Quarantined messages dropped (each partition's count audited).
        public var droppedQuarantinedMessages = 0
        /// Quarantine partitions past retention left in place: dropping their
        /// messages needs an audit row, and no audit key was given.
        public var keptForAudit: [String] = []
        /// Vault entries no `user_logins` row references any more (after login
        /// partitions were dropped): candidates for `vault forget`.
        public var unreferencedVaultEntries: [String]? = nil
    }

    /// Tables kept by day.
    static let receipts = "ingest_receipts"
    static let quarantine = "quarantine"
    static let logins = "user_logins"

    /// Creates partitions ahead and drops those past retention. Idempotent, and
    /// safe while ingest writes: creation takes SHARE UPDATE EXCLUSIVE on a
    /// parent (no conflict with writers); a drop waits at most `lockTimeout`
    /// for the writers' transactions (it is retried, then reported). With
    /// `dryRun`, changes nothing and reports what it would do.
    public static func maintain(
        policy: Policy, auditActor: AuditActor?, dryRun: Bool = false, lockTimeout: String = "5s", on connection: PostgresConnection
    ) async throws -> Report {
        var report = Report()
        try await connection.execute("SELECT set_config('lock_timeout', $1, false)", [.text(lockTimeout)])
        let dropWait = try DropWait(lockTimeout: lockTimeout, onCitus: try await Distribution.isDistributed(on: connection))
        // The days ingest may write receipts for: back to the retention, ahead as far as partitions are made.
        if !dryRun {
            try await connection.execute(
                "UPDATE partition_policy SET receipts_retention_days = $1, days_ahead = greatest($2, 1)",
                [.int(policy.receiptsRetentionDays), .int(policy.daysAhead)])
        }
        // A dry run lists the partitions missing; a run makes them.
        let make =
            dryRun
            ? "NOT EXISTS (SELECT FROM partition_ranges($1::regclass) r WHERE r.lower < stop AND r.upper > start)"
            : "partition_ensure($1::regclass, start, stop, name)"
        let loginsPartitioned = try await isPartitioned(logins, on: connection)

        for (table, unit, ahead) in [(receipts, "day", policy.daysAhead), (quarantine, "day", policy.daysAhead)]
            + (loginsPartitioned ? [(logins, "month", policy.monthsAhead)] : [])
        {
            let created = try await retryingLockTimeouts {
                try await connection.query(
                    """
                    SELECT name FROM (
                        SELECT $1 || CASE $2 WHEN 'day' THEN '_d' || to_char(start, 'YYYYMMDD') ELSE '_m' || to_char(start, 'YYYYMM') END AS name,
                               start::date AS start, (start + ('1 ' || $2)::interval)::date AS stop
                        FROM generate_series(date_trunc($2, now() AT TIME ZONE 'UTC'),
                                             date_trunc($2, now() AT TIME ZONE 'UTC') + ($3 || ' ' || $2)::interval,
                                             ('1 ' || $2)::interval) AS start) wanted
                    WHERE \(make)
                    """, [.text(table), .text(unit), .int(ahead)])
            }
            report.created += try created.map { try $0.string("name") }
        }

        // Receipts: a day's partition goes once the day is past retention; the
        // receipts kept from before partitioning once the newest is.
        for partition in try await expired(receipts, cutoff: "today - \(policy.receiptsRetentionDays)", on: connection) {
            if partition.lowerIsUnbounded {
                let newest = try await connection.query(
                    """
                    SELECT coalesce(max(processed_at) < now() - make_interval(days => $1), true) AS expired FROM \(partition.name)
                    """, [.int(policy.receiptsRetentionDays)])
                guard try newest.first?.bool("expired") == true else { continue }
            }
            if !dryRun { try await drop(partition.name, waiting: dropWait, on: connection) }
            report.dropped.append(partition.name)
        }

        for partition in try await expired(quarantine, cutoff: "today - \(policy.quarantineRetentionDays)", on: connection) {
            let outcome: Int? = try await retryingLockTimeouts {
                try await connection.transaction { connection -> Int? in
                    try dropWait.apply(on: connection)
                    let count = try connection.query("SELECT count(*) AS n FROM \(partition.name)")[0].int("n")
                    if count > 0 {
                        guard let auditActor else { return nil }
                        guard !dryRun else { return count }
                        try AuditLog.append(
                            [
                                AuditRecord(
                                    action: "maintain.drop-quarantine", subject: partition.name,
                                    reason: "quarantine retention \(policy.quarantineRetentionDays) days",
                                    outcome: "dropped \(count) messages")
                            ], actor: auditActor, on: connection)
                    }
                    if !dryRun { try connection.execute("DROP TABLE \(partition.name)") }
                    return count
                }
            }
            if let outcome {
                report.dropped.append(partition.name)
                report.droppedQuarantinedMessages += outcome
            } else {
                report.keptForAudit.append(partition.name)
            }
        }

        if loginsPartitioned, let months = policy.loginsRetentionMonths {
            let old = try await expired(logins, cutoff: "date_trunc('month', today)::date - interval '\(months) months'", on: connection)
            for partition in old {
                if !dryRun { try await drop(partition.name, waiting: dropWait, on: connection) }
                report.dropped.append(partition.name)
            }
            if !old.isEmpty && !dryRun { report.unreferencedVaultEntries = try await unreferencedVaultEntries(on: connection) }
        }
        return report
    }

    /// Whether `table` is declaratively partitioned.
    public static func isPartitioned(_ table: String, on connection: PostgresConnection) async throws -> Bool {
        try await connection.query("SELECT relkind = 'p' AS partitioned FROM pg_class WHERE oid = $1::regclass", [.text(table)])
            .first?.bool("partitioned") ?? false
    }

    /// The tables that hold `table`'s rows: its leaf partitions, or itself.
    public static func leaves(of table: String, on connection: PostgresConnection) async throws -> [String] {
        // pg_partition_tree has no rows for a table that is not partitioned.
        let partitions = try await connection.query(
            "SELECT relid::regclass::text AS name FROM pg_partition_tree($1::regclass) WHERE isleaf ORDER BY 1", [.text(table)]
        ).map { try $0.string("name") }
        return try await isPartitioned(table, on: connection) ? partitions : [table]
    }

    /// Tokens of live vault entries that no `user_logins` row carries. (The
    /// tokens in use gathered first: on Citus the two tables are sharded on
    /// different columns, and a gathered set joins with any shard; a token's
    /// prefix names its field, so one set serves both.)
    static func unreferencedVaultEntries(on connection: PostgresConnection) async throws -> [String] {
        try await connection.query(
            """
            WITH referenced AS MATERIALIZED (
                SELECT masked_ip AS token FROM user_logins UNION SELECT masked_device_id FROM user_logins)
            SELECT v.token FROM vault_entries v LEFT JOIN referenced r ON r.token = v.token
            WHERE v.erased_at IS NULL AND r.token IS NULL
            ORDER BY 1
            """
        ).map { try $0.string("token") }
    }

    private struct Expired {
        let name: String
        let lowerIsUnbounded: Bool
    }

    /// Partitions of `table` whose whole range ends on or before `cutoff` (an
    /// SQL date expression over `today`).
    private static func expired(_ table: String, cutoff: String, on connection: PostgresConnection) async throws -> [Expired] {
        try await connection.query(
            """
            SELECT partition::text AS name, lower = '-infinity' AS unbounded
            FROM partition_ranges($1::regclass), (SELECT (now() AT TIME ZONE 'UTC')::date AS today) t
            WHERE upper <= (\(cutoff))::date ORDER BY upper
            """, [.text(table)]
        ).map { Expired(name: try $0.string("name"), lowerIsUnbounded: try $0.bool("unbounded")) }
    }

    private static func drop(_ partition: String, waiting: DropWait, on connection: PostgresConnection) async throws {
        _ = try await retryingLockTimeouts {
            try await connection.transaction { connection in
                try waiting.apply(on: connection)
                try connection.execute("DROP TABLE \(partition)")
            }
        }
    }

    /// How long a drop waits for the writers' locks, in its transaction. On a
    /// Citus cluster the writers' locks that matter are on the workers' shards,
    /// so the limit goes to the workers too (Citus passes on SET LOCAL only).
    private struct DropWait {
        let lockTimeout: String
        let onCitus: Bool

        init(lockTimeout: String, onCitus: Bool) throws {
            guard lockTimeout.wholeMatch(of: /[0-9]+(ms|s|min)?/) != nil else {
                throw PartitionError("a lock timeout is a number with ms, s or min, not \(lockTimeout)")
            }
            self.lockTimeout = lockTimeout
            self.onCitus = onCitus
        }

        func apply(on connection: isolated PostgresConnection) throws {
            if onCitus { try connection.execute("SET LOCAL citus.propagate_set_commands = 'local'") }
            try connection.execute("SET LOCAL lock_timeout = '\(lockTimeout)'")
        }
    }

    /// Runs `body` again when it gave up waiting for a lock (55P03): a writer's
    /// transaction was in the way; the next attempt usually finds a gap.
    private static func retryingLockTimeouts<T>(_ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            do {
                return try await body()
            } catch let error as PostgresError where error.sqlState == "55P03" && attempt < 5 {
                attempt += 1
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
    }

    /// Converts a plain `user_logins` into one range-partitioned by month of
    /// `create_date`, with exactly the same columns; the existing table becomes
    /// its first partition as it is (no copy; one scan to check its range).
    /// Returns false when it already is partitioned. On Citus, before
    /// `ingest distribute` (Citus cannot attach a sharded table as a partition).
    public static func partitionUserLoginsMonthly(on connection: PostgresConnection) async throws -> Bool {
        if try await Distribution.isSharded(logins, on: connection), !(try await isPartitioned(logins, on: connection)) {
            throw PartitionError(
                "user_logins is distributed by Citus: partition it before distributing. Bring it back to the coordinator (SELECT undistribute_table('user_logins'), which copies every row), run `ingest migrate --partition-user-logins monthly`, then `ingest distribute`"
            )
        }
        return try await connection.transaction { connection in
            try connection.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
            guard
                try connection.query("SELECT relkind = 'p' AS partitioned FROM pg_class WHERE oid = 'user_logins'::regclass")[0]
                    .bool("partitioned") == false
            else { return false }
            let undated = try connection.query("SELECT count(*) AS n FROM user_logins WHERE create_date IS NULL")[0].int("n")
            guard undated == 0 else {
                throw PartitionError(
                    "user_logins has \(undated) rows without create_date, which no month can hold; give them a date (or move them out) and run again"
                )
            }
            try connection.executeScript(
                """
                ALTER TABLE user_logins RENAME TO user_logins_before_partitioning;
                ALTER INDEX user_logins_masked_ip_idx RENAME TO user_logins_before_partitioning_masked_ip_idx;
                ALTER INDEX user_logins_masked_device_id_idx RENAME TO user_logins_before_partitioning_masked_device_id_idx;
                CREATE TABLE user_logins(
                    user_id varchar(128), device_type varchar(32),
                    masked_ip varchar(256), masked_device_id varchar(256),
                    locale varchar(32), app_version integer, create_date date) PARTITION BY RANGE (create_date);
                CREATE INDEX user_logins_masked_ip_idx ON user_logins (masked_ip);
                CREATE INDEX user_logins_masked_device_id_idx ON user_logins (masked_device_id);
                GRANT INSERT ON user_logins TO pseudonymizer_ingest;
                GRANT SELECT ON user_logins TO pseudonymizer_vault, pseudonymizer_analyst, pseudonymizer_rotation;
                GRANT UPDATE (masked_ip, masked_device_id) ON user_logins TO pseudonymizer_rotation;
                DO $$
                -- Up to the month after its newest row (an empty table: up to this month).
                DECLARE upper date := (date_trunc('month', coalesce((SELECT max(create_date) FROM user_logins_before_partitioning),
                                                                    (now() AT TIME ZONE 'UTC')::date - 31)) + interval '1 month')::date;
                BEGIN
                    EXECUTE format('ALTER TABLE user_logins ATTACH PARTITION user_logins_before_partitioning FOR VALUES FROM (MINVALUE) TO (%L)', upper);
                END $$;
                """)
            return true
        }
    }
}

public struct PartitionError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
