import Foundation
public import Prometheus
import Synchronization

/// The standard process metrics (the names Prometheus client libraries use),
/// read from /proc at every scrape, so memory can be alerted on:
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`.
public final class ProcessMetrics: Sendable {
    private let resident: Gauge
    private let virtual: Gauge
    private let cpu: Counter
    private let openFDs: Gauge
    private let maxFDs: Gauge
    private let startTime: Gauge
    private let cpuSeen = Mutex<Double>(0)

    public init(registry: PrometheusCollectorRegistry) {
        func described(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        resident = registry.makeGauge(descriptor: described("process_resident_memory_bytes", "Resident memory size in bytes."))
        virtual = registry.makeGauge(descriptor: described("process_virtual_memory_bytes", "Virtual memory size in bytes."))
        cpu = registry.makeCounter(descriptor: described("process_cpu_seconds_total", "Total user and system CPU time spent in seconds."))
        openFDs = registry.makeGauge(descriptor: described("process_open_fds", "Number of open file descriptors."))
        maxFDs = registry.makeGauge(descriptor: described("process_max_fds", "Maximum number of open file descriptors."))
        startTime = registry.makeGauge(
            descriptor: described("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds."))
    }

    /// Reads /proc/self now (called before each scrape is rendered).
    public func update() {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let afterName = stat.lastIndex(of: ")")
        {
            // Fields after "(comm)": state is field 3, so index i here is field i + 3.
            let fields = stat[stat.index(after: afterName)...].split(separator: " ")
            if fields.count > 21, let utime = Double(fields[11]), let stime = Double(fields[12]), let start = Double(fields[19]),
                let vsize = Double(fields[20]), let rss = Double(fields[21])
            {
                let seconds = (utime + stime) / ticks
                let delta = cpuSeen.withLock { seen -> Double in
                    defer { seen = max(seen, seconds) }
                    return max(0, seconds - seen)
                }
                if delta > 0 { cpu.increment(by: delta) }
                virtual.set(vsize)
                resident.set(rss * pageSize)
                startTime.set(Self.bootTime() + start / ticks)
            }
        }
        openFDs.set(Double((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0))
        var limit = rlimit()
        #if os(Linux)
            if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.set(Double(limit.rlim_cur)) }
        #else
            if getrlimit(RLIMIT_NOFILE, &limit) == 0 { maxFDs.set(Double(limit.rlim_cur)) }
        #endif
    }

    private static func bootTime() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
            let value = Double(line.dropFirst(6))
        else { return 0 }
        return value
    }
}
