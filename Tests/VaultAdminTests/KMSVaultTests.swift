import AWS
import Foundation
import KeyCustody
import Postgres
import TestSupport
import Testing
import VaultCrypto

/// `vault` with keys in AWS KMS (moto's, over loopback): moving tokens from a
/// local key to a KMS key, and recovering with a KMS-sealed private key.
@Suite("vault with keys in AWS KMS")
struct KMSVaultTests {
    @Test("rotate to a KMS tokenization key and retokenize: same rows, same distinct values, every value recovers; and back to local")
    func retokenizeLocalToKMS() async throws {
        let bodies = rotationBodies(prefix: "kms", count: 400)
        let harness = try await VaultHarness.make(bodies: bodies)
        let counts = "SELECT count(*) FROM user_logins"
        let distinctIPs = "SELECT count(DISTINCT masked_ip) FROM user_logins"
        let (rows, ips) = (try await harness.scalar(counts), try await harness.scalar(distinctIPs))
        let keyARN = try await TestKMS.createHMACKey()

        let rotate = try await harness.vault(["keys", "rotate", "--tokenization", "--kms-key-id", keyARN, "--reason", "KMS-1", "--json"])
        #expect(rotate.status == 0, "\(rotate.errors)")
        let keyring = try harness.keys.store.tokenizationKeyring()
        #expect(keyring.active.version == 2 && keyring.active.kmsKeyID == keyARN)
        let status = try await harness.vault(["keys", "status"])
        #expect(status.output.contains("v2  active") && status.output.contains("aws-kms \(keyARN)"))

        let retokenize = try await retokenizeResuming(harness, reason: "KMS-1")
        #expect(retokenize.status == 0, "\(retokenize.errors)")
        #expect(try await harness.scalar(counts) == rows)
        #expect(try await harness.scalar(distinctIPs) == ips)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t2_%'") == 0)
        try await expectEveryValueRecovers(harness, bodies: bodies, version: 2)

        // lookup computes the value's token under both versions (v2 by KMS).
        let (originalIPs, _) = originals(of: bodies)
        let lookup = try await harness.vault(
            ["lookup", "--ip-file", "-", "--reason", "SAR-1", "--json"], input: originalIPs.first! + "\n")
        #expect(lookup.status == 0, "\(lookup.errors)")
        #expect(lookup.output.contains("\"key_version\":2") && lookup.output.contains("\"vault\":\"stored\""))

        // And back to a local key: KMS v2 → local v3.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "LOCAL-3"]).status == 0)
        let back = try await retokenizeResuming(harness, reason: "LOCAL-3")
        #expect(back.status == 0, "\(back.errors)")
        #expect(try await harness.scalar(distinctIPs) == ips)
        try await expectEveryValueRecovers(harness, bodies: bodies, version: 3)
    }

    /// Retokenize, run again (as its CronJob would) when the emulator's KMS
    /// did not answer: moto serves SQS and KMS for the whole parallel suite and
    /// has let three attempts of 10 s each pass unanswered under load. The job
    /// resumes where it stopped; the caller checks the end state.
    private func retokenizeResuming(_ harness: VaultHarness, reason: String) async throws -> ProcessResult {
        var result = try await harness.vault(["retokenize", "--reason", reason])
        for _ in 0..<2 where result.status != 0 && result.errors.contains("AWS KMS is unavailable") {
            result = try await harness.vault(["retokenize", "--reason", reason])
        }
        return result
    }

    @Test("a recovery key sealed by KMS: keys init and recover need no passphrase; the sealed key opens only for its own entry")
    func kmsSealedRecoveryKey() async throws {
        let symmetric = try await TestKMS.createSymmetricKey()
        let keys = try await TestKeys.create(tokenizationKMSKeyID: nil, recoveryKMSKeyID: symmetric)
        let file = try String(contentsOfFile: keys.store.recoveryPrivatePath, encoding: .utf8)
        #expect(file.contains("\"protection\": \"aws-kms\"") && !file.contains("\"kdf\""))
        let bodies = rotationBodies(prefix: "kmsr", count: 50)
        let harness = try await VaultHarness.make(bodies: bodies, keys: keys)
        let token = try #require(harness.originals.keys.first)
        // No passphrase file, standard input not a terminal: asking for one would fail.
        let recover = try await harness.vault(
            ["recover", "--token", token, "--reason", "KMS-SEALED"], environment: ["VAULT_PASSPHRASE_FILE": ""])
        #expect(recover.status == 0, "\(recover.errors)")
        #expect(recover.output.trimmingCharacters(in: .whitespacesAndNewlines) == harness.originals[token])

        // The sealed blob moved to another version's entry: KMS refuses it (its encryption context names v1).
        let entry = try keys.store.recoveryPrivateKeys().entry(version: 1, path: "")
        let moved = RecoveryPrivateKeys.kmsSealed(
            publicKey: try X25519.PublicKey(rawRepresentation: entry.publicKey), version: 7, createdAt: entry.createdAt,
            keyID: symmetric, blob: entry.sealedPrivateKey)
        await #expect {
            _ = try await KMSRecoverySealing.unseal(moved, kms: try TestKMS.client(), path: "recovery-private.json")
        } throws: { error in (error as? KMSError)?.kind == .invalidCiphertext }
    }

    func expectEveryValueRecovers(_ harness: VaultHarness, bodies: [String], version: Int) async throws {
        let (ips, devices) = originals(of: bodies)
        let tokens = try await harness.connect().query(
            "SELECT DISTINCT masked_ip AS t FROM user_logins UNION SELECT DISTINCT masked_device_id FROM user_logins"
        ).map { try $0.string("t") }
        let result = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "CHECK", "--json"], input: tokens.joined(separator: "\n"))
        #expect(result.status == 0, "\(result.errors)")
        var wrong = 0
        for line in result.output.split(separator: "\n") {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let value = object?["value"] as? String, object?["key_version"] as? Int == version else {
                wrong += 1
                continue
            }
            if !(object?["field"] as? String == "ip" ? ips.contains(value) : devices.contains(value)) { wrong += 1 }
        }
        #expect(tokens.count == ips.count + devices.count)
        #expect(wrong == 0)
    }
}
