/// A failed AWS KMS call, classified by what the caller should do about it.
public struct KMSError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// Network failure, timeout, throttling or a KMS-side fault: try again later.
        case transient
        /// The key is disabled, pending deletion, or does not exist: nothing
        /// will work until someone enables or restores it.
        case keyUnusable
        /// The credentials, the key policy or IAM refuse the call.
        case accessDenied
        /// A ciphertext that KMS will not decrypt: altered, bound to another
        /// encryption context, or made under another key.
        case invalidCiphertext
        /// The request itself was refused (wrong key type or usage, a bad value).
        case invalidRequest
    }

    public let kind: Kind
    public let code: String?
    public let message: String
    /// The operation ("GenerateMac") and key it was about, for messages.
    public let operation: String
    public let keyID: String?

    public init(_ kind: Kind, code: String? = nil, operation: String, keyID: String?, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
        self.operation = operation
        self.keyID = keyID
    }

    /// A credential or endpoint failure, as KMS's.
    init(_ error: AWSError, operation: String, keyID: String?) {
        let kind: Kind
        switch error.kind {
        case .transient: kind = .transient
        case .accessDenied: kind = .accessDenied
        case .configuration: kind = .invalidRequest
        }
        self.init(kind, code: error.code, operation: operation, keyID: keyID, error.message)
    }

    public var isTransient: Bool { kind == .transient }

    /// Refused because temporary credentials expired: new ones may work.
    static func isExpiredCredentials(_ error: any Error) -> Bool {
        guard let error = error as? KMSError else { return false }
        return ["ExpiredToken", "ExpiredTokenException", "RequestExpired"].contains(error.code ?? "")
    }

    public var description: String {
        let key = keyID.map { " on KMS key \($0)" } ?? ""
        let cause = "\(code.map { "\($0): " } ?? "")\(message)"
        switch kind {
        case .transient:
            return "AWS KMS is unavailable (\(operation)\(key): \(cause))"
        case .keyUnusable:
            return
                "KMS cannot use the key for \(operation)\(key) (\(cause)): it is disabled, pending deletion or gone; enable or restore it in KMS (nothing is tokenized without it)"
        case .accessDenied:
            return
                "KMS refused \(operation)\(key) (\(cause)); check the AWS credentials and that IAM and the key policy allow kms:\(operation) on this key for this role"
        case .invalidCiphertext:
            return
                "KMS will not decrypt\(key) (\(cause)): the sealed key was altered, moved to another entry, or sealed under another KMS key"
        case .invalidRequest:
            return "KMS refused \(operation)\(key) (\(cause))"
        }
    }

    /// Maps an AWS error code (JSON 1.1 `__type`, with or without its namespace) and HTTP status to a kind.
    static func classify(code: String?, status: Int, message: String, operation: String, keyID: String?) -> KMSError {
        let short = code.map { $0.split(separator: "#").last.map(String.init) ?? $0 } ?? ""
        let kind: Kind
        switch short {
        case "DisabledException", "KMSInvalidStateException", "NotFoundException", "InvalidKeyUsageException":
            kind = .keyUnusable
        case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
            "MissingAuthenticationToken", "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId":
            kind = .accessDenied
        case "InvalidCiphertextException", "IncorrectKeyException":
            kind = .invalidCiphertext
        case "ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "ServiceUnavailable",
            "InternalFailure", "RequestTimeout", "KeyUnavailableException":
            kind = .transient
        default:
            kind = status >= 500 || status == 429 ? .transient : .invalidRequest
        }
        return KMSError(kind, code: short.isEmpty ? code : short, operation: operation, keyID: keyID, message)
    }
}
