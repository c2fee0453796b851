extension Schema {
    /// Serializes `vault_forget` (exclusive) against ingest batches (shared),
    /// so a batch either commits before an erasure or sees its suppression.
    static let suppressionLock: Int64 = 0x7375_7070_7265_7373  // "suppress"

    /// Every change to what the tools trust goes through a checked function:
    /// ingest inserts sealed entries only (never an erasure, never under a
    /// version that is not registered or older than the one enforced); the
    /// rotation role moves, drops, rewrites, rewraps and changes key versions
    /// only through functions bound to an audited run; an erased value is
    /// suppressed for good; partitions exist only for days in the window;
    /// audit rows are stamped with a time that never goes backwards.
    static let migration6 = Migration(
        version: 6, name: "the database enforces every vault state change: checked writes, audited runs, suppressions, bounded partitions",
        sql: """
            -- Audit times go forward only: a transaction that waited for the chain
            -- lock started before the row it follows, so the row takes the later of
            -- the two (the same value every call in the transaction returns).
            CREATE OR REPLACE FUNCTION audit_head(OUT head_seq bigint, OUT head_hash bytea, OUT at text, OUT db_role text)
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                previous timestamptz;
            BEGIN
                PERFORM pg_advisory_xact_lock(\(auditChainLock));
                SELECT a.seq, a.hash, a.at INTO head_seq, head_hash, previous FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
                head_seq := coalesce(head_seq, 0);
                head_hash := coalesce(head_hash, decode(repeat('00', 32), 'hex'));
                at := to_char(greatest(now(), previous) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
                db_role := session_user;
            END $$;

            CREATE OR REPLACE FUNCTION audit_insert(p_os_user text, p_mac_key_version integer, p_actions text[], p_subjects text[],
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
                SELECT head.head_seq + r.i, head.at::timestamptz, p_os_user, head.db_role, r.action, r.subject, r.reason, r.outcome,
                       coalesce(lag(r.hash) OVER (ORDER BY r.i), head.head_hash), r.hash, p_mac_key_version, r.mac
                FROM unnest(p_actions, p_subjects, p_reasons, p_outcomes, p_hashes, p_macs)
                     WITH ORDINALITY AS r(action, subject, reason, outcome, hash, mac, i);
                RETURN head.head_seq + 1;
            END $$;

            -- The rows that say a token's value was erased: by `vault forget`, or
            -- carried to a new token by `vault retokenize` (one row per token).
            -- Tools authenticate them (MAC) before they believe a tombstone.
            CREATE INDEX audit_log_erasures_idx ON audit_log (subject)
                WHERE action IN ('forget', 'forget.carry') AND outcome = 'erased';

            -- Key versions move only forward, through these functions.
            -- A run: one audited row that key-job functions are bound to. Single
            -- transaction jobs (keys.*) use it in the transaction that began it;
            -- long jobs (retokenize, rewrap) until they end it.
            CREATE TABLE rotation_runs (
                seq bigint PRIMARY KEY,
                action text NOT NULL,
                db_role text NOT NULL,
                xact xid8 NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                ended_at timestamptz);

            CREATE FUNCTION rotation_begin(p_os_user text, p_mac_key_version integer, p_action text, p_subject text, p_reason text,
                                           p_outcome text, p_hash bytea, p_mac bytea) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                run bigint;
            BEGIN
                IF p_action IS NULL OR p_action NOT IN ('keys.register', 'keys.rotate', 'keys.retire', 'retokenize', 'rewrap') THEN
                    RAISE EXCEPTION 'a key job run is one of keys.register, keys.rotate, keys.retire, retokenize, rewrap'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                run := audit_insert(p_os_user, p_mac_key_version, ARRAY[p_action], ARRAY[p_subject], ARRAY[p_reason], ARRAY[p_outcome],
                                    ARRAY[p_hash], ARRAY[p_mac]);
                INSERT INTO rotation_runs (seq, action, db_role, xact) VALUES (run, p_action, session_user, pg_current_xact_id());
                RETURN run;
            END $$;

            CREATE FUNCTION rotation_end(p_run bigint, p_os_user text, p_mac_key_version integer, p_subject text, p_reason text,
                                         p_outcome text, p_hash bytea, p_mac bytea) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                job text;
            BEGIN
                SELECT r.action INTO job FROM rotation_runs r WHERE r.seq = p_run AND r.db_role = session_user FOR UPDATE;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'there is no key job run % of this login', p_run USING ERRCODE = 'PSK03';
                END IF;
                UPDATE rotation_runs SET ended_at = coalesce(ended_at, now()) WHERE seq = p_run;
                RETURN audit_insert(p_os_user, p_mac_key_version, ARRAY[job], ARRAY[p_subject], ARRAY[p_reason], ARRAY[p_outcome],
                                    ARRAY[p_hash], ARRAY[p_mac]);
            END $$;

            -- Refuses unless run p_run is open, of one of p_actions, by this login
            -- (and, for single-transaction jobs, begun in this transaction).
            CREATE FUNCTION rotation_require(p_run bigint, p_actions text[], p_same_transaction boolean) RETURNS void
                LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                PERFORM FROM rotation_runs r
                WHERE r.seq = p_run AND r.action = ANY(p_actions) AND r.db_role = session_user AND r.ended_at IS NULL
                  AND (NOT p_same_transaction OR r.xact = pg_current_xact_id());
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'no open % run % of this login%: key state changes only through an audited run (rotation_begin)',
                        array_to_string(p_actions, ' or '), p_run, CASE WHEN p_same_transaction THEN ' in this transaction' ELSE '' END
                        USING ERRCODE = 'PSK03';
                END IF;
            END $$;

            -- Registers a key version's fingerprint (set once) and state. A new
            -- version must be newer than every registered one of its kind, so a
            -- registry cannot be rolled back; registering one active makes the
            -- others of its kind decrypt-only. A suppression key is never replaced.
            CREATE FUNCTION key_register(p_run bigint, p_kind text, p_version integer, p_state text, p_fingerprint bytea) RETURNS text
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                existing key_versions;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['keys.register', 'keys.rotate'], true);
                IF p_kind NOT IN ('tokenization', 'recovery', 'suppression') OR p_state NOT IN ('active', 'decrypt-only')
                   OR octet_length(p_fingerprint) IS DISTINCT FROM 32 OR p_version IS NULL OR p_version < 1 THEN
                    RAISE EXCEPTION 'not a key version to register' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                LOCK TABLE key_versions IN SHARE ROW EXCLUSIVE MODE;
                SELECT * INTO existing FROM key_versions k WHERE k.kind = p_kind AND k.version = p_version;
                IF FOUND AND existing.fingerprint = p_fingerprint THEN
                    RETURN 'unchanged';
                ELSIF FOUND AND existing.fingerprint IS NOT NULL THEN
                    RAISE EXCEPTION '% key v% is registered with another fingerprint', p_kind, p_version USING ERRCODE = 'PSK01';
                ELSIF FOUND THEN
                    -- Recorded before fingerprints existed (migration 4).
                    UPDATE key_versions SET fingerprint = p_fingerprint WHERE kind = p_kind AND version = p_version;
                    RETURN 'registered';
                END IF;
                IF EXISTS (SELECT FROM key_versions k WHERE k.kind = p_kind AND (k.version > p_version OR p_kind = 'suppression')) THEN
                    RAISE EXCEPTION '% key v% is older than a registered version, or a second suppression key: key versions only move forward',
                        p_kind, p_version USING ERRCODE = 'PSK04';
                END IF;
                IF p_state = 'active' THEN
                    UPDATE key_versions SET state = 'decrypt-only' WHERE kind = p_kind AND state = 'active';
                END IF;
                INSERT INTO key_versions (kind, version, state, fingerprint) VALUES (p_kind, p_version, p_state, p_fingerprint);
                RETURN 'registered';
            END $$;

            -- Retires a version nothing depends on any more.
            CREATE FUNCTION key_retire(p_run bigint, p_kind text, p_version integer) RETURNS void
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                existing key_versions;
                stamp timestamptz := now();
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['keys.retire'], true);
                SELECT * INTO existing FROM key_versions k WHERE k.kind = p_kind AND k.version = p_version FOR UPDATE;
                IF NOT FOUND OR existing.state = 'active' OR p_kind = 'suppression' THEN
                    RAISE EXCEPTION '% key v% is not registered, is the active one, or is a suppression key: it cannot be retired', p_kind, p_version
                        USING ERRCODE = 'PSK04';
                END IF;
                IF p_kind = 'tokenization' AND EXISTS (SELECT 1 FROM vault_entries v WHERE v.token_key_version = p_version) THEN
                    RAISE EXCEPTION 'tokenization key v% still has vault entries; run vault retokenize first', p_version USING ERRCODE = 'PSK04';
                END IF;
                IF p_kind = 'recovery' AND EXISTS (SELECT FROM data_keys d WHERE d.recovery_key_version = p_version) THEN
                    RAISE EXCEPTION 'recovery key v% still wraps data keys; run vault rewrap first', p_version USING ERRCODE = 'PSK04';
                END IF;
                -- (now() as a value: Citus evaluates no function inside COALESCE on its tables.)
                UPDATE key_versions SET state = 'retired', retired_at = coalesce(retired_at, stamp), enforced = false
                WHERE kind = p_kind AND version = p_version;
            END $$;

            -- From now on ingest writes nothing older than the active tokenization version.
            CREATE FUNCTION key_enforce(p_run bigint, p_version integer) RETURNS void
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                PERFORM FROM key_versions k WHERE k.kind = 'tokenization' AND k.version = p_version AND k.state = 'active'
                    AND k.fingerprint IS NOT NULL;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'tokenization key v% is not the active registered version; only that one can be enforced', p_version
                        USING ERRCODE = 'PSK04';
                END IF;
                UPDATE key_versions SET enforced = true WHERE kind = 'tokenization' AND version = p_version;
            END $$;

            -- The version retokenize moves to; refuses when none is enforced.
            CREATE FUNCTION retokenize_target() RETURNS integer
                LANGUAGE plpgsql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
            BEGIN
                SELECT max(k.version) INTO target FROM key_versions k WHERE k.kind = 'tokenization' AND k.enforced;
                IF target IS NULL THEN
                    RAISE EXCEPTION 'no tokenization version is enforced (key_enforce)' USING ERRCODE = 'PSK04';
                END IF;
                RETURN target;
            END $$;

            -- The name a token of p_field under key version p_version starts with.
            -- Immutable all through (int4 → text, not `text || integer`, which is only
            -- stable), so the planner inlines it: called per row, it cost more than
            -- the insert.
            CREATE FUNCTION token_prefix(p_field text, p_version integer) RETURNS text
                LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
                SELECT CASE p_field WHEN 'ip' THEN 'ip_t' ELSE 'dev_t' END || p_version::text || '_'
            $$;

            -- Moves sealed entries to the enforced version and records old → new.
            -- The new entries are named for their field and the target version (the
            -- table's constraint and trigger). A pair is linked when its new entry
            -- was inserted here, or, given no ciphertext, already holds the same
            -- value (the job opened and compared it); and only when the old entry is
            -- live and older, the new one a live entry of the target version for the
            -- same field, and no erasure row names either. Returns the old tokens
            -- whose new token was already in the vault: not linked, for the job to
            -- open and compare first. Set-based: a function call per row tripled its time.
            CREATE FUNCTION retokenize_move(p_run bigint, p_old text[], p_new text[], p_data_key_ids uuid[], p_nonces bytea[],
                                            p_ciphertexts bytea[]) RETURNS text[]
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                inserted text[];
                present text[];
                named text[];
                taken text[];
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                WITH moved AS (
                    INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext)
                    SELECT m.new, CASE WHEN left(m.new, 3) = 'ip_' THEN 'ip' ELSE 'device_id' END, target, m.data_key_id, m.nonce,
                           m.ciphertext
                    FROM unnest(p_new, p_data_key_ids, p_nonces, p_ciphertexts) AS m(new, data_key_id, nonce, ciphertext)
                    WHERE m.ciphertext IS NOT NULL
                    ORDER BY m.new
                    ON CONFLICT (token) DO NOTHING
                    RETURNING token)
                SELECT coalesce(array_agg(token), '{}') INTO inserted FROM moved;
                -- New entries inserted here are live entries of the target version for
                -- the field their name says; entries already there are checked. The old
                -- token must name the same field and an older version, and no erasure
                -- row may name it (an erased value is carried, never moved live).
                -- What the vault and the audit log hold is looked up apart (on Citus
                -- one is on the workers, the other on the coordinator); IN over a
                -- subquery is hashed (a join with the array was a nested loop).
                present := ARRAY(SELECT t.token FROM vault_entries t
                                 WHERE t.token = ANY(ARRAY(SELECT u.new FROM unnest(p_new, p_ciphertexts) AS u(new, ciphertext)
                                                           WHERE u.ciphertext IS NULL))
                                   AND t.erased_at IS NULL AND t.token_key_version = target
                                   AND t.field = CASE WHEN left(t.token, 3) = 'ip_' THEN 'ip' ELSE 'device_id' END);
                named := ARRAY(SELECT a.subject FROM audit_log a WHERE a.subject = ANY(p_old || present)
                               AND a.action IN ('forget', 'forget.carry') AND a.outcome = 'erased');
                INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version)
                SELECT m.old, m.new, m.field, substr(m.old_version, 2)::integer, target
                -- (OFFSET 0: each row's parts computed once, not once per use.)
                FROM (SELECT u.old, u.new, u.ciphertext, CASE WHEN left(u.new, 3) = 'ip_' THEN 'ip' ELSE 'device_id' END AS field,
                             split_part(u.old, '_', 1) AS old_tag, split_part(u.old, '_', 2) AS old_version
                      FROM unnest(p_old, p_new, p_ciphertexts) AS u(old, new, ciphertext) OFFSET 0) m
                WHERE m.old_tag = CASE m.field WHEN 'ip' THEN 'ip' ELSE 'dev' END
                  AND (CASE WHEN m.old_version ~ '^t[0-9]{1,9}$' THEN substr(m.old_version, 2)::integer END) < target
                  AND (m.new IN (SELECT unnest(inserted))
                       OR (m.ciphertext IS NULL AND m.new IN (SELECT unnest(present)) AND m.new NOT IN (SELECT unnest(named))))
                  AND m.old NOT IN (SELECT unnest(named))
                ORDER BY m.old
                ON CONFLICT (old_token) DO NOTHING;
                SELECT coalesce(array_agg(m.old), '{}') INTO taken
                FROM unnest(p_old, p_new, p_ciphertexts) AS m(old, new, ciphertext)
                WHERE m.ciphertext IS NOT NULL AND m.new NOT IN (SELECT unnest(inserted));
                RETURN taken;
            END $$;

            -- Replaces a live target-version entry the job has proven false (it
            -- does not open, or its value does not produce its token) with the
            -- moved value, and links it. One audit row per replaced entry.
            CREATE FUNCTION retokenize_replace(p_run bigint, p_old text, p_data_key_id uuid, p_nonce bytea, p_ciphertext bytea,
                                               p_os_user text, p_mac_key_version integer, p_new text, p_reason text, p_outcome text,
                                               p_hash bytea, p_mac bytea) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                source vault_entries;
                source_live boolean;
                erased boolean;
                target_live boolean;
                seq bigint;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                SELECT * INTO source FROM vault_entries o
                WHERE o.token = p_old AND o.erased_at IS NULL AND o.token_key_version < target;
                source_live := FOUND;
                -- One table a statement (on Citus the log is on the coordinator,
                -- the vault on the workers).
                erased := EXISTS (SELECT 1 FROM audit_log a WHERE a.subject = p_old AND a.action IN ('forget', 'forget.carry')
                                  AND a.outcome = 'erased');
                target_live := EXISTS (SELECT 1 FROM vault_entries t WHERE t.token = p_new AND t.erased_at IS NULL
                                       AND t.token_key_version = target AND t.field = source.field);
                IF NOT source_live OR erased OR p_ciphertext IS NULL OR NOT target_live THEN
                    RAISE EXCEPTION 'retokenize_replace: % is not a live old entry, or % is not a live entry of the target version', p_old, p_new
                        USING ERRCODE = 'PSK04';
                END IF;
                seq := audit_insert(p_os_user, p_mac_key_version, ARRAY['retokenize.replace'], ARRAY[p_new], ARRAY[p_reason],
                                    ARRAY[p_outcome], ARRAY[p_hash], ARRAY[p_mac]);
                DELETE FROM vault_entries WHERE token = p_new;
                INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext)
                VALUES (p_new, source.field, target, p_data_key_id, p_nonce, p_ciphertext);
                INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version)
                VALUES (p_old, p_new, source.field, source.token_key_version, target) ON CONFLICT (old_token) DO NOTHING;
                RETURN seq;
            END $$;

            -- Carries erasures to tokens of the target version, one audited row
            -- ('forget.carry', subject the new token) per tombstone: only an erased
            -- entry whose erasure row exists for its own token is carried.
            CREATE FUNCTION retokenize_carry_erasures(p_run bigint, p_old text[], p_os_user text, p_mac_key_version integer, p_new text[],
                                                      p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[]) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                named text[];
                pairs bigint := coalesce(cardinality(p_old), 0);
                proven bigint;
                stamp timestamptz := now();
                first bigint;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                -- Each lookup a statement of its own: on Citus the vault is on the
                -- workers, the audit log on the coordinator.
                named := ARRAY(SELECT a.subject FROM audit_log a WHERE a.subject = ANY(p_old) AND a.action IN ('forget', 'forget.carry')
                               AND a.outcome = 'erased');
                SELECT count(*) INTO proven FROM vault_entries o JOIN unnest(p_old, p_new) AS m(old, new) ON o.token = m.old
                WHERE o.token_key_version < target AND m.old = ANY(named)
                  AND left(m.new, length(token_prefix(o.field, target))) = token_prefix(o.field, target);
                IF pairs <> coalesce(cardinality(p_new), 0) OR proven <> pairs
                   OR (SELECT count(DISTINCT u.old) FROM unnest(p_old) AS u(old)) <> pairs THEN
                    RAISE EXCEPTION 'only erased entries with an erasure row are carried, to tokens of the target version'
                        USING ERRCODE = 'PSK04';
                END IF;
                first := audit_insert(p_os_user, p_mac_key_version, array_fill('forget.carry'::text, ARRAY[cardinality(p_new)]), p_new,
                                      p_reasons, p_outcomes, p_hashes, p_macs);
                INSERT INTO vault_entries (token, field, token_key_version, data_key_id, erased_at, erased_by, erasure_audit_seq)
                -- (A live row here is a ciphertext written back after its erasure: carried erased.)
                SELECT m.new, o.field, target, o.data_key_id, coalesce(o.erased_at, stamp),
                       coalesce(o.erased_by, 'vault retokenize: ciphertext restored after its erasure'), first + m.i - 1
                FROM unnest(p_old, p_new) WITH ORDINALITY AS m(old, new, i) JOIN vault_entries o ON o.token = m.old
                ON CONFLICT (token) DO NOTHING;
                INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version)
                SELECT m.old, m.new, o.field, o.token_key_version, target
                FROM unnest(p_old, p_new) AS m(old, new) JOIN vault_entries o ON o.token = m.old
                ON CONFLICT (old_token) DO NOTHING;
                RETURN first;
            END $$;

            -- Links tokens that login rows carry but the vault does not hold (a value
            -- `vault forget` suppressed, ingested again under a later key; or a
            -- token written by hand) to a token derived from them under the target
            -- version, so their rows move too. No entry is made: there is no value.
            CREATE FUNCTION retokenize_link_orphans(p_run bigint, p_old text[], p_new text[], p_fields text[]) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                held text[];
                linked bigint;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                held := ARRAY(SELECT v.token FROM vault_entries v WHERE v.token = ANY(p_old || p_new));
                INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version)
                SELECT m.old, m.new, m.field, coalesce(substring(m.old FROM '^[a-z]+_t([0-9]{1,9})_')::integer, 0), target
                FROM unnest(p_old, p_new, p_fields) AS m(old, new, field)
                WHERE m.field IN ('ip', 'device_id') AND left(m.new, length(token_prefix(m.field, target))) = token_prefix(m.field, target)
                  AND length(m.new) = length(token_prefix(m.field, target)) + 43
                  AND NOT m.old = ANY(held) AND NOT m.new = ANY(held)
                ORDER BY m.old
                ON CONFLICT (old_token) DO NOTHING;
                GET DIAGNOSTICS linked = ROW_COUNT;
                RETURN linked;
            END $$;

            -- Rewrites both token columns of the rows in heap pages [p_first, p_last)
            -- of p_table (user_logins or one of its partitions) through the lineage.
            CREATE FUNCTION retokenize_rewrite_rows(p_run bigint, p_table regclass, p_first bigint, p_last bigint) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                rewritten bigint;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                IF (SELECT c.relkind FROM pg_class c WHERE c.oid = p_table) IS DISTINCT FROM 'r'
                   OR NOT (p_table = 'public.user_logins'::regclass
                           OR p_table IN (SELECT t.relid FROM pg_partition_tree('public.user_logins'::regclass) t WHERE t.isleaf)) THEN
                    RAISE EXCEPTION '% is not user_logins or one of its partitions', p_table USING ERRCODE = 'PSK04';
                END IF;
                EXECUTE format(
                    $sql$UPDATE %s u SET
                        masked_ip = coalesce((SELECT l.new_token FROM public.token_lineage l WHERE l.old_token = u.masked_ip), u.masked_ip),
                        masked_device_id = coalesce((SELECT l.new_token FROM public.token_lineage l WHERE l.old_token = u.masked_device_id),
                                                    u.masked_device_id)
                    WHERE u.ctid >= format('(%%s,0)', $1)::tid AND u.ctid < format('(%%s,0)', $2)::tid
                      AND (left(u.masked_ip, length($3)) <> $3 OR left(u.masked_device_id, length($4)) <> $4)$sql$, p_table)
                USING p_first, p_last, token_prefix('ip', target), token_prefix('device_id', target);
                GET DIAGNOSTICS rewritten = ROW_COUNT;
                RETURN rewritten;
            END $$;

            -- Drops entries of an older version once each has its lineage: lineage is
            -- written only by the checked functions above, each in the transaction that
            -- made or checked its target (moved, carried, replaced). The exclusive writer
            -- lock waits out ingest batches still writing that version. Hash joins: with
            -- the statistics of a table that just doubled, the planner chose an index
            -- probe per entry, six times slower.
            CREATE FUNCTION retokenize_drop(p_run bigint, p_version integer, OUT dropped bigint, OUT kept bigint)
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp SET enable_nestloop = off AS $$
            DECLARE
                target integer;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['retokenize'], false);
                target := retokenize_target();
                IF p_version >= target THEN
                    RAISE EXCEPTION 'only versions older than the target v% are dropped', target USING ERRCODE = 'PSK04';
                END IF;
                PERFORM pg_advisory_xact_lock(\(KeyRegistry.writerLockBase) | p_version);
                DELETE FROM vault_entries v
                WHERE v.token_key_version = p_version AND EXISTS (SELECT FROM token_lineage l WHERE l.old_token = v.token);
                GET DIAGNOSTICS dropped = ROW_COUNT;
                SELECT count(*) INTO kept FROM vault_entries v WHERE v.token_key_version = p_version;
            END $$;

            -- Re-wraps data keys to the active registered recovery version.
            CREATE FUNCTION rewrap_data_keys(p_run bigint, p_ids uuid[], p_from integer[], p_wrapped bytea[]) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                target integer;
                updated bigint;
            BEGIN
                PERFORM rotation_require(p_run, ARRAY['rewrap'], false);
                SELECT k.version INTO target FROM key_versions k
                WHERE k.kind = 'recovery' AND k.state = 'active' AND k.fingerprint IS NOT NULL;
                IF target IS NULL THEN
                    RAISE EXCEPTION 'no active registered recovery key' USING ERRCODE = 'PSK04';
                END IF;
                UPDATE data_keys d SET wrapped_key = u.wrapped, recovery_key_version = target
                FROM unnest(p_ids, p_from, p_wrapped) AS u(id, from_version, wrapped)
                WHERE d.id = u.id AND d.recovery_key_version = u.from_version AND u.from_version <> target AND octet_length(u.wrapped) = 80;
                GET DIAGNOSTICS updated = ROW_COUNT;
                RETURN updated;
            END $$;

            -- A new data key is wrapped to the active registered recovery key: key
            -- files rolled back to an older one are refused here too.
            CREATE FUNCTION data_keys_check_recovery_version() RETURNS trigger
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                PERFORM FROM key_versions k WHERE k.kind = 'recovery' AND k.version = NEW.recovery_key_version AND k.state = 'active'
                    AND k.fingerprint IS NOT NULL;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'data key % is wrapped to recovery key v%, which is not the active registered version',
                        NEW.id, NEW.recovery_key_version USING ERRCODE = 'PSK05';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER data_keys_recovery_version BEFORE INSERT ON data_keys
                FOR EACH ROW EXECUTE FUNCTION data_keys_check_recovery_version();

            -- Vault entries: a token names its field and version, and inserts are
            -- of registered, unretired versions not older than the enforced one.
            ALTER TABLE vault_entries ADD CONSTRAINT vault_entries_token_names_field_and_version CHECK (
                left(token, length(token_prefix(field, token_key_version))) = token_prefix(field, token_key_version)
                AND length(token) = length(token_prefix(field, token_key_version)) + 43);
            -- The invoker's rights (ingest may read key_versions), so the check sees
            -- who wrote the rows: erasure columns only from who may update them,
            -- the owner (the SECURITY DEFINER functions of vault forget and
            -- retokenize). Column grants say so on one node; on Citus, whose COPY
            -- to a shard names every column, this does (asked as a privilege of
            -- the shard: Citus hides shards from queries on pg_class).
            CREATE FUNCTION vault_entries_check_versions() RETURNS trigger
                LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                versions integer[];
                erasing boolean;
                bad integer;
            BEGIN
                -- The statement's versions apart from the check: under Citus this
                -- runs on each shard, and Citus cannot plan a transition table
                -- joined with its tables.
                SELECT array_agg(DISTINCT i.token_key_version),
                       bool_or(i.erased_at IS NOT NULL OR i.erased_by IS NOT NULL OR i.erasure_audit_seq IS NOT NULL)
                INTO versions, erasing FROM inserted i;
                IF erasing AND NOT has_column_privilege(TG_RELID, 'erased_at', 'UPDATE') THEN
                    RAISE EXCEPTION 'permission denied: only vault forget (and retokenize carrying its erasures) set erasure columns'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                SELECT n.version INTO bad FROM unnest(versions) AS n(version)
                WHERE NOT EXISTS (SELECT FROM key_versions k WHERE k.kind = 'tokenization' AND k.version = n.version
                                  AND k.fingerprint IS NOT NULL AND k.state <> 'retired')
                   OR n.version < coalesce((SELECT max(k.version) FROM key_versions k WHERE k.kind = 'tokenization' AND k.enforced), 0)
                LIMIT 1;
                IF FOUND THEN
                    RAISE EXCEPTION 'vault entries of tokenization key v% refused: not registered, retired, or older than the enforced version', bad
                        USING ERRCODE = 'PSK02';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER vault_entries_versions AFTER INSERT ON vault_entries REFERENCING NEW TABLE AS inserted
                FOR EACH STATEMENT EXECUTE FUNCTION vault_entries_check_versions();

            -- Ingest inserts sealed entries only: no erasure column is its to set.
            REVOKE INSERT ON vault_entries FROM pseudonymizer_ingest;
            GRANT INSERT (token, field, token_key_version, data_key_id, nonce, ciphertext) ON vault_entries TO pseudonymizer_ingest;

            -- Values erased by `vault forget`, by a MAC under the suppression key
            -- (which never rotates): ingest stores no entry for them again, under
            -- any tokenization version.
            CREATE TABLE vault_suppressions (
                tag bytea PRIMARY KEY CHECK (octet_length(tag) = 32),
                field text NOT NULL CHECK (field IN ('ip', 'device_id')),
                audit_seq bigint NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());

            -- Which version a key kind may be registered under.
            ALTER TABLE key_versions DROP CONSTRAINT key_versions_kind_check;
            ALTER TABLE key_versions ADD CONSTRAINT key_versions_kind_check CHECK (kind IN ('tokenization', 'recovery', 'suppression'));

            -- The reveal functions see erasure rows: a ciphertext written back after
            -- `vault forget` is never released. `forget` reveals too: the value is
            -- what its suppression is computed from.
            CREATE OR REPLACE FUNCTION vault_reveal(p_os_user text, p_mac_key_version integer, p_action text, p_subjects text[],
                                                    p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[])
                RETURNS TABLE (token text, field text, token_key_version integer, data_key_id text, nonce bytea, ciphertext bytea,
                               recovery_key_version integer, wrapped_key bytea)
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                named text[];
            BEGIN
                IF p_action IS NULL OR p_action NOT IN ('recover', 'lookup', 'forget') THEN
                    RAISE EXCEPTION 'vault_reveal is for recover, lookup and forget only' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                -- The tokens an erasure row names, once (a call per token was a tenth of a bulk recovery).
                named := ARRAY(SELECT DISTINCT a.subject FROM audit_log a
                               WHERE a.subject = ANY(p_subjects) AND a.action IN ('forget', 'forget.carry') AND a.outcome = 'erased');
                PERFORM 1
                FROM unnest(p_subjects, p_outcomes) AS r(subject, outcome)
                LEFT JOIN (SELECT v.token, v.erased_at IS NOT NULL OR v.token = ANY(named) AS erased
                           FROM vault_entries v WHERE v.token = ANY(p_subjects)) e ON e.token = r.subject
                WHERE r.outcome IS DISTINCT FROM 'malformed-token'
                  AND r.outcome IS DISTINCT FROM CASE WHEN e.token IS NULL THEN 'unknown' WHEN e.erased THEN 'erased' ELSE 'revealed' END;
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
                    WHERE r.outcome = 'revealed' AND v.erased_at IS NULL AND NOT v.token = ANY(named);
            END $$;

            -- Erasure with its audit rows and the values' suppressions, in one
            -- transaction; exclusive against ingest batches (which hold the lock
            -- shared), so none writes a suppressed value after this commits.
            DROP FUNCTION vault_forget(text, integer, text[], text[], text[], bytea[], bytea[]);
            CREATE FUNCTION vault_forget(p_os_user text, p_mac_key_version integer, p_tokens text[], p_reasons text[], p_outcomes text[],
                                         p_hashes bytea[], p_macs bytea[], p_suppressions bytea[], p_suppression_fields text[])
                RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                first bigint;
                erasing text[] := ARRAY(SELECT r.token FROM unnest(p_tokens, p_outcomes) AS r(token, outcome) WHERE r.outcome = 'erased');
                already text[] := ARRAY(SELECT r.token FROM unnest(p_tokens, p_outcomes) AS r(token, outcome)
                                        WHERE r.outcome = 'already-erased');
                unknown text[] := ARRAY(SELECT r.token FROM unnest(p_tokens, p_outcomes) AS r(token, outcome) WHERE r.outcome = 'unknown');
                who text := p_os_user || ' as ' || session_user;
                erased bigint;
                still_erased bigint;
                held_unknown bigint;
            BEGIN
                PERFORM pg_advisory_xact_lock(\(suppressionLock));
                first := audit_insert(p_os_user, p_mac_key_version, array_fill('forget'::text, ARRAY[cardinality(p_tokens)]), p_tokens,
                                      p_reasons, p_outcomes, p_hashes, p_macs);
                -- Erase, then check every outcome the audit rows were prepared with:
                -- the update locks what it erases, and a vault changed meanwhile rolls
                -- everything back, audit rows included. (No SELECT … FOR UPDATE over
                -- several tokens: Citus refuses it across shards.)
                UPDATE vault_entries v SET nonce = NULL, ciphertext = NULL, erased_at = now(), erased_by = who,
                                           erasure_audit_seq = first + array_position(p_tokens, v.token) - 1
                WHERE v.token = ANY(erasing) AND v.erased_at IS NULL;
                GET DIAGNOSTICS erased = ROW_COUNT;
                SELECT count(*) INTO still_erased FROM vault_entries v WHERE v.token = ANY(already) AND v.erased_at IS NOT NULL;
                SELECT count(*) INTO held_unknown FROM vault_entries v WHERE v.token = ANY(unknown);
                IF erased <> cardinality(erasing) OR still_erased <> cardinality(already) OR held_unknown <> 0
                   OR cardinality(erasing) + cardinality(already) + cardinality(unknown) <> cardinality(p_tokens)
                   OR (SELECT count(DISTINCT u.token) FROM unnest(p_tokens) AS u(token)) <> cardinality(p_tokens) THEN
                    RAISE EXCEPTION 'the vault changed while the audit rows were prepared; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                INSERT INTO vault_suppressions (tag, field, audit_seq)
                SELECT s.tag, s.field, first FROM unnest(p_suppressions, p_suppression_fields) AS s(tag, field)
                ON CONFLICT (tag) DO NOTHING;
                RETURN first;
            END $$;

            -- Partitions only inside the window: days back to the receipts'
            -- retention, and ahead as far as `ingest maintain` makes them (set by it).
            CREATE TABLE partition_policy (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                receipts_retention_days integer NOT NULL DEFAULT 15 CHECK (receipts_retention_days BETWEEN 1 AND 3650),
                days_ahead integer NOT NULL DEFAULT 7 CHECK (days_ahead BETWEEN 1 AND 366));
            INSERT INTO partition_policy DEFAULT VALUES;

            CREATE OR REPLACE FUNCTION ingest_prepare_partitions(p_days date[]) RETURNS void
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                day date;
                month date;
                today date := (now() AT TIME ZONE 'UTC')::date;
                policy partition_policy;
            BEGIN
                IF coalesce(cardinality(p_days), 0) > 62 THEN
                    RAISE EXCEPTION 'a batch spans more than 62 sent days' USING ERRCODE = 'program_limit_exceeded';
                END IF;
                SELECT * INTO policy FROM partition_policy;
                SELECT d INTO day FROM unnest(p_days) AS d
                WHERE d IS NULL OR d < today - policy.receipts_retention_days OR d > today + policy.days_ahead LIMIT 1;
                IF FOUND THEN
                    RAISE EXCEPTION 'messages sent on % are outside the days receipts are kept for (% to %)', day,
                        today - policy.receipts_retention_days, today + policy.days_ahead
                        USING ERRCODE = 'PSK07', HINT = 'ingest maintain --receipts-retention and --days-ahead set the window';
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

            -- What an ingest batch needs, in one round trip: the writer lock of its
            -- token version and the suppression lock (both shared, to commit), the
            -- versions the database requires, its partitions, whether any value is
            -- suppressed, and which of the suppression tags of its new values are
            -- (a writer that saw none lately sends none, and asks ingest_suppressed
            -- when there are some after all).
            CREATE FUNCTION ingest_begin_batch(p_version integer, p_days date[], p_suppressions bytea[],
                                               OUT enforced integer, OUT active_tokenization integer, OUT active_recovery integer,
                                               OUT any_suppressed boolean, OUT suppressed bytea[])
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock_shared(\(KeyRegistry.writerLockBase) | p_version);
                PERFORM pg_advisory_xact_lock_shared(\(suppressionLock));
                SELECT max(k.version) FILTER (WHERE k.kind = 'tokenization' AND k.enforced),
                       max(k.version) FILTER (WHERE k.kind = 'tokenization' AND k.state = 'active'),
                       max(k.version) FILTER (WHERE k.kind = 'recovery' AND k.state = 'active')
                INTO enforced, active_tokenization, active_recovery FROM key_versions k;
                PERFORM ingest_prepare_partitions(p_days);
                any_suppressed := EXISTS (SELECT FROM vault_suppressions);
                suppressed := ingest_suppressed(p_suppressions);
            END $$;

            -- Which of these suppression tags `vault forget` recorded (only through
            -- this: the ingest role cannot read the list).
            CREATE FUNCTION ingest_suppressed(p_suppressions bytea[]) RETURNS bytea[]
                LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                SELECT ARRAY(SELECT s.tag FROM vault_suppressions s WHERE s.tag = ANY(p_suppressions))
            $$;

            -- Rotation no longer updates login rows directly (retokenize_rewrite_rows does).
            CREATE OR REPLACE FUNCTION partition_ensure(p_parent regclass, p_from date, p_to date, p_name text) RETURNS boolean
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
                RETURN true;
            END $$;

            -- Oversized bodies keep a bounded prefix: their length and digest say the rest.
            ALTER TABLE quarantine ADD COLUMN body_sha256 bytea;
            ALTER TABLE quarantine ADD CONSTRAINT quarantine_body_sha256_check CHECK (octet_length(body_sha256) = 32);

            -- The rotation role: bulk reads, and changes only through the functions.
            REVOKE INSERT, DELETE ON vault_entries FROM pseudonymizer_rotation;
            REVOKE UPDATE (masked_ip, masked_device_id) ON user_logins FROM pseudonymizer_rotation;
            DO $$
            DECLARE
                leaf regclass;
            BEGIN
                FOR leaf IN SELECT t.relid FROM pg_partition_tree('user_logins'::regclass) t WHERE t.relid <> 'user_logins'::regclass LOOP
                    EXECUTE format('REVOKE UPDATE (masked_ip, masked_device_id) ON %s FROM pseudonymizer_rotation', leaf);
                END LOOP;
            END $$;
            REVOKE INSERT (kind, version, state, enforced), UPDATE (state, enforced, retired_at) ON key_versions FROM pseudonymizer_rotation;
            REVOKE INSERT ON token_lineage FROM pseudonymizer_rotation;
            REVOKE UPDATE (wrapped_key, recovery_key_version) ON data_keys FROM pseudonymizer_rotation;
            DROP FUNCTION register_key(text, integer, text, bytea);

            REVOKE ALL ON FUNCTION rotation_begin(text, integer, text, text, text, text, bytea, bytea),
                rotation_end(bigint, text, integer, text, text, text, bytea, bytea), rotation_require(bigint, text[], boolean),
                key_register(bigint, text, integer, text, bytea), key_retire(bigint, text, integer), key_enforce(bigint, integer),
                retokenize_target(), retokenize_move(bigint, text[], text[], uuid[], bytea[], bytea[]),
                retokenize_replace(bigint, text, uuid, bytea, bytea, text, integer, text, text, text, bytea, bytea),
                retokenize_carry_erasures(bigint, text[], text, integer, text[], text[], text[], bytea[], bytea[]),
                retokenize_link_orphans(bigint, text[], text[], text[]),
                retokenize_rewrite_rows(bigint, regclass, bigint, bigint), retokenize_drop(bigint, integer),
                rewrap_data_keys(bigint, uuid[], integer[], bytea[]), data_keys_check_recovery_version(), vault_entries_check_versions(),
                vault_forget(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[]),
                ingest_begin_batch(integer, date[], bytea[]), ingest_suppressed(bytea[]) FROM PUBLIC;
            GRANT EXECUTE ON FUNCTION rotation_begin(text, integer, text, text, text, text, bytea, bytea),
                rotation_end(bigint, text, integer, text, text, text, bytea, bytea),
                key_register(bigint, text, integer, text, bytea), key_retire(bigint, text, integer), key_enforce(bigint, integer),
                retokenize_move(bigint, text[], text[], uuid[], bytea[], bytea[]),
                retokenize_replace(bigint, text, uuid, bytea, bytea, text, integer, text, text, text, bytea, bytea),
                retokenize_carry_erasures(bigint, text[], text, integer, text[], text[], text[], bytea[], bytea[]),
                retokenize_link_orphans(bigint, text[], text[], text[]),
                retokenize_rewrite_rows(bigint, regclass, bigint, bigint), retokenize_drop(bigint, integer),
                rewrap_data_keys(bigint, uuid[], integer[], bytea[]) TO pseudonymizer_rotation;
            GRANT EXECUTE ON FUNCTION vault_forget(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[])
                TO pseudonymizer_vault;
            GRANT EXECUTE ON FUNCTION ingest_begin_batch(integer, date[], bytea[]), ingest_suppressed(bytea[]) TO pseudonymizer_ingest;
            GRANT SELECT ON rotation_runs, vault_suppressions, partition_policy TO pseudonymizer_vault, pseudonymizer_rotation;
            GRANT SELECT ON partition_policy TO pseudonymizer_ingest;
            GRANT SELECT (body_sha256) ON quarantine TO pseudonymizer_vault;
            """)
}
