import AWS
import Foundation
import HostileInput
import Logging
import Postgres
import Pseudonymization
import TestSupport
import VaultAdmin
import VaultCrypto

@testable import Ingest

/// The real sample of the queue (100 bodies, one malformed, 29 null locales).
func sampleBodies() throws -> [String] {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/takehome-messages.jsonl")
    return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
}

/// A migrated database, a key set and (optionally) a queue, for one test.
struct IngestHarness {
    let databaseURL: String
    let keys: TestKeys
    /// The key directory as ingest sees it: no recovery private key.
    let ingestKeys: String
    let queueURL: String

    static func make(queueAttributes: [String: String] = [:], keys: TestKeys? = nil) async throws -> IngestHarness {
        let keys = try keys ?? TestKeys.create()
        return IngestHarness(
            databaseURL: try await TestDatabase.create(keys: keys), keys: keys, ingestKeys: try keys.ingestKeysDirectory(),
            queueURL: try await AWSCLI.createQueue("ingest", attributes: queueAttributes))
    }

    func configuration(_ source: IngestConfiguration.Source? = nil) throws -> IngestConfiguration {
        let source = try source ?? .sqs(SQSConfiguration.fromEnvironment(queueURL: queueURL, wireProtocol: nil))
        var configuration = IngestConfiguration(source: source, conninfo: databaseURL, keysDirectory: ingestKeys)
        configuration.untilEmpty = true
        configuration.batchSize = 50
        configuration.flushInterval = .milliseconds(50)
        return configuration
    }

    /// Runs the service in this process until the queue (or file) is drained.
    @discardableResult
    func run(_ configuration: IngestConfiguration? = nil) async throws -> IngestStatistics.Snapshot {
        var logger = Logger(label: "ingest-tests")
        logger.logLevel = .warning
        let service = IngestService(configuration: try configuration ?? self.configuration(), logger: logger)
        try await service.run()
        return service.statistics.snapshot
    }

    func connect() async throws -> PostgresConnection { try await TestDatabase.connect(databaseURL) }

    func scalar(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int {
        let connection = try await connect()
        let value = try await connection.query(sql, parameters).first?.values.first ?? nil
        await connection.close()
        return Int(value ?? "") ?? -1
    }

    /// The original behind `token`, opened as the database owner (no audit).
    func recover(_ token: String) async throws -> RecoveredValue {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        return try await keys.recoverAsOwner([token], on: connection)[0].get()
    }
}

/// Realistic generated bodies: unique users, repeated IPs and device ids, IPv6, null locales.
func generatedBodies(count: Int, seed: UInt64 = 42, repeatEvery: Int = 5) -> [String] {
    var generator = SeededGenerator(seed: seed)
    var bodies: [String] = []
    var ips: [String] = []
    var devices: [String] = []
    for index in 0..<count {
        let ip: String
        let device: String
        if index % repeatEvery == repeatEvery - 1, !ips.isEmpty {
            ip = ips[Int.random(in: 0..<ips.count, using: &generator)]
            device = devices[Int.random(in: 0..<devices.count, using: &generator)]
        } else {
            ip =
                index % 17 == 3
                ? "2001:db8::\(String(index, radix: 16))"
                : "\(Int.random(in: 1...223, using: &generator)).\(Int.random(in: 0...255, using: &generator)).\(Int.random(in: 0...255, using: &generator)).\(Int.random(in: 1...254, using: &generator))"
            device =
                "\(Int.random(in: 100...999, using: &generator))-\(Int.random(in: 10...99, using: &generator))-\(Int.random(in: 1000...9999, using: &generator))"
            ips.append(ip)
            devices.append(device)
        }
        let locale = index % 3 == 0 ? "null" : "\"\(["RU", "PH", "ID", "FR", "US", "BR"][index % 6])\""
        bodies.append(
            #"{"user_id": "user-\#(seed)-\#(index)", "app_version": "\#(index % 4).\#(index % 10).\#(index % 7)", "device_type": "\#(index % 2 == 0 ? "android" : "ios")", "ip": "\#(ip)", "locale": \#(locale), "device_id": "\#(device)"}"#
        )
    }
    return bodies
}
