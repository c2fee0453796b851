public import Postgres

/// A key job's audited run. The rotation role changes key versions, vault
/// entries, lineage, login tokens and data-key wraps only through database
/// functions bound to an open run, and a run begins with its audit row
/// (`rotation_begin`): no key-job change without an audit row. Jobs of one
/// transaction (`keys.*`) use the run inside the transaction that began it;
/// long jobs (`retokenize`, `rewrap`) until they end it.
public struct RotationRun: Sendable {
    /// The sequence of the audit row that began the run.
    public let sequence: Int64
    public let action: String
    public let subject: String

    /// Begins a run inside the caller's transaction.
    public static func begin(
        action: String, subject: String, reason: String, outcome: String, actor: AuditActor, on connection: isolated PostgresConnection
    ) throws -> RotationRun {
        let head = try AuditLog.head(on: connection)
        let entry = try AuditLog.prepare(
            [AuditRecord(action: action, subject: subject, reason: reason, outcome: outcome)], after: head, actor: actor)[0]
        let sequence = try connection.query(
            "SELECT rotation_begin($1, $2, $3, $4, $5, $6, $7, $8) AS seq", AuditLog.singleRowParameters(entry, action: true)
        )[0].int("seq")
        return RotationRun(sequence: Int64(sequence), action: action, subject: subject)
    }

    /// Begins a run in a transaction of its own (long jobs).
    public static func beginCommitted(
        action: String, subject: String, reason: String, outcome: String, actor: AuditActor, on connection: PostgresConnection
    ) async throws -> RotationRun {
        try await connection.transaction { connection in
            try begin(action: action, subject: subject, reason: reason, outcome: outcome, actor: actor, on: connection)
        }
    }

    /// Ends the run with its closing audit row (how it ended), committed.
    public func end(reason: String, outcome: String, actor: AuditActor, on connection: PostgresConnection) async throws {
        try await connection.transaction { connection in
            let head = try AuditLog.head(on: connection)
            let entry = try AuditLog.prepare(
                [AuditRecord(action: action, subject: subject, reason: reason, outcome: outcome)], after: head, actor: actor)[0]
            try connection.query(
                "SELECT rotation_end($1, $2, $3, $4, $5, $6, $7, $8)",
                [.int(sequence)] + AuditLog.singleRowParameters(entry, action: false))
        }
    }
}
