import Foundation
import Testing
import VaultCrypto

@testable import Pseudonymization

@Suite("Tokens and sealing")
struct TokenTests {
    let keyring = try! TokenizationKeyring.generate(now: Date())

    @Test("tokens are deterministic, fixed-length, field-separated and parseable")
    func tokens() throws {
        let tokenizer = try Tokenizer(key: keyring.active)
        let again = try Tokenizer(key: keyring.active)
        let ip = try tokenizer.token(for: "1.2.3.4", field: .ip)
        #expect(ip == (try again.token(for: "1.2.3.4", field: .ip)))
        #expect(ip == (try tokenizer.token(for: "1.2.3.4", field: .ip)))
        #expect(ip.hasPrefix("ip_t1_"))
        #expect(ip.count == 49)
        let device = try tokenizer.token(for: "1.2.3.4", field: .deviceID)
        #expect(device.hasPrefix("dev_t1_"))
        #expect(device.dropFirst(7) != ip.dropFirst(6))
        #expect(try tokenizer.token(for: "1.2.3.5", field: .ip) != ip)
        #expect(Token.parse(ip)?.field == .ip)
        #expect(Token.parse(ip)?.keyVersion == 1)
        #expect(Token.parse(device)?.field == .deviceID)
        #expect(!ip.contains("+") && !ip.contains("/") && !ip.contains("="))
    }

    @Test("another key version gives other tokens")
    func versions() throws {
        let rotated = try keyring.rotated(now: Date())
        let v1 = try Tokenizer(key: try #require(rotated.key(version: 1))).token(for: "1.2.3.4", field: .ip)
        let v2 = try Tokenizer(key: rotated.active).token(for: "1.2.3.4", field: .ip)
        #expect(v2.hasPrefix("ip_t2_"))
        #expect(v1.dropFirst(6) != v2.dropFirst(6))
    }

    @Test(
        "malformed tokens are recognised",
        arguments: [
            "", "ip", "ip_t1_", "xx_t1_" + String(repeating: "A", count: 43), "ip_1_" + String(repeating: "A", count: 43),
            "ip_t0_" + String(repeating: "A", count: 43), "ip_t01_" + String(repeating: "A", count: 43),
            "ip_t1_" + String(repeating: "A", count: 42), "ip_t1_" + String(repeating: "+", count: 43), "1.2.3.4",
        ])
    func malformed(token: String) {
        #expect(Token.parse(token) == nil)
    }

    @Test("the MAC part is checked without decoding, exactly as decoding would")
    func macCheckAgreesWithDecoding() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=".utf8)
        for _ in 0..<2_000 {
            let mac = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(Token.parse("ip_t1_" + Base64.encodeURL(mac)) != nil)
            let text = String(decoding: (0..<43).map { _ in alphabet.randomElement(using: &generator)! }, as: UTF8.self)
            let decodes = Base64.decodeURL(text).map { $0.count == 32 && Base64.encodeURL($0) == text } ?? false
            #expect(Token.isEncodedMAC(Substring(text).utf8) == decodes)
        }
    }

    @Test("sealed values open only with their own token, field and data key")
    func sealing() throws {
        let key = try SecureBytes.random(count: 32)
        let sealer = try VaultSealer(dataKeyID: "dek-1", key: key)
        let token = try Tokenizer(key: keyring.active).token(for: "1.2.3.4", field: .ip)
        let sealed = try sealer.seal("1.2.3.4", token: token, field: .ip)
        let second = try sealer.seal("1.2.3.4", token: token, field: .ip)
        #expect(sealed.nonce != second.nonce)
        let cipher = try AESGCM(key: key)
        let aad = VaultAAD.entry(token: token, field: .ip, dataKeyID: "dek-1")
        #expect(try cipher.open(sealed.ciphertext, nonce: sealed.nonce, aad: aad) == Array("1.2.3.4".utf8))
        for wrong in [
            VaultAAD.entry(token: token, field: .deviceID, dataKeyID: "dek-1"),
            VaultAAD.entry(token: token, field: .ip, dataKeyID: "dek-2"),
            VaultAAD.entry(token: "ip_t1_other", field: .ip, dataKeyID: "dek-1"),
        ] {
            #expect(throws: CryptoError.authenticationFailed) { try cipher.open(sealed.ciphertext, nonce: sealed.nonce, aad: wrong) }
        }
    }
}
