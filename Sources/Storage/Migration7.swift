extension Schema {
    /// Compliance work by person and request: subject access by user (its
    /// tokens checked against the user's rows by the server), quarantined
    /// bodies revealed only with their audit rows, and four-eyes approval,
    /// a policy the owner sets and the reveal and erase functions enforce: a
    /// request (scope and reason) approved by another compliance login, whose
    /// identity is the server's `session_user`, used once, before it expires.
    static let migration7 = Migration(
        version: 7, name: "compliance by person and request: subject access, quarantine review, four-eyes approval",
        sql: """
            -- The owner's four-eyes policy (one row): 'off'; 'bulk', where a login
            -- revealing more than bulk_tokens values in 24 hours needs a request
            -- for the rest; 'always'. Requests expire after request_hours.
            CREATE TABLE approval_policy (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                mode text NOT NULL DEFAULT 'off' CHECK (mode IN ('off', 'bulk', 'always')),
                bulk_tokens integer NOT NULL DEFAULT 100 CHECK (bulk_tokens >= 0),
                request_hours integer NOT NULL DEFAULT 24 CHECK (request_hours BETWEEN 1 AND 720));
            INSERT INTO approval_policy DEFAULT VALUES;

            -- A request: its id is the sequence of its audit row ('request'),
            -- its scope the sorted subjects it may reveal or erase (tokens, or
            -- quarantine:<receipt id>), or for subject access the user.
            CREATE TABLE access_requests (
                id bigint PRIMARY KEY,
                action text NOT NULL CHECK (action IN ('recover', 'lookup', 'subject', 'forget', 'quarantine')),
                scope text[] NOT NULL,
                user_id varchar(128),
                reason text NOT NULL,
                requested_by text NOT NULL,
                requested_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL,
                approved_by text,
                approved_at timestamptz,
                approval_audit_seq bigint,
                used_at timestamptz,
                CHECK (approved_by IS DISTINCT FROM requested_by));

            -- The bulk policy counts a login's reveals of the last 24 hours.
            CREATE INDEX audit_log_reveals_idx ON audit_log (db_role, at) WHERE outcome = 'revealed';

            -- Arrays as the functions read them: one dimension, from 1 (subscripts
            -- and unnest must see the same elements).
            CREATE FUNCTION array_is_plain(p anyarray) RETURNS boolean
                LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
                SELECT p IS NULL OR cardinality(p) = 0 OR (array_ndims(p) = 1 AND array_lower(p, 1) = 1)
            $$;
            CREATE FUNCTION audit_rows_require_plain(p_subjects text[], p_reasons text[], p_outcomes text[], p_hashes bytea[],
                                                     p_macs bytea[]) RETURNS void
                LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                IF NOT (array_is_plain(p_subjects) AND array_is_plain(p_reasons) AND array_is_plain(p_outcomes)
                        AND array_is_plain(p_hashes) AND array_is_plain(p_macs)) THEN
                    RAISE EXCEPTION 'audit row arrays have one dimension and start at 1' USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END $$;

            -- Rows only the functions write are not appended directly: an erasure
            -- (which the reveal functions believe), a request or an approval.
            CREATE OR REPLACE FUNCTION audit_append(p_os_user text, p_mac_key_version integer, p_actions text[], p_subjects text[],
                                                    p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[]) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            BEGIN
                IF EXISTS (SELECT FROM unnest(p_actions, p_outcomes) AS x(action, outcome)
                           WHERE x.action IN ('request', 'approve') OR x.action IN ('forget', 'forget.carry') AND x.outcome = 'erased') THEN
                    RAISE EXCEPTION 'erasures, requests and approvals are audited by the functions that make them, not appended'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                RETURN audit_insert(p_os_user, p_mac_key_version, p_actions, p_subjects, p_reasons, p_outcomes, p_hashes, p_macs);
            END $$;

            -- What a request's audit row says of it: the action, the user, and the
            -- scope's size and SHA-256 (so the authenticated row pins the scope).
            CREATE FUNCTION access_request_subject(p_action text, p_scope text[], p_user_id text) RETURNS text
                LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
                SELECT p_action || ' ' || coalesce('user:' || p_user_id || ', ', '') || cardinality(p_scope) || ' subjects, scope sha256 '
                       || encode(sha256(convert_to(array_to_string(p_scope, E'\\n'), 'UTF8')), 'hex')
            $$;

            -- The suffix every audit row made under request p_request carries in its reason.
            CREATE FUNCTION access_request_suffix(p_request bigint) RETURNS text
                LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
                SELECT ' [request #' || p_request || ']'
            $$;

            CREATE FUNCTION vault_request(p_os_user text, p_mac_key_version integer, p_action text, p_scope text[], p_user_id text,
                                          p_reason text, p_hash bytea, p_mac bytea) RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                id bigint;
            BEGIN
                IF p_action IS NULL OR p_action NOT IN ('recover', 'lookup', 'subject', 'forget', 'quarantine')
                   OR p_scope IS NULL OR p_reason IS NULL
                   OR (p_action = 'subject') <> (p_user_id IS NOT NULL AND cardinality(p_scope) = 0)
                   OR (p_action NOT IN ('subject', 'forget') AND p_user_id IS NOT NULL)
                   OR (p_action <> 'subject' AND cardinality(p_scope) = 0) THEN
                    RAISE EXCEPTION 'a request is for recover, lookup, forget or quarantine with a scope, or for subject with a user only'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF NOT array_is_plain(p_scope) OR p_scope IS DISTINCT FROM ARRAY(SELECT DISTINCT s COLLATE "C" FROM unnest(p_scope) s ORDER BY 1) THEN
                    RAISE EXCEPTION 'a request''s scope is sorted and has no repeats' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF p_reason LIKE '%[request #%' THEN
                    RAISE EXCEPTION 'a reason may not name a request' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                id := audit_insert(p_os_user, p_mac_key_version, ARRAY['request'], ARRAY[access_request_subject(p_action, p_scope, p_user_id)],
                                   ARRAY[p_reason], ARRAY['requested'], ARRAY[p_hash], ARRAY[p_mac]);
                INSERT INTO access_requests (id, action, scope, user_id, reason, requested_by, expires_at)
                SELECT id, p_action, p_scope, p_user_id, p_reason, session_user, now() + make_interval(hours => p.request_hours)
                FROM approval_policy p;
                RETURN id;
            END $$;

            -- An approval, by a login other than the requester's (the server's
            -- session_user, not the client's word). The outcome the client
            -- prepared must be the one the server finds: 'approved', or why not
            -- ('self-approval', 'already-approved', 'expired', 'unknown-request'),
            -- which is audited too.
            CREATE FUNCTION vault_approve(p_os_user text, p_mac_key_version integer, p_request bigint, p_reason text, p_outcome text,
                                          p_hash bytea, p_mac bytea) RETURNS text
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                r access_requests;
                expected text;
                seq bigint;
            BEGIN
                SELECT * INTO r FROM access_requests a WHERE a.id = p_request FOR UPDATE;
                expected := CASE WHEN r.id IS NULL THEN 'unknown-request'
                                 WHEN r.requested_by = session_user THEN 'self-approval'
                                 WHEN r.approved_by IS NOT NULL THEN 'already-approved'
                                 WHEN r.expires_at <= clock_timestamp() THEN 'expired'
                                 ELSE 'approved' END;
                IF p_outcome IS DISTINCT FROM expected OR p_reason IS DISTINCT FROM coalesce(r.reason, 'unknown request') THEN
                    RAISE EXCEPTION 'the request changed while the audit row was prepared; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                seq := audit_insert(p_os_user, p_mac_key_version, ARRAY['approve'], ARRAY['request #' || p_request], ARRAY[p_reason],
                                    ARRAY[expected], ARRAY[p_hash], ARRAY[p_mac]);
                IF expected = 'approved' THEN
                    UPDATE access_requests SET approved_by = session_user, approved_at = now(), approval_audit_seq = seq WHERE id = p_request;
                END IF;
                RETURN expected;
            END $$;

            -- Request p_request, checked for use now by this login for p_kind
            -- with these audit reasons: approved, unexpired, unused, this login's.
            CREATE FUNCTION access_request_require(p_request bigint, p_kind text, p_reasons text[]) RETURNS access_requests
                LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                r access_requests;
            BEGIN
                SELECT * INTO r FROM access_requests a WHERE a.id = p_request FOR UPDATE;
                IF r.id IS NULL OR r.requested_by <> session_user OR r.action <> p_kind THEN
                    RAISE EXCEPTION 'request #% is not a % request of this login', p_request, p_kind USING ERRCODE = 'PSK08';
                ELSIF r.approved_by IS NULL THEN
                    RAISE EXCEPTION 'request #% is not approved yet: another compliance login runs vault approve %', p_request, p_request
                        USING ERRCODE = 'PSK08';
                ELSIF r.expires_at <= clock_timestamp() THEN
                    RAISE EXCEPTION 'request #% expired at %: ask again', p_request, r.expires_at USING ERRCODE = 'PSK08';
                ELSIF r.used_at IS NOT NULL THEN
                    RAISE EXCEPTION 'request #% was used at %: ask again', p_request, r.used_at USING ERRCODE = 'PSK08';
                ELSIF EXISTS (SELECT FROM unnest(p_reasons) x WHERE x IS DISTINCT FROM r.reason || access_request_suffix(p_request)) THEN
                    RAISE EXCEPTION 'audit rows under request #% give its reason and name it', p_request USING ERRCODE = 'PSK08';
                END IF;
                RETURN r;
            END $$;

            -- Whether a reveal (p_action, its rows' subjects, reasons and
            -- outcomes) is one the policy refuses: then every outcome must say
            -- 'refused' (the rows are audited, nothing is released). Raises for a
            -- call that claims otherwise, and for a request used outside its
            -- scope, twice, by another login, or after it expired.
            CREATE FUNCTION access_check(p_action text, p_request bigint, p_user_id text, p_subjects text[], p_reasons text[],
                                         p_outcomes text[]) RETURNS boolean
                LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                policy approval_policy;
                r access_requests;
                kind text := CASE WHEN p_action LIKE 'quarantine-%' THEN 'quarantine' ELSE p_action END;
                -- Values asked for (a subject access's row for its user is not one).
                asked integer := (SELECT count(*) FROM unnest(p_subjects, p_outcomes) AS x(subject, outcome)
                                  WHERE x.outcome IN ('revealed', 'refused') AND x.subject NOT LIKE 'user:%');
                refused integer := (SELECT count(*) FROM unnest(p_subjects, p_outcomes) AS x(subject, outcome)
                                    WHERE x.outcome = 'refused' AND x.subject NOT LIKE 'user:%');
                needed boolean;
            BEGIN
                -- Under the chain lock, reading committed rows: two sessions of one
                -- login cannot both count the other's reveals out.
                PERFORM pg_advisory_xact_lock(\(auditChainLock));
                IF current_setting('transaction_isolation') <> 'read committed' THEN
                    RAISE EXCEPTION 'reveals run at READ COMMITTED isolation' USING ERRCODE = 'invalid_transaction_state';
                END IF;
                SELECT * INTO policy FROM approval_policy;
                IF p_request IS NOT NULL THEN
                    r := access_request_require(p_request, kind, p_reasons);
                    IF refused > 0 THEN
                        RAISE EXCEPTION 'nothing is refused under approved request #%; retry', p_request USING ERRCODE = 'serialization_failure';
                    END IF;
                    IF kind = 'subject' AND p_user_id IS DISTINCT FROM r.user_id
                       OR kind <> 'subject' AND EXISTS (SELECT FROM unnest(p_subjects, p_outcomes) AS x(subject, outcome)
                                                        WHERE x.outcome <> 'malformed-token' AND NOT x.subject = ANY(r.scope)) THEN
                        RAISE EXCEPTION 'request #% does not cover this: only what it names, as approved', p_request USING ERRCODE = 'PSK08';
                    END IF;
                    -- Once: no subject twice under one request, by any of its actions
                    -- (its requester's rows only: another login cannot use it up).
                    IF EXISTS (SELECT FROM audit_log a WHERE a.seq > p_request AND a.db_role = session_user
                               AND a.action = ANY(CASE WHEN kind = 'quarantine' THEN ARRAY['quarantine-show', 'quarantine-replay']
                                                       ELSE ARRAY[p_action] END)
                               AND a.reason = r.reason || access_request_suffix(p_request)
                               AND a.outcome IN ('revealed', 'subject-access') AND a.subject = ANY(p_subjects)) THEN
                        RAISE EXCEPTION 'request #% was used for this already: ask again', p_request USING ERRCODE = 'PSK08';
                    END IF;
                    RETURN false;
                END IF;
                IF EXISTS (SELECT FROM unnest(p_reasons) x WHERE x LIKE '%[request #%') THEN
                    RAISE EXCEPTION 'only a reveal under a request names one in its reason' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                needed := policy.mode = 'always'
                          OR policy.mode = 'bulk' AND asked > 0
                             AND asked + (SELECT count(*) FROM audit_log a
                                          WHERE a.db_role = session_user AND a.outcome = 'revealed' AND a.at > now() - interval '24 hours'
                                            AND a.reason NOT LIKE '%[request #%') > policy.bulk_tokens;
                IF needed AND refused <> asked OR NOT needed AND refused > 0 THEN
                    RAISE EXCEPTION 'the approval policy is not what the audit rows were prepared for; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                RETURN needed AND asked > 0;
            END $$;

            -- Whether the policy asks for a request before revealing p_count more
            -- values with this login (the tools ask before they prepare the rows).
            CREATE FUNCTION approval_needed(p_count integer) RETURNS boolean
                LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
                SELECT p.mode = 'always'
                       OR p.mode = 'bulk' AND p_count + (SELECT count(*) FROM audit_log a
                                                        WHERE a.db_role = session_user AND a.outcome = 'revealed'
                                                          AND a.at > now() - interval '24 hours'
                                                          AND a.reason NOT LIKE '%[request #%') > p.bulk_tokens
                FROM approval_policy p
            $$;

            -- vault_reveal with requests and subject access. For 'subject' the
            -- first row is the user's ('user:<id>', outcome 'subject-access') and
            -- every token after it must be on that user's rows.
            DROP FUNCTION vault_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[]);
            CREATE FUNCTION vault_reveal(p_os_user text, p_mac_key_version integer, p_action text, p_subjects text[],
                                         p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[], p_request bigint,
                                         p_user_id text)
                RETURNS TABLE (token text, field text, token_key_version integer, data_key_id text, nonce bytea, ciphertext bytea,
                               recovery_key_version integer, wrapped_key bytea)
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                named text[];
                carried text[];
                refused boolean;
                first integer := CASE WHEN p_action = 'subject' THEN 2 ELSE 1 END;
            BEGIN
                IF p_action IS NULL OR p_action NOT IN ('recover', 'lookup', 'forget', 'subject') THEN
                    RAISE EXCEPTION 'vault_reveal is for recover, lookup, forget and subject only' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                PERFORM audit_rows_require_plain(p_subjects, p_reasons, p_outcomes, p_hashes, p_macs);
                IF p_action = 'subject' THEN
                    IF p_user_id IS NULL OR p_subjects[1] IS DISTINCT FROM 'user:' || p_user_id
                       OR p_outcomes[1] NOT IN ('subject-access', 'refused') THEN
                        RAISE EXCEPTION 'subject access names its user in its first row' USING ERRCODE = 'invalid_parameter_value';
                    END IF;
                    carried := ARRAY(SELECT u.masked_ip FROM user_logins u WHERE u.user_id = p_user_id AND u.masked_ip IS NOT NULL
                                     UNION SELECT u.masked_device_id FROM user_logins u
                                           WHERE u.user_id = p_user_id AND u.masked_device_id IS NOT NULL);
                    IF NOT p_subjects[2:] <@ carried THEN
                        RAISE EXCEPTION 'subject access reveals only tokens on the user''s rows' USING ERRCODE = 'PSK08';
                    END IF;
                ELSIF p_user_id IS NOT NULL OR 'subject-access' = ANY(p_outcomes) THEN
                    RAISE EXCEPTION 'only subject access names a user' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                refused := access_check(p_action, p_request, p_user_id, p_subjects, p_reasons, p_outcomes);
                IF p_action = 'subject' AND (p_outcomes[1] = 'refused') <> refused THEN
                    RAISE EXCEPTION 'the approval policy is not what the audit rows were prepared for; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                -- Every outcome as the vault has it ('refused' stands for 'revealed').
                named := ARRAY(SELECT DISTINCT a.subject FROM audit_log a
                               WHERE a.subject = ANY(p_subjects) AND a.action IN ('forget', 'forget.carry') AND a.outcome = 'erased');
                PERFORM 1
                FROM unnest(p_subjects[first:], p_outcomes[first:]) AS r(subject, outcome)
                LEFT JOIN (SELECT v.token, v.erased_at IS NOT NULL OR v.token = ANY(named) AS erased
                           FROM vault_entries v WHERE v.token = ANY(p_subjects)) e ON e.token = r.subject
                WHERE r.outcome IS DISTINCT FROM 'malformed-token'
                  AND CASE WHEN r.outcome = 'refused' THEN 'revealed' ELSE r.outcome END
                      IS DISTINCT FROM CASE WHEN e.token IS NULL THEN 'unknown' WHEN e.erased THEN 'erased' ELSE 'revealed' END;
                IF FOUND THEN
                    RAISE EXCEPTION 'the vault changed while the audit rows were prepared; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                PERFORM audit_insert(p_os_user, p_mac_key_version, array_fill(p_action, ARRAY[cardinality(p_subjects)]), p_subjects,
                                     p_reasons, p_outcomes, p_hashes, p_macs);
                IF refused THEN
                    RETURN;
                END IF;
                RETURN QUERY
                    SELECT DISTINCT v.token, v.field, v.token_key_version, v.data_key_id::text, v.nonce, v.ciphertext,
                           d.recovery_key_version, d.wrapped_key
                    FROM unnest(p_subjects, p_outcomes) AS r(subject, outcome)
                    JOIN vault_entries v ON v.token = r.subject
                    LEFT JOIN data_keys d ON d.id = v.data_key_id
                    WHERE r.outcome = 'revealed' AND v.erased_at IS NULL AND NOT v.token = ANY(named)
                      AND (p_action <> 'subject' OR v.token = ANY(carried));
            END $$;

            -- vault_forget under the policy: with 'always' (or 'bulk' and more
            -- tokens than it allows) only within an approved request's scope,
            -- which the erasure uses up. The erasure itself is migration 6's,
            -- no longer callable on its own.
            ALTER FUNCTION vault_forget(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[])
                RENAME TO vault_forget_unchecked;
            REVOKE EXECUTE ON FUNCTION vault_forget_unchecked(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[])
                FROM pseudonymizer_vault;
            CREATE FUNCTION vault_forget(p_os_user text, p_mac_key_version integer, p_tokens text[], p_reasons text[], p_outcomes text[],
                                         p_hashes bytea[], p_macs bytea[], p_suppressions bytea[], p_suppression_fields text[],
                                         p_request bigint)
                RETURNS bigint
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                r access_requests;
                erasing integer := (SELECT count(*) FROM unnest(p_outcomes) o WHERE o = 'erased');
            BEGIN
                PERFORM audit_rows_require_plain(p_tokens, p_reasons, p_outcomes, p_hashes, p_macs);
                -- A suppression per value erased at most (each keeps that value out for good).
                IF NOT (array_is_plain(p_suppressions) AND array_is_plain(p_suppression_fields))
                   OR coalesce(cardinality(p_suppressions), 0) > erasing THEN
                    RAISE EXCEPTION 'at most one suppression per value erased' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                IF p_request IS NOT NULL THEN
                    r := access_request_require(p_request, 'forget', p_reasons);
                    IF NOT p_tokens <@ r.scope THEN
                        RAISE EXCEPTION 'request #% does not cover this: only what it names, as approved', p_request USING ERRCODE = 'PSK08';
                    END IF;
                    UPDATE access_requests SET used_at = now() WHERE id = p_request;
                ELSIF EXISTS (SELECT FROM unnest(p_reasons) x WHERE x LIKE '%[request #%') THEN
                    RAISE EXCEPTION 'only an erasure under a request names one in its reason' USING ERRCODE = 'invalid_parameter_value';
                ELSIF (SELECT p.mode = 'always' OR p.mode = 'bulk' AND erasing > p.bulk_tokens FROM approval_policy p) THEN
                    RAISE EXCEPTION 'the four-eyes policy requires an approved request for this erasure' USING ERRCODE = 'PSK08';
                END IF;
                RETURN vault_forget_unchecked(p_os_user, p_mac_key_version, p_tokens, p_reasons, p_outcomes, p_hashes, p_macs,
                                              p_suppressions, p_suppression_fields);
            END $$;

            -- Quarantined bodies reach a compliance login only with their audit
            -- rows ('quarantine-show', 'quarantine-replay'; subject
            -- quarantine:<receipt id>, outcome 'revealed', 'unknown' or 'refused').
            CREATE FUNCTION quarantine_reveal(p_os_user text, p_mac_key_version integer, p_action text, p_subjects text[],
                                              p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[], p_request bigint)
                RETURNS TABLE (receipt_id bytea, sent_day date, quarantined_on date, reason text, field text, detail text, data_key_id text, nonce bytea,
                               sealed_body bytea, body_bytes integer, body_sha256 bytea, recovery_key_version integer, wrapped_key bytea)
                LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
            DECLARE
                ids bytea[];
                held text[];
                refused boolean;
            BEGIN
                IF p_action IS NULL OR p_action NOT IN ('quarantine-show', 'quarantine-replay') THEN
                    RAISE EXCEPTION 'quarantine_reveal is for quarantine-show and quarantine-replay only' USING ERRCODE = 'invalid_parameter_value';
                END IF;
                PERFORM audit_rows_require_plain(p_subjects, p_reasons, p_outcomes, p_hashes, p_macs);
                IF EXISTS (SELECT FROM unnest(p_subjects) s WHERE s !~ '^quarantine:[0-9a-f]{32}$') THEN
                    RAISE EXCEPTION 'a quarantined message is named quarantine:<32 hex digits of its receipt id>'
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
                refused := access_check(p_action, p_request, NULL, p_subjects, p_reasons, p_outcomes);
                ids := ARRAY(SELECT decode(substr(s, 12), 'hex') FROM unnest(p_subjects) s);
                held := ARRAY(SELECT DISTINCT 'quarantine:' || encode(q.receipt_id, 'hex') FROM quarantine q WHERE q.receipt_id = ANY(ids));
                IF EXISTS (SELECT FROM unnest(p_subjects, p_outcomes) AS x(subject, outcome)
                           WHERE CASE WHEN x.outcome = 'refused' THEN 'revealed' ELSE x.outcome END
                                 IS DISTINCT FROM CASE WHEN x.subject = ANY(held) THEN 'revealed' ELSE 'unknown' END) THEN
                    RAISE EXCEPTION 'the quarantine changed while the audit rows were prepared; retry' USING ERRCODE = 'serialization_failure';
                END IF;
                PERFORM audit_insert(p_os_user, p_mac_key_version, array_fill(p_action, ARRAY[cardinality(p_subjects)]), p_subjects,
                                     p_reasons, p_outcomes, p_hashes, p_macs);
                IF refused THEN
                    RETURN;
                END IF;
                RETURN QUERY
                    SELECT q.receipt_id, q.sent_day, q.quarantined_on, q.reason, q.field, q.detail, q.data_key_id::text, q.nonce, q.sealed_body, q.body_bytes,
                           q.body_sha256, d.recovery_key_version, d.wrapped_key
                    FROM quarantine q LEFT JOIN data_keys d ON d.id = q.data_key_id
                    WHERE q.receipt_id = ANY(ids);
            END $$;

            REVOKE ALL ON FUNCTION access_request_subject(text, text[], text), access_request_suffix(bigint),
                audit_rows_require_plain(text[], text[], text[], bytea[], bytea[]),
                vault_request(text, integer, text, text[], text, text, bytea, bytea),
                vault_approve(text, integer, bigint, text, text, bytea, bytea), access_request_require(bigint, text, text[]),
                access_check(text, bigint, text, text[], text[], text[]), approval_needed(integer),
                vault_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[], bigint, text),
                vault_forget(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[], bigint),
                quarantine_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[], bigint) FROM PUBLIC;
            GRANT EXECUTE ON FUNCTION access_request_subject(text, text[], text),
                vault_request(text, integer, text, text[], text, text, bytea, bytea),
                vault_approve(text, integer, bigint, text, text, bytea, bytea), approval_needed(integer),
                vault_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[], bigint, text),
                vault_forget(text, integer, text[], text[], text[], bytea[], bytea[], bytea[], text[], bigint),
                quarantine_reveal(text, integer, text, text[], text[], text[], bytea[], bytea[], bigint) TO pseudonymizer_vault;
            GRANT SELECT ON approval_policy, access_requests TO pseudonymizer_vault;
            """)
}
