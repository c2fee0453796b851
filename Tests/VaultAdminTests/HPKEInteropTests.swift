import Crypto
import Foundation
import Pseudonymization
import Testing

@testable import VaultCrypto

/// This project's data-key wraps against an independent RFC 9180
/// implementation (swift-crypto's HPKE, a test-only dependency): each opens
/// what the other made, with FORMATS.md's info and AAD.
@Suite("HPKE interoperability with swift-crypto")
struct HPKEInteropTests {
    static let suite = Crypto.HPKE.Ciphersuite(kem: .Curve25519_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .AES_GCM_256)
    static let info = Data("pseudonymizer data key v1".utf8)

    static func aad(_ id: String, _ version: Int) -> Data { Data("pseudonymizer.dek.v1\u{0}\(id)\u{0}recovery-v\(version)".utf8) }

    @Test("swift-crypto opens this project's wraps")
    func theyOpenOurs() throws {
        let recipient = try VaultCrypto.X25519.PrivateKey()
        let publicKey = RecoveryPublicKey(version: 3, state: .active, createdAt: "", publicKey: recipient.publicKey)
        for _ in 0..<20 {
            let id = UUID().uuidString.lowercased()
            let dataKey = try SecureBytes.random(count: 32)
            let wrapped = try DataKeyWrap.wrap(dataKey, dataKeyID: id, to: publicKey)
            #expect(wrapped.count == 80)
            var opener = try Crypto.HPKE.Recipient(
                privateKey: try Curve25519.KeyAgreement.PrivateKey(
                    rawRepresentation: recipient.rawRepresentation.withUnsafeBytes { Data($0) }),
                ciphersuite: Self.suite, info: Self.info, encapsulatedKey: Data(wrapped.prefix(32)))
            let opened = try opener.open(Data(wrapped.dropFirst(32)), authenticating: Self.aad(id, 3))
            #expect(dataKey.withUnsafeBytes { Data($0) } == opened)
        }
    }

    @Test("this project opens swift-crypto's wraps, and refuses them under another id or version")
    func weOpenTheirs() throws {
        let recipient = try VaultCrypto.X25519.PrivateKey()
        let theirKey = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: recipient.publicKey.rawRepresentation)
        for _ in 0..<20 {
            let id = UUID().uuidString.lowercased()
            let dataKey = Data((0..<32).map { _ in UInt8.random(in: 0...255) })
            var sender = try Crypto.HPKE.Sender(recipientKey: theirKey, ciphersuite: Self.suite, info: Self.info)
            let ciphertext = try sender.seal(dataKey, authenticating: Self.aad(id, 2))
            let wrapped = [UInt8](sender.encapsulatedKey) + [UInt8](ciphertext)
            let opened = try DataKeyWrap.unwrap(wrapped, dataKeyID: id, recoveryVersion: 2, with: recipient)
            #expect(opened.withUnsafeBytes { Data($0) } == dataKey)
            #expect(throws: VaultCrypto.CryptoError.self) {
                try DataKeyWrap.unwrap(wrapped, dataKeyID: id, recoveryVersion: 1, with: recipient)
            }
            #expect(throws: VaultCrypto.CryptoError.self) {
                try DataKeyWrap.unwrap(wrapped, dataKeyID: UUID().uuidString.lowercased(), recoveryVersion: 2, with: recipient)
            }
        }
    }
}

/// FORMATS.md's worked examples recomputed with swift-crypto instead of the
/// project's OpenSSL code: the document describes standard constructions.
@Suite("FORMATS.md against an independent implementation")
struct IndependentFormatTests {
    func example(_ name: String) throws -> FormatExample {
        try #require(FormatExample.all.first { $0.name == name })
    }

    @Test("the token example is HMAC-SHA256 of the documented input")
    func token() throws {
        let example = try example("token")
        let mac = Crypto.HMAC<Crypto.SHA256>.authenticationCode(
            for: try example.hex("mac-input"),
            using: SymmetricKey(data: try example.hex("key")))
        #expect(
            "ip_t1_"
                + Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "") == example["token"])
    }

    @Test("the vault entry example is AES-256-GCM with the documented AAD")
    func vaultEntry() throws {
        let example = try example("vault-entry")
        let sealed = try AES.GCM.seal(
            Data(example["value"].utf8), using: SymmetricKey(data: try example.hex("data-key")),
            nonce: try AES.GCM.Nonce(data: try example.hex("nonce")), authenticating: try example.hex("aad"))
        #expect(Hex.encode(sealed.ciphertext + sealed.tag) == example["ciphertext"])
    }

    @Test("the data-key wrap example opens with swift-crypto's HPKE")
    func dataKeyWrap() throws {
        let example = try example("data-key-wrap")
        let wrapped = try example.hex("wrapped-key")
        var recipient = try Crypto.HPKE.Recipient(
            privateKey: try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: try example.hex("recovery-private-key")),
            ciphersuite: HPKEInteropTests.suite, info: HPKEInteropTests.info, encapsulatedKey: Data(wrapped.prefix(32)))
        let opened = try recipient.open(Data(wrapped.dropFirst(32)), authenticating: try example.hex("aad"))
        #expect(Hex.encode(opened) == example["data-key"])
    }
}
