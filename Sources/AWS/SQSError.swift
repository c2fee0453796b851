/// A failed SQS call, classified by what the caller should do about it.
public struct SQSError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Network failure, timeout, throttling or a 5xx: try again later.
        case transient
        /// The queue does not exist.
        case queueDoesNotExist
        /// Credentials or signature refused.
        case accessDenied
        /// The endpoint speaks neither SQS protocol we know.
        case unsupportedProtocol
        /// The request itself was refused (a bug or a bad option value).
        case invalidRequest
    }

    public let kind: Kind
    public let code: String?
    public let message: String

    public init(_ kind: Kind, code: String? = nil, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    /// A credential or endpoint failure, as SQS's.
    init(_ error: AWSError) {
        switch error.kind {
        case .transient: self.init(.transient, code: error.code, error.message)
        case .accessDenied: self.init(.accessDenied, code: error.code, error.message)
        case .configuration: self.init(.invalidRequest, code: error.code, error.message)
        }
    }

    public var isTransient: Bool { kind == .transient }

    /// Refused because temporary credentials expired: new ones may work.
    public var isExpiredCredentials: Bool { ["ExpiredToken", "ExpiredTokenException", "RequestExpired"].contains(code ?? "") }

    public var description: String {
        switch kind {
        case .queueDoesNotExist:
            return "the SQS queue does not exist (\(message)); create it or fix --queue-url/QUEUE_URL"
        case .accessDenied:
            return
                "SQS refused the credentials (\(code ?? "access denied"): \(message)); check the AWS credentials (environment keys, the web identity role, the container or instance role) and AWS_REGION"
        case .unsupportedProtocol:
            return "the SQS endpoint answered neither the JSON nor the query protocol (\(message)); check AWS_ENDPOINT_URL"
        case .transient:
            return "SQS is unavailable (\(code.map { "\($0): " } ?? "")\(message))"
        case .invalidRequest:
            return "SQS refused the request (\(code ?? "invalid request"): \(message))"
        }
    }

    /// Maps an AWS error code (either protocol's spelling) and HTTP status to a kind.
    static func classify(code: String?, status: Int, message: String) -> SQSError {
        let short = code.map { $0.split(separator: "#").last.map(String.init) ?? $0 } ?? ""
        switch short {
        case "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue":
            return SQSError(.queueDoesNotExist, code: short, message)
        case "InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException",
            "UnrecognizedClientException", "MissingAuthenticationToken", "InvalidSignatureException", "ExpiredToken",
            "ExpiredTokenException", "RequestExpired",
            "IncompleteSignature", "InvalidSecurity", "AuthFailure":
            return SQSError(.accessDenied, code: short, message)
        case "RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled", "ServiceUnavailable",
            "InternalError", "InternalFailure", "RequestTimeout":
            return SQSError(.transient, code: short, message)
        default:
            if status >= 500 || status == 429 { return SQSError(.transient, code: code, message) }
            return SQSError(.invalidRequest, code: code, message)
        }
    }
}
