import Synchronization
import VaultCrypto

/// The tokens of recently tokenized values, so a KMS-held key costs a KMS call
/// only for values not seen lately. Least recently used entries go first.
///
/// An entry is keyed by HMAC-SHA256, under a random key made for this process,
/// of the token's key version and MAC input: the cache never holds a value,
/// and its keys mean nothing once the process and that key are gone. What it
/// maps to is the token's MAC, which the database holds anyway. Evicted slots
/// are overwritten by the next entry; everything is zeroed when the cache goes.
/// Thread-safe: the writers of one process share it.
public final class TokenCache: Sendable {
    public let capacity: Int
    /// The key entries are looked up by (never leaves the process).
    let digestKey: SecureBytes
    private let state: Mutex<LeastRecentlyUsed>

    public init(capacity: Int) throws {
        self.capacity = max(capacity, 0)
        digestKey = try .random(count: 32)
        state = Mutex(LeastRecentlyUsed(capacity: max(capacity, 0)))
    }

    deinit { state.withLock { $0.wipe() } }

    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var misses = 0
        public var entries = 0
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    func lookup(_ digest: SIMD4<UInt64>) -> SIMD4<UInt64>? { state.withLock { $0.lookup(digest) } }

    func insert(_ digest: SIMD4<UInt64>, mac: SIMD4<UInt64>) { state.withLock { $0.insert(digest, mac) } }
}

/// A fixed-capacity LRU map of 32-byte keys to 32-byte values in flat arrays
/// (one slot per entry, linked newest to oldest by index).
struct LeastRecentlyUsed {
    private let capacity: Int
    private var slots: [SIMD4<UInt64>: Int32] = [:]
    private var keys: [SIMD4<UInt64>] = []
    private var values: [SIMD4<UInt64>] = []
    private var older: [Int32] = []
    private var newer: [Int32] = []
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    private(set) var statistics = TokenCache.Statistics()

    init(capacity: Int) {
        self.capacity = capacity
        slots.reserveCapacity(min(capacity, 1 << 16))
    }

    mutating func lookup(_ key: SIMD4<UInt64>) -> SIMD4<UInt64>? {
        guard let slot = slots[key] else {
            statistics.misses += 1
            return nil
        }
        statistics.hits += 1
        touch(slot)
        return values[Int(slot)]
    }

    mutating func insert(_ key: SIMD4<UInt64>, _ value: SIMD4<UInt64>) {
        guard capacity > 0 else { return }
        if let slot = slots[key] {
            values[Int(slot)] = value
            touch(slot)
            return
        }
        let slot: Int32
        if keys.count < capacity {
            slot = Int32(keys.count)
            keys.append(key)
            values.append(value)
            older.append(-1)
            newer.append(-1)
        } else {
            slot = oldest
            unlink(slot)
            slots.removeValue(forKey: keys[Int(slot)])
            keys[Int(slot)] = key
            values[Int(slot)] = value
        }
        slots[key] = slot
        pushNewest(slot)
        statistics.entries = slots.count
    }

    mutating func wipe() {
        for index in keys.indices {
            keys[index] = .zero
            values[index] = .zero
        }
        slots.removeAll()
        statistics.entries = 0
    }

    private mutating func touch(_ slot: Int32) {
        guard slot != newest else { return }
        unlink(slot)
        pushNewest(slot)
    }

    private mutating func unlink(_ slot: Int32) {
        let before = older[Int(slot)]
        let after = newer[Int(slot)]
        if before >= 0 { newer[Int(before)] = after } else { oldest = after }
        if after >= 0 { older[Int(after)] = before } else { newest = before }
        older[Int(slot)] = -1
        newer[Int(slot)] = -1
    }

    private mutating func pushNewest(_ slot: Int32) {
        older[Int(slot)] = newest
        newer[Int(slot)] = -1
        if newest >= 0 { newer[Int(newest)] = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
