import Foundation
import Ingest
import KeyCustody
import Postgres
import Storage
import TestSupport
import Testing

@testable import Pseudonymization
@testable import VaultAdmin
@testable import VaultCrypto

/// One `example=NAME` block of FORMATS.md: its lines as `key: value`.
struct FormatExample: Sendable, CustomStringConvertible {
    let name: String
    let index: Int
    let fields: [String: String]
    let body: String

    var description: String { "\(name) #\(index)" }

    subscript(_ key: String) -> String {
        guard let value = fields[key] else { preconditionFailure("FORMATS.md example \(self) has no \(key)") }
        return value
    }

    struct NotHex: Error, CustomStringConvertible {
        let description: String
    }

    func hex(_ key: String) throws -> [UInt8] {
        guard let bytes = Hex.decode(self[key]) else { throw NotHex(description: "FORMATS.md example \(self): \(key) is not hex") }
        return bytes
    }

    /// The document's repository copy, split into its example blocks.
    static let all: [FormatExample] = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FORMATS.md").path
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        var examples: [FormatExample] = []
        var current: (name: String, lines: [String])? = nil
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if let block = current {
                if line == "```" {
                    var fields: [String: String] = [:]
                    for entry in block.lines {
                        guard let colon = entry.firstIndex(of: ":") else { continue }
                        fields[String(entry[..<colon])] = String(entry[entry.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
                    }
                    examples.append(
                        FormatExample(
                            name: block.name, index: examples.filter { $0.name == block.name }.count + 1,
                            fields: fields, body: block.lines.joined(separator: "\n") + "\n"))
                    current = nil
                } else {
                    current!.lines.append(String(line))
                }
            } else if line.hasPrefix("```"), let range = line.range(of: "example=") {
                current = (String(line[range.upperBound...]), [])
            }
        }
        return examples
    }()
}

/// Recomputes FORMATS.md's worked examples with the project's code: the
/// document is normative, and these keep it true.
@Suite("FORMATS.md worked examples")
struct FormatsTests {
    /// What the code computes for an example's outputs (the rest are inputs).
    static func computed(_ example: FormatExample) async throws -> [String: String] {
        switch example.name {
        case "canonical-ip":
            return ["canonical": CanonicalIP.canonicalize(example["input"]) ?? "refused"]
        case "app-version":
            let version = AppVersion(example["input"])
            return ["code": version.map { String($0.code) } ?? "refused", "readable": version?.canonical ?? "refused"]
        case "create-date":
            return ["date": UTCDate.string(fromMilliseconds: Int64(example["sent-timestamp"])!)]
        case "sent-at":
            let run = try await runProgram(
                try TestEnvironment.executable("ingest"),
                [
                    "run", "--from-file", "/dev/null", "--sent-at", example["input"], "--startup-timeout", "1", "--database-url",
                    "postgresql://u@127.0.0.1:1/x",
                ])
            #expect(!run.errors.contains("--sent-at"), "ingest refuses the --sent-at of \(example)")
            let microseconds = try #require(UTCDate.microseconds(fromRFC3339: example["input"]))
            let milliseconds = microseconds >= 0 ? microseconds / 1000 : (microseconds - 999) / 1000
            return ["milliseconds": String(milliseconds), "date": UTCDate.string(fromMilliseconds: milliseconds)]
        case "suppression-tag":
            let field = PIIField(rawValue: example["field"])!
            let request = TokenRequest(field: field, value: example["value"])
            let keyring = try TokenizationKeyring(
                keys: [
                    MACKeyVersion(version: 1, state: .active, createdAt: "", material: .local(SecureBytes(Array(repeating: 0, count: 32))))
                ],
                suppression: MACKeyVersion(version: 1, state: .active, createdAt: "", material: .local(SecureBytes(try example.hex("key"))))
            )
            let tag = try await TokenMinter(keyring: keyring, kms: nil).suppressionTags([request])[0]
            return ["mac-input": Hex.encode(TokenFormat.suppressionMACInput(request)), "tag": Hex.encode(tag)]
        case "fingerprint-suppression":
            let key = MACKeyVersion(version: 1, state: .active, createdAt: "", material: .local(SecureBytes(try example.hex("key"))))
            return ["fingerprint": Hex.encode(try await TokenMinter.suppressionFingerprint(of: key, kms: nil))]
        case "scrypt-memory":
            let parameters = Scrypt.Parameters(n: UInt64(example["n"])!, r: UInt32(example["r"])!, p: UInt32(example["p"])!)
            return ["bytes": String(parameters.memoryByteCount)]
        case "audit-head":
            let verify = try await auditHeadOfExampleRow(example)
            return ["head": verify]
        case "audit-anchor":
            return ["subject": AuditLog.anchorSubject(rows: Int64(example["count"])!, head: try example.hex("hash"))]
        case "token":
            let field = PIIField(rawValue: example["field"])!
            let key = MACKeyVersion(
                version: Int(example["version"])!, state: .active, createdAt: "", material: .local(SecureBytes(try example.hex("key"))))
            let input = Array("pseudonymizer.token.v1\u{0}\(field.rawValue)\u{0}\(example["value"])".utf8)
            return ["mac-input": Hex.encode(input), "token": try Tokenizer(key: key).token(for: example["value"], field: field)]
        case "erased-token":
            let field = PIIField(rawValue: example["field"])!
            let key = MACKeyVersion(
                version: Int(example["version"])!, state: .active, createdAt: "", material: .local(SecureBytes(try example.hex("key"))))
            return ["token": try Tokenizer(key: key).token(forErased: example["old-token"], field: field)]
        case "vault-entry":
            let field = PIIField(rawValue: example["field"])!
            let aad = VaultAAD.entry(token: example["token"], field: field, dataKeyID: example["data-key-id"])
            let sealed = try AESGCM(key: try example.hex("data-key")).seal(
                Array(example["value"].utf8), nonce: try example.hex("nonce"), aad: aad)
            return ["aad": Hex.encode(aad), "ciphertext": Hex.encode(sealed)]
        case "quarantine":
            let aad = VaultAAD.quarantine(receiptID: try example.hex("receipt-id"), dataKeyID: example["data-key-id"])
            let sealed = try AESGCM(key: try example.hex("data-key")).seal(
                Array(example["body"].utf8), nonce: try example.hex("nonce"), aad: aad)
            return ["aad": Hex.encode(aad), "sealed-body": Hex.encode(sealed)]
        case "receipt-id-sqs":
            return ["receipt-id": Hex.encode(try ReceiptID.sqs(messageID: example["message-id"]))]
        case "receipt-id-file":
            return ["receipt-id": Hex.encode(try ReceiptID.file(line: Int(example["line"])!, body: Array(example["body"].utf8)))]
        case "data-key-wrap":
            let privateKey = try X25519.PrivateKey(rawRepresentation: SecureBytes(try example.hex("recovery-private-key")))
            let version = Int(example["recovery-version"])!
            let recipient = RecoveryPublicKey(version: version, state: .active, createdAt: "", publicKey: privateKey.publicKey)
            let wrapped = try DataKeyWrap.wrap(
                SecureBytes(try example.hex("data-key")), dataKeyID: example["data-key-id"], to: recipient,
                ephemeral: try X25519.PrivateKey(rawRepresentation: SecureBytes(try example.hex("ephemeral-private-key"))))
            // And it opens again with the private key.
            let opened = try DataKeyWrap.unwrap(wrapped, dataKeyID: example["data-key-id"], recoveryVersion: version, with: privateKey)
            #expect(opened == SecureBytes(try example.hex("data-key")))
            return [
                "recovery-public-key": Hex.encode(privateKey.publicKey.rawRepresentation),
                "aad": Hex.encode(DataKeyWrap.aad(dataKeyID: example["data-key-id"], recoveryVersion: version)),
                "wrapped-key": Hex.encode(wrapped),
            ]
        case "private-key-seal":
            let privateKey = try X25519.PrivateKey(rawRepresentation: SecureBytes(try example.hex("private-key")))
            let version = Int(example["version"])!
            let parameters = Scrypt.Parameters(n: UInt64(example["n"])!, r: UInt32(example["r"])!, p: UInt32(example["p"])!)
            let passphrase = SecureBytes(Array(example["passphrase"].utf8))
            let sealed = try RecoveryPrivateKeys.seal(
                privateKey, version: version, createdAt: "", passphrase: passphrase, parameters: parameters,
                salt: try example.hex("salt"), nonce: try example.hex("nonce"))
            let opened = try RecoveryPrivateKeys(keys: [sealed]).unlock(version: version, passphrase: passphrase, path: "example")
            #expect(opened.rawRepresentation == privateKey.rawRepresentation)
            return [
                "public-key": Base64.encode(sealed.publicKey),
                "aad": String(decoding: RecoveryPrivateKeys.associatedData(version: version, publicKey: sealed.publicKey), as: UTF8.self),
                "sealed-private-key": Base64.encode(sealed.sealedPrivateKey),
            ]
        case "passphrase-file":
            let path = NSTemporaryDirectory() + "passphrase-\(UUID().uuidString)"
            _ = FileManager.default.createFile(
                atPath: path, contents: Data(try example.hex("file")), attributes: [.posixPermissions: 0o600])
            let passphrase = try PassphraseSource(file: path).read(prompt: "")
            return ["passphrase": passphrase.withUnsafeBytes { Hex.encode($0) }]
        case "fingerprint-tokenization":
            let key = MACKeyVersion(
                version: Int(example["version"])!, state: .active, createdAt: "", material: .local(SecureBytes(try example.hex("key"))))
            return ["fingerprint": Hex.encode(try key.localTokenizationFingerprint())]
        case "fingerprint-recovery":
            let key = RecoveryPublicKey(
                version: Int(example["version"])!, state: .active, createdAt: "",
                publicKey: try X25519.PublicKey(rawRepresentation: try example.hex("public-key")))
            return ["fingerprint": Hex.encode(try key.fingerprint)]
        case "audit-row":
            let hash = try auditHash(example)
            let mac = try HMACSHA256(key: try example.hex("audit-key")).authenticationCode(for: AuditLog.macInput(hash))
            return ["hash": Hex.encode(hash), "mac": Hex.encode(mac)]
        case "tokenization.json":
            let keyring = try TokenizationKeyring.decode(SecureBytes(Array(example.body.utf8)), path: "FORMATS.md")
            return [
                "(written again)": keyring.encoded().withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == example.body
                    ? "same" : "differs"
            ]
        case "audit-key.json":
            let keys = try AuditKeyring.decode(SecureBytes(Array(example.body.utf8)), path: "FORMATS.md")
            return [
                "(written again)": keys.encoded().withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == example.body
                    ? "same" : "differs"
            ]
        case "recovery-private.json":
            let keys = try RecoveryPrivateKeys.decode(SecureBytes(Array(example.body.utf8)), path: "FORMATS.md")
            return [
                "(written again)": keys.encoded().withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == example.body
                    ? "same" : "differs"
            ]
        default:
            Issue.record("FORMATS.md example \(example) is of a kind no test checks")
            return [:]
        }
    }

    /// The head `vault audit verify` prints for a log whose only row is the
    /// audit-row example's (its seq and hash must be the example's too).
    static func auditHeadOfExampleRow(_ example: FormatExample) async throws -> String {
        let row = try #require(FormatExample.all.first { $0.name == "audit-row" })
        #expect(row["seq"] == example["seq"] && row["hash"] == example["hash"])
        let keys = try TestKeys.create()
        let url = try await TestDatabase.create("head")
        let owner = try await TestDatabase.connect(url)
        try await owner.execute(
            """
            INSERT INTO audit_log (seq, at, os_user, db_role, action, subject, reason, outcome, prev_hash, hash, mac_key_version, mac)
            VALUES ($1, $2::timestamptz, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11)
            """,
            [
                .int(Int(row["seq"])!), .text(row["at"]), .text(row["os-user"]), .text(row["db-role"]), .text(row["action"]),
                .text(row["subject"]), .text(row["reason"]), .text(row["outcome"]), .bytes(try row.hex("previous-hash")),
                .bytes(try row.hex("hash")), .bytes(try row.hex("mac")),
            ])
        await owner.close()
        // The example's audit key, as audit key v1.
        let keyFile = """
            {"format": "pseudonymizer.audit-keys", "format_version": 1, "keys": [{"version": 1, "state": "active", \
            "created_at": "2026-12-01T00:00:00Z", "key": "\(Base64.encode(try row.hex("audit-key")))"}], \
            "unauthenticated_rows": {"count": 0, "head": "\(String(repeating: "0", count: 64))"}}
            """
        try FileManager.default.removeItem(atPath: keys.store.auditKeyPath)
        _ = FileManager.default.createFile(
            atPath: keys.store.auditKeyPath, contents: Data(keyFile.utf8), attributes: [.posixPermissions: 0o600])
        let verify = try await runProgram(
            try TestEnvironment.executable("vault"), ["audit", "verify"],
            environment: ["KEYS_DIR": keys.store.directory, "DATABASE_URL": url])
        #expect(verify.status == 0, "\(verify.errors)")
        return String(verify.output.split(separator: " ").last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func auditHash(_ example: FormatExample) throws -> [UInt8] {
        try AuditLog.rowHash(
            previous: try example.hex("previous-hash"), sequence: Int64(example["seq"])!, at: example["at"], osUser: example["os-user"],
            databaseRole: example["db-role"],
            record: AuditRecord(
                action: example["action"], subject: example["subject"], reason: example["reason"], outcome: example["outcome"]))
    }

    @Test("every worked example in FORMATS.md is what the code computes", arguments: FormatExample.all)
    func example(_ example: FormatExample) async throws {
        for (key, value) in try await Self.computed(example) {
            let documented = key == "(written again)" ? "same" : example.fields[key]
            #expect(documented == value, "FORMATS.md \(example): \(key) is \(documented ?? "missing"); the code computes \(value)")
        }
    }

    @Test("the document has an example of every kind, and its values are consistent across examples")
    func coverage() throws {
        let kinds = Set(FormatExample.all.map(\.name))
        #expect(
            kinds == [
                "canonical-ip", "app-version", "create-date", "sent-at", "token", "erased-token", "suppression-tag", "vault-entry",
                "quarantine", "receipt-id-sqs", "receipt-id-file", "data-key-wrap", "private-key-seal", "scrypt-memory",
                "passphrase-file", "fingerprint-tokenization", "fingerprint-recovery", "fingerprint-suppression", "audit-row",
                "audit-head", "audit-anchor", "tokenization.json", "recovery-private.json", "audit-key.json",
            ])
        let byName = Dictionary(grouping: FormatExample.all, by: \.name)
        // The examples build on each other: the entry seals the first token, the
        // erased token derives from it, the quarantine uses the file receipt id,
        // the recovery fingerprint is of the wrap's recipient.
        #expect(byName["vault-entry"]?[0]["token"] == byName["token"]?[0]["token"])
        #expect(byName["erased-token"]?[0]["old-token"] == byName["token"]?[0]["token"])
        #expect(byName["quarantine"]?[0]["receipt-id"] == byName["receipt-id-file"]?[0]["receipt-id"])
        #expect(byName["fingerprint-recovery"]?[0]["public-key"] == byName["data-key-wrap"]?[0]["recovery-public-key"])
        // The suppression key of the tag and its fingerprint is the one in the tokenization.json example.
        #expect(byName["fingerprint-suppression"]?[0]["key"] == byName["suppression-tag"]?[0]["key"])
        #expect(byName["audit-anchor"]?[0]["hash"] == byName["audit-row"]?[0]["hash"])
    }

    @Test("the database's audit_row_hash computes the example's hash")
    func auditHashInDatabase() async throws {
        let example = try #require(FormatExample.all.first { $0.name == "audit-row" })
        let connection = try await TestDatabase.connect(try await TestDatabase.create("formats"))
        let row = try await connection.query(
            "SELECT audit_row_hash($1, $2, $3, $4, $5, $6, $7, $8, $9) AS hash",
            [
                .bytes(try example.hex("previous-hash")), .int(Int(example["seq"])!), .text(example["at"]), .text(example["os-user"]),
                .text(example["db-role"]), .text(example["action"]), .text(example["subject"]), .text(example["reason"]),
                .text(example["outcome"]),
            ])
        #expect(Hex.encode(try row[0].bytes("hash")) == example["hash"])
    }
}
