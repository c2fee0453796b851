import AWS
import AsyncHTTPClient
import Foundation
import Logging

/// The baseline for the end-to-end benchmark: a consumer that does nothing
/// but receive (10 at a time, long polling) and delete, with the same client
/// and concurrency `ingest` uses. `ingest` can at best match it.
enum DrainBenchmark {
    static func run(queueURL: String, pollers: Int) async throws {
        let client = SQSClient(
            configuration: try SQSConfiguration.fromEnvironment(queueURL: queueURL, wireProtocol: nil),
            httpClient: HTTPClient.shared, logger: Logger(label: "drain"))
        let started = ContinuousClock.now
        let drained = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<pollers {
                group.addTask {
                    var count = 0
                    while true {
                        let messages = try await client.receive(maximum: 10, waitSeconds: 2, visibilityTimeout: 60)
                        if messages.isEmpty { return count }
                        let entries = messages.enumerated().map {
                            SQSBatchEntry(id: String($0.offset), receiptHandle: $0.element.receiptHandle)
                        }
                        let failures = try await client.deleteBatch(entries)
                        count += messages.count - failures.count
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print("drained \(drained) messages in \(String(format: "%.2f", seconds)) s: \(Int(Double(drained) / seconds)) messages/s")
    }
}
