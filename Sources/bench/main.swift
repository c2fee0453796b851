import Foundation
import HostileInput

// Benchmarks, not tests: they print numbers (and ratios against a baseline
// measured in the same run); they never pass or fail on speed.
//
//   bench crypto [seconds]
//   bench drain QUEUE_URL [pollers]      receive + delete only (the end-to-end baseline)
//   bench fuzz validator SECONDS SEED    hostile bodies through the validator
//   bench fuzz write COUNT SEED jsonl|sqs FILE   hostile bodies for the pipeline
let arguments = Array(CommandLine.arguments.dropFirst())
do {
    switch arguments.first {
    case "crypto":
        try CryptoBenchmark.run(seconds: arguments.dropFirst().first.flatMap(Int.init) ?? 3)
    case "drain" where arguments.count >= 2:
        try await DrainBenchmark.run(queueURL: arguments[1], pollers: arguments.count > 2 ? Int(arguments[2]) ?? 4 : 4)
    case "fuzz" where arguments.count == 4 && arguments[1] == "validator":
        FuzzBenchmark.validator(seconds: Int(arguments[2]) ?? 60, seed: UInt64(arguments[3]) ?? 1)
    case "fuzz" where arguments.count == 6 && arguments[1] == "write":
        try FuzzBenchmark.write(
            count: Int(arguments[2]) ?? 10_000, seed: UInt64(arguments[3]) ?? 1,
            channel: arguments[4] == "sqs" ? .sqs : .jsonLines, path: arguments[5])
    default:
        print(
            "usage: bench crypto [seconds] | bench drain QUEUE_URL [pollers] | bench fuzz validator SECONDS SEED"
                + " | bench fuzz write COUNT SEED jsonl|sqs FILE")
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("bench: error: \(error)\n".utf8))
    exit(1)
}
