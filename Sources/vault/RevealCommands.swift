import ArgumentParser
import CLISupport
import Foundation
import KeyCustody
import Pseudonymization
import VaultAdmin
import VaultCrypto

struct Recover: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the original value behind tokens. Each token is audited before anything is shown.",
        discussion: """
            One token: prints the value (exit 66 if it is unknown or erased, 65 if it is not a token or its entry fails the integrity check). \
            Many tokens (--tokens-file): one line per token in input order, "token<TAB>value" or \
            "token<TAB>error: …" ("-" in place of an input that is not a token); exit 0 when all were recovered, else the gravest failure's code. \
            With --tokens-file - the tokens come from standard input and the passphrase prompt from the terminal.

            Examples:
              vault recover --token ip_t1_… --reason TICKET-1
              psql -Atc 'SELECT masked_ip FROM t' | vault recover --tokens-file - --reason INC-7 --json
            """
    )

    @Option(help: ArgumentHelp("The token to recover.", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("A file of tokens, one per line, or - for standard input.", valueName: "file"), completion: .file())
    var tokensFile: String?

    @OptionGroup var reason: ReasonOption
    @OptionGroup var approval: RequestOptions

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

    func execute() async throws {
        let started = ContinuousClock.now
        let tokens = try token.map { [$0] } ?? readLines(tokensFile!, what: "tokens file")
        let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !approval.requestApproval)
        if try await approval.fileIfAsked(
            .recover, scope: tokens.filter { Token.parse($0) != nil }, reason: reason.text, session: session, json: json,
            describe: "recover \(tokens.count) token\(tokens.count == 1 ? "" : "s")")
        {
            return
        }
        let request = try await approval.approved(for: .recover, reason: reason.text, on: session.connection)
        let keyring = passphrase.recoveryKeyring(keys, kms: session.kms)
        let reader = VaultReader(minter: try session.minter(), privateKey: keyring.privateKey(version:))
        let outcomes = try await Recovery.recover(
            tokens, reason: reason.text, request: request, reader: reader, actor: session.actor,
            connection: session.connection)
        for outcome in outcomes {
            if let line = render(outcome, single: token != nil) { print(line) }
        }
        if timing {
            let total = ContinuousClock.now - started
            FileHandle.standardError.write(
                Data(
                    "vault: timing: \(tokens.count) tokens; recovery key unlock (passphrase KDF or KMS) \(Int(keyring.unlockDuration / .milliseconds(1))) ms; everything else \(Int((total - keyring.unlockDuration) / .milliseconds(1))) ms\n"
                        .utf8))
        }
        let failures = outcomes.compactMap { outcome -> RecoveryError? in
            if case .failure(let error) = outcome.result { return error }
            return nil
        }
        if token != nil, let failure = failures.first {
            throw OperatorError(failure.message, exitCode: exitStatus(for: failure.kind))
        }
        // Many tokens: the gravest failure's code (each token's own is on its line).
        if let gravest = failures.map({ exitStatus(for: $0.kind) }).max(by: { Self.gravity($0) < Self.gravity($1) }) {
            throw ExitCode(gravest)
        }
    }

    /// The output line for one token; nil for a failed single token (its error goes to stderr).
    /// An input that is not a token is never echoed: it may be an original someone pasted.
    func render(_ outcome: Recovery.Outcome, single: Bool) -> String? {
        let shown: Any = Token.parse(outcome.token) != nil ? outcome.token : NSNull()
        switch outcome.result {
        case .success(let value):
            if json {
                return jsonLine([
                    "token": value.token, "field": value.field.rawValue, "value": value.value,
                    "key_version": value.tokenKeyVersion, "data_key_id": value.dataKeyID,
                    "recovery_key_version": value.recoveryKeyVersion, "audit_seq": outcome.auditSequence,
                ])
            }
            return single ? value.value : "\(value.token)\t\(value.value)"
        case .failure(let error):
            if json {
                return jsonLine([
                    "token": shown, "error": error.kind.rawValue, "message": error.message, "audit_seq": outcome.auditSequence,
                ])
            }
            return single ? nil : "\(shown is NSNull ? "-" : outcome.token)\terror: \(error.message)"
        }
    }
}

/// Integrity failures and input that is not a token are 65; a key that is not
/// on this machine is 77; an unknown or erased token 66.
func exitStatus(for kind: RecoveryError.Kind) -> Int32 {
    switch kind {
    case .integrity, .malformedToken: return ExitStatus.integrity
    case .missingRecoveryKey, .missingTokenizationKey: return ExitStatus.permission
    case .unknownToken, .erased: return ExitStatus.notFound
    }
}

extension Recover {
    /// Which code a run with several failures ends with: tampered data or bad input first, then a missing key, then not found.
    static func gravity(_ code: Int32) -> Int {
        [ExitStatus.notFound, ExitStatus.permission, ExitStatus.integrity].firstIndex(of: code).map { $0 + 1 } ?? 0
    }
}

struct Lookup: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the tokens of an IP or device id under every tokenization key version (subject-access requests). Audited.",
        discussion: ValueOptions.argvWarning + """
             Needs the recovery private key: an entry is only reported as stored after it was opened and its value \
            produced the token; each token's reveal is audited.

            Examples:
              vault lookup --ip-file - --reason SAR-9        (asked without echo on a terminal)
              vault lookup --device-id-file device.txt --reason SAR-9 --json
            """)

    @OptionGroup var value: ValueOptions
    @OptionGroup var reason: ReasonOption
    @OptionGroup var approval: RequestOptions

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard value.count == 1 else { throw ValidationError("give exactly one of --ip, --device-id, --ip-file or --device-id-file") }
    }

    func execute() async throws {
        let text = try value.value()
        let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !approval.requestApproval)
        let minter = try session.minter()
        // The approver sees tokens only: the value's, under every key version.
        if try await approval.fileIfAsked(
            .lookup, scope: try await ValueTokens.tokens(of: text, field: value.field, minter: minter).map(\.token), reason: reason.text,
            session: session, json: json, describe: "look up one \(value.field == .ip ? "IP address" : "device id")")
        {
            return
        }
        let request = try await approval.approved(for: .lookup, reason: reason.text, on: session.connection)
        let found = try await VaultAdmin.Lookup.lookup(
            text, field: value.field, reason: reason.text, request: request, minter: minter, reader: try session.reader(keys, passphrase),
            actor: session.actor, connection: session.connection)
        if json {
            print(
                jsonLine([
                    "audit_seq": found.auditSequence, "suppressed": found.suppressed ?? NSNull(),
                    "matches": found.matches.map {
                        ["key_version": $0.keyVersion, "token": $0.token, "rows": $0.rows, "vault": $0.vault] as [String: Any]
                    },
                ]))
        } else {
            for match in found.matches {
                print("v\(match.keyVersion)\t\(match.token)\t\(match.rows) rows\tvault: \(match.vault)")
            }
            if found.suppressed == true {
                print("erased by vault forget: ingest stores this value no more, under any key version")
            }
        }
    }
}

struct Forget: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Erase originals (crypto-shredding): by token, a file of tokens, a user, or a value under every key version. Audited.",
        discussion: """
            The tokens stay in user_logins; recovering one afterwards says when and by whom it was erased. \
            Each value is opened first (an audited reveal, so the recovery private key is needed) to erase it under \
            every tokenization key version in the key file and to record its suppression, so that ingest does not \
            store it again when it arrives again, under any later key. All the tokens are erased in one transaction \
            with their audit rows. Asks for confirmation on the terminal unless --yes. \
            --user-id erases the values only that user's rows carry; a token other users' rows carry too is kept \
            and named (with how many other users) unless --include-shared. 
            """ + ValueOptions.argvWarning + """


                Examples:
                  vault forget --user-id 424cdd21-… --reason ERASE-4 --dry-run
                  vault forget --token ip_t1_… --reason ERASE-5
                """)

    @Option(help: ArgumentHelp("A token whose original to erase.", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("A file of tokens, one per line, or - for standard input.", valueName: "file"), completion: .file())
    var tokensFile: String?

    @Option(
        help: ArgumentHelp("Erase the values only this user's rows carry (shared ones are kept unless --include-shared).", valueName: "id"))
    var userID: String?

    @Flag(help: "With --user-id: also erase values other users' rows carry (their rows lose them too).")
    var includeShared = false

    @OptionGroup var value: ValueOptions
    @OptionGroup var reason: ReasonOption
    @OptionGroup var approval: RequestOptions

    @Flag(help: "Only say what would be erased (nothing is changed or audited).")
    var dryRun = false

    @OptionGroup var confirmation: ConfirmationOptions
    @OptionGroup var output: JSONOption
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard [token != nil, tokensFile != nil, value.given, userID != nil].filter({ $0 }).count == 1, value.count <= 1 else {
            throw ValidationError("give exactly one of --token, --tokens-file, --user-id, --ip, --device-id, --ip-file or --device-id-file")
        }
        if includeShared && userID == nil { throw ValidationError("--include-shared goes with --user-id") }
    }

    func execute() async throws {
        let session = try await AuditedSession.open(keys, database, needsPrivateKeys: !dryRun && !approval.requestApproval)
        var tokens: [String]
        var kept: [(token: String, otherUsers: Int)] = []
        if let token {
            tokens = [token]
        } else if let tokensFile {
            tokens = try readLines(tokensFile, what: "tokens file")
        } else if let userID {
            let found = try await VaultAdmin.Forget.tokens(ofUser: userID, on: session.connection)
            tokens = found.own + (includeShared ? found.shared.map(\.token) : [])
            kept = includeShared ? [] : found.shared
            guard !tokens.isEmpty || !kept.isEmpty else {
                throw OperatorError("user \(userID) has no rows in user_logins; nothing to erase", exitCode: ExitStatus.notFound)
            }
        } else {
            tokens = try await ValueTokens.tokens(of: try value.value(), field: value.field, minter: try session.minter()).map(\.token)
        }
        if let malformed = tokens.first(where: { Token.parse($0) == nil }) { throw RecoveryError.malformed(malformed) }
        for (token, others) in kept {
            FileHandle.standardError.write(
                Data(
                    "vault: kept \(token): also on rows of \(others) other user\(others == 1 ? "" : "s") (--include-shared erases it too)\n"
                        .utf8))
        }
        if try await approval.fileIfAsked(
            .forget, scope: tokens, userID: userID, reason: reason.text, session: session, json: output.json,
            describe: "erase \(tokens.count) token\(tokens.count == 1 ? "" : "s")\(userID.map { " of user \($0)" } ?? "")")
        {
            return
        }
        guard !tokens.isEmpty else {
            throw OperatorError(
                "every token of user \(userID ?? "") is shared with other users; nothing was erased (--include-shared erases them too)",
                exitCode: ExitStatus.notFound)
        }
        let request = dryRun ? nil : try await approval.approved(for: .forget, reason: reason.text, on: session.connection)
        let given = try await VaultAdmin.Forget.blastRadius(of: tokens, on: session.connection)
        if !dryRun {
            try confirmation.confirm(
                "This erases the originals behind \(tokens.count) token\(tokens.count == 1 ? "" : "s") (\(given.summary))")
        }
        let minter = try session.minter()
        let erasures = try await VaultAdmin.Forget.forget(
            tokens, reason: reason.text, request: request, dryRun: dryRun, reader: try session.reader(keys, passphrase),
            actor: session.actor, connection: session.connection)
        let erased = erasures.filter { $0.outcome == .erased }.count
        let radius = try await VaultAdmin.Forget.blastRadius(of: erasures.map(\.token), on: session.connection)
        let unsuppressed = dryRun ? [] : erasures.filter { $0.outcome == .erased && $0.sameValueAs == nil && $0.suppressed != true }
        printSummary(
            json: output.json,
            [
                "dry_run": dryRun, "erased": erased, "rows": radius.rows, "users": radius.users,
                "kept_shared": kept.map { ["token": $0.token, "other_users": $0.otherUsers] as [String: Any] },
                "tokens": erasures.map {
                    [
                        "token": $0.token, "outcome": $0.outcome.rawValue, "audit_seq": $0.auditSequence ?? NSNull(),
                        "same_value_as": $0.sameValueAs ?? NSNull(), "suppressed": $0.suppressed ?? NSNull(),
                        "rows": radius.byToken[$0.token]?.rows ?? 0, "users": radius.byToken[$0.token]?.users ?? 0,
                    ] as [String: Any]
                },
            ],
            text: text(erasures, radius: radius, kept: kept))
        if !unsuppressed.isEmpty {
            FileHandle.standardError.write(
                Data(
                    """
                    vault: warning: \(unsuppressed.count) erased value\(unsuppressed.count == 1 ? " was" : "s were") not suppressed \
                    (\(minter.hasSuppressionKey ? "their entries did not open" : "the key file has no suppression key: add one with `vault keys rotate --suppression`")): \
                    ingest would store \(unsuppressed.count == 1 ? "it" : "them") again if \(unsuppressed.count == 1 ? "it comes" : "they come") again

                    """.utf8))
        }
        if !dryRun, erasures.allSatisfy({ $0.outcome == .unknown }) {
            throw OperatorError("none of the tokens is in the vault; nothing was erased", exitCode: ExitStatus.notFound)
        }
    }

    /// One line per token (what happened, how many rows and users carry it), then the totals.
    private func text(
        _ erasures: [VaultAdmin.Forget.Erasure], radius: VaultAdmin.Forget.BlastRadius, kept: [(token: String, otherUsers: Int)]
    ) -> String {
        let verbs =
            dryRun
            ? ["erased": "would erase", "already-erased": "already erased", "unknown": "not in the vault"]
            : ["erased": "erased", "already-erased": "already erased", "unknown": "not in the vault, nothing erased"]
        let lines = erasures.map { erasure in
            let same = erasure.sameValueAs.map { " (the same value as \($0), under another key version)" } ?? ""
            let audit = erasure.auditSequence.map { " (audit #\($0))" } ?? ""
            return "\(erasure.token)\t\(verbs[erasure.outcome.rawValue]!)\(same), \(radius.describe(erasure.token))\(audit)"
        }
        let keptLines = kept.map {
            "\($0.token)\tkept: also on rows of \($0.otherUsers) other user\($0.otherUsers == 1 ? "" : "s") (--include-shared erases it)"
        }
        return (lines + keptLines + ["in all: \(radius.summary)"]).joined(separator: "\n")
    }
}
