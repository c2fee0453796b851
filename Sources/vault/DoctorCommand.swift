import ArgumentParser
import CLISupport
import Foundation
import VaultAdmin
import VaultCrypto

struct Doctor: ToolCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check everything a vault command needs, before any work: exit 0 only when all is well.",
        discussion: """
            Checks that the database is reachable and its schema current, that the key files are the registered ones, \
            that the passphrase (or KMS) opens every recovery key data keys are wrapped to, that audit-key.json \
            authenticates the newest audit row, and which pseudonymizer role the login has. Changes nothing and audits \
            nothing. The key jobs run it first, so a wrong passphrase or a stale key Secret fails the day it is \
            deployed, not the first night a job has work. Exits with the first failed check's code.

            Examples:
              vault doctor
              VAULT_PASSPHRASE_FILE=/secrets/passphrase vault doctor --json
            """)

    @OptionGroup var output: JSONOption
    @OptionGroup var keys: KeyOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var passphrase: PassphraseOptions

    func execute() async throws {
        let store = KeyStore(directory: keys.resolvedKeysDirectory)
        let checks = await Preflight.run(
            store: store, kms: vaultKMS(),
            passphrase: { try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private key: ") },
            connect: { try await connectDatabase(database) })
        let reports = checks.map { check in (check, check.failure.map(classify)) }
        printSummary(
            json: output.json,
            [
                "ok": reports.allSatisfy { $0.1 == nil },
                "checks": reports.map { check, failure in
                    ["name": check.name, "ok": failure == nil, "detail": failure?.0 ?? check.detail] as [String: Any]
                },
            ],
            text: reports.map { check, failure in "\(failure == nil ? "ok  " : "FAIL") \(check.name): \(failure?.0 ?? check.detail)" }
                .joined(separator: "\n"))
        if let (_, code) = reports.compactMap(\.1).first { throw ExitCode(code) }
    }
}
