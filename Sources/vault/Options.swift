import ArgumentParser
import CLISupport
import Foundation
import KeyCustody
import Logging
import Postgres
import Pseudonymization
import Storage
import VaultAdmin
import VaultCrypto

struct PassphraseOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "File holding the recovery-key passphrase (default: $VAULT_PASSPHRASE_FILE, else a no-echo prompt on the terminal).",
            valueName: "file"), completion: .file())
    var passphraseFile: String?

    /// Opens passphrase-sealed keys with the passphrase (asked for when first
    /// needed) and KMS-sealed ones with `kms`.
    func recoveryKeyring(_ keys: KeyOptions, kms: LazyKMSClient) -> RecoveryKeyring {
        RecoveryKeyring(store: KeyStore(directory: keys.resolvedKeysDirectory), kms: kms) {
            try PassphraseSource(file: passphraseFile).read(prompt: "Passphrase for the recovery private key: ")
        }
    }
}

extension PassphraseOptions {
    /// How a new recovery private key is sealed: by the KMS key, else under the
    /// passphrase (read now; `confirm`: typed twice at a prompt).
    func sealing(kmsKeyID: String?, kms: LazyKMSClient, scryptLogN: Int, confirm: Bool) throws -> KeyAdministration.RecoverySealing {
        if let kmsKeyID { return .awsKMS(keyID: kmsKeyID, kms) }
        let secret = try PassphraseSource(file: passphraseFile).read(prompt: "Passphrase for the recovery private key: ", confirm: confirm)
        return .passphrase(secret, .init(n: 1 << UInt64(scryptLogN), r: 8, p: 1))
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
            throw ValidationError(
                """
                --reason has a control or invisible formatting character (such as a bidirectional override) at character \
                \(position); the audit log takes plain text only
                """)
        }
    }

    var text: String { reason.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Where the personal value for `lookup` or `forget` comes from.
struct ValueOptions: ParsableArguments {
    @Option(help: ArgumentHelp("An IP address (visible to other users of this machine: prefer --ip-file).", valueName: "address"))
    var ip: String?

    @Option(help: ArgumentHelp("A device id (visible to other users of this machine: prefer --device-id-file).", valueName: "id"))
    var deviceID: String?

    @Option(help: ArgumentHelp("Read the IP address from this file, or - for standard input.", valueName: "file"), completion: .file())
    var ipFile: String?

    @Option(help: ArgumentHelp("Read the device id from this file, or - for standard input.", valueName: "file"), completion: .file())
    var deviceIDFile: String?

    var given: Bool { [ip, deviceID, ipFile, deviceIDFile].contains { $0 != nil } }
    var count: Int { [ip, deviceID, ipFile, deviceIDFile].compactMap { $0 }.count }
    var field: PIIField { ip != nil || ipFile != nil ? .ip : .deviceID }

    /// The value: from the command line, a file, standard input, or a no-echo prompt.
    func value() throws -> String {
        if let value = ip ?? deviceID { return value }
        let path = ipFile ?? deviceIDFile!
        if path == "-", isatty(STDIN_FILENO) == 1 {
            return try Terminal.readLine(prompt: field == .ip ? "IP address: " : "Device id: ")
        }
        guard let line = try readLines(path, what: field == .ip ? "IP address file" : "device id file").first else {
            throw OperatorError("\(path == "-" ? "standard input" : path) holds no value", exitCode: ExitStatus.usage)
        }
        return line
    }

    static let argvWarning = """
        A value given on the command line is visible to other users of the machine (ps, /proc) and stays in \
        shell history: prefer --ip-file or --device-id-file, with - to read it from standard input (or to be \
        asked for it on a terminal, without echo).
        """
}

/// The non-empty lines of a file, or of standard input for "-".
func readLines(_ path: String, what: String) throws -> [String] {
    let data = path == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: path)
    guard let data else { throw OperatorError("cannot read the \(what) \(path)", exitCode: ExitStatus.configuration) }
    return String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
        .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

func connectDatabase(_ options: DatabaseOptions) async throws -> PostgresConnection {
    try await PostgresConnection.connect(options.conninfo, applicationName: "vault", logger: .init(label: "vault"))
}

func jsonLine(_ object: [String: Any]) -> String {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}

func jobLogger() -> Logger { ToolLogging.bootstrap(label: "vault") }

/// The KMS client for KMS-held keys, made from the AWS environment when a key
/// first needs it. `VAULT_ALLOW_INSECURE_ENDPOINT=1` allows plain http to a
/// KMS emulator that is not on this machine.
func vaultKMS() -> LazyKMSClient {
    LazyKMSClient(
        allowInsecureEndpoint: ProcessInfo.processInfo.environment["VAULT_ALLOW_INSECURE_ENDPOINT"] == "1", sharedHTTP: true,
        logger: Logger(label: "vault"))
}

/// What a command that audits needs: the keys' directory, the audit key, the
/// database, and KMS for KMS-held keys.
struct AuditedSession {
    let store: KeyStore
    let actor: AuditActor
    let connection: PostgresConnection
    let kms = vaultKMS()

    /// Tokens under every version of the key files' tokenization keyring.
    func minter() throws -> TokenMinter {
        let keyring = try store.tokenizationKeyring()
        return try TokenMinter(keyring: keyring, kms: try kms.client(for: keyring))
    }

    /// Opens vault entries with the recovery private keys (asking for the passphrase when first needed).
    func reader(_ keys: KeyOptions, _ passphrase: PassphraseOptions) throws -> VaultReader {
        VaultReader(minter: try minter(), privateKey: passphrase.recoveryKeyring(keys, kms: kms).privateKey(version:))
    }

    /// With `needsPrivateKeys`, a machine without the recovery private keys is
    /// told so first (before the database or the audit key).
    static func open(_ keys: KeyOptions, _ database: DatabaseOptions, needsPrivateKeys: Bool = false) async throws -> AuditedSession {
        let store = KeyStore(directory: keys.resolvedKeysDirectory)
        if needsPrivateKeys { _ = try store.recoveryPrivateKeys() }
        let actor = try AuditActor.current(store: store)
        return AuditedSession(store: store, actor: actor, connection: try await connectDatabase(database))
    }
}
