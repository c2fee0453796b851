import Synchronization

/// Counters of what the service did, shared by its tasks.
public final class IngestStatistics: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var received = 0
        public var written = 0
        public var quarantined: [String: Int] = [:]
        public var duplicates = 0
        public var unknownFields = 0
        public var databaseRetries = 0
        public var queueRetries = 0
        public var deleteFailures = 0
        public var dataKeysCreated = 0

        public var quarantinedTotal: Int { quarantined.values.reduce(0, +) }
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ body: (inout Snapshot) -> Void) {
        state.withLock { body(&$0) }
    }
}
