import Foundation
import Pseudonymization
import TestSupport
import Testing
import VaultCrypto

@testable import KeyCustody

/// The LRU in front of KMS: what it keeps, what it evicts first, and that a
/// minter using it gives the same tokens while calling KMS only for values
/// it has not seen.
@Suite("Token cache")
struct TokenCacheTests {
    func key(_ n: UInt64) -> SIMD4<UInt64> { SIMD4(n, n &* 31, 7, 9) }

    @Test("least recently used goes first; a lookup counts as use; hits, misses and entries are counted")
    func evictionOrder() throws {
        let cache = try TokenCache(capacity: 3)
        for n: UInt64 in 1...3 { cache.insert(key(n), mac: key(n + 100)) }
        #expect(cache.lookup(key(1)) == key(101))  // 1 is now the newest
        cache.insert(key(4), mac: key(104))  // evicts 2, the least recently used
        #expect(cache.lookup(key(2)) == nil)
        #expect(cache.lookup(key(3)) == key(103))
        cache.insert(key(5), mac: key(105))  // evicts 1 (3 was just used)
        #expect(cache.lookup(key(1)) == nil)
        #expect([3, 4, 5].allSatisfy { cache.lookup(key($0)) == key($0 + 100) })
        #expect(cache.statistics == TokenCache.Statistics(hits: 5, misses: 2, entries: 3))
    }

    @Test("re-inserting a key updates it in place, without evicting another")
    func reinsert() throws {
        let cache = try TokenCache(capacity: 2)
        cache.insert(key(1), mac: key(101))
        cache.insert(key(2), mac: key(102))
        cache.insert(key(1), mac: key(201))
        #expect(cache.lookup(key(1)) == key(201) && cache.lookup(key(2)) == key(102))
        #expect(cache.statistics.entries == 2)
    }

    @Test("capacity 0 keeps nothing; capacity 1 keeps the last")
    func tinyCapacities() throws {
        let none = try TokenCache(capacity: 0)
        none.insert(key(1), mac: key(101))
        #expect(none.lookup(key(1)) == nil && none.statistics.entries == 0)
        let one = try TokenCache(capacity: 1)
        one.insert(key(1), mac: key(101))
        one.insert(key(2), mac: key(102))
        #expect(one.lookup(key(1)) == nil && one.lookup(key(2)) == key(102))
    }

    @Test("many inserts through a small cache: always exactly the newest `capacity` keys")
    func churn() throws {
        let cache = try TokenCache(capacity: 64)
        for n: UInt64 in 0..<10_000 { cache.insert(key(n), mac: key(n)) }
        #expect((9_936..<10_000).allSatisfy { cache.lookup(key(UInt64($0))) == key(UInt64($0)) })
        #expect(cache.lookup(key(9_935)) == nil)
        #expect(cache.statistics.entries == 64)
    }

    @Test("a KMS minter with a cache: same tokens as boto3's MACs, repeated values cost one call, the second pass costs none")
    func minterUsesCache() async throws {
        let arn = try await TestKMS.createHMACKey()
        let keyring = try TokenizationKeyring.generate(now: Date(), material: .awsKMS(keyID: arn))
        let cache = try TokenCache(capacity: 100)
        let minter = try TokenMinter(keyring: keyring, kms: try TestKMS.client(), cache: cache)
        let requests = (0..<20).map { TokenRequest(field: .ip, value: "10.0.0.\($0 % 10)") }
        let first = try await minter.tokens(requests, version: 1)
        #expect(cache.statistics == TokenCache.Statistics(hits: 0, misses: 20, entries: 10))
        let second = try await minter.tokens(requests, version: 1)
        #expect(first == second && cache.statistics.hits == 20)
        let macs = try await TestKMS.generateMacs(keyID: arn, messages: requests.prefix(10).map(TokenFormat.macInput))
        #expect(Array(first.prefix(10)) == zip(macs, requests).map { TokenFormat.token(mac: $0, field: $1.field, version: 1) })
        // Another field, same text: another token, and not a cache hit.
        let device = try await minter.token(TokenRequest(field: .deviceID, value: "10.0.0.1"), version: 1)
        #expect(device != first[1] && cache.statistics.misses == 21)
    }
}
