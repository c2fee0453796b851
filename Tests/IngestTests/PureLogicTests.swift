import Foundation
import HostileInput
import Pseudonymization
import Testing
import VaultCrypto

@testable import Ingest

@Suite("Backoff")
struct BackoffTests {
    @Test("the ceiling doubles per attempt up to the cap")
    func ceiling() {
        let backoff = Backoff(base: .milliseconds(100), cap: .seconds(5))
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(100))
        #expect(backoff.ceiling(attempt: 1) == .milliseconds(200))
        #expect(backoff.ceiling(attempt: 5) == .milliseconds(3200))
        #expect(backoff.ceiling(attempt: 6) == .seconds(5))
        #expect(backoff.ceiling(attempt: 1000) == .seconds(5))
    }

    @Test("delays are jittered within [0, ceiling] and spread out")
    func jitter() {
        let backoff = Backoff(base: .milliseconds(100), cap: .seconds(5))
        var generator = SeededGenerator(seed: 1)
        let delays = (0..<1000).map { _ in backoff.delay(attempt: 3, using: &generator) }
        #expect(delays.allSatisfy { $0 >= .zero && $0 <= .milliseconds(800) })
        #expect(Set(delays).count > 900)
        #expect(delays.min()! < .milliseconds(100) && delays.max()! > .milliseconds(700))
    }
}

@Suite("Message queue")
struct MessageQueueTests {
    func messages(_ count: Int, from start: Int = 0) -> [InboundMessage] {
        (start..<(start + count)).map {
            InboundMessage(
                origin: .file, messageID: "line \($0)", receiptID: [UInt8(truncatingIfNeeded: $0)], body: [],
                sentTimestamp: 0, receiveCount: 1)
        }
    }

    @Test("first in, first out, in batches of at most the asked size")
    func order() async {
        let queue = MessageQueue(capacity: 100)
        await queue.push(messages(5))
        #expect(await queue.take(maximum: 3).map(\.messageID) == ["line 0", "line 1", "line 2"])
        #expect(await queue.take(maximum: 3).map(\.messageID) == ["line 3", "line 4"])
    }

    @Test("a full queue makes pushers wait until a taker makes room (back-pressure)")
    func backPressure() async throws {
        let queue = MessageQueue(capacity: 4)
        await queue.push(messages(4))
        let pushed = Task { await queue.push(self.messages(2, from: 4)) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(await queue.count == 4)
        _ = await queue.take(maximum: 2)
        #expect(await pushed.value)
        #expect(await queue.count == 4)
    }

    func bodies(_ sizes: [Int]) -> [InboundMessage] {
        sizes.enumerated().map { index, size in
            InboundMessage(
                origin: .file, messageID: "line \(index)", receiptID: [UInt8(index)], body: Array(repeating: 0x61, count: size),
                sentTimestamp: 0, receiveCount: 1)
        }
    }

    @Test("bytes in flight stay within the budget: pushers wait until writers release what they took")
    func byteBudget() async throws {
        let queue = MessageQueue(capacity: 1000, byteBudget: 1000)
        await queue.push(bodies([400, 400]))
        let pushed = Task { await queue.push(self.bodies([400])) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(await queue.count == 2)
        let taken = await queue.take(maximum: 10)
        try await Task.sleep(for: .milliseconds(50))
        #expect(await queue.count == 0)  // taken, but not released: still in flight
        await queue.release(taken)
        #expect(await pushed.value)
        #expect(await queue.bytesInFlight == 400)
    }

    @Test("one message larger than the budget still passes when nothing else is in flight")
    func oversizedMessage() async {
        let queue = MessageQueue(capacity: 10, byteBudget: 100)
        #expect(await queue.push(bodies([5000])))
        #expect(await queue.take(maximum: 10).count == 1)
    }

    @Test("take stops at the byte limit but always takes one message")
    func takeByBytes() async {
        let queue = MessageQueue(capacity: 100)
        await queue.push(bodies([300, 300, 300, 300]))
        #expect(await queue.take(maximum: 10, maximumBytes: 700).count == 2)
        #expect(await queue.take(maximum: 10, maximumBytes: 100).count == 1)
    }

    @Test("a receive reserves the worst case for as many messages as fit, and waits when none does")
    func receiveReservations() async throws {
        let queue = MessageQueue(capacity: 100, byteBudget: 10_000)
        let first = await queue.reserveReceive(maximum: 10, bytesPerMessage: 3000)
        #expect(first.count == 3 && first.reserved == 9000)
        let second = Task { await queue.reserveReceive(maximum: 10, bytesPerMessage: 3000) }
        try await Task.sleep(for: .milliseconds(50))
        await queue.push(bodies([200]), reserved: first.reserved)  // the receive brought less than reserved
        let granted = await second.value
        #expect(granted.count == 3)
        #expect(await queue.bytesInFlight == 200 + 9000)
        await queue.cancel(reserved: granted.reserved)
        #expect(await queue.bytesInFlight == 200)
    }

    @Test("take with a deadline returns empty when nothing comes")
    func deadline() async {
        let queue = MessageQueue(capacity: 4)
        let taken = await queue.take(maximum: 10, deadline: .now + .milliseconds(30))
        #expect(taken.isEmpty)
    }

    @Test("a waiting taker gets what arrives later")
    func wakeOnPush() async throws {
        let queue = MessageQueue(capacity: 4)
        let taker = Task { await queue.take(maximum: 10) }
        try await Task.sleep(for: .milliseconds(20))
        await queue.push(messages(2))
        #expect(await taker.value.count == 2)
    }

    @Test("close drains what is left, then gives empty batches, and refuses pushes")
    func close() async {
        let queue = MessageQueue(capacity: 10)
        await queue.push(messages(3))
        await queue.close()
        #expect(await queue.push(messages(1)) == false)
        #expect(await queue.take(maximum: 10).count == 3)
        #expect(await queue.take(maximum: 10).isEmpty)
    }

    @Test("close releases a taker that is waiting")
    func closeWakesTaker() async throws {
        let queue = MessageQueue(capacity: 10)
        let taker = Task { await queue.take(maximum: 10) }
        try await Task.sleep(for: .milliseconds(20))
        await queue.close()
        #expect(await taker.value.isEmpty)
    }
}

@Suite("Known-token cache")
struct KnownTokenCacheTests {
    let tokens: [String] = {
        let tokenizer = try! Tokenizer(key: try! TokenizationKeyring.generate(now: Date()).active)
        return (0..<1000).map { try! tokenizer.token(for: "10.0.\($0 / 256).\($0 % 256)", field: .ip) }
    }()

    @Test("remembers what was inserted (a slot collision only evicts), and never claims what was not")
    func membership() {
        let cache = KnownTokenCache(slotsLog2: 16)
        for token in tokens.prefix(500) {
            cache.insert([.init(token: token)])
            #expect(cache.contains(.init(token: token)))
        }
        // 500 tokens in 65,536 slots: a couple of collisions are expected, no more.
        #expect(tokens.prefix(500).filter { cache.contains(.init(token: $0)) }.count >= 490)
        #expect(!tokens.suffix(500).contains { cache.contains(.init(token: $0)) })
    }

    @Test("tokens that differ only in field or version have different fingerprints")
    func fingerprints() {
        let mac = String(repeating: "Q", count: 20) + String(repeating: "w", count: 23)
        #expect(
            KnownTokenCache.Fingerprint(token: "ip_t1_" + mac) == KnownTokenCache.Fingerprint(token: "dev_t2_" + mac),
            "the fingerprint reads only the MAC, which already differs per field and version")
        #expect(KnownTokenCache.Fingerprint(token: "ip_t1_" + mac) != KnownTokenCache.Fingerprint(token: "ip_t1_R" + mac.dropFirst()))
    }
}

@Suite("In-flight tokens")
struct InFlightTokensTests {
    let fingerprints = (0..<4).map { KnownTokenCache.Fingerprint(token: "ip_t1_" + String(repeating: Character("\($0)"), count: 43)) }

    @Test("a token another open batch claimed first names that batch; its outcome is awaited, and released claims are free again")
    func claims() async {
        let tokens = InFlightTokens()
        let first = InFlightTokens.Batch()
        let second = InFlightTokens.Batch()
        #expect(tokens.claim(Array(fingerprints[0...1]), for: first).isEmpty)
        let contended = tokens.claim(Array(fingerprints[1...2]), for: second)
        #expect(contended.count == 1 && contended[0] === first)
        #expect(await first.committed(by: .now + .milliseconds(20)) == nil, "still open")
        tokens.release(Array(fingerprints[0...1]), of: first, committed: true)
        #expect(await first.committed(by: .now) == true)
        // The first batch's claims are gone; the second's stay until it ends.
        let third = InFlightTokens.Batch()
        let later = tokens.claim(Array(fingerprints[1...3]), for: third)
        #expect(later.count == 1 && later[1] === second)
        tokens.release(Array(fingerprints[1...2]), of: second, committed: false)
        #expect(await second.committed(by: .now) == false)
    }

    @Test("a batch marked not committed (split to isolate a refused row) stays so when it later commits")
    func firstOutcomeWins() async {
        let batch = InFlightTokens.Batch()
        batch.finish(committed: false)
        InFlightTokens().release([], of: batch, committed: true)
        #expect(await batch.committed(by: .now) == false)
    }
}

@Suite("File lines")
struct LineReaderTests {
    func lines(_ text: [UInt8], limit: Int = 1 << 20) throws -> [(bytes: [UInt8], length: Int)] {
        let path = NSTemporaryDirectory() + "lines-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: Data(text))
        let descriptor = open(path, O_RDONLY)
        defer { close(descriptor) }
        var reader = LineReader(descriptor: descriptor, limit: limit)
        var result: [(bytes: [UInt8], length: Int)] = []
        while let line = try reader.next() { result.append(line) }
        return result
    }

    @Test("newlines, CRLF, NUL bytes, a last line without newline, blank lines")
    func splitting() throws {
        let read = try lines(Array("a\r\nb\u{0}c\n\nlast".utf8))
        #expect(read.map(\.bytes) == [Array("a".utf8), [0x62, 0, 0x63], [], Array("last".utf8)])
        #expect(read.map(\.length) == [1, 3, 0, 4])
    }

    @Test("a line longer than the limit is cut, its length counted, and the next line read whole")
    func longLine() throws {
        let long = [UInt8](repeating: 0x78, count: 200_000)
        let read = try lines(long + [0x0a] + Array("next\n".utf8), limit: 1000)
        #expect(read.count == 2)
        #expect(read[0].bytes.count == 1000 && read[0].length == 200_000)
        #expect(read[1].bytes == Array("next".utf8))
    }
}

@Suite("Message size estimate")
struct MessageSizeEstimateTests {
    @Test("starts at the queue's maximum, decays toward the floor while bodies are small, jumps back at once")
    func adapts() {
        let estimate = MessageSizeEstimate(ceiling: 1 << 20, floor: 64 << 10)
        #expect(estimate.current == 1 << 20)
        for _ in 0..<40 { estimate.observe(largest: 200) }
        #expect(estimate.current < (64 << 10) + 1024)
        #expect(estimate.current >= 64 << 10)
        estimate.observe(largest: 900_000)
        #expect(estimate.current == 900_000)
        estimate.observe(largest: 5 << 20)
        #expect(estimate.current == 1 << 20)
    }
}

@Suite("Stall clock")
struct StallClockTests {
    @Test(
        "ingest_stalled_seconds: 0 when nothing is held; grows from the first message held while nothing commits; a commit restarts it; written, skipped and quarantined messages all count as done"
    )
    func stall() async throws {
        let statistics = IngestStatistics()
        #expect(statistics.stalledSeconds() == 0)
        statistics.received(3)
        let later = ContinuousClock.now + .seconds(90)
        #expect(statistics.stalledSeconds(at: later) >= 89.9)
        #expect(statistics.stalledSeconds(at: later + .seconds(60)) >= 149.9, "keeps growing while nothing commits")
        statistics.committed(rows: 1, duplicates: 0, quarantined: [:], duration: .zero, oldestSentAt: nil)
        #expect(statistics.stalledSeconds(at: .now + .seconds(1)) < 60, "a commit restarts the clock while messages are still held")
        statistics.committed(rows: 0, duplicates: 1, quarantined: ["invalid_json": 1], duration: .zero, oldestSentAt: nil)
        #expect(statistics.stalledSeconds(at: later) == 0, "nothing held: 0, however long since the last commit")
    }
}
