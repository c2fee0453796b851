public import Logging
public import Postgres

/// One schema change. Migrations are applied in version order, each in its own
/// transaction, and recorded in `schema_migrations`; they are never edited once
/// released, only followed by new ones.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
}

public enum Schema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "pseudonymized logins, vault, data keys, receipts, quarantine", sql: """
            CREATE TABLE IF NOT EXISTS user_logins(
                user_id varchar(128), device_type varchar(32),
                masked_ip varchar(256), masked_device_id varchar(256),
                locale varchar(32), app_version integer, create_date date);

            -- Readable form of the integer app_version codes.
            CREATE TABLE app_versions (
                code integer PRIMARY KEY,
                version text NOT NULL);

            -- Data keys, each wrapped (HPKE) to a recovery public key version.
            CREATE TABLE data_keys (
                id uuid PRIMARY KEY,
                recovery_key_version integer NOT NULL,
                wrapped_key bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                created_by text NOT NULL,
                retired_at timestamptz);

            -- One entry per distinct token: the canonical original, AES-256-GCM
            -- sealed under a data key, bound to token, field and data key id.
            CREATE TABLE vault_entries (
                token text PRIMARY KEY,
                field text NOT NULL CHECK (field IN ('ip', 'device_id')),
                token_key_version integer NOT NULL,
                data_key_id uuid NOT NULL REFERENCES data_keys(id),
                nonce bytea NOT NULL,
                ciphertext bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX vault_entries_data_key_idx ON vault_entries (data_key_id);

            -- Processed messages, for exactly-once effect under at-least-once delivery.
            CREATE TABLE ingest_receipts (
                receipt_id bytea PRIMARY KEY,
                processed_at timestamptz NOT NULL DEFAULT now());

            -- Messages that could not be written, sealed like vault entries.
            CREATE TABLE quarantine (
                receipt_id bytea PRIMARY KEY,
                source text NOT NULL,
                message_id text NOT NULL,
                reason text NOT NULL,
                field text,
                detail text NOT NULL,
                body_bytes integer NOT NULL,
                data_key_id uuid NOT NULL REFERENCES data_keys(id),
                nonce bytea NOT NULL,
                sealed_body bytea NOT NULL,
                quarantined_at timestamptz NOT NULL DEFAULT now());
            """),
    ]

    public static var latestVersion: Int { migrations.map(\.version).max() ?? 0 }

    /// Any number to identify our advisory lock; replicas running `migrate` at
    /// once queue up on it instead of racing.
    static let advisoryLockKey: Int64 = 0x7073_6575_646f  // "pseudo"

    /// Applies pending migrations; returns the versions applied. Safe to run
    /// from several processes at once.
    @discardableResult
    public static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> [Int] {
        try await connection.execute("SELECT pg_advisory_lock($1)", [.int(advisoryLockKey)])
        do {
            try await connection.executeScript("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let applied = Set(try await connection.query("SELECT version FROM schema_migrations").map { try $0.int("version") })
            var done: [Int] = []
            for migration in migrations.sorted(by: { $0.version < $1.version }) where !applied.contains(migration.version) {
                try await connection.transaction { connection in
                    try connection.executeScript(migration.sql)
                    try connection.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                           [.int(migration.version), .text(migration.name)])
                }
                logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                done.append(migration.version)
            }
            try await connection.execute("SELECT pg_advisory_unlock($1)", [.int(advisoryLockKey)])
            return done
        } catch {
            _ = try? await connection.execute("SELECT pg_advisory_unlock($1)", [.int(advisoryLockKey)])
            throw error
        }
    }

    /// The highest applied migration, or 0 on an empty database.
    public static func currentVersion(_ connection: PostgresConnection) async throws -> Int {
        let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        guard try exists.first?.bool("present") == true else { return 0 }
        return try await connection.query("SELECT coalesce(max(version), 0) AS version FROM schema_migrations").first?.int("version") ?? 0
    }
}
