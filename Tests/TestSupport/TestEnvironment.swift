public import Foundation
public import KeyCustody
public import Logging
public import Postgres
import Storage
import Synchronization
public import VaultAdmin
public import VaultCrypto

/// A test prerequisite that is missing. Integration tests fail, not skip,
/// without their services: a skipped test proves nothing.
public struct TestEnvironmentError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum TestEnvironment {
    public static func variable(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw TestEnvironmentError("\(name) is not set: run the tests with scripts/test, which starts PostgreSQL and the SQS emulator")
        }
        return value
    }

    public static var logger: Logger { Logger(label: "tests") }

    /// The checkout the tests were built from (for its scripts).
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// The built executable `name` (scripts/test exports PSEUDO_BIN_DIR).
    public static func executable(_ name: String) throws -> String {
        let directory = try variable("PSEUDO_BIN_DIR")
        let path = "\(directory)/\(name)"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestEnvironmentError("\(path) is not built: run the tests with scripts/test")
        }
        return path
    }
}

/// Send times for test messages and files: the database keeps receipts (and
/// so accepts messages) only for days near today.
public enum SentTime {
    public static let day: Int64 = 86_400_000

    /// Today at 12:00 UTC plus `days`, in Unix milliseconds.
    public static func noon(_ days: Int) -> Int64 {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        return now - now % day + day / 2 + Int64(days) * day
    }
}

/// A fresh database per test, so tests run in parallel without seeing each other.
public enum TestDatabase {
    /// The worker ports of the Citus cluster the tests run against
    /// (`CITUS=1 scripts/test`), or none: a single PostgreSQL.
    public static let citusWorkerPorts: [Int] =
        (ProcessInfo.processInfo.environment["PSEUDO_CITUS_WORKERS"] ?? "").split(separator: " ").compactMap { Int($0) }

    public static var onCitus: Bool { !citusWorkerPorts.isEmpty }

    /// The URL of a new, empty database. On a Citus cluster, the database is
    /// on every node, with the extension, and the workers in its metadata
    /// (as scripts/services makes its own): ready for `ingest distribute`.
    /// Waits for the cluster-wide roles first: a test that migrates it must
    /// not race the first migration to create them.
    public static func createEmpty(_ prefix: String = "t") async throws -> String {
        try await clusterRoles.value
        return try await citusSetup.serialized { try await makeEmpty(prefix) }
    }

    private static func makeEmpty(_ prefix: String) async throws -> String {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let host = try TestEnvironment.variable("PGHOST")
        let user = try TestEnvironment.variable("PGUSER")
        let coordinator = Int(try TestEnvironment.variable("PGPORT")) ?? 5432
        for port in [coordinator] + citusWorkerPorts {
            let admin = try await connect("postgresql://\(user)@\(host):\(port)/postgres")
            try await admin.execute("CREATE DATABASE \(name)")
            await admin.close()
            guard onCitus else { break }
            let node = try await connect("postgresql://\(user)@\(host):\(port)/\(name)")
            try await node.execute("CREATE EXTENSION citus")
            await node.close()
        }
        let url = "postgresql://\(user)@\(host):\(coordinator)/\(name)"
        if onCitus {
            let connection = try await connect(url)
            try await connection.execute("SELECT citus_set_coordinator_host($1, $2)", [.text(host), .int(coordinator)])
            for port in citusWorkerPorts {
                try await connection.execute("SELECT citus_add_node($1, $2)", [.text(host), .int(port)])
            }
            await connection.close()
        }
        return url
    }

    /// The URL of a new database with the schema migrated (and distributed, on
    /// a Citus cluster) and, when given, `keys` registered (as `vault keys init` does).
    public static func create(_ prefix: String = "t", keys: TestKeys? = nil) async throws -> String {
        try await clusterRoles.value
        let url = try await citusSetup.serialized {
            let url = try await makeEmpty(prefix)
            let connection = try await connect(url)
            try await Schema.migrate(connection, logger: TestEnvironment.logger)
            if onCitus { _ = try await Distribution.apply(on: connection) }
            await connection.close()
            return url
        }
        if let keys { try await keys.register(in: url) }
        return url
    }

    /// On a Citus cluster, making a database (extension, nodes, migrations,
    /// distribution) changes cluster-wide catalogs on every node: roles and
    /// their grants, which Citus propagates. Tests make databases in parallel;
    /// a real deployment has one. One at a time, or the nodes' catalog updates
    /// collide ("tuple concurrently updated"). On one PostgreSQL nothing waits.
    static let citusSetup = SerialSection(enabled: onCitus)

    /// The roles the migrations make are cluster-wide: one migration runs
    /// first, alone, so the parallel tests' migrations find them made (a
    /// loaded CI run saw a migration fail on a missing role while many first
    /// migrations raced to create them).
    private static let clusterRoles = Task {
        try await citusSetup.serialized {
            let connection = try await connect(try await makeEmpty("roles"))
            try await Schema.migrate(connection, logger: TestEnvironment.logger)
            await connection.close()
        }
    }

    public static func connect(_ url: String) async throws -> PostgresConnection {
        try await PostgresConnection.connect(url, applicationName: "tests", logger: TestEnvironment.logger)
    }

    /// A new login role that is a member of `group` (pseudonymizer_ingest, …).
    /// Roles are cluster-wide, so the name is unique.
    public static func createLoginRole(in group: String, via url: String) async throws -> String {
        let name = "\(group.replacingOccurrences(of: "pseudonymizer_", with: ""))_\(UUID().uuidString.prefix(8).lowercased())"
        try await citusSetup.serialized {
            let connection = try await connect(url)
            try await connection.execute("CREATE ROLE \(name) LOGIN IN ROLE \(group)")
            await connection.close()
        }
        return name
    }

    /// `url` with `user` instead of the administrative user.
    public static func url(_ url: String, as user: String?) throws -> String {
        guard let user else { return url }
        return url.replacingOccurrences(of: "//\(try TestEnvironment.variable("PGUSER"))@", with: "//\(user)@")
    }
}

/// Runs bodies one at a time when enabled (an async mutex, FIFO); otherwise
/// runs them as they come.
final class SerialSection: Sendable {
    private let enabled: Bool
    private let tail = Mutex<Task<Void, Never>?>(nil)

    init(enabled: Bool) { self.enabled = enabled }

    func serialized<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        guard enabled else { return try await body() }
        let task = tail.withLock { tail -> Task<Result<T, any Error>, Never> in
            let previous = tail
            let task = Task { () -> Result<T, any Error> in
                await previous?.value
                do { return .success(try await body()) } catch { return .failure(error) }
            }
            tail = Task { _ = await task.value }
            return task
        }
        return try await task.value.get()
    }
}

/// A key set in a temporary directory, with a cheap scrypt cost.
public struct TestKeys: Sendable {
    public let store: KeyStore
    public let passphraseFile: String
    public let passphrase: SecureBytes
    /// For KMS-held keys: the emulator's KMS.
    public let kms = TestKMS.lazy()

    /// A key set whose tokenization key v1 is the KMS key `tokenizationKMSKeyID`
    /// and/or whose recovery private key is sealed by the KMS key `recoveryKMSKeyID`.
    public static func create(tokenizationKMSKeyID: String?, recoveryKMSKeyID: String? = nil) async throws -> TestKeys {
        let keys = try create(writingKeys: false)
        try await KeyAdministration.createKeySet(
            store: keys.store,
            sealing: recoveryKMSKeyID.map { .awsKMS(keyID: $0, keys.kms) } ?? .passphrase(keys.passphrase, .init(n: 1 << 14, r: 8, p: 1)),
            tokenizationKMSKeyID: tokenizationKMSKeyID, kms: keys.kms)
        return keys
    }

    public static func create() throws -> TestKeys { try create(writingKeys: true) }

    private static func create(writingKeys: Bool) throws -> TestKeys {
        let directory = NSTemporaryDirectory() + "keys-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let passphrase = SecureBytes(Array("test passphrase, long enough".utf8))
        let file = directory + "/passphrase"
        _ = FileManager.default.createFile(
            atPath: file, contents: Data("test passphrase, long enough\n".utf8), attributes: [.posixPermissions: 0o600])
        let store = KeyStore(directory: directory + "/keys")
        if writingKeys { try store.initialize(passphrase: passphrase, parameters: .init(n: 1 << 14, r: 8, p: 1)) }
        return TestKeys(store: store, passphraseFile: file, passphrase: passphrase)
    }

    /// What the ingestion container gets: the key directory without the
    /// recovery private key.
    public func ingestKeysDirectory() throws -> String {
        let directory = store.directory + "-ingest"
        if !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            for file in ["tokenization.json", "recovery-public.json"] {
                try FileManager.default.copyItem(atPath: "\(store.directory)/\(file)", toPath: "\(directory)/\(file)")
            }
        }
        return directory
    }

    /// Copies the key files ingest gets (tokenization.json, recovery-public.json)
    /// to its key directory again, as an operator does after a rotation.
    public func distribute() throws {
        let ingest = try ingestKeysDirectory()
        for file in ["tokenization.json", "recovery-public.json"] {
            let target = "\(ingest)/\(file)"
            try? FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: "\(store.directory)/\(file)", toPath: target)
        }
    }

    public func privateKey(version: Int) async throws -> X25519.PrivateKey {
        try await RecoveryKeyring(store: store, kms: kms) { passphrase }.privateKey(version: version)
    }

    /// Tokens under every version of the key files, as vault computes them.
    public func minter() throws -> TokenMinter {
        let keyring = try store.tokenizationKeyring()
        return try TokenMinter(keyring: keyring, kms: try kms.client(for: keyring))
    }

    /// Registers every key version's fingerprint in the database at `url`.
    public func register(in url: String) async throws {
        let connection = try await TestDatabase.connect(url)
        _ = try await KeyAdministration.register(
            store: store, kms: kms, reason: "test key set", actor: try AuditActor.current(store: store), connection: connection)
        await connection.close()
    }

    /// Opens vault entries as the database owner, without audit rows: for
    /// checking what ingest wrote. (Compliance logins cannot do this.)
    public func recoverAsOwner(_ tokens: [String], on connection: PostgresConnection) async throws -> [Result<
        RecoveredValue, RecoveryError
    >] {
        var entries: [String: SealedEntry] = [:]
        for row in try await connection.query(
            """
            SELECT \(SealedEntry.columns) FROM vault_entries v LEFT JOIN data_keys d ON d.id = v.data_key_id WHERE v.token = ANY($1::text[])
            """, [.textArray(tokens)])
        {
            let entry = try SealedEntry(row)
            entries[entry.token] = entry
        }
        let minter = try minter()
        let reader = VaultReader(minter: minter, privateKey: { try await self.privateKey(version: $0) })
        let erasures = try await ErasureProofs(keys: try store.auditKeyring(), minter: minter).proofs(
            for: tokens, tombstones: Set(entries.values.filter { $0.erasedAt != nil }.map(\.token)), on: connection)
        return try await reader.open(tokens, entries: entries, erasures: erasures)
    }
}

/// The result of running a program to completion.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let output: String
    public let errors: String
}

/// Starts a built binary (`ingest`, `vault`) in the background, its output
/// discarded; `environment` adds to the test's own. The caller stops it.
public func startProgram(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try TestEnvironment.executable(name))
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}

/// Runs a program, collecting its output; `environment` adds to the test's own.
/// The waiting happens on a thread of its own: blocking a cooperative-pool
/// thread would stall every other test running in parallel. A program still
/// running after `timeout` is killed and the test fails (a hang must not hold
/// up the whole suite until CI gives up on it).
public func runProgram(
    _ path: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil,
    timeout: Duration = .seconds(300)
) async throws -> ProcessResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(
                with: Result { try runProgramBlocking(path, arguments, environment: environment, input: input, timeout: timeout) })
        }.start()
    }
}

private func runProgramBlocking(_ path: String, _ arguments: [String], environment: [String: String], input: String?, timeout: Duration)
    throws -> ProcessResult
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    let inputPipe = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : inputPipe
    try process.run()
    let killedByWatchdog = Atomic<Bool>(false)
    let watchdog = Thread {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                killedByWatchdog.store(true, ordering: .relaxed)
                kill(process.processIdentifier, SIGKILL)
                return
            }
            usleep(50_000)
        }
    }
    watchdog.start()
    if let input {
        inputPipe.fileHandleForWriting.write(Data(input.utf8))
        try inputPipe.fileHandleForWriting.close()
    }
    // Read both pipes concurrently so neither fills up and blocks the child.
    let errorData = Mutex<Data>(Data())
    let errorReader = Thread { errorData.withLock { $0 = errors.fileHandleForReading.readDataToEndOfFile() } }
    errorReader.start()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while errorReader.isExecuting || !errorReader.isFinished { usleep(1_000) }
    guard !killedByWatchdog.load(ordering: .relaxed) else {
        throw TestEnvironmentError("\(path) \(arguments.first ?? "") still running after \(timeout): killed")
    }
    return ProcessResult(
        status: process.terminationStatus, output: String(decoding: outputData, as: UTF8.self),
        errors: String(decoding: errorData.withLock { $0 }, as: UTF8.self))
}

/// Waits for a background program (`startProgram`) to exit without blocking a
/// cooperative-pool thread; kills it and fails the test after `timeout`.
public func waitForExit(_ process: Process, timeout: Duration = .seconds(120)) async throws {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning {
        guard ContinuousClock.now < deadline else {
            kill(process.processIdentifier, SIGKILL)
            throw TestEnvironmentError("\(process.executableURL?.lastPathComponent ?? "program") still running after \(timeout): killed")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`.
public func waitUntil(_ timeout: Duration = .seconds(60), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestEnvironmentError("condition not reached within \(timeout)") }
        try await Task.sleep(for: .milliseconds(100))
    }
}
