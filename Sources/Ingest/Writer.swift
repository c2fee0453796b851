import AWS
import Foundation
import Logging
import Postgres
import Pseudonymization
import Storage
import VaultCrypto

/// Takes batches off the queue, processes them, commits each in one
/// transaction, and acknowledges the messages only after the commit.
///
/// Database outages are retried with backoff until the database returns
/// (leases on held messages are extended meanwhile). A batch the database
/// refuses for a reason other than an outage is split until the refused
/// message is found; that one is quarantined, the rest written.
final class Writer {
    struct Options {
        var batchSize: Int
        /// Body bytes per batch (at least one message): the writers' share of the byte budget.
        var batchBytes: Int
        var flushInterval: Duration
        var leaseExtensionInterval: Duration
    }

    private let name: String
    private let queue: MessageQueue
    private let processor: MessageProcessor
    private let dataKeys: DataKeyManager
    private let keys: IngestKeys
    private let knownTokens: KnownTokenCache
    private let inFlight: InFlightTokens
    private let acknowledger: any Acknowledger
    private let connect: @Sendable () async throws -> PostgresConnection
    private var connection: PostgresConnection?
    private let options: Options
    private let statistics: IngestStatistics
    private let health: HealthState
    private let logger: Logger
    private let backoff = Backoff(base: .milliseconds(100), cap: .seconds(10))
    private let hints = WriterHints()
    /// Sent days whose partitions this writer has made or found, on the UTC
    /// day it did (today's quarantine partition comes with them).
    private var preparedDays: (today: String, days: Set<String>) = ("", [])

    init(
        name: String, queue: MessageQueue, processor: MessageProcessor, dataKeys: DataKeyManager, keys: IngestKeys,
        knownTokens: KnownTokenCache, inFlight: InFlightTokens,
        acknowledger: any Acknowledger, options: Options, statistics: IngestStatistics, health: HealthState, logger: Logger,
        connect: @escaping @Sendable () async throws -> PostgresConnection
    ) {
        self.health = health
        self.name = name
        self.queue = queue
        self.processor = processor
        self.dataKeys = dataKeys
        self.keys = keys
        self.knownTokens = knownTokens
        self.inFlight = inFlight
        self.acknowledger = acknowledger
        self.options = options
        self.statistics = statistics
        self.logger = logger
        self.connect = connect
    }

    /// Runs until the queue is closed and drained.
    func run() async throws {
        while true {
            var batch = await queue.take(maximum: options.batchSize, maximumBytes: options.batchBytes)
            if batch.isEmpty { return }
            var bytes = batch.reduce(0) { $0 + $1.body.count }
            let deadline = ContinuousClock.now + options.flushInterval
            while batch.count < options.batchSize && bytes < options.batchBytes {
                let more = await queue.take(
                    maximum: options.batchSize - batch.count, maximumBytes: options.batchBytes - bytes,
                    deadline: deadline)
                if more.isEmpty { break }
                batch += more
                bytes += more.reduce(0) { $0 + $1.body.count }
            }
            do {
                try await handle(batch)
            } catch {
                await queue.release(batch)
                throw error
            }
            await queue.release(batch)
        }
    }

    private func handle(_ batch: [InboundMessage]) async throws {
        let started = ContinuousClock.now
        var staleAttempt = 0
        var lastExtension = started
        var output = MessageProcessor.Output(items: [], newTokens: [])
        var result: BatchResult
        var settled = false
        defer { if !settled { inFlight.release(output.newTokens, of: output.claim, committed: false) } }
        while true {
            do {
                inFlight.release(output.newTokens, of: output.claim, committed: false)
                output = MessageProcessor.Output(items: [], newTokens: [])
                output = try await retryingOutages(batch, since: started) {
                    try await self.processor.process(batch, dataKeys: self.dataKeys)
                }
                result = try await commit(output.items, messages: batch, processed: output, since: started)
                break
            } catch let stale as StaleKeysError {
                // Rotated elsewhere (or the files were rolled back): never write with
                // keys older than the database's. Reload and redo the batch; wait,
                // unready, if the key files have not caught up yet (messages stay
                // leased meanwhile, their leases extended).
                if let fresh = await keys.reload() { await dataKeys.useRecoveryKey(fresh.recovery.active) }
                guard !stale.isResolved(by: keys.current) else { continue }
                if staleAttempt % 10 == 0 {
                    logger.warning("waiting for the rotated key files", metadata: ["writer": "\(name)", "error": "\(stale)"])
                }
                health.waitingFor(stale.description)
                try stopIfShuttingDown(during: "key file", batch)
                if ContinuousClock.now - lastExtension > options.leaseExtensionInterval {
                    await acknowledger.extendLeases(batch)
                    lastExtension = .now
                }
                try await Task.sleep(for: backoff.delay(attempt: min(staleAttempt, 6)))
                staleAttempt += 1
            }
        }
        if staleAttempt > 0 { health.waitingFor(nil) }
        knownTokens.insert(output.newTokens)
        knownTokens.insert(result.alreadyStoredTokens.map { .init(token: $0) })
        // Known now: batches that wait on these tokens may go on.
        inFlight.release(output.newTokens, of: output.claim, committed: true)
        settled = true
        statistics.committed(
            rows: result.loginRows, duplicates: batch.count - result.written.count, quarantined: result.quarantined,
            duration: ContinuousClock.now - started, oldestSentAt: batch.map(\.sentTimestamp).min())
        await acknowledger.acknowledge(batch)
        logger.debug(
            "batch committed",
            metadata: [
                "writer": "\(name)", "messages": "\(batch.count)", "rows": "\(result.loginRows)",
                "quarantined": "\(result.quarantined.values.reduce(0, +))", "duplicates": "\(batch.count - result.written.count)",
                "milliseconds": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    /// Commits `items`; splits the batch to isolate a message the database refuses.
    private func commit(
        _ items: [BatchItem], messages: [InboundMessage], processed: MessageProcessor.Output, since started: ContinuousClock.Instant
    ) async throws -> BatchResult {
        do {
            return try await retryingOutages(messages, since: started) {
                let connection = try await self.liveConnection()
                try await self.preparePartitions(for: items, on: connection)
                try await BatchWriter.storeAppVersions(of: items, hints: self.hints, on: connection)
                do {
                    return try await self.write(items, processed: processed, loading: .copy, on: connection)
                } catch let error as PostgresError where error.isRelayedCopyFailure {
                    // A Citus shard refused the COPY and its reason was lost on the
                    // way: the batch again by INSERT statements either goes in (a
                    // race) or fails with the reason, handled as on one node.
                    return try await self.write(items, processed: processed, loading: .insertStatements, on: connection)
                }
            }
        } catch let error as PostgresError where error.isDataError {
            // Some of the batch's new tokens may end up unstored (their message
            // quarantined): batches contending for them store them themselves.
            processed.claim.finish(committed: false)
            guard items.count > 1 else {
                return try await quarantineRefused(items[0], messages: messages, processed: processed, error: error, since: started)
            }
            let middle = items.count / 2
            logger.warning(
                "the database refused a batch; isolating the message",
                metadata: [
                    "sqlstate": "\(error.sqlState ?? "?")", "batch": "\(items.count)", "error": "\(error)",
                ])
            let first = try await commit(Array(items[..<middle]), messages: messages, processed: processed, since: started)
            let second = try await commit(Array(items[middle...]), messages: messages, processed: processed, since: started)
            return BatchResult(
                written: first.written.union(second.written), loginRows: first.loginRows + second.loginRows,
                quarantined: first.quarantined.merging(second.quarantined, uniquingKeysWith: +),
                vaultEntriesOffered: first.vaultEntriesOffered + second.vaultEntriesOffered,
                alreadyStoredTokens: first.alreadyStoredTokens + second.alreadyStoredTokens,
                suppressedEntries: first.suppressedEntries + second.suppressedEntries)
        }
    }

    /// The batch in one transaction; before COMMIT, the entries it left to
    /// another open batch of this process (`InFlightTokens`) are inserted
    /// if that batch did not commit.
    private func write(
        _ items: [BatchItem], processed: MessageProcessor.Output, loading: BatchWriter.Loading, on connection: PostgresConnection
    ) async throws -> BatchResult {
        let versions = processor.keyVersions
        let hints = self.hints
        return try await connection.suspendingTransaction { connection in
            var result = try await connection.perform { connection in
                try BatchWriter.write(items, keys: versions, hints: hints, loading: loading, on: connection)
            }
            // Each other batch waited for once, all of them for 2 s at most:
            // still open then, it may be waiting on this one (a message
            // redelivered into both), and the insert below then waits where
            // PostgreSQL sees the cycle and breaks it.
            let deadline = ContinuousClock.now + .seconds(2)
            var outcomes: [ObjectIdentifier: Bool] = [:]
            var unstored: [VaultEntryRecord] = []
            for entry in result.contendedEntries {
                guard let owner = processed.contendedOwners[entry.token] else {
                    unstored.append(entry)
                    continue
                }
                if outcomes[ObjectIdentifier(owner)] == nil {
                    outcomes[ObjectIdentifier(owner)] = await owner.committed(by: deadline) == true
                }
                if outcomes[ObjectIdentifier(owner)] != true { unstored.append(entry) }
            }
            if !unstored.isEmpty {
                let entries = unstored
                result.alreadyStoredTokens += try await connection.perform { connection in
                    try VaultEntries.insertContended(entries, on: connection)
                }
            }
            return result
        }
    }

    /// Partitions first, in their own transaction, when the batch has a day
    /// this writer has not prepared yet (see `BatchWriter.preparePartitions`).
    private func preparePartitions(for items: [BatchItem], on connection: PostgresConnection) async throws {
        let today = UTCDate.string(fromMilliseconds: Int64(Date().timeIntervalSince1970 * 1000))
        if preparedDays.today != today { preparedDays = (today, []) }
        let days = Set(items.map(\.sentDay))
        guard !days.isSubset(of: preparedDays.days) else { return }
        try await BatchWriter.preparePartitions(days: days, on: connection)
        preparedDays.days.formUnion(days)
    }

    private func quarantineRefused(
        _ item: BatchItem, messages: [InboundMessage], processed: MessageProcessor.Output, error: PostgresError,
        since started: ContinuousClock.Instant
    ) async throws -> BatchResult {
        guard case .login = item.payload, let message = messages.first(where: { $0.receiptID == item.receiptID }) else {
            // Not even the quarantine row can be written: a schema or code defect, not a message problem.
            throw error
        }
        let rejection = Rejection(.databaseRejected, "PostgreSQL refused the row (SQLSTATE \(error.sqlState ?? "unknown"))")
        let replacement = try await processor.quarantine(message, rejection, dataKeys: dataKeys)
        return try await commit([replacement], messages: messages, processed: processed, since: started)
    }

    /// Runs `body` until it succeeds or fails with something other than an outage.
    private func retryingOutages<T>(
        _ messages: [InboundMessage], since started: ContinuousClock.Instant, _ body: () async throws -> T
    ) async throws -> T {
        var attempt = 0
        var conflicts = 0
        var kmsFailing = false
        var databaseFailing = false
        var lastExtension = started
        while true {
            do {
                let value = try await body()
                if kmsFailing {
                    logger.info("KMS reachable again", metadata: ["writer": "\(name)", "attempts": "\(attempt + 1)"])
                    health.kmsReachable(true)
                    kmsFailing = false
                }
                if databaseFailing {
                    logger.info("database reachable again", metadata: ["writer": "\(name)", "attempts": "\(attempt + 1)"])
                    health.databaseReachable(true)
                    health.writesFailing(false)
                }
                return value
            } catch let error as KMSError where error.isTransient {
                // KMS-held tokenization key out of reach: like a database outage,
                // the messages stay leased and wait; no row is built without its token.
                if attempt == 0 || attempt % 10 == 0 {
                    logger.warning(
                        "KMS unavailable; retrying with backoff",
                        metadata: ["writer": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                }
                statistics.retry(.kms)
                health.kmsReachable(false)
                kmsFailing = true
                try stopIfShuttingDown(during: "KMS", messages)
                if ContinuousClock.now - lastExtension > options.leaseExtensionInterval {
                    await acknowledger.extendLeases(messages)
                    lastExtension = .now
                }
                try await Task.sleep(for: backoff.delay(attempt: attempt))
                attempt += 1
            } catch let error as PostgresError where ["23505", "40P01"].contains(error.sqlState) {
                // A concurrent writer stored a receipt or token between this
                // batch's check and its COPY, or two batches waited on each
                // other's tokens (a deadlock PostgreSQL broke); the retry sees
                // what the other committed. Not an outage.
                conflicts += 1
                guard conflicts <= 50 else { throw error }
                logger.debug("write conflict with a concurrent writer; retrying", metadata: ["writer": "\(name)"])
                try await Task.sleep(for: .milliseconds(Int64.random(in: 1...20)))
            } catch let error as PostgresError where error.sqlState == "PSK07" {
                // A send day outside the days receipts are kept for: waiting changes nothing.
                throw IngestError(
                    "\(error.message); the messages were not written and stay in the queue (or the file): widen the window with `ingest maintain --receipts-retention N --days-ahead N`",
                    exitCode: 65)
            } catch let error as PostgresError where error.isTransient || (error.sqlState != nil && !error.isDataError) {
                // Unreachable, or refusing every write (a revoked grant, a missing
                // table): not the messages' fault, so none is quarantined. They
                // stay leased and wait until the database is fixed.
                if attempt == 0 || attempt % 10 == 0 {
                    if error.isTransient {
                        logger.warning(
                            "database unavailable; retrying with backoff",
                            metadata: ["writer": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                    } else {
                        logger.error(
                            "the database refuses the batch for a reason no message can cause; fix the database (grants, schema); messages wait in the queue",
                            metadata: ["writer": "\(name)", "attempt": "\(attempt + 1)", "error": "\(error)"])
                    }
                }
                statistics.retry(.database)
                databaseFailing = true
                try stopIfShuttingDown(during: "database", messages)
                health.writesFailing(true)
                if !(await connection?.isHealthy ?? false) {
                    health.databaseReachable(false)
                    connection = nil
                }
                if ContinuousClock.now - lastExtension > options.leaseExtensionInterval {
                    await acknowledger.extendLeases(messages)
                    lastExtension = .now
                }
                try await Task.sleep(for: backoff.delay(attempt: attempt))
                attempt += 1
            }
        }
    }

    /// Asked to stop while a dependency is down: waiting for it would only end
    /// in SIGKILL. The batch is left unwritten and unacknowledged (its messages
    /// come back once their lease runs out) and the service exits 75.
    private func stopIfShuttingDown(during outage: String, _ messages: [InboundMessage]) throws {
        guard health.isShuttingDown else { return }
        throw IngestError(
            "stopped during a \(outage) outage: \(messages.count) messages in hand were not written; nothing is lost: from SQS they come back after their visibility timeout, from a file a new run skips the lines already written. Run again when the \(outage) answers",
            exitCode: 75)
    }

    private func liveConnection() async throws -> PostgresConnection {
        if let connection, await connection.isHealthy { return connection }
        connection = nil
        let fresh = try await connect()
        connection = fresh
        return fresh
    }
}

extension StaleKeysError {
    /// Whether `keys` are as new as the database requires.
    func isResolved(by keys: IngestKeys.Snapshot) -> Bool {
        switch kind {
        case .tokenization: return keys.keyring.active.version >= registered
        case .recovery: return keys.recovery.active.version >= registered
        case .suppression: return keys.keyring.suppression != nil
        }
    }
}
