public import Foundation
import VaultCrypto

/// AWS credentials. `description` never shows the secret.
public struct AWSCredentials: Sendable, CustomStringConvertible {
    public let accessKeyID: String
    let secretAccessKey: String
    public let sessionToken: String?
    /// When temporary credentials stop working; nil for long-term keys.
    public let expiration: Date?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String { "AWSCredentials(\(accessKeyID), secret redacted)" }
}

/// AWS Signature Version 4 for request headers (docs: "Create a signed AWS API request").
public struct SigV4Signer: Sendable {
    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The headers to add to a request: `x-amz-date`, `authorization` and, with
    /// temporary credentials, `x-amz-security-token`. `headers` must include `host`.
    public func sign(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], body: [UInt8], date: Date
    ) throws -> [(String, String)] {
        let amzDate = Self.timestamp(date)
        let day = String(amzDate.prefix(8))
        var signed = headers.map { ($0.0.lowercased(), $0.1) }
        signed.append(("x-amz-date", amzDate))
        if let token = credentials.sessionToken { signed.append(("x-amz-security-token", token)) }
        let canonical = try canonicalRequest(method: method, path: path, query: query, headers: signed, body: body)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Hex.encode(try SHA256.hash(canonical.text)))"
        let signature = Hex.encode(try HMACSHA256(key: signingKey(day: day)).authenticationCode(for: Array(stringToSign.utf8)))
        var added = [("x-amz-date", amzDate)]
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }
        added.append(
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(canonical.signedHeaders), Signature=\(signature)"
            ))
        return added
    }

    struct CanonicalRequest {
        let text: String
        let signedHeaders: String
    }

    func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], body: [UInt8]
    ) throws -> CanonicalRequest {
        let canonicalPath =
            path.isEmpty
            ? "/"
            : path.split(separator: "/", omittingEmptySubsequences: false)
                .map { Self.uriEncode(String($0)) }.joined(separator: "/")
        let encodedQuery: [(name: String, value: String)] = query.map { (Self.uriEncode($0.0), Self.uriEncode($0.1)) }
        let sortedQuery = encodedQuery.sorted { left, right in
            left.name == right.name ? left.value < right.value : left.name < right.name
        }
        let canonicalQuery = sortedQuery.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
        var grouped: [String: [String]] = [:]
        for (name, value) in headers {
            let trimmed = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            grouped[name.lowercased(), default: []].append(trimmed)
        }
        let names = grouped.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(grouped[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let payloadHash = Hex.encode(try SHA256.hash(body))
        let text = [method, canonicalPath, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].joined(separator: "\n")
        return CanonicalRequest(text: text, signedHeaders: signedHeaders)
    }

    func signingKey(day: String) throws -> [UInt8] {
        var key = Array("AWS4\(credentials.secretAccessKey)".utf8)
        for part in [day, region, service, "aws4_request"] {
            key = try HMACSHA256(key: key).authenticationCode(for: Array(part.utf8))
        }
        return key
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: date)
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters.
    static func uriEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
