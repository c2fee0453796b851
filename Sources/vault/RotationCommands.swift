import ArgumentParser
import CLISupport
import Foundation
import Postgres
import VaultAdmin
import VaultCrypto

struct Rewrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-wrap every data key still wrapped to an older recovery key version to the active one (resumable).",
        discussion: """
            Refuses when the active recovery public key is not the registered one or not the public half of \
            a private key in recovery-private.json: data keys never move to a key nobody here can open.
            """)

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func run() async throws {
        do {
            let session = try await AuditedSession.open(keys, database)
            let summary = try await VaultAdmin.Rewrap.run(
                store: session.store, keyring: passphrase.recoveryKeyring(keys), dryRun: dryRun, reason: reason.text, actor: session.actor,
                connection: session.connection, logger: jobLogger())
            let pending = summary.pending.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", ")
            if dryRun {
                print("would re-wrap \(summary.pending.values.reduce(0, +)) data keys to recovery v\(summary.target)\(pending.isEmpty ? "" : " (\(pending))")")
            } else {
                print("re-wrapped \(summary.rewrapped) data keys to recovery v\(summary.target)\(pending.isEmpty ? "" : " (were \(pending))")")
            }
        } catch {
            throw report(error, tool: "vault")
        }
    }
}

struct Retokenize: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move all vault entries and user_logins tokens to the active tokenization key version (online, resumable).",
        discussion: """
            Distribute the new key files to every ingest replica (they reload within seconds, or on SIGHUP) before running it: \
            once it starts, a replica still on an older key waits for its keys instead of writing old tokens. \
            An entry that does not open, or whose value does not produce its token, is never moved: the job stops and names it. \
            Exit 0 when nothing is left on an older version, 1 otherwise (run it again).
            """)

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @Option(help: "Vault entries per batch.")
    var batchSize: Int = 1000
    @Option(help: "user_logins heap pages per rewrite statement, about 50 rows each.")
    var pagesPerStatement: Int = 200
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard (1...100_000).contains(batchSize), (1...100_000).contains(pagesPerStatement) else {
            throw ValidationError("--batch-size must be 1…100000 and --pages-per-statement 1…100000")
        }
    }

    func run() async throws {
        do {
            let conninfo = database.conninfo
            let session = try await AuditedSession.open(keys, database)
            var options = VaultAdmin.Retokenize.Options()
            options.dryRun = dryRun
            options.entryBatch = batchSize
            options.pagesPerStatement = pagesPerStatement
            let logger = jobLogger()
            let summary = try await VaultAdmin.Retokenize.run(
                store: session.store, keyring: passphrase.recoveryKeyring(keys), options: options, reason: reason.text, actor: session.actor,
                connection: session.connection,
                connect: { try await PostgresConnection.connect(conninfo, applicationName: "vault", logger: logger) }, logger: logger)
            let pending = summary.pending.sorted { $0.key < $1.key }.map { "v\($0.key): \($0.value)" }.joined(separator: ", ")
            if dryRun {
                print("would move \(summary.pending.values.reduce(0, +)) vault entries (\(pending.isEmpty ? "none" : pending)) and rewrite \(summary.remainingRows) rows to tokenization v\(summary.target)")
                return
            }
            print("retokenized to v\(summary.target) in \(summary.passes) pass(es): moved \(summary.movedEntries) entries, "
                  + "carried \(summary.carriedErasures) erasures, rewrote \(summary.rewrittenRows) rows, "
                  + "dropped \(summary.droppedEntries) old entries; left: \(summary.remainingEntries) entries, \(summary.remainingRows) rows")
            if summary.remainingEntries > 0 || summary.remainingRows > 0 { throw ExitCode(ExitStatus.failure) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw report(error, tool: "vault")
        }
    }
}
