import KeyCustody
import Pseudonymization
import Storage
import VaultCrypto

/// Turns messages into batch items: validates, tokenizes, seals the originals
/// that are not in the vault yet, seals the bodies of rejected messages.
/// CPU only, no I/O except asking the data key manager for a lease.
/// Owned by one writer (its crypto contexts are not thread-safe).
final class MessageProcessor {
    private let keys: IngestKeys
    private let tokenCache: TokenCache?
    private var minter: TokenMinter
    /// The key files `minter` was made from.
    private var minterKeys: IngestKeys.Snapshot
    private let knownTokens: KnownTokenCache
    private let maximumReceiveCount: Int
    private let statistics: IngestStatistics
    private var sealer: VaultSealer?

    init(
        keys: IngestKeys, tokenCache: TokenCache?, knownTokens: KnownTokenCache, maximumReceiveCount: Int, statistics: IngestStatistics
    ) throws {
        self.keys = keys
        self.tokenCache = tokenCache
        minterKeys = keys.current
        minter = try TokenMinter(keyring: minterKeys.keyring, kms: try keys.kmsClient(for: minterKeys.keyring), cache: tokenCache)
        self.knownTokens = knownTokens
        self.maximumReceiveCount = maximumReceiveCount
        self.statistics = statistics
    }

    /// The key versions the last batch was made with.
    private(set) var keyVersions = BatchWriter.KeyVersions(tokenization: 0, recovery: 0)

    /// How much of an oversized body is kept (sealed): enough to see what it
    /// was; its length and SHA-256 say the rest.
    static let keptPrefixBytes = 4096

    struct Output {
        var items: [BatchItem]
        /// Tokens this batch stores; remembered once it commits.
        var newTokens: [KnownTokenCache.Fingerprint]
    }

    /// Processes with the active tokenization key of the current key files:
    /// validates every message, tokenizes the batch's values in one call (a
    /// KMS-held key's misses go out concurrently), then seals what is new.
    /// A KMS failure throws before anything is built: no row without its token.
    func process(_ messages: [InboundMessage], dataKeys: DataKeyManager) async throws -> Output {
        let current = keys.current
        if current.fingerprint != minterKeys.fingerprint {
            minter = try TokenMinter(keyring: current.keyring, kms: try keys.kmsClient(for: current.keyring), cache: tokenCache)
            minterKeys = current
        }
        let version = current.keyring.active.version
        enum Step {
            case login(ValidatedLogin)
            case rejected(Rejection)
        }
        var steps: [Step] = []
        steps.reserveCapacity(messages.count)
        var requests: [TokenRequest] = []
        requests.reserveCapacity(messages.count * 2)
        var unknownFields = 0
        for message in messages {
            if message.isCut {
                steps.append(
                    .rejected(
                        Rejection(
                            .bodyTooLarge,
                            "the line has \(message.byteCount) bytes, more than the \(message.body.count) a message may have; its first \(Self.keptPrefixBytes) bytes are sealed here"
                        )))
                continue
            }
            if message.receiveCount > maximumReceiveCount {
                steps.append(
                    .rejected(
                        Rejection(
                            .tooManyDeliveries,
                            "delivered \(message.receiveCount) times, more than the \(maximumReceiveCount) allowed")))
                continue
            }
            do {
                let login = try LoginMessage.validate(message.body)
                unknownFields += login.unknownFieldCount
                requests.append(TokenRequest(field: .ip, value: login.ip))
                requests.append(TokenRequest(field: .deviceID, value: login.deviceID))
                steps.append(.login(login))
            } catch {
                steps.append(.rejected(error))
            }
        }
        if unknownFields > 0 { statistics.unknownFields(unknownFields) }
        let requestsBefore = minter.kmsRequests
        let tokens = try await minter.tokens(requests, version: version)
        statistics.kmsRequests(minter.kmsRequests - requestsBefore)
        keyVersions = BatchWriter.KeyVersions(tokenization: version, recovery: current.recovery.active.version)

        // The tokens this batch must seal: not known to be stored, first occurrence only.
        var pending = Set<String>()
        var sealsNeeded = 0
        var newValues: [(token: String, request: TokenRequest)] = []
        for (token, request) in zip(tokens, requests)
        where !knownTokens.contains(.init(token: token)) && pending.insert(token).inserted {
            sealsNeeded += 1
            newValues.append((token, request))
        }
        for step in steps { if case .rejected = step { sealsNeeded += 1 } }
        // Each new value's suppression tag: the batch writer leaves out those `vault forget` erased.
        var suppressionTags: [String: [UInt8]] = [:]
        if minter.hasSuppressionKey, !newValues.isEmpty {
            let tags = try await minter.suppressionTags(newValues.map(\.request))
            for (new, tag) in zip(newValues, tags) { suppressionTags[new.token] = tag }
        }

        let sealer = try await sealer(for: dataKeys.lease(encryptions: max(sealsNeeded, 1)))
        var output = Output(items: [], newTokens: [])
        output.items.reserveCapacity(messages.count)
        var sealed = Set<String>()
        var nextToken = 0
        for (message, step) in zip(messages, steps) {
            switch step {
            case .login(let login):
                let ipToken = tokens[nextToken]
                let deviceToken = tokens[nextToken + 1]
                nextToken += 2
                var entries: [VaultEntryRecord] = []
                for (token, field, value) in [(ipToken, PIIField.ip, login.ip), (deviceToken, .deviceID, login.deviceID)]
                where pending.contains(token) && sealed.insert(token).inserted {
                    let (nonce, ciphertext) = try sealer.seal(value, token: token, field: field)
                    entries.append(
                        VaultEntryRecord(
                            token: token, field: field, tokenKeyVersion: version, dataKeyID: sealer.dataKeyID, nonce: nonce,
                            ciphertext: ciphertext, suppressionTag: suppressionTags[token]))
                    output.newTokens.append(.init(token: token))
                }
                let sentDay = UTCDate.string(fromMilliseconds: message.sentTimestamp)
                let row = LoginRow(
                    userID: login.userID, deviceType: login.deviceType, maskedIP: ipToken, maskedDeviceID: deviceToken,
                    locale: login.locale, appVersion: login.appVersion, createDate: sentDay)
                output.items.append(BatchItem(receiptID: message.receiptID, sentDay: sentDay, payload: .login(row, entries)))
            case .rejected(let rejection):
                output.items.append(try quarantine(message, rejection, sealer: sealer))
            }
        }
        return output
    }

    /// The quarantine item for a message the database itself refused.
    func quarantine(_ message: InboundMessage, _ rejection: Rejection, dataKeys: DataKeyManager) async throws -> BatchItem {
        try quarantine(message, rejection, sealer: try await sealer(for: dataKeys.lease(encryptions: 1)))
    }

    /// The body is sealed whole, or, when it is too large to be a message
    /// (`body_too_large`), its first `keptPrefixBytes` with the SHA-256 of
    /// what was received: bounded storage for whatever anyone sends.
    private func quarantine(_ message: InboundMessage, _ rejection: Rejection, sealer: VaultSealer) throws -> BatchItem {
        let oversized = rejection.reason == .bodyTooLarge && message.body.count > Self.keptPrefixBytes
        let kept = oversized ? Array(message.body.prefix(Self.keptPrefixBytes)) : message.body
        let (nonce, sealedBody) = try sealer.seal(
            kept, aad: VaultAAD.quarantine(receiptID: message.receiptID, dataKeyID: sealer.dataKeyID))
        let row = QuarantineRow(
            source: message.sourceName, messageID: message.messageID, rejection: rejection,
            bodyByteCount: message.byteCount, dataKeyID: sealer.dataKeyID, nonce: nonce, sealedBody: sealedBody,
            bodySHA256: oversized ? try SHA256.hash(message.body) : nil)
        return BatchItem(
            receiptID: message.receiptID, sentDay: UTCDate.string(fromMilliseconds: message.sentTimestamp), payload: .quarantine(row))
    }

    private func sealer(for lease: DataKeyLease) throws -> VaultSealer {
        if let sealer, sealer.dataKeyID == lease.id { return sealer }
        let fresh = try VaultSealer(dataKeyID: lease.id, key: lease.key)
        sealer = fresh
        return fresh
    }
}
