import ArgumentParser
import CLISupport
import Foundation
import Logging
import Postgres
import Pseudonymization
import VaultAdmin
import VaultCrypto

@main
struct Vault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "The privileged tool: recovery of pseudonymized values with an audit trail, erasure, key management.",
        discussion: ExitStatus.helpText,
        subcommands: [Recover.self, Lookup.self, Forget.self, Audit.self, Keys.self, Rewrap.self, Retokenize.self]
    )
}

struct PassphraseOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "File holding the recovery-key passphrase (default: $VAULT_PASSPHRASE_FILE, else a no-echo prompt).", valueName: "file"))
    var passphraseFile: String?
}

struct ReasonOption: ParsableArguments {
    @Option(help: ArgumentHelp("Why (a ticket or case reference); recorded in the audit log. Required.", valueName: "text"))
    var reason: String

    func validate() throws {
        let trimmed = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw ValidationError("--reason must not be empty: say why (e.g. a ticket number)") }
        guard trimmed.count <= 500 else { throw ValidationError("--reason is longer than 500 characters") }
    }

    var text: String { reason.trimmingCharacters(in: .whitespacesAndNewlines) }
}

func connectDatabase(_ options: DatabaseOptions) async throws -> PostgresConnection {
    try await PostgresConnection.connect(options.conninfo, applicationName: "vault", logger: .init(label: "vault"))
}

func jsonLine(_ object: [String: Any]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the original value behind tokens. Each token is audited before anything is shown.",
        discussion: """
            One token: prints the value (exit 1 if it is unknown or erased, 65 if its entry fails the integrity check). \
            Many tokens (--tokens-file): one line per token in input order, "token<TAB>value" or \
            "token<TAB>error: …"; exit 0 when all were recovered, 1 otherwise.
            """
    )

    @Option(help: ArgumentHelp("The token to recover.", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("A file of tokens, one per line, or - for standard input.", valueName: "file"))
    var tokensFile: String?

    @OptionGroup var reason: ReasonOption

    @Flag(help: "Print JSON (one object per line).")
    var json = false

    @Flag(help: "Print how long each stage took (passphrase KDF, recovery) on standard error.")
    var timing = false

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard (token == nil) != (tokensFile == nil) else { throw ValidationError("give exactly one of --token or --tokens-file") }
    }

    func run() async throws {
        let started = ContinuousClock.now
        do {
            let tokens = try token.map { [$0] } ?? readTokens(tokensFile!)
            let connection = try await connectDatabase(database)
            let keyring = RecoveryKeyring(store: KeyStore(directory: keys.resolvedKeysDirectory)) {
                try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private key: ")
            }
            let reader = VaultReader(connection: connection, privateKey: keyring.privateKey(version:))
            let actor = try await AuditActor.current(on: connection)
            let outcomes = try await Recovery.recover(tokens, reason: reason.text, reader: reader, actor: actor, connection: connection)
            for outcome in outcomes {
                if let line = render(outcome, single: token != nil) { print(line) }
            }
            if timing {
                let total = ContinuousClock.now - started
                FileHandle.standardError.write(Data(
                    "vault: timing: \(tokens.count) tokens; passphrase KDF \(Int(keyring.unlockDuration / .milliseconds(1))) ms; everything else \(Int((total - keyring.unlockDuration) / .milliseconds(1))) ms\n".utf8))
            }
            let failures = outcomes.compactMap { try? $0.result.failureValue() }
            if token != nil, let failure = failures.first {
                throw OperatorError(failure.message, exitCode: failure.kind == .integrity ? ExitStatus.integrity
                                    : failure.kind == .missingRecoveryKey ? ExitStatus.permission : ExitStatus.failure)
            }
            if !failures.isEmpty { throw ExitCode(ExitStatus.failure) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw report(error, tool: "vault")
        }
    }

    /// The output line for one token; nil for a failed single token (its error goes to stderr).
    func render(_ outcome: Recovery.Outcome, single: Bool) -> String? {
        switch outcome.result {
        case .success(let value):
            if json {
                return jsonLine(["token": value.token, "field": value.field.rawValue, "value": value.value,
                                 "key_version": value.tokenKeyVersion, "data_key_id": value.dataKeyID,
                                 "recovery_key_version": value.recoveryKeyVersion, "audit_seq": outcome.auditSequence])
            }
            return single ? value.value : "\(value.token)\t\(value.value)"
        case .failure(let error):
            if json {
                return jsonLine(["token": error.token, "error": error.kind.rawValue, "message": error.message,
                                 "audit_seq": outcome.auditSequence])
            }
            return single ? nil : "\(outcome.token)\terror: \(error.message)"
        }
    }

    func readTokens(_ path: String) throws -> [String] {
        let data = path == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: path)
        guard let data else { throw OperatorError("cannot read tokens file \(path)", exitCode: ExitStatus.configuration) }
        return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

extension Result {
    func failureValue() throws -> Failure {
        if case .failure(let error) = self { return error }
        throw CancellationError()
    }
}

struct Lookup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the tokens of an IP or device id under every live tokenization key version (subject-access requests). Audited.")

    @Option(help: ArgumentHelp("The IP address to look up.", valueName: "address"))
    var ip: String?

    @Option(help: ArgumentHelp("The device id to look up.", valueName: "id"))
    var deviceID: String?

    @OptionGroup var reason: ReasonOption

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        guard (ip == nil) != (deviceID == nil) else { throw ValidationError("give exactly one of --ip or --device-id") }
    }

    func run() async throws {
        do {
            let keyring = try KeyStore(directory: keys.resolvedKeysDirectory).tokenizationKeyring()
            let connection = try await connectDatabase(database)
            let actor = try await AuditActor.current(on: connection)
            let (matches, sequence) = try await VaultAdmin.Lookup.lookup(
                ip ?? deviceID!, field: ip != nil ? .ip : .deviceID, reason: reason.text, keyring: keyring, actor: actor,
                connection: connection)
            if json {
                print(jsonLine(["audit_seq": sequence, "matches": matches.map {
                    ["key_version": $0.keyVersion, "token": $0.token, "rows": $0.rows, "vault": $0.vault] as [String: Any]
                }]))
            } else {
                for match in matches {
                    print("v\(match.keyVersion)\t\(match.token)\t\(match.rows) rows\tvault: \(match.vault)")
                }
            }
        } catch {
            throw report(error, tool: "vault")
        }
    }
}

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase the original behind a token (crypto-shredding). The token stays in user_logins. Audited in the same transaction.")

    @Option(help: ArgumentHelp("The token whose original to erase.", valueName: "token"))
    var token: String

    @OptionGroup var reason: ReasonOption
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        do {
            let connection = try await connectDatabase(database)
            let actor = try await AuditActor.current(on: connection)
            let (outcome, sequence) = try await VaultAdmin.Forget.forget(token, reason: reason.text, actor: actor, connection: connection)
            switch outcome {
            case .erased: print("erased \(token) (audit #\(sequence))")
            case .alreadyErased: print("\(token) was already erased (audit #\(sequence))")
            case .unknown: throw OperatorError("token \(token) is not in the vault; nothing was erased (audit #\(sequence))")
            }
        } catch {
            throw report(error, tool: "vault")
        }
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read and verify the hash-chained audit log.", subcommands: [Log.self, Verify.self])

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print audit rows in order.")

        @Option(help: ArgumentHelp("Only rows at or after this time (ISO 8601).", valueName: "time"))
        var since: String?

        @Option(help: "At most this many rows.")
        var limit: Int = 1000

        @Flag(help: "Print JSON lines.")
        var json = false

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            var sinceDate: Date? = nil
            if let since {
                guard let date = ISO8601DateFormatter().date(from: since) else {
                    throw ValidationError("--since \(since) is not an ISO 8601 time such as 2026-11-29T00:00:00Z")
                }
                sinceDate = date
            }
            do {
                let connection = try await connectDatabase(database)
                for entry in try await AuditLog.entries(since: sinceDate, limit: limit, on: connection) {
                    if json {
                        print(jsonLine(["seq": entry.sequence, "at": entry.at, "os_user": entry.osUser, "db_role": entry.databaseRole,
                                        "action": entry.action, "subject": entry.subject, "reason": entry.reason,
                                        "outcome": entry.outcome, "hash": Hex.encode(entry.hash)]))
                    } else {
                        print("\(entry.sequence)\t\(entry.at)\t\(entry.osUser)/\(entry.databaseRole)\t\(entry.action)\t\(entry.outcome)\t\(entry.subject)\t\(entry.reason)")
                    }
                }
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the whole chain; exit 0 and print the head hash when intact, 65 naming the first broken row otherwise.")

        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            do {
                let connection = try await connectDatabase(database)
                switch try await AuditLog.verify(on: connection) {
                case .intact(let rows, let head):
                    print("audit log intact: \(rows) rows, head hash \(Hex.encode(head))")
                case .broken(let sequence, let problem):
                    throw OperatorError("audit log broken at sequence \(sequence): \(problem)", exitCode: ExitStatus.integrity)
                }
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }
}

func jobLogger() -> Logger { ToolLogging.bootstrap(label: "vault") }

func recoveryKeyring(_ keys: KeyOptions, _ passphrase: PassphraseOptions) -> RecoveryKeyring {
    RecoveryKeyring(store: KeyStore(directory: keys.resolvedKeysDirectory)) {
        try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private key: ")
    }
}

struct Rewrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-wrap every data key still wrapped to an older recovery key version to the active one (resumable).")

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func run() async throws {
        do {
            let connection = try await connectDatabase(database)
            let summary = try await VaultAdmin.Rewrap.run(
                store: KeyStore(directory: keys.resolvedKeysDirectory), keyring: recoveryKeyring(keys, passphrase), dryRun: dryRun,
                reason: reason.text, actor: try await AuditActor.current(on: connection), connection: connection, logger: jobLogger())
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
            Exit 0 when nothing is left on an older version, 1 otherwise (run it again).
            """)

    @OptionGroup var reason: ReasonOption
    @Flag(help: "Only report what would change.")
    var dryRun = false
    @Option(help: "Vault entries per batch (default 1000).")
    var batchSize: Int = 1000
    @Option(help: "user_logins heap pages per rewrite statement, about 50 rows each (default 200).")
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
            let connection = try await connectDatabase(database)
            var options = VaultAdmin.Retokenize.Options()
            options.dryRun = dryRun
            options.entryBatch = batchSize
            options.pagesPerStatement = pagesPerStatement
            let logger = jobLogger()
            let summary = try await VaultAdmin.Retokenize.run(
                store: KeyStore(directory: keys.resolvedKeysDirectory), keyring: recoveryKeyring(keys, passphrase), options: options,
                reason: reason.text, actor: try await AuditActor.current(on: connection), connection: connection,
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

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, rotate, inspect and retire key versions.",
        subcommands: [Init.self, Status.self, Rotate.self, Retire.self]
    )

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every key version, its state, and exactly what it still protects.")

        @Flag(help: "Print JSON.")
        var json = false
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            do {
                let connection = try await connectDatabase(database)
                let inventory = try await KeyAdministration.inventory(store: KeyStore(directory: keys.resolvedKeysDirectory), connection: connection)
                if json {
                    print(jsonLine([
                        "tokenization": inventory.tokenization.map {
                            ["version": $0.version, "state": $0.state, "created_at": $0.createdAt ?? NSNull(), "vault_entries": $0.vaultEntries,
                             "erased_entries": $0.erasedEntries, "ip_rows": $0.ipRows, "device_rows": $0.deviceRows] as [String: Any]
                        },
                        "recovery": inventory.recovery.map {
                            ["version": $0.version, "state": $0.state, "created_at": $0.createdAt ?? NSNull(),
                             "private_key_present": $0.privateKeyPresent, "data_keys": $0.dataKeys, "data_keys_in_use": $0.dataKeysInUse,
                             "vault_entries": $0.vaultEntries, "quarantined": $0.quarantined] as [String: Any]
                        },
                        "data_keys": ["total": inventory.dataKeys, "in_use": inventory.dataKeysInUse],
                        "entries_without_data_key": inventory.entriesWithoutDataKey,
                    ]))
                    return
                }
                print("tokenization keys")
                for key in inventory.tokenization {
                    print("  v\(key.version)  \(key.state.padding(toLength: 12, withPad: " ", startingAt: 0))  created \(key.createdAt ?? "?")  "
                          + "vault entries \(key.vaultEntries) (+\(key.erasedEntries) erased), rows: ip \(key.ipRows), device_id \(key.deviceRows)")
                }
                print("recovery keys")
                for key in inventory.recovery {
                    print("  v\(key.version)  \(key.state.padding(toLength: 12, withPad: " ", startingAt: 0))  created \(key.createdAt ?? "?")  "
                          + "private key \(key.privateKeyPresent ? "here" : "not here"), data keys \(key.dataKeys) (\(key.dataKeysInUse) in use), "
                          + "protecting \(key.vaultEntries) vault entries and \(key.quarantined) quarantined messages")
                }
                print("data keys: \(inventory.dataKeys) (\(inventory.dataKeysInUse) in use by ingest)")
                if inventory.entriesWithoutDataKey > 0 {
                    print("WARNING: \(inventory.entriesWithoutDataKey) vault entries have no data key row: they cannot be recovered")
                }
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new key version and make it the active one for new work.",
            discussion: """
                --tokenization: new tokens use it as soon as ingest reloads its key files (SIGHUP or within seconds); \
                then run `vault retokenize`. --recovery: new data keys are wrapped to it; then run `vault rewrap`. \
                Copy the changed public files (tokenization.json, recovery-public.json) to the ingest secret.
                """)

        @Flag(help: "Rotate the tokenization (HMAC) key.")
        var tokenization = false
        @Flag(help: "Rotate the recovery keypair.")
        var recovery = false
        @OptionGroup var reason: ReasonOption
        @Option(help: ArgumentHelp("scrypt cost for the new private key as log2(N), 14…22 (default 17).", valueName: "n"))
        var scryptLogN: Int = 17
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var passphrase: PassphraseOptions

        func validate() throws {
            guard tokenization != recovery else { throw ValidationError("give exactly one of --tokenization or --recovery") }
            guard (14...22).contains(scryptLogN) else { throw ValidationError("--scrypt-log-n must be between 14 and 22") }
        }

        func run() async throws {
            do {
                let store = KeyStore(directory: keys.resolvedKeysDirectory)
                let connection = try await connectDatabase(database)
                let actor = try await AuditActor.current(on: connection)
                if tokenization {
                    let version = try await KeyAdministration.rotateTokenization(store: store, reason: reason.text, actor: actor, connection: connection)
                    print("tokenization key v\(version) is active; distribute \(store.tokenizationPath) to ingest, then run `vault retokenize`")
                } else {
                    let secret = try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private keys: ")
                    let version = try await KeyAdministration.rotateRecovery(
                        store: store, passphrase: secret, parameters: .init(n: 1 << UInt64(scryptLogN), r: 8, p: 1), reason: reason.text,
                        actor: actor, connection: connection)
                    print("recovery key v\(version) is active; distribute \(store.recoveryPublicPath) to ingest, then run `vault rewrap`")
                }
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a key version (and, for recovery keys, its private key) once nothing depends on it.")

        @Option(help: ArgumentHelp("The tokenization key version to retire.", valueName: "version"))
        var tokenization: Int?
        @Option(help: ArgumentHelp("The recovery key version to retire.", valueName: "version"))
        var recovery: Int?
        @OptionGroup var reason: ReasonOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard (tokenization == nil) != (recovery == nil) else { throw ValidationError("give exactly one of --tokenization N or --recovery N") }
        }

        func run() async throws {
            do {
                let store = KeyStore(directory: keys.resolvedKeysDirectory)
                let connection = try await connectDatabase(database)
                let actor = try await AuditActor.current(on: connection)
                if let version = tokenization {
                    try await KeyAdministration.retireTokenization(version: version, store: store, reason: reason.text, actor: actor, connection: connection)
                    print("tokenization key v\(version) retired and removed from \(store.tokenizationPath)")
                } else if let version = recovery {
                    try await KeyAdministration.retireRecovery(version: version, store: store, reason: reason.text, actor: actor, connection: connection)
                    print("recovery key v\(version) retired; its private key is gone from \(store.recoveryPrivatePath)")
                }
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a fresh key set: tokenization key v1 and recovery keypair v1.",
            discussion: """
                Writes tokenization.json (0600), recovery-public.json (0644) and recovery-private.json \
                (0600, the private key sealed under the passphrase with scrypt and AES-256-GCM). \
                Refuses to overwrite an existing key set.
                """
        )

        @OptionGroup var keys: KeyOptions
        @OptionGroup var passphrase: PassphraseOptions

        @Option(help: ArgumentHelp(
            "scrypt cost as log2(N), 14…22 (default 17: 128 MiB, about half a second).", valueName: "n"))
        var scryptLogN: Int = 17

        func validate() throws {
            guard (14...22).contains(scryptLogN) else { throw ValidationError("--scrypt-log-n must be between 14 and 22") }
        }

        func run() async throws {
            do {
                let store = KeyStore(directory: keys.resolvedKeysDirectory)
                let secret = try PassphraseSource(file: passphrase.passphraseFile)
                    .read(prompt: "Passphrase for the recovery private key: ", confirm: true)
                try store.initialize(passphrase: secret, parameters: .init(n: 1 << UInt64(scryptLogN), r: 8, p: 1))
                print("""
                    Created a key set in \(store.directory):
                      \(store.tokenizationPath)     tokenization key v1 (secret: ingest and vault)
                      \(store.recoveryPublicPath)   recovery public key v1 (ingest and vault)
                      \(store.recoveryPrivatePath)  recovery private key v1, passphrase-sealed (compliance machines only)
                    """)
            } catch {
                throw report(error, tool: "vault")
            }
        }
    }
}
