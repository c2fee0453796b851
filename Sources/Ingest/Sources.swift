import Foundation
import Logging
import SQS
import Synchronization

/// How many messages may still be taken, for `--max-messages`.
final class MessageBudget: Sendable {
    private let remaining: Mutex<Int?>

    init(_ limit: Int?) { remaining = .init(limit) }

    /// Reserves up to `wanted`; 0 when the budget is spent.
    func reserve(_ wanted: Int) -> Int {
        remaining.withLock { remaining in
            guard let left = remaining else { return wanted }
            let granted = min(left, wanted)
            remaining = left - granted
            return granted
        }
    }

    /// Gives back what a receive did not use.
    func refund(_ count: Int) {
        remaining.withLock { remaining in if let left = remaining { remaining = left + count } }
    }
}

/// Long-polls SQS and feeds the queue. Outages are retried with capped,
/// jittered backoff; an error no retry can fix (the queue does not exist, the
/// credentials are refused) ends the service.
struct SQSPoller {
    struct Options {
        var waitSeconds: Int
        var visibilityTimeout: Int
        /// Stop after the first empty receive (`--until-empty`).
        var stopWhenEmpty: Bool
    }

    let name: String
    let client: SQSClient
    let queue: MessageQueue
    let budget: MessageBudget
    let options: Options
    let statistics: IngestStatistics
    let health: HealthState
    let logger: Logger
    // A short cap: a retry is one request per poller, no load for SQS, and a
    // longer wait only delays recovery once the queue is back.
    let backoff = Backoff(base: .milliseconds(200), cap: .seconds(5))

    func run() async throws {
        var attempt = 0
        while !Task.isCancelled {
            let wanted = budget.reserve(10)
            guard wanted > 0 else { return }
            let messages: [SQSMessage]
            do {
                messages = try await client.receive(maximum: wanted, waitSeconds: options.waitSeconds,
                                                    visibilityTimeout: options.visibilityTimeout)
                if attempt > 0 {
                    logger.info("SQS reachable again", metadata: ["poller": "\(name)", "attempts": "\(attempt + 1)"])
                    attempt = 0
                }
                health.queueReachable(true)
            } catch let error as SQSError where error.isTransient {
                budget.refund(wanted)
                if Task.isCancelled { return }
                health.queueReachable(false)
                if attempt == 0 || attempt % 10 == 0 {
                    logger.warning("SQS unavailable; retrying with backoff",
                                   metadata: ["poller": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                }
                statistics.retry(.sqs)
                try await Task.sleep(for: backoff.delay(attempt: attempt))
                attempt += 1
                continue
            } catch {
                budget.refund(wanted)
                throw error
            }
            budget.refund(wanted - messages.count)
            if messages.isEmpty {
                if options.stopWhenEmpty { return }
                continue
            }
            statistics.received(messages.count)
            let inbound = try messages.map { message in
                InboundMessage(
                    origin: .sqs(receiptHandle: message.receiptHandle), messageID: message.messageID,
                    receiptID: try ReceiptID.sqs(messageID: message.messageID), body: Array(message.body.utf8),
                    sentTimestamp: message.sentTimestamp ?? Int64(Date().timeIntervalSince1970 * 1000),
                    receiveCount: message.receiveCount)
            }
            // Suspends while the writers lag: polling stops until they catch up.
            guard await queue.push(inbound) else { return }
        }
    }
}

/// Feeds the queue from a file of message bodies, one per line (JSONL), reading
/// it as a stream so a file of any size runs in constant memory. Blank lines are
/// not messages and are skipped.
struct FileSource {
    let path: String
    let sentTimestamp: Int64
    let queue: MessageQueue
    let budget: MessageBudget
    let statistics: IngestStatistics

    func run() async throws {
        guard let file = fopen(path, "r") else {
            throw IngestError("cannot open \(path) (\(String(cString: strerror(errno)))); check the path and its permissions")
        }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        var lineNumber = 0
        var chunk: [InboundMessage] = []
        chunk.reserveCapacity(256)
        while true {
            let length = getline(&line, &capacity, file)
            if length < 0 { break }
            lineNumber += 1
            var count = length
            if count > 0 && line![count - 1] == 0x0a { count -= 1 }
            if count > 0 && line![count - 1] == 0x0d { count -= 1 }
            if count == 0 { continue }
            guard budget.reserve(1) == 1 else { break }
            let body = Array(UnsafeRawBufferPointer(start: line!, count: count))
            chunk.append(InboundMessage(
                origin: .file, messageID: "line \(lineNumber)", receiptID: try ReceiptID.file(line: lineNumber, body: body),
                body: body, sentTimestamp: sentTimestamp, receiveCount: 1))
            if chunk.count == 256 {
                statistics.received(chunk.count)
                guard await queue.push(chunk) else { return }
                chunk.removeAll(keepingCapacity: true)
            }
        }
        if ferror(file) != 0 { throw IngestError("reading \(path) failed at line \(lineNumber + 1)") }
        statistics.received(chunk.count)
        await queue.push(chunk)
    }
}

/// A failure of the service as a whole, worded for the operator.
public struct IngestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What `/health/ready` reports: whether the database and the queue answer
/// and the keys are loaded (and the service is not shutting down).
public final class HealthState: Sendable {
    /// Nothing is reachable until shown to be.
    private struct State {
        var queue = false
        var database = false
        var keysLoaded = false
        /// A writer is retrying a batch: the database answers but refuses it
        /// (read-only, disk full, a revoked grant) or went away mid-batch.
        var writesFailing = false
        var shuttingDown = false
    }

    private let state = Mutex(State())

    public init() {}

    public var isQueueReachable: Bool { state.withLock { $0.queue } }
    public var isDatabaseReachable: Bool { state.withLock { $0.database } }

    /// Ready to take traffic; otherwise the reasons why not.
    public var readiness: (ready: Bool, problems: [String]) {
        state.withLock { state in
            var problems: [String] = []
            if !state.database { problems.append("database unreachable") }
            if !state.queue { problems.append("queue unreachable") }
            if !state.keysLoaded { problems.append("keys not loaded") }
            if state.writesFailing { problems.append("database refuses writes") }
            if state.shuttingDown { problems.append("shutting down") }
            return (problems.isEmpty, problems)
        }
    }

    func queueReachable(_ value: Bool) { state.withLock { $0.queue = value } }
    func databaseReachable(_ value: Bool) { state.withLock { $0.database = value } }
    func keysLoaded() { state.withLock { $0.keysLoaded = true } }
    func writesFailing(_ value: Bool) { state.withLock { $0.writesFailing = value } }
    func shuttingDown() { state.withLock { $0.shuttingDown = true } }
}
