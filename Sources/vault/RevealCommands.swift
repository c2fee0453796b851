import ArgumentParser
import CLISupport
import Foundation
import Pseudonymization
import VaultAdmin
import VaultCrypto

struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the original value behind tokens. Each token is audited before anything is shown.",
        discussion: """
            One token: prints the value (exit 1 if it is unknown or erased, 65 if its entry fails the integrity check). \
            Many tokens (--tokens-file): one line per token in input order, "token<TAB>value" or \
            "token<TAB>error: …" ("-" in place of an input that is not a token); exit 0 when all were recovered, 1 otherwise.
            """
    )

    @Option(help: ArgumentHelp("The token to recover.", valueName: "token"))
    var token: String?

    @Option(help: ArgumentHelp("A file of tokens, one per line, or - for standard input.", valueName: "file"), completion: .file())
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
            let tokens = try token.map { [$0] } ?? readLines(tokensFile!, what: "tokens file")
            let session = try await AuditedSession.open(keys, database, needsPrivateKeys: true)
            let keyring = passphrase.recoveryKeyring(keys)
            let reader = VaultReader(tokenization: try session.store.tokenizationKeyring(), privateKey: keyring.privateKey(version:))
            let outcomes = try await Recovery.recover(tokens, reason: reason.text, reader: reader, actor: session.actor,
                                                      connection: session.connection)
            for outcome in outcomes {
                if let line = render(outcome, single: token != nil) { print(line) }
            }
            if timing {
                let total = ContinuousClock.now - started
                FileHandle.standardError.write(Data(
                    "vault: timing: \(tokens.count) tokens; passphrase KDF \(Int(keyring.unlockDuration / .milliseconds(1))) ms; everything else \(Int((total - keyring.unlockDuration) / .milliseconds(1))) ms\n".utf8))
            }
            let failures = outcomes.compactMap { outcome -> RecoveryError? in
                if case .failure(let error) = outcome.result { return error }
                return nil
            }
            if token != nil, let failure = failures.first {
                throw OperatorError(failure.message, exitCode: exitStatus(for: failure.kind))
            }
            if !failures.isEmpty { throw ExitCode(ExitStatus.failure) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw report(error, tool: "vault")
        }
    }

    /// The output line for one token; nil for a failed single token (its error goes to stderr).
    /// An input that is not a token is never echoed: it may be an original someone pasted.
    func render(_ outcome: Recovery.Outcome, single: Bool) -> String? {
        let shown: Any = Token.parse(outcome.token) != nil ? outcome.token : NSNull()
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
                return jsonLine(["token": shown, "error": error.kind.rawValue, "message": error.message, "audit_seq": outcome.auditSequence])
            }
            return single ? nil : "\(shown is NSNull ? "-" : outcome.token)\terror: \(error.message)"
        }
    }
}

/// Integrity failures are 65; a key that is not on this machine is 77; the rest 1.
func exitStatus(for kind: RecoveryError.Kind) -> Int32 {
    switch kind {
    case .integrity: return ExitStatus.integrity
    case .missingRecoveryKey, .missingTokenizationKey: return ExitStatus.permission
    case .malformedToken, .unknownToken, .erased: return ExitStatus.failure
    }
}

/// The non-empty lines of a file, or of standard input for "-".
func readLines(_ path: String, what: String) throws -> [String] {
    let data = path == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: path)
    guard let data else { throw OperatorError("cannot read the \(what) \(path)", exitCode: ExitStatus.configuration) }
    return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
        .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

struct Lookup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the tokens of an IP or device id under every tokenization key version (subject-access requests). Audited.",
        discussion: """
            A value given on the command line is visible to other users of the machine (ps, /proc) and stays in \
            shell history: prefer --ip-file or --device-id-file, with - to read it from standard input (or to be \
            asked for it on a terminal, without echo). Needs the recovery private key: an entry is only reported \
            as stored after it was opened and its value produced the token; each token's reveal is audited.
            """)

    @Option(help: ArgumentHelp("The IP address to look up (visible to other users: see below).", valueName: "address"))
    var ip: String?

    @Option(help: ArgumentHelp("The device id to look up (visible to other users: see below).", valueName: "id"))
    var deviceID: String?

    @Option(help: ArgumentHelp("Read the IP address from this file, or - for standard input.", valueName: "file"), completion: .file())
    var ipFile: String?

    @Option(help: ArgumentHelp("Read the device id from this file, or - for standard input.", valueName: "file"), completion: .file())
    var deviceIDFile: String?

    @OptionGroup var reason: ReasonOption

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func validate() throws {
        guard [ip, deviceID, ipFile, deviceIDFile].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --ip, --device-id, --ip-file or --device-id-file")
        }
    }

    func run() async throws {
        do {
            let field: PIIField = ip != nil || ipFile != nil ? .ip : .deviceID
            let value = try ip ?? deviceID ?? readValue(ipFile ?? deviceIDFile!, field: field)
            let session = try await AuditedSession.open(keys, database, needsPrivateKeys: true)
            let keyring = try session.store.tokenizationKeyring()
            let reader = VaultReader(tokenization: keyring, privateKey: passphrase.recoveryKeyring(keys).privateKey(version:))
            let (matches, sequence) = try await VaultAdmin.Lookup.lookup(
                value, field: field, reason: reason.text, keyring: keyring, reader: reader, actor: session.actor, connection: session.connection)
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

    /// The first line of a file, of standard input, or typed at a no-echo prompt.
    func readValue(_ path: String, field: PIIField) throws -> String {
        if path == "-", isatty(STDIN_FILENO) == 1 {
            return try Terminal.readLine(prompt: field == .ip ? "IP address to look up: " : "Device id to look up: ")
        }
        guard let line = try readLines(path, what: field == .ip ? "IP address file" : "device id file").first else {
            throw OperatorError("\(path == "-" ? "standard input" : path) holds no value to look up", exitCode: ExitStatus.usage)
        }
        return line
    }
}

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase the original behind a token (crypto-shredding). The token stays in user_logins. Audited in the same transaction.")

    @Option(help: ArgumentHelp("The token whose original to erase.", valueName: "token"))
    var token: String

    @OptionGroup var reason: ReasonOption
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        do {
            let session = try await AuditedSession.open(keys, database)
            let (outcome, sequence) = try await VaultAdmin.Forget.forget(token, reason: reason.text, actor: session.actor,
                                                                          connection: session.connection)
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
