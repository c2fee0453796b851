import Foundation
import NIOCore
import TestSupport
import Testing
import VaultCrypto

@testable import AWS

/// The KMS client against moto's KMS over loopback, and how KMS's answers
/// become kinds of failure (what ingest and vault do about each).
@Suite("KMS client")
struct KMSClientTests {
    @Test("GenerateMac agrees with boto3's; DescribeKey names the ARN, spec and state")
    func generateMacAndDescribe() async throws {
        let kms = try TestKMS.client()
        let arn = try await TestKMS.createHMACKey()
        let messages: [[UInt8]] = [[0], Array("pseudonymizer".utf8), Array(repeating: 0xff, count: 4096)]
        var ours: [[UInt8]] = []
        for message in messages { ours.append(try await kms.generateMac(keyID: arn, message: message)) }
        #expect(ours == (try await TestKMS.generateMacs(keyID: arn, messages: messages)))
        let description = try await kms.describeKey(arn)
        #expect(description.arn == arn && description.keySpec == "HMAC_256" && description.keyState == "Enabled")
    }

    @Test("Encrypt/Decrypt round trip; another encryption context or an altered blob is invalidCiphertext")
    func encryptionContextIsEnforced() async throws {
        let kms = try TestKMS.client()
        let arn = try await TestKMS.createSymmetricKey()
        let secret = SecureBytes(Array(0..<32))
        let context = [("pseudonymizer.purpose", "test"), ("version", "1")]
        let blob = try await kms.encrypt(keyID: arn, plaintext: secret, context: context)
        #expect(try await kms.decrypt(keyID: arn, ciphertext: blob, context: context) == secret)
        let other = try await #require(throws: KMSError.self) {
            try await kms.decrypt(keyID: arn, ciphertext: blob, context: [("pseudonymizer.purpose", "test"), ("version", "2")])
        }
        #expect(other.kind == .invalidCiphertext)
        var altered = blob
        altered[altered.count / 2] ^= 1
        let tampered = try await #require(throws: KMSError.self) {
            try await kms.decrypt(keyID: arn, ciphertext: altered, context: context)
        }
        #expect(tampered.kind == .invalidCiphertext)
    }

    @Test("a key KMS does not have is keyUnusable, and the message says what to do")
    func missingKey() async throws {
        let error = try await #require(throws: KMSError.self) {
            try await TestKMS.client().generateMac(
                keyID: "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000", message: [1])
        }
        #expect(error.kind == .keyUnusable && error.code == "NotFoundException")
        #expect(error.description.contains("enable or restore it"))
    }

    @Test("throttled twice, the third attempt answers: the caller never sees it; throttled for good, it gives up after three")
    func retriesTransientFailures() async throws {
        let arn = try await TestKMS.createHMACKey()
        func client(_ front: KMSFront) -> KMSClient {
            KMSClient(
                endpointOverride: URL(string: front.url)!, defaultRegion: "us-east-1",
                credentials: StaticCredentials(AWSCredentials(accessKeyID: "test", secretAccessKey: "test")),
                logger: TestEnvironment.logger)
        }
        let brief = try await KMSFront.start(.throttleFirst(2))
        defer { brief.stop() }
        let briefClient = client(brief)
        defer { Task { await briefClient.shutdown() } }
        let mac = try await briefClient.generateMac(keyID: arn, message: [1, 2, 3])
        #expect(try await [mac] == TestKMS.generateMacs(keyID: arn, messages: [[1, 2, 3]]))
        #expect(try await brief.requests() == 3)

        let lasting = try await KMSFront.start(.throttleFirst(100))
        defer { lasting.stop() }
        let lastingClient = client(lasting)
        defer { Task { await lastingClient.shutdown() } }
        let error = try await #require(throws: KMSError.self) { try await lastingClient.generateMac(keyID: arn, message: [1]) }
        #expect(error.isTransient && error.code == "ThrottlingException")
        #expect(try await lasting.requests() == KMSClient.maximumAttempts)
    }

    @Test("nothing listening is transient (an outage to wait out), within the call's deadline")
    func unreachableIsTransient() async throws {
        let refusing = try RefusingPort()
        defer { withExtendedLifetime(refusing) {} }
        let kms = KMSClient(
            endpointOverride: URL(string: "http://127.0.0.1:\(refusing.port)")!, defaultRegion: "us-east-1",
            credentials: StaticCredentials(AWSCredentials(accessKeyID: "test", secretAccessKey: "test")), timeout: .seconds(3),
            logger: TestEnvironment.logger)
        defer { Task { await kms.shutdown() } }
        let error = try await #require(throws: KMSError.self) { try await kms.generateMac(keyID: "alias/tokens", message: [1]) }
        #expect(error.isTransient)
    }

    @Test(
        "AWS error codes map to what the caller does: wait (transient), stop and fix the key (keyUnusable), stop and fix IAM (accessDenied)",
        arguments: [
            ("ThrottlingException", 400, KMSError.Kind.transient),
            ("KMSInternalException", 500, .transient),
            ("KeyUnavailableException", 500, .transient),
            ("com.amazonaws.kms#DependencyTimeoutException", 503, .transient),
            ("SomethingNew", 503, .transient),
            ("SomethingNew", 429, .transient),
            ("DisabledException", 400, .keyUnusable),
            ("KMSInvalidStateException", 400, .keyUnusable),
            ("NotFoundException", 400, .keyUnusable),
            ("InvalidKeyUsageException", 400, .keyUnusable),
            ("AccessDeniedException", 400, .accessDenied),
            ("UnrecognizedClientException", 400, .accessDenied),
            ("ExpiredTokenException", 400, .accessDenied),
            ("InvalidCiphertextException", 400, .invalidCiphertext),
            ("ValidationException", 400, .invalidRequest),
        ])
    func classification(code: String, status: Int, kind: KMSError.Kind) {
        let error = KMSError.classify(code: code, status: status, message: "m", operation: "GenerateMac", keyID: "k")
        #expect(error.kind == kind)
        #expect(error.code == code.split(separator: "#").last.map(String.init))
    }

    @Test("expired temporary credentials are recognised (the client refreshes them and tries once more)")
    func expiredCredentials() {
        for code in ["ExpiredToken", "ExpiredTokenException", "RequestExpired"] {
            #expect(KMSError.isExpiredCredentials(KMSError(.accessDenied, code: code, operation: "GenerateMac", keyID: nil, "")))
        }
        #expect(!KMSError.isExpiredCredentials(KMSError(.accessDenied, code: "AccessDeniedException", operation: "x", keyID: nil, "")))
    }

    @Test("a key ARN's region picks the endpoint region; ids and aliases use the default")
    func regionFromARN() {
        #expect(KMSClient.region(ofKey: "arn:aws:kms:eu-central-1:123456789012:key/abc") == "eu-central-1")
        #expect(KMSClient.region(ofKey: "arn:aws:kms:eu-central-1:123456789012:alias/tokens") == "eu-central-1")
        #expect(KMSClient.region(ofKey: "alias/tokens") == nil)
        #expect(KMSClient.region(ofKey: "1234abcd-12ab-34cd-56ef-1234567890ab") == nil)
    }

    @Test("plain http to a host other than loopback is refused unless allowed")
    func insecureEndpointRefused() async throws {
        let environment = [
            "AWS_ENDPOINT_URL_KMS": "http://kms.internal.example:4566", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
        ]
        #expect(throws: AWSError.self) { try KMSClient.fromEnvironment(environment: environment) }
        await (try KMSClient.fromEnvironment(allowInsecure: true, environment: environment)).shutdown()
    }
}
