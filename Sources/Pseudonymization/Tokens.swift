public import VaultCrypto

/// The personal fields that are replaced by tokens.
public enum PIIField: String, Sendable, CaseIterable, Codable {
    case ip
    case deviceID = "device_id"

    /// The token prefix: short, and different per field.
    public var tag: String {
        switch self {
        case .ip: return "ip"
        case .deviceID: return "dev"
        }
    }
}

/// Tokens look like `ip_t1_<43 base64url chars>` or `dev_t1_<…>`: the field, the
/// tokenization key version, and HMAC-SHA256(key, domain ‖ field ‖ value).
/// Fixed length per version width, copy-paste safe (no `+`, `/`, `=`).
public enum Token {
    public struct Parts: Sendable, Equatable {
        public let field: PIIField
        public let keyVersion: Int
    }

    /// The field and key version of a well-formed token; nil for anything else.
    public static func parse(_ token: String) -> Parts? {
        let pieces = token.split(separator: "_", maxSplits: 2, omittingEmptySubsequences: false)
        guard pieces.count == 3, let field = PIIField.allCases.first(where: { $0.tag == pieces[0] }),
            pieces[1].first == "t", let version = Int(pieces[1].dropFirst()), version > 0,
            String(version) == pieces[1].dropFirst(),
            isEncodedMAC(pieces[2].utf8)
        else { return nil }
        return Parts(field: field, keyVersion: version)
    }

    /// True for the canonical unpadded base64url of 32 bytes: 43 characters of
    /// the alphabet, the last one carrying 4 bits and two zero bits. Checked
    /// without decoding: recovery and retokenize parse every token they touch.
    static func isEncodedMAC(_ text: Substring.UTF8View) -> Bool {
        guard text.count == 43 else { return false }
        var value: UInt8 = 0
        for byte in text {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            default: return false
            }
        }
        return value & 0b11 == 0
    }
}

/// A value to tokenize: its field and canonical form.
public struct TokenRequest: Hashable, Sendable {
    public let field: PIIField
    public let value: String

    public init(field: PIIField, value: String) {
        self.field = field
        self.value = value
    }
}

/// What a token is made of, wherever its key lives: the MAC input and the
/// text around the MAC.
public enum TokenFormat {
    /// Domain separation: the HMAC input is `domain ‖ 0 ‖ field ‖ 0 ‖ value`, so
    /// an IP and a device id with the same text get unrelated tokens, and no
    /// other use of the key can produce a token.
    static let domain = "pseudonymizer.token.v1"
    static let erasedDomain = "pseudonymizer.erased-token.v1"
    static let suppressionDomain = "pseudonymizer.suppression.v1"

    static func prefix(_ domain: String, _ field: PIIField) -> [UInt8] { Array("\(domain)\u{0}\(field.rawValue)\u{0}".utf8) }

    /// The MAC input of `request`'s token.
    public static func macInput(_ request: TokenRequest) -> [UInt8] { prefix(domain, request.field) + Array(request.value.utf8) }

    /// The MAC input of the token an erased entry moves to (see `Tokenizer.token(forErased:field:)`).
    public static func erasedMACInput(oldToken: String, field: PIIField) -> [UInt8] { prefix(erasedDomain, field) + Array(oldToken.utf8) }

    /// The MAC input of a value's suppression tag (under the suppression key,
    /// which never rotates): what `vault forget` records and ingest checks, so
    /// an erased value is not stored again under any tokenization version.
    public static func suppressionMACInput(_ request: TokenRequest) -> [UInt8] {
        prefix(suppressionDomain, request.field) + Array(request.value.utf8)
    }

    /// "ip_t1_" / "dev_t1_": the visible token prefix per field and version.
    static func textPrefix(_ field: PIIField, version: Int) -> [UInt8] { Array("\(field.tag)_t\(version)_".utf8) }

    /// The token for a 32-byte MAC.
    public static func token(mac: some Collection<UInt8>, field: PIIField, version: Int) -> String {
        var text = textPrefix(field, version: version)
        Array(mac).withUnsafeBytes { Base64.appendURL($0, to: &text) }
        return String(decoding: text, as: UTF8.self)
    }
}

/// Computes tokens under one local tokenization key version. Reuses one keyed
/// HMAC context; not thread-safe (one per task).
public final class Tokenizer {
    public let keyVersion: Int
    private let hmac: HMACSHA256
    private let prefixes: [PIIField: [UInt8]]
    private let tokenPrefixes: [PIIField: [UInt8]]
    private var output = [UInt8](repeating: 0, count: HMACSHA256.byteCount)
    private var scratch: [UInt8] = []

    /// A KMS-held version is refused: its tokens come from KMS.
    public init(key: TokenizationKey) throws {
        keyVersion = key.version
        hmac = try HMACSHA256(key: key.localSecret())
        var prefixes: [PIIField: [UInt8]] = [:]
        var tokenPrefixes: [PIIField: [UInt8]] = [:]
        for field in PIIField.allCases {
            prefixes[field] = TokenFormat.prefix(TokenFormat.domain, field)
            tokenPrefixes[field] = TokenFormat.textPrefix(field, version: key.version)
        }
        self.prefixes = prefixes
        self.tokenPrefixes = tokenPrefixes
    }

    public func token(for canonicalValue: String, field: PIIField) throws -> String {
        try mac(prefixes[field]!, canonicalValue, field: field)
    }

    /// The token an *erased* entry moves to when its data is retokenized: the
    /// original is gone, so it is derived from the old token instead, keeping
    /// that person's old rows grouped while their value stays unrecoverable (a
    /// new login with the same value gets its ordinary, unrelated token).
    public func token(forErased oldToken: String, field: PIIField) throws -> String {
        try mac(TokenFormat.prefix(TokenFormat.erasedDomain, field), oldToken, field: field)
    }

    private func mac(_ prefix: [UInt8], _ value: String, field: PIIField) throws -> String {
        try hmac.reset()
        try hmac.update(prefix)
        var value = value
        try value.withUTF8 { try hmac.update(UnsafeRawBufferPointer($0)) }
        try output.withUnsafeMutableBytes { try hmac.finalize(into: $0) }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: tokenPrefixes[field]!)
        output.withUnsafeBytes { Base64.appendURL($0, to: &scratch) }
        return String(decoding: scratch, as: UTF8.self)
    }
}

/// What a sealed vault value is bound to. Changing any part (moving a row to
/// another token, relabelling the field, pointing it at another data key) makes
/// opening fail instead of returning someone else's value.
public enum VaultAAD {
    public static func entry(token: String, field: PIIField, dataKeyID: String) -> [UInt8] {
        Array("pseudonymizer.vault.v1\u{0}\(token)\u{0}\(field.rawValue)\u{0}\(dataKeyID)".utf8)
    }

    public static func quarantine(receiptID: [UInt8], dataKeyID: String) -> [UInt8] {
        Array("pseudonymizer.quarantine.v1\u{0}\(Hex.encode(receiptID))\u{0}\(dataKeyID)".utf8)
    }
}

/// AES-256-GCM sealing under one data key, with nonces drawn from the CSPRNG in
/// bulk (one `RAND_bytes` call per 256 nonces costs less than the seal itself).
/// Not thread-safe: one per task.
public final class VaultSealer {
    public let dataKeyID: String
    private let cipher: AESGCM
    private var nonces = [UInt8]()
    private var nextNonce = 0
    private static let noncesPerRefill = 256

    public init(dataKeyID: String, key: SecureBytes) throws {
        self.dataKeyID = dataKeyID
        cipher = try AESGCM(key: key)
    }

    /// Returns a fresh random nonce and `ciphertext ‖ tag`.
    public func seal(_ plaintext: some ReadableBytes, aad: [UInt8]) throws -> (nonce: [UInt8], ciphertext: [UInt8]) {
        if nextNonce == nonces.count {
            nonces = try SystemRandom.bytes(Self.noncesPerRefill * AESGCM.nonceByteCount)
            nextNonce = 0
        }
        let nonce = Array(nonces[nextNonce..<(nextNonce + AESGCM.nonceByteCount)])
        nextNonce += AESGCM.nonceByteCount
        return (nonce, try cipher.seal(plaintext, nonce: nonce, aad: aad))
    }

    public func seal(_ canonicalValue: String, token: String, field: PIIField) throws -> (nonce: [UInt8], ciphertext: [UInt8]) {
        try seal(Array(canonicalValue.utf8), aad: VaultAAD.entry(token: token, field: field, dataKeyID: dataKeyID))
    }
}
