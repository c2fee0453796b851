/// A login event that passed validation, with its personal fields in canonical form.
public struct ValidatedLogin: Sendable {
    public let userID: String
    public let deviceType: String
    /// Canonical IP (see `CanonicalIP`): personal data, kept only until sealed.
    public let ip: String
    /// The device id exactly as sent: personal data, kept only until sealed.
    public let deviceID: String
    public let locale: String?
    public let appVersion: AppVersion
    /// Members the contract does not know; ignored, never stored, counted.
    public let unknownFieldCount: Int
}

/// The input contract (DESIGN §2): six members, all strings, `locale` may be
/// null; lengths within the target columns (measured as PostgreSQL does, in
/// code points); no control characters; a valid IP and app version.
public enum LoginMessage {
    /// A login event is a few hundred bytes; anything far larger is not one.
    public static let maximumBodyBytes = 64 * 1024

    static let fields = ["user_id", "app_version", "device_type", "ip", "locale", "device_id"]

    public static func validate(_ body: some Collection<UInt8>) throws(Rejection) -> ValidatedLogin {
        guard body.count <= maximumBodyBytes else {
            throw Rejection(.bodyTooLarge, "the body has \(body.count) bytes, more than the \(maximumBodyBytes) a login event may have")
        }
        let parsed: (values: [JSONObjectParser.Value?], unknownMembers: Int)
        if let result = body.withContiguousStorageIfAvailable({ buffer in
            Result { () throws(Rejection) in try JSONObjectParser.parse(buffer, wanted: fields) }
        }) {
            parsed = try result.get()
        } else {
            let copy = Array(body)
            parsed = try copy.withUnsafeBufferPointer { buffer throws(Rejection) in try JSONObjectParser.parse(buffer, wanted: fields) }
        }
        let values = parsed.values
        let userID = try requiredString(values[0], "user_id", maxLength: 128)
        let appVersionText = try requiredString(values[1], "app_version", maxLength: 16)
        let deviceType = try requiredString(values[2], "device_type", maxLength: 32)
        let ipText = try requiredString(values[3], "ip", maxLength: 45)
        let locale = try optionalString(values[4], "locale", maxLength: 32)
        let deviceID = try requiredString(values[5], "device_id", maxLength: 128)
        guard let ip = CanonicalIP.canonicalize(ipText) else {
            throw Rejection(.invalidIP, field: "ip", "field ip is not a valid IPv4 or IPv6 address")
        }
        guard let appVersion = AppVersion(appVersionText) else {
            throw Rejection(
                .invalidAppVersion, field: "app_version",
                "field app_version is not one to three dot-separated numbers of 0…999")
        }
        return ValidatedLogin(
            userID: userID, deviceType: deviceType, ip: ip, deviceID: deviceID, locale: locale,
            appVersion: appVersion, unknownFieldCount: parsed.unknownMembers)
    }

    private static func requiredString(_ value: JSONObjectParser.Value?, _ name: String, maxLength: Int) throws(Rejection) -> String {
        switch value {
        case nil: throw Rejection(.missingField, field: name, "field \(name) is missing")
        case .null?: throw Rejection(.wrongType, field: name, "field \(name) is null; a string is required")
        case .other(let type)?: throw Rejection(.wrongType, field: name, "field \(name) is a \(type); a string is required")
        case .string(let text)?:
            guard !text.isEmpty else { throw Rejection(.emptyValue, field: name, "field \(name) is empty") }
            return try checked(text, name, maxLength: maxLength)
        }
    }

    private static func optionalString(_ value: JSONObjectParser.Value?, _ name: String, maxLength: Int) throws(Rejection) -> String? {
        switch value {
        case nil: throw Rejection(.missingField, field: name, "field \(name) is missing (null is allowed, absence is not)")
        case .null?: return nil
        case .other(let type)?: throw Rejection(.wrongType, field: name, "field \(name) is a \(type); a string or null is required")
        case .string(let text)?: return try checked(text, name, maxLength: maxLength)
        }
    }

    /// Length in code points (as `varchar(n)` counts) and no control characters
    /// (C0, DEL, C1; PostgreSQL text cannot hold NUL at all).
    private static func checked(_ text: String, _ name: String, maxLength: Int) throws(Rejection) -> String {
        var count = 0
        for scalar in text.unicodeScalars {
            count += 1
            if scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) {
                throw Rejection(.controlCharacter, field: name, "field \(name) contains a control character")
            }
        }
        guard count <= maxLength else {
            throw Rejection(.tooLong, field: name, "field \(name) has \(count) characters, more than the \(maxLength) allowed")
        }
        return text
    }
}
