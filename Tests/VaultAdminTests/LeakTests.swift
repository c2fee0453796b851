import Foundation
import Postgres
import TestSupport
import Testing
import VaultCrypto

@Suite("vault leaks nothing")
struct LeakTests {
    @Test("input that is not a token is described by its shape, never echoed: stderr, stdout, JSON, the audit log")
    func malformedTokenNotEchoed() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 2))
        let pasted = "192.0.2.7"
        let single = try await harness.vault(["recover", "--token", pasted, "--reason", "PASTE"])
        #expect(single.status == 65)
        #expect(single.errors.contains("(9 characters: digits, dots) is not a token"))
        let bulk = try await harness.vault(
            ["recover", "--tokens-file", "-", "--reason", "PASTE"],
            input: [pasted, harness.originals.keys.sorted()[0]].joined(separator: "\n"))
        let json = try await harness.vault(["recover", "--tokens-file", "-", "--reason", "PASTE", "--json"], input: pasted)
        let forget = try await harness.vault(["forget", "--yes", "--token", pasted, "--reason", "PASTE"])
        #expect(bulk.output.hasPrefix("-\terror: the input (9 characters: digits, dots) is not a token"))
        #expect(json.output.contains("\"token\":null"))
        #expect(forget.status == 65)
        for result in [single, bulk, json, forget] {
            #expect(!result.output.contains(pasted) && !result.errors.contains(pasted))
        }
        #expect(
            try await harness.scalar("SELECT count(*) FROM audit_log WHERE subject LIKE '%192.0.2.7%' OR reason LIKE '%192.0.2.7%'") == 0)
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE outcome = 'malformed-token'") == 3)
    }

    @Test(
        "--reason refuses control and bidirectional characters; audit log escapes whatever the table holds",
        arguments: [
            "TICKET\u{202E}1-TEKCIT", "line\nbreak", "bell\u{07}", "zero\u{200B}width", "isolate\u{2066}x\u{2069}",
        ])
    func reasonCharacters(reason: String) async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        let result = try await harness.vault(["recover", "--token", harness.originals.keys.sorted()[0], "--reason", reason])
        #expect(result.status == 64)
        #expect(result.errors.contains("control or invisible formatting character"))
        #expect(try await harness.scalar("SELECT count(*) FROM audit_log WHERE action <> 'keys.register'") == 0)
    }

    @Test("audit log prints control and bidi characters escaped, as stored")
    func auditLogEscapes() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 1))
        #expect(try await harness.vault(["recover", "--token", harness.originals.keys.sorted()[0], "--reason", "OK"]).status == 0)
        let owner = try await harness.connect()
        try await owner.executeScript(
            """
            ALTER TABLE audit_log DISABLE TRIGGER USER;
            UPDATE audit_log SET reason = E'\\x1b[31mred\\u202Egnp.exe\\\\'
            """)
        let log = try await harness.vault(["audit", "log"])
        #expect(log.status == 0)
        #expect(!log.output.contains("\u{1B}") && !log.output.contains("\u{202E}"))
        #expect(log.output.contains("\\u{1B}[31mred\\u{202E}gnp.exe\\\\"))
    }

    @Test("lookup takes the value from a file or standard input, and its help says argv is visible")
    func lookupValueSources() async throws {
        let harness = try await VaultHarness.make(bodies: mixedBodies(count: 5))
        let file = NSTemporaryDirectory() + "value-\(UUID().uuidString)"
        try "2001:db8::0:1\n".write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = try await harness.vault(["lookup", "--ip-file", file, "--reason", "SAR", "--json"])
        let fromStdin = try await harness.vault(["lookup", "--ip-file", "-", "--reason", "SAR", "--json"], input: "2001:db8::1\n")
        #expect(fromFile.status == 0 && fromStdin.status == 0, "\(fromFile.errors)\(fromStdin.errors)")
        #expect(fromFile.output == fromStdin.output.replacingOccurrences(of: "\"audit_seq\":3", with: "\"audit_seq\":2"))
        #expect(fromFile.output.contains("\"vault\":\"stored\""))
        let help = try await harness.vault(["lookup", "--help"])
        #expect(help.output.contains("visible to other users"))
    }

    @Test("vault is not dumpable and has no core-size allowance before it reads a key")
    func noCoreDumps() async throws {
        guard geteuid() == 0 else { return }  // observing another user's process needs root
        let vault = try TestEnvironment.executable("vault")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
        process.arguments = ["-u", "nobody", "--", vault, "recover", "--tokens-file", "-", "--reason", "DUMP"]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var failure: (any Error)? = nil
        do { try await checkLimitsOfBlockedVault(vault) } catch { failure = error }
        try? input.fileHandleForWriting.close()  // vault reads end of input and exits
        try await waitForExit(process)
        if let failure { throw failure }
    }

    /// The vault process (a child of runuser) is blocked reading its tokens.
    private func checkLimitsOfBlockedVault(_ vault: String) async throws {
        // runuser forks vault; find the child reading its tokens from the pipe.
        var pid: String? = nil
        try await waitUntil(.seconds(60)) {
            pid = try await runProgram("/usr/bin/pgrep", ["-u", "nobody", "-f", "\(vault) recover"]).output
                .split(separator: "\n").first.map(String.init)
            return pid != nil
        }
        // A non-dumpable process's /proc files belong to root, not to its user;
        // vault makes itself so (core size first) as it starts, before reading input.
        let status = "/proc/\(pid!)/status"
        try await waitUntil(.seconds(30)) {
            (try FileManager.default.attributesOfItem(atPath: status)[.ownerAccountID] as? NSNumber)?.intValue == 0
        }
        let limits = try String(contentsOfFile: "/proc/\(pid!)/limits", encoding: .utf8)
        #expect(
            limits.split(separator: "\n").contains {
                $0.hasPrefix("Max core file size") && $0.split(separator: " ").dropFirst(4).prefix(2) == ["0", "0"]
            })
    }
}
