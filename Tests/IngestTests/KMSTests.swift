import Foundation
import Ingest
import Postgres
import Pseudonymization
import TestSupport
import Testing
import VaultAdmin
import VaultCrypto

/// Tokenization keys held in KMS (moto's, over loopback): the tokens are
/// KMS's MACs of the documented input, the key file holds no secret, and a KMS
/// outage or an unusable key never costs a message or writes a row without
/// its token.
@Suite("tokenization keys in AWS KMS")
struct KMSTests {
    /// The documented MAC input (FORMATS.md), spelled out here rather than taken from the code under test.
    func macInput(field: String, value: String) -> [UInt8] {
        Array("pseudonymizer.token.v1".utf8) + [0] + Array(field.utf8) + [0] + Array(value.utf8)
    }

    func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    @Test("every token ingest writes is GenerateMac of the documented input, computed independently by boto3; the key file holds no key")
    func tokensAreKMSMacs() async throws {
        let keyARN = try await TestKMS.createHMACKey()
        let keys = try await TestKeys.create(tokenizationKMSKeyID: keyARN)
        let file = try String(contentsOfFile: keys.store.tokenizationPath, encoding: .utf8)
        let entry = try #require(
            ((try JSONSerialization.jsonObject(with: Data(file.utf8)) as? [String: Any])?["keys"] as? [[String: Any]])?.first)
        #expect(entry["backend"] as? String == "aws-kms" && entry["kms_key_id"] as? String == keyARN)
        #expect(entry["key"] == nil)

        let harness = try await IngestHarness.make(keys: keys)
        let bodies = try sampleBodies()
        try await AWSCLI.send(harness.queueURL, bodies: bodies)
        let statistics = try await harness.run()
        #expect(statistics.written == 99)

        // What each user's row must hold, from the sample and boto3 alone.
        var expected: [(user: String, ip: [UInt8], device: [UInt8])] = []
        for body in bodies {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
                let user = object["user_id"] as? String, let ip = object["ip"] as? String, let device = object["device_id"] as? String
            else { continue }
            expected.append((user, macInput(field: "ip", value: ip), macInput(field: "device_id", value: device)))
        }
        let macs = try await TestKMS.generateMacs(keyID: keyARN, messages: expected.flatMap { [$0.ip, $0.device] })
        let connection = try await harness.connect()
        defer { Task { await connection.close() } }
        var rows: [String: (ip: String, device: String)] = [:]
        for row in try await connection.query("SELECT user_id, masked_ip, masked_device_id FROM user_logins") {
            rows[try row.string("user_id")] = (try row.string("masked_ip"), try row.string("masked_device_id"))
        }
        var mismatches = 0
        for (index, item) in expected.enumerated() {
            let row = rows[item.user]
            if row?.ip != "ip_t1_" + base64url(macs[2 * index]) || row?.device != "dev_t1_" + base64url(macs[2 * index + 1]) {
                mismatches += 1
            }
        }
        #expect(expected.count == 99 && mismatches == 0)
        // And the vault opens to the originals, verified against those tokens.
        let token = try #require(rows.values.first?.ip)
        #expect(try await harness.recover(token).field == .ip)
    }

    @Test("KMS cut mid-run: ingest backs off, says kms in readiness, loses and duplicates nothing, and finishes once KMS is back")
    func outageMidRun() async throws {
        let keys = try await TestKeys.create(tokenizationKMSKeyID: try await TestKMS.createHMACKey())
        let harness = try await IngestHarness.make(keys: keys)
        let proxy = try await TCPProxy.start(to: URL(string: try TestEnvironment.variable("AWS_ENDPOINT_URL"))!)
        defer { proxy.stop() }
        let bodies = generatedBodies(count: 400, seed: 12) + ["{\"user_id\": \"broken\""]
        try await Boto3.send(harness.queueURL, bodies: bodies)
        let port = try await freePort()
        let ingest = try startProgram(
            "ingest",
            [
                "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
                "--until-empty", "--batch-size", "20", "--token-cache-entries", "0", "--http-port", String(port), "--http-host",
                "127.0.0.1",
            ],
            environment: ["AWS_ENDPOINT_URL_KMS": proxy.url])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }
        try await waitUntil(.seconds(120)) { try await harness.scalar("SELECT count(*) FROM user_logins") > 0 }
        proxy.cut()
        let cutAt = try await harness.scalar("SELECT count(*) FROM user_logins")
        try await waitUntil(.seconds(30)) {
            (try? await httpGet("http://127.0.0.1:\(port)/health/ready").body.contains("kms unreachable")) == true
        }
        let metrics = try await httpGet("http://127.0.0.1:\(port)/metrics").body
        #expect(metrics.contains("ingest_retries_total{dependency=\"kms\"}"))
        #expect(metrics.contains("ingest_dependency_up{dependency=\"kms\"} 0.0"))
        // Nothing is written while KMS is away (a batch in its commit may still land).
        try await Task.sleep(for: .seconds(3))
        let duringCut = try await harness.scalar("SELECT count(*) FROM user_logins")
        try await Task.sleep(for: .seconds(2))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == duringCut)
        #expect(cutAt < 400 && ingest.isRunning)
        proxy.restore()
        try await waitUntil(.seconds(180)) { !ingest.isRunning }
        #expect(ingest.terminationStatus == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 400)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == 400)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == 1)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0)
    }

    @Test("SIGTERM while KMS is away: ingest exits 75 at once instead of waiting for SIGKILL; a later run writes every message once")
    func shutdownDuringOutage() async throws {
        let keys = try await TestKeys.create(tokenizationKMSKeyID: try await TestKMS.createHMACKey())
        let harness = try await IngestHarness.make(keys: keys)
        let proxy = try await TCPProxy.start(to: URL(string: try TestEnvironment.variable("AWS_ENDPOINT_URL"))!)
        defer { proxy.stop() }
        try await Boto3.send(harness.queueURL, bodies: generatedBodies(count: 400, seed: 15))
        let port = try await freePort()
        let arguments = [
            "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
            "--until-empty", "--batch-size", "10", "--token-cache-entries", "0", "--visibility-timeout", "3",
        ]
        let ingest = try startProgram(
            "ingest", arguments + ["--http-port", String(port), "--http-host", "127.0.0.1"],
            environment: ["AWS_ENDPOINT_URL_KMS": proxy.url])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }
        try await waitUntil(.seconds(60)) { try await harness.scalar("SELECT count(*) FROM user_logins") > 0 }
        proxy.cut()
        try await waitUntil(.seconds(30)) {
            (try? await httpGet("http://127.0.0.1:\(port)/health/ready").body.contains("kms unreachable")) == true
        }
        kill(ingest.processIdentifier, SIGTERM)
        try await waitUntil(.seconds(20)) { !ingest.isRunning }
        #expect(ingest.terminationStatus == 75)
        proxy.restore()
        try await Task.sleep(for: .seconds(4))
        let rerun = try await runProgram(
            try TestEnvironment.executable("ingest"), arguments, environment: ["AWS_ENDPOINT_URL_KMS": proxy.url])
        #expect(rerun.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 400)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == 400)
    }

    @Test("permission revoked mid-run: ingest stops with exit 77 naming kms:GenerateMac and IAM; what it had not written is still queued")
    func permissionRevokedMidRun() async throws {
        let keys = try await TestKeys.create(tokenizationKMSKeyID: try await TestKMS.createHMACKey())
        let harness = try await IngestHarness.make(keys: keys)
        try await Boto3.send(harness.queueURL, bodies: generatedBodies(count: 300, seed: 14))
        // KMS as seen through a front that passes the first 60 calls on and then
        // answers as KMS does once IAM no longer allows the call.
        let front = try await KMSFront.start(.refuseAfter(60))
        defer { front.stop() }
        let result = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
                "--until-empty", "--batch-size", "10", "--token-cache-entries", "0", "--visibility-timeout", "2",
            ],
            environment: ["AWS_ENDPOINT_URL_KMS": front.url])
        #expect(result.status == 77)
        #expect(result.errors.contains("KMS refused GenerateMac") && result.errors.contains("kms:GenerateMac"))
        let written = try await harness.scalar("SELECT count(*) FROM user_logins")
        #expect(written < 300)
        // Nothing lost: a run with the permission back writes the rest, once each.
        try await Task.sleep(for: .seconds(3))
        let resumed = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
                "--until-empty",
            ])
        #expect(resumed.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 300)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == 300)
    }

    @Test("key-file writer: tokenization.json pointed at another KMS key is refused (65); at a key KMS does not have, ingest stops (78)")
    func swappedOrMissingKMSKey() async throws {
        let keys = try await TestKeys.create(tokenizationKMSKeyID: try await TestKMS.createHMACKey())
        let harness = try await IngestHarness.make(keys: keys)
        let path = harness.ingestKeys + "/tokenization.json"
        let genuine = try String(contentsOfFile: path, encoding: .utf8)
        let genuineARN = try #require(
            (((try JSONSerialization.jsonObject(with: Data(genuine.utf8)) as? [String: Any])?["keys"] as? [[String: Any]])?.first)?[
                "kms_key_id"] as? String)
        func run(withKey arn: String) async throws -> ProcessResult {
            try genuine.replacingOccurrences(of: genuineARN, with: arn).write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o600)
            return try await runProgram(
                try TestEnvironment.executable("ingest"),
                [
                    "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys, "--database-url", harness.databaseURL,
                    "--until-empty",
                ])
        }
        // The attacker's own HMAC key: they could compute every token with it.
        let swapped = try await run(withKey: try await TestKMS.createHMACKey())
        #expect(swapped.status == 65)
        #expect(swapped.errors.contains("tokenization key v1") && swapped.errors.contains("not the key registered"))
        let missing = try await run(withKey: "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000")
        #expect(missing.status == 78)
        #expect(missing.errors.contains("KMS cannot use the key") && missing.errors.contains("NotFoundException"))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 0)
    }
}
