public import AWS
import Metrics
public import Pseudonymization
public import VaultCrypto

/// Computes tokens under the versions of a tokenization keyring, wherever
/// each version's key lives: a local key with a reused HMAC context; a KMS
/// key with `GenerateMac`, through the cache when there is one, the misses of
/// a call sent concurrently (each distinct value once). Same inputs, same
/// text: a token does not say where its key is.
///
/// Not thread-safe (its HMAC contexts): one per task.
public final class TokenMinter {
    public let keyring: TokenizationKeyring
    private let kms: KMSClient?
    private let cache: TokenCache?
    private let maximumConcurrentCalls: Int
    private var tokenizers: [Int: Tokenizer] = [:]
    private var suppressionMAC: HMACSHA256?
    /// Keyed with the cache's key (or one of its own without a cache): what
    /// entries are looked up and a call's repeated values merged by.
    private let digest: HMACSHA256
    private var digestOutput = [UInt8](repeating: 0, count: HMACSHA256.byteCount)
    private let kmsCalls = Counter(label: "ingest_kms_requests_total", dimensions: [("operation", "GenerateMac")])
    /// `GenerateMac` calls this minter has made.
    public private(set) var kmsRequests = 0
    private let cacheHits = Counter(label: "ingest_token_cache_lookups_total", dimensions: [("result", "hit")])
    private let cacheMisses = Counter(label: "ingest_token_cache_lookups_total", dimensions: [("result", "miss")])

    /// `kms` is needed only if the keyring has a KMS-held version.
    public init(keyring: TokenizationKeyring, kms: KMSClient?, cache: TokenCache? = nil, maximumConcurrentCalls: Int = 16) throws {
        self.keyring = keyring
        self.kms = kms
        self.cache = cache
        self.maximumConcurrentCalls = max(maximumConcurrentCalls, 1)
        digest = try HMACSHA256(key: cache?.digestKey ?? .random(count: 32))
    }

    /// The token of each request under tokenization key `version`, in order.
    public func tokens(_ requests: [TokenRequest], version: Int) async throws -> [String] {
        let key = try key(version)
        switch key.material {
        case .local:
            let tokenizer = try tokenizer(key)
            return try requests.map { try tokenizer.token(for: $0.value, field: $0.field) }
        case .awsKMS(let keyID):
            let macs = try await kmsMacs(requests.map(TokenFormat.macInput), keyID: keyID, cacheVersion: version, useCache: true)
            return zip(macs, requests).map { TokenFormat.token(mac: $0, field: $1.field, version: version) }
        }
    }

    /// Whether the key files hold the suppression key (key sets made before it existed do not).
    public var hasSuppressionKey: Bool { keyring.suppression != nil }

    /// The suppression tag of each request's (canonical) value, in order:
    /// HMAC-SHA256 under the suppression key, which never rotates, of
    /// `TokenFormat.suppressionMACInput`. A KMS-held suppression key is asked
    /// through the cache like tokens (cached under version 0).
    public func suppressionTags(_ requests: [TokenRequest]) async throws -> [[UInt8]] {
        guard let key = keyring.suppression else {
            throw KeyFileError(
                .missing,
                "the tokenization key file has no suppression key (a key set made before it existed): add one with `vault keys rotate --suppression`, then distribute tokenization.json"
            )
        }
        switch key.material {
        case .local(let secret):
            if suppressionMAC == nil { suppressionMAC = try HMACSHA256(key: secret) }
            return try requests.map { try suppressionMAC!.authenticationCode(for: TokenFormat.suppressionMACInput($0)) }
        case .awsKMS(let keyID):
            return try await kmsMacs(requests.map(TokenFormat.suppressionMACInput), keyID: keyID, cacheVersion: 0, useCache: true)
        }
    }

    public func token(_ request: TokenRequest, version: Int) async throws -> String {
        try await tokens([request], version: version)[0]
    }

    /// The tokens erased entries move to under `version` (`Tokenizer.token(forErased:field:)`).
    public func erasedTokens(_ oldTokens: [(token: String, field: PIIField)], version: Int) async throws -> [String] {
        let key = try key(version)
        switch key.material {
        case .local:
            let tokenizer = try tokenizer(key)
            return try oldTokens.map { try tokenizer.token(forErased: $0.token, field: $0.field) }
        case .awsKMS(let keyID):
            let macs = try await kmsMacs(
                oldTokens.map { TokenFormat.erasedMACInput(oldToken: $0.token, field: $0.field) }, keyID: keyID, cacheVersion: version,
                useCache: false)
            return zip(macs, oldTokens).map { TokenFormat.token(mac: $0, field: $1.field, version: version) }
        }
    }

    /// What the database registers for `key` (`tokenizationFingerprintInput`'s MAC under it).
    public static func fingerprint(of key: TokenizationKey, kms: KMSClient?) async throws -> [UInt8] {
        switch key.material {
        case .local: return try key.localTokenizationFingerprint()
        case .awsKMS(let keyID):
            return try await requireKMS(kms, version: key.version).generateMac(keyID: keyID, message: key.tokenizationFingerprintInput)
        }
    }

    /// What the database registers for the suppression key (kind "suppression", version 1).
    public static func suppressionFingerprint(of key: MACKeyVersion, kms: KMSClient?) async throws -> [UInt8] {
        let input = key.fingerprintInput(kind: "suppression")
        switch key.material {
        case .local(let secret): return try HMACSHA256(key: secret).authenticationCode(for: input)
        case .awsKMS(let keyID): return try await requireKMS(kms, version: key.version).generateMac(keyID: keyID, message: input)
        }
    }

    /// Every version's fingerprint, by version.
    public static func fingerprints(of keyring: TokenizationKeyring, kms: KMSClient?) async throws -> [Int: [UInt8]] {
        var fingerprints: [Int: [UInt8]] = [:]
        for key in keyring.keys { fingerprints[key.version] = try await fingerprint(of: key, kms: kms) }
        return fingerprints
    }

    // MARK: Internals

    private func key(_ version: Int) throws -> TokenizationKey {
        guard let key = keyring.key(version: version) else {
            throw KeyFileError(.unknownVersion, "there is no tokenization key v\(version) in the key file")
        }
        return key
    }

    private func tokenizer(_ key: TokenizationKey) throws -> Tokenizer {
        if let tokenizer = tokenizers[key.version] { return tokenizer }
        let tokenizer = try Tokenizer(key: key)
        tokenizers[key.version] = tokenizer
        return tokenizer
    }

    private static func requireKMS(_ kms: KMSClient?, version: Int) throws -> KMSClient {
        guard let kms else {
            throw KeyFileError(
                .refused, "tokenization key v\(version) is held in AWS KMS, and this process was started without a KMS client")
        }
        return kms
    }

    /// The MAC of each input under the KMS key `keyID`: cached ones from the
    /// cache (under `cacheVersion`), the distinct rest by concurrent `GenerateMac`.
    private func kmsMacs(_ inputs: [[UInt8]], keyID: String, cacheVersion: Int, useCache: Bool) async throws -> [[UInt8]] {
        let kms = try Self.requireKMS(kms, version: cacheVersion)
        var macs = [SIMD4<UInt64>?](repeating: nil, count: inputs.count)
        // Distinct inputs not in the cache, and where each one's MAC goes.
        var missing: [SIMD4<UInt64>: [Int]] = [:]
        var order: [(digest: SIMD4<UInt64>, input: [UInt8])] = []
        for (index, input) in inputs.enumerated() {
            let key = try digest(of: input, version: cacheVersion)
            if useCache, let cache, let mac = cache.lookup(key) {
                macs[index] = mac
                cacheHits.increment()
                continue
            }
            if useCache, cache != nil { cacheMisses.increment() }
            if missing[key] == nil { order.append((key, input)) }
            missing[key, default: []].append(index)
        }
        let computed = try await Self.generateMacs(
            kms, keyID: keyID, inputs: order.map(\.input), concurrency: maximumConcurrentCalls)
        kmsCalls.increment(by: Int64(order.count))
        kmsRequests += order.count
        for ((key, _), bytes) in zip(order, computed) {
            let mac = Self.words(bytes)
            if useCache { cache?.insert(key, mac: mac) }
            for index in missing[key]! { macs[index] = mac }
        }
        return macs.map { Self.bytes($0!) }
    }

    private func digest(of input: [UInt8], version: Int) throws -> SIMD4<UInt64> {
        try digest.reset()
        var versionBytes = UInt32(version).bigEndian
        try withUnsafeBytes(of: &versionBytes) { try digest.update($0) }
        try input.withUnsafeBytes { try digest.update($0) }
        try digestOutput.withUnsafeMutableBytes { try digest.finalize(into: $0) }
        return Self.words(digestOutput)
    }

    /// `GenerateMac` for each input, at most `concurrency` at a time; MACs in input order.
    private static func generateMacs(_ kms: KMSClient, keyID: String, inputs: [[UInt8]], concurrency: Int) async throws -> [[UInt8]] {
        try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var results = [[UInt8]](repeating: [], count: inputs.count)
            var next = 0
            func start() {
                let index = next
                group.addTask { (index, try await kms.generateMac(keyID: keyID, message: inputs[index])) }
                next += 1
            }
            while next < min(concurrency, inputs.count) { start() }
            while let (index, mac) = try await group.next() {
                results[index] = mac
                if next < inputs.count { start() }
            }
            return results
        }
    }

    private static func words(_ bytes: [UInt8]) -> SIMD4<UInt64> {
        bytes.withUnsafeBytes { raw in
            SIMD4(
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
    }

    private static func bytes(_ words: SIMD4<UInt64>) -> [UInt8] {
        withUnsafeBytes(of: words) { Array($0) }
    }
}
