import Testing
import VaultCrypto

@Suite("Authentication failures")
struct TamperTests {
    let key = try! SecureBytes.random(count: 32)
    let nonce = try! SystemRandom.bytes(12)
    let aad = Array("ip_t1_token|ip|dek-7".utf8)
    let plaintext = Array("198.51.100.23".utf8)

    @Test("a flipped bit anywhere in ciphertext or tag is rejected")
    func flippedBits() throws {
        let cipher = try AESGCM(key: key)
        let sealed = try cipher.seal(plaintext, nonce: nonce, aad: aad)
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x01
            #expect(throws: CryptoError.authenticationFailed) { try cipher.open(tampered, nonce: nonce, aad: aad) }
        }
    }

    @Test("wrong AAD, wrong nonce, wrong key and truncation are rejected")
    func wrongContext() throws {
        let cipher = try AESGCM(key: key)
        let sealed = try cipher.seal(plaintext, nonce: nonce, aad: aad)
        #expect(try cipher.open(sealed, nonce: nonce, aad: aad) == plaintext)
        #expect(throws: CryptoError.authenticationFailed) {
            try cipher.open(sealed, nonce: nonce, aad: Array("ip_t1_other|ip|dek-7".utf8))
        }
        var otherNonce = nonce
        otherNonce[0] ^= 0x80
        #expect(throws: CryptoError.authenticationFailed) { try cipher.open(sealed, nonce: otherNonce, aad: aad) }
        let otherKey = try AESGCM(key: SecureBytes.random(count: 32))
        #expect(throws: CryptoError.authenticationFailed) { try otherKey.open(sealed, nonce: nonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try cipher.open(Array(sealed.dropLast()), nonce: nonce, aad: aad) }
        #expect(throws: CryptoError.authenticationFailed) { try cipher.open(Array(sealed.prefix(15)), nonce: nonce, aad: aad) }
    }

    @Test("HPKE: wrong recipient, wrong AAD and a swapped encapsulated key are rejected")
    func hpkeMisuse() throws {
        let recipient = try X25519.PrivateKey()
        let stranger = try X25519.PrivateKey()
        let dataKey = try SecureBytes.random(count: 32)
        let sealed = try HPKE.seal(dataKey, to: recipient.publicKey, info: Array("info".utf8), aad: Array("dek-1".utf8))
        #expect(try HPKE.open(sealed, with: recipient, info: Array("info".utf8), aad: Array("dek-1".utf8)) == dataKey)
        #expect(throws: CryptoError.authenticationFailed) {
            try HPKE.open(sealed, with: stranger, info: Array("info".utf8), aad: Array("dek-1".utf8))
        }
        #expect(throws: CryptoError.authenticationFailed) {
            try HPKE.open(sealed, with: recipient, info: Array("info".utf8), aad: Array("dek-2".utf8))
        }
        let other = try HPKE.seal(dataKey, to: recipient.publicKey, info: Array("info".utf8), aad: Array("dek-1".utf8))
        let swapped = HPKE.Sealed(encapsulatedKey: other.encapsulatedKey, ciphertext: sealed.ciphertext)
        #expect(throws: CryptoError.authenticationFailed) {
            try HPKE.open(swapped, with: recipient, info: Array("info".utf8), aad: Array("dek-1".utf8))
        }
    }

    @Test("secrets never show in descriptions")
    func redaction() throws {
        let secret = SecureBytes(Array("correct horse battery staple".utf8))
        #expect(!"\(secret)".contains("horse"))
        #expect(!String(reflecting: secret).contains("horse"))
        #expect(SecureBytes(Array("abc".utf8)) == SecureBytes(Array("abc".utf8)))
        #expect(SecureBytes(Array("abc".utf8)) != SecureBytes(Array("abd".utf8)))
    }
}

@Suite("Encodings")
struct EncodingTests {
    @Test(
        "base64 and base64url match RFC 4648 section 10",
        arguments: [
            ("", "", ""), ("f", "Zg==", "Zg"), ("fo", "Zm8=", "Zm8"), ("foo", "Zm9v", "Zm9v"),
            ("foob", "Zm9vYg==", "Zm9vYg"), ("fooba", "Zm9vYmE=", "Zm9vYmE"), ("foobar", "Zm9vYmFy", "Zm9vYmFy"),
        ])
    func rfc4648(plain: String, standard: String, url: String) {
        #expect(Base64.encode(Array(plain.utf8)) == standard)
        #expect(Base64.encodeURL(Array(plain.utf8)) == url)
        #expect(Base64.decode(standard) == Array(plain.utf8))
        #expect(Base64.decodeURL(url) == Array(plain.utf8))
    }

    @Test("standard decoding is strict", arguments: ["Zg=", "Zh==", "Z", "Zm9v!", "Zm9vYg=a", "Zm-v", "Zg"])
    func strictStandardDecoding(text: String) {
        #expect(Base64.decode(text) == nil)
    }

    @Test("base64url decoding is strict", arguments: ["Zh", "Z", "Zm9v!", "Zm+v", "Zm/v", "Zg=="])
    func strictURLDecoding(text: String) {
        #expect(Base64.decodeURL(text) == nil)
    }

    @Test("url alphabet uses - and _")
    func urlAlphabet() {
        #expect(Base64.encodeURL([0xfb, 0xff]) == "-_8")
        #expect(Base64.decodeURL("-_8") == [0xfb, 0xff])
        #expect(Base64.decode("-_8=") == nil)
    }

    @Test("hex round trip and rejection")
    func hexRoundTrip() {
        #expect(Hex.encode([0x00, 0xab, 0xff]) == "00abff")
        #expect(Hex.decode("00ABff") == [0x00, 0xab, 0xff])
        #expect(Hex.decode("0") == nil)
        #expect(Hex.decode("zz") == nil)
    }
}
