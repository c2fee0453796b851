import Foundation
import HostileInput
import Pseudonymization

/// Fuzzing outside the test suite, for as long as asked.
///
///   bench fuzz validator SECONDS SEED      the validator in-process: counts by
///                                          kind and by reason, slowest input
///   bench fuzz write COUNT SEED jsonl|sqs FILE
///                                          hostile bodies, one per line, for the
///                                          pipeline; FILE.pii.jsonl gets their ip and
///                                          device_id values for the PII scan
enum FuzzBenchmark {
    static func validator(seconds: Int, seed: UInt64) {
        var generator = HostileInputGenerator(seed: seed)
        var kinds: [String: Int] = [:]
        var reasons: [String: Int] = [:]
        var slowest: (duration: Duration, kind: String, index: Int) = (.zero, "", 0)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(seconds)
        var count = 0
        var bytes = 0
        while clock.now < deadline {
            let input = generator.next()
            let started = clock.now
            let outcome: String
            do {
                _ = try LoginMessage.validate(input.body)
                outcome = "accepted"
            } catch {
                outcome = error.reason.rawValue
            }
            let duration = clock.now - started
            if duration > slowest.duration { slowest = (duration, input.kind, count) }
            kinds[input.kind, default: 0] += 1
            reasons[outcome, default: 0] += 1
            count += 1
            bytes += input.body.count
        }
        print(
            "fuzz validator: seed \(seed), \(seconds) s: \(count) inputs (\(bytes / 1_048_576) MiB), \(count / max(seconds, 1)) inputs/s, no crash"
        )
        print("slowest input: #\(slowest.index) (\(slowest.kind)), \(String(format: "%.2f", slowest.duration / .milliseconds(1))) ms")
        print("\n| outcome | inputs |\n|---|---|")
        for (outcome, number) in reasons.sorted(by: { $0.value > $1.value }) { print("| \(outcome) | \(number) |") }
        print("\n| generated kind | inputs |\n|---|---|")
        for (kind, number) in kinds.sorted(by: { $0.key < $1.key }) { print("| \(kind) | \(number) |") }
    }

    static func write(count: Int, seed: UInt64, channel: HostileInputGenerator.Channel, path: String) throws {
        var generator = HostileInputGenerator(seed: seed, channel: channel)
        var bodies = Data()
        var personal = Data()
        for _ in 0..<count {
            let input = generator.next()
            bodies.append(contentsOf: input.body)
            bodies.append(0x0A)
            if input.personalValues.count == 2 {
                let values = ["ip": input.personalValues[0], "device_id": input.personalValues[1]]
                personal.append(try JSONSerialization.data(withJSONObject: values, options: [.sortedKeys]))
                personal.append(0x0A)
            }
        }
        try bodies.write(to: URL(fileURLWithPath: path))
        try personal.write(to: URL(fileURLWithPath: path + ".pii.jsonl"))
    }
}
