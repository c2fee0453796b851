import Pseudonymization
import Storage
import VaultCrypto

/// Turns messages into batch items: validates, tokenizes, seals the originals
/// that are not in the vault yet, seals the bodies of rejected messages.
/// CPU only, no I/O except asking the data key manager for a lease.
/// Owned by one writer (its crypto contexts are not thread-safe).
final class MessageProcessor {
    private let keys: IngestKeys
    private var tokenizer: Tokenizer
    private let knownTokens: KnownTokenCache
    private let maximumReceiveCount: Int
    private let statistics: IngestStatistics
    private var sealer: VaultSealer?

    init(keys: IngestKeys, knownTokens: KnownTokenCache, maximumReceiveCount: Int, statistics: IngestStatistics) throws {
        self.keys = keys
        self.tokenizer = try Tokenizer(key: keys.current.keyring.active)
        self.knownTokens = knownTokens
        self.maximumReceiveCount = maximumReceiveCount
        self.statistics = statistics
    }

    var tokenKeyVersion: Int { tokenizer.keyVersion }

    struct Output {
        var items: [BatchItem]
        /// Tokens this batch stores; remembered once it commits.
        var newTokens: [KnownTokenCache.Fingerprint]
    }

    /// Processes with the active tokenization key of the current key files.
    func process(_ messages: [InboundMessage], dataKeys: DataKeyManager) async throws -> Output {
        let active = keys.current.keyring.active
        if active.version != tokenizer.keyVersion { tokenizer = try Tokenizer(key: active) }
        enum Step {
            case login(LoginRow, ipToken: String, deviceToken: String, ValidatedLogin)
            case rejected(Rejection)
        }
        var steps: [Step] = []
        steps.reserveCapacity(messages.count)
        var sealsNeeded = 0
        var pending = Set<String>()  // tokens sealed by this batch already
        var unknownFields = 0
        for message in messages {
            if message.isCut {
                steps.append(
                    .rejected(
                        Rejection(
                            .bodyTooLarge,
                            "the line has \(message.byteCount) bytes, more than the \(message.body.count) a message may have; its first \(message.body.count) bytes are sealed here"
                        )))
                sealsNeeded += 1
                continue
            }
            if message.receiveCount > maximumReceiveCount {
                steps.append(
                    .rejected(
                        Rejection(
                            .tooManyDeliveries,
                            "delivered \(message.receiveCount) times, more than the \(maximumReceiveCount) allowed")))
                sealsNeeded += 1
                continue
            }
            do {
                let login = try LoginMessage.validate(message.body)
                unknownFields += login.unknownFieldCount
                let ipToken = try tokenizer.token(for: login.ip, field: .ip)
                let deviceToken = try tokenizer.token(for: login.deviceID, field: .deviceID)
                for token in [ipToken, deviceToken]
                where !knownTokens.contains(.init(token: token)) && pending.insert(token).inserted {
                    sealsNeeded += 1
                }
                let row = LoginRow(
                    userID: login.userID, deviceType: login.deviceType, maskedIP: ipToken, maskedDeviceID: deviceToken,
                    locale: login.locale, appVersion: login.appVersion,
                    createDate: UTCDate.string(fromMilliseconds: message.sentTimestamp))
                steps.append(.login(row, ipToken: ipToken, deviceToken: deviceToken, login))
            } catch let rejection as Rejection {
                steps.append(.rejected(rejection))
                sealsNeeded += 1
            }
        }
        if unknownFields > 0 { statistics.unknownFields(unknownFields) }

        let sealer = try await sealer(for: dataKeys.lease(encryptions: max(sealsNeeded, 1)))
        var output = Output(items: [], newTokens: [])
        output.items.reserveCapacity(messages.count)
        var sealed = Set<String>()
        for (message, step) in zip(messages, steps) {
            switch step {
            case .login(let row, let ipToken, let deviceToken, let login):
                var entries: [VaultEntryRecord] = []
                for (token, field, value) in [(ipToken, PIIField.ip, login.ip), (deviceToken, .deviceID, login.deviceID)]
                where pending.contains(token) && sealed.insert(token).inserted {
                    let (nonce, ciphertext) = try sealer.seal(value, token: token, field: field)
                    entries.append(
                        VaultEntryRecord(
                            token: token, field: field, tokenKeyVersion: tokenizer.keyVersion,
                            dataKeyID: sealer.dataKeyID, nonce: nonce, ciphertext: ciphertext))
                    output.newTokens.append(.init(token: token))
                }
                output.items.append(BatchItem(receiptID: message.receiptID, payload: .login(row, entries)))
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

    private func quarantine(_ message: InboundMessage, _ rejection: Rejection, sealer: VaultSealer) throws -> BatchItem {
        let (nonce, sealedBody) = try sealer.seal(
            message.body, aad: VaultAAD.quarantine(receiptID: message.receiptID, dataKeyID: sealer.dataKeyID))
        let row = QuarantineRow(
            source: message.sourceName, messageID: message.messageID, rejection: rejection,
            bodyByteCount: message.byteCount, dataKeyID: sealer.dataKeyID, nonce: nonce, sealedBody: sealedBody)
        return BatchItem(receiptID: message.receiptID, payload: .quarantine(row))
    }

    private func sealer(for lease: DataKeyLease) throws -> VaultSealer {
        if let sealer, sealer.dataKeyID == lease.id { return sealer }
        let fresh = try VaultSealer(dataKeyID: lease.id, key: lease.key)
        sealer = fresh
        return fresh
    }
}
