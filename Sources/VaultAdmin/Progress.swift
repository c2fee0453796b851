import Foundation
public import Logging

/// Progress of a long job: on a terminal, one line rewritten in place (done/total,
/// rate, ETA); otherwise a plain log line every few seconds.
public final class Progress {
    private let label: String
    private let total: Int
    private var done = 0
    private let started = ContinuousClock.now
    private var lastReport = ContinuousClock.now
    private let terminal = isatty(STDERR_FILENO) == 1
    private let logger: Logger

    public init(label: String, total: Int, logger: Logger) {
        self.label = label
        self.total = total
        self.logger = logger
    }

    public func advance(by count: Int) {
        done += count
        let now = ContinuousClock.now
        guard now - lastReport > (terminal ? .milliseconds(200) : .seconds(5)) else { return }
        lastReport = now
        report(final: false)
    }

    public func finish() {
        report(final: true)
        lineOpen = false
    }

    /// Logs after ending the progress line, so the two never share a line.
    public func log(_ message: Logger.Message, metadata: Logger.Metadata) {
        endLine()
        logger.info(message, metadata: metadata)
    }

    /// Whatever ends the job (an error, an interrupt), the next output starts on a line of its own.
    deinit { endLine() }

    private var lineOpen = false

    private func endLine() {
        guard lineOpen else { return }
        FileHandle.standardError.write(Data("\n".utf8))
        lineOpen = false
    }

    private func report(final: Bool) {
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let rate = seconds > 0 ? Double(done) / seconds : 0
        let remaining = rate > 0 ? Double(max(total - done, 0)) / rate : 0
        let percent = total > 0 ? 100 * done / total : 100
        let text = "\(label): \(done)/\(total) (\(percent)%), \(Int(rate))/s, ETA \(Int(remaining.rounded())) s"
        if terminal {
            FileHandle.standardError.write(Data("\r\(text)\u{1b}[K\(final ? "\n" : "")".utf8))
            lineOpen = !final
        } else {
            logger.info(
                "\(label)",
                metadata: [
                    "done": "\(done)", "total": "\(total)", "per_second": "\(Int(rate))",
                    "eta_seconds": "\(Int(remaining.rounded()))",
                ])
        }
    }
}
