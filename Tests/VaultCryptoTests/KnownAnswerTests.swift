import Testing
import VaultCrypto

@testable import VaultCrypto

@Suite("Known-answer vectors")
struct KnownAnswerTests {
    struct HMACFile: Decodable {
        struct Case: Decodable { let name: String, key: String, data: String, mac: String }
        let tests: [Case]
    }

    @Test("HMAC-SHA256 matches RFC 4231, reusing one keyed context per key")
    func hmacRFC4231() throws {
        for vector in try loadVectors("hmac_sha256_rfc4231", as: HMACFile.self).tests {
            let hmac = try HMACSHA256(key: hex(vector.key))
            let expected = try hex(vector.mac)
            // Twice through the same context: the reset path must give the same answer.
            for _ in 0..<2 {
                let mac = try hmac.authenticationCode(for: hex(vector.data))
                #expect(Array(mac.prefix(expected.count)) == expected, "\(vector.name)")
            }
        }
    }

    struct AEADFile: Decodable {
        struct Case: Decodable {
            let tcId: Int, comment: String, key: String, iv: String, aad: String, msg: String, ct: String, tag: String, result: String
        }
        let tests: [Case]
    }

    @Test("AES-256-GCM matches Wycheproof; every modified tag is rejected")
    func aesGCMWycheproof() throws {
        let vectors = try loadVectors("aes_256_gcm_wycheproof", as: AEADFile.self).tests
        #expect(vectors.contains { $0.result == "invalid" })
        for vector in vectors {
            let cipher = try AESGCM(key: hex(vector.key))
            let sealed = try hex(vector.ct) + hex(vector.tag)
            if vector.result == "valid" {
                #expect(try cipher.seal(hex(vector.msg), nonce: hex(vector.iv), aad: hex(vector.aad)) == sealed, "tcId \(vector.tcId)")
                #expect(try cipher.open(sealed, nonce: hex(vector.iv), aad: hex(vector.aad)) == hex(vector.msg), "tcId \(vector.tcId)")
            } else {
                #expect(throws: CryptoError.authenticationFailed, "tcId \(vector.tcId): \(vector.comment)") {
                    try cipher.open(sealed, nonce: hex(vector.iv), aad: hex(vector.aad))
                }
            }
        }
    }

    struct X25519File: Decodable {
        struct Multiplication: Decodable { let name: String, scalar: String, u: String, output: String }
        struct DiffieHellman: Decodable {
            let alicePrivate: String, alicePublic: String, bobPrivate: String, bobPublic: String, shared: String
        }
        struct LowOrder: Decodable { let points: [String] }
        let scalarMultiplication: [Multiplication]
        let diffieHellman: DiffieHellman
        let lowOrderPoints: LowOrder
    }

    @Test("X25519 matches RFC 7748 and refuses the all-zero shared secret")
    func x25519RFC7748() throws {
        let file = try loadVectors("x25519_rfc7748", as: X25519File.self)
        for vector in file.scalarMultiplication {
            let scalar = try X25519.PrivateKey(rawRepresentation: SecureBytes(hex(vector.scalar)))
            let output = try scalar.sharedSecret(with: X25519.PublicKey(rawRepresentation: hex(vector.u)))
            #expect(output.withUnsafeBytes(Array.init) == (try hex(vector.output)), "\(vector.name)")
        }
        let dh = file.diffieHellman
        let alice = try X25519.PrivateKey(rawRepresentation: SecureBytes(hex(dh.alicePrivate)))
        let bob = try X25519.PrivateKey(rawRepresentation: SecureBytes(hex(dh.bobPrivate)))
        #expect(alice.publicKey.rawRepresentation == (try hex(dh.alicePublic)))
        #expect(bob.publicKey.rawRepresentation == (try hex(dh.bobPublic)))
        #expect(try alice.sharedSecret(with: bob.publicKey).withUnsafeBytes(Array.init) == hex(dh.shared))
        #expect(try bob.sharedSecret(with: alice.publicKey).withUnsafeBytes(Array.init) == hex(dh.shared))
        for point in file.lowOrderPoints.points {
            let peer = try X25519.PublicKey(rawRepresentation: hex(point))
            #expect(throws: CryptoError(.weakSharedSecret, "")) { try alice.sharedSecret(with: peer) }
        }
    }

    struct HKDFFile: Decodable {
        struct Case: Decodable { let name: String, ikm: String, salt: String, info: String, length: Int, prk: String, okm: String }
        let tests: [Case]
    }

    @Test("HKDF-SHA256 matches RFC 5869")
    func hkdfRFC5869() throws {
        for vector in try loadVectors("hkdf_sha256_rfc5869", as: HKDFFile.self).tests {
            let prk = try HKDF.extract(salt: hex(vector.salt), ikm: hex(vector.ikm))
            #expect(prk.withUnsafeBytes(Array.init) == (try hex(vector.prk)), "\(vector.name) PRK")
            let okm = try HKDF.expand(prk: prk, info: hex(vector.info), byteCount: vector.length)
            #expect(okm.withUnsafeBytes(Array.init) == (try hex(vector.okm)), "\(vector.name) OKM")
        }
    }

    struct ScryptFile: Decodable {
        struct Case: Decodable { let password: String, salt: String, n: UInt64, r: UInt32, p: UInt32, length: Int, output: String }
        let tests: [Case]
    }

    @Test("scrypt matches RFC 7914")
    func scryptRFC7914() throws {
        for vector in try loadVectors("scrypt_rfc7914", as: ScryptFile.self).tests {
            let output = try Scrypt.deriveKey(
                password: hex(vector.password), salt: hex(vector.salt),
                parameters: .init(n: vector.n, r: vector.r, p: vector.p), byteCount: vector.length)
            #expect(output.withUnsafeBytes(Array.init) == (try hex(vector.output)), "N=\(vector.n)")
        }
    }

    struct HPKEFile: Decodable {
        struct Encryption: Decodable { let aad: String, pt: String, ct: String }
        let info, ikmE, pkEm, skEm, ikmR, pkRm, skRm, enc, sharedSecret, key, baseNonce, exporterSecret: String
        let encryption: Encryption
    }

    @Test("HPKE base mode matches RFC 9180 appendix A.1 step by step")
    func hpkeRFC9180() throws {
        let v = try loadVectors("hpke_rfc9180_a1", as: HPKEFile.self)
        let ephemeral = try HPKE.deriveKeyPair(ikm: hex(v.ikmE))
        let recipient = try HPKE.deriveKeyPair(ikm: hex(v.ikmR))
        #expect(ephemeral.rawRepresentation.withUnsafeBytes(Array.init) == (try hex(v.skEm)))
        #expect(ephemeral.publicKey.rawRepresentation == (try hex(v.pkEm)))
        #expect(recipient.rawRepresentation.withUnsafeBytes(Array.init) == (try hex(v.skRm)))
        #expect(recipient.publicKey.rawRepresentation == (try hex(v.pkRm)))

        let (sharedSecret, encapsulated) = try HPKE.encapsulate(to: recipient.publicKey, ephemeral: ephemeral)
        #expect(encapsulated == (try hex(v.enc)))
        #expect(sharedSecret.withUnsafeBytes(Array.init) == (try hex(v.sharedSecret)))
        let decapsulated = try HPKE.decapsulate(X25519.PublicKey(rawRepresentation: encapsulated), with: recipient)
        #expect(decapsulated == sharedSecret)

        let context = try HPKE.keySchedule(sharedSecret: sharedSecret, info: hex(v.info), aead: .aes128GCM)
        #expect(context.key.withUnsafeBytes(Array.init) == (try hex(v.key)))
        #expect(context.baseNonce == (try hex(v.baseNonce)))
        #expect(context.exporterSecret.withUnsafeBytes(Array.init) == (try hex(v.exporterSecret)))

        let sealed = try HPKE.seal(
            hex(v.encryption.pt), to: recipient.publicKey, info: hex(v.info), aad: hex(v.encryption.aad),
            aead: .aes128GCM, ephemeral: ephemeral)
        #expect(sealed.ciphertext == (try hex(v.encryption.ct)))
        let opened = try HPKE.open(sealed, with: recipient, info: hex(v.info), aad: hex(v.encryption.aad), aead: .aes128GCM)
        #expect(opened.withUnsafeBytes(Array.init) == (try hex(v.encryption.pt)))
    }
}
