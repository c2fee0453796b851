import ArgumentParser
import CLISupport
import Foundation
import VaultAdmin
import VaultCrypto

@main
struct Vault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "The privileged tool: key management, recovery of pseudonymized values, audit.",
        discussion: ExitStatus.helpText,
        subcommands: [Keys.self]
    )
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create and manage key versions.",
        subcommands: [Init.self]
    )

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

        @Option(help: ArgumentHelp(
            "File holding the passphrase that seals the recovery private key (default: $VAULT_PASSPHRASE_FILE, else prompt).",
            valueName: "file"))
        var passphraseFile: String?

        @Option(help: ArgumentHelp(
            "scrypt cost as log2(N), 14…22 (default 17: 128 MiB, about half a second).", valueName: "n"))
        var scryptLogN: Int = 17

        func validate() throws {
            guard (14...22).contains(scryptLogN) else { throw ValidationError("--scrypt-log-n must be between 14 and 22") }
        }

        func run() async throws {
            do {
                let store = KeyStore(directory: keys.resolvedKeysDirectory)
                let passphrase = try PassphraseSource(file: passphraseFile)
                    .read(prompt: "Passphrase for the recovery private key: ", confirm: true)
                try store.initialize(passphrase: passphrase, parameters: .init(n: 1 << UInt64(scryptLogN), r: 8, p: 1))
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
