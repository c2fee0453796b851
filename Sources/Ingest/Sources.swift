import AWS
import Foundation
import Logging
import Metrics
import Pseudonymization
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
    /// What a receive reserves per message in the byte budget (shared by the pollers).
    let sizes: MessageSizeEstimate
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
            // Only as many messages as the byte budget has room for, at their largest.
            let (count, reserved) = await queue.reserveReceive(maximum: wanted, bytesPerMessage: sizes.current)
            budget.refund(wanted - count)
            guard count > 0 else { return }
            let messages: [SQSMessage]
            do {
                messages = try await client.receive(
                    maximum: count, waitSeconds: options.waitSeconds,
                    visibilityTimeout: options.visibilityTimeout)
                if attempt > 0 {
                    logger.info("SQS reachable again", metadata: ["poller": "\(name)", "attempts": "\(attempt + 1)"])
                    attempt = 0
                }
                health.queueReachable(true)
            } catch let error as SQSError where error.isTransient {
                budget.refund(count)
                await queue.cancel(reserved: reserved)
                if Task.isCancelled { return }
                health.queueReachable(false)
                if attempt == 0 || attempt % 10 == 0 {
                    logger.warning(
                        "SQS unavailable; retrying with backoff",
                        metadata: ["poller": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                }
                statistics.retry(.sqs)
                try await Task.sleep(for: backoff.delay(attempt: attempt))
                attempt += 1
                continue
            } catch {
                budget.refund(count)
                await queue.cancel(reserved: reserved)
                throw error
            }
            budget.refund(count - messages.count)
            if messages.isEmpty {
                await queue.cancel(reserved: reserved)
                if options.stopWhenEmpty { return }
                continue
            }
            sizes.observe(largest: messages.map(\.body.utf8.count).max() ?? 0)
            statistics.received(messages.count)
            let inbound = try messages.map { message in
                InboundMessage(
                    origin: .sqs(receiptHandle: message.receiptHandle), messageID: message.messageID,
                    receiptID: try ReceiptID.sqs(messageID: message.messageID), body: Array(message.body.utf8),
                    sentTimestamp: message.sentTimestamp ?? Int64(Date().timeIntervalSince1970 * 1000),
                    receiveCount: message.receiveCount)
            }
            // Suspends while the writers lag: polling stops until they catch up.
            guard await queue.push(inbound, reserved: reserved) else { return }
        }
    }
}

/// What one message of the next receive may take, for its reservation in the
/// byte budget: the largest body seen lately. It starts at the queue's maximum
/// message size (nothing is known yet), jumps up at once when a larger body
/// arrives, and decays toward `floor` by a quarter of the gap per receive while
/// bodies stay small, so small messages poll at full concurrency. A sudden
/// switch to large bodies can overshoot the budget once, by at most what the
/// receives already in the air bring (pollers × 10 × the maximum size).
final class MessageSizeEstimate: Sendable {
    private let estimate: Mutex<Int>
    let floor: Int
    let ceiling: Int

    init(ceiling: Int, floor: Int = 64 << 10) {
        self.ceiling = max(ceiling, 1)
        self.floor = min(floor, self.ceiling)
        estimate = Mutex(self.ceiling)
    }

    var current: Int { estimate.withLock { $0 } }

    func observe(largest: Int) {
        estimate.withLock { value in
            value = min(ceiling, max(largest, value - (value - floor) / 4, floor))
        }
    }
}

/// Feeds the queue from a file of message bodies, one per line (JSONL), reading
/// it as a stream so a file of any size runs in constant memory. Blank lines are
/// not messages and are skipped. A line longer than SQS's largest message is
/// cut there (it is quarantined as too large, with its full length recorded):
/// nothing a queue could deliver is lost, and no line can exhaust memory.
struct FileSource {
    /// SQS's maximum message size: no line is held beyond it.
    static let maximumLineBytes = 1 << 20

    let path: String
    let sentTimestamp: Int64
    let queue: MessageQueue
    let budget: MessageBudget
    let statistics: IngestStatistics

    func run() async throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw IngestError("cannot open \(path) (\(String(cString: strerror(errno)))); check the path and its permissions")
        }
        defer { close(descriptor) }
        var reader = LineReader(descriptor: descriptor, limit: Self.maximumLineBytes)
        var lineNumber = 0
        var chunk: [InboundMessage] = []
        var chunkBytes = 0
        chunk.reserveCapacity(256)
        var replay = false
        while let line = try reader.next() {
            lineNumber += 1
            if line.length == 0 { continue }
            if lineNumber == 1, line.bytes.elementsEqual(ReplayFile.header.utf8) {
                replay = true
                continue
            }
            guard budget.reserve(1) == 1 else { break }
            // A replayed message keeps the identity and sent day derived from its quarantined original
            // (a line that is not a replay line is taken as a body: validation quarantines it).
            if replay, let replayed = ReplayFile.Line(line.bytes) {
                chunk.append(
                    InboundMessage(
                        origin: .file, messageID: "line \(lineNumber)", receiptID: try ReceiptID.replay(of: replayed.receiptID),
                        body: replayed.body, sentTimestamp: replayed.sentTimestamp, receiveCount: 1, byteCount: replayed.body.count))
            } else {
                chunk.append(
                    InboundMessage(
                        origin: .file, messageID: "line \(lineNumber)", receiptID: try ReceiptID.file(line: lineNumber, body: line.bytes),
                        body: line.bytes, sentTimestamp: sentTimestamp, receiveCount: 1, byteCount: line.length))
            }
            chunkBytes += line.bytes.count
            // Pushed in chunks for speed, but never more than a megabyte at once.
            if chunk.count == 256 || chunkBytes >= 1 << 20 {
                statistics.received(chunk.count)
                guard await queue.push(chunk) else { return }
                chunk.removeAll(keepingCapacity: true)
                chunkBytes = 0
            }
        }
        statistics.received(chunk.count)
        await queue.push(chunk)
    }
}

/// Lines of a file descriptor, each cut at `limit` bytes (the rest of a long
/// line is read and counted, not kept). Handles any byte, NUL included.
struct LineReader {
    let descriptor: Int32
    let limit: Int
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0
    private var end = 0
    private var atEnd = false

    init(descriptor: Int32, limit: Int) {
        self.descriptor = descriptor
        self.limit = limit
    }

    /// The next line without its newline (and a CR before it): the bytes kept
    /// and the line's whole length. Nil at the end of the file.
    mutating func next() throws -> (bytes: [UInt8], length: Int)? {
        var bytes: [UInt8] = []
        var length = 0
        var consumed = false
        while true {
            if start == end {
                if atEnd { return consumed ? Self.trimmed(bytes, length) : nil }
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR { continue }
                    throw IngestError("reading the input file failed (\(String(cString: strerror(errno))))")
                }
                if count == 0 {
                    atEnd = true
                    continue
                }
                start = 0
                end = count
            }
            consumed = true
            let newline = buffer[start..<end].firstIndex(of: 0x0a)
            let stop = newline ?? end
            let keep = min(stop - start, max(limit - bytes.count, 0))
            bytes.append(contentsOf: buffer[start..<(start + keep)])
            length += stop - start
            start = newline.map { $0 + 1 } ?? end
            if newline != nil { return Self.trimmed(bytes, length) }
        }
    }

    private static func trimmed(_ bytes: [UInt8], _ length: Int) -> (bytes: [UInt8], length: Int) {
        guard bytes.count == length, bytes.last == 0x0d else { return (bytes, length) }
        return (Array(bytes.dropLast()), length - 1)
    }
}

/// A failure of the service as a whole, worded for the operator, with the
/// exit code it ends the process with.
public struct IngestError: Error, CustomStringConvertible {
    public let description: String
    public let exitCode: Int32

    public init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }
}

/// What `/health/ready` reports: whether the database and the queue answer
/// and the keys are loaded (and the service is not shutting down). Every
/// change is published at once as `ingest_ready` and `ingest_dependency_up`,
/// so a scrape agrees with the readiness probe.
public final class HealthState: Sendable {
    /// Nothing is reachable until shown to be.
    private struct State {
        var queue = false
        var database = false
        var keysLoaded = false
        /// False while KMS calls fail (only a KMS-held tokenization key makes any).
        var kms = true
        /// A writer is retrying a batch: the database answers but refuses it
        /// (read-only, disk full, a revoked grant) or went away mid-batch.
        var writesFailing = false
        var shuttingDown = false
        /// What start-up is still waiting for (schema, key registry).
        var waitingFor: String?

        var problems: [String] {
            var problems: [String] = []
            if !database { problems.append("database unreachable") }
            if !queue { problems.append("queue unreachable") }
            if !keysLoaded { problems.append("keys not loaded") }
            if !kms { problems.append("kms unreachable") }
            if writesFailing { problems.append("database refuses writes") }
            if let waitingFor { problems.append("starting: \(waitingFor)") }
            if shuttingDown { problems.append("shutting down") }
            return problems
        }
    }

    private let state = Mutex(State())
    private let ready = Gauge(label: "ingest_ready")
    private let databaseUp = Gauge(label: "ingest_dependency_up", dimensions: [("dependency", "database")])
    private let queueUp = Gauge(label: "ingest_dependency_up", dimensions: [("dependency", "sqs")])
    private let kmsUp = Gauge(label: "ingest_dependency_up", dimensions: [("dependency", "kms")])

    public init() {
        update { _ in }
    }

    public var isQueueReachable: Bool { state.withLock { $0.queue } }
    public var isDatabaseReachable: Bool { state.withLock { $0.database } }
    public var isKMSReachable: Bool { state.withLock { $0.kms } }
    public var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    /// Ready to take traffic; otherwise the reasons why not.
    public var readiness: (ready: Bool, problems: [String]) {
        let problems = state.withLock { $0.problems }
        return (problems.isEmpty, problems)
    }

    func queueReachable(_ value: Bool) { update { $0.queue = value } }
    func databaseReachable(_ value: Bool) { update { $0.database = value } }
    func kmsReachable(_ value: Bool) { update { $0.kms = value } }
    func keysLoaded() { update { $0.keysLoaded = true } }
    func writesFailing(_ value: Bool) { update { $0.writesFailing = value } }
    func shuttingDown() { update { $0.shuttingDown = true } }
    func waitingFor(_ problem: String?) { update { $0.waitingFor = problem } }

    /// Changes the state and records the gauges under the same lock, so they
    /// never show an older state than the last change.
    private func update(_ change: (inout State) -> Void) {
        state.withLock { state in
            change(&state)
            ready.record(state.problems.isEmpty ? 1 : 0)
            databaseUp.record(state.database ? 1 : 0)
            queueUp.record(state.queue ? 1 : 0)
            kmsUp.record(state.kms ? 1 : 0)
        }
    }
}
