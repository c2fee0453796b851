import Foundation
import Postgres
import Storage
import TestSupport
import Testing
import VaultCrypto

/// /metrics and /health of a running `ingest`, including through a database outage.
@Suite("metrics and health")
struct OperationsTests {
    func counter(_ name: String, in metrics: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test("/metrics counters move during a run; /health/ready follows a PostgreSQL outage; nothing is lost")
    func metricsAndReadiness() async throws {
        let postgres = try await PrivatePostgres.start()
        defer { Task { await postgres.destroy() } }
        let migration = try await TestDatabase.connect(postgres.url)
        try await Schema.migrate(migration, logger: TestEnvironment.logger)
        await migration.close()
        let keys = try TestKeys.create()
        try await keys.register(in: postgres.url)
        let queue = try await AWSCLI.createQueue("metrics")
        let port = try await freePort()
        let base = "http://127.0.0.1:\(port)"

        let ingest = try startProgram(
            "ingest",
            [
                "run", "--queue-url", queue, "--keys-dir", try keys.ingestKeysDirectory(), "--database-url", postgres.url,
                "--batch-size", "10", "--wait-seconds", "1", "--http-port", String(port), "--http-host", "127.0.0.1",
            ])
        defer { if ingest.isRunning { kill(ingest.processIdentifier, SIGKILL) } }
        try await waitUntil { (try? await httpGet("\(base)/health/ready").status) == 200 }
        try await waitUntil { (try? await httpGet("\(base)/metrics").body.contains("ingest_ready 1")) == true }
        #expect(try await httpGet("\(base)/health/live").status == 200)
        #expect(try await httpGet("\(base)/nope").status == 404)
        // The container HEALTHCHECK: `ingest health` against the same port.
        let executable = try TestEnvironment.executable("ingest")
        #expect(try await runProgram(executable, ["health", "--port", String(port), "--check", "ready"]).status == 0)

        let first = try await httpGet("\(base)/metrics")
        #expect(first.status == 200)
        #expect(first.body.contains("ingest_ready 1"))
        #expect(first.body.contains(#"ingest_key_version{kind="tokenization"} 1"#))
        let bodies = (0..<40).map {
            #"{"user_id": "m\#($0)", "app_version": "1.0", "device_type": "ios", "ip": "10.9.0.\#($0)", "locale": null, "device_id": "d\#($0)"}"#
        }
        try await AWSCLI.send(queue, bodies: bodies + ["{broken"])
        try await waitUntil {
            let metrics = try await httpGet("\(base)/metrics").body
            return counter("ingest_rows_written_total", in: metrics) == 40
                && counter(#"ingest_messages_quarantined_total{reason="invalid_json"}"#, in: metrics) == 1
        }
        let metrics = try await httpGet("\(base)/metrics").body
        #expect(counter("ingest_messages_received_total", in: metrics) == 41)
        #expect(metrics.contains(#"ingest_messages_quarantined_total{reason="invalid_json"} 1"#))
        #expect(metrics.contains("ingest_batch_duration_seconds_bucket"))
        #expect(!metrics.contains("10.9.0."))
        // Process metrics, so the memory goal can be alerted on, and the build.
        let resident = counter("process_resident_memory_bytes", in: metrics) ?? 0
        #expect(resident > 1_000_000 && resident < 1_000_000_000)
        #expect(counter("process_open_fds", in: metrics) ?? 0 > 5)
        #expect(metrics.contains("process_cpu_seconds_total") && metrics.contains("process_start_time_seconds"))
        #expect(metrics.contains(#"ingest_build_info{"#) && metrics.contains(#"version="0.11.0""#))
        // The whole scrape passes Prometheus's own linter.
        let lint = try await runProgram("/usr/bin/env", ["promtool", "check", "metrics"], input: metrics)
        #expect(lint.status == 0, "promtool check metrics: \(lint.output)\(lint.errors)")

        // Outage: readiness drops, messages wait, and everything lands afterwards.
        try await postgres.stopServer()
        try await waitUntil(.seconds(30)) { (try? await httpGet("\(base)/health/ready"))?.status == 503 }
        let unready = try await httpGet("\(base)/health/ready")
        #expect(unready.body.contains("database unreachable"))
        let probe = try await runProgram(executable, ["health", "--port", String(port), "--check", "ready"])
        #expect(probe.status != 0 && probe.errors.contains("answered 503"))
        #expect(try await runProgram(executable, ["health", "--port", String(port), "--check", "live"]).status == 0)
        #expect(try await httpGet("\(base)/metrics").body.contains(#"ingest_dependency_up{dependency="database"} 0"#))
        try await AWSCLI.send(
            queue,
            bodies: (40..<60).map {
                #"{"user_id": "m\#($0)", "app_version": "1.0", "device_type": "ios", "ip": "10.9.0.\#($0)", "locale": null, "device_id": "d\#($0)"}"#
            })
        try await Task.sleep(for: .seconds(3))
        try await postgres.startServer()
        try await waitUntil(.seconds(60)) { (try? await httpGet("\(base)/health/ready").status) == 200 }
        try await waitUntil(.seconds(60)) { counter("ingest_rows_written_total", in: try await httpGet("\(base)/metrics").body) == 60 }
        let after = try await httpGet("\(base)/metrics").body
        #expect((counter(#"ingest_retries_total{dependency="database"}"#, in: after) ?? 0) > 0)
        kill(ingest.processIdentifier, SIGTERM)
        try await waitForExit(ingest)
        #expect(ingest.terminationStatus == 0)
        let gone = try await runProgram(executable, ["health", "--port", String(port)])
        #expect(gone.status != 0 && gone.errors.contains("did not answer"))
        let check = try await TestDatabase.connect(postgres.url)
        #expect(try await check.query("SELECT count(DISTINCT user_id) AS n FROM user_logins")[0].int("n") == 60)
        #expect(try await check.query("SELECT count(*) AS n FROM user_logins")[0].int("n") == 60)
        await check.close()
        await postgres.destroy()
    }
}
