import AWS
import Logging

/// What happens to messages after their batch committed, and while it waits.
public protocol Acknowledger: Sendable {
    /// The batch is durable: remove the messages from their source.
    func acknowledge(_ messages: [InboundMessage]) async
    /// The batch is taking long (the database is down): keep the messages hidden
    /// from other consumers a while longer.
    func extendLeases(_ messages: [InboundMessage]) async
}

/// Files need no acknowledgement: replaying one is deduplicated by receipts.
struct FileAcknowledger: Acknowledger {
    func acknowledge(_ messages: [InboundMessage]) async {}
    func extendLeases(_ messages: [InboundMessage]) async {}
}

/// Deletes committed messages from SQS (DeleteMessageBatch, 10 at a time) and
/// extends leases (ChangeMessageVisibilityBatch). A delete that keeps failing is
/// logged, not retried forever: the message becomes visible again, is
/// recognised by its receipt, and is deleted then.
struct SQSAcknowledger: Acknowledger {
    let client: SQSClient
    let visibilityTimeout: Int
    let redeliverAfterSeconds: Int?
    let statistics: IngestStatistics
    let logger: Logger
    let backoff = Backoff(base: .milliseconds(200), cap: .seconds(5))
    let attempts = 5

    func acknowledge(_ messages: [InboundMessage]) async {
        if let redeliverAfterSeconds {
            await forEachChunk(of: messages, action: "release") { entries in
                try await client.changeVisibilityBatch(entries, timeoutSeconds: redeliverAfterSeconds)
            }
            return
        }
        await forEachChunk(of: messages, action: "delete") { entries in try await client.deleteBatch(entries) }
    }

    func extendLeases(_ messages: [InboundMessage]) async {
        await forEachChunk(of: messages, action: "extend visibility") { entries in
            try await client.changeVisibilityBatch(entries, timeoutSeconds: visibilityTimeout)
        }
    }

    private func forEachChunk(
        of messages: [InboundMessage], action: String,
        _ call: @escaping @Sendable ([SQSBatchEntry]) async throws -> [SQSBatchFailure]
    ) async {
        let entries: [SQSBatchEntry] = messages.enumerated().compactMap { index, message in
            guard case .sqs(let handle) = message.origin else { return nil }
            return SQSBatchEntry(id: String(index), receiptHandle: handle)
        }
        let chunks = stride(from: 0, to: entries.count, by: 10).map { Array(entries[$0..<min($0 + 10, entries.count)]) }
        await withTaskGroup(of: Void.self) { group in
            for chunk in chunks {
                group.addTask { await send(chunk, action: action, call) }
            }
        }
    }

    private func send(_ chunk: [SQSBatchEntry], action: String, _ call: @Sendable ([SQSBatchEntry]) async throws -> [SQSBatchFailure]) async
    {
        var pending = chunk
        for attempt in 0..<attempts {
            do {
                let failures = try await call(pending)
                let retryable = Set(failures.filter { !$0.senderFault }.map(\.id))
                for failure in failures where failure.senderFault {
                    logger.warning(
                        "SQS refused to \(action) a message; it will be redelivered and deduplicated",
                        metadata: ["code": "\(failure.code)"])
                    if action == "delete" { statistics.deleteFailures(1) }
                }
                pending = pending.filter { retryable.contains($0.id) }
                if pending.isEmpty { return }
            } catch let error as SQSError where error.isTransient {
                if attempt == attempts - 1 { break }
            } catch {
                break
            }
            do { try await Task.sleep(for: backoff.delay(attempt: attempt)) } catch { break }
        }
        logger.warning("could not \(action) messages; they will be redelivered and deduplicated", metadata: ["count": "\(pending.count)"])
        if action == "delete" { statistics.deleteFailures(pending.count) }
    }
}
