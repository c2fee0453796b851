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
        Migration(
            version: 1, name: "pseudonymized logins, vault, data keys, receipts, quarantine",
            sql: """
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
        Migration(
            version: 2, name: "erasure tombstones, hash-chained audit log, lookup indexes, role separation",
            sql: """
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
        Migration(
            version: 3, name: "key rotation: key version registry, token lineage, rotation indexes and grants",
            sql: """
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
        Migration(
            version: 4,
            name: "trust against operators: key fingerprints, authenticated audit rows, audited reveal functions, rotation role",
            sql: """
                -- A key file writer must not be able to swap a key version unnoticed:
                -- every version is registered with a fingerprint (FORMATS.md), set
                -- once and never updated (only register_key writes it).
                ALTER TABLE key_versions ADD COLUMN fingerprint bytea CHECK (octet_length(fingerprint) = 32);

                -- Audit rows carry an HMAC under a key the database never holds
                -- (audit-key.json): database rights alone cannot rewrite the log.
                ALTER TABLE audit_log ADD COLUMN mac_key_version integer, ADD COLUMN mac bytea;

                -- The row hash, exactly as FORMATS.md specifies it and the tools compute it
                -- (UTF-8 database). Plain SQL with no SET clause, so the planner inlines
                -- it: called per row, as a function it cost 70 µs a row.
                CREATE FUNCTION audit_row_hash(prev bytea, seq bigint, at text, os_user text, db_role text, action text,
                                               subject text, reason text, outcome text) RETURNS bytea
                    LANGUAGE sql STABLE PARALLEL SAFE AS $$
                    SELECT sha256(convert_to('pseudonymizer.audit.v1', 'UTF8') || prev || int8send(seq)
                                  || int4send(octet_length(convert_to(at, 'UTF8'))) || convert_to(at, 'UTF8')
                                  || int4send(octet_length(convert_to(os_user, 'UTF8'))) || convert_to(os_user, 'UTF8')
                                  || int4send(octet_length(convert_to(db_role, 'UTF8'))) || convert_to(db_role, 'UTF8')
                                  || int4send(octet_length(convert_to(action, 'UTF8'))) || convert_to(action, 'UTF8')
                                  || int4send(octet_length(convert_to(subject, 'UTF8'))) || convert_to(subject, 'UTF8')
                                  || int4send(octet_length(convert_to(reason, 'UTF8'))) || convert_to(reason, 'UTF8')
                                  || int4send(octet_length(convert_to(outcome, 'UTF8'))) || convert_to(outcome, 'UTF8'))
                $$;

                -- The chain's head, the server's time and the session's role, under
                -- the chain lock (held until the transaction ends): what a client
                -- needs to compute the MACs of the rows it is about to append.
                CREATE FUNCTION audit_head(OUT head_seq bigint, OUT head_hash bytea, OUT at text, OUT db_role text)
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                BEGIN
                    PERFORM pg_advisory_xact_lock(\(auditChainLock));
                    SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
                    head_seq := coalesce(head_seq, 0);
                    head_hash := coalesce(head_hash, decode(repeat('00', 32), 'hex'));
                    at := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
                    db_role := session_user;
                END $$;

                -- Appends rows after the head. The time and role are the server's
                -- (now(), session_user); each row's hash is recomputed here and must
                -- equal the client's, so the MAC the client computed covers exactly
                -- what is stored. Not callable by the roles: only through the
                -- functions below.
                CREATE FUNCTION audit_insert(p_os_user text, p_mac_key_version integer, p_actions text[], p_subjects text[],
                                             p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[]) RETURNS bigint
                    LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
                DECLARE
                    head record;
                    n_rows integer := coalesce(cardinality(p_actions), 0);
                    bad bigint;
                BEGIN
                    IF n_rows = 0 OR coalesce(cardinality(p_subjects), 0) <> n_rows OR coalesce(cardinality(p_reasons), 0) <> n_rows
                       OR coalesce(cardinality(p_outcomes), 0) <> n_rows OR coalesce(cardinality(p_hashes), 0) <> n_rows
                       OR coalesce(cardinality(p_macs), 0) <> n_rows OR p_os_user IS NULL OR p_mac_key_version IS NULL THEN
                        RAISE EXCEPTION 'audit rows are incomplete' USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    SELECT * INTO head FROM audit_head();
                    -- Each row must hash, from the hash before it, to what the client sent
                    -- (so, link by link, the whole chain is the server's), and carry a MAC.
                    SELECT min(c.i) INTO bad FROM (
                        SELECT r.i, r.hash, octet_length(r.mac) AS mac_length,
                               audit_row_hash(coalesce(lag(r.hash) OVER (ORDER BY r.i), head.head_hash), head.head_seq + r.i, head.at,
                                              p_os_user, head.db_role, r.action, r.subject, r.reason, r.outcome) AS expected
                        FROM unnest(p_actions, p_subjects, p_reasons, p_outcomes, p_hashes, p_macs)
                             WITH ORDINALITY AS r(action, subject, reason, outcome, hash, mac, i)) c
                    WHERE c.expected IS DISTINCT FROM c.hash OR c.mac_length IS DISTINCT FROM 32;
                    IF bad IS NOT NULL THEN
                        RAISE EXCEPTION 'audit row % does not hash as the server computes it (at %, role %), or has no MAC', bad, head.at, head.db_role
                            USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    INSERT INTO audit_log (seq, at, os_user, db_role, action, subject, reason, outcome, prev_hash, hash, mac_key_version, mac)
                    SELECT head.head_seq + r.i, now(), p_os_user, head.db_role, r.action, r.subject, r.reason, r.outcome,
                           coalesce(lag(r.hash) OVER (ORDER BY r.i), head.head_hash), r.hash, p_mac_key_version, r.mac
                    FROM unnest(p_actions, p_subjects, p_reasons, p_outcomes, p_hashes, p_macs)
                         WITH ORDINALITY AS r(action, subject, reason, outcome, hash, mac, i);
                    RETURN head.head_seq + 1;
                END $$;

                CREATE FUNCTION audit_append(p_os_user text, p_mac_key_version integer, p_actions text[], p_subjects text[],
                                             p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[]) RETURNS bigint
                    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                    SELECT audit_insert(p_os_user, p_mac_key_version, p_actions, p_subjects, p_reasons, p_outcomes, p_hashes, p_macs)
                $$;

                -- The only way a compliance login gets sealed values: one audit row
                -- per token is appended in the same transaction, its outcome checked
                -- against the vault ('revealed', 'unknown', 'erased', or
                -- 'malformed-token' for input that is not a token), and the sealed
                -- value and its wrapped data key are returned for 'revealed' rows only.
                -- (No row locks: an entry erased between the check and the return is
                -- simply not returned, and its row says more was revealed than was.)
                CREATE FUNCTION vault_reveal(p_os_user text, p_mac_key_version integer, p_action text, p_subjects text[],
                                             p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[])
                    RETURNS TABLE (token text, field text, token_key_version integer, data_key_id text, nonce bytea, ciphertext bytea,
                                   recovery_key_version integer, wrapped_key bytea)
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                BEGIN
                    IF p_action IS NULL OR p_action NOT IN ('recover', 'lookup') THEN
                        RAISE EXCEPTION 'vault_reveal is for recover and lookup only' USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    PERFORM 1
                    FROM unnest(p_subjects, p_outcomes) AS r(subject, outcome)
                    LEFT JOIN (SELECT v.token, v.erased_at FROM vault_entries v WHERE v.token = ANY(p_subjects)) e
                           ON e.token = r.subject
                    WHERE r.outcome IS DISTINCT FROM 'malformed-token'
                      AND r.outcome IS DISTINCT FROM CASE WHEN e.token IS NULL THEN 'unknown'
                                                          WHEN e.erased_at IS NOT NULL THEN 'erased' ELSE 'revealed' END;
                    IF FOUND THEN
                        RAISE EXCEPTION 'the vault changed while the audit rows were prepared; retry' USING ERRCODE = 'serialization_failure';
                    END IF;
                    PERFORM audit_insert(p_os_user, p_mac_key_version, array_fill(p_action, ARRAY[cardinality(p_subjects)]), p_subjects,
                                         p_reasons, p_outcomes, p_hashes, p_macs);
                    RETURN QUERY
                        SELECT DISTINCT v.token, v.field, v.token_key_version, v.data_key_id::text, v.nonce, v.ciphertext,
                               d.recovery_key_version, d.wrapped_key
                        FROM unnest(p_subjects, p_outcomes) AS r(subject, outcome)
                        JOIN vault_entries v ON v.token = r.subject
                        LEFT JOIN data_keys d ON d.id = v.data_key_id
                        WHERE r.outcome = 'revealed';
                END $$;

                -- Crypto-shredding with its audit rows, in one transaction: one row per
                -- token, its outcome ('erased', 'already-erased', 'unknown') checked
                -- against the vault under row locks; returns the first row's sequence.
                CREATE FUNCTION vault_forget(p_os_user text, p_mac_key_version integer, p_tokens text[], p_reasons text[],
                                             p_outcomes text[], p_hashes bytea[], p_macs bytea[]) RETURNS bigint
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                DECLARE
                    first bigint;
                BEGIN
                    PERFORM 1
                    FROM unnest(p_tokens, p_outcomes) AS r(token, outcome)
                    LEFT JOIN (SELECT v.token, v.erased_at FROM vault_entries v WHERE v.token = ANY(p_tokens) FOR UPDATE) e
                           ON e.token = r.token
                    WHERE r.outcome IS DISTINCT FROM CASE WHEN e.token IS NULL THEN 'unknown'
                                                          WHEN e.erased_at IS NOT NULL THEN 'already-erased' ELSE 'erased' END;
                    IF FOUND THEN
                        RAISE EXCEPTION 'the vault changed while the audit rows were prepared; retry' USING ERRCODE = 'serialization_failure';
                    END IF;
                    first := audit_insert(p_os_user, p_mac_key_version, array_fill('forget'::text, ARRAY[cardinality(p_tokens)]), p_tokens,
                                          p_reasons, p_outcomes, p_hashes, p_macs);
                    UPDATE vault_entries v SET nonce = NULL, ciphertext = NULL, erased_at = now(),
                                               erased_by = p_os_user || ' as ' || session_user, erasure_audit_seq = first + r.i - 1
                    FROM unnest(p_tokens, p_outcomes) WITH ORDINALITY AS r(token, outcome, i)
                    WHERE v.token = r.token AND r.outcome = 'erased';
                    RETURN first;
                END $$;

                -- Records a key version's fingerprint once; a different one for the
                -- same version is refused (SQLSTATE PSK01).
                CREATE FUNCTION register_key(p_kind text, p_version integer, p_state text, p_fingerprint bytea) RETURNS text
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                DECLARE
                    existing bytea;
                BEGIN
                    SELECT k.fingerprint INTO existing FROM key_versions k WHERE k.kind = p_kind AND k.version = p_version FOR UPDATE;
                    IF NOT FOUND THEN
                        INSERT INTO key_versions (kind, version, state, fingerprint) VALUES (p_kind, p_version, p_state, p_fingerprint);
                        RETURN 'registered';
                    ELSIF existing IS NULL THEN
                        UPDATE key_versions SET fingerprint = p_fingerprint WHERE kind = p_kind AND version = p_version;
                        RETURN 'registered';
                    ELSIF existing = p_fingerprint THEN
                        RETURN 'unchanged';
                    END IF;
                    RAISE EXCEPTION '% key v% is registered with another fingerprint', p_kind, p_version USING ERRCODE = 'PSK01';
                END $$;

                REVOKE ALL ON FUNCTION audit_insert(text, integer, text[], text[], text[], text[], bytea[], bytea[]),
                    audit_head(), audit_append(text, integer, text[], text[], text[], text[], bytea[], bytea[]),
                    vault_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[]),
                    vault_forget(text, integer, text[], text[], text[], bytea[], bytea[]),
                    register_key(text, integer, text, bytea) FROM PUBLIC;

                -- Roles. Compliance logins (pseudonymizer_vault) reveal only through
                -- vault_reveal; rotation jobs get a role of their own with the bulk
                -- access they need; nobody appends to the audit log but through the
                -- functions.
                DO $$
                BEGIN
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pseudonymizer_rotation') THEN
                        BEGIN
                            CREATE ROLE pseudonymizer_rotation NOLOGIN;
                        EXCEPTION WHEN duplicate_object OR unique_violation THEN
                            NULL;
                        END;
                    END IF;
                END $$;
                GRANT USAGE ON SCHEMA public TO pseudonymizer_rotation;
                GRANT SELECT ON schema_migrations TO pseudonymizer_rotation;

                REVOKE ALL ON vault_entries, data_keys, quarantine, audit_log, key_versions, token_lineage, user_logins, app_versions
                    FROM pseudonymizer_vault;
                GRANT SELECT (token, field, token_key_version, data_key_id, created_at, erased_at, erased_by, erasure_audit_seq)
                    ON vault_entries TO pseudonymizer_vault;
                GRANT SELECT (id, recovery_key_version, created_at, created_by, retired_at) ON data_keys TO pseudonymizer_vault;
                GRANT SELECT (receipt_id, source, message_id, reason, field, detail, body_bytes, data_key_id, quarantined_at)
                    ON quarantine TO pseudonymizer_vault;
                GRANT SELECT ON audit_log, key_versions, token_lineage, user_logins, app_versions TO pseudonymizer_vault;
                GRANT EXECUTE ON FUNCTION audit_head(),
                    audit_append(text, integer, text[], text[], text[], text[], bytea[], bytea[]),
                    vault_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[]),
                    vault_forget(text, integer, text[], text[], text[], bytea[], bytea[]) TO pseudonymizer_vault;

                GRANT SELECT ON user_logins, app_versions, vault_entries, data_keys, quarantine, audit_log, key_versions, token_lineage
                    TO pseudonymizer_rotation;
                GRANT INSERT, DELETE ON vault_entries TO pseudonymizer_rotation;
                GRANT UPDATE (masked_ip, masked_device_id) ON user_logins TO pseudonymizer_rotation;
                GRANT INSERT, UPDATE (wrapped_key, recovery_key_version, retired_at) ON data_keys TO pseudonymizer_rotation;
                GRANT INSERT ON token_lineage TO pseudonymizer_rotation;
                GRANT INSERT (kind, version, state, enforced), UPDATE (state, enforced, retired_at) ON key_versions TO pseudonymizer_rotation;
                GRANT EXECUTE ON FUNCTION audit_head(),
                    audit_append(text, integer, text[], text[], text[], text[], bytea[], bytea[]),
                    register_key(text, integer, text, bytea) TO pseudonymizer_rotation;
                """),
        Migration(
            version: 5, name: "retention by partitions: receipts by sent day, quarantine by day, partition upkeep functions",
            sql: """
                -- The date range of each partition of a table range-partitioned on one
                -- date column (MINVALUE/MAXVALUE as -infinity/infinity).
                CREATE FUNCTION partition_ranges(p_parent regclass) RETURNS TABLE (partition regclass, lower date, upper date)
                    LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
                    SELECT c.oid::regclass,
                           CASE WHEN b.m[1] = 'MINVALUE' THEN '-infinity'::date ELSE trim(both '''' from b.m[1])::date END,
                           CASE WHEN b.m[2] = 'MAXVALUE' THEN 'infinity'::date ELSE trim(both '''' from b.m[2])::date END
                    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
                         LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\((.*)\\) TO \\((.*)\\)') AS m) b
                    WHERE i.inhparent = p_parent
                $$;

                -- Creates the partition [p_from, p_to) unless a partition already
                -- covers part of it. The table is made apart and then attached, which
                -- takes only SHARE UPDATE EXCLUSIVE on the parent (CREATE TABLE …
                -- PARTITION OF would take ACCESS EXCLUSIVE and stop every writer);
                -- two sessions creating the same partition queue on that lock, and the
                -- second finds it made. Returns whether it created one.
                CREATE FUNCTION partition_ensure(p_parent regclass, p_from date, p_to date, p_name text) RETURNS boolean
                    LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
                BEGIN
                    IF EXISTS (SELECT FROM partition_ranges(p_parent) r WHERE r.lower < p_to AND r.upper > p_from) THEN
                        RETURN false;
                    END IF;
                    EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', p_parent);
                    IF EXISTS (SELECT FROM partition_ranges(p_parent) r WHERE r.lower < p_to AND r.upper > p_from) THEN
                        RETURN false;
                    END IF;
                    EXECUTE format('CREATE TABLE public.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', p_name, p_parent);
                    EXECUTE format('ALTER TABLE %s ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)', p_parent, p_name, p_from, p_to);
                    IF p_parent = 'user_logins'::regclass THEN
                        -- Retokenize rewrites rows partition by partition.
                        EXECUTE format('GRANT SELECT, UPDATE (masked_ip, masked_device_id) ON public.%I TO pseudonymizer_rotation', p_name);
                    END IF;
                    RETURN true;
                END $$;

                -- The partitions a batch needs, for the sent days of its messages:
                -- receipts by day, quarantine for today, logins by month when
                -- user_logins is partitioned. Made here on demand, so ingest never
                -- depends on `ingest maintain` having run. ROW EXCLUSIVE is what the
                -- batch's COPY takes anyway; held from here to commit, it keeps
                -- `ingest maintain` from dropping a partition the batch writes to.
                CREATE FUNCTION ingest_prepare_partitions(p_days date[]) RETURNS void
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                DECLARE
                    day date;
                    month date;
                    today date := (now() AT TIME ZONE 'UTC')::date;
                BEGIN
                    IF coalesce(cardinality(p_days), 0) > 62 THEN
                        RAISE EXCEPTION 'a batch spans more than 62 sent days' USING ERRCODE = 'program_limit_exceeded';
                    END IF;
                    LOCK TABLE ingest_receipts, quarantine, user_logins IN ROW EXCLUSIVE MODE;
                    FOREACH day IN ARRAY coalesce(p_days, '{}') LOOP
                        PERFORM partition_ensure('ingest_receipts', day, day + 1, 'ingest_receipts_d' || to_char(day, 'YYYYMMDD'));
                    END LOOP;
                    PERFORM partition_ensure('quarantine', today, today + 1, 'quarantine_d' || to_char(today, 'YYYYMMDD'));
                    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = 'user_logins'::regclass) = 'p' THEN
                        FOREACH day IN ARRAY coalesce(p_days, '{}') LOOP
                            month := date_trunc('month', day)::date;
                            PERFORM partition_ensure('user_logins', month, (month + interval '1 month')::date,
                                                     'user_logins_m' || to_char(month, 'YYYYMM'));
                        END LOOP;
                    END IF;
                END $$;
                REVOKE ALL ON FUNCTION partition_ensure(regclass, date, date, text), ingest_prepare_partitions(date[]) FROM PUBLIC;
                GRANT EXECUTE ON FUNCTION ingest_prepare_partitions(date[]) TO pseudonymizer_ingest;

                -- Receipts, range-partitioned by the day the message was sent (fixed
                -- for every redelivery of it), so retention is dropping a day. The
                -- existing table becomes the first partition as it is (no copy): its
                -- rows get the placeholder day 1970-01-01, which every receipt lookup
                -- also checks until `ingest maintain` drops it after the retention.
                ALTER TABLE ingest_receipts RENAME TO ingest_receipts_legacy;
                ALTER TABLE ingest_receipts_legacy ADD COLUMN sent_day date NOT NULL DEFAULT '1970-01-01';
                ALTER TABLE ingest_receipts_legacy DROP CONSTRAINT ingest_receipts_pkey;
                ALTER TABLE ingest_receipts_legacy ADD CONSTRAINT ingest_receipts_legacy_pkey PRIMARY KEY (receipt_id, sent_day);
                CREATE TABLE ingest_receipts (
                    receipt_id bytea NOT NULL,
                    sent_day date NOT NULL,
                    processed_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (receipt_id, sent_day)) PARTITION BY RANGE (sent_day);
                ALTER TABLE ingest_receipts ATTACH PARTITION ingest_receipts_legacy FOR VALUES FROM (MINVALUE) TO ('1970-01-02');

                -- Quarantine, range-partitioned by the (UTC) day a message was set
                -- aside. Its rows are few: they are copied into their days.
                ALTER TABLE quarantine RENAME TO quarantine_unpartitioned;
                ALTER TABLE quarantine_unpartitioned RENAME CONSTRAINT quarantine_pkey TO quarantine_unpartitioned_pkey;
                ALTER TABLE quarantine_unpartitioned RENAME CONSTRAINT quarantine_data_key_id_fkey TO quarantine_unpartitioned_data_key_id_fkey;
                CREATE TABLE quarantine (
                    receipt_id bytea NOT NULL,
                    source text NOT NULL,
                    message_id text NOT NULL,
                    reason text NOT NULL,
                    field text,
                    detail text NOT NULL,
                    body_bytes integer NOT NULL,
                    data_key_id uuid NOT NULL REFERENCES data_keys(id),
                    nonce bytea NOT NULL,
                    sealed_body bytea NOT NULL,
                    quarantined_at timestamptz NOT NULL DEFAULT now(),
                    -- With the receipt id, names the message (as in ingest_receipts).
                    sent_day date NOT NULL,
                    quarantined_on date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
                    PRIMARY KEY (receipt_id, sent_day, quarantined_on)) PARTITION BY RANGE (quarantined_on);
                SELECT partition_ensure('quarantine', d, d + 1, 'quarantine_d' || to_char(d, 'YYYYMMDD'))
                FROM (SELECT DISTINCT (quarantined_at AT TIME ZONE 'UTC')::date AS d FROM quarantine_unpartitioned) days;
                INSERT INTO quarantine SELECT *, '1970-01-01', (quarantined_at AT TIME ZONE 'UTC')::date FROM quarantine_unpartitioned;
                DROP TABLE quarantine_unpartitioned;

                GRANT INSERT ON ingest_receipts, quarantine TO pseudonymizer_ingest;
                GRANT SELECT (receipt_id, sent_day) ON ingest_receipts TO pseudonymizer_ingest;
                GRANT SELECT (receipt_id, source, message_id, reason, field, detail, body_bytes, data_key_id, quarantined_at, sent_day,
                                quarantined_on)
                    ON quarantine TO pseudonymizer_vault;
                GRANT SELECT ON quarantine TO pseudonymizer_rotation;
                """),
        migration6,
        migration7,
    ]

    /// Serializes audit appenders across processes so the chain never forks
    /// (taken by `audit_head()`).
    static let auditChainLock: Int64 = 0x6175_6469_74  // "audit"

    public static var latestVersion: Int { migrations.map(\.version).max() ?? 0 }

    /// Any number to identify our advisory lock; replicas running `migrate` at
    /// once queue up on it instead of racing.
    static let advisoryLockKey: Int64 = 0x7073_6575_646f  // "pseudo"

    /// Applies pending migrations (up to `through`, for tests of a conversion);
    /// returns the versions applied. Safe to run from several processes at once.
    @discardableResult
    public static func migrate(_ connection: PostgresConnection, through: Int? = nil, logger: Logger) async throws -> [Int] {
        try await connection.execute("SELECT pg_advisory_lock($1)", [.int(advisoryLockKey)])
        do {
            try await connection.executeScript(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let applied = Set(try await connection.query("SELECT version FROM schema_migrations").map { try $0.int("version") })
            let distributed = try await Distribution.isDistributed(on: connection)
            var done: [Int] = []
            for migration in migrations.sorted(by: { $0.version < $1.version })
            where !applied.contains(migration.version) && migration.version <= through ?? Int.max {
                try await connection.transaction { connection in
                    if distributed {
                        // On a Citus cluster: triggers on the sharded tables (see
                        // Distribution), and DDL over one connection per node, as
                        // Citus requires once a table refers to a reference table.
                        try connection.execute("SET LOCAL citus.enable_unsafe_triggers = on")
                        try connection.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
                    }
                    for statement in SQLScript.statements(migration.sql) { try connection.executeScript(statement) }
                    try connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        [.int(migration.version), .text(migration.name)])
                }
                logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                done.append(migration.version)
            }
            // Tables a migration added follow the distribution.
            if distributed && !done.isEmpty {
                _ = try await Distribution.distribute(shardCount: nil, report: .init(), on: connection)
            }
            try await connection.execute("SELECT pg_advisory_unlock($1)", [.int(advisoryLockKey)])
            return done
        } catch {
            _ = try? await connection.execute("SELECT pg_advisory_unlock($1)", [.int(advisoryLockKey)])
            throw error
        }
    }

    /// The migrations `migrate` would apply now, in order.
    public static func pending(_ connection: PostgresConnection) async throws -> [Migration] {
        let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        let applied =
            try exists.first?.bool("present") == true
            ? Set(try await connection.query("SELECT version FROM schema_migrations").map { try $0.int("version") }) : []
        return migrations.filter { !applied.contains($0.version) }.sorted { $0.version < $1.version }
    }

    /// The highest applied migration, or 0 on an empty database.
    public static func currentVersion(_ connection: PostgresConnection) async throws -> Int {
        let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        guard try exists.first?.bool("present") == true else { return 0 }
        return try await connection.query("SELECT coalesce(max(version), 0) AS version FROM schema_migrations").first?.int("version") ?? 0
    }
}
