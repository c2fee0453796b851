/// The bounded hand-off between pollers and writers.
///
/// `push` suspends while the queue is full, which is the back-pressure that
/// stops polling when the writers (or the database) lag. `take` waits for the
/// first message, optionally until a deadline. After `close`, pushes are
/// refused and takers drain what is left, then get empty batches.
public actor MessageQueue {
    private var buffer: [InboundMessage] = []
    private var head = 0
    private let capacity: Int
    private var closed = false
    private var waitingPushers: [CheckedContinuation<Void, Never>] = []
    private var waitingTakers: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextTakerID = 0

    public init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    public var count: Int { buffer.count - head }
    public var isClosed: Bool { closed }

    /// Adds messages, waiting while the queue is full. Returns false once closed
    /// (the caller still owns the messages).
    @discardableResult
    public func push(_ messages: [InboundMessage]) async -> Bool {
        guard !messages.isEmpty else { return !closed }
        while !closed && count > 0 && count + messages.count > capacity {
            await withCheckedContinuation { waitingPushers.append($0) }
        }
        guard !closed else { return false }
        buffer.append(contentsOf: messages)
        wakeTakers()
        return true
    }

    /// Up to `maximum` messages: waits for at least one unless the queue is
    /// closed and empty, or `deadline` passes (then returns what it has, maybe none).
    public func take(maximum: Int, deadline: ContinuousClock.Instant? = nil) async -> [InboundMessage] {
        while count == 0 && !closed {
            if let deadline, deadline <= .now { return [] }
            let id = nextTakerID
            nextTakerID += 1
            if let deadline {
                Task { [weak self] in
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    await self?.wake(taker: id)
                }
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { waitingTakers[id] = $0 }
            } onCancel: {
                Task { [weak self] in await self?.wake(taker: id) }
            }
            if Task.isCancelled { return [] }
        }
        let available = min(maximum, count)
        let taken = Array(buffer[head..<(head + available)])
        head += available
        if head > 4096 && head * 2 > buffer.count {
            buffer.removeFirst(head)
            head = 0
        }
        let pushers = waitingPushers
        waitingPushers.removeAll()
        pushers.forEach { $0.resume() }
        return taken
    }

    /// No more messages will come; waiting pushers are released, takers drain.
    public func close() {
        closed = true
        let pushers = waitingPushers
        waitingPushers.removeAll()
        pushers.forEach { $0.resume() }
        wakeTakers()
    }

    private func wake(taker id: Int) {
        waitingTakers.removeValue(forKey: id)?.resume()
    }

    private func wakeTakers() {
        let takers = waitingTakers
        waitingTakers.removeAll()
        takers.values.forEach { $0.resume() }
    }
}
