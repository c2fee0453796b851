import AsyncHTTPClient
public import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// An AWS service endpoint, and the signed request every client here sends to it.
public struct AWSEndpoint: Sendable {
    public let url: URL
    public let region: String
    /// The SigV4 signing name ("sqs", "kms").
    public let service: String

    public init(url: URL, region: String, service: String) {
        self.url = url
        self.region = region
        self.service = service
    }

    /// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else `standard`
    /// (the service's own endpoint), checked by `requireSecure`.
    public static func fromEnvironment(
        service: String, standard: URL, region: String, allowInsecure: Bool, howToAllow: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> AWSEndpoint {
        let variable = "AWS_ENDPOINT_URL_\(service.uppercased())"
        let url: URL
        if let text = environment[variable].nonEmpty ?? environment["AWS_ENDPOINT_URL"].nonEmpty {
            guard let parsed = URL(string: text), parsed.host != nil, ["http", "https"].contains(parsed.scheme ?? "") else {
                throw AWSError(
                    .configuration,
                    "the \(service.uppercased()) endpoint \"\(text)\" (\(variable) or AWS_ENDPOINT_URL) is not an http(s) URL")
            }
            url = parsed
        } else {
            url = standard
        }
        try requireSecure(url, allowInsecure: allowInsecure, howToAllow: howToAllow)
        return AWSEndpoint(url: url, region: region, service: service)
    }

    /// Plain http is accepted only to a loopback host: anywhere else it would
    /// carry signed requests and their payloads in the clear.
    public static func requireSecure(_ url: URL, allowInsecure: Bool, howToAllow: String) throws {
        guard url.scheme == "http", !allowInsecure, !isLoopback(url.host ?? "") else { return }
        throw AWSError(
            .configuration,
            """
            \(url.absoluteString) is plain http to a host that is not this machine: requests and what they carry would \
            cross the network unencrypted. Use https, or \(howToAllow) for an emulator on a network you trust
            """)
    }

    /// The `host` header value: host, and port when the URL has one.
    var hostHeader: String { url.port.map { "\(url.host!):\($0)" } ?? url.host! }

    /// A SigV4-signed POST of `body`; `headers` are the protocol's own (content type, target).
    func signedPOST(headers: [(String, String)], body: [UInt8], credentials: AWSCredentials) throws -> HTTPClientRequest {
        let headers = headers + [("host", hostHeader)]
        let signature = try SigV4Signer(credentials: credentials, region: region, service: service)
            .sign(method: "POST", path: url.path.isEmpty ? "/" : url.path, query: [], headers: headers, body: body, date: Date())
        var request = HTTPClientRequest(
            url: url.absoluteString.hasSuffix("/") || !url.path.isEmpty ? url.absoluteString : url.absoluteString + "/")
        request.method = .POST
        for (name, value) in headers + signature { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        return request
    }
}

/// Runs `attempt` with the provider's credentials; when the service answers
/// that they expired (`isExpired`), fetches new ones and tries once more.
/// A credential failure is handed to `mapCredentialError` (each client turns
/// it into its own error type).
func withCredentials<T>(
    isolation: isolated (any Actor)? = #isolation, _ provider: any AWSCredentialProvider, logger: Logger, service: String,
    isExpired: (any Error) -> Bool,
    mapCredentialError: (AWSError) -> any Error, _ attempt: (AWSCredentials) async throws -> T
) async throws -> T {
    var retried = false
    while true {
        let credentials: AWSCredentials
        do {
            credentials = try await provider.credentials()
        } catch let error as AWSError {
            throw mapCredentialError(error)
        }
        do {
            return try await attempt(credentials)
        } catch  where isExpired(error) && !retried {
            // Temporary credentials ran out early (or the clock is off): fetch new ones and try once more.
            logger.info("\(service) says the credentials expired; fetching new ones", metadata: ["source": "\(provider.source)"])
            await provider.invalidate()
            retried = true
        }
    }
}
