import DequeModule

/// The bounded hand-off between pollers and writers, bounded twice: by the
/// number of messages waiting, and by the bytes of message bodies in flight.
///
/// Bytes are in flight from the moment a receive is reserved for them until a
/// writer has committed and acknowledged them (`release`), so the budget covers
/// what the pollers are fetching, what waits here and what the writers hold.
/// A receive reserves the most its messages could take (the queue's maximum
/// message size each) and asks for only as many messages as fit; a file source
/// charges each line as it reads it. Either waits while the budget is spent,
/// which is the back-pressure that stops polling when the writers (or the
/// database) lag. One message always fits, however large, when nothing else is
/// in flight. After `close`, pushes are refused and takers drain what is left,
/// then get empty batches.
public actor MessageQueue {
    /// A taken message leaves at once: nothing here keeps a body alive after a writer released it.
    private var buffer = Deque<InboundMessage>()
    private let capacity: Int
    public let byteBudget: Int
    /// Body bytes received, reserved for a receive, or held by a writer.
    public private(set) var bytesInFlight = 0
    private var closed = false
    /// Pushers and reservers waiting for room; they check again when woken.
    private var waitingForRoom: [CheckedContinuation<Void, Never>] = []
    private var waitingTakers: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextTakerID = 0

    public init(capacity: Int, byteBudget: Int = .max) {
        self.capacity = max(capacity, 1)
        self.byteBudget = max(byteBudget, 1)
    }

    public var count: Int { buffer.count }
    public var isClosed: Bool { closed }

    private func fits(_ bytes: Int) -> Bool { bytesInFlight == 0 || bytesInFlight + bytes <= byteBudget }

    /// Reserves room for a receive of up to `maximum` messages of at most
    /// `bytesPerMessage` each: waits until one fits, then reserves as many as
    /// fit. Returns how many to ask for (0 once closed) and the bytes reserved,
    /// which the caller hands to `push`, or to `cancel` if the receive fails.
    public func reserveReceive(maximum: Int, bytesPerMessage: Int) async -> (count: Int, reserved: Int) {
        while !closed && !fits(bytesPerMessage) { await waitForRoom() }
        guard !closed else { return (0, 0) }
        let free = byteBudget - bytesInFlight
        let count = max(1, min(maximum, free / max(bytesPerMessage, 1)))
        bytesInFlight += count * bytesPerMessage
        return (count, count * bytesPerMessage)
    }

    /// Gives back a reservation whose receive failed.
    public func cancel(reserved: Int) {
        bytesInFlight -= reserved
        wakeWaitingForRoom()
    }

    /// Adds messages, waiting while the queue is full. Messages received under
    /// a reservation replace it; others wait for their bytes to fit. Returns
    /// false once closed (the caller still owns the messages).
    @discardableResult
    public func push(_ messages: [InboundMessage], reserved: Int = 0) async -> Bool {
        let bytes = messages.reduce(0) { $0 + $1.body.count }
        if reserved > 0 {
            bytesInFlight += bytes - reserved
            wakeWaitingForRoom()
        } else {
            while !closed && !fits(bytes) { await waitForRoom() }
            guard !closed else { return false }
            bytesInFlight += bytes
        }
        while !closed && count > 0 && count + messages.count > capacity { await waitForRoom() }
        guard !closed, !messages.isEmpty else {
            if closed { release(bytes: bytes) }
            return !closed
        }
        buffer.append(contentsOf: messages)
        wakeTakers()
        return true
    }

    /// Up to `maximum` messages and `maximumBytes` of bodies (at least one
    /// message): waits for the first unless the queue is closed and empty, or
    /// `deadline` passes (then returns what it has, maybe none).
    public func take(maximum: Int, maximumBytes: Int = .max, deadline: ContinuousClock.Instant? = nil) async -> [InboundMessage] {
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
        var taken: [InboundMessage] = []
        var bytes = 0
        while taken.count < maximum, let next = buffer.first, taken.isEmpty || bytes + next.body.count <= maximumBytes {
            bytes += next.body.count
            taken.append(buffer.removeFirst())
        }
        wakeWaitingForRoom()
        return taken
    }

    /// A writer is done with `messages` (committed and acknowledged, or given
    /// up on): their bytes leave the budget.
    public func release(_ messages: [InboundMessage]) {
        release(bytes: messages.reduce(0) { $0 + $1.body.count })
    }

    private func release(bytes: Int) {
        bytesInFlight -= bytes
        wakeWaitingForRoom()
    }

    /// No more messages will come; waiting pushers are released, takers drain.
    public func close() {
        closed = true
        wakeWaitingForRoom()
        wakeTakers()
    }

    private func waitForRoom() async {
        await withCheckedContinuation { waitingForRoom.append($0) }
    }

    private func wakeWaitingForRoom() {
        let waiting = waitingForRoom
        waitingForRoom.removeAll()
        for continuation in waiting { continuation.resume() }
    }

    private func wake(taker id: Int) {
        waitingTakers.removeValue(forKey: id)?.resume()
    }

    private func wakeTakers() {
        let takers = waitingTakers
        waitingTakers.removeAll()
        for continuation in takers.values { continuation.resume() }
    }
}
