import Foundation
import Postgres
import Pseudonymization
import TestSupport
import Testing
import VaultAdmin
import VaultCrypto

@Suite("vault against data written by ingest")
struct VaultTests {
    @Test("recover returns the exact original for IPv4, IPv6 and device ids, one audit row per reveal")
    func recoverExact() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 50))
        #expect(harness.originals.count == 100)
        let tokens = harness.originals.keys.sorted()
        let result = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "TICKET-1", "--json"],
            input: tokens.joined(separator: "\n"))
        #expect(result.status == 0)
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == tokens.count)
        var mismatches = 0
        for (token, line) in zip(tokens, lines) {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            if object?["token"] as? String != token || object?["value"] as? String != harness.originals[token] { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'recover' AND outcome = 'revealed'") == 100)
        // IPv6 is stored canonical, mapped IPv4 as IPv4. (Booleans: a failure must not print originals.)
        let hasCanonicalIPv6 = harness.originals.values.contains("2001:db8::5:1")
        let hasMappedForm = harness.originals.values.contains { $0.hasPrefix("::ffff") }
        #expect(hasCanonicalIPv6)
        #expect(!hasMappedForm)

        let single = try await harness.vault(["recover", "--token", tokens[0], "--reason", "TICKET-2"])
        #expect(single.status == 0)
        let singleMatches = single.output == harness.originals[tokens[0]]! + "\n"
        #expect(singleMatches)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 101)
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE reason = 'TICKET-2' AND subject = $1", [.text(tokens[0])]) == 1)
    }

    @Test("a data key whose wrapped key comes only on a tombstone's row still opens the live entries (retokenize sends it once per key)")
    func wrappedKeyOnTombstone() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 6))
        let tokens = harness.originals.keys.sorted()
        #expect(try await harness.vault(["forget", "--yes", "--token", tokens[0], "--reason", "T"]).status == 0)
        let connection = try await harness.connect()
        var entries: [String: SealedEntry] = [:]
        for row in try await connection.query(
            """
            SELECT v.token, v.field, v.token_key_version, v.data_key_id::text AS data_key_id, v.nonce, v.ciphertext,
                   to_char(v.erased_at, 'YYYY-MM-DD') AS erased_at, v.erased_by, d.recovery_key_version,
                   CASE WHEN v.erased_at IS NOT NULL THEN d.wrapped_key END AS wrapped_key
            FROM vault_entries v JOIN data_keys d ON d.id = v.data_key_id
            """)
        {
            let entry = try SealedEntry(row)
            entries[entry.token] = entry
        }
        let live = Array(tokens.dropFirst())
        let reader = VaultReader(minter: try harness.keys.minter(), privateKey: { try await harness.keys.privateKey(version: $0) })
        let opened = try await reader.open(live, entries: entries, erasures: [:])
        let allOpened = zip(live, opened).allSatisfy { token, result in (try? result.get().value) == harness.originals[token] }
        #expect(allOpened)
    }

    @Test("--reason is required: a usage error, nothing revealed, nothing audited")
    func reasonRequired() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let token = harness.originals.keys.sorted()[0]
        let result = try await harness.vault(["recover", "--token", token])
        #expect(result.status == 64)
        #expect(result.output.isEmpty)
        #expect(result.errors.contains("--reason"))
        let blank = try await harness.vault(["recover", "--token", token, "--reason", "  "])
        #expect(blank.status == 64)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 0)
    }

    @Test("bulk recovery of 10,000 tokens, unknown ones reported per line")
    func bulk() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 5000))
        var tokens = harness.originals.keys.sorted()
        #expect(tokens.count == 10_000)
        tokens.insert("ip_t1_" + String(repeating: "A", count: 43), at: 5000)
        let result = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "BULK-1"], input: tokens.joined(separator: "\n"))
        #expect(result.status == 66, "\(result.errors)")  // one token was unknown
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        try #require(lines.count == tokens.count)
        #expect(lines[5000].contains("error: token") && lines[5000].contains("not in the vault"))
        var mismatches = 0
        for (token, line) in zip(tokens, lines) where token != tokens[5000] {
            if line != "\(token)\t\(harness.originals[token] ?? "?")" { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == tokens.count)
    }

    @Test("a flipped ciphertext byte or swapped rows fail with an integrity error naming the token, never a wrong value")
    func tampering() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 10))
        let tokens = harness.originals.keys.filter { $0.hasPrefix("ip_") }.sorted()
        let connection = try await harness.connect()
        try await connection.execute(
            "UPDATE vault_entries SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) WHERE token = $1",
            [.text(tokens[0])])
        // Rows swapped one by one (a self-join update is not distributable on Citus).
        let sealed = try await connection.query(
            "SELECT token, nonce, ciphertext FROM vault_entries WHERE token IN ($1, $2) ORDER BY token",
            [.text(tokens[1]), .text(tokens[2])])
        try #require(sealed.count == 2)
        for (row, other) in [(sealed[0], sealed[1]), (sealed[1], sealed[0])] {
            try await connection.execute(
                "UPDATE vault_entries SET nonce = $2, ciphertext = $3 WHERE token = $1",
                [.text(try row.string("token")), .bytes(try other.bytes("nonce")), .bytes(try other.bytes("ciphertext"))])
        }
        for token in tokens[0...2] {
            let result = try await harness.vault(["recover", "--token", token, "--reason", "TAMPER"])
            #expect(result.status == 65)
            #expect(result.output.isEmpty)
            #expect(result.errors.contains("integrity check failed for token \(token)"))
        }
        #expect(try await harness.vault(["recover", "--token", tokens[3], "--reason", "TAMPER"]).status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE outcome = 'integrity-failure'") == 3)
    }

    @Test("an edited, deleted or reordered audit row breaks verification at that row")
    func auditTampering() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let tokens = harness.originals.keys.sorted()
        #expect(
            try await harness.vault(["recover", "--tokens-file", "-", "--reason", "AUDIT"], input: tokens.joined(separator: "\n")).status
                == 0)
        let intact = try await harness.vault(["audit", "verify"])
        #expect(intact.status == 0)
        #expect(intact.output.contains("intact: 7 rows, head 7:"))  // the key registration, then 6 recoveries

        // Only a superuser who disables the trigger can change rows; the chain still tells.
        let connection = try await harness.connect()
        try await connection.executeScript(
            "ALTER TABLE audit_log DISABLE TRIGGER USER; UPDATE audit_log SET reason = 'EDITED' WHERE seq = 3")
        let edited = try await harness.vault(["audit", "verify"])
        #expect(edited.status == 65)
        #expect(edited.errors.contains("broken at sequence 3"))
        try await connection.executeScript("UPDATE audit_log SET reason = 'AUDIT' WHERE seq = 3; DELETE FROM audit_log WHERE seq = 4")
        let deleted = try await harness.vault(["audit", "verify"])
        #expect(deleted.status == 65)
        #expect(deleted.errors.contains("broken at sequence 4"))
    }

    @Test("the audit log refuses UPDATE, DELETE and TRUNCATE even from the table owner")
    func appendOnly() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        #expect(try await harness.vault(["lookup", "--ip", "::1", "--reason", "R"]).status == 0)
        let connection = try await harness.connect()
        for statement in ["UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
            await #expect(throws: PostgresError.self) { try await connection.execute(statement) }
        }
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 1)
    }

    @Test("forget erases in place; recovering afterwards says when and by whom; lookup finds the rows")
    func forgetAndLookup() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 5) + mixedBodies(count: 1))
        let lookup = try await harness.vault(["lookup", "--ip", "2001:db8::0:1", "--reason", "SAR-1", "--json"])
        #expect(lookup.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(lookup.output.utf8)) as? [String: Any]
        let matches = object?["matches"] as? [[String: Any]] ?? []
        #expect(matches.count == 1)
        #expect(matches.first?["rows"] as? Int == 2)
        let token = try #require(matches.first?["token"] as? String)
        let isTheLookedUpAddress = harness.originals[token] == "2001:db8::1"
        #expect(isTheLookedUpAddress)

        let forget = try await harness.vault(["forget", "--yes", "--token", token, "--reason", "GDPR-1"])
        #expect(forget.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token = $1 AND ciphertext IS NULL", [.text(token)]) == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip = $1", [.text(token)]) == 2)
        let recover = try await harness.vault(["recover", "--token", token, "--reason", "AFTER"])
        #expect(recover.status == 66)
        #expect(recover.errors.contains("was erased on"))
        #expect(recover.errors.contains(" by "))
        #expect(try await harness.vault(["forget", "--yes", "--token", token, "--reason", "AGAIN"]).output.contains("already erased"))
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("actionable errors: wrong passphrase, no private key here, malformed token, unreachable database")
    func actionableErrors() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let token = harness.originals.keys.sorted()[0]
        let wrong = NSTemporaryDirectory() + "wrong-\(UUID().uuidString)"
        _ = FileManager.default.createFile(
            atPath: wrong, contents: Data("not the passphrase at all".utf8), attributes: [.posixPermissions: 0o600])
        let badPassphrase = try await harness.vault(["recover", "--token", token, "--reason", "R", "--passphrase-file", wrong])
        #expect(badPassphrase.status == 77)
        #expect(badPassphrase.errors.contains("passphrase does not unlock"))
        let noPrivateKey = try await harness.vault([
            "recover", "--token", token, "--reason", "R", "--keys-dir", try harness.keys.ingestKeysDirectory(),
        ])
        #expect(noPrivateKey.status == 77)
        #expect(noPrivateKey.errors.contains("no recovery private key"))
        let malformed = try await harness.vault(["recover", "--token", "1.2.3.4", "--reason", "R"])
        #expect(malformed.status == 65)
        #expect(malformed.errors.contains("is not a token"))
        let unreachable = try await harness.vault(["audit", "verify", "--database-url", "postgresql://x@127.0.0.1:1/none"])
        #expect(unreachable.status == 69)
        #expect(unreachable.errors.contains("cannot reach PostgreSQL"))
    }
}

@Suite("separation of duties in PostgreSQL")
struct RoleTests {
    @Test("the ingestion role writes the vault but cannot read it; ingest runs end to end under it")
    func ingestRole() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let role = try await harness.loginRole(in: "pseudonymizer_ingest")
        let connection = try await harness.connect(as: role)
        for statement in [
            "SELECT ciphertext FROM vault_entries", "SELECT * FROM vault_entries", "SELECT wrapped_key FROM data_keys",
            "SELECT * FROM audit_log", "SELECT * FROM user_logins", "DELETE FROM user_logins",
            // Partitions: made only through ingest_prepare_partitions, never dropped.
            "SELECT partition_ensure('ingest_receipts', '2030-01-01', '2030-01-02', 'x')", "CREATE TABLE public.x (a int)",
            "DROP TABLE ingest_receipts_legacy", "ALTER TABLE ingest_receipts DETACH PARTITION ingest_receipts_legacy",
        ] {
            await #expect {
                try await connection.query(statement)
            } throws: { ($0 as? PostgresError)?.sqlState == "42501" }
        }
        await #expect {
            try await connection.query(
                "SELECT ingest_prepare_partitions(ARRAY(SELECT DATE '2030-01-01' + i FROM generate_series(1, 63) i))")
        } throws: { ($0 as? PostgresError)?.sqlState == "54000" }
        let file = NSTemporaryDirectory() + "role-\(UUID().uuidString).jsonl"
        try (mixedBodies(count: 10).joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--from-file", file, "--sent-at", UTCDate.string(fromMilliseconds: SentTime.noon(-1)) + "T12:00:00Z", "--keys-dir",
                try harness.keys.ingestKeysDirectory(),
                "--database-url", try harness.url(as: role),
            ])
        #expect(run.status == 0, "\(run.errors)")
        // Lines 1–3 repeat the harness's file (same position, same content, same
        // send day: already claimed), so 7 rows are new.
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 10)
    }

    @Test("the vault role recovers and appends audit rows but cannot change or delete them")
    func vaultRole() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let role = try await harness.loginRole(in: "pseudonymizer_vault")
        let token = harness.originals.keys.sorted()[0]
        let recovered = try await harness.vault(["recover", "--token", token, "--reason", "ROLE"], user: role)
        #expect(recovered.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE db_role = $1", [.text(role)]) == 1)
        let connection = try await harness.connect(as: role)
        // (It may insert, erase and drop vault entries and rewrite token columns: rotation jobs need that.)
        for statement in [
            "UPDATE audit_log SET reason = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log",
            "DELETE FROM user_logins", "UPDATE user_logins SET locale = 'x'", "INSERT INTO user_logins (user_id) VALUES ('x')",
        ] {
            await #expect {
                try await connection.execute(statement)
            } throws: { ($0 as? PostgresError)?.sqlState == "42501" }
        }
    }

    @Test("fail closed: when the audit row cannot be written, nothing is revealed")
    func failClosed() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        // A role that can read the vault but not append to the audit log.
        let role = "reader_\(UUID().uuidString.prefix(8).lowercased())"
        let admin = try await harness.connect()
        try await admin.executeScript(
            """
            CREATE ROLE \(role) LOGIN;
            GRANT SELECT ON vault_entries, data_keys, audit_log TO \(role);
            """)
        let token = harness.originals.keys.sorted()[0]
        let result = try await harness.vault(["recover", "--token", token, "--reason", "SHOULD-FAIL"], user: role)
        #expect(result.status != 0)
        #expect(result.output.isEmpty)
        #expect(!result.errors.contains(harness.originals[token]!))
    }
}
