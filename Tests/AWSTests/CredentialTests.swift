import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import AWS

/// A clock the tests move, for refreshes without waiting an hour.
final class TestClock: Sendable {
    private let offset = Mutex<TimeInterval>(0)
    func advance(by seconds: TimeInterval) { offset.withLock { $0 += seconds } }
    var now: @Sendable () -> Date { { Date().addingTimeInterval(self.offset.withLock { $0 }) } }
}

@Suite("AWS credential chain")
struct CredentialTests {
    let logger = Logger(label: "credential-tests")
    let awsEndpoint = URL(string: "https://sqs.us-east-1.amazonaws.com")!

    func tokenFile(_ content: String) throws -> String {
        let path = NSTemporaryDirectory() + "web-identity-\(UUID().uuidString)"
        try content.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("the order: static keys, web identity, container credentials, loopback test keys, IMDS")
    func order() throws {
        let full = [
            "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:1/creds",
        ]
        func source(_ environment: [String: String], endpoint: URL? = nil) throws -> String {
            try AWSCredentialChain.resolve(environment: environment, endpoint: endpoint ?? awsEndpoint, region: "us-east-1", logger: logger)
                .source
        }
        #expect(try source(full) == "environment")
        #expect(try source(full.filter { !$0.key.hasPrefix("AWS_ACCESS") && !$0.key.hasPrefix("AWS_SECRET") }) == "web identity")
        #expect(try source(["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"]) == "container credentials")
        #expect(try source([:], endpoint: URL(string: "http://127.0.0.1:4566")!) == "loopback test keys")
        #expect(try source([:]) == "instance metadata (IMDSv2)")
        #expect(throws: AWSError.self) { try source(["AWS_EC2_METADATA_DISABLED": "true"]) }
        #expect(throws: AWSError.self) { try source(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://10.0.0.1/creds"]) }
    }

    @Test("web identity through the emulator's STS, no static keys; refreshed ahead of expiry, the token file read again")
    func webIdentity() async throws {
        let sts = try TestEnvironment.variable("AWS_ENDPOINT_URL")
        let file = try tokenFile("first.projected.token")
        let clock = TestClock()
        let provider = try AWSCredentialChain.resolve(
            environment: [
                "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/ingest", "AWS_WEB_IDENTITY_TOKEN_FILE": file,
                "AWS_ENDPOINT_URL_STS": sts, "AWS_ROLE_SESSION_NAME": "tests",
            ],
            endpoint: awsEndpoint, region: "us-east-1", logger: logger, now: clock.now)
        #expect(provider.source == "web identity")
        let first = try await provider.credentials()
        #expect(first.accessKeyID.hasPrefix("ASIA") && first.sessionToken != nil)
        let expiration = try #require(first.expiration)
        #expect(try await provider.credentials().accessKeyID == first.accessKeyID)  // cached

        try "rotated.projected.token".write(toFile: file, atomically: true, encoding: .utf8)
        clock.advance(by: expiration.timeIntervalSinceNow - 200)  // inside the five minutes before expiry
        let second = try await provider.credentials()
        #expect(second.accessKeyID != first.accessKeyID)
        #expect(await (provider as? RefreshingCredentials)?.fetches == 2)
    }

    @Test("STS refusing the role is an access error that names the role and the fix")
    func webIdentityRefused() async throws {
        let server = try await CredentialServer.start(ttl: 3600)
        defer { server.stop() }
        let provider = try AWSCredentialChain.resolve(
            environment: [
                "AWS_ROLE_ARN": "arn:aws:iam::1:role/x", "AWS_WEB_IDENTITY_TOKEN_FILE": try tokenFile("t"),
                "AWS_ENDPOINT_URL_STS": server.url + "/sts",
            ],
            endpoint: awsEndpoint, region: "us-east-1", logger: logger)
        await #expect { _ = try await provider.credentials() } throws: { error in
            (error as? AWSError)?.kind == .accessDenied && "\(error)".contains("arn:aws:iam::1:role/x")
                && "\(error)".contains("trust policy")
        }
    }

    @Test("container credentials (EKS Pod Identity, ECS): the authorization token from its file; refreshed when they expire")
    func containerCredentials() async throws {
        let server = try await CredentialServer.start(ttl: 900)
        defer { server.stop() }
        let clock = TestClock()
        let provider = try AWSCredentialChain.resolve(
            environment: [
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "\(server.url)/creds",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": try tokenFile(CredentialServer.authorization + "\n"),
            ],
            endpoint: awsEndpoint, region: "us-east-1", logger: logger, now: clock.now)
        let first = try await provider.credentials()
        #expect(first.accessKeyID == "ASIATEST00000001" && first.sessionToken == "session-1")
        #expect(try await provider.credentials().accessKeyID == first.accessKeyID)
        clock.advance(by: 700)
        #expect(try await provider.credentials().accessKeyID == "ASIATEST00000002")
        #expect(try await server.counts()["GET /creds"] == 2)

        let wrongToken = try AWSCredentialChain.resolve(
            environment: ["AWS_CONTAINER_CREDENTIALS_FULL_URI": "\(server.url)/creds", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "Bearer nope"],
            endpoint: awsEndpoint, region: "us-east-1", logger: logger)
        await #expect(throws: AWSError.self) { _ = try await wrongToken.credentials() }
    }

    @Test("IMDSv2: a session token first, then the role and its credentials; invalidated credentials are fetched again")
    func instanceMetadata() async throws {
        let server = try await CredentialServer.start(ttl: 3600)
        defer { server.stop() }
        let provider = try AWSCredentialChain.resolve(
            environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url], endpoint: awsEndpoint, region: "us-east-1", logger: logger)
        #expect(provider.source == "instance metadata (IMDSv2)")
        #expect(try await provider.credentials().accessKeyID == "ASIATEST00000001")
        await provider.invalidate()  // what an ExpiredToken answer does
        #expect(try await provider.credentials().accessKeyID == "ASIATEST00000002")
        let counts = try await server.counts()
        #expect(counts["PUT /latest/api/token"] == 2)
        #expect(counts["GET /latest/meta-data/iam/security-credentials/ingest-role"] == 2)
    }

    @Test("an expired-token answer is recognised as such, in either protocol's spelling")
    func expiredToken() {
        #expect(SQSError.classify(code: "ExpiredToken", status: 403, message: "x").isExpiredCredentials)
        #expect(SQSError.classify(code: "com.amazonaws.sqs#ExpiredTokenException", status: 400, message: "x").isExpiredCredentials)
        #expect(!SQSError.classify(code: "InvalidClientTokenId", status: 403, message: "x").isExpiredCredentials)
    }
}
