import ArgumentParser
import CLISupport
import Foundation
import Postgres
import VaultAdmin
import VaultCrypto

struct Rewrap: ToolCommand {
    static let resumesWhenRunAgain = true

    static let configuration = CommandConfiguration(
        abstract: "Re-wrap every data key still wrapped to an older recovery key version to the active one (resumable).",
        discussion: """
            Refuses when the active recovery public key is not the registered one or not the public half of \
            a private key in recovery-private.json: data keys never move to a key nobody here can open. \
            SIGTERM or SIGINT stops it after the current batch (exit 75: run it again to finish).

            Examples:
              vault rewrap --reason \"after the recovery key rotation\"
            """)

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @OptionGroup var output: JSONOption
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func execute() async throws {
        let session = try await AuditedSession.open(keys, database)
        let keyring = passphrase.recoveryKeyring(keys, kms: session.kms)
        let (reason, dryRun) = (reason.text, dryRun)
        nonisolated(unsafe) let keyringForJob = keyring
        let summary = try await Interruptible.run {
            try await VaultAdmin.Rewrap.run(
                store: session.store, keyring: keyringForJob, dryRun: dryRun, reason: reason, actor: session.actor,
                connection: session.connection, logger: jobLogger())
        }
        let pending = summary.pending.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", ")
        printSummary(
            json: output.json,
            [
                "dry_run": dryRun, "target_version": summary.target, "rewrapped": summary.rewrapped,
                "pending_by_version": Dictionary(uniqueKeysWithValues: summary.pending.map { (String($0.key), $0.value) }),
            ],
            text: dryRun
                ? "would re-wrap \(summary.pending.values.reduce(0, +)) data keys to recovery v\(summary.target)\(pending.isEmpty ? "" : " (\(pending))")"
                : "re-wrapped \(summary.rewrapped) data keys to recovery v\(summary.target)\(pending.isEmpty ? "" : " (were \(pending))")")
    }
}

struct Retokenize: ToolCommand {
    static let resumesWhenRunAgain = true

    static let configuration = CommandConfiguration(
        abstract: "Move all vault entries and user_logins tokens to the active tokenization key version (online, resumable).",
        discussion: """
            Distribute the new key files to every ingest replica (they reload within seconds, or on SIGHUP) before running it: \
            once it starts, a replica still on an older key waits for its keys instead of writing old tokens. \
            An entry that does not open, or whose value does not produce its token, is never moved: the job stops and names it. \
            Exit 0 when nothing is left on an older version; 75 when something is (or SIGTERM/SIGINT stopped it): run it again.

            Examples:
              vault retokenize --reason \"after the tokenization key rotation\" --json
            """)

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @Option(help: ArgumentHelp("Vault entries per batch.", valueName: "entries"))
    var batchSize: Int = 1000
    @Option(help: ArgumentHelp("user_logins heap pages per rewrite statement, about 50 rows each.", valueName: "pages"))
    var pagesPerStatement: Int = 200
    @OptionGroup var output: JSONOption
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard (1...100_000).contains(batchSize), (1...100_000).contains(pagesPerStatement) else {
            throw ValidationError("--batch-size must be 1…100000 and --pages-per-statement 1…100000")
        }
    }

    func execute() async throws {
        let conninfo = database.conninfo
        let session = try await AuditedSession.open(keys, database)
        var options = VaultAdmin.Retokenize.Options()
        options.dryRun = dryRun
        options.entryBatch = batchSize
        options.pagesPerStatement = pagesPerStatement
        let logger = jobLogger()
        let reason = reason.text
        nonisolated(unsafe) let keyring = passphrase.recoveryKeyring(keys, kms: session.kms)
        let summary = try await Interruptible.run { [options] in
            try await VaultAdmin.Retokenize.run(
                store: session.store, keyring: keyring, kms: session.kms, options: options, reason: reason, actor: session.actor,
                connection: session.connection,
                connect: { try await PostgresConnection.connect(conninfo, applicationName: "vault", logger: logger) }, logger: logger)
        }
        let pending = summary.pending.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", ")
        printSummary(
            json: output.json,
            [
                "dry_run": dryRun, "target_version": summary.target, "passes": summary.passes, "moved_entries": summary.movedEntries,
                "carried_erasures": summary.carriedErasures, "rewritten_rows": summary.rewrittenRows,
                "dropped_entries": summary.droppedEntries,
                "remaining_entries": summary.remainingEntries, "remaining_rows": summary.remainingRows,
                "pending_by_version": Dictionary(uniqueKeysWithValues: summary.pending.map { (String($0.key), $0.value) }),
            ],
            text: dryRun
                ? "would move \(summary.pending.values.reduce(0, +)) vault entries (\(pending.isEmpty ? "none" : pending)) and rewrite \(summary.remainingRows) rows to tokenization v\(summary.target)"
                : "retokenized to v\(summary.target) in \(summary.passes) pass(es): moved \(summary.movedEntries) entries, "
                    + "carried \(summary.carriedErasures) erasures, rewrote \(summary.rewrittenRows) rows, "
                    + "dropped \(summary.droppedEntries) old entries; left: \(summary.remainingEntries) entries, \(summary.remainingRows) rows"
        )
        if !dryRun, summary.remainingEntries > 0 || summary.remainingRows > 0 {
            throw OperatorError("work is left on older key versions (rows written meanwhile); run it again", exitCode: ExitStatus.tempfail)
        }
    }
}
