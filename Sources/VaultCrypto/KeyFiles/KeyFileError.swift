/// A problem with the key files. Every message names the file and says what to do.
public struct KeyFileError: Error, CustomStringConvertible, Equatable, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        public static let missing = Code("missing key file")
        public static let insecurePermissions = Code("insecure permissions")
        public static let malformed = Code("malformed key file")
        public static let wrongPassphrase = Code("wrong passphrase")
        public static let alreadyExists = Code("keys already exist")
        public static let unknownVersion = Code("unknown key version")
        public static let refused = Code("refused")
        public static let io = Code("I/O error")

        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    public static func == (lhs: KeyFileError, rhs: KeyFileError) -> Bool { lhs.code == rhs.code }
}
