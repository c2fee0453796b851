import VaultCrypto

/// The file `vault quarantine replay` writes and `ingest run --from-file`
/// reads: a header line, then one line per quarantined message: its receipt
/// id (hex), the day it was sent, and its body (base64, so any byte, newlines
/// included, survives). Each replayed message keeps an identity of its own,
/// derived from the quarantined one, so replaying it again writes nothing twice.
public enum ReplayFile {
    public static let header = "# pseudonymizer quarantine replay v1"

    public struct Line: Sendable, Equatable {
        public let receiptID: [UInt8]
        /// `YYYY-MM-DD`.
        public let sentDay: String
        public let body: [UInt8]

        public init(receiptID: [UInt8], sentDay: String, body: [UInt8]) {
            self.receiptID = receiptID
            self.sentDay = sentDay
            self.body = body
        }

        public var encoded: String { "\(Hex.encode(receiptID))\t\(sentDay)\t\(Base64.encode(body))" }

        /// Nil for a line that is not one of these.
        public init?(_ bytes: [UInt8]) {
            let fields = bytes.split(separator: UInt8(ascii: "\t"), omittingEmptySubsequences: false)
            guard fields.count == 3, let receiptID = Hex.decode(String(decoding: fields[0], as: UTF8.self)), receiptID.count == 16,
                let sentDay = Optional(String(decoding: fields[1], as: UTF8.self)),
                UTCDate.microseconds(fromRFC3339: sentDay) != nil, sentDay.utf8.count == 10,
                let body = Base64.decode(String(decoding: fields[2], as: UTF8.self))
            else { return nil }
            self.init(receiptID: receiptID, sentDay: sentDay, body: body)
        }

        /// Midnight UTC of the sent day, in Unix milliseconds.
        public var sentTimestamp: Int64 { UTCDate.microseconds(fromRFC3339: sentDay)! / 1_000 }
    }
}
