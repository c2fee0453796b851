public import Postgres
public import Storage

/// Subject access by user: every `user_logins` row of one user, every token on
/// them (with the older tokens lineage links to them), and each value revealed
/// under one audited request: a first row naming the user (`user:<id>`,
/// outcome `subject-access`), then one per token. The database's
/// `vault_reveal` refuses a token that is not on that user's rows, so subject
/// access cannot reveal anyone else's value. Other users are only counted.
public enum SubjectAccess {
    public struct Row: Sendable {
        public let createDate: String?
        public let deviceType: String?
        public let locale: String?
        public let appVersion: String?
        public let maskedIP: String?
        public let maskedDeviceID: String?
    }

    public struct TokenReport: Sendable {
        public let token: String
        public let result: Result<RecoveredValue, RecoveryError>
        public let auditSequence: Int64
        /// Rows of this user that carry it.
        public let rows: Int
        /// How many other users' rows carry it too (never who).
        public let otherUsers: Int
        /// Tokens of earlier key versions that `vault retokenize` moved to it.
        public let earlierTokens: [String]
    }

    public struct Report: Sendable {
        public let userID: String
        public let rows: [Row]
        public let tokens: [TokenReport]
        /// The audit row naming the user (nil when the user has no rows: nothing was revealed or audited).
        public let auditSequence: Int64?

        /// The value behind a token of this report, if it was revealed.
        public func value(of token: String?) -> String? {
            guard let token, let report = tokens.first(where: { $0.token == token }), case .success(let value) = report.result else {
                return nil
            }
            return value.value
        }
    }

    /// The user's tokens, as their rows carry them now.
    public static func tokens(of userID: String, on connection: PostgresConnection) async throws -> [String] {
        try await connection.query(
            """
            SELECT masked_ip AS token FROM user_logins WHERE user_id = $1 AND masked_ip IS NOT NULL
            UNION SELECT masked_device_id FROM user_logins WHERE user_id = $1 AND masked_device_id IS NOT NULL
            ORDER BY 1
            """, [.text(userID)]
        ).map { try $0.string("token") }
    }

    public static func access(
        userID: String, reason: String, request: Approvals.Request? = nil, reader: VaultReader, actor: AuditActor,
        connection: PostgresConnection
    ) async throws -> Report {
        let rows = try await connection.query(
            """
            SELECT to_char(u.create_date, 'YYYY-MM-DD') AS create_date, u.device_type, u.locale,
                   coalesce(a.version, u.app_version::text) AS app_version, u.masked_ip, u.masked_device_id
            FROM user_logins u LEFT JOIN app_versions a ON a.code = u.app_version
            WHERE u.user_id = $1 ORDER BY u.create_date, u.masked_ip, u.masked_device_id
            """, [.text(userID)]
        ).map {
            Row(
                createDate: $0["create_date"], deviceType: $0["device_type"], locale: $0["locale"], appVersion: $0["app_version"],
                maskedIP: $0["masked_ip"], maskedDeviceID: $0["masked_device_id"])
        }
        guard !rows.isEmpty else { return Report(userID: userID, rows: [], tokens: [], auditSequence: nil) }
        let tokens = Array(Set(rows.flatMap { [$0.maskedIP, $0.maskedDeviceID] }.compactMap { $0 })).sorted()
        let radius = try await Forget.blastRadius(of: tokens, on: connection)
        let earlier = try await earlierTokens(of: tokens, on: connection)
        let scope = AuditedReveal.Scope(request: request, userID: userID)
        let released = try await AuditedReveal.reveal(
            action: "subject", tokens, reason: reason, scope: scope, reader: reader, actor: actor, connection: connection)
        try await released.requireAllowed(action: "subject", on: connection)
        let opened = try await AuditedReveal.open(
            tokens, action: "subject", released: released, reader: reader, reason: scope.reason(reason), actor: actor,
            connection: connection)
        let reports = zip(tokens, opened).map { token, outcome in
            TokenReport(
                token: token, result: outcome.result, auditSequence: outcome.auditSequence,
                rows: rows.filter { $0.maskedIP == token || $0.maskedDeviceID == token }.count,
                otherUsers: max((radius.byToken[token]?.users ?? 1) - 1, 0), earlierTokens: earlier[token] ?? [])
        }
        return Report(userID: userID, rows: rows, tokens: reports, auditSequence: released.userSequence)
    }

    /// For each token, the tokens of earlier versions lineage leads to it from (over any number of rotations).
    static func earlierTokens(of tokens: [String], on connection: PostgresConnection) async throws -> [String: [String]] {
        var earlier: [String: [String]] = [:]
        var frontier = Dictionary(uniqueKeysWithValues: tokens.map { ($0, $0) })
        while !frontier.isEmpty {
            var next: [String: String] = [:]
            for row in try await connection.query(
                "SELECT old_token, new_token FROM token_lineage WHERE new_token = ANY($1::text[])", [.textArray(Array(frontier.keys))])
            {
                let old = try row.string("old_token")
                let current = frontier[try row.string("new_token")]!
                guard next[old] == nil, earlier[current]?.contains(old) != true else { continue }
                earlier[current, default: []].append(old)
                next[old] = current
            }
            frontier = next
        }
        return earlier.mapValues { $0.sorted() }
    }
}
