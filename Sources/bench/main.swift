import Foundation

// Benchmarks, not tests: they print numbers (and ratios against a baseline
// measured in the same run); they never pass or fail on speed.
//
//   bench crypto [seconds]
let arguments = CommandLine.arguments.dropFirst()
do {
    switch arguments.first {
    case "crypto":
        try CryptoBenchmark.run(seconds: arguments.dropFirst().first.flatMap(Int.init) ?? 3)
    default:
        print("usage: bench crypto [seconds]")
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("bench: error: \(error)\n".utf8))
    exit(1)
}
