import Foundation
import Testing
import VaultCrypto

/// Key-file entries for keys held in AWS KMS: they name the key and hold no
/// secret, survive a save and load unchanged, and only the files meant to
/// have them accept them.
@Suite("Key files with KMS-held versions")
struct KMSKeyFileTests {
    let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    func temporaryStore() throws -> KeyStore {
        let path = NSTemporaryDirectory() + "kms-keyfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return KeyStore(directory: path + "/keys")
    }

    func entries(_ path: String) throws -> [[String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any]
        return try #require(object?["keys"] as? [[String: Any]])
    }

    @Test("a KMS tokenization version is written as backend + key id, no key, and reads back beside local versions")
    func tokenizationRoundTrip() throws {
        let store = try temporaryStore()
        let privateKey = try X25519.PrivateKey()
        let local = try TokenizationKeyring.generate(now: Date())
        try store.create(
            tokenization: local,
            recoveryPrivateKey: RecoveryPrivateKeys.kmsSealed(
                publicKey: privateKey.publicKey, version: 1, createdAt: "2026-12-01T00:00:00Z", keyID: arn, blob: [1, 2, 3]),
            recoveryPublicKey: privateKey.publicKey)
        try store.save(try local.rotated(now: Date(), material: .awsKMS(keyID: arn)))

        let written = try entries(store.tokenizationPath)
        #expect(written.count == 2)
        #expect(written[0]["backend"] == nil && written[0]["key"] is String)
        #expect(written[1]["backend"] as? String == "aws-kms" && written[1]["kms_key_id"] as? String == arn)
        #expect(written[1]["key"] == nil)

        let read = try store.tokenizationKeyring()
        #expect(read.usesKMS && read.active.version == 2 && read.active.kmsKeyID == arn)
        #expect(try read.key(version: 1)?.localSecret() == local.active.localSecret())
        // A KMS version has no bytes to hand out.
        #expect(throws: KeyFileError.self) { try read.active.localSecret() }
    }

    @Test("a KMS-sealed recovery key reads back with its key id, blob and encryption context")
    func recoveryPrivateRoundTrip() throws {
        let store = try temporaryStore()
        let privateKey = try X25519.PrivateKey()
        let blob: [UInt8] = Array(0..<40)
        try store.create(
            tokenization: try TokenizationKeyring.generate(now: Date()),
            recoveryPrivateKey: RecoveryPrivateKeys.kmsSealed(
                publicKey: privateKey.publicKey, version: 1, createdAt: "2026-12-01T00:00:00Z", keyID: arn, blob: blob),
            recoveryPublicKey: privateKey.publicKey)
        let written = try entries(store.recoveryPrivatePath)[0]
        #expect(written["protection"] as? String == "aws-kms" && written["kms_key_id"] as? String == arn)
        #expect(written["kdf"] == nil && written["nonce"] == nil)

        let entry = try store.recoveryPrivateKeys().entry(version: 1, path: store.recoveryPrivatePath)
        #expect(entry.kmsKeyID == arn && entry.sealedPrivateKey == blob)
        let context = Dictionary(uniqueKeysWithValues: entry.kmsEncryptionContext)
        #expect(context["pseudonymizer.purpose"] == "recovery-private-key" && context["version"] == "1")
        #expect(context["public_key"] == Data(privateKey.publicKey.rawRepresentation).base64EncodedString())
        // What KMS hands back must be the private half of the recorded public key.
        let other = try X25519.PrivateKey()
        #expect(throws: KeyFileError.self) {
            try RecoveryPrivateKeys.privateKey(other.rawRepresentation, matching: entry, path: store.recoveryPrivatePath)
        }
        let opened = try RecoveryPrivateKeys.privateKey(
            privateKey.rawRepresentation, matching: entry, path: store.recoveryPrivatePath)
        #expect(opened.publicKey.rawRepresentation == privateKey.publicKey.rawRepresentation)
    }

    @Test("an audit key file naming a KMS key is refused: the audit key must be a local secret the database never holds")
    func auditKeyRefusesKMS() throws {
        let store = try temporaryStore()
        try store.initialize(passphrase: SecureBytes(Array("a passphrase".utf8)), parameters: Scrypt.Parameters(n: 1 << 14, r: 8, p: 1))
        var text = try String(contentsOfFile: store.auditKeyPath, encoding: .utf8)
        let key = try #require(text.range(of: #""key": *"[^"]*""#, options: .regularExpression))
        text.replaceSubrange(key, with: "\"backend\": \"aws-kms\", \"kms_key_id\": \"\(arn)\"")
        try text.write(toFile: store.auditKeyPath, atomically: true, encoding: .utf8)
        chmod(store.auditKeyPath, 0o600)
        let error = try #require(throws: KeyFileError.self) { try store.auditKeyring() }
        #expect(error.message.contains("backend \"aws-kms\"") && error.message.contains("expected local"))
    }
}
