import Foundation
import HostileInput
import Pseudonymization
import Testing

/// The validator under seeded hostile input (a short run of what `scripts/fuzz`
/// runs for longer): never a crash or a hang, every input accepted or rejected
/// with a reason, no personal value in any rejection, and whatever is accepted
/// really is a login event.
@Suite("validator fuzzing")
struct FuzzTests {
    @Test("20,000 seeded hostile bodies: accepted ones are sound, rejected ones have a reason and no personal data")
    func hostileBodies() throws {
        var generator = HostileInputGenerator(seed: 20_261_129)
        var reasons: [QuarantineReason: Int] = [:]
        var accepted = 0
        var kinds = Set<String>()
        for _ in 0..<20_000 {
            let input = generator.next()
            kinds.insert(input.kind)
            let login: ValidatedLogin
            do {
                login = try LoginMessage.validate(input.body)
            } catch {
                reasons[error.reason, default: 0] += 1
                #expect(!error.detail.isEmpty)
                for value in input.personalValues where value.count >= 3 {
                    #expect(!error.detail.contains(value) && !(error.field ?? "").contains(value))
                }
                continue
            }
            accepted += 1
            // An accepted body is a JSON object another parser agrees on.
            let object = try #require(try JSONSerialization.jsonObject(with: Data(input.body)) as? [String: Any])
            #expect(object["user_id"] as? String == login.userID)
            #expect(CanonicalIP.canonicalize(login.ip) == login.ip)
            #expect(login.userID.unicodeScalars.count <= 128 && login.deviceID.unicodeScalars.count <= 128)
            #expect(!login.deviceID.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f })
        }
        // The generator really reaches the contract's edges, not just one of them.
        #expect(accepted > 2_000)
        #expect(kinds.count > 20)
        #expect(reasons.count >= 11)
        for reason in [
            QuarantineReason.invalidJSON, .invalidUTF8, .missingField, .duplicateField, .wrongType, .invalidIP,
            .invalidAppVersion, .controlCharacter, .tooLong, .bodyTooLarge, .notAnObject,
        ] {
            #expect(reasons[reason, default: 0] > 0, "no input was rejected as \(reason.rawValue)")
        }
    }

    @Test("the same seed gives the same bodies")
    func deterministic() {
        var first = HostileInputGenerator(seed: 7)
        var second = HostileInputGenerator(seed: 7)
        for _ in 0..<300 { #expect(first.next().body == second.next().body) }
    }

    @Test("bodies for files and SQS have no line feed, are never blank, and SQS ones are valid UTF-8 under 256 KiB")
    func channels() {
        var lines = HostileInputGenerator(seed: 9, channel: .jsonLines)
        var queue = HostileInputGenerator(seed: 9, channel: .sqs)
        for _ in 0..<2_000 {
            let line = lines.next().body
            #expect(!line.contains(0x0A) && !line.isEmpty && line.last != 0x0D)
            let message = queue.next().body
            #expect(String(validating: message, as: UTF8.self) != nil && message.count <= 256 * 1024 && !message.contains(0x0A))
        }
    }
}
