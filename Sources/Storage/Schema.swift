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
            -- No foreign key to data_keys and no secondary index: per-row checks
            -- and a second random-order index more than doubled the insert cost.
            -- Ingest commits every data key before its first use, and
            -- `vault keys status` counts entries whose data key is missing.
            CREATE TABLE vault_entries (
                token text PRIMARY KEY,
                field text NOT NULL CHECK (field IN ('ip', 'device_id')),
                token_key_version integer NOT NULL,
                data_key_id uuid NOT NULL,
                nonce bytea NOT NULL,
                ciphertext bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());

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
        Migration(version: 2, name: "erasure tombstones, hash-chained audit log, lookup indexes, role separation", sql: """
            -- `vault forget` erases in place: the row stays as a tombstone (when, by
            -- whom), so a later message with the same value cannot quietly re-create it.
            ALTER TABLE vault_entries
                ALTER COLUMN nonce DROP NOT NULL,
                ALTER COLUMN ciphertext DROP NOT NULL,
                ADD COLUMN erased_at timestamptz,
                ADD COLUMN erased_by text,
                ADD COLUMN erasure_audit_seq bigint,
                ADD CONSTRAINT vault_entries_sealed_or_erased CHECK (
                    (erased_at IS NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
                    OR (erased_at IS NOT NULL AND nonce IS NULL AND ciphertext IS NULL));

            -- Lookups and retokenization find rows by token.
            CREATE INDEX IF NOT EXISTS user_logins_masked_ip_idx ON user_logins (masked_ip);
            CREATE INDEX IF NOT EXISTS user_logins_masked_device_id_idx ON user_logins (masked_device_id);

            -- Append-only, hash-chained: hash = SHA-256(prev_hash ‖ canonical row).
            CREATE TABLE audit_log (
                seq bigint PRIMARY KEY CHECK (seq > 0),
                at timestamptz NOT NULL,
                os_user text NOT NULL,
                db_role text NOT NULL,
                action text NOT NULL,
                subject text NOT NULL,
                reason text NOT NULL,
                outcome text NOT NULL,
                prev_hash bytea NOT NULL,
                hash bytea NOT NULL);
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
            END $$;
            CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
                FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
            CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
                FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

            -- Separation of duties. Login roles are made members of these, e.g.
            -- CREATE ROLE ingest_app LOGIN PASSWORD '…' IN ROLE pseudonymizer_ingest;
            -- Roles are cluster-wide: another database's migration may create them
            -- at the same moment, hence the exception handler.
            DO $$
            DECLARE name text;
            BEGIN
                FOREACH name IN ARRAY ARRAY['pseudonymizer_ingest', 'pseudonymizer_vault', 'pseudonymizer_analyst'] LOOP
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) THEN
                        BEGIN
                            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
                        EXCEPTION WHEN duplicate_object OR unique_violation THEN
                            NULL;
                        END;
                    END IF;
                END LOOP;
            END $$;
            GRANT USAGE ON SCHEMA public TO pseudonymizer_ingest, pseudonymizer_vault, pseudonymizer_analyst;
            GRANT SELECT ON schema_migrations TO pseudonymizer_ingest, pseudonymizer_vault;

            -- ingest: writes everything, reads nothing sealed. The token column (a
            -- pseudonym, also in user_logins) is readable because ON CONFLICT needs it.
            GRANT INSERT ON user_logins, app_versions, vault_entries, ingest_receipts, quarantine, data_keys
                TO pseudonymizer_ingest;
            GRANT SELECT (code) ON app_versions TO pseudonymizer_ingest;
            GRANT SELECT (token) ON vault_entries TO pseudonymizer_ingest;
            GRANT SELECT (receipt_id) ON ingest_receipts TO pseudonymizer_ingest;
            GRANT SELECT (id, retired_at), UPDATE (retired_at) ON data_keys TO pseudonymizer_ingest;

            -- vault: reads the vault, erases entries, appends to the audit log.
            GRANT SELECT ON user_logins, app_versions, vault_entries, data_keys, quarantine, audit_log TO pseudonymizer_vault;
            GRANT UPDATE (nonce, ciphertext, erased_at, erased_by, erasure_audit_seq) ON vault_entries TO pseudonymizer_vault;
            GRANT INSERT ON audit_log TO pseudonymizer_vault;

            -- analysts: the pseudonymized data only.
            GRANT SELECT ON user_logins, app_versions TO pseudonymizer_analyst;
            """),
        Migration(version: 3, name: "key rotation: key version registry, token lineage, rotation indexes and grants", sql: """
            -- Which key versions exist and their state, as `vault keys` last set them.
            -- `enforced` marks the tokenization version `vault retokenize` migrates
            -- to: from then on ingest refuses to write older tokens (a replica whose
            -- key files are older waits for them instead).
            CREATE TABLE key_versions (
                kind text NOT NULL CHECK (kind IN ('tokenization', 'recovery')),
                version integer NOT NULL CHECK (version > 0),
                state text NOT NULL CHECK (state IN ('active', 'decrypt-only', 'retired')),
                enforced boolean NOT NULL DEFAULT false,
                created_at timestamptz NOT NULL DEFAULT now(),
                retired_at timestamptz,
                PRIMARY KEY (kind, version));

            -- Old token → new token, so analysts can follow a token across a rotation.
            CREATE TABLE token_lineage (
                old_token text PRIMARY KEY,
                new_token text NOT NULL,
                field text NOT NULL CHECK (field IN ('ip', 'device_id')),
                old_version integer NOT NULL,
                new_version integer NOT NULL,
                migrated_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX token_lineage_new_token_idx ON token_lineage (new_token);

            CREATE INDEX data_keys_recovery_key_version_idx ON data_keys (recovery_key_version);

            GRANT SELECT ON key_versions TO pseudonymizer_ingest;
            GRANT SELECT, INSERT, UPDATE ON key_versions TO pseudonymizer_vault;
            -- Rotation jobs: retokenize moves entries and rewrites rows; rewrap re-wraps data keys.
            GRANT INSERT, DELETE ON vault_entries TO pseudonymizer_vault;
            GRANT UPDATE (masked_ip, masked_device_id) ON user_logins TO pseudonymizer_vault;
            GRANT INSERT, UPDATE (wrapped_key, recovery_key_version, retired_at) ON data_keys TO pseudonymizer_vault;
            GRANT SELECT, INSERT ON token_lineage TO pseudonymizer_vault;
            GRANT SELECT ON token_lineage TO pseudonymizer_analyst;
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
