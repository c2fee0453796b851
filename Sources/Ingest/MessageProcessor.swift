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
    private let inFlight: InFlightTokens
    private let maximumReceiveCount: Int
    private let statistics: IngestStatistics
    private var sealer: VaultSealer?

    init(
        keys: IngestKeys, tokenCache: TokenCache?, knownTokens: KnownTokenCache, inFlight: InFlightTokens, maximumReceiveCount: Int,
        statistics: IngestStatistics
    ) throws {
        self.keys = keys
        self.tokenCache = tokenCache
        minterKeys = keys.current
        minter = try TokenMinter(keyring: minterKeys.keyring, kms: try keys.kmsClient(for: minterKeys.keyring), cache: tokenCache)
        self.knownTokens = knownTokens
        self.inFlight = inFlight
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
        /// Tokens this batch stores, claimed in `InFlightTokens` until the
        /// writer releases them; remembered once it commits.
        var newTokens: [KnownTokenCache.Fingerprint]
        var claim = InFlightTokens.Batch()
        /// The batches that claimed this batch's contended tokens first.
        var contendedOwners: [String: InFlightTokens.Batch] = [:]
    }

    private enum Step {
        case login(ValidatedLogin)
        case rejected(Rejection)
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
        var new = NewValues(count: tokens.count)
        var pending: [KnownTokenCache.Fingerprint: Int] = [:]
        pending.reserveCapacity(tokens.count)
        for (position, token) in tokens.enumerated() {
            let fingerprint = KnownTokenCache.Fingerprint(token: token)
            guard !knownTokens.contains(fingerprint) else { continue }
            if let index = pending[fingerprint] {
                new.indexAt[position] = index
            } else {
                pending[fingerprint] = new.positions.count
                new.add(position: position, fingerprint: fingerprint)
            }
        }
        var sealsNeeded = new.fingerprints.count
        for step in steps { if case .rejected = step { sealsNeeded += 1 } }
        // Each new value's suppression tag: the batch writer leaves out those `vault forget` erased.
        if minter.hasSuppressionKey, !new.positions.isEmpty {
            new.suppressionTags = try await minter.suppressionTags(new.positions.map { requests[$0] })
        }

        let sealer = try await sealer(for: dataKeys.lease(encryptions: max(sealsNeeded, 1)))
        let claim = InFlightTokens.Batch()
        var contendedOwners: [String: InFlightTokens.Batch] = [:]
        for (index, owner) in inFlight.claim(new.fingerprints, for: claim) {
            new.contended[index] = true
            contendedOwners[tokens[new.positions[index]]] = owner
        }
        do {
            var output = try build(messages, steps, tokens: tokens, new: new, version: version, sealer: sealer)
            output.claim = claim
            output.contendedOwners = contendedOwners
            return output
        } catch {
            inFlight.release(new.fingerprints, of: claim, committed: false)
            throw error
        }
    }

    /// The values of a batch that are new (not known to be stored): what the
    /// batch seals, each once.
    private struct NewValues {
        /// For each token position, the index of its new value, if it is one.
        var indexAt: [Int?]
        /// Where each new value first occurs.
        var positions: [Int] = []
        var fingerprints: [KnownTokenCache.Fingerprint] = []
        var suppressionTags: [[UInt8]]?
        /// Whether another open batch claimed the value first (`InFlightTokens`).
        var contended: [Bool] = []

        init(count: Int) { indexAt = Array(repeating: nil, count: count) }

        mutating func add(position: Int, fingerprint: KnownTokenCache.Fingerprint) {
            indexAt[position] = positions.count
            positions.append(position)
            fingerprints.append(fingerprint)
            contended.append(false)
        }
    }

    /// The batch items, once the tokens are known and the new ones claimed.
    private func build(
        _ messages: [InboundMessage], _ steps: [Step], tokens: [String], new: NewValues, version: Int, sealer: VaultSealer
    ) throws -> Output {
        var output = Output(items: [], newTokens: new.fingerprints)
        output.items.reserveCapacity(messages.count)
        // Every row that carries a new token carries its entry (sealed once): if
        // the database refuses one of them, the others still store it.
        var records = [VaultEntryRecord?](repeating: nil, count: new.positions.count)
        var position = 0
        for (message, step) in zip(messages, steps) {
            switch step {
            case .login(let login):
                let ipToken = tokens[position]
                let deviceToken = tokens[position + 1]
                var entries: [VaultEntryRecord] = []
                for (offset, field, value) in [(0, PIIField.ip, login.ip), (1, .deviceID, login.deviceID)] {
                    guard let index = new.indexAt[position + offset] else { continue }
                    if records[index] == nil {
                        let token = tokens[position + offset]
                        let (nonce, ciphertext) = try sealer.seal(value, token: token, field: field)
                        records[index] = VaultEntryRecord(
                            token: token, field: field, tokenKeyVersion: version, dataKeyID: sealer.dataKeyID, nonce: nonce,
                            ciphertext: ciphertext, suppressionTag: new.suppressionTags?[index], contended: new.contended[index])
                    }
                    entries.append(records[index]!)
                }
                position += 2
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
