import Foundation
import Postgres
import Storage
import TestSupport
import Testing
import VaultCrypto

/// Compliance work as officers are handed it: requests about people, under
/// four-eyes approval, and quarantined messages to review.
@Suite("compliance by person and request")
struct ComplianceTests {
    func json(_ output: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any]
    }

    static func body(_ user: String, _ ip: String, _ device: String, type: String = "ios") -> String {
        #"{"user_id": "\#(user)", "app_version": "1.0", "device_type": "\#(type)", "ip": "\#(ip)", "locale": null, "device_id": "\#(device)"}"#
    }

    /// alice: two rows on 10.9.0.1 (shared with bob), one on 10.9.0.2; carol apart.
    static let people = [
        body("alice", "10.9.0.1", "dev-a"), body("alice", "10.9.0.1", "dev-a"), body("alice", "10.9.0.2", "dev-a2"),
        body("bob", "10.9.0.1", "dev-b"), body("carol", "10.9.0.3", "dev-c"),
    ]

    func token(_ harness: VaultHarness, of value: String) throws -> String {
        try #require(harness.originals.first { $0.value == value }?.key)
    }

    /// Calls vault_reveal as `role` with rows prepared as the tool would, but with the outcomes given.
    func rawReveal(
        _ harness: VaultHarness, as role: String, action: String, subjects: [String], outcomes: [String], reason: String,
        request: Int64? = nil, userID: String? = nil
    ) async throws -> Int {
        let connection = try await harness.connect(as: role)
        let actor = try AuditActor.current(store: harness.keys.store)
        return try await connection.transaction { connection in
            let parameters = try revealParameters(
                on: connection, actor: actor, action: action, subjects: subjects, outcomes: outcomes, reason: reason, request: request,
                userID: userID)
            return try connection.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", parameters).count
        }
    }

    @Test("subject access by user: exactly the user's rows and tokens, each value revealed and audited, other users only counted")
    func subjectAccess() async throws {
        let harness = try await VaultHarness.make(bodies: Self.people)
        let role = try await harness.loginRole(in: "pseudonymizer_vault")
        let result = try await harness.vault(["subject", "--user-id", "alice", "--reason", "SAR-9", "--json"], user: role)
        #expect(result.status == 0, "\(result.errors)")
        let report = try #require(json(result.output))
        let rows = try #require(report["rows"] as? [[String: Any]])
        #expect(rows.count == 3)
        // Compared into booleans: a failure prints no value.
        let addressesMatch = Set(rows.compactMap { $0["ip"] as? String }) == ["10.9.0.1", "10.9.0.2"]
        let devicesMatch = Set(rows.compactMap { $0["device_id"] as? String }) == ["dev-a", "dev-a2"]
        #expect(addressesMatch && devicesMatch)
        let tokens = try #require(report["tokens"] as? [[String: Any]])
        let byToken = Dictionary(uniqueKeysWithValues: tokens.map { ($0["token"] as! String, $0) })
        let expected = try ["10.9.0.1", "10.9.0.2", "dev-a", "dev-a2"].map { try token(harness, of: $0) }
        #expect(Set(byToken.keys) == Set(expected))
        #expect(byToken[expected[0]]?["other_users"] as? Int == 1 && byToken[expected[0]]?["rows"] as? Int == 2)
        #expect(expected.dropFirst().allSatisfy { byToken[$0]?["other_users"] as? Int == 0 })
        let valuesMatch = tokens.allSatisfy { harness.originals[$0["token"] as! String] == $0["value"] as? String }
        #expect(valuesMatch)
        // Nobody else's data, not even their names.
        let others = ["bob", "carol", "10.9.0.3", "dev-b", "dev-c"]
        #expect(!others.contains { result.output.contains($0) })
        // One row names the user, one per token; searchable by user.
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM audit_log WHERE action = 'subject' AND subject = 'user:alice' AND outcome = 'subject-access'") == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'subject' AND outcome = 'revealed'") == 4)
        let search = try await harness.vault(["audit", "log", "--user-id", "alice", "--json"])
        #expect(search.output.split(separator: "\n").count == 1)

        // The export: 0600, never over an existing file.
        let export = NSTemporaryDirectory() + "sar-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: export) }
        let exported = try await harness.vault(["subject", "--user-id", "alice", "--reason", "SAR-9", "--export", export], user: role)
        #expect(exported.status == 0, "\(exported.errors)")
        let attributes = try FileManager.default.attributesOfItem(atPath: export)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let csv = try String(contentsOfFile: export, encoding: .utf8)
        let exportMatches = csv.split(separator: "\r\n").count == 4 && csv.contains("\"10.9.0.2\"") && !others.contains { csv.contains($0) }
        #expect(exportMatches)
        let again = try await harness.vault(["subject", "--user-id", "alice", "--reason", "SAR-9", "--export", export], user: role)
        #expect(again.status == 78 && again.errors.contains("exists already"))

        // A compliance login cannot use subject access to reveal another user's token.
        let carols = try token(harness, of: "10.9.0.3")
        await #expect {
            try await rawReveal(
                harness, as: role, action: "subject", subjects: ["user:alice", carols], outcomes: ["subject-access", "revealed"],
                reason: "SAR-9", userID: "alice")
        } throws: { ($0 as? PostgresError)?.sqlState == "PSK08" }
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("forget by user erases only what the user's rows alone carry; a shared token is kept and named, unless --include-shared")
    func forgetByUser() async throws {
        let harness = try await VaultHarness.make(bodies: Self.people)
        let shared = try token(harness, of: "10.9.0.1")
        let dryRun = try await harness.vault(["forget", "--user-id", "alice", "--dry-run", "--reason", "ERASE-1"])
        #expect(dryRun.status == 0, "\(dryRun.errors)")
        #expect(dryRun.output.contains("\(shared)\tkept: also on rows of 1 other user"))
        #expect(dryRun.output.split(separator: "\n").filter { $0.contains("would erase") }.count == 3)
        let wide = try await harness.vault(["forget", "--user-id", "alice", "--include-shared", "--dry-run", "--reason", "ERASE-1"])
        #expect(wide.output.contains("\(shared)\twould erase, on 3 rows of 2 users"))

        let done = try await harness.vault(["forget", "--user-id", "alice", "--yes", "--reason", "ERASE-1", "--json"])
        #expect(done.status == 0, "\(done.errors)")
        let summary = try #require(json(done.output))
        #expect(summary["erased"] as? Int == 3)
        #expect((summary["kept_shared"] as? [[String: Any]])?.first?["token"] as? String == shared)
        #expect(done.errors.contains("kept \(shared): also on rows of 1 other user"))
        // Bob's address is still his; alice's own values are gone.
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 3)
        let bob = try await harness.vault(["recover", "--token", shared, "--reason", "ERASE-1-check"])
        let bobKeepsHisAddress = bob.output == "10.9.0.1\n"
        #expect(bob.status == 0 && bobKeepsHisAddress)
        let alice = try await harness.vault(["recover", "--token", try token(harness, of: "10.9.0.2"), "--reason", "ERASE-1-check"])
        #expect(alice.status == 66 && alice.errors.contains("erased"))
    }

    @Test(
        "four-eyes under the always policy: an unapproved reveal releases nothing and is audited refused; self-approval is refused; an approved request works once, within its scope, for its requester"
    )
    func fourEyes() async throws {
        let harness = try await VaultHarness.make(bodies: Self.people)
        let requester = try await harness.loginRole(in: "pseudonymizer_vault")
        let approver = try await harness.loginRole(in: "pseudonymizer_vault")
        let owner = try await harness.connect()
        try await owner.execute("UPDATE approval_policy SET mode = 'always'")
        let target = try token(harness, of: "10.9.0.2")
        let other = try token(harness, of: "10.9.0.3")

        // Unapproved: refused, nothing shown, audited as refused.
        let refused = try await harness.vault(["recover", "--token", target, "--reason", "SAR-1"], user: requester)
        #expect(refused.status == 77)
        #expect(refused.output.isEmpty && !refused.errors.contains("10.9.0.2"))
        #expect(refused.errors.contains("four-eyes policy is always"))
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE subject = $1 AND outcome = 'refused'", [.text(target)]) == 1)
        // A login calling the function itself with 'revealed' rows gets nothing either.
        await #expect(throws: PostgresError.self) {
            try await rawReveal(harness, as: requester, action: "recover", subjects: [target], outcomes: ["revealed"], reason: "SAR-1")
        }
        // Erasure too.
        let erase = try await harness.vault(["forget", "--token", other, "--yes", "--reason", "SAR-1"], user: requester)
        #expect(erase.status == 77)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 0)

        // The request, and its approval by someone else only.
        let asked = try await harness.vault(
            ["recover", "--token", target, "--reason", "SAR-1", "--request-approval", "--json"], user: requester)
        #expect(asked.status == 0, "\(asked.errors)")
        let id = try #require(json(asked.output)?["request"] as? Int)
        let early = try await harness.vault(["recover", "--token", target, "--reason", "SAR-1", "--request", "\(id)"], user: requester)
        #expect(early.status == 77 && early.errors.contains("not approved yet"))
        let selfApproval = try await harness.vault(["approve", "\(id)", "--yes"], user: requester)
        #expect(selfApproval.status == 77 && selfApproval.errors.contains("is yours"))
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'approve' AND outcome = 'self-approval'") == 1)
        // Even a raw update of the request is not the requester's to make.
        await #expect(throws: PostgresError.self) {
            let connection = try await harness.connect(as: requester)
            try await connection.execute("UPDATE access_requests SET approved_by = 'someone' WHERE id = \(id)")
        }
        let approved = try await harness.vault(["approve", "\(id)", "--yes"], user: approver)
        #expect(approved.status == 0, "\(approved.errors)")
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM access_requests WHERE id = $1 AND approved_by = $2", [.int(id), .text(approver)]) == 1)

        // Only the requester, only its reason, only its scope, only once.
        let stranger = try await harness.vault(["recover", "--token", target, "--reason", "SAR-1", "--request", "\(id)"], user: approver)
        #expect(stranger.status == 77 && stranger.output.isEmpty)
        let wrongReason = try await harness.vault(
            ["recover", "--token", target, "--reason", "SAR-2", "--request", "\(id)"], user: requester)
        #expect(wrongReason.status == 64)
        await #expect {
            try await rawReveal(
                harness, as: requester, action: "recover", subjects: [other], outcomes: ["revealed"], reason: "SAR-1 [request #\(id)]",
                request: Int64(id))
        } throws: { ($0 as? PostgresError)?.sqlState == "PSK08" }
        // Another login's appended row claiming the request's use does not use it up.
        let approverConnection = try await harness.connect(as: approver)
        let actor = try AuditActor.current(store: harness.keys.store)
        try await approverConnection.transaction { connection in
            try AuditLog.append(
                [AuditRecord(action: "recover", subject: target, reason: "SAR-1 [request #\(id)]", outcome: "revealed")], actor: actor,
                on: connection)
        }
        let used = try await harness.vault(["recover", "--token", target, "--reason", "SAR-1", "--request", "\(id)"], user: requester)
        #expect(used.status == 0, "\(used.errors)")
        let approvedValueShown = used.output == "10.9.0.2\n"
        #expect(approvedValueShown)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM audit_log WHERE reason = $1 AND outcome = 'revealed' AND db_role = $2",
                [.text("SAR-1 [request #\(id)]"), .text(requester)]) == 1)
        let twice = try await harness.vault(["recover", "--token", target, "--reason", "SAR-1", "--request", "\(id)"], user: requester)
        #expect(twice.status == 77 && twice.output.isEmpty && twice.errors.contains("used for this already"))
        // A reason cannot pretend to be under a request.
        await #expect(throws: PostgresError.self) {
            try await rawReveal(
                harness, as: requester, action: "recover", subjects: [target], outcomes: ["refused"], reason: "SAR-1 [request #\(id)]")
        }

        // Erasure under an approved request: used up by it.
        let askErase = try await harness.vault(
            ["forget", "--token", other, "--reason", "ERASE-2", "--request-approval", "--json"], user: requester)
        let eraseID = try #require(json(askErase.output)?["request"] as? Int)
        #expect(try await harness.vault(["approve", "\(eraseID)", "--yes"], user: approver).status == 0)
        let erased = try await harness.vault(
            ["forget", "--token", other, "--yes", "--reason", "ERASE-2", "--request", "\(eraseID)"], user: requester)
        #expect(erased.status == 0, "\(erased.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 1)
        #expect(
            try await harness.scalar("SELECT count(*) FROM access_requests WHERE id = $1 AND used_at IS NOT NULL", [.int(eraseID)]) == 1)
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    /// Audit rows for `vault_reveal` as `role` would prepare them, as raw parameters ($1…$10).
    func revealParameters(
        on connection: isolated PostgresConnection, actor: AuditActor, action: String, subjects: [String], outcomes: [String],
        reason: String, request: Int64?, userID: String?
    ) throws -> [PostgresValue] {
        let rows = try AuditLog.prepare(
            zip(subjects, outcomes).map { AuditRecord(action: action, subject: $0, reason: reason, outcome: $1) },
            after: try AuditLog.head(on: connection), actor: actor)
        var parameters = AuditLog.rowParameters(rows, actions: false)
        parameters.insert(.text(action), at: 2)
        return parameters + [request.map { .int($0) } ?? .null, .optionalText(userID)]
    }

    @Test(
        "a compliance login's raw calls: arrays that do not start at 1, appended erasure rows, surplus suppressions, an expired request in an old transaction, a second session racing the bulk allowance, another isolation level: all refused"
    )
    func rawCallsRefused() async throws {
        let harness = try await VaultHarness.make(bodies: Self.people)
        let requester = try await harness.loginRole(in: "pseudonymizer_vault")
        let approver = try await harness.loginRole(in: "pseudonymizer_vault")
        let actor = try AuditActor.current(store: harness.keys.store)
        let owner = try await harness.connect()
        let carols = try token(harness, of: "10.9.0.3")
        let asked = try await harness.vault(
            ["subject", "--user-id", "alice", "--reason", "SAR-8", "--request-approval", "--json"], user: requester)
        let id = Int64(try #require(json(asked.output)?["request"] as? Int))
        #expect(try await harness.vault(["approve", "\(id)", "--yes"], user: approver).status == 0)
        let connection = try await harness.connect(as: requester)

        // Arrays from 0: subscripts would see alice's row first while unnest hands out carol's token.
        await #expect {
            try await connection.transaction { connection in
                var parameters = try revealParameters(
                    on: connection, actor: actor, action: "subject", subjects: [carols, "user:alice"],
                    outcomes: ["revealed", "subject-access"], reason: "SAR-8 [request #\(id)]", request: id, userID: "alice")
                for index in 3...7 {
                    guard case .textArray(let values) = parameters[index] else {
                        guard case .byteArrays(let values) = parameters[index] else { continue }
                        parameters[index] = .text("[0:1]={" + values.map { "\"\\\\x\(Hex.encode($0!))\"" }.joined(separator: ",") + "}")
                        continue
                    }
                    parameters[index] = .text("[0:1]={" + values.map { "\"\($0!)\"" }.joined(separator: ",") + "}")
                }
                return try connection.query(
                    "SELECT * FROM vault_reveal($1, $2, $3, $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[], $9, $10)",
                    parameters
                ).count
            }
        } throws: { ($0 as? PostgresError)?.message.contains("one dimension and start at 1") == true }

        // An erasure row appended directly would make a value unrevealable without an erasure.
        await #expect {
            try await connection.transaction { connection in
                try AuditLog.append(
                    [AuditRecord(action: "forget", subject: carols, reason: "no request", outcome: "erased")], actor: actor, on: connection)
            }
        } throws: { ($0 as? PostgresError)?.sqlState == "42501" }

        // Suppressions beyond the values erased (here none: the token is unknown).
        await #expect {
            try await connection.transaction { connection in
                let rows = try AuditLog.prepare(
                    [AuditRecord(action: "forget", subject: "ip_t1_" + String(repeating: "A", count: 43), reason: "x", outcome: "unknown")],
                    after: try AuditLog.head(on: connection), actor: actor)
                try connection.query(
                    "SELECT vault_forget($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
                    AuditLog.rowParameters(rows, actions: false) + [
                        .byteArrays([[UInt8](repeating: 7, count: 32)]), .textArray(["ip"]),
                    ])
            }
        } throws: { ($0 as? PostgresError)?.message.contains("at most one suppression per value erased") == true }

        // A request that expires while an old transaction is open is expired in it.
        try await owner.execute("UPDATE access_requests SET expires_at = clock_timestamp() + interval '1 second' WHERE id = $1", [.int(id)])
        await #expect {
            try await connection.transaction { connection in
                _ = try connection.query("SELECT 1")
                Thread.sleep(forTimeInterval: 1.5)
                let parameters = try revealParameters(
                    on: connection, actor: actor, action: "subject", subjects: ["user:alice"], outcomes: ["subject-access"],
                    reason: "SAR-8 [request #\(id)]", request: id, userID: "alice")
                return try connection.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", parameters).count
            }
        } throws: { ($0 as? PostgresError)?.message.contains("expired") == true }

        // Bulk: a second session of the same login waits for the first and counts what it revealed.
        try await owner.execute("UPDATE approval_policy SET mode = 'bulk', bulk_tokens = 1")
        let first = try token(harness, of: "10.9.0.1")
        let second = try token(harness, of: "dev-c")
        let other = try await harness.connect(as: requester)
        let (revealed, racing) = try await connection.transaction { connection -> (Int, Task<Int, any Error>) in
            let parameters = try revealParameters(
                on: connection, actor: actor, action: "recover", subjects: [first], outcomes: ["revealed"], reason: "B-2", request: nil,
                userID: nil)
            let count = try connection.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", parameters).count
            // The other session, which saw nothing of this one yet, claims a reveal too; it waits for the chain lock.
            let racing = Task {
                try await other.transaction { other in
                    let rows = try AuditLog.prepare(
                        [AuditRecord(action: "recover", subject: second, reason: "B-2", outcome: "revealed")],
                        after: AuditLog.Head(sequence: 0, hash: AuditLog.genesis, at: "", databaseRole: requester), actor: actor)
                    var parameters = AuditLog.rowParameters(rows, actions: false)
                    parameters.insert(.text("recover"), at: 2)
                    return try other.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)", parameters).count
                }
            }
            Thread.sleep(forTimeInterval: 0.5)
            return (count, racing)
        }
        #expect(revealed == 1)
        // Counted after the first committed: over the allowance, so its 'revealed' rows are refused.
        await #expect {
            _ = try await racing.value
        } throws: { ($0 as? PostgresError)?.sqlState == "40001" }
        // Another isolation level would count with an old snapshot: refused.
        await #expect {
            try await other.transaction { other in
                _ = try other.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                let parameters = try revealParameters(
                    on: other, actor: actor, action: "recover", subjects: [second], outcomes: ["refused"], reason: "B-3", request: nil,
                    userID: nil)
                return try other.query("SELECT * FROM vault_reveal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", parameters).count
            }
        } throws: { ($0 as? PostgresError)?.sqlState == "25000" }
    }

    @Test("bulk policy: a login's reveals over the day's allowance need a request, however they are split")
    func bulkPolicy() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 6))
        let owner = try await harness.connect()
        try await owner.execute("UPDATE approval_policy SET mode = 'bulk', bulk_tokens = 3")
        let role = try await harness.loginRole(in: "pseudonymizer_vault")
        let tokens = harness.originals.keys.sorted()
        let first = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "B-1"], user: role, input: tokens[0..<3].joined(separator: "\n"))
        #expect(first.status == 0, "\(first.errors)")
        let fourth = try await harness.vault(["recover", "--token", tokens[3], "--reason", "B-1"], user: role)
        #expect(fourth.status == 77 && fourth.output.isEmpty)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE outcome = 'refused'") == 1)
    }

    @Test("quarantine review: counts by day and code, a body shown (audited), and a replay through ingest written exactly once")
    func quarantineReplay() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        // The database refuses rows a constraint the owner added forbids: ingest quarantines them.
        let owner = try await harness.connect()
        try await owner.execute("ALTER TABLE user_logins ADD CONSTRAINT no_zed CHECK (device_type <> 'zed')")
        let input = NSTemporaryDirectory() + "quarantine-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: input) }
        try (Self.body("zed-user", "10.7.0.1", "dev-z", type: "zed") + "\n" + #"{"not": "a login"}"# + "\n")
            .write(toFile: input, atomically: true, encoding: .utf8)
        let ingested = try await harness.ingest(["run", "--from-file", input])
        #expect(ingested.status == 0, "\(ingested.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 2)

        let summary = try await harness.vault(["quarantine", "list", "--json"])
        let groups = summary.output.split(separator: "\n").compactMap { json(String($0)) }
        #expect(Set(groups.compactMap { $0["reason"] as? String }) == ["database_rejected", "missing_field"])
        let today = try #require(groups.first?["day"] as? String)
        let listed = try await harness.vault(["quarantine", "list", "--day", today, "--code", "database_rejected", "--json"])
        let id = try #require(json(String(listed.output.split(separator: "\n")[0]))?["id"] as? String)
        let listShowsNoBody = !listed.output.contains("10.7.0.1")
        #expect(listShowsNoBody)

        let shown = try await harness.vault(["quarantine", "show", "--id", id, "--reason", "Q-1"])
        #expect(shown.status == 0, "\(shown.errors)")
        let bodyShown = shown.output.contains(#""device_type": "zed""#)
        #expect(bodyShown)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM audit_log WHERE action = 'quarantine-show' AND subject = $1 AND outcome = 'revealed'",
                [.text("quarantine:\(id)")]) == 1)

        // Fixed: the constraint goes, the message is replayed, twice; it is written once.
        try await owner.execute("ALTER TABLE user_logins DROP CONSTRAINT no_zed")
        var files: [String] = []
        defer { for file in files { try? FileManager.default.removeItem(atPath: file) } }
        for round in 1...2 {
            let file = NSTemporaryDirectory() + "replay-\(UUID().uuidString).txt"
            files.append(file)
            let replay = try await harness.vault(["quarantine", "replay", "--id", id, "--to-file", file, "--reason", "Q-1"])
            #expect(replay.status == 0, "\(replay.errors)")
            #expect((try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) == 0o600)
            let run = try await harness.ingest(["run", "--from-file", file])
            #expect(run.status == 0, "round \(round): \(run.errors)")
            #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE user_id = 'zed-user'") == 1)
            #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 2)
        }
        // A body that fails again is quarantined again, once.
        let invalid = try #require(
            json(
                String(
                    (try await harness.vault(["quarantine", "list", "--day", today, "--code", "missing_field", "--json"])).output
                        .split(separator: "\n")[0]))?["id"] as? String)
        for _ in 1...2 {
            let file = NSTemporaryDirectory() + "replay-\(UUID().uuidString).txt"
            files.append(file)
            #expect(try await harness.vault(["quarantine", "replay", "--id", invalid, "--to-file", file, "--reason", "Q-2"]).status == 0)
            #expect(try await harness.ingest(["run", "--from-file", file]).status == 0)
            #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 3)
        }
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }
}
