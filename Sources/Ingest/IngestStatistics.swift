import Foundation
import Metrics
import Synchronization

/// What the service did: counters for the summary line and the tests, and the
/// same facts as swift-metrics (served as Prometheus text on /metrics). Metric
/// labels are reason codes and dependency names, never values.
public final class IngestStatistics: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var received = 0
        public var written = 0
        public var quarantined: [String: Int] = [:]
        public var duplicates = 0
        public var unknownFields = 0
        public var databaseRetries = 0
        public var queueRetries = 0
        public var kmsRetries = 0
        /// `GenerateMac` calls (misses of the token cache, each distinct value of a batch once).
        public var kmsRequests = 0
        public var deleteFailures = 0
        public var dataKeysCreated = 0

        public var quarantinedTotal: Int { quarantined.values.reduce(0, +) }
    }

    public enum Dependency: String, Sendable {
        case database
        case sqs
        case kms
    }

    private let state = Mutex(Snapshot())
    private let receivedCounter = Counter(label: "ingest_messages_received_total")
    private let writtenCounter = Counter(label: "ingest_rows_written_total")
    private let duplicatesCounter = Counter(label: "ingest_duplicates_skipped_total")
    private let unknownFieldsCounter = Counter(label: "ingest_unknown_fields_total")
    private let deleteFailuresCounter = Counter(label: "ingest_delete_failures_total")
    private let dataKeysCounter = Counter(label: "ingest_data_keys_created_total")
    private let batchTimer = Metrics.Timer(label: "ingest_batch_duration_seconds")
    private let queueLag = Gauge(label: "ingest_queue_lag_seconds")
    private let stalled = Gauge(label: "ingest_stalled_seconds")
    /// Messages received and not yet written, quarantined or skipped, and
    /// since when this replica has held some without committing any.
    private let holding = Mutex<(messages: Int, since: ContinuousClock.Instant?)>((0, nil))

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func received(_ count: Int) {
        state.withLock { $0.received += count }
        receivedCounter.increment(by: count)
        holding.withLock { holding in
            holding.messages += count
            if holding.messages > 0, holding.since == nil { holding.since = .now }
        }
    }

    /// Seconds since the last commit while messages wait to be written (0
    /// when none wait): unlike the lag of the last batch, it keeps growing
    /// through a database outage, and is 0 when the queue is idle.
    func stalledSeconds(at now: ContinuousClock.Instant = .now) -> Double {
        guard let since = holding.withLock({ $0.since }) else { return 0 }
        let waited = now - since
        return Double(waited.components.seconds) + Double(waited.components.attoseconds) / 1e18
    }

    /// Publishes `ingest_stalled_seconds` (the service calls it every few seconds).
    func recordStall() { stalled.record(stalledSeconds()) }

    /// A committed batch: rows written, messages skipped as already processed,
    /// messages quarantined (by reason), how long it took, and how old its oldest message was.
    func committed(rows: Int, duplicates: Int, quarantined: [String: Int], duration: Duration, oldestSentAt: Int64?) {
        state.withLock { stats in
            stats.written += rows
            stats.duplicates += duplicates
            for (reason, count) in quarantined { stats.quarantined[reason, default: 0] += count }
        }
        holding.withLock { holding in
            holding.messages = max(0, holding.messages - rows - duplicates - quarantined.values.reduce(0, +))
            holding.since = holding.messages > 0 ? .now : nil
        }
        recordStall()
        writtenCounter.increment(by: rows)
        duplicatesCounter.increment(by: duplicates)
        for (reason, count) in quarantined {
            Counter(label: "ingest_messages_quarantined_total", dimensions: [("reason", reason)]).increment(by: count)
        }
        batchTimer.recordNanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        if let oldestSentAt {
            // SentTimestamp is wall-clock time, so the lag is too.
            queueLag.record(max(0, wallClockMilliseconds() - Double(oldestSentAt)) / 1000)
        }
    }

    func unknownFields(_ count: Int) {
        state.withLock { $0.unknownFields += count }
        unknownFieldsCounter.increment(by: count)
    }

    func kmsRequests(_ count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.kmsRequests += count }
    }

    func retry(_ dependency: Dependency) {
        state.withLock { stats in
            switch dependency {
            case .database: stats.databaseRetries += 1
            case .sqs: stats.queueRetries += 1
            case .kms: stats.kmsRetries += 1
            }
        }
        Counter(label: "ingest_retries_total", dimensions: [("dependency", dependency.rawValue)]).increment()
    }

    func deleteFailures(_ count: Int) {
        state.withLock { $0.deleteFailures += count }
        deleteFailuresCounter.increment(by: count)
    }

    func dataKeyCreated() {
        state.withLock { $0.dataKeysCreated += 1 }
        dataKeysCounter.increment()
    }
}

func wallClockMilliseconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Double(time.tv_sec) * 1000 + Double(time.tv_nsec) / 1_000_000
}
