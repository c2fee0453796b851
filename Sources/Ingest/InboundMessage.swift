import VaultCrypto

/// A message on its way in, from the queue or from a file.
public struct InboundMessage: Sendable {
    public enum Origin: Sendable {
        /// From SQS; deleted with this receipt handle once committed.
        case sqs(receiptHandle: String)
        /// From a file of bodies; nothing to acknowledge.
        case file
    }

    public let origin: Origin
    /// The SQS message id, or `line N` for files. Not personal data.
    public let messageID: String
    /// 16 bytes naming the message across redeliveries and replays.
    public let receiptID: [UInt8]
    public let body: [UInt8]
    /// When the login was published (Unix milliseconds): `create_date` comes from it.
    public let sentTimestamp: Int64
    public let receiveCount: Int
    /// The body's real length: more than `body.count` when a file line was
    /// cut at the largest message size.
    public let byteCount: Int

    public init(
        origin: Origin, messageID: String, receiptID: [UInt8], body: [UInt8], sentTimestamp: Int64, receiveCount: Int,
        byteCount: Int? = nil
    ) {
        self.origin = origin
        self.messageID = messageID
        self.receiptID = receiptID
        self.body = body
        self.sentTimestamp = sentTimestamp
        self.receiveCount = receiveCount
        self.byteCount = byteCount ?? body.count
    }

    /// True when only the start of the body was kept.
    public var isCut: Bool { byteCount > body.count }

    public var sourceName: String {
        switch origin {
        case .sqs: return "sqs"
        case .file: return "file"
        }
    }
}

/// Receipt ids: the first 16 bytes of SHA-256 over what identifies a message.
public enum ReceiptID {
    /// An SQS message id is unique per message and stable across redeliveries.
    public static func sqs(messageID: String) throws -> [UInt8] {
        Array(try SHA256.hash(Array("sqs\u{0}\(messageID)".utf8)).prefix(16))
    }

    /// A line of a file is identified by its position and content, so replaying
    /// the same file (or a copy of it) claims the same receipts again.
    public static func file(line: Int, body: [UInt8]) throws -> [UInt8] {
        Array(try SHA256.hash(Array("file\u{0}\(line)\u{0}".utf8) + body).prefix(16))
    }

    /// A quarantined message replayed (ReplayFile) is named by the one it
    /// replays: replaying it twice claims the same receipt.
    public static func replay(of original: [UInt8]) throws -> [UInt8] {
        Array(try SHA256.hash(Array("replay\u{0}".utf8) + original).prefix(16))
    }
}
