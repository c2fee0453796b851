import Foundation
import Pseudonymization
import Testing

/// The real sample of the queue (100 bodies), shared by several test targets.
func sampleBodies() throws -> [String] {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/takehome-messages.jsonl")
    return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
}

func validate(_ body: String) -> Result<ValidatedLogin, Rejection> {
    Result { () throws(Rejection) in try LoginMessage.validate(Array(body.utf8)) }
}

func rejection(_ body: String) -> Rejection? {
    if case .failure(let rejection) = validate(body) { return rejection }
    return nil
}

let validBody =
    #"{"user_id": "u-1", "app_version": "2.3.0", "device_type": "android", "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}"#

@Suite("Message contract")
struct MessageValidationTests {
    @Test("the real sample: 99 valid, 1 malformed, 29 null locales")
    func realSample() throws {
        let results = try sampleBodies().map(validate)
        #expect(results.count == 100)
        let valid = results.compactMap { try? $0.get() }
        #expect(valid.count == 99)
        #expect(valid.filter { $0.locale == nil }.count == 29)
        let rejected = results.compactMap { result -> Rejection? in
            if case .failure(let rejection) = result { return rejection }
            return nil
        }
        #expect(rejected.map(\.reason) == [.missingField])
    }

    @Test("a valid message keeps every field")
    func validFields() throws {
        let login = try validate(validBody).get()
        #expect(login.userID == "u-1")
        #expect(login.deviceType == "android")
        #expect(login.ip == "199.172.111.135")
        #expect(login.deviceID == "593-47-5928")
        #expect(login.locale == "RU")
        #expect(login.appVersion.code == 2_003_000)
        #expect(login.unknownFieldCount == 0)
    }

    @Test("unknown members are ignored and counted")
    func unknownMembers() throws {
        let body =
            #"{"extra": {"nested": [1, 2.5e10, -0, true, null, "x"]}, "user_id": "u", "app_version": "1.0", "device_type": "ios", "ip": "::1", "locale": null, "device_id": "d", "big": 123456789012345678901234567890}"#
        let login = try validate(body).get()
        #expect(login.unknownFieldCount == 2)
        #expect(login.locale == nil)
    }

    static let malformedCases: [(String, QuarantineReason)] = [
        ("", .invalidJSON),
        ("not json", .invalidJSON),
        ("[1, 2]", .notAnObject),
        ("\"a string\"", .notAnObject),
        (#"{"user_id": "u""#, .invalidJSON),
        (#"{"user_id": "u",}"#, .invalidJSON),
        (validBody + " trailing", .invalidJSON),
        (#"{"foo": "oops_wrong_msg_type", "bar": "123"}"#, .missingField),
        (validBody.replacingOccurrences(of: #""locale": "RU", "#, with: ""), .missingField),
        (validBody.replacingOccurrences(of: #""2.3.0""#, with: "2.3"), .wrongType),
        (validBody.replacingOccurrences(of: #""android""#, with: "null"), .wrongType),
        (validBody.replacingOccurrences(of: #""RU""#, with: "42"), .wrongType),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #"["u-1"]"#), .wrongType),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #""""#), .emptyValue),
        (validBody.replacingOccurrences(of: #""u-1""#, with: "\"" + String(repeating: "x", count: 129) + "\""), .tooLong),
        (validBody.replacingOccurrences(of: #""android""#, with: "\"" + String(repeating: "é", count: 33) + "\""), .tooLong),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #""u\u0000x""#), .controlCharacter),
        (validBody.replacingOccurrences(of: #""593-47-5928""#, with: #""a\nb""#), .controlCharacter),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #""\ud800""#), .invalidUTF8),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #""\udc00\ud800""#), .invalidUTF8),
        (validBody.replacingOccurrences(of: #""u-1""#, with: #""bad \q escape""#), .invalidJSON),
        (validBody.replacingOccurrences(of: #""199.172.111.135""#, with: #""999.1.1.1""#), .invalidIP),
        (validBody.replacingOccurrences(of: #""199.172.111.135""#, with: #""１.２.３.４""#), .invalidIP),
        (validBody.replacingOccurrences(of: #""199.172.111.135""#, with: #""1.2.3.4; DROP TABLE user_logins""#), .invalidIP),
        (validBody.replacingOccurrences(of: #""199.172.111.135""#, with: #""fe80::1%eth0""#), .invalidIP),
        (validBody.replacingOccurrences(of: #""2.3.0""#, with: #""2.3.0.1""#), .invalidAppVersion),
        (validBody.replacingOccurrences(of: #""2.3.0""#, with: #""v2""#), .invalidAppVersion),
        (validBody.replacingOccurrences(of: #""user_id": "u-1""#, with: #""user_id": "a", "user_id": "b""#), .duplicateField),
    ]

    @Test("malformed input is rejected with a reason", arguments: malformedCases)
    func rejected(body: String, reason: QuarantineReason) {
        let result = rejection(body)
        #expect(result?.reason == reason, "got \(String(describing: result))")
    }

    @Test("rejection details never repeat the value")
    func detailsAreValueFree() {
        let body = validBody.replacingOccurrences(of: #""199.172.111.135""#, with: #""203.0.113.999""#)
        let result = rejection(body)
        #expect(result?.reason == .invalidIP)
        #expect(!(result?.description.contains("203.0.113") ?? true))
    }

    @Test("hostile shapes end in a rejection, not a crash or a hang")
    func hostileShapes() {
        let deep = String(repeating: "[", count: 60_000)
        #expect(rejection(#"{"x": "# + deep)?.reason == .invalidJSON)
        #expect(rejection(deep)?.reason == .invalidJSON)
        let huge = "{\"x\": \"" + String(repeating: "a", count: 1 << 20) + "\"}"
        #expect(rejection(huge)?.reason == .bodyTooLarge)
        var invalidUTF8 = Array(validBody.utf8)
        invalidUTF8.insert(contentsOf: [0xff, 0xfe], at: 15)
        #expect(Result { () throws(Rejection) in try LoginMessage.validate(invalidUTF8) }.failureReason == .invalidUTF8)
        #expect(rejection(String(repeating: "{\"a\":", count: 70) + "1" + String(repeating: "}", count: 70))?.reason == .invalidJSON)
    }
}

extension Result where Failure == Rejection {
    var failureReason: QuarantineReason? {
        if case .failure(let rejection) = self { return rejection.reason }
        return nil
    }
}

@Suite("Canonical forms")
struct CanonicalFormTests {
    @Test(
        "IP addresses get one spelling",
        arguments: [
            ("199.172.111.135", "199.172.111.135"),
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("::FFFF:0102:0304", "1.2.3.4"),
            ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
            ("2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("fe80::0001", "fe80::1"),
        ])
    func ip(input: String, canonical: String) {
        #expect(CanonicalIP.canonicalize(input) == canonical)
    }

    @Test(
        "not addresses",
        arguments: [
            "", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.0.0.1", " 1.2.3.4", "1.2.3.4 ", "::ffff:1.2.3.256",
            "1:2:3:4:5:6:7:8:9", "g::1", "fe80::1%eth0", "１.２.３.４", "0x1.0.0.1",
        ])
    func notIP(input: String) {
        #expect(CanonicalIP.canonicalize(input) == nil)
    }

    @Test(
        "app versions: order-preserving codes, equal spellings merge, distinct ones never collide",
        arguments: [
            ("2.3.0", 2_003_000, "2.3.0"), ("0.96", 96_000, "0.96.0"), ("2.0", 2_000_000, "2.0.0"), ("2.00", 2_000_000, "2.0.0"),
            ("0.26", 26_000, "0.26.0"), ("0.2.6", 2_006, "0.2.6"), ("2.6", 2_006_000, "2.6.0"), ("3", 3_000_000, "3.0.0"),
            ("999.999.999", 999_999_999, "999.999.999"), ("0.0.0", 0, "0.0.0"),
        ])
    func appVersion(text: String, code: Int32, canonical: String) throws {
        let version = try #require(AppVersion(text))
        #expect(version.code == code)
        #expect(version.canonical == canonical)
    }

    @Test(
        "not app versions",
        arguments: ["", ".", "1.", ".1", "1..2", "1.2.3.4", "1000", "1.1000", "a.b", "-1.0", " 1.0", "1.0 ", "１.２", "1,2"])
    func notAppVersion(text: String) {
        #expect(AppVersion(text) == nil)
    }

    @Test(
        "UTC dates from millisecond timestamps",
        arguments: [
            (Int64(0), "1970-01-01"), (86_399_999, "1970-01-01"), (86_400_000, "1970-01-02"), (-1, "1969-12-31"),
            (951_782_400_000, "2000-02-29"), (1_709_164_800_000, "2024-02-29"), (1_735_689_599_999, "2024-12-31"),
            (1_735_689_600_000, "2025-01-01"), (4_102_444_800_000, "2100-01-01"),
        ])
    func utcDate(milliseconds: Int64, date: String) {
        #expect(UTCDate.string(fromMilliseconds: milliseconds) == date)
    }
}
