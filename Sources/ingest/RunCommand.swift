import AWS
import ArgumentParser
import CLISupport
import Foundation
import Ingest
import Metrics
import Prometheus
import Pseudonymization
import ServiceLifecycle
import Storage
import UnixSignals

/// `--sqs-protocol`.
enum WireProtocolChoice: String, ExpressibleByArgument, CaseIterable {
    case json
    case query
    case auto

    var wireProtocol: SQSProtocol? { self == .auto ? nil : SQSProtocol(rawValue: rawValue) }
}

struct Run: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the ingestion service (until SIGTERM/SIGINT, --until-empty, or --max-messages).",
        discussion: """
            Every option can also be set with the environment variable named in its help. \
            SQS endpoint, region and credentials come from the standard AWS variables and credential providers \
            (AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL, AWS_REGION; static keys, web identity (IRSA), container \
            credentials (EKS Pod Identity, ECS), or the instance metadata service); a loopback endpoint needs no real credentials.

            Examples:
              ingest run --queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/logins
              ingest run --from-file messages.jsonl --sent-at 2026-12-01
              ingest run --queue-url URL --until-empty --json
            """
    )

    @Option(help: ArgumentHelp("SQS queue URL ($QUEUE_URL).", valueName: "url"))
    var queueURL: String?

    @Option(
        help: ArgumentHelp("Read message bodies from a JSONL file instead of SQS ($INGEST_FROM_FILE).", valueName: "file"),
        completion: .file())
    var fromFile: String?

    @Option(
        help: ArgumentHelp(
            "With --from-file: the send time to date rows with, ISO 8601 (default: the file's modification time).", valueName: "time"))
    var sentAt: String?

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions

    @Option(help: ArgumentHelp("Concurrent SQS long-pollers ($INGEST_POLLERS, else 4).", valueName: "count"))
    var pollers: Int?

    @Option(help: ArgumentHelp("Concurrent writers, each with its own database connection ($INGEST_WRITERS, else 2).", valueName: "count"))
    var writers: Int?

    @Option(help: ArgumentHelp("Messages per transaction ($INGEST_BATCH_SIZE, else 1500).", valueName: "messages"))
    var batchSize: Int?

    @Option(
        help: ArgumentHelp(
            "Bytes of message bodies in flight at most, received, queued or being written ($INGEST_MAX_INFLIGHT_BYTES, else 16777216): bounds memory with large bodies.",
            valueName: "bytes"))
    var maxInflightBytes: Int?

    @Option(help: ArgumentHelp("Stop after this many messages ($INGEST_MAX_MESSAGES).", valueName: "messages"))
    var maxMessages: Int?

    @Flag(help: "Drain the queue, commit, delete, and exit 0 ($INGEST_UNTIL_EMPTY=1).")
    var untilEmpty = false

    @Option(help: ArgumentHelp("SQS visibility timeout for received messages ($INGEST_VISIBILITY_TIMEOUT, else 60).", valueName: "seconds"))
    var visibilityTimeout: Int?

    @Option(help: ArgumentHelp("SQS long-poll wait, 0…20 ($INGEST_WAIT_SECONDS, else 20; 2 with --until-empty).", valueName: "seconds"))
    var waitSeconds: Int?

    @Option(
        help: ArgumentHelp(
            "Deliveries after which a message is quarantined instead of retried ($INGEST_MAX_RECEIVE_COUNT, else 10).",
            valueName: "deliveries"))
    var maxReceiveCount: Int?

    @Option(help: "SQS wire protocol ($SQS_PROTOCOL, else auto: JSON, then query).")
    var sqsProtocol: WireProtocolChoice?

    @Flag(
        help:
            "Allow an http:// SQS or KMS endpoint on a host other than this machine ($INGEST_ALLOW_INSECURE_ENDPOINT=1): for emulators on a trusted network only."
    )
    var allowInsecureEndpoint = false

    @Option(
        help: ArgumentHelp(
            "Values whose tokens are cached when the tokenization key is in AWS KMS, about 130 bytes each ($INGEST_TOKEN_CACHE_ENTRIES, else 100000; 0: every value is a KMS call).",
            valueName: "entries"))
    var tokenCacheEntries: Int?

    @Option(
        help: ArgumentHelp(
            "Interval between checks of the key files for a rotation ($INGEST_KEY_RELOAD_SECONDS, else 10; SIGHUP checks at once).",
            valueName: "seconds"))
    var keyReloadSeconds: Double?

    @Option(
        help: ArgumentHelp(
            "How long to keep waiting, unready, for PostgreSQL, the schema and the key registry at start before giving up with exit 75 ($INGEST_STARTUP_TIMEOUT, else 0: wait for good).",
            valueName: "seconds"))
    var startupTimeout: Double?

    @Option(help: ArgumentHelp("Serve /metrics and /health on this port ($INGEST_HTTP_PORT; else off).", valueName: "port"))
    var httpPort: Int?

    @Option(help: ArgumentHelp("Address for /metrics and /health ($INGEST_HTTP_HOST, else 0.0.0.0).", valueName: "address"))
    var httpHost: String?

    @Option(
        help: ArgumentHelp(
            "Encryptions per data key before rotation ($INGEST_DATA_KEY_MAX_ENCRYPTIONS, else 16777216).",
            valueName: "encryptions"))
    var dataKeyMaxEncryptions: Int?

    @Option(help: ArgumentHelp("Age of a data key at which it is rotated ($INGEST_DATA_KEY_MAX_HOURS, else 24).", valueName: "hours"))
    var dataKeyMaxHours: Double?

    var allowsInsecureEndpoint: Bool { EnvironmentFallback.flag(allowInsecureEndpoint, "INGEST_ALLOW_INSECURE_ENDPOINT") }

    func configuration() throws -> IngestConfiguration {
        let file = EnvironmentFallback.string(fromFile, "INGEST_FROM_FILE")
        let queue = EnvironmentFallback.string(queueURL, "QUEUE_URL")
        let source: IngestConfiguration.Source
        if let file {
            guard queue == nil || fromFile != nil else { throw ValidationError("give either a queue URL or --from-file, not both") }
            // The file's time by default, so a replay of the same file on a later
            // day still finds its receipts (kept by send day).
            let modified = (try? FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date) ?? Date()
            var sent = Int64((modified.timeIntervalSince1970 * 1000).rounded(.down))
            if let sentAt {
                // Milliseconds, rounded down (FORMATS.md, "Send times of files").
                guard let microseconds = UTCDate.microseconds(fromRFC3339: sentAt) else {
                    throw ValidationError(
                        "--sent-at \(sentAt) is not an RFC 3339 time such as 2026-11-29T12:00:00Z (fractions and offsets allowed) or a date"
                    )
                }
                sent = microseconds >= 0 ? microseconds / 1000 : (microseconds - 999) / 1000
            }
            source = .file(path: file, sentTimestamp: sent)
        } else if let queue {
            let choice =
                try sqsProtocol ?? EnvironmentFallback.string(nil, "SQS_PROTOCOL").map { name in
                    guard let choice = WireProtocolChoice(rawValue: name) else {
                        throw ValidationError("SQS_PROTOCOL=\(name) is not json, query or auto")
                    }
                    return choice
                } ?? .auto
            do {
                source = .sqs(
                    try SQSConfiguration.fromEnvironment(
                        queueURL: queue, wireProtocol: choice.wireProtocol,
                        allowInsecureEndpoint: allowsInsecureEndpoint))
            } catch let error as SQSError {
                throw OperatorError(error.description, exitCode: ExitStatus.configuration)
            } catch let error as AWSError {
                throw OperatorError(error.description, exitCode: ExitStatus.configuration)
            }
        } else {
            throw ValidationError("no source: give --queue-url (or QUEUE_URL) or --from-file")
        }
        var configuration = IngestConfiguration(source: source, conninfo: database.conninfo, keysDirectory: keys.resolvedKeysDirectory)
        configuration.allowInsecureEndpoint = allowsInsecureEndpoint
        configuration.tokenCacheEntries = try EnvironmentFallback.value(tokenCacheEntries, "INGEST_TOKEN_CACHE_ENTRIES", default: 100_000)
        configuration.pollers = try EnvironmentFallback.value(pollers, "INGEST_POLLERS", default: 4)
        configuration.writers = try EnvironmentFallback.value(writers, "INGEST_WRITERS", default: 2)
        configuration.batchSize = try EnvironmentFallback.value(batchSize, "INGEST_BATCH_SIZE", default: 1500)
        configuration.maximumInflightBytes = try EnvironmentFallback.value(maxInflightBytes, "INGEST_MAX_INFLIGHT_BYTES", default: 16 << 20)
        configuration.visibilityTimeout = try EnvironmentFallback.value(visibilityTimeout, "INGEST_VISIBILITY_TIMEOUT", default: 60)
        configuration.waitSeconds = try EnvironmentFallback.value(waitSeconds, "INGEST_WAIT_SECONDS", default: 20)
        configuration.maximumReceiveCount = try EnvironmentFallback.value(maxReceiveCount, "INGEST_MAX_RECEIVE_COUNT", default: 10)
        configuration.untilEmpty = EnvironmentFallback.flag(untilEmpty, "INGEST_UNTIL_EMPTY")
        let limit = try EnvironmentFallback.value(maxMessages, "INGEST_MAX_MESSAGES", default: 0)
        configuration.maximumMessages = limit > 0 ? limit : nil
        configuration.dataKeyPolicy.maximumEncryptions =
            try EnvironmentFallback.value(dataKeyMaxEncryptions, "INGEST_DATA_KEY_MAX_ENCRYPTIONS", default: 1 << 24)
        let hours = try EnvironmentFallback.value(dataKeyMaxHours, "INGEST_DATA_KEY_MAX_HOURS", default: 24)
        let reload = try EnvironmentFallback.value(keyReloadSeconds, "INGEST_KEY_RELOAD_SECONDS", default: 10)
        let startup = try EnvironmentFallback.value(startupTimeout, "INGEST_STARTUP_TIMEOUT", default: 0)
        guard reload > 0 else { throw ValidationError("--key-reload-seconds must be positive") }
        guard startup >= 0 else { throw ValidationError("--startup-timeout must be 0 (wait for good) or positive") }
        configuration.keyReloadInterval = .milliseconds(Int64(reload * 1000))
        configuration.startupTimeout = startup > 0 ? .milliseconds(Int64(startup * 1000)) : nil
        configuration.dataKeyPolicy.maximumAge = .seconds(hours * 3600)
        guard (1...64).contains(configuration.pollers), (1...32).contains(configuration.writers),
            (1...10_000).contains(configuration.batchSize), (1...43_200).contains(configuration.visibilityTimeout),
            (1 << 20...1 << 34).contains(configuration.maximumInflightBytes),
            (0...20).contains(configuration.waitSeconds),
            configuration.maximumReceiveCount >= 1, configuration.dataKeyPolicy.maximumEncryptions >= 1, hours > 0
        else {
            throw ValidationError(
                "out of range: pollers 1…64, writers 1…32, batch size 1…10000, visibility timeout 1…43200 s, wait 0…20 s, in-flight bytes 1 MiB…16 GiB, "
                    + "max receive count ≥ 1, data key limits > 0")
        }
        return configuration
    }

    func execute() async throws {
        MemoryTuning.apply()
        let logger = makeLogger()
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(DescribedPrometheusFactory(registry: registry))
        Gauge(label: "ingest_build_info", dimensions: [("version", BuildInfo.version), ("revision", BuildInfo.revision)]).record(1)
        let service = IngestService(configuration: try configuration(), logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)
        ]
        let port = try EnvironmentFallback.value(httpPort, "INGEST_HTTP_PORT", default: 0)
        if port > 0 {
            guard port < 65_536 else { throw ValidationError("--http-port must be 1…65535") }
            let host = EnvironmentFallback.string(httpHost, "INGEST_HTTP_HOST") ?? "0.0.0.0"
            services.append(
                .init(service: HTTPEndpoint(host: host, port: port, registry: registry, health: service.health, logger: logger)))
        }
        var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // Past this, shutdown stops waiting and cancels; messages not yet
        // committed are redelivered later, so nothing is lost.
        configuration.maximumGracefulShutdownDuration = .seconds(30)
        try await ServiceGroup(configuration: configuration).run()
    }
}
