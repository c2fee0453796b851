/// Capped exponential backoff with full jitter (AWS Architecture Blog,
/// "Exponential Backoff And Jitter"): attempt n waits a uniformly random time
/// in [0, min(cap, base · 2ⁿ)]. Pure, so it is tested without waiting.
public struct Backoff: Sendable {
    public var base: Duration
    public var cap: Duration

    public init(base: Duration = .milliseconds(100), cap: Duration = .seconds(30)) {
        self.base = base
        self.cap = cap
    }

    /// The ceiling for attempt `attempt` (0-based) before jitter.
    public func ceiling(attempt: Int) -> Duration {
        let factor = 1 << min(max(attempt, 0), 30)
        let grown = base * factor
        return grown > cap ? cap : grown
    }

    /// The delay before retry `attempt`, drawn with `random`.
    public func delay(attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let ceiling = ceiling(attempt: attempt)
        let nanoseconds = ceiling.components.seconds * 1_000_000_000 + ceiling.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(nanoseconds, 0), using: &random))
    }

    public func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &generator)
    }
}

extension Duration {
    /// Whole milliseconds, for log lines and summaries.
    public var milliseconds: Int64 { components.seconds * 1_000 + components.attoseconds / 1_000_000_000_000_000 }

    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
