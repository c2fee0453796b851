import AWS
import ArgumentParser
import CLISupport
import Foundation
import Ingest
import Logging
import Postgres
import Storage
import VaultCrypto

struct Maintain: ToolCommand {
    static let resumesWhenRunAgain = true

    static let configuration = CommandConfiguration(
        abstract: "Create partitions ahead and drop those past retention (idempotent; safe while ingest runs; daily CronJob).",
        discussion: """
            Receipts (one per message, what makes a redelivery a duplicate) are kept by the day the message was sent and \
            must outlive the queue's message retention: with --queue-url (or QUEUE_URL) the queue's MessageRetentionPeriod \
            is read and a shorter --receipts-retention is refused. Dropping quarantined messages writes an audit row per \
            day, which needs the audit key (--audit-keys-dir: a directory with audit-key.json); without it those days are \
            kept and the run ends with exit 78. Runs as the database owner (the role that ran migrate). \
            --dry-run changes nothing and says what a run would create and drop.

            Examples:
              ingest maintain --dry-run
              ingest maintain --receipts-retention 15 --quarantine-retention 90 --audit-keys-dir /keys --json
            """)

    @OptionGroup var output: JSONOption
    @OptionGroup var database: DatabaseOptions

    @Option(help: ArgumentHelp("Days of receipts kept, by send day ($INGEST_RECEIPTS_RETENTION_DAYS, else 15).", valueName: "days"))
    var receiptsRetention: Int?

    @Option(help: ArgumentHelp("Days of quarantined messages kept ($INGEST_QUARANTINE_RETENTION_DAYS, else 90).", valueName: "days"))
    var quarantineRetention: Int?

    @Option(
        help: ArgumentHelp(
            "Months of user_logins kept when it is partitioned ($INGEST_LOGINS_RETENTION_MONTHS; default: kept forever).",
            valueName: "months"))
    var loginsRetention: Int?

    @Option(help: ArgumentHelp("Days (and months for user_logins: 2) of partitions made ahead.", valueName: "days"))
    var daysAhead: Int = 7

    @Option(
        help: ArgumentHelp(
            "Directory with audit-key.json, for dropping quarantined messages ($AUDIT_KEYS_DIR).", valueName: "dir"),
        completion: .directory)
    var auditKeysDir: String?

    @Option(help: ArgumentHelp("SQS queue URL whose retention the receipts must outlive ($QUEUE_URL).", valueName: "url"))
    var queueURL: String?

    @Option(
        help: ArgumentHelp(
            "Write the tokens no user_logins row references any more (after dropping logins) here, one per line, for `vault forget --tokens-file`.",
            valueName: "file"))
    var unreferencedTokensOut: String?

    @Flag(help: "Allow plain http to a non-loopback SQS endpoint ($INGEST_ALLOW_INSECURE_ENDPOINT).")
    var allowInsecureEndpoint = false

    @Flag(help: "Change nothing: say which partitions a run would create and drop.")
    var dryRun = false

    func execute() async throws {
        let logger = makeLogger()
        var policy = Partitions.Policy()
        policy.daysAhead = daysAhead
        policy.receiptsRetentionDays = try EnvironmentFallback.value(receiptsRetention, "INGEST_RECEIPTS_RETENTION_DAYS", default: 15)
        policy.quarantineRetentionDays = try EnvironmentFallback.value(
            quarantineRetention, "INGEST_QUARANTINE_RETENTION_DAYS", default: 90)
        policy.loginsRetentionMonths =
            try loginsRetention
            ?? EnvironmentFallback.string(nil, "INGEST_LOGINS_RETENTION_MONTHS").map {
                guard let months = Int($0) else { throw ValidationError("INGEST_LOGINS_RETENTION_MONTHS=\($0) is not a number of months") }
                return months
            }
        guard policy.receiptsRetentionDays >= 1, policy.quarantineRetentionDays >= 1, (policy.loginsRetentionMonths ?? 1) >= 1,
            daysAhead >= 0
        else { throw ValidationError("retentions must be at least 1 (day or month) and --days-ahead at least 0") }
        if let queue = EnvironmentFallback.string(queueURL, "QUEUE_URL") {
            try await checkQueueRetention(queue, receiptsRetentionDays: policy.receiptsRetentionDays, logger: logger)
        }
        let auditActor = try EnvironmentFallback.string(auditKeysDir, "AUDIT_KEYS_DIR").map {
            try AuditActor.current(store: KeyStore(directory: $0))
        }

        let connection = try await PostgresConnection.connect(database.conninfo, applicationName: "ingest-maintain", logger: logger)
        defer { Task { await connection.close() } }
        let report = try await Partitions.maintain(policy: policy, auditActor: auditActor, dryRun: dryRun, on: connection)
        if let unreferenced = report.unreferencedVaultEntries, let path = unreferencedTokensOut {
            try (unreferenced.map { $0 + "\n" }.joined()).write(toFile: path, atomically: true, encoding: .utf8)
        }
        var summary: [String: Any] = [
            "dry_run": dryRun, "created": report.created, "dropped": report.dropped,
            "dropped_quarantined_messages": report.droppedQuarantinedMessages,
            "kept_for_audit": report.keptForAudit,
        ]
        if let unreferenced = report.unreferencedVaultEntries { summary["unreferenced_vault_entries"] = unreferenced.count }
        printSummary(
            json: output.json, summary,
            text: """
                \(dryRun ? "would create" : "created") \(report.created.count) partitions\(report.created.isEmpty ? "" : ": " + report.created.joined(separator: ", "))
                \(dryRun ? "would drop" : "dropped") \(report.dropped.count) partitions\(report.dropped.isEmpty ? "" : ": " + report.dropped.joined(separator: ", ")) \
                (\(report.droppedQuarantinedMessages) quarantined messages, audited)
                """
                    + (report.unreferencedVaultEntries.map {
                        "\n\($0.count) vault entries are no longer referenced by any user_logins row"
                            + (unreferencedTokensOut.map { " (tokens in \($0), for vault forget --tokens-file)" } ?? "")
                    } ?? ""))
        if !report.keptForAudit.isEmpty {
            throw OperatorError(
                "quarantine partitions past retention were kept (\(report.keptForAudit.joined(separator: ", "))): dropping quarantined messages is audited; give --audit-keys-dir (AUDIT_KEYS_DIR) with audit-key.json",
                exitCode: ExitStatus.configuration)
        }
    }

    /// Receipts dropped before SQS stops redelivering a message would let a
    /// late redelivery in as new: refuse a retention shorter than the queue's.
    private func checkQueueRetention(_ queue: String, receiptsRetentionDays: Int, logger: Logger) async throws {
        let insecure = EnvironmentFallback.flag(allowInsecureEndpoint, "INGEST_ALLOW_INSECURE_ENDPOINT")
        let queueConfiguration = try SQSConfiguration.fromEnvironment(queueURL: queue, wireProtocol: nil, allowInsecureEndpoint: insecure)
        let retention = try await IngestService.messageRetentionSeconds(queueConfiguration, logger: logger)
        guard let seconds = retention else { return }
        let days = (seconds + 86_399) / 86_400
        guard receiptsRetentionDays >= days else {
            throw ValidationError(
                "--receipts-retention \(receiptsRetentionDays) days is shorter than the queue's message retention (\(seconds) s, \(days) days): a message redelivered after its receipt was dropped would be written twice; keep receipts at least \(days) days"
            )
        }
    }
}
