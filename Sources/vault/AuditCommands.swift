import ArgumentParser
import CLISupport
import Foundation
import Storage
import VaultAdmin
import VaultCrypto

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and verify the audit log (hash-chained, every row authenticated with the audit key).",
        subcommands: [Log.self, Verify.self, Anchor.self])

    struct Log: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Search the audit log: newest rows first (control and invisible characters escaped as \\u{…}).",
            discussion: """
                Examples:
                  vault audit log --reason SAR-1                     everything done under ticket SAR-1
                  vault audit log --token ip_t1_… --action recover   who revealed this token, and when
                  vault audit log --actor alice --since 7d --json    one JSON object per line
                  vault audit log --user-id 424cdd21-…               subject access, requests and erasures for a user
                  vault audit log --action request --action approve  the four-eyes trail
                When more rows match than --limit, standard error says how many were left out.
                """)

        @Option(
            name: .customLong("action"),
            help: ArgumentHelp("Only this action (recover, lookup, forget, keys.rotate, …); repeat for several.", valueName: "action"))
        var actions: [String] = []

        @Option(help: ArgumentHelp("Only rows about this token (their subject names it).", valueName: "token"))
        var token: String?

        @Option(help: ArgumentHelp("Only rows about this user (subject access, requests and erasures by user).", valueName: "id"))
        var userID: String?

        @Option(help: ArgumentHelp("Only rows whose reason contains this text, ignoring case (a ticket id).", valueName: "text"))
        var reason: String?

        @Option(help: ArgumentHelp("Only rows by this operating-system user or database role.", valueName: "name"))
        var actor: String?

        @Option(help: ArgumentHelp("Only rows with this outcome (revealed, erased, refused, …).", valueName: "outcome"))
        var outcome: String?

        @Option(help: ArgumentHelp("Only rows at or after this time: \(PointInTime.help).", valueName: "time"))
        var since: String?

        @Option(help: ArgumentHelp("Only rows before this time: \(PointInTime.help).", valueName: "time"))
        var until: String?

        @Option(help: ArgumentHelp("At most this many rows.", valueName: "rows"))
        var limit: Int = 1000

        @Flag(help: "Oldest rows first.")
        var oldestFirst = false

        @Flag(help: "Print JSON lines.")
        var json = false

        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            for (name, value) in [("--since", since), ("--until", until)] {
                if let value, PointInTime.parse(value) == nil { throw ValidationError("\(name) \(value) is not \(PointInTime.help)") }
            }
            guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
            if token != nil && userID != nil { throw ValidationError("give --token or --user-id, not both") }
        }

        func execute() async throws {
            let connection = try await connectDatabase(database)
            var filter = AuditLog.Filter()
            filter.actions = actions
            filter.subject = token ?? userID.map { "user:\($0)" }
            filter.reason = reason
            filter.actor = actor
            filter.outcome = outcome
            filter.since = since.flatMap { PointInTime.parse($0) }
            filter.until = until.flatMap { PointInTime.parse($0) }
            let (entries, matching) = try await AuditLog.search(filter, limit: limit, oldestFirst: oldestFirst, on: connection)
            for entry in entries {
                if json {
                    print(
                        jsonLine([
                            "seq": entry.sequence, "at": entry.at, "os_user": entry.osUser, "db_role": entry.databaseRole,
                            "action": entry.action, "subject": entry.subject, "reason": entry.reason,
                            "outcome": entry.outcome, "hash": Hex.encode(entry.hash),
                        ]))
                } else {
                    print(
                        [
                            String(entry.sequence), entry.at, "\(entry.osUser)/\(entry.databaseRole)", entry.action, entry.outcome,
                            entry.subject, entry.reason,
                        ].map(SafeText.escaped).joined(separator: "\t"))
                }
            }
            if matching > entries.count {
                FileHandle.standardError.write(
                    Data(
                        "vault: \(matching - entries.count) more matching rows not shown (--limit \(limit)); narrow the filters or raise --limit\n"
                            .utf8))
            }
        }
    }

    struct Verify: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every row's hash and MAC; exit 0 and print the head (SEQ:HASH) when intact, 65 naming the first bad row.",
            discussion: """
                Rows cut off the end leave a log that is intact in itself: keep the printed head somewhere the \
                database's owners cannot change (e.g. object storage with a retention lock) and pass it back with --head.

                Examples:
                  vault audit verify
                  vault audit verify --head 812:9f3c… --json
                """)

        @Option(
            help: ArgumentHelp(
                "A head printed by an earlier verify: the log must still contain that row, unchanged.",
                valueName: "seq:hash"))
        var head: String?

        @OptionGroup var output: JSONOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if let head, Self.parseHead(head) == nil {
                throw ValidationError("--head \(head) is not SEQ:HASH (a row number, a colon and 64 hex digits), as verify prints it")
            }
        }

        static func parseHead(_ text: String) -> (sequence: Int64, hash: [UInt8])? {
            let parts = text.split(separator: ":")
            guard parts.count == 2, let sequence = Int64(parts[0]), sequence > 0, let hash = Hex.decode(parts[1]), hash.count == 32 else {
                return nil
            }
            return (sequence, hash)
        }

        func execute() async throws {
            let keyring = try KeyStore(directory: keys.resolvedKeysDirectory).auditKeyring()
            let connection = try await connectDatabase(database)
            switch try await AuditLog.verify(keys: keyring, recordedHead: head.flatMap(Self.parseHead), on: connection) {
            case .intact(let rows, let authenticated, let sequence, let hash):
                let unauthenticated = rows - authenticated
                printSummary(
                    json: output.json,
                    [
                        "intact": true, "rows": rows, "authenticated": authenticated, "head": "\(sequence):\(Hex.encode(hash))",
                        "checked_head": head ?? NSNull(),
                    ],
                    text:
                        "audit log intact: \(rows) rows\(unauthenticated > 0 ? " (\(unauthenticated) before migration 4, vouched for by the anchor)" : ""), head \(sequence):\(Hex.encode(hash))"
                )
            case .broken(let sequence, let problem):
                if output.json { printSummary(json: true, ["intact": false, "broken_at": sequence, "problem": problem], text: "") }
                throw OperatorError("audit log broken at sequence \(sequence): \(problem)", exitCode: ExitStatus.integrity)
            }
        }
    }

    struct Anchor: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Vouch once for audit rows written before migration 4 (they have no MAC), after checking them.",
            discussion: """
                Examples:
                  vault audit anchor --reason \"anchor the rows written before migration 4\"
                """)

        @OptionGroup var reason: ReasonOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func execute() async throws {
            let session = try await AuditedSession.open(keys, database)
            let (rows, sequence) = try await AuditLog.anchor(reason: reason.text, actor: session.actor, on: session.connection)
            print("anchored rows 1…\(rows) with authenticated row \(sequence)")
        }
    }
}
