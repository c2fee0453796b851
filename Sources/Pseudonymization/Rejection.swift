/// Why a message was quarantined instead of written. Codes are stable: they are
/// stored with the quarantined message and used as metric labels.
public enum QuarantineReason: String, Sendable, CaseIterable, Codable {
    case bodyTooLarge = "body_too_large"
    case invalidUTF8 = "invalid_utf8"
    case invalidJSON = "invalid_json"
    case notAnObject = "not_an_object"
    case duplicateField = "duplicate_field"
    case missingField = "missing_field"
    case wrongType = "wrong_type"
    case emptyValue = "empty_value"
    case tooLong = "too_long"
    case controlCharacter = "control_character"
    case invalidIP = "invalid_ip"
    case invalidAppVersion = "invalid_app_version"
    /// Delivered more often than the configured maximum: the message keeps
    /// failing or crashing consumers, so it is set aside instead of retried forever.
    case tooManyDeliveries = "too_many_deliveries"
    /// PostgreSQL refused the row for a reason the validator did not foresee.
    case databaseRejected = "database_rejected"
}

/// A message that cannot be written. `detail` names the field and the rule it
/// broke, never the value (which may be personal data).
public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: QuarantineReason
    public let field: String?
    public let detail: String

    public init(_ reason: QuarantineReason, field: String? = nil, _ detail: String) {
        self.reason = reason
        self.field = field
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}
