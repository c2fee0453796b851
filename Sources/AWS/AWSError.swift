/// A failure before any service answers: no usable credentials, or an
/// endpoint that may not be used. Each client maps it into its own error type
/// so callers handle one kind of error per service.
public struct AWSError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// A credentials endpoint did not answer: try again later.
        case transient
        /// Credentials refused or absent.
        case accessDenied
        /// A setting is wrong (a URL, an insecure endpoint).
        case configuration
    }

    public let kind: Kind
    public let code: String?
    public let message: String

    public init(_ kind: Kind, code: String? = nil, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var isTransient: Bool { kind == .transient }

    public var description: String { message }
}
