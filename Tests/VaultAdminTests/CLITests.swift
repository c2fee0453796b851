import Foundation
import Postgres
import TestSupport
import Testing
import VaultCrypto

/// The command lines as operators and job schedulers use them.
@Suite("the command-line tools")
struct CLITests {
    func json(_ output: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any]
    }

    @Test("--version on both tools")
    func version() async throws {
        for tool in ["ingest", "vault"] {
            let result = try await runProgram(
                try TestEnvironment.executable(tool), ["--version"],
                environment: ["PSEUDONYMIZER_REVISION": "abc1234"])
            #expect(result.status == 0)
            #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix("(revision abc1234)"))
        }
    }

    @Test("exit codes: bad input 65, not found or erased 66, database unreachable 69, a job the database left midway 75, a bad URL 78")
    func exitCodes() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 20))
        let token = harness.originals.keys.sorted()[0]
        let unknown = "ip_t1_" + String(repeating: "A", count: 43)
        #expect(try await harness.vault(["recover", "--token", unknown, "--reason", "X"]).status == 66)
        #expect(try await harness.vault(["recover", "--token", "not-a-token", "--reason", "X"]).status == 65)
        let invalidIP = try await harness.vault(["lookup", "--ip", "999.1.1.1", "--reason", "X"])
        #expect(invalidIP.status == 65 && invalidIP.errors.contains("not a valid IPv4 or IPv6 address"))
        let badURL = try await harness.vault(["audit", "log", "--database-url", "postgress:/x"])
        #expect(badURL.status == 78 && badURL.errors.contains("fix DATABASE_URL"))
        let down = try await harness.vault([
            "recover", "--token", token, "--reason", "X", "--database-url", "postgresql://x@127.0.0.1:1/none",
        ])
        #expect(down.status == 69 && down.errors.contains("cannot reach PostgreSQL"))
        let forget = try await harness.vault(["forget", "--yes", "--token", token, "--reason", "X"])
        #expect(forget.status == 0, "\(forget.errors)")
        #expect(try await harness.vault(["recover", "--token", token, "--reason", "X"]).status == 66)

        // retokenize, its connection cut while it waits on a lock: not finished, run it again.
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "X"]).status == 0)
        let owner = try await harness.connect()
        try await owner.execute("BEGIN")
        try await owner.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        let job = Task { try await harness.vault(["retokenize", "--reason", "X"]) }
        let watcher = try await harness.connect()
        var terminated = false
        for _ in 0..<100 where !terminated {
            try await Task.sleep(for: .milliseconds(100))
            terminated = try await watcher.query(
                """
                SELECT count(pg_terminate_backend(pid)) > 0 AS done FROM pg_stat_activity
                WHERE application_name = 'vault' AND wait_event_type = 'Lock' AND datname = current_database()
                """)[0].bool("done")
        }
        try await owner.execute("ROLLBACK")
        let cut = try await job.value
        #expect(terminated)
        #expect(cut.status == 75, "\(cut.errors)")
        #expect(cut.errors.contains("run it again when the database is back, it resumes"))
        let again = try await harness.vault(["retokenize", "--reason", "X"])
        #expect(again.status == 0, "\(again.errors)")
    }

    @Test("typos are named: a misspelt option or command gets 'did you mean', a bare token is sent to --token; all usage errors (64)")
    func typos() async throws {
        let vault = try TestEnvironment.executable("vault")
        let cases: [([String], String)] = [
            (["recover", "--tokn", "T", "--reason", "R"], "'--tokn' is not an option of this command: did you mean --token?"),
            (["recover", "--token", "T", "--reasn", "R"], "did you mean --reason?"),
            (["recovr", "--token", "T"], "'recovr' is not a command of vault: did you mean 'recover'?"),
            (["key", "status"], "did you mean 'keys'?"),
            (["audit", "lgo"], "did you mean 'log'?"),
            (["recover", "ip_t1_" + String(repeating: "A", count: 43), "--reason", "R"], "a token is given with --token"),
            (["lookup", "10.1.2.3", "--reason", "R"], "an argument of 8 characters was not expected"),
            (["lookup", "someones-device", "--reason", "R"], "an argument of 15 characters was not expected"),
            (["mydevice"], "an argument of 8 characters is not a command of vault"),
        ]
        for (arguments, message) in cases {
            let result = try await runProgram(vault, arguments)
            #expect(result.status == 64, "\(arguments)")
            #expect(result.errors.contains(message), "\(arguments): \(result.errors)")
            #expect(
                !result.errors.contains("10.1.2.3") && !result.errors.contains("someones-device") && !result.errors.contains("mydevice"))
        }
        let ingest = try await runProgram(try TestEnvironment.executable("ingest"), ["run", "--queue-ur", "x"])
        #expect(ingest.status == 64 && ingest.errors.contains("did you mean --queue-url?"))
        // The table is in every --help.
        let help = try await runProgram(vault, ["--help"])
        let words = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(words.contains("66 not found") && words.contains("69 a dependency is unavailable"))
    }

    @Test(
        "man pages and completions: installed by scripts/install-docs, rendered without warnings, loaded by bash and zsh, checked current")
    func manualsAndCompletions() async throws {
        let prefix = NSTemporaryDirectory() + "docs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: prefix) }
        let script = TestEnvironment.repositoryRoot + "/scripts/install-docs"
        let binDirectory = (try TestEnvironment.executable("vault") as NSString).deletingLastPathComponent
        let install = try await runProgram(script, ["--bin-dir", binDirectory, "--prefix", prefix])
        #expect(install.status == 0, "\(install.errors)")
        for tool in ["ingest", "vault"] {
            let page = "\(prefix)/share/man/man1/\(tool).1"
            let rendered = try await runProgram(
                "/usr/bin/man", ["--warnings", "-l", page], environment: ["MANWIDTH": "80", "LC_ALL": "C.UTF-8"])
            #expect(rendered.status == 0 && rendered.errors.isEmpty, "\(tool): \(rendered.errors)")
            let words = rendered.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "66 not found"] {
                #expect(words.contains(section), "\(tool).1 has no \(section)")
            }
            let bash = try await runProgram(
                "/bin/bash", ["-c", "source \(prefix)/share/bash-completion/completions/\(tool) && complete -p \(tool)"])
            #expect(bash.status == 0 && bash.output.contains(tool), "\(bash.errors)")
            let zsh = try await runProgram(
                "/usr/bin/zsh",
                ["-fc", "autoload -U compinit && compinit -u && source \(prefix)/share/zsh/site-functions/_\(tool) && print ok"])
            #expect(zsh.status == 0 && zsh.output.contains("ok"), "\(zsh.errors)")
        }
        #expect(try await runProgram(script, ["--bin-dir", binDirectory, "--prefix", prefix, "--check"]).status == 0)
        try "stale".write(toFile: "\(prefix)/share/man/man1/vault.1", atomically: true, encoding: .utf8)
        let stale = try await runProgram(script, ["--bin-dir", binDirectory, "--prefix", prefix, "--check"])
        #expect(stale.status == 1 && stale.errors.contains("vault.1 is missing or out of date"))
    }

    @Test("every command's --help has examples")
    func helpExamples() async throws {
        for tool in ["ingest", "vault"] {
            let manual = try await runProgram(try TestEnvironment.executable(tool), ["--generate-manual"])
            let sections = manual.output.components(separatedBy: ".SS ").dropFirst()
            #expect(!sections.isEmpty)
            for section in sections {
                let name = section.prefix(while: { $0 != "\n" })
                #expect(section.contains("Examples:"), "\(name) has no examples")
            }
        }
    }

    @Test(
        "vault doctor: every check passes on a sound setup; a wrong passphrase fails it (77) though no job has work; so does an audit key that is not the log's (65)"
    )
    func doctor() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let sound = try await harness.vault(["doctor"])
        #expect(sound.status == 0, "\(sound.output)\(sound.errors)")
        #expect(sound.output.contains("ok   recovery private keys: the passphrase (or KMS) opens v1"))
        let retokenize = try await harness.vault(["retokenize", "--reason", "nothing pending"])
        #expect(retokenize.status == 0, "nothing to do, so nothing to unlock")

        let wrong = NSTemporaryDirectory() + "wrong-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: wrong) }
        _ = FileManager.default.createFile(
            atPath: wrong, contents: Data("certainly not the passphrase".utf8), attributes: [.posixPermissions: 0o600])
        let refused = try await harness.vault(["doctor", "--passphrase-file", wrong, "--json"])
        #expect(refused.status == 77)
        let checks = (json(refused.output)?["checks"] as? [[String: Any]]) ?? []
        #expect(checks.first { $0["name"] as? String == "recovery private keys" }?["ok"] as? Bool == false)
        #expect(checks.filter { $0["ok"] as? Bool == true }.count == 5)

        // keys rotate --dry-run: the same checks, the version it would add, nothing changed.
        let before = try await harness.scalar("SELECT count(*) FROM key_versions")
        let plan = try await harness.vault(["keys", "rotate", "--recovery", "--dry-run", "--reason", "D"])
        #expect(plan.status == 0 && plan.output.contains("a run would add recovery key v2 (now: v1)"), "\(plan.output)\(plan.errors)")
        let blocked = try await harness.vault(["keys", "rotate", "--recovery", "--dry-run", "--reason", "D", "--passphrase-file", wrong])
        #expect(blocked.status == 77 && blocked.output.contains("FAIL recovery private keys"))
        #expect(try await harness.scalar("SELECT count(*) FROM key_versions") == before)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'keys.rotate'") == 0)

        // Another installation's audit key.
        let other = try TestKeys.create()
        let swapped = NSTemporaryDirectory() + "swapped-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: swapped) }
        try FileManager.default.copyItem(atPath: harness.keys.store.directory, toPath: swapped)
        try FileManager.default.removeItem(atPath: swapped + "/audit-key.json")
        try FileManager.default.copyItem(atPath: other.store.auditKeyPath, toPath: swapped + "/audit-key.json")
        let foreign = try await harness.vault(["doctor", "--keys-dir", swapped])
        #expect(foreign.status == 65 && foreign.output.contains("FAIL audit key"), "\(foreign.output)")
    }

    @Test(
        "hygiene: JSON logs carry numbers as numbers; --version names the checkout's commit; a missing passphrase file is named as one; maintain logs nothing about SQS"
    )
    func hygiene() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let file = NSTemporaryDirectory() + "hygiene-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try mixedBodies(count: 3).joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let run = try await runProgram(
            try TestEnvironment.executable("ingest"), ["run", "--from-file", file],
            environment: [
                "KEYS_DIR": try harness.keys.ingestKeysDirectory(), "DATABASE_URL": harness.databaseURL, "LOG_FORMAT": "json",
            ])
        #expect(run.status == 0, "\(run.errors)")
        let finished = run.errors.split(separator: "\n").compactMap { json(String($0)) }.first {
            $0["message"] as? String == "ingest finished"
        }
        #expect(finished?["written"] is Int && finished?["written"] as? Int == 3, "\(run.errors)")
        #expect(finished?["seconds"] is Double || finished?["seconds"] is Int)

        let git = try await runProgram("/usr/bin/git", ["-C", TestEnvironment.repositoryRoot, "rev-parse", "--short=12", "HEAD"])
        let version = try await runProgram(
            try TestEnvironment.executable("vault"), ["--version"], environment: ["PSEUDONYMIZER_REVISION": ""])
        #expect(git.status != 0 || version.output.contains("(revision \(git.output.trimmingCharacters(in: .whitespacesAndNewlines)))"))

        let missing = try await harness.vault([
            "recover", "--token", harness.originals.keys.sorted()[0], "--reason", "H", "--passphrase-file", "/nonexistent/passphrase",
        ])
        #expect(missing.status == 78 && missing.errors.contains("it is the recovery-key passphrase file"))
        #expect(!missing.errors.contains("vault keys init"))

        let maintain = try await runProgram(
            try TestEnvironment.executable("ingest"), ["maintain", "--dry-run", "--database-url", harness.databaseURL],
            environment: ["LOG_LEVEL": "info"])
        #expect(maintain.status == 0 && !maintain.errors.contains("wire protocol"), "\(maintain.errors)")
    }

    @Test("every job command's --json is one JSON object")
    func jobSummaries() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 20))
        let token = harness.originals.keys.sorted()[0]
        let fresh = NSTemporaryDirectory() + "init-\(UUID().uuidString)"
        let runs: [(String, [String])] = [
            ("migrate", ["migrate", "--json"]),
            ("keys init", ["keys", "init", "--keys-dir", fresh, "--scrypt-log-n", "14", "--offline", "--json"]),
            ("keys register", ["keys", "register", "--reason", "J", "--json"]),
            ("keys rotate", ["keys", "rotate", "--tokenization", "--reason", "J", "--json"]),
            ("retokenize", ["retokenize", "--reason", "J", "--json"]),
            ("keys retire dry run", ["keys", "retire", "--tokenization", "1", "--dry-run", "--reason", "J", "--json"]),
            ("keys retire", ["keys", "retire", "--tokenization", "1", "--yes", "--reason", "J", "--json"]),
            ("keys rotate recovery", ["keys", "rotate", "--recovery", "--scrypt-log-n", "14", "--reason", "J", "--json"]),
            ("rewrap", ["rewrap", "--reason", "J", "--json"]),
            ("forget dry run", ["forget", "--tokens-file", "-", "--dry-run", "--reason", "J", "--json"]),
            ("audit verify", ["audit", "verify", "--json"]),
        ]
        for (name, arguments) in runs {
            let result =
                name == "migrate"
                ? try await harness.ingest(arguments)
                : try await harness.vault(arguments, input: name.hasPrefix("forget") ? token : nil)
            #expect(result.status == 0, "\(name): \(result.errors)")
            let object = json(result.output)
            #expect(object != nil, "\(name) printed \(result.output)")
        }
        let verify = json(try await harness.vault(["audit", "verify", "--json"]).output)
        #expect(verify?["intact"] as? Bool == true)
        #expect((verify?["head"] as? String)?.contains(":") == true)
    }

    @Test("an error found after parsing prints the subcommand's usage; LOG_FORMAT=json makes the fatal error one JSON line")
    func usageErrors() async throws {
        let vault = try await runProgram(try TestEnvironment.executable("vault"), ["audit", "log", "--since", "last tuesday"])
        #expect(vault.status == 64)
        #expect(vault.errors.contains("Usage: vault audit log"))
        let ingest = try await runProgram(
            try TestEnvironment.executable("ingest"), ["run", "--keys-dir", "/nonexistent"],
            environment: ["QUEUE_URL": "", "INGEST_FROM_FILE": ""])
        #expect(ingest.status == 64)
        #expect(ingest.errors.contains("Usage: ingest run"))
        #expect(ingest.errors.contains("See 'ingest run --help'"))
        let json = try await runProgram(
            try TestEnvironment.executable("ingest"), ["run", "--from-file", "/dev/null", "--keys-dir", "/nonexistent"],
            environment: ["LOG_FORMAT": "json"])
        #expect(json.status == 78)
        let lines = json.errors.split(separator: "\n")
        #expect(lines.count == 1)
        let object = self.json(String(lines.first ?? ""))
        #expect(object?["level"] as? String == "error" && object?["exit_code"] as? Int == 78)
        #expect((object?["message"] as? String)?.contains("tokenization.json does not exist") == true)
    }

    @Test("audit log --since takes a date, a timestamp or a duration")
    func since() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        #expect(try await harness.vault(["recover", "--token", harness.originals.keys.sorted()[0], "--reason", "S"]).status == 0)
        for since in ["1h", "2d12h", "2000-01-01", "2000-01-01T00:00:00Z"] {
            let result = try await harness.vault(["audit", "log", "--since", since])
            // The key set's registration, then the recovery.
            #expect(result.status == 0 && result.output.split(separator: "\n").count == 2, "--since \(since)")
        }
        #expect(try await harness.vault(["audit", "log", "--since", "2099-01-01"]).output.isEmpty)
    }

    @Test("audit log searches by action, token, reason (any case), actor, outcome and time; newest first; a limit says what it left out")
    func auditSearch() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let tokens = harness.originals.keys.sorted()
        for (token, reason) in [(tokens[0], "SAR-1 access request"), (tokens[1], "SAR-2"), (tokens[0], "sar-1 follow-up")] {
            #expect(try await harness.vault(["recover", "--token", token, "--reason", reason]).status == 0)
        }
        func rows(_ arguments: [String]) async throws -> [[String: Any]] {
            let result = try await harness.vault(["audit", "log", "--json"] + arguments)
            #expect(result.status == 0, "\(arguments): \(result.errors)")
            return result.output.split(separator: "\n").compactMap { json(String($0)) }
        }
        let ticket = try await rows(["--reason", "SAR-1"])
        #expect(ticket.compactMap { $0["reason"] as? String } == ["sar-1 follow-up", "SAR-1 access request"], "newest first")
        let sequences = ticket.compactMap { $0["seq"] as? Int }
        #expect(sequences.count == 2 && sequences[0] > sequences[1])
        #expect(try await rows(["--reason", "SAR-1", "--oldest-first"]).compactMap { $0["seq"] as? Int } == sequences.reversed())
        let token = try await rows(["--token", tokens[0], "--action", "recover"])
        #expect(token.count == 2 && token.allSatisfy { ($0["subject"] as? String)?.contains(tokens[0]) == true })
        #expect(try await rows(["--action", "recover", "--outcome", "revealed"]).count == 3)
        #expect(try await rows(["--action", "keys.register", "--action", "recover"]).count == 4)
        #expect(try await rows(["--actor", "nobody-at-all"]).isEmpty)
        let actor = try #require(ticket.first?["db_role"] as? String)
        #expect(try await rows(["--actor", actor, "--action", "recover"]).count == 3)
        #expect(try await rows(["--until", "2000-01-01"]).isEmpty)
        #expect(try await rows(["--since", "1h", "--action", "recover"]).count == 3)

        let limited = try await harness.vault(["audit", "log", "--json", "--action", "recover", "--limit", "1"])
        #expect(limited.output.split(separator: "\n").count == 1)
        #expect(limited.errors.contains("2 more matching rows not shown (--limit 1)"))
        let all = try await harness.vault(["audit", "log", "--action", "recover"])
        #expect(!all.errors.contains("not shown"))
    }

    @Test(
        "forget states its blast radius: the rows and users a token is on (counts, never whose), in the dry run, the prompt and the result")
    func forgetBlastRadius() async throws {
        let body = { (user: String, ip: String, device: String) in
            #"{"user_id": "\#(user)", "app_version": "1.0", "device_type": "ios", "ip": "\#(ip)", "locale": null, "device_id": "\#(device)"}"#
        }
        let harness = try await VaultHarness.make(bodies: [
            body("alice", "10.8.0.1", "dev-a"), body("alice", "10.8.0.1", "dev-a"), body("bob", "10.8.0.1", "dev-b"),
            body("carol", "10.8.0.2", "dev-c"),
        ])
        let shared = try #require(harness.originals.first { $0.value == "10.8.0.1" }?.key)
        let dryRun = try await harness.vault(["forget", "--token", shared, "--dry-run", "--reason", "GDPR-3", "--json"])
        #expect(dryRun.status == 0, "\(dryRun.errors)")
        let summary = json(dryRun.output)
        #expect(summary?["rows"] as? Int == 3 && summary?["users"] as? Int == 2)
        let text = try await harness.vault(["forget", "--token", shared, "--dry-run", "--reason", "GDPR-3"])
        #expect(text.output.contains("would erase, on 3 rows of 2 users"))
        #expect(text.output.contains("in all: 3 rows of 2 users carry this token"))
        #expect(!text.output.contains("alice") && !text.output.contains("bob"))
        // The confirmation names it before anything happens (no terminal here: refused).
        let prompt = try await runProgram(
            "/usr/bin/setsid", ["--wait", try TestEnvironment.executable("vault"), "forget", "--token", shared, "--reason", "GDPR-3"],
            environment: ["KEYS_DIR": harness.keys.store.directory, "DATABASE_URL": harness.databaseURL])
        #expect(prompt.errors.contains("This erases the originals behind 1 token (3 rows of 2 users carry this token)"))
        let device = try #require(harness.originals.first { $0.value == "dev-c" }?.key)
        let done = try await harness.vault(["forget", "--token", device, "--yes", "--reason", "GDPR-4", "--json"])
        #expect(json(done.output)?["rows"] as? Int == 1 && json(done.output)?["users"] as? Int == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 1)
    }

    @Test("forget and retire ask on a terminal: refused without an answer, done with --yes")
    func confirmation() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let token = harness.originals.keys.sorted()[0]
        // setsid: no controlling terminal, as in a job.
        let refused = try await runProgram(
            "/usr/bin/setsid", ["--wait", try TestEnvironment.executable("vault"), "forget", "--token", token, "--reason", "C"],
            environment: ["KEYS_DIR": harness.keys.store.directory, "DATABASE_URL": harness.databaseURL])
        #expect(refused.status == 64)
        #expect(refused.errors.contains("run it on a terminal to confirm, or pass --yes"))
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 0)
        let retire = try await runProgram(
            "/usr/bin/setsid",
            [
                "--wait", try TestEnvironment.executable("vault"), "keys", "retire", "--recovery", "1",
                "--reason", "C",
            ],
            environment: ["KEYS_DIR": harness.keys.store.directory, "DATABASE_URL": harness.databaseURL])
        #expect(retire.status == 64)
        let done = try await harness.vault(["forget", "--yes", "--token", token, "--reason", "C"])
        #expect(done.status == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 1)
    }

    @Test(
        "tokens piped into recover on a terminal: the passphrase is asked on /dev/tty and the values come out; with no terminal, the documented error"
    )
    func passphrasePromptWithPipedInput() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 3))
        let token = harness.originals.keys.sorted()[0]
        let passphrase = try String(contentsOfFile: harness.keys.passphraseFile, encoding: .utf8)
            .trimmingCharacters(in: .newlines)
        let pipeline = "printf '%s\\n' \(token) | \(try TestEnvironment.executable("vault")) recover --tokens-file - --reason SAR-9"
        let environment = [
            "KEYS_DIR": harness.keys.store.directory, "DATABASE_URL": harness.databaseURL, "VAULT_PASSPHRASE_FILE": "",
        ]
        // A pseudo-terminal, as an officer's shell has: the prompt is answered
        // once it appears (typing earlier would be flushed with the echo).
        let typed = try await runProgram(
            "/usr/bin/python3",
            [
                "-c",
                """
                import os, pty, select, sys, time
                pid, fd = pty.fork()
                if pid == 0:
                    os.execv("/bin/sh", ["/bin/sh", "-c", sys.argv[1]])
                seen, answered, deadline = b"", False, time.time() + 120
                while time.time() < deadline:
                    if not select.select([fd], [], [], 0.2)[0]:
                        continue
                    try:
                        chunk = os.read(fd, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    seen += chunk
                    if not answered and b"Passphrase for the recovery private key: " in seen:
                        os.write(fd, sys.argv[2].encode() + b"\\n")
                        answered = True
                sys.stdout.buffer.write(seen)
                sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
                """,
                pipeline, passphrase,
            ], environment: environment)
        // Booleans, so that a failure never prints the terminal's output (the value).
        let prompted = typed.output.contains("Passphrase for the recovery private key: ")
        let revealed = typed.output.contains(harness.originals[token]!)
        let echoed = typed.output.contains(passphrase)
        #expect(typed.status == 0, "exit \(typed.status)")
        #expect(prompted && revealed && !echoed)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'recover' AND reason = 'SAR-9'") == 1)

        // No controlling terminal at all (a job): the error says what to pass.
        let job = try await runProgram("/usr/bin/setsid", ["--wait", "/bin/sh", "-c", pipeline], environment: environment)
        let explained = job.errors.contains(
            "no passphrase given: pass --passphrase-file FILE, set VAULT_PASSPHRASE_FILE, or run on a terminal")
        let leaked = job.output.contains(harness.originals[token]!)
        #expect(job.status == 78 && explained && !leaked)
    }

    @Test("forget --ip erases the value's entry under every key version, in one audited transaction")
    func forgetByValue() async throws {
        let bodies = mixedBodies(count: 5)
        let harness = try await VaultHarness.make(bodies: bodies)
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "F"]).status == 0)
        // The same address arrives again under v2 (from a replica with the new key).
        let ingestKeys = try harness.keys.ingestKeysDirectory()
        try FileManager.default.removeItem(atPath: "\(ingestKeys)/tokenization.json")
        try FileManager.default.copyItem(atPath: harness.keys.store.tokenizationPath, toPath: "\(ingestKeys)/tokenization.json")
        let file = NSTemporaryDirectory() + "again-\(UUID().uuidString).jsonl"
        try
            (#"{"user_id": "again", "app_version": "1.0", "device_type": "ios", "ip": "2001:db8::1", "locale": null, "device_id": "d"}"#
            + "\n")
            .write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await harness.ingest(["run", "--from-file", file]).status == 0)

        let forget = try await harness.vault(["forget", "--ip-file", "-", "--yes", "--reason", "GDPR-9", "--json"], input: "2001:db8::1\n")
        #expect(forget.status == 0, "\(forget.errors)")
        let summary = json(forget.output)
        #expect(summary?["erased"] as? Int == 2)
        #expect((summary?["tokens"] as? [[String: Any]])?.compactMap { $0["outcome"] as? String } == ["erased", "erased"])
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE erased_at IS NOT NULL") == 2)
        #expect(try await harness.scalar("SELECT count(DISTINCT token_key_version) FROM vault_entries WHERE erased_at IS NOT NULL") == 2)
        // One transaction: the two rows share the server's transaction time.
        #expect(try await harness.scalar("SELECT count(DISTINCT at) FROM audit_log WHERE action = 'forget' AND outcome = 'erased'") == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'forget' AND outcome = 'erased'") == 2)
        // Each value was opened first, audited, to record its suppression.
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'forget' AND outcome = 'revealed'") == 2)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_suppressions") == 1)
        #expect(!forget.output.contains("2001:db8::1"))
    }

    @Test("retokenize stopped by SIGTERM exits 75 and says so in the audit log; the next run finishes")
    func interruptedRetokenize() async throws {
        let harness = try await VaultHarness.make(bodies: rotationBodies(prefix: "sig", count: 4000))
        #expect(try await harness.vault(["keys", "rotate", "--tokenization", "--reason", "SIG"]).status == 0)
        let process = try startProgram(
            "vault", ["retokenize", "--reason", "SIG", "--batch-size", "20"],
            environment: [
                "KEYS_DIR": harness.keys.store.directory,
                "VAULT_PASSPHRASE_FILE": harness.keys.passphraseFile, "DATABASE_URL": harness.databaseURL,
            ])
        try await waitUntil(.seconds(60)) { try await harness.scalar("SELECT count(*) FROM token_lineage") > 0 }
        kill(process.processIdentifier, SIGTERM)
        try await waitUntil(.seconds(60)) { !process.isRunning }
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 75)
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE action = 'retokenize' AND outcome LIKE 'interrupted:%'") == 1)
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token_key_version = 1") > 0)

        let rerun = try await harness.vault(["retokenize", "--reason", "SIG (again)"])
        #expect(rerun.status == 0, "\(rerun.errors)")
        #expect(try await harness.scalar("SELECT count(*) FROM vault_entries WHERE token_key_version = 1") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM user_logins WHERE masked_ip NOT LIKE 'ip_t2_%'") == 0)
    }
}
