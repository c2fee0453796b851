import Foundation
public import Postgres
public import Storage

/// Four-eyes approval. The database owner sets the policy (`approval_policy`:
/// off, bulk over N values a day per login, always); under it the database's
/// reveal and erase functions release or erase only within a request that
/// another compliance login approved (`vault_approve` takes the approver from
/// the server's `session_user`), used once by its requester before it expires.
/// Every step is an audit row: the request (its scope pinned by a digest), the
/// approval or why it was refused, each reveal under it (its reason ends
/// "[request #ID]"), and a reveal the policy refused.
public enum Approvals {
    public enum Kind: String, Sendable, CaseIterable {
        case recover, lookup, subject, forget, quarantine
    }

    /// A request as stored.
    public struct Request: Sendable {
        public let id: Int64
        public let kind: Kind
        /// The subjects it covers (tokens, `quarantine:<receipt id>`), sorted; empty for subject access.
        public let scope: [String]
        public let userID: String?
        public let reason: String
        public let requestedBy: String
        public let requestedAt: String
        public let expiresAt: String
        public let expired: Bool
        public let approvedBy: String?
        public let usedAt: String?

        /// The reason every audit row made under it carries.
        public var auditReason: String { reason + Self.suffix(id) }

        static func suffix(_ id: Int64) -> String { " [request #\(id)]" }

        public var state: String {
            if usedAt != nil { return "used" }
            if expired { return "expired" }
            return approvedBy == nil ? "waiting for approval" : "approved"
        }

        init(_ row: PostgresRow) throws {
            id = Int64(try row.int("id"))
            guard let kind = Kind(rawValue: try row.string("action")) else { throw ApprovalError("request has an unknown action") }
            self.kind = kind
            scope = try row.string("scope").split(separator: " ").map(String.init)
            userID = row["user_id"]
            reason = try row.string("reason")
            requestedBy = try row.string("requested_by")
            requestedAt = try row.string("requested_at")
            expiresAt = try row.string("expires_at")
            expired = try row.bool("expired")
            approvedBy = row["approved_by"]
            usedAt = row["used_at"]
        }

        static let columns = """
            id, action, array_to_string(scope, ' ') AS scope, user_id, reason, requested_by, expires_at <= now() AS expired, approved_by,
            to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS requested_at,
            to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expires_at,
            to_char(used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS used_at
            """
    }

    /// The owner's policy, in words.
    public static func policy(on connection: PostgresConnection) async throws -> String {
        let row = try await connection.query("SELECT mode, bulk_tokens, request_hours FROM approval_policy")[0]
        switch try row.string("mode") {
        case "always": return "always (every reveal and erasure needs an approved request; requests last \(try row.int("request_hours")) h)"
        case "bulk":
            return
                "bulk (a login revealing more than \(try row.int("bulk_tokens")) values in 24 hours, or erasing more at once, needs an approved request)"
        default: return "off"
        }
    }

    /// Files a request: scope sorted and deduplicated, audited with its digest. Returns its id.
    public static func request(
        _ kind: Kind, scope: [String], userID: String?, reason: String, actor: AuditActor, on connection: PostgresConnection
    ) async throws -> Int64 {
        let sorted = Array(Set(scope)).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        return try await AuditLog.retryingChanges(on: connection) { connection in
            let subject = try connection.query(
                "SELECT access_request_subject($1, $2::text[], $3) AS subject",
                [.text(kind.rawValue), .textArray(sorted), PostgresValue.optionalText(userID)])[0].string("subject")
            let head = try AuditLog.head(on: connection)
            let entry = try AuditLog.prepare(
                [AuditRecord(action: "request", subject: subject, reason: reason, outcome: "requested")], after: head, actor: actor)[0]
            try connection.query(
                "SELECT vault_request($1, $2, $3, $4::text[], $5, $6, $7, $8)",
                [
                    .text(entry.osUser), .int(entry.macKeyVersion ?? 0), .text(kind.rawValue), .textArray(sorted),
                    PostgresValue.optionalText(userID), .text(reason), .bytes(entry.hash), .bytes(entry.mac ?? []),
                ])
            try AuditLog.requireStored(entry, on: connection)
            return entry.sequence
        }
    }

    /// Approves request `id` as this login; returns the audit row and the
    /// outcome ('approved', or why not: also audited). Throws for any outcome but 'approved'.
    public static func approve(_ id: Int64, actor: AuditActor, on connection: PostgresConnection) async throws -> Int64 {
        let (sequence, outcome) = try await AuditLog.retryingChanges(on: connection) { connection in
            let found = try connection.query(
                """
                SELECT reason, CASE WHEN requested_by = session_user THEN 'self-approval'
                                    WHEN approved_by IS NOT NULL THEN 'already-approved'
                                    WHEN expires_at <= clock_timestamp() THEN 'expired' ELSE 'approved' END AS outcome
                FROM access_requests WHERE id = $1
                """, [.int(id)])
            let reason = try found.first?.string("reason") ?? "unknown request"
            let outcome = try found.first?.string("outcome") ?? "unknown-request"
            let head = try AuditLog.head(on: connection)
            let entry = try AuditLog.prepare(
                [AuditRecord(action: "approve", subject: "request #\(id)", reason: reason, outcome: outcome)], after: head, actor: actor)[0]
            try connection.query(
                "SELECT vault_approve($1, $2, $3, $4, $5, $6, $7)",
                [
                    .text(entry.osUser), .int(entry.macKeyVersion ?? 0), .int(id), .text(reason), .text(outcome), .bytes(entry.hash),
                    .bytes(entry.mac ?? []),
                ])
            try AuditLog.requireStored(entry, on: connection)
            return (entry.sequence, outcome)
        }
        switch outcome {
        case "approved": return sequence
        case "self-approval":
            throw ApprovalError(
                "request #\(id) is yours: another compliance login must approve it (refusal audited as #\(sequence))")
        case "already-approved": throw ApprovalError("request #\(id) is approved already (audited as #\(sequence))")
        case "expired": throw ApprovalError("request #\(id) has expired: its requester asks again (audited as #\(sequence))")
        default: throw ApprovalError("there is no request #\(id): see vault requests (audited as #\(sequence))")
        }
    }

    public static func requests(includeClosed: Bool, on connection: PostgresConnection) async throws -> [Request] {
        try await connection.query(
            """
            SELECT \(Request.columns) FROM access_requests
            \(includeClosed ? "" : "WHERE used_at IS NULL AND expires_at > now()")
            ORDER BY id DESC
            """
        ).map(Request.init)
    }

    /// Request `id`, ready for this login to use for `kind`: said plainly
    /// here, checked again by the database when it is used.
    public static func usable(_ id: Int64, for kind: Kind, on connection: PostgresConnection) async throws -> Request {
        let rows = try await connection.query(
            "SELECT \(Request.columns), requested_by = session_user AS mine FROM access_requests WHERE id = $1", [.int(id)])
        guard let row = rows.first else { throw ApprovalError("there is no request #\(id): see vault requests") }
        let request = try Request(row)
        guard try row.bool("mine") else {
            throw ApprovalError("request #\(id) was made by \(request.requestedBy): only its requester uses it")
        }
        guard request.kind == kind else {
            throw ApprovalError("request #\(id) is for vault \(request.kind.rawValue), not \(kind.rawValue)")
        }
        guard request.usedAt == nil else { throw ApprovalError("request #\(id) was used at \(request.usedAt!): ask again") }
        guard !request.expired else { throw ApprovalError("request #\(id) expired at \(request.expiresAt): ask again") }
        guard request.approvedBy != nil else {
            throw ApprovalError("request #\(id) is not approved yet: another compliance login runs vault approve \(id)")
        }
        return request
    }

    /// Whether revealing `count` values now needs a request under the policy.
    static func needed(count: Int, on connection: isolated PostgresConnection) throws -> Bool {
        try count > 0 && connection.query("SELECT approval_needed($1) AS needed", [.int(count)])[0].bool("needed")
    }
}

/// A reveal or erasure the four-eyes policy refused, or a request that cannot
/// be used: says what to do next.
public struct ApprovalError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }

    static func refused(policy: String, auditSequence: Int64?) -> ApprovalError {
        ApprovalError(
            """
            the four-eyes policy is \(policy): nothing was revealed\(auditSequence.map { " (the refusal is audited as #\($0))" } ?? ""). \
            Ask with the same command and --request-approval, have another compliance login run vault approve ID, \
            then run it again with --request ID
            """)
    }
}
