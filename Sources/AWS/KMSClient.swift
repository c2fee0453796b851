public import AsyncHTTPClient
public import Foundation
public import Logging
public import NIOCore
import NIOHTTP1
public import VaultCrypto

/// What `DescribeKey` says about a key.
public struct KMSKeyDescription: Sendable {
    public let arn: String
    /// "HMAC_256", "SYMMETRIC_DEFAULT", …
    public let keySpec: String
    /// "Enabled", "Disabled", "PendingDeletion", …
    public let keyState: String
}

/// An AWS KMS client (JSON 1.1, `TrentService`) for the calls the tools make,
/// SigV4-signed like the SQS client. Keys are named by id, alias or ARN; an
/// ARN's region picks the regional endpoint. Every attempt has a deadline; a
/// transient failure is retried twice (`maximumAttempts`), after that it is
/// the caller's (`KMSError.isTransient`).
public final class KMSClient: Sendable {
    /// The endpoint override (`AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`), if any.
    private let endpointOverride: URL?
    private let defaultRegion: String
    private let credentials: any AWSCredentialProvider
    private let http: HTTPClient
    private let ownsHTTP: Bool
    private let timeout: TimeAmount
    private let logger: Logger

    /// With `httpClient` nil the client makes its own; call `shutdown()` when done.
    public init(
        endpointOverride: URL?, defaultRegion: String, credentials: any AWSCredentialProvider,
        httpClient: HTTPClient? = nil, timeout: TimeAmount = .seconds(10), logger: Logger
    ) {
        self.endpointOverride = endpointOverride
        self.defaultRegion = defaultRegion
        self.credentials = credentials
        self.http = httpClient ?? HTTPClient(eventLoopGroupProvider: .singleton, configuration: Self.httpConfiguration)
        self.ownsHTTP = httpClient == nil
        self.timeout = timeout
        self.logger = logger
    }

    /// Room for every concurrent call; a connection that cannot be made fails
    /// its requests after 2 s (AsyncHTTPClient keeps retrying the connection
    /// meanwhile), so an unreachable KMS is an error within an attempt, not
    /// a wait for the whole deadline.
    static var httpConfiguration: HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64))
        configuration.timeout.connect = .seconds(2)
        return configuration
    }

    /// From the standard AWS variables: `AWS_ENDPOINT_URL_KMS` or
    /// `AWS_ENDPOINT_URL` (else each key's regional endpoint), `AWS_REGION` or
    /// `AWS_DEFAULT_REGION` for keys not named by ARN, and the credentials as
    /// `AWSCredentialChain` resolves them. Plain http only to loopback, unless
    /// `allowInsecure`.
    /// `httpClient` nil: a client of its own (call `shutdown()`).
    public static func fromEnvironment(
        allowInsecure: Bool = false, httpClient: HTTPClient? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger = Logger(label: "kms")
    ) throws -> KMSClient {
        let region = environment["AWS_REGION"].nonEmpty ?? environment["AWS_DEFAULT_REGION"].nonEmpty ?? "us-east-1"
        let endpoint = try AWSEndpoint.fromEnvironment(
            service: "kms", standard: standardURL(region: region), region: region, allowInsecure: allowInsecure,
            howToAllow: "set INGEST_ALLOW_INSECURE_ENDPOINT=1", environment: environment)
        let override = endpoint.url == standardURL(region: region) ? nil : endpoint.url
        return KMSClient(
            endpointOverride: override, defaultRegion: region,
            credentials: try AWSCredentialChain.resolve(environment: environment, endpoint: endpoint.url, region: region, logger: logger),
            httpClient: httpClient, logger: logger)
    }

    public func shutdown() async {
        if ownsHTTP { try? await http.shutdown() }
    }

    private static func standardURL(region: String) -> URL { URL(string: "https://kms.\(region).amazonaws.com")! }

    /// The region in a key ARN (`arn:aws:kms:<region>:<account>:key/<id>`), if it is one.
    public static func region(ofKey keyID: String) -> String? {
        let parts = keyID.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn", parts[2] == "kms", !parts[3].isEmpty else { return nil }
        return String(parts[3])
    }

    // MARK: Operations

    /// HMAC-SHA256 of `message` under the `HMAC_256` key `keyID` (`GenerateMac`).
    public func generateMac(keyID: String, message: [UInt8]) async throws -> [UInt8] {
        let body = try JSONSerialization.data(withJSONObject: [
            "KeyId": keyID, "MacAlgorithm": "HMAC_SHA_256", "Message": Base64.encode(message),
        ])
        let answer = try await call("GenerateMac", keyID: keyID, body: Array(body))
        guard let object = try? JSONSerialization.jsonObject(with: Data(answer.bytes)) as? [String: Any],
            let text = object["Mac"] as? String, let mac = Base64.decode(text), mac.count == HMACSHA256.byteCount
        else {
            throw KMSError(.invalidRequest, operation: "GenerateMac", keyID: keyID, "the answer has no 32-byte Mac")
        }
        return mac
    }

    public func describeKey(_ keyID: String) async throws -> KMSKeyDescription {
        let answer = try await call("DescribeKey", keyID: keyID, body: Array(try JSONSerialization.data(withJSONObject: ["KeyId": keyID])))
        guard let object = try? JSONSerialization.jsonObject(with: Data(answer.bytes)) as? [String: Any],
            let metadata = object["KeyMetadata"] as? [String: Any], let arn = metadata["Arn"] as? String
        else {
            throw KMSError(.invalidRequest, operation: "DescribeKey", keyID: keyID, "the answer has no KeyMetadata")
        }
        return KMSKeyDescription(
            arn: arn, keySpec: metadata["KeySpec"] as? String ?? metadata["CustomerMasterKeySpec"] as? String ?? "?",
            keyState: metadata["KeyState"] as? String ?? "?")
    }

    /// `plaintext` encrypted under the symmetric key `keyID`, bound to `context`
    /// (KMS refuses to decrypt it with any other context).
    public func encrypt(keyID: String, plaintext: SecureBytes, context: [(String, String)]) async throws -> [UInt8] {
        let request = SecretJSON.object([
            ("KeyId", .string(keyID)), ("Plaintext", .secret(plaintext)), ("EncryptionContext", .strings(context)),
        ])
        var body = request.withUnsafeBytes { Array($0) }
        defer { body.withUnsafeMutableBytes(wipe) }
        let answer = try await call("Encrypt", keyID: keyID, body: body)
        guard let object = try? JSONSerialization.jsonObject(with: Data(answer.bytes)) as? [String: Any],
            let text = object["CiphertextBlob"] as? String, let blob = Base64.decode(text)
        else {
            throw KMSError(.invalidRequest, operation: "Encrypt", keyID: keyID, "the answer has no CiphertextBlob")
        }
        return blob
    }

    /// Decrypts `ciphertext` made by `encrypt` under `keyID` with `context`;
    /// the plaintext is read from the answer into wiped memory.
    public func decrypt(keyID: String, ciphertext: [UInt8], context: [(String, String)]) async throws -> SecureBytes {
        let contextObject = Dictionary(context, uniquingKeysWith: { first, _ in first })
        let body = try JSONSerialization.data(withJSONObject: [
            "KeyId": keyID, "CiphertextBlob": Base64.encode(ciphertext), "EncryptionContext": contextObject,
        ])
        var answer = try await call("Decrypt", keyID: keyID, body: Array(body))
        defer { answer.wipe() }
        guard let plaintext = answer.bytes.withUnsafeBytes({ SecretJSON.secret("Plaintext", in: $0) }) else {
            throw KMSError(.invalidRequest, operation: "Decrypt", keyID: keyID, "the answer has no Plaintext")
        }
        return plaintext
    }

    // MARK: Wire

    /// A successful answer's body; `wipe()` clears it once a secret was read from it.
    struct Answer {
        var bytes: [UInt8]

        mutating func wipe() { bytes.withUnsafeMutableBytes(VaultCrypto.wipe) }
    }

    private func endpoint(for keyID: String) -> AWSEndpoint {
        let region = Self.region(ofKey: keyID) ?? defaultRegion
        return AWSEndpoint(url: endpointOverride ?? Self.standardURL(region: region), region: region, service: "kms")
    }

    /// Attempts per call, as the AWS SDKs' standard retry mode: a throttled,
    /// failed or timed-out call is tried twice more, after a jittered pause
    /// (up to 0.2 s, then 0.4 s), before its caller sees the outage.
    static let maximumAttempts = 3

    private func call(_ operation: String, keyID: String, body: [UInt8]) async throws -> Answer {
        var attempt = 1
        while true {
            do {
                return try await callOnce(operation, keyID: keyID, body: body)
            } catch let error as KMSError where error.isTransient && attempt < Self.maximumAttempts {
                try await Task.sleep(for: .milliseconds(Int64.random(in: 0...(100 << attempt))))
                attempt += 1
            }
        }
    }

    private func callOnce(_ operation: String, keyID: String, body: [UInt8]) async throws -> Answer {
        let endpoint = endpoint(for: keyID)
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "TrentService.\(operation)")]
        let asKMSError = { (error: AWSError) -> any Error in KMSError(error, operation: operation, keyID: keyID) }
        return try await withCredentials(
            credentials, logger: logger, service: "KMS", isExpired: KMSError.isExpiredCredentials, mapCredentialError: asKMSError
        ) { credentials in
            let request = try endpoint.signedPOST(headers: headers, body: body, credentials: credentials)
            let status: Int
            var buffer: ByteBuffer
            do {
                let response = try await http.execute(request, timeout: timeout, logger: logger)
                status = Int(response.status.code)
                buffer = try await response.body.collect(upTo: 1 << 20)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                throw KMSError(.transient, operation: operation, keyID: keyID, "\(endpoint.hostHeader) did not answer (\(error))")
            }
            // The answer may carry a secret (Decrypt): copy it out, then clear NIO's buffer.
            let bytes = buffer.readableBytesView.withContiguousStorageIfAvailable { Array($0) } ?? Array(buffer.readableBytesView)
            buffer.withUnsafeMutableReadableBytes(wipe)
            guard (200..<300).contains(status) else {
                let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
                throw KMSError.classify(
                    code: object?["__type"] as? String, status: status,
                    message: object?["message"] as? String ?? object?["Message"] as? String ?? "HTTP \(status)",
                    operation: operation, keyID: keyID)
            }
            return Answer(bytes: bytes)
        }
    }
}
