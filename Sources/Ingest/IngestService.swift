public import AWS
import AsyncHTTPClient
import Foundation
import KeyCustody
public import Logging
import Metrics
import NIOCore
import Postgres
import Pseudonymization
public import ServiceLifecycle
public import Storage
import UnixSignals
import VaultCrypto

/// Everything `ingest run` can be told.
public struct IngestConfiguration: Sendable {
    public enum Source: Sendable {
        case sqs(SQSConfiguration)
        /// A file of bodies; `sentTimestamp` stands in for SQS's (Unix ms).
        case file(path: String, sentTimestamp: Int64)

        var isQueue: Bool {
            if case .sqs = self { return true }
            return false
        }
    }

    public var source: Source
    public var conninfo: String
    public var keysDirectory: String
    public var pollers = 4
    public var writers = 2
    public var batchSize = 1500
    /// Bytes of message bodies in flight at most (received or reserved for a
    /// receive, queued, or held by writers): what bounds memory with large bodies.
    public var maximumInflightBytes = 16 << 20
    public var flushInterval: Duration = .milliseconds(250)
    public var waitSeconds = 20
    public var visibilityTimeout = 60
    public var untilEmpty = false
    public var maximumMessages: Int?
    public var maximumReceiveCount = 10
    public var dataKeyPolicy = DataKeyPolicy()
    /// How often the key files are checked for a rotation (SIGHUP checks at once).
    public var keyReloadInterval: Duration = .seconds(10)
    /// How long to wait, unready, at start for PostgreSQL, the schema and the
    /// key registry; nil: as long as it takes.
    public var startupTimeout: Duration?
    /// How often readiness pings the database.
    public var healthProbeInterval: Duration = .seconds(2)
    /// Values whose tokens are kept for KMS-held tokenization keys (0: none).
    public var tokenCacheEntries = 100_000
    /// Plain http to a non-loopback SQS or KMS endpoint (emulators on a trusted network).
    public var allowInsecureEndpoint = false
    /// Tests only: after commit, leave messages to reappear after this many
    /// seconds instead of deleting them, as a crash between commit and delete would.
    var redeliverAfterSecondsInsteadOfDelete: Int? = nil

    public init(source: Source, conninfo: String, keysDirectory: String) {
        self.source = source
        self.conninfo = conninfo
        self.keysDirectory = keysDirectory
    }
}

/// The ingestion service: SQS (or a file) → validate → pseudonymize → vault →
/// PostgreSQL, exactly once in effect. A `Service` for swift-service-lifecycle:
/// on SIGTERM/SIGINT it stops receiving, commits and acknowledges what it holds,
/// and returns.
public final class IngestService: Service {
    public let statistics = IngestStatistics()
    public let health = HealthState()
    private let configuration: IngestConfiguration
    private let logger: Logger

    public init(configuration: IngestConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let health = self.health
        let conninfo = configuration.conninfo
        let connect: @Sendable () async throws -> PostgresConnection = {
            try await PostgresConnection.connect(conninfo, applicationName: "ingest", logger: logger)
        }
        let kms = LazyKMSClient(allowInsecureEndpoint: configuration.allowInsecureEndpoint, logger: logger)
        let keys = try IngestKeys(
            store: KeyStore(directory: configuration.keysDirectory),
            registry: {
                let connection = try await connect()
                defer { Task { await connection.close() } }
                return try await KeyRegistry.registered(on: connection)
            }, kms: kms, logger: logger)
        defer { Task { await keys.shutdown() } }
        let tokenCache = try TokenCache(capacity: configuration.tokenCacheEntries)
        let prober = Task {
            await Self.probe(
                health: health, keys: keys, tokenCache: tokenCache, statistics: self.statistics, connect: connect,
                every: configuration.healthProbeInterval)
        }
        defer { prober.cancel() }
        // A database that is not there yet (or not migrated, or without the key
        // fingerprints yet, or key files older than its registry) is waited for,
        // unready: no crash loop while the rest of a deployment comes up. SIGTERM
        // ends the wait; SIGHUP (sent after new key files arrive) must not end
        // the process before its reloader traps it: every attempt reads the
        // files again anyway.
        signal(SIGHUP, SIG_IGN)
        do {
            try await cancelWhenGracefulShutdown {
                try await Self.waitUntilUsable(
                    keys: keys, connect: connect, health: health, timeout: configuration.startupTimeout,
                    waitsForMigration: configuration.source.isQueue, logger: logger)
            }
        } catch is CancellationError {
            return
        }
        let keyring = keys.current.keyring
        let recoveryKeys = keys.current.recovery
        health.keysLoaded()
        if keys.store.hasRecoveryPrivateKeys {
            logger.warning(
                "the key directory holds the recovery private key; ingest never uses it: remove it from the ingest secret",
                metadata: ["file": "\(keys.store.recoveryPrivatePath)"])
        }

        let queue = MessageQueue(
            capacity: configuration.batchSize * configuration.writers * 2,
            byteBudget: configuration.maximumInflightBytes)
        let statistics = self.statistics
        let dataKeys = DataKeyManager(
            recoveryKey: recoveryKeys.active, policy: configuration.dataKeyPolicy, createdBy: ProcessInfo.processInfo.hostName,
            logger: logger, onCreate: { _ in statistics.dataKeyCreated() }, connect: connect)
        let knownTokens = KnownTokenCache()
        let inFlight = InFlightTokens()
        let budget = MessageBudget(configuration.maximumMessages)

        let acknowledger: any Acknowledger
        let produce: @Sendable () async throws -> Void
        var sqsClient: SQSClient? = nil
        switch configuration.source {
        case .sqs(let sqsConfiguration):
            let client = SQSClient(
                configuration: sqsConfiguration, httpConfiguration: Self.httpConfiguration(pollers: configuration.pollers),
                logger: logger)
            sqsClient = client
            let bytesPerMessage: Int
            do {
                let (reachable, maximumMessageSize) = try await Self.checkQueue(client, logger: logger)
                health.queueReachable(reachable)
                bytesPerMessage = maximumMessageSize
            } catch {
                await client.shutdown()
                throw error
            }
            acknowledger = SQSAcknowledger(
                client: client, visibilityTimeout: configuration.visibilityTimeout,
                redeliverAfterSeconds: configuration.redeliverAfterSecondsInsteadOfDelete,
                statistics: statistics, logger: logger)
            let sizes = MessageSizeEstimate(ceiling: bytesPerMessage)
            let pollers = (0..<configuration.pollers).map { index in
                SQSPoller(
                    name: "poller-\(index)", client: client, queue: queue, sizes: sizes, budget: budget,
                    options: .init(
                        waitSeconds: configuration.untilEmpty ? min(configuration.waitSeconds, 2) : configuration.waitSeconds,
                        visibilityTimeout: configuration.visibilityTimeout, stopWhenEmpty: configuration.untilEmpty),
                    statistics: statistics, health: health, logger: logger)
            }
            produce = {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for poller in pollers { group.addTask { try await poller.run() } }
                    try await group.waitForAll()
                }
            }
        case .file(let path, let sentTimestamp):
            try await Self.checkSendDay(sentTimestamp, of: path, connect: connect)
            health.queueReachable(true)
            acknowledger = FileAcknowledger()
            let source = FileSource(path: path, sentTimestamp: sentTimestamp, queue: queue, budget: budget, statistics: statistics)
            produce = { try await source.run() }
        }

        var writers: [Writer] = []
        for index in 0..<configuration.writers {
            let processor = try MessageProcessor(
                keys: keys, tokenCache: tokenCache, knownTokens: knownTokens, inFlight: inFlight,
                maximumReceiveCount: configuration.maximumReceiveCount, statistics: statistics)
            writers.append(
                Writer(
                    name: "writer-\(index)", queue: queue, processor: processor, dataKeys: dataKeys, keys: keys, knownTokens: knownTokens,
                    inFlight: inFlight,
                    acknowledger: acknowledger,
                    // Half the budget for the writers' batches, half for what is being received.
                    options: .init(
                        batchSize: configuration.batchSize,
                        batchBytes: max(1, configuration.maximumInflightBytes / (2 * configuration.writers)),
                        flushInterval: configuration.flushInterval,
                        leaseExtensionInterval: .seconds(configuration.visibilityTimeout / 2)),
                    statistics: statistics, health: health, logger: logger, connect: connect))
        }

        logger.info(
            "ingest started",
            metadata: [
                "source": "\(configuration.source.description)", "pollers": "\(configuration.pollers)",
                "writers": "\(configuration.writers)",
                "batch_size": "\(configuration.batchSize)", "tokenization_key_version": "\(keyring.active.version)",
                "recovery_key_version": "\(recoveryKeys.active.version)",
            ])
        let started = ContinuousClock.now
        // Producers run apart from the writers, so a graceful shutdown can stop
        // receiving while the writers finish what was already received.
        let producers = Task { try await produce() }
        let reloader = Task { await Self.reloadKeys(keys, dataKeys: dataKeys, every: configuration.keyReloadInterval) }
        defer { reloader.cancel() }
        let outcome: Result<Void, any Error>
        do {
            let producerError = try await withTaskCancellationHandler {
                try await withGracefulShutdownHandler {
                    try await Self.drain(producers: producers, queue: queue, writers: writers)
                } onGracefulShutdown: {
                    logger.info("shutting down: no more receiving; committing what is in hand")
                    health.shuttingDown()
                    producers.cancel()
                }
            } onCancel: {
                producers.cancel()
            }
            outcome = producerError.map { .failure($0) } ?? .success(())
        } catch {
            producers.cancel()
            outcome = .failure(error)
        }
        await sqsClient?.shutdown()
        await dataKeys.retireCurrent()
        try outcome.get()
        let elapsed = ContinuousClock.now - started
        let stats = statistics.snapshot
        let rate = elapsed.seconds > 0 ? Double(stats.received) / elapsed.seconds : 0
        var summary: Logger.Metadata = [
            "received": "\(stats.received)", "written": "\(stats.written)", "quarantined": "\(stats.quarantinedTotal)",
            "duplicates_skipped": "\(stats.duplicates)", "unknown_fields": "\(stats.unknownFields)",
            "seconds": "\(String(format: "%.2f", elapsed.seconds))", "messages_per_second": "\(Int(rate))",
        ]
        if keyring.usesKMS {
            let cache = tokenCache.statistics
            summary["kms_requests"] = "\(stats.kmsRequests)"
            summary["token_cache_hits"] = "\(cache.hits)"
            summary["token_cache_misses"] = "\(cache.misses)"
        }
        logger.info("ingest finished", metadata: summary)
    }

    /// Returns once PostgreSQL answers, the schema is current and the key files
    /// are the registered ones (KMS answering for a KMS-held version); until
    /// then readiness says what is missing. A swapped key file, a database
    /// refusing TLS, or a KMS key refused or disabled ends the service at once.
    /// A schema behind this build is waited for only by a service
    /// (`waitsForMigration`: a deployment's migration may be running); a run
    /// from a file, started by a person, ends at once and says to migrate.
    static func waitUntilUsable(
        keys: IngestKeys, connect: @Sendable () async throws -> PostgresConnection, health: HealthState, timeout: Duration?,
        waitsForMigration: Bool, logger: Logger
    ) async throws {
        let started = ContinuousClock.now
        let backoff = Backoff(base: .milliseconds(500), cap: .seconds(15))
        var attempt = 0
        while true {
            let problem: String
            do {
                let connection = try await connect()
                defer { Task { await connection.close() } }
                health.databaseReachable(true)
                let version = try await Schema.currentVersion(connection)
                if version < Schema.latestVersion {
                    let behind =
                        "the database schema is at version \(version), this build needs \(Schema.latestVersion): run `ingest migrate`"
                    guard waitsForMigration else { throw IngestError("\(behind); nothing was read", exitCode: 78) }
                    problem = behind
                } else {
                    try await keys.verifyRegistered()
                    health.kmsReachable(true)
                    health.waitingFor(nil)
                    if attempt > 0 { logger.info("the database is ready; starting", metadata: ["attempts": "\(attempt + 1)"]) }
                    return
                }
            } catch let error as PostgresError where error.code == .connectionFailed {
                health.databaseReachable(false)
                problem = "\(error)"
            } catch let error as KeyRegistryError where error.code == .unregistered || error.code == .rolledBack {
                problem = error.message
            } catch let error as KMSError where error.isTransient {
                health.kmsReachable(false)
                problem = "\(error)"
            }
            health.waitingFor(problem)
            if let timeout, ContinuousClock.now - started >= timeout {
                throw IngestError("gave up waiting after \(timeout.seconds) s (--startup-timeout): \(problem)", exitCode: 75)
            }
            if attempt % 10 == 0 {
                logger.warning(
                    "waiting for the database before starting; not ready", metadata: ["attempt": "\(attempt + 1)", "problem": "\(problem)"])
            }
            try await Task.sleep(for: backoff.delay(attempt: min(attempt, 10)))
            attempt += 1
        }
    }

    /// A file's lines are named by their send day, and receipts are kept only
    /// for the days the database allows (`ingest maintain` sets them): a send
    /// time outside is refused before anything is read.
    static func checkSendDay(_ sentTimestamp: Int64, of path: String, connect: @Sendable () async throws -> PostgresConnection) async throws
    {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        let day = UTCDate.string(fromMilliseconds: sentTimestamp)
        let window = try await connection.query(
            """
            SELECT ($1::date < today - receipts_retention_days) AS too_old, ($1::date > today + days_ahead) AS too_new,
                   today - receipts_retention_days AS first, today + days_ahead AS last
            FROM partition_policy, (SELECT (now() AT TIME ZONE 'UTC')::date AS today) t
            """, [.text(day)])[0]
        guard try !window.bool("too_old"), try !window.bool("too_new") else {
            throw IngestError(
                "the lines of \(path) would be sent on \(day) (--sent-at, or the file's modification time), outside the days receipts are kept for (\(try window.string("first")) to \(try window.string("last"))): a replay could not be recognised. Give --sent-at within those days, or widen them with `ingest maintain --receipts-retention N`",
                exitCode: 64)
        }
    }

    /// Keeps readiness and the gauges current: pings the database every
    /// `interval` on a connection of its own (an idle service would otherwise
    /// not notice an outage), publishes the active key versions and how long
    /// messages have waited without a commit.
    private static func probe(
        health: HealthState, keys: IngestKeys, tokenCache: TokenCache, statistics: IngestStatistics,
        connect: @escaping @Sendable () async throws -> PostgresConnection, every interval: Duration
    ) async {
        let cacheEntries = Gauge(label: "ingest_token_cache_entries")
        let tokenizationVersion = Gauge(label: "ingest_key_version", dimensions: [("kind", "tokenization")])
        let recoveryVersion = Gauge(label: "ingest_key_version", dimensions: [("kind", "recovery")])
        var connection: PostgresConnection? = nil
        while !Task.isCancelled {
            do {
                if connection == nil { connection = try await connect() }
                try await connection!.query("SELECT 1")
                health.databaseReachable(true)
            } catch {
                await connection?.close()
                connection = nil
                health.databaseReachable(false)
            }
            cacheEntries.record(tokenCache.statistics.entries)
            statistics.recordStall()
            tokenizationVersion.record(keys.current.keyring.active.version)
            recoveryVersion.record(keys.current.recovery.active.version)
            try? await Task.sleep(for: interval)
        }
        await connection?.close()
    }

    /// Re-reads the key files on SIGHUP and every `interval`; a new recovery key
    /// makes the next data key wrap to it. Tokenizers pick up the new keyring
    /// at their next batch.
    private static func reloadKeys(_ keys: IngestKeys, dataKeys: DataKeyManager, every interval: Duration) async {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in hangups {
                    if let fresh = await keys.reload() { await dataKeys.useRecoveryKey(fresh.recovery.active) }
                }
            }
            group.addTask {
                while (try? await Task.sleep(for: interval)) != nil {
                    if let fresh = await keys.reload() { await dataKeys.useRecoveryKey(fresh.recovery.active) }
                }
            }
            await group.waitForAll()
        }
    }

    /// Runs the writers until the producers are done and the queue is drained.
    /// A producer failure (the queue vanished, credentials revoked) still lets
    /// the writers commit what they hold; it is returned, not thrown, so the
    /// writers are not cancelled.
    private static func drain(producers: Task<Void, any Error>, queue: MessageQueue, writers: [Writer]) async throws -> (any Error)? {
        try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            group.addTask {
                // A writer that fails cancels this group: the producers must stop
                // too (closing the queue frees pollers waiting for room the dead
                // writers would have made), or the group would wait for ever.
                let result = await withTaskCancellationHandler {
                    await producers.result
                } onCancel: {
                    producers.cancel()
                    Task { await queue.close() }
                }
                await queue.close()
                if case .failure(let error) = result, !(error is CancellationError) { return error }
                return nil
            }
            for writer in writers {
                nonisolated(unsafe) let writer = writer
                group.addTask {
                    try await writer.run()
                    return nil
                }
            }
            var producerError: (any Error)? = nil
            for try await error in group where producerError == nil { producerError = error }
            return producerError
        }
    }

    static func httpConfiguration(pollers: Int) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        // Long polls hold a connection each; deletes and lease extensions need more.
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(16, pollers * 4))
        return configuration
    }

    /// How long the queue keeps a message (`MessageRetentionPeriod`), if it says.
    public static func messageRetentionSeconds(_ configuration: SQSConfiguration, logger: Logger) async throws -> Int? {
        let client = SQSClient(configuration: configuration, httpConfiguration: httpConfiguration(pollers: 1), logger: logger)
        do {
            let attributes = try await client.queueAttributes(["MessageRetentionPeriod"])
            await client.shutdown()
            return attributes["MessageRetentionPeriod"].flatMap(Int.init)
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// SQS's largest message (1 MiB): what a receive reserves per message
    /// when the queue does not say otherwise.
    static let largestMessageBytes = 1 << 20

    /// Fails fast when the queue cannot work at all; an outage is only logged
    /// (the pollers retry until SQS answers).
    /// Returns whether the queue answered, and its largest message size.
    static func checkQueue(_ client: SQSClient, logger: Logger) async throws -> (reachable: Bool, maximumMessageSize: Int) {
        do {
            let attributes = try await client.queueAttributes(["VisibilityTimeout", "MaximumMessageSize"])
            let size = attributes["MaximumMessageSize"].flatMap(Int.init).map { min(max($0, 1024), largestMessageBytes) }
            return (true, size ?? largestMessageBytes)
        } catch let error as SQSError where error.isTransient {
            logger.warning("SQS is not reachable yet; polling will retry", metadata: ["error": "\(error)"])
            return (false, largestMessageBytes)
        }
    }
}

extension IngestConfiguration.Source: CustomStringConvertible {
    public var description: String {
        switch self {
        case .sqs(let configuration): return configuration.queueURL.absoluteString
        case .file(let path, _): return path
        }
    }
}
