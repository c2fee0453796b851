import Foundation
import KeyCustody
import Postgres
import Pseudonymization
import Storage
import TestSupport
import Testing
import VaultCrypto

@testable import VaultAdmin

/// Each test attacks what the tools trust with exactly one holder's rights
/// (an ingest login, the rotation login, the database owner, a key-file
/// writer) and shows the database or the tools refuse it.
@Suite("no role plants, rolls back or restamps what the tools trust")
struct StateChangeAttackTests {
    static func isRefused(_ error: any Error, _ sqlState: String) -> Bool { (error as? PostgresError)?.sqlState == sqlState }

    /// The first IP token of the harness and its original.
    static func ipToken(_ harness: VaultHarness) throws -> (token: String, value: String) {
        let token = try #require(harness.originals.keys.filter { $0.hasPrefix("ip_t1_") }.sorted().first)
        return (token, harness.originals[token]!)
    }

    /// A data key wrapped to the active recovery public key, as anyone with
    /// `recovery-public.json` can make, recorded in `data_keys` on `connection`.
    static func dataKey(_ harness: VaultHarness, on connection: PostgresConnection) async throws -> VaultSealer {
        let id = UUID().uuidString.lowercased()
        let key = try SecureBytes.random(count: 32)
        try await connection.execute(
            "INSERT INTO data_keys (id, recovery_key_version, wrapped_key, created_by) VALUES ($1, 1, $2, 'attacker')",
            [.text(id), .bytes(try DataKeyWrap.wrap(key, dataKeyID: id, to: try harness.keys.store.recoveryPublicKeys().active))])
        return try VaultSealer(dataKeyID: id, key: key)
    }

    @Test(
        "ingest login: no tombstone and no unregistered version; a false entry at a value's next token is replaced by retokenize, audited")
    func ingestLoginPlants() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 6))
        let (token, value) = try Self.ipToken(harness)
        let ingest = try await harness.connect(as: try await harness.loginRole(in: "pseudonymizer_ingest"))
        let sealer = try await Self.dataKey(harness, on: ingest)
        // A tombstone, for a stored value or one never seen: the erasure columns are not ingest's.
        let unseen = try await harness.keys.minter().token(TokenRequest(field: .ip, value: "198.51.100.77"), version: 1)
        for planted in [token, unseen] {
            await #expect {
                try await ingest.execute(
                    """
                    INSERT INTO vault_entries (token, field, token_key_version, data_key_id, erased_at, erased_by)
                    VALUES ($1, 'ip', 1, $2::uuid, now(), 'root as compliance_alice')
                    """, [.text(planted), .text(sealer.dataKeyID)])
            } throws: {
                // On Citus the rights are checked by the vault's trigger, after the
                // shard's unique index has refused a stored token.
                Self.isRefused($0, "42501") || (TestDatabase.onCitus && planted == token && Self.isRefused($0, "23505"))
            }
        }
        // Nor an entry under a version the database has not registered.
        let unregistered = "ip_t9_" + String(repeating: "A", count: 43)
        let (nonce, ciphertext) = try sealer.seal("203.0.113.9", token: unregistered, field: .ip)
        await #expect {
            try await ingest.execute(
                "INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext) VALUES ($1, 'ip', 9, $2::uuid, $3, $4)",
                [.text(unregistered), .text(sealer.dataKeyID), .bytes(nonce), .bytes(ciphertext)])
        } throws: { Self.isRefused($0, "PSK02") }

        // After a rotation ingest holds the next key: it puts a false value at the
        // stored value's next token before retokenize gets there.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "PLANT"]).status == 0)
        let next = try await harness.keys.minter().token(TokenRequest(field: .ip, value: value), version: 2)
        await #expect {
            try await ingest.execute(
                """
                INSERT INTO vault_entries (token, field, token_key_version, data_key_id, erased_at, erased_by)
                VALUES ($1, 'ip', 2, $2::uuid, now(), 'root as compliance_alice')
                """, [.text(next), .text(sealer.dataKeyID)])
        } throws: { Self.isRefused($0, "42501") }
        let (falseNonce, falseCiphertext) = try sealer.seal("203.0.113.9", token: next, field: .ip)
        try await ingest.execute(
            "INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext) VALUES ($1, 'ip', 2, $2::uuid, $3, $4)",
            [.text(next), .text(sealer.dataKeyID), .bytes(falseNonce), .bytes(falseCiphertext)])
        let retokenize = try await harness.vault(["retokenize", "--reason", "PLANT"])
        #expect(retokenize.status == 0, "\(retokenize.errors)")
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'retokenize.replace' AND subject = $1", [.text(next)])
                == 1)
        let recovered = try await harness.vault(["recover", "--token", next, "--reason", "PLANT"])
        #expect(recovered.status == 0, "\(recovered.errors)")
        #expect(recovered.output == value + "\n")
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("database owner: a tombstone without an authenticated forget row is an integrity failure (65), audited, never 'erased by …'")
    func plantedTombstone() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let (token, value) = try Self.ipToken(harness)
        let owner = try await harness.connect()
        try await owner.execute(
            "UPDATE vault_entries SET nonce = NULL, ciphertext = NULL, erased_at = now(), erased_by = 'root as compliance_alice' WHERE token = $1",
            [.text(token)])
        let recover = try await harness.vault(["recover", "--token", token, "--reason", "FRAME"])
        #expect(recover.status == 65)
        #expect(recover.errors.contains("integrity check failed for token \(token)"))
        #expect(!recover.errors.contains("compliance_alice") && !recover.errors.contains(value))
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE subject = $1 AND outcome = 'integrity-failure'", [.text(token)])
                == 1)
        // Retokenize does not carry it as an erasure either.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "FRAME"]).status == 0)
        let retokenize = try await harness.vault(["retokenize", "--reason", "FRAME"])
        #expect(retokenize.status == 65)
        #expect(retokenize.errors.contains("cannot move token \(token)"))
    }

    @Test(
        "rotation login: no raw DELETE, UPDATE or INSERT on the vault, login tokens, lineage, key versions or wraps; functions only inside an audited run"
    )
    func rotationLoginRawWrites() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 4))
        let role = try await harness.loginRole(in: "pseudonymizer_rotation")
        let rotation = try await harness.connect(as: role)
        let token = try Self.ipToken(harness).token
        for statement in [
            "DELETE FROM vault_entries", "UPDATE vault_entries SET erased_at = now()",
            "INSERT INTO vault_entries (token, field, token_key_version, data_key_id, erased_at) SELECT 'x', 'ip', 1, data_key_id, now() FROM vault_entries LIMIT 1",
            "UPDATE user_logins SET masked_ip = 'ip_t1_junk'",
            "INSERT INTO key_versions (kind, version, state, enforced) VALUES ('tokenization', 99, 'active', true)",
            "UPDATE key_versions SET enforced = true", "UPDATE key_versions SET state = 'retired'",
            "INSERT INTO token_lineage (old_token, new_token, field, old_version, new_version) VALUES ('a', 'b', 'ip', 1, 2)",
            "UPDATE data_keys SET wrapped_key = '\\x00'", "UPDATE data_keys SET recovery_key_version = 1",
            "INSERT INTO vault_suppressions (tag, field, audit_seq) VALUES (decode(repeat('00', 32), 'hex'), 'ip', 1)",
        ] {
            await #expect("\(statement)") { try await rotation.execute(statement) } throws: { Self.isRefused($0, "42501") }
        }
        // The functions do nothing without a run this login began (and a run begins with its audit row).
        for statement in [
            "SELECT key_enforce(1, 1)", "SELECT * FROM retokenize_drop(1, 1)",
            "SELECT key_register(1, 'tokenization', 99, 'active', decode(repeat('00', 32), 'hex'))",
            "SELECT retokenize_rewrite_rows(1, 'user_logins', 0, 1000)",
        ] {
            await #expect("\(statement)") { try await rotation.execute(statement) } throws: { Self.isRefused($0, "PSK03") }
        }
        // A run begun by hand is an audit row, and one not written with the audit key breaks verify.
        try await rotation.transaction { connection in
            let head = try AuditLog.head(on: connection)
            try connection.query(
                "SELECT rotation_begin('mallory', 1, 'keys.rotate', 'tokenization v99', 'by hand', 'created', $1, decode(repeat('ab', 32), 'hex'))",
                [
                    .bytes(
                        try AuditLog.rowHash(
                            previous: head.hash, sequence: head.sequence + 1, at: head.at, osUser: "mallory", databaseRole: role,
                            record: AuditRecord(action: "keys.rotate", subject: "tokenization v99", reason: "by hand", outcome: "created")))
                ])
        }
        let verify = try await harness.vault(["audit", "verify"])
        #expect(verify.status == 65)
        #expect(verify.errors.contains("MAC does not match"))
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token = $1", [.text(token)]) == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM key_versions WHERE version = 99") == 0)
    }

    @Test(
        "key-file writer: a rolled-back recovery-public.json (or tokenization.json) is refused by ingest, and by the database for new data keys"
    )
    func rolledBackKeyFiles() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let ingestKeys = try harness.keys.ingestKeysDirectory()
        let old = try Data(contentsOf: URL(fileURLWithPath: "\(ingestKeys)/recovery-public.json"))
        #expect(try await harness.vault(["keys", "rotate", "--recovery", "--reason", "ROLL", "--scrypt-log-n", "14"]).status == 0)
        try harness.keys.distribute()
        // The writer puts back the pre-rotation public key (registered, right fingerprint, not retired).
        try old.write(to: URL(fileURLWithPath: "\(ingestKeys)/recovery-public.json"))
        let file = NSTemporaryDirectory() + "roll-\(UUID().uuidString).jsonl"
        try (mixedBodies(count: 8).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let keysBefore = try await harness.scalar("SELECT count(*) FROM data_keys WHERE recovery_key_version = 1")
        let ingest = try await harness.ingest(["run", "--from-file", file, "--startup-timeout", "3"])
        #expect(ingest.status == 75)
        #expect(
            ingest.errors.contains("recovery key v1 is the active one") && ingest.errors.contains("database's active recovery key is v2"))
        #expect(try await harness.scalar("SELECT count(*) FROM data_keys WHERE recovery_key_version = 1") == keysBefore)
        // An ingest login cannot wrap a data key to it by hand either.
        let login = try await harness.connect(as: try await harness.loginRole(in: "pseudonymizer_ingest"))
        await #expect {
            _ = try await Self.dataKey(harness, on: login)
        } throws: { Self.isRefused($0, "PSK05") }

        // The same for tokenization, before retokenize enforces anything.
        try harness.keys.distribute()
        let tokenization = try Data(contentsOf: URL(fileURLWithPath: "\(ingestKeys)/tokenization.json"))
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROLL"]).status == 0)
        try tokenization.write(to: URL(fileURLWithPath: "\(ingestKeys)/tokenization.json"))
        let stale = try await harness.ingest(["run", "--from-file", file, "--startup-timeout", "3"])
        #expect(stale.status == 75)
        #expect(stale.errors.contains("database's active tokenization key is v2"))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 3)

        // Waiting for its files, a replica survives the SIGHUP an operator sends with
        // them, and starts once they are there.
        let waiting = try startProgram(
            "ingest", ["run", "--from-file", file], environment: ["KEYS_DIR": ingestKeys, "DATABASE_URL": harness.databaseURL])
        defer { if waiting.isRunning { kill(waiting.processIdentifier, SIGKILL) } }
        try await Task.sleep(for: .seconds(1))
        kill(waiting.processIdentifier, SIGHUP)
        try harness.keys.distribute()
        kill(waiting.processIdentifier, SIGHUP)
        try await waitForExit(waiting)
        #expect(waiting.terminationStatus == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 11)
    }

    @Test("key-file writer: a key file that is a symlink into a directory others may write is refused (77)")
    func symlinkedKeyFile() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let ingestKeys = try harness.keys.ingestKeysDirectory()
        let open = NSTemporaryDirectory() + "open-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: open, withIntermediateDirectories: false)
        chmod(open, 0o777)
        defer { try? FileManager.default.removeItem(atPath: open) }
        try FileManager.default.moveItem(atPath: "\(ingestKeys)/tokenization.json", toPath: "\(open)/tokenization.json")
        try FileManager.default.createSymbolicLink(
            atPath: "\(ingestKeys)/tokenization.json", withDestinationPath: "\(open)/tokenization.json")
        let ingest = try await harness.ingest(["run", "--from-file", "/dev/null"])
        #expect(ingest.status == 77)
        #expect(ingest.errors.contains("the directory \(open)") && ingest.errors.contains("is writable by group or others"))
        // Through a directory that others may not write, the same link is fine (as Kubernetes' ..data links).
        chmod(open, 0o755)
        #expect(try await harness.ingest(["run", "--from-file", "/dev/null"]).status == 0)
    }

    @Test("database owner: a replaced audit_head() cannot make vault authenticate a row as another role, or back-dated")
    func replacedAuditHead() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let (token, value) = try Self.ipToken(harness)
        let owner = try await harness.connect()
        for (role, at) in [
            ("'compliance_bob'", "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"),
            ("session_user", "'2020-01-01T00:00:00.000000Z'"),
        ] {
            try await owner.executeScript(
                """
                CREATE OR REPLACE FUNCTION audit_head(OUT head_seq bigint, OUT head_hash bytea, OUT at text, OUT db_role text)
                    LANGUAGE plpgsql SECURITY DEFINER AS $$
                BEGIN
                    SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
                    at := \(at);
                    db_role := \(role);
                END $$;
                """)
            let rows = try await harness.scalar("SELECT count(*) FROM audit_log")
            let recover = try await harness.vault(["recover", "--token", token, "--reason", "RESTAMP"])
            #expect(recover.status == 65)
            #expect(recover.output.isEmpty && !recover.errors.contains(value))
            #expect(recover.errors.contains(role == "session_user" ? "one of the clocks is wrong" : "with role compliance_bob"))
            #expect(try await harness.scalar("SELECT count(*) FROM audit_log") == rows)
        }
    }

    @Test("database owner: every MAC stripped and the chain recomputed: verify refuses, and anchor will not vouch for it")
    func strippedAndAnchored() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        #expect(try await harness.vault(["recover", "--token", try Self.ipToken(harness).token, "--reason", "A"]).status == 0)
        let owner = try await harness.connect()
        try await owner.executeScript(
            "ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET mac = NULL, mac_key_version = NULL;" + AttackTests.rechain)
        let anchor = try await harness.vault(["audit", "anchor", "--reason", "UPGRADE"])
        #expect(anchor.status != 0)
        #expect(anchor.errors.contains("made when every audit row was authenticated"))
        let verify = try await harness.vault(["audit", "verify"])
        #expect(verify.status == 65)
        #expect(verify.errors.contains("broken at sequence 1") && verify.errors.contains("its MAC was removed"))
    }

    @Test("database owner + audit key: a row stamped with a time before the previous row's fails verify")
    func backwardsTime() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let owner = try await harness.connect()
        try await owner.executeScript(
            """
            CREATE OR REPLACE FUNCTION audit_head(OUT head_seq bigint, OUT head_hash bytea, OUT at text, OUT db_role text)
                LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN
                SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_log a ORDER BY a.seq DESC LIMIT 1;
                at := '2020-01-01T00:00:00.000000Z';
                db_role := session_user;
            END $$;
            """)
        let actor = try AuditActor.current(store: harness.keys.store)
        // Past the client's checks (who holds the audit key can write any row).
        try await owner.transaction { connection in
            let row = try connection.query("SELECT head_seq, head_hash, at, db_role FROM audit_head()")[0]
            let head = AuditLog.Head(
                sequence: Int64(try row.int("head_seq")), hash: try row.bytes("head_hash"), at: try row.string("at"),
                databaseRole: try row.string("db_role"))
            let entries = try AuditLog.prepare(
                [AuditRecord(action: "recover", subject: "x", reason: "r", outcome: "unknown")], after: head, actor: actor)
            try connection.query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8)", AuditLog.rowParameters(entries, actions: true))
        }
        let verify = try await harness.vault(["audit", "verify"])
        #expect(verify.status == 65)
        #expect(verify.errors.contains("broken at sequence 2") && verify.errors.contains("times only go forward"))
    }

    @Test("database owner: the ciphertext written back after forget (from a backup) is never shown; lookup says erased")
    func restoredCiphertext() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let (token, value) = try Self.ipToken(harness)
        let owner = try await harness.connect()
        let saved = try await owner.query("SELECT nonce, ciphertext FROM vault_entries WHERE token = $1", [.text(token)])[0]
        let forget = try await harness.vault(["forget", "--token", token, "--reason", "ERASE-1", "--yes", "--json"])
        #expect(forget.status == 0, "\(forget.errors)")
        #expect(forget.output.contains("\"suppressed\":true"))
        try await owner.execute(
            "UPDATE vault_entries SET nonce = $2, ciphertext = $3, erased_at = NULL, erased_by = NULL, erasure_audit_seq = NULL WHERE token = $1",
            [.text(token), .bytes(try saved.bytes("nonce")), .bytes(try saved.bytes("ciphertext"))])
        let recover = try await harness.vault(["recover", "--token", token, "--reason", "AFTER-RESTORE"])
        #expect(recover.status == 66)
        #expect(recover.output.isEmpty && !recover.errors.contains(value))
        #expect(recover.errors.contains("was erased on") && recover.errors.contains("vault forget"))
        let lookup = try await harness.vault(["lookup", "--ip-file", "-", "--reason", "AFTER-RESTORE", "--json"], input: value + "\n")
        #expect(lookup.status == 0, "\(lookup.errors)")
        #expect(lookup.output.contains("\"vault\":\"erased\"") && lookup.output.contains("\"suppressed\":true"))
        #expect(!lookup.output.contains("\"vault\":\"stored\""))
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test(
        "forget, rotate, ingest the value again: no recoverable entry under the new key; the erasure is carried, audited; later rotations finish"
    )
    func erasureSticksAcrossRotations() async throws {
        let bodies = mixedBodies(count: 5)
        let harness = try await VaultHarness.make(bodies: bodies)
        let (token, value) = try Self.ipToken(harness)
        #expect(try await harness.vault(["forget", "--token", token, "--reason", "GDPR-7", "--yes"]).status == 0)
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT"]).status == 0)
        try harness.keys.distribute()
        let retokenize = try await harness.vault(["retokenize", "--reason", "ROT", "--json"])
        #expect(retokenize.status == 0, "\(retokenize.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'forget.carry' AND outcome = 'erased'") == 1)
        let carried = try #require(
            try await harness.connect().query("SELECT new_token FROM token_lineage WHERE old_token = $1", [.text(token)]).first
        ).string("new_token")
        let recoverCarried = try await harness.vault(["recover", "--token", carried, "--reason", "CHECK"])
        #expect(recoverCarried.status == 66)
        #expect(recoverCarried.errors.contains("carried by vault retokenize"))

        // The same value arrives again (a replayed file, a new login) under v2.
        let file = NSTemporaryDirectory() + "again-\(UUID().uuidString).jsonl"
        let again =
            #"{"user_id": "returning", "app_version": "1.2.3", "device_type": "ios", "ip": "\#(value)", "locale": null, "device_id": "dev-new"}"#
        try (again + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let ingest = try await harness.ingest(["run", "--from-file", file])
        #expect(ingest.status == 0, "\(ingest.errors)")
        let newToken = try await harness.keys.minter().token(TokenRequest(field: .ip, value: value), version: 2)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip = $1", [.text(newToken)]) == 1)
        #expect(
            try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token = $1 AND erased_at IS NULL", [.text(newToken)]) == 0)
        let lookup = try await harness.vault(["lookup", "--ip-file", "-", "--reason", "CHECK", "--json"], input: value + "\n")
        #expect(lookup.output.contains("\"suppressed\":true") && !lookup.output.contains("\"vault\":\"stored\""))
        // An ingest login that ignores the suppression and seals the value there itself: still not shown.
        let ingestLogin = try await harness.connect(as: try await harness.loginRole(in: "pseudonymizer_ingest"))
        let sealer = try await Self.dataKey(harness, on: ingestLogin)
        let (nonce, ciphertext) = try sealer.seal(value, token: newToken, field: .ip)
        try await ingestLogin.execute(
            "INSERT INTO vault_entries (token, field, token_key_version, data_key_id, nonce, ciphertext) VALUES ($1, 'ip', 2, $2::uuid, $3, $4)",
            [.text(newToken), .text(sealer.dataKeyID), .bytes(nonce), .bytes(ciphertext)])
        let replanted = try await harness.vault(["recover", "--token", newToken, "--reason", "CHECK"])
        #expect(replanted.status == 66)
        #expect(replanted.output.isEmpty && replanted.errors.contains("was erased by vault forget"))

        // Another rotation stops at that entry, named, until it is erased; then it
        // moves everything, the rows of values never in the vault too, and v2 can go.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT-3"]).status == 0)
        try harness.keys.distribute()
        let refused = try await harness.vault(["retokenize", "--reason", "ROT-3"])
        #expect(refused.status == 65)
        #expect(refused.errors.contains("cannot move token \(newToken): its value was erased by vault forget"))
        #expect(try await harness.vault(["forget", "--token", newToken, "--reason", "ROT-3", "--yes"]).status == 0)
        let third = try await harness.vault(["retokenize", "--reason", "ROT-3"])
        #expect(third.status == 0, "\(third.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t3_%'") == 0)
        #expect(try await harness.vault(["keys", "retire", "--yes", "--tokenization", "2", "--reason", "ROT-3"]).status == 0)
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("a writer that saw no suppression lately still leaves out a value vault forget has just suppressed")
    func staleSuppressionHint() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let minter = try harness.keys.minter()
        let value = "198.51.100.9"
        let request = TokenRequest(field: .ip, value: value)
        let token = try await minter.token(request, version: 1)
        let tag = try await minter.suppressionTags([request])[0]
        let owner = try await harness.connect()
        // As vault forget leaves it (the test writes the row directly: the hint is what is tested).
        try await owner.execute("INSERT INTO vault_suppressions (tag, field, audit_seq) VALUES ($1, 'ip', 1)", [.bytes(tag)])
        let sealer = try await Self.dataKey(harness, on: owner)
        let (nonce, ciphertext) = try sealer.seal(value, token: token, field: .ip)
        let day = UTCDate.string(fromMilliseconds: SentTime.noon(0))
        let item = BatchItem(
            receiptID: Array(repeating: 7, count: 16), sentDay: day,
            payload: .login(
                LoginRow(
                    userID: "u", deviceType: "ios", maskedIP: token, maskedDeviceID: "dev_t1_" + String(repeating: "B", count: 43),
                    locale: nil, appVersion: AppVersion("1.0")!, createDate: day),
                [
                    VaultEntryRecord(
                        token: token, field: .ip, tokenKeyVersion: 1, dataKeyID: sealer.dataKeyID, nonce: nonce, ciphertext: ciphertext,
                        suppressionTag: tag)
                ]))
        let hint = WriterHints()
        hint.anySuppressed = false
        let result = try await owner.transaction { connection in
            try BatchWriter.write([item], keys: .init(tokenization: 1, recovery: 1), hints: hint, on: connection)
        }
        #expect(result.loginRows == 1 && result.suppressedEntries == 1)
        #expect(hint.anySuppressed)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token = $1", [.text(token)]) == 0)
    }

    @Test("a wrong passphrase reveals nothing and writes no 'revealed' row")
    func wrongPassphrase() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let wrong = NSTemporaryDirectory() + "wrong-\(UUID().uuidString)"
        _ = FileManager.default.createFile(
            atPath: wrong, contents: Data("not the passphrase at all\n".utf8), attributes: [.posixPermissions: 0o600])
        for command in [
            ["recover", "--token", try Self.ipToken(harness).token, "--reason", "WRONG"],
            ["lookup", "--ip", "::1", "--reason", "WRONG"],
        ] {
            let result = try await harness.vault(command, environment: ["VAULT_PASSPHRASE_FILE": wrong])
            #expect(result.status == 77, "\(result.errors)")
        }
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action IN ('recover', 'lookup')") == 0)
    }

    @Test("ingest login: no partition for a day outside the window (9999-01-01, or long past)")
    func farPartitions() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let ingest = try await harness.connect(as: try await harness.loginRole(in: "pseudonymizer_ingest"))
        let before = try await harness.scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ingest_receipts'::regclass")
        for days in ["{9999-01-01}", "{1990-06-01}"] {
            await #expect {
                try await ingest.execute("SELECT ingest_prepare_partitions($1::date[])", [.text(days)])
            } throws: { Self.isRefused($0, "PSK07") }
            await #expect {
                try await ingest.execute("SELECT * FROM ingest_begin_batch(1, $1::date[], '{}')", [.text(days)])
            } throws: { Self.isRefused($0, "PSK07") }
        }
        #expect(try await harness.scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ingest_receipts'::regclass") == before)
    }
}
