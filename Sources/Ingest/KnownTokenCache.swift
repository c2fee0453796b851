import Synchronization

/// Remembers which tokens are already in the vault, so repeated IPs and device
/// ids are neither sealed again nor offered to the database again.
///
/// A direct-mapped table of 124-bit fingerprints (read straight from the
/// base64url HMAC inside the token): fixed memory (16 bytes × slots), no
/// allocation per entry, a collision only evicts. A stale "no" costs one
/// redundant, idempotent insert; a wrong "yes" would need two tokens sharing
/// 124 HMAC bits, which does not happen.
/// Entries are added only after the transaction that stored them committed.
public final class KnownTokenCache: Sendable {
    public struct Fingerprint: Hashable, Sendable {
        let high: UInt64
        let low: UInt64

        /// From the first 21 characters (126 bits) of the token's base64url MAC.
        /// The MAC already depends on the field and the key version.
        public init(token: String) {
            var high: UInt64 = 0
            var low: UInt64 = 0
            var token = token
            token.withUTF8 { utf8 in
                let start = max(utf8.count - 43, 0)
                for position in 0..<min(21, utf8.count - start) {
                    let sextet = UInt64(Self.sextet(utf8[start + position]))
                    if position < 10 { high = high << 6 | sextet } else { low = low << 6 | sextet }
                }
            }
            self.high = high
            self.low = low
        }

        private static func sextet(_ character: UInt8) -> UInt8 {
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): return character - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): return character - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): return 62
            default: return 63
            }
        }
    }

    private struct Table {
        var high: [UInt64]
        var low: [UInt64]
    }

    private let table: Mutex<Table>
    private let mask: Int

    /// - Parameter slotsLog2: 2^slotsLog2 slots (18 → 262 144 slots, 4 MiB).
    public init(slotsLog2: Int = 18) {
        let slots = 1 << slotsLog2
        mask = slots - 1
        table = Mutex(Table(high: [UInt64](repeating: 0, count: slots), low: [UInt64](repeating: 0, count: slots)))
    }

    public func contains(_ fingerprint: Fingerprint) -> Bool {
        let slot = Int(truncatingIfNeeded: fingerprint.low) & mask
        return table.withLock { $0.high[slot] == fingerprint.high && $0.low[slot] == fingerprint.low }
    }

    public func insert(_ fingerprints: some Sequence<Fingerprint>) {
        table.withLock { table in
            for fingerprint in fingerprints {
                let slot = Int(truncatingIfNeeded: fingerprint.low) & mask
                table.high[slot] = fingerprint.high
                table.low[slot] = fingerprint.low
            }
        }
    }
}

/// The new tokens of open batches, across this process's writers. A token
/// another open batch is storing is contended: the later batch leaves it out
/// and, before it commits, waits for the earlier batch's outcome; only if
/// that batch did not commit does it insert the token itself. So two writers
/// never insert the same token, and neither fails its COPY on the other's.
final class InFlightTokens: Sendable {
    /// One batch's claim; the batches contending for its tokens wait on its outcome.
    final class Batch: Sendable {
        private let outcome = Mutex<Bool?>(nil)

        func finish(committed: Bool) { outcome.withLock { $0 = $0 ?? committed } }

        /// Whether the batch committed; nil if it is still open at `deadline`.
        func committed(by deadline: ContinuousClock.Instant) async -> Bool? {
            while true {
                if let done = outcome.withLock({ $0 }) { return done }
                if ContinuousClock.now >= deadline { return nil }
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    private let owners = Mutex<[KnownTokenCache.Fingerprint: Batch]>([:])

    /// Registers a batch's new tokens; returns the owners of those another
    /// open batch registered first (by index into `fingerprints`).
    func claim(_ fingerprints: [KnownTokenCache.Fingerprint], for batch: Batch) -> [Int: Batch] {
        owners.withLock { owners in
            var contended: [Int: Batch] = [:]
            for (index, fingerprint) in fingerprints.enumerated() {
                if let owner = owners[fingerprint] { contended[index] = owner } else { owners[fingerprint] = batch }
            }
            return contended
        }
    }

    /// Ends a batch's claims: committed, or given up.
    func release(_ fingerprints: [KnownTokenCache.Fingerprint], of batch: Batch, committed: Bool) {
        owners.withLock { owners in
            for fingerprint in fingerprints where owners[fingerprint] === batch { owners[fingerprint] = nil }
        }
        batch.finish(committed: committed)
    }
}
