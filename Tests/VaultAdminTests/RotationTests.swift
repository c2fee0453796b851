import Foundation
import Postgres
import Pseudonymization
import TestSupport
import Testing
import VaultAdmin
import VaultCrypto

/// Generated bodies with unique users; every third message reuses the IP and
/// device id of an earlier one (in this batch or, through `reusing`, an earlier batch).
func rotationBodies(prefix: String, count: Int, reusing earlier: [String] = []) -> [String] {
    var values: [(String, String)] = earlier.compactMap { body in
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let ip = object["ip"] as? String, let device = object["device_id"] as? String
        else { return nil }
        return (ip, device)
    }
    var bodies: [String] = []
    for index in 0..<count {
        let (ip, device): (String, String)
        if index % 3 == 2, !values.isEmpty {
            (ip, device) = values[(index * 7919) % values.count]
        } else {
            let n = abs("\(prefix)\(index)".hashValue) % 16_000_000
            (ip, device) = (
                index % 10 == 0
                    ? "2001:db8::\(String(n & 0xffff, radix: 16)):\(String(n >> 16, radix: 16))"
                    : "10.\(n >> 16 & 255).\(n >> 8 & 255).\(n & 255)",
                "\(prefix)-dev-\(index)"
            )
            values.append((ip, device))
        }
        bodies.append(
            #"{"user_id": "\#(prefix)-\#(index)", "app_version": "1.0", "device_type": "ios", "ip": "\#(ip)", "locale": null, "device_id": "\#(device)"}"#
        )
    }
    return bodies
}

func originals(of bodies: [String]) -> (ips: Set<String>, devices: Set<String>) {
    var ips = Set<String>()
    var devices = Set<String>()
    for body in bodies {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let ip = (object["ip"] as? String).flatMap(CanonicalIP.canonicalize), let device = object["device_id"] as? String
        else { continue }
        ips.insert(ip)
        devices.insert(device)
    }
    return (ips, devices)
}

@Suite("key rotation jobs")
struct RotationTests {
    /// Copies the public key files to the ingest secret, as a deployment would.
    @Test("rotate the tokenization key while ingest runs on a live queue; retokenize, killed halfway and rerun, moves everything")
    func tokenizationRotationOnline() async throws {
        let preload = rotationBodies(prefix: "pre", count: 1500)
        let harness = try await VaultHarness.make(bodies: preload)
        let queue = try await AWSCLI.createQueue("rotation")
        let ingest = try startProgram(
            "ingest",
            [
                "run", "--queue-url", queue, "--keys-dir", try harness.keys.ingestKeysDirectory(), "--database-url", harness.databaseURL,
                "--batch-size", "20", "--key-reload-seconds", "0.3", "--wait-seconds", "1",
            ])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }

        let first = rotationBodies(prefix: "live1", count: 60, reusing: preload)
        try await Boto3.send(queue, bodies: first)
        try await waitUntil(.seconds(120)) { try await harness.scalar("SELECT count(*) FROM user_logins") == 1560 }

        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT-1"]).status == 0)
        let refused = try await harness.vault(["keys", "retire", "--yes", "--tokenization", "1", "--reason", "TOO-EARLY"])
        #expect(refused.status == 1)
        #expect(refused.errors.contains("run `vault retokenize` first"))
        try harness.keys.distribute()
        try await Task.sleep(for: .seconds(1))  // the replica reloads within 0.3 s

        let second = rotationBodies(prefix: "live2", count: 60, reusing: preload + first)
        try await Boto3.send(queue, bodies: second)
        try await waitUntil(.seconds(120)) { try await harness.scalar("SELECT count(*) FROM user_logins") == 1620 }
        #expect(
            try await harness.scalar("SELECT count(*) FROM user_logins WHERE user_id LIKE 'live2-%' AND masked_ip LIKE 'ip_t2_%'") == 60)

        // Retokenize in small batches, killed once a part is done.
        let oldEntries = try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token_key_version = 1")
        // Once a part is moved, hold further entries back (a lock their COPY must
        // wait for) so the kill lands halfway even when the job outruns the polling.
        let watcher = try await harness.connect()
        // Tiny batches, so there is a "halfway" to kill it at.
        let job = try startProgram(
            "vault", ["retokenize", "--reason", "ROT-1", "--batch-size", "2"],
            environment: [
                "KEYS_DIR": harness.keys.store.directory, "VAULT_PASSPHRASE_FILE": harness.keys.passphraseFile,
                "DATABASE_URL": harness.databaseURL,
            ])
        let third = rotationBodies(prefix: "live3", count: 60, reusing: preload + first + second)
        try await Boto3.send(queue, bodies: third)
        let deadline = ContinuousClock.now + .seconds(120)
        while try await watcher.query("SELECT count(*) AS n FROM token_lineage")[0].int("n") < 20, job.isRunning,
            ContinuousClock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(5))
        }
        try await watcher.execute("BEGIN")
        try await watcher.execute("LOCK TABLE vault_entries IN SHARE MODE")
        kill(job.processIdentifier, SIGKILL)
        try await waitForExit(job)
        try await watcher.execute("COMMIT")
        await watcher.close()
        let movedBeforeKill = try await harness.scalar("SELECT count(*) FROM token_lineage")
        // On an overloaded machine the job can finish before the watcher sees it
        // under way (two CI runs of the whole suite did): then there is no
        // halfway to resume from, which is not a failure of retokenize.
        withKnownIssue("the job finished before it could be killed halfway", isIntermittent: true) {
            #expect(movedBeforeKill > 0 && movedBeforeKill < oldEntries, "killed after \(movedBeforeKill) of \(oldEntries)")
        }

        let rerun = try await harness.vault(["retokenize", "--reason", "ROT-1 (again)"])
        #expect(rerun.status == 0, "\(rerun.errors)")
        try await waitUntil(.seconds(120)) { try await harness.scalar("SELECT count(*) FROM user_logins") == 1680 }
        kill(ingest.processIdentifier, SIGTERM)
        try await waitForExit(ingest)

        // Nothing lost or doubled; every row on v2; duplicates still identifiable.
        let all = preload + first + second + third
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == all.count)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == all.count)
        #expect(
            try await harness.scalar(
                "SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t2_%' OR masked_device_id NOT LIKE 'dev_t2_%'") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token_key_version <> 2") == 0)
        let (ips, devices) = originals(of: all)
        #expect(try await harness.scalar("SELECT count(DISTINCT masked_ip) FROM user_logins") == ips.count)
        #expect(try await harness.scalar("SELECT count(DISTINCT masked_device_id) FROM user_logins") == devices.count)

        // Every token recovers to an original of its field (counted, never printed).
        let connection = try await harness.connect()
        let tokens = try await connection.query(
            "SELECT DISTINCT masked_ip AS t FROM user_logins UNION SELECT DISTINCT masked_device_id FROM user_logins"
        )
        .map { try $0.string("t") }
        let recovered = try await harness.recoverAsOwner(tokens)
        var wrong = 0
        for result in recovered {
            guard case .success(let value) = result else {
                wrong += 1
                continue
            }
            if !(value.field == .ip ? ips.contains(value.value) : devices.contains(value.value)) { wrong += 1 }
        }
        #expect(recovered.count == ips.count + devices.count)
        #expect(wrong == 0)

        let retire = try await harness.vault(["keys", "retire", "--yes", "--tokenization", "1", "--reason", "RET-1"])
        #expect(retire.status == 0, "\(retire.errors)")
        #expect(try harness.keys.store.tokenizationKeyring().keys.map(\.version) == [2])
        #expect(try await harness.vault(["audit", "verify"]).status == 0)
    }

    @Test("rotate the recovery key, rewrap, retire the old one (its private key is gone): every token still recovers")
    func recoveryRotation() async throws {
        let before = rotationBodies(prefix: "r1", count: 300)
        let harness = try await VaultHarness.make(bodies: before)
        #expect(try await harness.vault(["keys", "rotate", "--recovery", "--reason", "ROT-R", "--scrypt-log-n", "14"]).status == 0)
        try harness.keys.distribute()
        // New data from a replica with the new public key: its data keys wrap to v2.
        let after = rotationBodies(prefix: "r2", count: 100, reusing: before)
        let file = NSTemporaryDirectory() + "after-\(UUID().uuidString).jsonl"
        try (after.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--from-file", file, "--keys-dir", try harness.keys.ingestKeysDirectory(),
                "--database-url", harness.databaseURL,
            ])
        #expect(run.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM data_keys WHERE recovery_key_version = 2") >= 1)

        let early = try await harness.vault(["keys", "retire", "--yes", "--recovery", "1", "--reason", "TOO-EARLY"])
        #expect(early.status == 1)
        #expect(early.errors.contains("run `vault rewrap` first"))
        let dryRun = try await harness.vault(["rewrap", "--dry-run", "--reason", "R"])
        #expect(dryRun.output.contains("would re-wrap 1 data keys to recovery v2"))
        let rewrap = try await harness.vault(["rewrap", "--reason", "REWRAP-1"])
        #expect(rewrap.status == 0, "\(rewrap.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM data_keys WHERE recovery_key_version = 1") == 0)
        #expect(try await harness.vault(["rewrap", "--reason", "REWRAP-2"]).output.contains("re-wrapped 0 data keys"))

        let retire = try await harness.vault(["keys", "retire", "--yes", "--recovery", "1", "--reason", "RET-R1"])
        #expect(retire.status == 0, "\(retire.errors)")
        #expect(try harness.keys.store.recoveryPrivateKeys().versions == [2])
        #expect(try harness.keys.store.recoveryPublicKeys().keys.map(\.version) == [2])

        let (ips, devices) = originals(of: before + after)
        let tokens = try await harness.connect().query(
            "SELECT DISTINCT masked_ip AS t FROM user_logins UNION SELECT DISTINCT masked_device_id FROM user_logins"
        ).map { try $0.string("t") }
        let result = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "AFTER-ROTATION", "--json"], input: tokens.joined(separator: "\n"))
        #expect(result.status == 0)
        var wrong = 0
        for line in result.output.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let value = object?["value"] as? String, object?["recovery_key_version"] as? Int == 2 else {
                wrong += 1
                continue
            }
            if !(object?["field"] as? String == "ip" ? ips.contains(value) : devices.contains(value)) { wrong += 1 }
        }
        #expect(tokens.count == ips.count + devices.count)
        #expect(wrong == 0)
    }

    @Test("a replica that has not reloaded waits instead of writing old tokens; SIGHUP brings the new keys")
    func staleReplicaWaits() async throws {
        let harness = try await VaultHarness.make(bodies: rotationBodies(prefix: "base", count: 20))
        let queue = try await AWSCLI.createQueue("stale")
        // It would only look at its key files again in an hour.
        let ingest = try startProgram(
            "ingest",
            [
                "run", "--queue-url", queue, "--keys-dir", try harness.keys.ingestKeysDirectory(), "--database-url", harness.databaseURL,
                "--batch-size", "5", "--key-reload-seconds", "3600", "--wait-seconds", "1", "--visibility-timeout", "30",
            ])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }

        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "ROT"]).status == 0)
        #expect(try await harness.vault(["retokenize", "--reason", "ROT"]).status == 0)
        try await Boto3.send(queue, bodies: rotationBodies(prefix: "late", count: 10))
        try await Task.sleep(for: .seconds(3))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE user_id LIKE 'late-%'") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip LIKE 'ip_t1_%'") == 0)

        try harness.keys.distribute()
        kill(ingest.processIdentifier, SIGHUP)
        try await waitUntil(.seconds(60)) { try await harness.scalar("SELECT count(*) FROM user_logins WHERE user_id LIKE 'late-%'") == 10 }
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t2_%'") == 0)
        kill(ingest.processIdentifier, SIGTERM)
        try await waitForExit(ingest)
        #expect(ingest.terminationStatus == 0)
    }

    @Test("keys status is an exact inventory")
    func status() async throws {
        let bodies = rotationBodies(prefix: "s", count: 30)
        let harness = try await VaultHarness.make(bodies: bodies)
        let result = try await harness.vault(["keys", "status", "--json"])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
        let tokenization = object?["tokenization"] as? [[String: Any]] ?? []
        let (ips, devices) = originals(of: bodies)
        #expect(tokenization.count == 1)
        #expect(tokenization.first?["vault_entries"] as? Int == ips.count + devices.count)
        #expect(tokenization.first?["ip_rows"] as? Int == 30)
        #expect(tokenization.first?["state"] as? String == "active")
        let recovery = object?["recovery"] as? [[String: Any]] ?? []
        #expect(recovery.first?["data_keys"] as? Int == 1)
        #expect(recovery.first?["private_key_present"] as? Bool == true)
    }
}
