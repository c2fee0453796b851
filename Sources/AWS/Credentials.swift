import AsyncHTTPClient
public import Foundation
public import Logging
import NIOCore
import NIOHTTP1

/// Where AWS credentials come from, resolved the way the AWS SDKs resolve
/// them (docs: "Standardized credential providers"), in this order:
///
/// 1. static keys in the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
/// 2. web identity (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, e.g. IRSA
///    on EKS): STS `AssumeRoleWithWebIdentity`, at `AWS_ENDPOINT_URL_STS` or
///    `AWS_ENDPOINT_URL` or the regional STS endpoint;
/// 3. container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
///    `_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`: EKS Pod
///    Identity, ECS);
/// 4. on a loopback endpoint with none of the above: the emulators' test keys;
/// 5. the EC2 instance metadata service, IMDSv2 (a token `PUT`, then the
///    role's credentials), unless `AWS_EC2_METADATA_DISABLED=true`.
///
/// Temporary credentials are cached and fetched again five minutes before
/// they expire, and at once when a service answers `ExpiredToken`.
public protocol AWSCredentialProvider: Sendable {
    /// Which provider this is, for logs and errors ("web identity", …).
    var source: String { get }
    func credentials() async throws -> AWSCredentials
    /// The credentials were refused as expired: fetch new ones next time.
    func invalidate() async
}

public enum AWSCredentialChain {
    /// `now` is the clock refreshes are timed by (tests move it).
    public static func resolve(
        environment: [String: String] = ProcessInfo.processInfo.environment, endpoint: URL, region: String, logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws -> any AWSCredentialProvider {
        if let key = environment["AWS_ACCESS_KEY_ID"].nonEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"].nonEmpty {
            return StaticCredentials(
                AWSCredentials(
                    accessKeyID: key, secretAccessKey: secret,
                    sessionToken: environment["AWS_SESSION_TOKEN"].nonEmpty), source: "environment")
        }
        if let role = environment["AWS_ROLE_ARN"].nonEmpty, let tokenFile = environment["AWS_WEB_IDENTITY_TOKEN_FILE"].nonEmpty {
            let sts = try url(
                environment["AWS_ENDPOINT_URL_STS"].nonEmpty ?? environment["AWS_ENDPOINT_URL"].nonEmpty
                    ?? "https://sts.\(region).amazonaws.com", what: "STS endpoint")
            return RefreshingCredentials(source: "web identity", now: now, logger: logger) {
                try await WebIdentity.assumeRole(
                    role, tokenFile: tokenFile, sessionName: environment["AWS_ROLE_SESSION_NAME"].nonEmpty,
                    sts: sts)
            }
        }
        if let full = environment["AWS_CONTAINER_CREDENTIALS_FULL_URI"].nonEmpty {
            let endpoint = try url(full, what: "AWS_CONTAINER_CREDENTIALS_FULL_URI")
            try ContainerCredentials.checkHost(endpoint)
            return containerProvider(endpoint, environment: environment, logger: logger, now: now)
        }
        if let relative = environment["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"].nonEmpty {
            return containerProvider(
                try url("http://169.254.170.2" + relative, what: "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
                environment: environment, logger: logger, now: now)
        }
        if isLoopback(endpoint.host ?? "") {
            return StaticCredentials(AWSCredentials(accessKeyID: "test", secretAccessKey: "test"), source: "loopback test keys")
        }
        guard environment["AWS_EC2_METADATA_DISABLED"]?.lowercased() != "true" else {
            throw AWSError(
                .accessDenied,
                """
                no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN and \
                AWS_WEB_IDENTITY_TOKEN_FILE (IRSA), or AWS_CONTAINER_CREDENTIALS_FULL_URI (EKS Pod Identity, ECS); \
                the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)
                """)
        }
        let imds = try url(environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"].nonEmpty ?? "http://169.254.169.254", what: "IMDS endpoint")
        return RefreshingCredentials(source: "instance metadata (IMDSv2)", now: now, logger: logger) {
            try await InstanceMetadata.credentials(imds)
        }
    }

    private static func containerProvider(
        _ endpoint: URL, environment: [String: String], logger: Logger, now: @escaping @Sendable () -> Date
    ) -> any AWSCredentialProvider {
        let tokenFile = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"].nonEmpty
        let token = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"].nonEmpty
        return RefreshingCredentials(source: "container credentials", now: now, logger: logger) {
            try await ContainerCredentials.fetch(endpoint, authorization: try tokenFile.map(readToken) ?? token)
        }
    }

    static func url(_ text: String, what: String) throws -> URL {
        guard let url = URL(string: text), url.host != nil, ["http", "https"].contains(url.scheme ?? "") else {
            throw AWSError(.configuration, "\(what) \"\(text)\" is not an http(s) URL")
        }
        return url
    }

    /// A token file, re-read at every fetch (orchestrators rotate them).
    static func readToken(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AWSError(.accessDenied, "cannot read the token file \(path); check the mounted service account token")
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Keys that do not change.
public struct StaticCredentials: AWSCredentialProvider {
    let value: AWSCredentials
    public let source: String

    public init(_ value: AWSCredentials, source: String = "static") {
        self.value = value
        self.source = source
    }

    public func credentials() async throws -> AWSCredentials { value }
    public func invalidate() async {}
}

/// Temporary credentials from a source that can be asked again: cached, and
/// fetched again `refreshAhead` before they expire (or when invalidated).
/// Concurrent callers share one fetch; when a refresh fails while the cached
/// credentials are still valid, those are used and the refresh is tried again
/// on the next call.
public actor RefreshingCredentials: AWSCredentialProvider {
    public nonisolated let source: String
    private let fetch: @Sendable () async throws -> AWSCredentials
    private let refreshAhead: TimeInterval
    private let now: @Sendable () -> Date
    private let logger: Logger
    private var cached: AWSCredentials?
    private var pending: Task<AWSCredentials, any Error>?
    /// How many times credentials were fetched (for tests and logs).
    public private(set) var fetches = 0

    public init(
        source: String, refreshAhead: TimeInterval = 300, now: @escaping @Sendable () -> Date = { Date() }, logger: Logger,
        fetch: @escaping @Sendable () async throws -> AWSCredentials
    ) {
        self.source = source
        self.fetch = fetch
        self.refreshAhead = refreshAhead
        self.now = now
        self.logger = logger
    }

    public func credentials() async throws -> AWSCredentials {
        if let cached, !needsRefresh(cached) { return cached }
        let task = pending ?? Task { try await fetch() }
        pending = task
        do {
            let fresh = try await task.value
            pending = nil
            if cached?.accessKeyID != fresh.accessKeyID || cached?.expiration != fresh.expiration {
                fetches += 1
                logger.info(
                    "AWS credentials obtained",
                    metadata: [
                        "source": "\(source)", "expires": "\(fresh.expiration.map { ISO8601DateFormatter().string(from: $0) } ?? "never")",
                    ])
            }
            cached = fresh
            return fresh
        } catch {
            pending = nil
            if let cached, let expiration = cached.expiration, expiration > now() {
                logger.warning(
                    "could not refresh AWS credentials; using the current ones until they expire",
                    metadata: ["source": "\(source)", "error": "\(error)"])
                return cached
            }
            throw error
        }
    }

    public func invalidate() {
        cached = nil
    }

    private func needsRefresh(_ credentials: AWSCredentials) -> Bool {
        guard let expiration = credentials.expiration else { return false }
        return expiration.timeIntervalSince(now()) < refreshAhead
    }
}

/// STS `AssumeRoleWithWebIdentity`: an unsigned query-protocol call carrying
/// the web identity token (the service account's projected token under IRSA).
enum WebIdentity {
    static func assumeRole(_ role: String, tokenFile: String, sessionName: String?, sts: URL) async throws -> AWSCredentials {
        let token = try AWSCredentialChain.readToken(tokenFile)
        let session = sessionName ?? "pseudonymizer-\(Int(Date().timeIntervalSince1970))"
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", role), ("RoleSessionName", session),
            ("WebIdentityToken", token),
        ]
        var request = HTTPClientRequest(url: sts.absoluteString)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded; charset=utf-8")
        request.body = .bytes(
            ByteBuffer(
                string: form.map { "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }
                    .joined(separator: "&")))
        let (status, body) = try await CredentialHTTP.send(request, what: "STS AssumeRoleWithWebIdentity at \(sts.host ?? "")")
        guard let document = try? MiniXML.parse(body) else {
            throw AWSError(.transient, "STS AssumeRoleWithWebIdentity answered HTTP \(status) without XML")
        }
        guard (200..<300).contains(status), let credentials = document.find("Credentials") else {
            let error = document.find("Error")
            throw AWSError(
                status >= 500 ? .transient : .accessDenied, code: error?.child("Code")?.text,
                """
                STS refused AssumeRoleWithWebIdentity for \(role) (\(error?.child("Code")?.text ?? "HTTP \(status)"): \
                \(error?.child("Message")?.text ?? "")); check the role's trust policy for this service account
                """)
        }
        return try AWSCredentials(
            accessKeyID: credentials.child("AccessKeyId")?.text, secretAccessKey: credentials.child("SecretAccessKey")?.text,
            sessionToken: credentials.child("SessionToken")?.text, expiration: credentials.child("Expiration")?.text, from: "STS")
    }
}

/// The container credentials endpoint (ECS task roles, EKS Pod Identity).
enum ContainerCredentials {
    /// The SDKs accept a full URI over https anywhere, or over http only to
    /// loopback or the container agents' link-local addresses.
    static func checkHost(_ url: URL) throws {
        let host = url.host ?? ""
        guard
            url.scheme == "https" || isLoopback(host)
                || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23", "[fd00:ec2::23]"].contains(host)
        else {
            throw AWSError(
                .configuration,
                """
                AWS_CONTAINER_CREDENTIALS_FULL_URI \(url.absoluteString) is plain http to a host that is neither loopback \
                nor a container credentials agent (169.254.170.2, 169.254.170.23, fd00:ec2::23)
                """)
        }
    }

    static func fetch(_ url: URL, authorization: String?) async throws -> AWSCredentials {
        var request = HTTPClientRequest(url: url.absoluteString)
        if let authorization { request.headers.add(name: "authorization", value: authorization) }
        let (status, body) = try await CredentialHTTP.send(request, what: "the container credentials endpoint \(url.host ?? "")")
        return try jsonCredentials(status: status, body: body, from: "the container credentials endpoint")
    }

    static func jsonCredentials(status: Int, body: [UInt8], from: String) throws -> AWSCredentials {
        guard (200..<300).contains(status), let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw AWSError(status >= 500 ? .transient : .accessDenied, "\(from) answered HTTP \(status)")
        }
        return try AWSCredentials(
            accessKeyID: object["AccessKeyId"] as? String, secretAccessKey: object["SecretAccessKey"] as? String,
            sessionToken: object["Token"] as? String, expiration: object["Expiration"] as? String, from: from)
    }
}

/// IMDSv2: a session token first (`PUT /latest/api/token`), then the
/// instance role's name and its credentials.
enum InstanceMetadata {
    static func credentials(_ endpoint: URL) async throws -> AWSCredentials {
        let base = endpoint.absoluteString.hasSuffix("/") ? String(endpoint.absoluteString.dropLast()) : endpoint.absoluteString
        var tokenRequest = HTTPClientRequest(url: base + "/latest/api/token")
        tokenRequest.method = .PUT
        tokenRequest.headers.add(name: "x-aws-ec2-metadata-token-ttl-seconds", value: "21600")
        let (tokenStatus, tokenBody) = try await CredentialHTTP.send(tokenRequest, what: "the instance metadata service")
        guard tokenStatus == 200 else {
            throw AWSError(.accessDenied, "the instance metadata service refused a token (HTTP \(tokenStatus))")
        }
        let token = String(decoding: tokenBody, as: UTF8.self)
        func get(_ path: String) async throws -> (Int, [UInt8]) {
            var request = HTTPClientRequest(url: base + path)
            request.headers.add(name: "x-aws-ec2-metadata-token", value: token)
            return try await CredentialHTTP.send(request, what: "the instance metadata service")
        }
        let (roleStatus, roleBody) = try await get("/latest/meta-data/iam/security-credentials/")
        guard roleStatus == 200, let role = String(decoding: roleBody, as: UTF8.self).split(separator: "\n").first else {
            throw AWSError(
                .accessDenied, "this instance has no IAM role (instance metadata answered HTTP \(roleStatus)); attach an instance profile")
        }
        let (status, body) = try await get("/latest/meta-data/iam/security-credentials/\(role)")
        return try ContainerCredentials.jsonCredentials(status: status, body: body, from: "the instance metadata service")
    }
}

/// The credential endpoints' HTTP: short deadlines (the metadata services
/// answer at once or are not there), any failure a transient error.
enum CredentialHTTP {
    static func send(_ request: HTTPClientRequest, what: String) async throws -> (Int, [UInt8]) {
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
            return (Int(response.status.code), Array(buffer: try await response.body.collect(upTo: 1 << 20)))
        } catch {
            throw AWSError(.transient, "\(what) did not answer (\(error))")
        }
    }
}

extension AWSCredentials {
    /// From a credentials response: all three values present, the expiration RFC 3339.
    init(accessKeyID: String?, secretAccessKey: String?, sessionToken: String?, expiration: String?, from: String) throws {
        guard let accessKeyID, let secretAccessKey else {
            throw AWSError(.accessDenied, "\(from) answered without AccessKeyId and SecretAccessKey")
        }
        var date: Date? = nil
        if let expiration {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = expiration.contains(".") ? [.withInternetDateTime, .withFractionalSeconds] : [.withInternetDateTime]
            date = formatter.date(from: expiration)
            guard date != nil else { throw AWSError(.accessDenied, "\(from) answered an Expiration that is not a time") }
        }
        self.init(accessKeyID: accessKeyID, secretAccessKey: secretAccessKey, sessionToken: sessionToken, expiration: date)
    }
}
