import Foundation
import Postgres
import Pseudonymization
import Storage
import TestSupport
import Testing
import VaultCrypto

@testable import VaultAdmin

/// Each test attacks with exactly the rights a README claim is about, and
/// shows the attack fail.
@Suite("attacks by the people who run it")
struct AttackTests {
    /// What a database owner can do: disable the triggers and rewrite rows.
    func asOwner(_ harness: VaultHarness, _ script: String) async throws {
        let connection = try await harness.connect()
        try await connection.executeScript(script)
        await connection.close()
    }

    /// SQL that recomputes every plain hash of the chain, as an owner can with `audit_row_hash`.
    static let rechain = """
        DO $$
        DECLARE r record; prev bytea := decode(repeat('00', 32), 'hex'); h bytea;
        BEGIN
            FOR r IN SELECT * FROM audit_log ORDER BY seq LOOP
                h := audit_row_hash(prev, r.seq, to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), r.os_user,
                                    r.db_role, r.action, r.subject, r.reason, r.outcome);
                UPDATE audit_log SET prev_hash = prev, hash = h WHERE seq = r.seq;
                prev := h;
            END LOOP;
        END $$;
        """

    @Test("database owner + recovery-public.json: a forged entry is an integrity failure (65), audited, never shown, never moved")
    func forgedEntry() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 5))
        let target = try #require(harness.originals.keys.filter { $0.hasPrefix("ip_t1_") }.sorted().first)
        // A data key made with the public key only (HPKE base mode authenticates no
        // sender), and the entry re-sealed under it with the documented AAD.
        let publicKey = try harness.keys.store.recoveryPublicKeys().active
        let dataKeyID = UUID().uuidString.lowercased()
        let dataKey = try SecureBytes.random(count: 32)
        let forgedValue = "203.0.113.66"
        let (nonce, ciphertext) = try VaultSealer(dataKeyID: dataKeyID, key: dataKey).seal(forgedValue, token: target, field: .ip)
        let owner = try await harness.connect()
        try await owner.execute(
            "INSERT INTO data_keys (id, recovery_key_version, wrapped_key, created_by) VALUES ($1, 1, $2, 'attacker')",
            [.text(dataKeyID), .bytes(try DataKeyWrap.wrap(dataKey, dataKeyID: dataKeyID, to: publicKey))])
        try await owner.execute(
            "UPDATE vault_entries SET data_key_id = $2::uuid, nonce = $3, ciphertext = $4 WHERE token = $1",
            [.text(target), .text(dataKeyID), .bytes(nonce), .bytes(ciphertext)])

        let recover = try await harness.vault(["recover", "--token", target, "--reason", "FORGERY"])
        #expect(recover.status == 65)
        #expect(recover.output.isEmpty)
        #expect(!recover.errors.contains(forgedValue) && !recover.output.contains(forgedValue))
        #expect(recover.errors.contains("integrity check failed for token \(target)"))
        #expect(recover.errors.contains("does not produce this token"))
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE subject = $1 AND outcome = 'integrity-failure'", [.text(target)])
                == 1)

        // Lookup of the genuine value does not call the forged entry stored.
        let genuine = try #require(harness.originals[target])
        let lookup = try await harness.vault(["lookup", "--ip-file", "-", "--reason", "FORGERY", "--json"], input: genuine + "\n")
        #expect(lookup.status == 0, "\(lookup.errors)")
        let matches = (try JSONSerialization.jsonObject(with: Data(lookup.output.utf8)) as? [String: Any])?["matches"] as? [[String: Any]]
        #expect(matches?.first?["vault"] as? String == "integrity-failure")
        #expect(!lookup.output.contains(forgedValue))

        // Retokenize refuses to carry it to a new token.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "FORGERY"]).status == 0)
        let retokenize = try await harness.vault(["retokenize", "--reason", "FORGERY"])
        #expect(retokenize.status != 0)
        #expect(retokenize.errors.contains("cannot move token \(target)"))
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token = $1", [.text(target)]) == 1)
    }

    @Test("database owner: triggers disabled, row 1 edited, every plain hash recomputed: verify names row 1")
    func rewrittenAuditLog() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let tokens = harness.originals.keys.sorted()
        #expect(
            try await harness.vault(["recover", "--tokens-file", "-", "--reason", "AUDIT"], input: tokens.joined(separator: "\n")).status
                == 0)
        #expect(try await harness.vault(["audit", "verify"]).status == 0)

        try await asOwner(
            harness, "ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET outcome = 'unknown' WHERE seq = 1;" + Self.rechain)
        // The plain chain is consistent again: only the MACs tell.
        #expect(
            try await harness.scalar(
                """
                SELECT count(*) FROM audit_log a LEFT JOIN audit_log p ON p.seq = a.seq - 1
                WHERE a.prev_hash <> coalesce(p.hash, decode(repeat('00', 32), 'hex'))
                """) == 0)
        let edited = try await harness.vault(["audit", "verify"])
        #expect(edited.status == 65)
        #expect(edited.errors.contains("broken at sequence 1"))
        #expect(edited.errors.contains("MAC does not match"))
    }

    @Test("database owner: a deleted, an inserted or a MAC-stripped row is named even with the chain recomputed")
    func deletedInsertedStripped() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let tokens = harness.originals.keys.sorted()
        #expect(
            try await harness.vault(["recover", "--tokens-file", "-", "--reason", "AUDIT"], input: tokens.joined(separator: "\n")).status
                == 0)
        try await asOwner(
            harness,
            """
            ALTER TABLE audit_log DISABLE TRIGGER USER;
            DELETE FROM audit_log WHERE seq = 2;
            UPDATE audit_log SET seq = seq - 1 WHERE seq > 2;
            """ + Self.rechain)
        let deleted = try await harness.vault(["audit", "verify"])
        #expect(deleted.status == 65)
        #expect(deleted.errors.contains("broken at sequence 2"))

        let other = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        #expect(try await other.vault(["recover", "--token", other.originals.keys.sorted()[0], "--reason", "AUDIT"]).status == 0)
        try await asOwner(
            other,
            """
            ALTER TABLE audit_log DISABLE TRIGGER USER;
            INSERT INTO audit_log (seq, at, os_user, db_role, action, subject, reason, outcome, prev_hash, hash, mac_key_version, mac)
            SELECT 3, now(), 'alice', 'compliance_alice', 'recover', 'ip_t1_x', 'planted', 'revealed', hash, hash, 1,
                   decode(repeat('ab', 32), 'hex') FROM audit_log WHERE seq = 2;
            """ + Self.rechain)
        let inserted = try await other.vault(["audit", "verify"])
        #expect(inserted.status == 65)
        #expect(inserted.errors.contains("broken at sequence 3"))

        try await asOwner(other, "ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET mac = NULL, mac_key_version = NULL;")
        let stripped = try await other.vault(["audit", "verify"])
        #expect(stripped.status == 65)
        #expect(stripped.errors.contains("has no MAC"))
    }

    @Test("database owner: rows cut off the end pass a plain verify, and fail against a head recorded earlier")
    func tailCut() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let tokens = harness.originals.keys.sorted()
        #expect(
            try await harness.vault(["recover", "--tokens-file", "-", "--reason", "A"], input: tokens[0..<3].joined(separator: "\n")).status
                == 0)
        let first = try await harness.vault(["audit", "verify"])
        let head = try #require(first.output.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        #expect(head.hasPrefix("4:"))  // the key registration, then 3 recoveries
        #expect(
            try await harness.vault(["recover", "--tokens-file", "-", "--reason", "B"], input: tokens[3..<6].joined(separator: "\n")).status
                == 0)
        #expect(try await harness.vault(["audit", "verify", "--head", head]).status == 0)

        try await asOwner(harness, "ALTER TABLE audit_log DISABLE TRIGGER USER; DELETE FROM audit_log WHERE seq >= 4")
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
        let cut = try await harness.vault(["audit", "verify", "--head", head])
        #expect(cut.status == 65)
        #expect(cut.errors.contains("cut off the end"))
    }

    @Test("a client cannot stamp another role or time on its rows: the server recomputes each hash")
    func serverStampsRoleAndTime() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let actor = try AuditActor.current(store: harness.keys.store)
        let connection = try await harness.connect()
        await #expect {
            try await connection.transaction { connection in
                let real = try AuditLog.head(on: connection)
                let impostor = AuditLog.Head(sequence: real.sequence, hash: real.hash, at: real.at, databaseRole: "someone_else")
                let rows = try AuditLog.prepare(
                    [AuditRecord(action: "recover", subject: "x", reason: "r", outcome: "revealed")],
                    after: impostor, actor: actor)
                try connection.query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8)", AuditLog.rowParameters(rows, actions: true))
            }
        } throws: { "\($0)".contains("does not hash as the server computes it") }
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 0)
    }

    @Test("key-file writer: a swapped public key file (same version, another key) is refused by ingest and rewrap")
    func swappedPublicKey() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let attacker = try TestKeys.create()
        let ingestKeys = try harness.keys.ingestKeysDirectory()
        for directory in [ingestKeys, harness.keys.store.directory] {
            try FileManager.default.removeItem(atPath: "\(directory)/recovery-public.json")
            try FileManager.default.copyItem(atPath: attacker.store.recoveryPublicPath, toPath: "\(directory)/recovery-public.json")
        }
        let file = NSTemporaryDirectory() + "swap-\(UUID().uuidString).jsonl"
        try (mixedBodies(count: 3).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let ingest = try await harness.ingest(["run", "--from-file", file])
        #expect(ingest.status == 65)
        #expect(ingest.errors.contains("recovery key v1 in \(ingestKeys)/recovery-public.json is not the key registered for v1"))
        #expect(try await harness.scalar("SELECT count(*) FROM data_keys WHERE created_by <> 'vault'") == 1)  // only the harness's own

        let rewrap = try await harness.vault(["rewrap", "--reason", "SWAP"])
        #expect(rewrap.status == 65)
        #expect(rewrap.errors.contains("recovery key v1"))

        // The same for the tokenization key.
        let tokenizationHarness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let target = try tokenizationHarness.keys.ingestKeysDirectory() + "/tokenization.json"
        try FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: attacker.store.tokenizationPath, toPath: target)
        let swapped = try await tokenizationHarness.ingest(["run", "--from-file", file])
        #expect(swapped.status == 65, "\(swapped.errors)")
        #expect(swapped.errors.contains("tokenization key v1"))
    }

    @Test("key-file writer: an unregistered active v2 is refused; registered by the owner too, rewrap still refuses (no private half)")
    func addedRecoveryKey() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let attacker = try X25519.PrivateKey()
        let store = harness.keys.store
        let planted = try store.recoveryPublicKeys().adding(attacker.publicKey, version: 2, createdAt: "2026-12-01T00:00:00Z")
        try store.save(planted)
        let unregistered = try await harness.vault(["rewrap", "--reason", "PLANT"])
        #expect(unregistered.status == 78)
        #expect(unregistered.errors.contains("recovery key v2") && unregistered.errors.contains("not registered"))

        let fingerprint = try #require(planted.key(version: 2)).fingerprint
        let owner = try await harness.connect()
        try await owner.execute(
            "INSERT INTO key_versions (kind, version, state, fingerprint) VALUES ('recovery', 2, 'active', $1)",
            [.bytes(fingerprint)])
        let registered = try await harness.vault(["rewrap", "--reason", "PLANT"])
        #expect(registered.status != 0)
        #expect(registered.errors.contains("has no private key"))
        #expect(try await harness.scalar("SELECT count(*) FROM data_keys WHERE recovery_key_version = 2") == 0)
    }

    @Test("key-file writer: a group/world-writable or foreign-owned key file, public ones included, is refused")
    func insecureKeyFiles() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let ingestKeys = try harness.keys.ingestKeysDirectory()
        for name in ["tokenization.json", "recovery-public.json"] {
            let path = "\(ingestKeys)/\(name)"
            let original = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! Int
            chmod(path, 0o666)
            let result = try await harness.ingest(["run", "--from-file", "/dev/null"])
            #expect(result.status == 77)
            #expect(result.errors.contains("\(path) is writable by group or others (mode 0666)"))
            chmod(path, mode_t(original))
            if geteuid() == 0 {
                chown(path, 65_534, 65_534)
                let foreign = try await harness.ingest(["run", "--from-file", "/dev/null"])
                #expect(foreign.status == 77)
                #expect(foreign.errors.contains("belongs to uid 65534"))
                chown(path, 0, 0)
            }
        }
        #expect(try await harness.ingest(["run", "--from-file", "/dev/null"]).status == 0)
    }

    @Test("retiring a recovery key is refused while any data key would be left without a private key that opens it")
    func retireWithoutWayBack() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 4))
        #expect(try await harness.vault(["keys", "rotate", "--recovery", "--reason", "R", "--scrypt-log-n", "14"]).status == 0)
        let rewrap = try await harness.vault(["rewrap", "--reason", "R"])
        #expect(rewrap.status == 0, "\(rewrap.errors)")
        // The private half of v2 is lost (or was swapped): nothing would open the data keys.
        let store = harness.keys.store
        try store.save(try store.recoveryPrivateKeys().removing(version: 2))
        let retire = try await harness.vault(["keys", "retire", "--yes", "--recovery", "1", "--reason", "R"])
        #expect(retire.status != 0)
        #expect(retire.errors.contains("no remaining private key opens"))
        #expect(try store.recoveryPrivateKeys().versions == [1])
    }

    @Test("compliance login: no direct read of sealed values or wrapped keys, no direct audit insert; vault recover works and audits")
    func complianceLogin() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let role = try await harness.loginRole(in: "pseudonymizer_vault")
        let connection = try await harness.connect(as: role)
        for statement in [
            "SELECT ciphertext FROM vault_entries", "SELECT nonce FROM vault_entries", "SELECT * FROM vault_entries",
            "SELECT wrapped_key FROM data_keys", "SELECT sealed_body FROM quarantine",
            "INSERT INTO audit_log (seq, at, os_user, db_role, action, subject, reason, outcome, prev_hash, hash) VALUES (99, now(), 'a', 'b', 'c', 'd', 'e', 'f', '\\x00', '\\x00')",
            "UPDATE vault_entries SET nonce = NULL", "SELECT audit_insert('a', 1, '{}', '{}', '{}', '{}', '{}', '{}')",
        ] {
            await #expect {
                try await connection.execute(statement)
            } throws: { ($0 as? PostgresError)?.sqlState == "42501" }
        }
        // Claiming a token is unknown does not release it either.
        let token = harness.originals.keys.sorted()[0]
        let actor = try AuditActor.current(store: harness.keys.store)
        await #expect {
            try await connection.transaction { connection in
                let head = try AuditLog.head(on: connection)
                let rows = try AuditLog.prepare(
                    [AuditRecord(action: "recover", subject: token, reason: "r", outcome: "unknown")], after: head, actor: actor)
                var parameters = AuditLog.rowParameters(rows, actions: false)
                parameters.insert(.text("recover"), at: 2)
                return try connection.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)", parameters).count
            }
        } throws: { ($0 as? PostgresError)?.sqlState == "40001" }

        let recovered = try await harness.vault(["recover", "--token", token, "--reason", "ROLE"], user: role)
        #expect(recovered.status == 0, "\(recovered.errors)")
        #expect(recovered.output == harness.originals[token]! + "\n")
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM audit_log WHERE db_role = $1 AND subject = $2 AND outcome = 'revealed'",
                [.text(role), .text(token)]) == 1)
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("rotation login: bulk access for its jobs, no audit rewrite; its runs are audited")
    func rotationLogin() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 20))
        let role = try await harness.loginRole(in: "pseudonymizer_rotation")
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT"], user: role).status == 0)
        let retokenize = try await harness.vault(["retokenize", "--reason", "ROT"], user: role)
        #expect(retokenize.status == 0, "\(retokenize.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE db_role = $1 AND action = 'retokenize'", [.text(role)]) == 2)
        let connection = try await harness.connect(as: role)
        for statement in [
            "UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log", "DELETE FROM user_logins",
            "SELECT * FROM vault_reveal('a', 1, 'recover', '{}', '{}', '{}', '{}', '{}', NULL, NULL)",
        ] {
            await #expect {
                try await connection.execute(statement)
            } throws: { ($0 as? PostgresError)?.sqlState == "42501" }
        }
    }
}

@Suite("encrypted transport by default")
struct TransportTests {
    @Test("loopback and Unix sockets need nothing; any other host defaults to verify-full unless sslmode is set")
    func policy() throws {
        #expect(TransportSecurity(hosts: ["127.0.0.1"], explicitMode: nil).defaultMode == nil)
        #expect(TransportSecurity(hosts: ["/var/run/postgresql"], explicitMode: nil).defaultMode == nil)
        #expect(TransportSecurity(hosts: [], explicitMode: nil).defaultMode == nil)
        #expect(TransportSecurity(hosts: ["::1", "127.3.4.5", "[::1]"], explicitMode: nil).defaultMode == nil)
        // Names are looked up (a hosts file without them falls through to DNS): only literal loopback is local.
        #expect(TransportSecurity(hosts: ["localhost"], explicitMode: nil).defaultMode == "verify-full")
        #expect(TransportSecurity(hosts: ["db.localhost"], explicitMode: nil).defaultMode == "verify-full")
        #expect(TransportSecurity(hosts: ["db.internal"], explicitMode: nil).defaultMode == "verify-full")
        #expect(TransportSecurity(hosts: ["127.0.0.1", "10.0.0.5"], explicitMode: nil).defaultMode == "verify-full")
        #expect(TransportSecurity(hosts: ["db.internal"], explicitMode: "require").defaultMode == nil)
        #expect(try TransportSecurity.of(conninfo: "postgresql://u@db.example.com:5432/x").defaultMode == "verify-full")
        #expect(try TransportSecurity.of(conninfo: "postgresql://u@db.example.com/x?sslmode=disable").explicitMode == "disable")
        #expect(try TransportSecurity.of(conninfo: "host=/tmp dbname=x").defaultMode == nil)
        #expect(try TransportSecurity.of(conninfo: "host=127.0.0.1,db.example.com dbname=x").defaultMode == "verify-full")
    }

    @Test("service= is resolved as libpq resolves it before the TLS default applies; an unknown service counts as off the machine")
    func serviceFiles() throws {
        let file = NSTemporaryDirectory() + "pg_service-\(UUID().uuidString).conf"
        try """
        # services
        [local]
        host=127.0.0.1
        port=5432

        [remote]
        host = db.example.com
        dbname=logins

        [trusted]
        host=db.internal
        sslmode=disable
        """.write(toFile: file, atomically: true, encoding: .utf8)
        let environment = ["PGSERVICEFILE": file, "PGSYSCONFDIR": "/nonexistent"]
        #expect(try TransportSecurity.of(conninfo: "service=local", environment: environment).defaultMode == nil)
        #expect(try TransportSecurity.of(conninfo: "service=remote", environment: environment).defaultMode == "verify-full")
        #expect(try TransportSecurity.of(conninfo: "service=trusted", environment: environment).explicitMode == "disable")
        #expect(try TransportSecurity.of(conninfo: "service=remote host=127.0.0.1", environment: environment).defaultMode == nil)
        #expect(
            try TransportSecurity.of(conninfo: "dbname=x", environment: environment.merging(["PGSERVICE": "remote"]) { $1 }).defaultMode
                == "verify-full")
        #expect(try TransportSecurity.of(conninfo: "service=missing", environment: environment).defaultMode == "verify-full")
    }

    @Test("off the machine, sslmode allow, prefer and require are refused before anything is sent (no password to an unverified server)")
    func unverifiedModesRefused() async throws {
        for mode in ["allow", "prefer", "require"] {
            let security = try TransportSecurity.of(conninfo: "postgresql://u:secret@192.0.2.1/x?sslmode=\(mode)", environment: [:])
            #expect(throws: PostgresError.self) { try security.checkBeforeConnecting() }
            // A documentation address nothing answers on: a connection attempt would fail as
            // unreachable; this is refused as insecure, so nothing was tried.
            await #expect {
                _ = try await TestDatabase.connect("postgresql://u:secret@192.0.2.1/x?sslmode=\(mode)&connect_timeout=2")
            } throws: {
                ($0 as? PostgresError)?.code == .insecureTransport && "\($0)".contains("does not verify the database server's identity")
            }
        }
        for mode in ["disable", "verify-ca", "verify-full"] {
            try TransportSecurity.of(conninfo: "postgresql://u@192.0.2.1/x?sslmode=\(mode)", environment: [:]).checkBeforeConnecting()
        }
        try TransportSecurity.of(conninfo: "postgresql://u@127.0.0.1/x?sslmode=prefer", environment: [:]).checkBeforeConnecting()
    }

    @Test(
        "a server on a non-loopback address: refused without sslmode and with a plaintext fallback, allowed with sslmode=disable or verified TLS"
    )
    func nonLoopbackServer() async throws {
        let address = try await nonLoopbackAddress()
        let plain = try await PrivatePostgres.start(extraAddresses: [address])
        defer { Task { await plain.destroy() } }
        let remote = "postgresql://postgres@\(address):\(plain.port)/pseudonymizer"

        await #expect {
            _ = try await TestDatabase.connect(remote)
        } throws: { "\($0)".contains("TLS is required by default") && "\($0)".contains("sslmode=disable explicitly") }
        await #expect {
            _ = try await TestDatabase.connect(remote + "?sslmode=prefer")
        } throws: { ($0 as? PostgresError)?.code == .insecureTransport && "\($0)".contains("set sslmode=disable explicitly") }
        let allowed = try await TestDatabase.connect(remote + "?sslmode=disable")
        #expect(try await allowed.query("SELECT 1 AS one")[0].int("one") == 1)

        let migrate = try await runProgram(try TestEnvironment.executable("ingest"), ["migrate", "--database-url", remote])
        #expect(migrate.status == 69)
        #expect(migrate.errors.contains("TLS is required by default"))
        #expect(migrate.errors.split(separator: "\n").count == 1)

        let tls = try await PrivatePostgres.start(extraAddresses: [address]) { root in try await makeTLSFiles(in: root, for: address) }
        defer { Task { await tls.destroy() } }
        let verified = try await TestDatabase.connect(
            "postgresql://postgres@\(address):\(tls.port)/pseudonymizer?sslrootcert=\(tls.root)/ca.pem")
        #expect(try await verified.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0].bool("ssl"))
    }
}

@Suite("a database owner who replaces the audited functions")
struct ReplacedFunctionTests {
    @Test("vault_reveal replaced by one that appends no audit row: vault notices and shows nothing")
    func unauditedReveal() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let owner = try await harness.connect()
        try await owner.executeScript(
            """
            CREATE OR REPLACE FUNCTION vault_reveal(p_os_user text, p_mac_key_version integer, p_action text, p_subjects text[],
                                                    p_reasons text[], p_outcomes text[], p_hashes bytea[], p_macs bytea[],
                                                    p_request bigint, p_user_id text)
                RETURNS TABLE (token text, field text, token_key_version integer, data_key_id text, nonce bytea, ciphertext bytea,
                               recovery_key_version integer, wrapped_key bytea)
                LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN
                RETURN QUERY
                    SELECT v.token, v.field, v.token_key_version, v.data_key_id::text, v.nonce, v.ciphertext, d.recovery_key_version,
                           d.wrapped_key
                    FROM vault_entries v LEFT JOIN data_keys d ON d.id = v.data_key_id WHERE v.token = ANY(p_subjects);
            END $$;
            """)
        let token = harness.originals.keys.sorted()[0]
        let result = try await harness.vault(["recover", "--token", token, "--reason", "UNAUDITED"])
        #expect(result.status != 0)
        #expect(result.output.isEmpty)
        #expect(result.errors.contains("did not store the audit row"))
        #expect(!result.errors.contains(harness.originals[token]!))
    }
}
