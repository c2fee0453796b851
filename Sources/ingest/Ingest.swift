import ArgumentParser
public import CLISupport
import Foundation
public import Ingest
import Logging
import Postgres
import Storage

@main
struct IngestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Reads login events from SQS, pseudonymizes ip and device_id, and loads them into PostgreSQL.",
        discussion: ExitStatus.helpText,
        version: BuildInfo.description,
        subcommands: [Migrate.self, Distribute.self, Run.self, Maintain.self, Health.self]
    )

    static func main() async {
        await ToolMain.main(IngestCommand.self, manual: manual)
    }

    static let manual = ManualPage(
        description: """
            ingest is the pseudonymizer's service: it reads login events from an SQS queue (or a JSONL file), replaces \
            ip and device_id with keyed tokens, keeps the originals sealed in the vault, and loads every batch into \
            PostgreSQL in one transaction before deleting its messages; invalid messages are quarantined, sealed. It \
            also migrates the schema, keeps the partitioned tables, and distributes them over a Citus cluster.
            """,
        environment: [
            ("DATABASE_URL", "The database (postgresql://user@host:port/database); else the PG* variables of libpq."),
            ("QUEUE_URL", "The SQS queue to read (ingest run)."),
            ("KEYS_DIR", "The key directory (default ./keys): tokenization.json and recovery-public.json."),
            ("INGEST_*", "Every ingest run option as a variable, e.g. INGEST_WRITERS, INGEST_BATCH_SIZE (see ingest run --help)."),
            ("LOG_FORMAT", "json for one JSON object per log line and error."),
            ("LOG_LEVEL", "trace, debug, info (default), notice, warning, error."),
            (
                "AWS_REGION, AWS_ENDPOINT_URL, AWS_*",
                "SQS and KMS: the AWS SDK's credential chain (environment, web identity, container, profile)."
            ),
            ("INGEST_ALLOW_INSECURE_ENDPOINT", "1 allows plain http to an SQS or KMS emulator that is not on this machine."),
        ],
        files: [
            ("keys/tokenization.json", "The tokenization (HMAC) keys, or the KMS keys that hold them."),
            ("keys/recovery-public.json", "The recovery public key new data keys are wrapped to."),
        ],
        examples: [
            ("ingest migrate", "Create or upgrade the schema"),
            ("ingest run --from-file messages.jsonl", "Load a file of messages (running it again adds nothing)"),
            ("ingest run --queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/logins", "Run the service"),
            ("ingest maintain --dry-run", "Say which partitions maintain would make and drop"),
            ("ingest health --url http://127.0.0.1:8080/ready", "Probe a running replica"),
        ])
}

func makeLogger() -> Logger { ToolLogging.bootstrap(label: "ingest") }

extension IngestError: ReportableError {}

struct Migrate: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the database schema (idempotent; safe from several replicas at once).",
        discussion: """
            Runs as the database owner. --dry-run lists the migrations a run would apply, and changes nothing.

            Examples:
              ingest migrate --dry-run
              DATABASE_URL=postgresql://owner@db/logins ingest migrate --json
            """)

    enum LoginsPartitioning: String, ExpressibleByArgument, CaseIterable {
        case monthly
    }

    @OptionGroup var output: JSONOption
    @OptionGroup var database: DatabaseOptions

    @Option(
        help: ArgumentHelp(
            "Also make user_logins range-partitioned by create_date (opt-in, once; the existing table becomes its first partition; takes an exclusive lock while it scans that table once).",
            valueName: "interval"))
    var partitionUserLogins: LoginsPartitioning?

    @Flag(help: "Change nothing: list the migrations a run would apply.")
    var dryRun = false

    func execute() async throws {
        let logger = makeLogger()
        let connection = try await PostgresConnection.connect(database.conninfo, applicationName: "ingest-migrate", logger: logger)
        defer { Task { await connection.close() } }
        if dryRun {
            let pending = try await Schema.pending(connection)
            printSummary(
                json: output.json,
                ["dry_run": true, "pending": pending.map { ["version": $0.version, "name": $0.name] as [String: Any] }],
                text: pending.isEmpty
                    ? "schema is up to date (version \(Schema.latestVersion)); nothing to apply"
                    : (["would apply:"] + pending.map { "  \($0.version): \($0.name)" }).joined(separator: "\n"))
            return
        }
        let applied = try await Schema.migrate(connection, logger: logger)
        var summary: [String: Any] = ["applied": applied, "schema_version": Schema.latestVersion]
        var text =
            applied.isEmpty
            ? "schema is up to date (version \(Schema.latestVersion))"
            : "applied migrations \(applied.map(String.init).joined(separator: ", ")); schema version \(Schema.latestVersion)"
        if partitionUserLogins == .monthly {
            let converted = try await Partitions.partitionUserLoginsMonthly(on: connection)
            summary["user_logins_partitioned"] = converted ? "converted" : "already"
            text += converted ? "; user_logins is now partitioned by month" : "; user_logins was already partitioned"
        }
        printSummary(json: output.json, summary, text: text)
    }
}

struct Distribute: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Spread the schema over a Citus cluster (after migrate; idempotent; as the database owner, on the coordinator).",
        discussion: """
            Needs the citus extension in this database and its workers added (SELECT citus_add_node(host, port)). \
            Shards the vault by token, user_logins by user_id, receipts and quarantine by receipt id (co-located); \
            copies key_versions, data_keys, app_versions and token_lineage to every node; the audit log stays on the \
            coordinator. Tables already distributed are checked, not changed; `ingest migrate` on a distributed \
            database distributes the tables a migration adds.

            Examples:
              ingest distribute --json
              ingest distribute --shard-count 16
            """)

    @OptionGroup var output: JSONOption
    @OptionGroup var database: DatabaseOptions

    @Option(
        help: ArgumentHelp(
            "Shards per distributed table, for the tables this run distributes (fewer shards, fewer round trips per batch; at least the number of workers you expect to have).",
            valueName: "n"))
    var shardCount: Int = Distribution.defaultShardCount

    func execute() async throws {
        let logger = makeLogger()
        let connection = try await PostgresConnection.connect(database.conninfo, applicationName: "ingest-distribute", logger: logger)
        defer { Task { await connection.close() } }
        let report = try await Distribution.apply(shardCount: shardCount, on: connection)
        printSummary(
            json: output.json,
            [
                "distributed": report.distributed, "already_distributed": report.alreadyDistributed, "workers": report.workers,
                "shard_count": report.shardCount,
            ], text: Distribution.describe(report))
    }
}

struct Health: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when a running ingest on this host answers its health endpoint (container health checks).",
        discussion: """
            Examples:
              ingest health
              ingest health --check ready --port 8080
            """)

    enum Check: String, ExpressibleByArgument, CaseIterable {
        case live
        case ready
    }

    @Option(help: ArgumentHelp("Port of the running service ($INGEST_HTTP_PORT, else 8080).", valueName: "port"))
    var port: Int?

    @Option(help: "Which endpoint: /health/live or /health/ready.")
    var check: Check = .live

    func execute() async throws {
        let port = try EnvironmentFallback.value(port, "INGEST_HTTP_PORT", default: 8080)
        try await HealthProbe.check(url: "http://127.0.0.1:\(port)/health/\(check.rawValue)").get()
        print("ok")
    }
}
