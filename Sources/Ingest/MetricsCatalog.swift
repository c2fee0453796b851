import CoreMetrics
import Foundation
public import Metrics
public import Prometheus

/// The swift-metrics factory `ingest` bootstraps: Prometheus metrics, each
/// family with its help text (the Prometheus exposition linter, `promtool
/// check metrics`, wants one on every family, and swift-prometheus's own
/// factory gives none). Durations use the default histogram buckets.
public struct DescribedPrometheusFactory: MetricsFactory {
    public let registry: PrometheusCollectorRegistry
    private let buckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// What each metric means (README, "Metrics, health and logs").
    static let help: [String: String] = [
        "ingest_messages_received_total": "Messages received from SQS or read from the file.",
        "ingest_rows_written_total": "Rows committed to user_logins.",
        "ingest_messages_quarantined_total": "Messages set aside in the quarantine table, by reason.",
        "ingest_duplicates_skipped_total": "Deliveries of messages already processed (SQS at-least-once), skipped.",
        "ingest_unknown_fields_total": "Unknown message fields ignored (never stored).",
        "ingest_retries_total": "Retries of a dependency that was unavailable or refused, by dependency.",
        "ingest_delete_failures_total": "Committed messages SQS refused to delete (they come back and are skipped).",
        "ingest_data_keys_created_total": "Data keys created (rotated by count and age).",
        "ingest_batch_duration_seconds": "Time from taking a batch to committing it.",
        "ingest_queue_lag_seconds": "Age of the oldest message of the last committed batch (now minus SentTimestamp).",
        "ingest_stalled_seconds": "Seconds since the last commit while this replica holds messages not yet written (0 when it holds none).",
        "ingest_ready": "1 when /health/ready says ready.",
        "ingest_dependency_up": "1 when the dependency answered the last time it was used.",
        "ingest_key_version": "The active key version, by kind.",
        "ingest_build_info": "The running build: version and revision labels; value 1.",
    ]

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: Self.help[label] ?? label.replacingOccurrences(of: "_", with: " "))
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
