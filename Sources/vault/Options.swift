import ArgumentParser
import CLISupport
import Foundation
import Logging
import Postgres
import VaultAdmin
import VaultCrypto

struct PassphraseOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "File holding the recovery-key passphrase (default: $VAULT_PASSPHRASE_FILE, else a no-echo prompt on the terminal).",
        valueName: "file"), completion: .file())
    var passphraseFile: String?

    func recoveryKeyring(_ keys: KeyOptions) -> RecoveryKeyring {
        RecoveryKeyring(store: KeyStore(directory: keys.resolvedKeysDirectory)) {
            try PassphraseSource(file: passphraseFile).read(prompt: "Passphrase for the recovery private key: ")
        }
    }
}

struct ReasonOption: ParsableArguments {
    @Option(help: ArgumentHelp("Why (a ticket or case reference); recorded in the audit log. Required.", valueName: "text"))
    var reason: String

    func validate() throws {
        let trimmed = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw ValidationError("--reason must not be empty: say why (e.g. a ticket number)") }
        guard trimmed.count <= 500 else { throw ValidationError("--reason is longer than 500 characters") }
        if let position = SafeText.firstHidden(in: trimmed) {
            throw ValidationError("""
                --reason has a control or invisible formatting character (such as a bidirectional override) at character \
                \(position); the audit log takes plain text only
                """)
        }
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

func jobLogger() -> Logger { ToolLogging.bootstrap(label: "vault") }

/// What a command that audits needs: the keys' directory, the audit key, and
/// the database.
struct AuditedSession {
    let store: KeyStore
    let actor: AuditActor
    let connection: PostgresConnection

    /// With `needsPrivateKeys`, a machine without the recovery private keys is
    /// told so first (before the database or the audit key).
    static func open(_ keys: KeyOptions, _ database: DatabaseOptions, needsPrivateKeys: Bool = false) async throws -> AuditedSession {
        let store = KeyStore(directory: keys.resolvedKeysDirectory)
        if needsPrivateKeys { _ = try store.recoveryPrivateKeys() }
        let actor = try AuditActor.current(store: store)
        return AuditedSession(store: store, actor: actor, connection: try await connectDatabase(database))
    }
}
