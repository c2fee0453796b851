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
        await ToolMain.main(IngestCommand.self)
    }
}

func makeLogger() -> Logger { ToolLogging.bootstrap(label: "ingest") }

extension IngestError: ReportableError {}

struct Migrate: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the database schema (idempotent; safe from several replicas at once).")

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

    func execute() async throws {
        let logger = makeLogger()
        let connection = try await PostgresConnection.connect(database.conninfo, applicationName: "ingest-migrate", logger: logger)
        defer { Task { await connection.close() } }
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
        abstract: "Exit 0 when a running ingest on this host answers its health endpoint (container health checks).")

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
