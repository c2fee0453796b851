import Foundation

// Benchmarks, not tests: they print numbers (and ratios against a baseline
// measured in the same run); they never pass or fail on speed.
//
//   bench crypto [seconds]
//   bench drain QUEUE_URL [pollers]      receive + delete only (the end-to-end baseline)
let arguments = Array(CommandLine.arguments.dropFirst())
do {
    switch arguments.first {
    case "crypto":
        try CryptoBenchmark.run(seconds: arguments.dropFirst().first.flatMap(Int.init) ?? 3)
    case "drain" where arguments.count >= 2:
        try await DrainBenchmark.run(queueURL: arguments[1], pollers: arguments.count > 2 ? Int(arguments[2]) ?? 4 : 4)
    default:
        print("usage: bench crypto [seconds] | bench drain QUEUE_URL [pollers]")
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("bench: error: \(error)\n".utf8))
    exit(1)
}
