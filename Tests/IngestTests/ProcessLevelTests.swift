import Foundation
import Ingest
import Postgres
import Storage
import TestSupport
import Testing
import VaultCrypto

/// Tests that run the real `ingest` binary: what an operator would see, and
/// what survives `kill -9`.
@Suite("ingest as a process")
struct ProcessLevelTests {
    func arguments(_ harness: IngestHarness, _ extra: [String]) -> [String] {
        [
            "run", "--queue-url", harness.queueURL, "--keys-dir", harness.ingestKeys,
            "--database-url", harness.databaseURL,
        ] + extra
    }

    @Test("no original IP or device id in a dump of the whole database or in the logs")
    func noPlaintextPII() async throws {
        let harness = try await IngestHarness.make()
        let bodies = try sampleBodies() + generatedBodies(count: 200, seed: 7)
        try await Boto3.send(harness.queueURL, bodies: bodies)
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"), arguments(harness, ["--until-empty"]),
            environment: ["LOG_LEVEL": "trace"])
        #expect(run.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 299)
        let dump = try await runProgram("\(try TestEnvironment.variable("PSEUDO_PG_BIN"))/pg_dump", ["--no-owner", harness.databaseURL])
        #expect(dump.status == 0)
        #expect(dump.output.contains("COPY public.user_logins"))
        let originals = Set(bodies.flatMap { [field("ip", in: $0), field("device_id", in: $0)].compactMap { $0 } })
        #expect(originals.count > 300)
        // Counted, so a failure reports how many leaked without printing them.
        let leakedInDump = originals.filter { dump.output.contains($0) }.count
        let leakedInLogs = originals.filter { run.output.contains($0) || run.errors.contains($0) }.count
        #expect(leakedInDump == 0)
        #expect(leakedInLogs == 0)
    }

    @Test("with no static keys, ingest signs with web-identity credentials from STS (IRSA), as deployed on EKS")
    func webIdentity() async throws {
        let harness = try await IngestHarness.make()
        try await AWSCLI.send(harness.queueURL, bodies: try sampleBodies())
        let token = NSTemporaryDirectory() + "irsa-token-\(UUID().uuidString)"
        try "eyJhbGciOiJSUzI1NiJ9.projected.token".write(toFile: token, atomically: true, encoding: .utf8)
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"), arguments(harness, ["--until-empty"]),
            environment: [
                "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/pseudonymizer-ingest",
                "AWS_WEB_IDENTITY_TOKEN_FILE": token, "AWS_ENDPOINT_URL_STS": try TestEnvironment.variable("AWS_ENDPOINT_URL"),
            ])
        #expect(run.status == 0, "\(run.errors)")
        #expect(run.errors.contains("AWS credentials obtained") && run.errors.contains("source=web identity"))
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == 99)
    }

    @Test("kill -9 in mid-run, then restart: every valid message written exactly once, every invalid one quarantined once")
    func killAndRestart() async throws {
        let harness = try await IngestHarness.make()
        // moto scans the whole queue on every call, so the queue stays small.
        let valid = generatedBodies(count: 600, seed: 11)
        let invalid = (0..<10).map { #"{"broken": \#($0)"# }
        try await Boto3.send(harness.queueURL, bodies: valid + invalid)

        // Short long-polls: a killed client's pending long poll can still take
        // messages on the emulator's side until its wait ends.
        let process = try startProgram(
            "ingest", arguments(harness, ["--batch-size", "10", "--visibility-timeout", "5", "--wait-seconds", "1"]))
        let deadline = ContinuousClock.now + .seconds(120)
        // Once its first batches are committed, freeze further commits (a lock
        // its COPY must wait for) so the kill lands mid-run even on a slow machine.
        let watcher = try await harness.connect()
        while try await watcher.query("SELECT count(*) AS n FROM user_logins")[0].int("n") == 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await watcher.execute("BEGIN")
        try await watcher.execute("LOCK TABLE user_logins IN SHARE MODE")
        let before = try await watcher.query("SELECT count(*) AS n FROM user_logins")[0].int("n")
        try await Task.sleep(for: .milliseconds(500))  // writers are now blocked mid-transaction
        kill(process.processIdentifier, SIGKILL)
        try await waitForExit(process)
        try await watcher.execute("COMMIT")
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(before > 0 && before < valid.count, "killed after \(before) rows")

        // Messages it held become visible again after their 5 s lease.
        try await Task.sleep(for: .seconds(7))
        let restart = try await runProgram(
            try TestEnvironment.executable("ingest"), arguments(harness, ["--until-empty", "--batch-size", "100"]))
        #expect(restart.status == 0, "\(restart.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == valid.count)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == valid.count)
        #expect(try await harness.scalar("SELECT count(*) FROM quarantine") == invalid.count)
        #expect(try await harness.scalar("SELECT count(*) FROM ingest_receipts") == valid.count + invalid.count)
        // The emulator can still hand a message to the killed process's pending
        // poll after it died (a lease nobody holds; a loaded CI run showed one in
        // flight at this point): once the longest lease (60 s) has run out, what
        // is left is a redelivery, which a further run must delete and add
        // nothing for.
        try await waitUntil(.seconds(75)) { try await AWSCLI.depth(harness.queueURL).inFlight == 0 }
        if try await AWSCLI.depth(harness.queueURL).visible > 0 {
            let again = try await runProgram(
                try TestEnvironment.executable("ingest"), arguments(harness, ["--until-empty", "--batch-size", "100"]))
            #expect(again.status == 0 && again.errors.contains("written=0"), "\(again.errors)")
        }
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == valid.count)
        let depth = try await AWSCLI.depth(harness.queueURL)
        #expect(depth.visible == 0 && depth.inFlight == 0, "restart log: \(restart.errors)")
    }

    @Test("SIGTERM: stops receiving, commits and deletes what it holds, exits 0 promptly")
    func gracefulShutdown() async throws {
        let harness = try await IngestHarness.make()
        let valid = generatedBodies(count: 300, seed: 13)
        try await Boto3.send(harness.queueURL, bodies: valid)
        let process = try startProgram(
            "ingest", arguments(harness, ["--batch-size", "10", "--visibility-timeout", "5", "--wait-seconds", "1"]))
        let deadline = ContinuousClock.now + .seconds(120)
        while try await harness.scalar("SELECT count(*) FROM user_logins") < 30 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let signalled = ContinuousClock.now
        kill(process.processIdentifier, SIGTERM)
        while process.isRunning && ContinuousClock.now - signalled < .seconds(40) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning, "still running 40 s after SIGTERM")
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        // Everything it claimed was committed and acknowledged: the rows match the
        // receipts, and whatever it deleted is gone from the queue.
        let written = try await harness.scalar("SELECT count(*) FROM user_logins")
        #expect(written == (try await harness.scalar("SELECT count(*) FROM ingest_receipts")))
        // A receive cut off by the shutdown leaves its messages invisible until their lease ends.
        try await Task.sleep(for: .seconds(6))
        let restart = try await runProgram(try TestEnvironment.executable("ingest"), arguments(harness, ["--until-empty"]))
        #expect(restart.status == 0)
        #expect(try await harness.scalar("SELECT count(DISTINCT user_id) FROM user_logins") == valid.count)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins") == valid.count)
    }

    @Test(
        "configuration errors end with one line and a non-zero code",
        arguments: [
            (["run", "--queue-url", "http://127.0.0.1:1/1/q", "--keys-dir", "/nonexistent"], Int32(78), "does not exist"),
            (["run", "--keys-dir", "/nonexistent"], Int32(64), "no source"),
            (["run", "--queue-url", "not a url", "--keys-dir", "/nonexistent"], Int32(78), "not an http(s) SQS queue URL"),
            (["run", "--from-file", "/dev/null", "--pollers", "0"], Int32(64), "out of range"),
            (
                ["run", "--queue-url", "http://sqs.example.com/1/q", "--keys-dir", "/nonexistent"], Int32(78),
                "plain http to a host that is not this machine"
            ),
        ])
    func configurationErrors(arguments: [String], status: Int32, message: String) async throws {
        let result = try await runProgram(try TestEnvironment.executable("ingest"), arguments)
        #expect(result.status == status)
        #expect(result.errors.contains(message), "stderr: \(result.errors)")
    }

    @Test("an unreachable database at start: ingest waits, unready, and gives up after --startup-timeout with exit 75 and one error line")
    func unreachableDatabase() async throws {
        let keys = try TestKeys.create()
        let result = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--from-file", "/dev/null", "--keys-dir", try keys.ingestKeysDirectory(),
                "--database-url", "postgresql://nobody@127.0.0.1:1/none", "--startup-timeout", "2",
            ])
        #expect(result.status == 75)
        let errors = result.errors.split(separator: "\n").filter { $0.contains("ingest: error:") }
        #expect(errors.count == 1)
        #expect(errors.first?.contains("gave up waiting after 2") == true && errors.first?.contains("Connection refused") == true)
    }

    @Test("a file run on a database that was never migrated ends at once, exit 78, saying to run ingest migrate")
    func fileRunOnUnmigratedDatabase() async throws {
        let keys = try TestKeys.create()
        let result = try await runProgram(
            try TestEnvironment.executable("ingest"),
            [
                "run", "--from-file", "/dev/null", "--keys-dir", try keys.ingestKeysDirectory(),
                "--database-url", try await TestDatabase.createEmpty("unmigrated"),
            ], timeout: .seconds(60))
        #expect(result.status == 78)
        #expect(result.errors.contains("this build needs \(Schema.latestVersion): run `ingest migrate`; nothing was read"))
    }

    @Test(
        "started while PostgreSQL is down: stays up and unready, retrying; ready and working once it is back; SIGTERM in a later outage exits 75 at once"
    )
    func startsBeforeTheDatabase() async throws {
        let postgres = try await PrivatePostgres.start()
        defer { Task { await postgres.destroy() } }
        let setup = try await TestDatabase.connect(postgres.url)
        try await Schema.migrate(setup, logger: TestEnvironment.logger)
        await setup.close()
        let keys = try TestKeys.create()
        try await keys.register(in: postgres.url)
        try await postgres.stopServer()

        let queue = try await AWSCLI.createQueue("late-db")
        let port = try await freePort()
        let ingest = try startProgram(
            "ingest",
            [
                "run", "--queue-url", queue, "--keys-dir", try keys.ingestKeysDirectory(), "--database-url", postgres.url,
                "--wait-seconds", "1", "--http-port", String(port), "--http-host", "127.0.0.1",
            ])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }
        try await waitUntil { (try? await httpGet("http://127.0.0.1:\(port)/health/live").status) == 200 }
        let unready = try await httpGet("http://127.0.0.1:\(port)/health/ready")
        #expect(unready.status == 503)
        #expect(unready.body.contains("database unreachable"))
        try await Task.sleep(for: .seconds(3))
        #expect(ingest.isRunning)

        try await postgres.startServer()
        try await waitUntil(.seconds(60)) { (try? await httpGet("http://127.0.0.1:\(port)/health/ready").status) == 200 }
        try await AWSCLI.send(queue, bodies: try sampleBodies())
        let check = try await TestDatabase.connect(postgres.url)
        try await waitUntil(.seconds(60)) { try await check.query("SELECT count(*) AS n FROM user_logins")[0].int("n") == 99 }
        await check.close()

        // Down again with a batch in hand (a writer retrying it): SIGTERM does not wait for it.
        func databaseRetries() async -> Double {
            let metrics = (try? await httpGet("http://127.0.0.1:\(port)/metrics").body) ?? ""
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("ingest_retries_total{dependency=\"database\"}") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
        }
        let retriesBefore = await databaseRetries()
        try await postgres.stopServer()
        try await AWSCLI.send(queue, bodies: generatedBodies(count: 5, seed: 16))
        try await waitUntil(.seconds(60)) { await databaseRetries() > retriesBefore }
        kill(ingest.processIdentifier, SIGTERM)
        try await waitUntil(.seconds(20)) { !ingest.isRunning }
        #expect(ingest.terminationStatus == 75)
    }
}
