import Foundation
import Ingest
import KeyCustody
import Logging
import Postgres
import Pseudonymization
import TestSupport
import VaultAdmin
import VaultCrypto

/// A database filled by the real ingest pipeline (from a file), a key set, and
/// ways to run `vault` against them.
struct VaultHarness {
    let databaseURL: String
    let keys: TestKeys
    /// Original value by token, for checking recoveries (never printed).
    let originals: [String: String]

    /// Ingests `bodies`, sent `sentDaysAgo` days ago, and returns the harness;
    /// into a new database, or `database` (migrated, keys not registered yet).
    static func make(bodies: [String], keys: TestKeys? = nil, sentDaysAgo: Int = 1, database: String? = nil) async throws
        -> VaultHarness
    {
        let keys = try keys ?? TestKeys.create()
        let databaseURL: String
        if let database {
            try await keys.register(in: database)
            databaseURL = database
        } else {
            databaseURL = try await TestDatabase.create("vault", keys: keys)
        }
        if sentDaysAgo > 15 {
            // As an installation that kept receipts longer (`ingest maintain --receipts-retention`).
            let owner = try await TestDatabase.connect(databaseURL)
            try await owner.execute("UPDATE partition_policy SET receipts_retention_days = $1", [.int(sentDaysAgo + 1)])
            await owner.close()
        }
        let file = NSTemporaryDirectory() + "vault-\(UUID().uuidString).jsonl"
        try (bodies.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        var configuration = IngestConfiguration(
            source: .file(path: file, sentTimestamp: SentTime.noon(-sentDaysAgo)), conninfo: databaseURL,
            keysDirectory: try keys.ingestKeysDirectory())
        configuration.untilEmpty = true
        var logger = Logger(label: "vault-tests")
        logger.logLevel = .warning
        try await IngestService(configuration: configuration, logger: logger).run()

        var requests: [TokenRequest] = []
        for body in bodies {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
                let ip = object["ip"] as? String, let device = object["device_id"] as? String,
                let canonical = CanonicalIP.canonicalize(ip)
            else { continue }
            requests += [TokenRequest(field: .ip, value: canonical), TokenRequest(field: .deviceID, value: device)]
        }
        let minter = try keys.minter()
        let tokens = try await minter.tokens(requests, version: minter.keyring.active.version)
        let originals = Dictionary(zip(tokens, requests.map(\.value)), uniquingKeysWith: { first, _ in first })
        return VaultHarness(databaseURL: databaseURL, keys: keys, originals: originals)
    }

    func connect(as user: String? = nil) async throws -> PostgresConnection {
        try await TestDatabase.connect(url(as: user))
    }

    func url(as user: String? = nil) throws -> String { try TestDatabase.url(databaseURL, as: user) }

    /// A login role that is a member of `group` (pseudonymizer_ingest, …).
    func loginRole(in group: String) async throws -> String {
        try await TestDatabase.createLoginRole(in: group, via: databaseURL)
    }

    func scalar(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int {
        let connection = try await connect()
        return Int(try await connection.query(sql, parameters).first?.values.first.flatMap { $0 } ?? "") ?? -1
    }

    /// Runs the `vault` binary with the test keys and database.
    func vault(_ arguments: [String], user: String? = nil, input: String? = nil, environment: [String: String] = [:]) async throws
        -> ProcessResult
    {
        try await runProgram(
            try TestEnvironment.executable("vault"), arguments,
            environment: [
                "KEYS_DIR": keys.store.directory, "VAULT_PASSPHRASE_FILE": keys.passphraseFile,
                "DATABASE_URL": try url(as: user),
            ].merging(environment) { $1 },
            input: input)
    }

    /// Runs the `ingest` binary against the harness database with the ingest key directory.
    func ingest(_ arguments: [String], keysDirectory: String? = nil) async throws -> ProcessResult {
        try await runProgram(
            try TestEnvironment.executable("ingest"), arguments,
            environment: ["KEYS_DIR": try keysDirectory ?? keys.ingestKeysDirectory(), "DATABASE_URL": databaseURL])
    }

    /// Opens entries as the database owner (no audit): for checking results.
    func recoverAsOwner(_ tokens: [String]) async throws -> [Result<RecoveredValue, RecoveryError>] {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        return try await keys.recoverAsOwner(tokens, on: connection)
    }
}

/// Bodies with IPv4, IPv6 (including a mapped and a non-canonical spelling) and device ids.
func mixedBodies(count: Int) -> [String] {
    (0..<count).map { index in
        let ip: String
        switch index % 5 {
        case 0: ip = "2001:DB8:0:0:0:0:\(String(index, radix: 16)):1"
        case 1: ip = "::ffff:10.\(index / 65536 % 256).\(index / 256 % 256).\(index % 256)"
        default: ip = "10.\(index / 65536 % 256).\(index / 256 % 256).\(index % 256)"
        }
        return
            #"{"user_id": "user-\#(index)", "app_version": "1.2.3", "device_type": "ios", "ip": "\#(ip)", "locale": null, "device_id": "dev-\#(index)-é"}"#
    }
}
