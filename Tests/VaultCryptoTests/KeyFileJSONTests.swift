import Foundation
import Testing

@testable import VaultCrypto

@Suite("Key-file JSON in wiped memory")
struct KeyFileJSONTests {
    func parse(_ text: String) throws -> KeyFileJSON.Node {
        try Array(text.utf8).withUnsafeBytes { try KeyFileJSON.parse($0) }
    }

    @Test(
        "parses objects, arrays, escapes and integers; rejects what key files never hold",
        arguments: [
            (#"{"a": [1, -2, {"b": "\u00e9\n\"x\""}], "c": true, "d": null}"#, true),
            (#"{"a": 1.5}"#, false), (#"{"a": 1e3}"#, false), (#"{"a": "x""#, false), (#"{"a": 1} x"#, false),
            (#"{"a": 1, "a": 2}"#, false), ("{\"a\": \"tab\there\"}", false), (#"[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]"#, false),
        ])
    func syntax(text: String, valid: Bool) {
        #expect(((try? parse(text)) != nil) == valid)
    }

    @Test("a string with escapes decodes to the same text Foundation reads")
    func unescaping() throws {
        let text = #"{"s": "a\\b\/c\u00e9\ud83d\ude42\t"}"#
        guard case .object(let members) = try parse(text), case .string(let range, let escaped) = members[0].value else {
            Issue.record("not an object with a string")
            return
        }
        let decoded = Array(text.utf8).withUnsafeBytes { KeyFileJSON.string(range, escaped: escaped, in: $0) }
        let foundation = (try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String])?["s"]
        #expect(decoded == foundation)
    }

    @Test("written files read back, secrets included, and Foundation agrees on the JSON")
    func roundTrip() throws {
        let keyring = try TokenizationKeyring.generate(now: Date()).rotated(now: Date())
        let bytes = keyring.encoded()
        let read = try TokenizationKeyring.decode(bytes, path: "t.json")
        #expect(read.keys.map(\.version) == [1, 2])
        for (reread, original) in zip(read.keys, keyring.keys) {
            #expect(try reread.localSecret() == original.localSecret())
            #expect(reread.state == original.state)
        }
        let object = try bytes.withUnsafeBytes { try JSONSerialization.jsonObject(with: Data($0)) } as? [String: Any]
        #expect(object?["format"] as? String == TokenizationKeys.format)
        #expect((object?["keys"] as? [[String: Any]])?.count == 2)
    }

    @Test("a damaged field is named, its value never shown")
    func damagedFieldNamed() throws {
        let secretLooking = "c2VjcmV0LWJ1dC1ub3QtMzItYnl0ZXMtbG9uZw=="
        let text =
            #"{"format": "pseudonymizer.tokenization-keys", "format_version": 1, "keys": [{"version": 1, "state": "active", "created_at": "x", "key": "\#(secretLooking)"}]}"#
        #expect {
            try TokenizationKeyring.decode(SecureBytes(Array(text.utf8)), path: "t.json")
        } throws: { error in
            "\(error)".contains("keys[0].key is not 32 bytes of base64") && !"\(error)".contains(secretLooking)
        }
    }

    @Test(
        "base64 decoding into wiped memory is as strict as the ordinary decoder",
        arguments: [
            "", "AA==", "AAA=", "AAAA", "AB==", "A===", "AAAAA", "////", "+/+/", "AA=A",
        ])
    func strictBase64(text: String) {
        let secret = Array(text.utf8).withUnsafeBytes { Base64.decodeSecret($0) }
        let plain = Base64.decode(text)
        #expect(secret.map { $0.withUnsafeBytes(Array.init) } == plain)
    }
}
