import ArgumentParser
import CLISupport
import Foundation
import KeyCustody
import Postgres
import Storage
import VaultAdmin
import VaultCrypto

/// The key kinds `vault keys rotate` can rotate.
enum RotatedKey: String, EnumerableFlag {
    case tokenization
    case recovery
    case audit
    case suppression

    static func help(for value: RotatedKey) -> ArgumentHelp? {
        switch value {
        case .tokenization: return "Rotate the tokenization (HMAC) key."
        case .recovery: return "Rotate the recovery keypair."
        case .audit: return "Rotate the audit key (or create audit-key.json for a key set made before it existed)."
        case .suppression:
            return "Add the suppression key to a key set made before it existed (it never rotates: erased values stay erased under it)."
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, register, rotate, inspect and retire key versions.",
        subcommands: [Init.self, Register.self, Status.self, Rotate.self, Retire.self]
    )

    struct Init: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a fresh key set (tokenization key, recovery keypair, audit key: v1 each) and register it in the database.",
            discussion: """
                Writes tokenization.json (0600), recovery-public.json (0644), recovery-private.json \
                (0600, the private key sealed under the passphrase with scrypt and AES-256-GCM, or by an AWS KMS key \
                with --recovery-kms-key-id) and audit-key.json (0600), \
                then registers the fingerprints of the tokenization and recovery keys in the database (run `ingest migrate` \
                first), so that a swapped key file is refused. With --tokenization-kms-key-id the tokenization key is an \
                AWS KMS HMAC_256 key: tokenization.json then holds only its ARN. With --offline nothing is registered: run \
                `vault keys register` once the database is reachable. Refuses to overwrite an existing key set.

                Examples:
                  vault keys init
                  vault keys init --keys-dir /secure/keys --offline
                """
        )

        @OptionGroup var keys: KeyOptions
        @OptionGroup var passphrase: PassphraseOptions
        @OptionGroup var database: DatabaseOptions

        @Option(help: ArgumentHelp("scrypt cost as log2(N), 14…22 (17: 128 MiB, about half a second).", valueName: "n"))
        var scryptLogN: Int = 17

        @Flag(help: "Create the files only; register them later with `vault keys register`.")
        var offline = false

        @Option(help: ArgumentHelp("Make tokenization key v1 this AWS KMS HMAC_256 key (ARN, id or alias).", valueName: "key"))
        var tokenizationKMSKeyID: String?

        @Option(
            help: ArgumentHelp(
                "Seal recovery private key v1 with this symmetric AWS KMS key instead of a passphrase (ARN, id or alias).",
                valueName: "key"))
        var recoveryKMSKeyID: String?

        @Option(
            help: ArgumentHelp(
                "Make the suppression key (which recognizes erased values) this AWS KMS HMAC_256 key; give it with --tokenization-kms-key-id, or the key file holds a local one.",
                valueName: "key"))
        var suppressionKMSKeyID: String?

        @OptionGroup var output: JSONOption

        func validate() throws {
            guard (14...22).contains(scryptLogN) else { throw ValidationError("--scrypt-log-n must be between 14 and 22") }
        }

        func execute() async throws {
            let store = KeyStore(directory: keys.resolvedKeysDirectory)
            let connection = offline ? nil : try await connectDatabase(database)
            let kms = vaultKMS()
            // What the audit log holds without MACs now is recorded in audit-key.json,
            // outside the database (none for a new database, or --offline).
            var unauthenticated = UnauthenticatedAuditRows.allAuthenticated
            if let connection { unauthenticated = try await AuditLog.unauthenticatedRows(on: connection) }
            try await KeyAdministration.createKeySet(
                store: store,
                sealing: try passphrase.sealing(kmsKeyID: recoveryKMSKeyID, kms: kms, scryptLogN: scryptLogN, confirm: true),
                tokenizationKMSKeyID: tokenizationKMSKeyID, suppressionKMSKeyID: suppressionKMSKeyID, kms: kms,
                unauthenticatedAuditRows: unauthenticated)
            var registered: [String] = []
            if let connection {
                registered = try await KeyAdministration.register(
                    store: store, kms: kms, reason: "vault keys init", actor: try AuditActor.current(store: store), connection: connection)
            }
            printSummary(
                json: output.json,
                [
                    "directory": store.directory, "registered": registered,
                    "files": [store.tokenizationPath, store.recoveryPublicPath, store.recoveryPrivatePath, store.auditKeyPath],
                ],
                text: """
                    Created a key set in \(store.directory):
                      \(store.tokenizationPath)     tokenization key v1 (\(tokenizationKMSKeyID == nil ? "secret" : "in AWS KMS"): ingest and vault)
                      \(store.recoveryPublicPath)   recovery public key v1 (ingest and vault)
                      \(store.recoveryPrivatePath)  recovery private key v1, \(recoveryKMSKeyID == nil ? "passphrase" : "KMS")-sealed (compliance machines only)
                      \(store.auditKeyPath)        audit key v1 (secret: vault only)
                    \(offline ? "not registered (--offline): run `vault keys register --reason …` where the database is reachable"
                           : "registered in the database: \(registered.joined(separator: ", "))")
                    """)
        }
    }

    struct Register: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register the fingerprints of key versions the database does not know yet (key sets made with --offline).",
            discussion: """
                A version registered with another key is refused: that key file was swapped, or belongs to another installation.

                Examples:
                  vault keys register --reason \"key set made offline\"
                """)

        @OptionGroup var reason: ReasonOption
        @OptionGroup var output: JSONOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func execute() async throws {
            let session = try await AuditedSession.open(keys, database)
            let added = try await KeyAdministration.register(
                store: session.store, kms: session.kms, reason: reason.text, actor: session.actor,
                connection: session.connection)
            printSummary(
                json: output.json, ["registered": added],
                text: added.isEmpty ? "every key version was already registered" : "registered \(added.joined(separator: ", "))")
        }
    }

    struct Status: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every key version, its state, whether it is the registered one, and exactly what it still protects.",
            discussion: """
                Examples:
                  vault keys status
                  vault keys status --json
                """)

        @Flag(help: "Print JSON.")
        var json = false
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions

        func execute() async throws {
            let connection = try await connectDatabase(database)
            let inventory = try await KeyAdministration.inventory(
                store: KeyStore(directory: keys.resolvedKeysDirectory), kms: vaultKMS(), connection: connection)
            if json {
                print(
                    jsonLine([
                        "tokenization": inventory.tokenization.map {
                            [
                                "version": $0.version, "state": $0.state, "created_at": $0.createdAt ?? NSNull(),
                                "backend": $0.backend ?? NSNull(), "kms_key_id": $0.kmsKeyID ?? NSNull(),
                                "vault_entries": $0.vaultEntries,
                                "erased_entries": $0.erasedEntries, "ip_rows": $0.ipRows, "device_rows": $0.deviceRows,
                                "registration": $0.registration.rawValue,
                            ] as [String: Any]
                        },
                        "recovery": inventory.recovery.map {
                            [
                                "version": $0.version, "state": $0.state, "created_at": $0.createdAt ?? NSNull(),
                                "private_key_present": $0.privateKeyPresent, "data_keys": $0.dataKeys, "data_keys_in_use": $0.dataKeysInUse,
                                "vault_entries": $0.vaultEntries, "quarantined": $0.quarantined,
                                "registration": $0.registration.rawValue,
                            ] as [String: Any]
                        },
                        "data_keys": ["total": inventory.dataKeys, "in_use": inventory.dataKeysInUse],
                        "entries_without_data_key": inventory.entriesWithoutDataKey,
                    ]))
                return
            }
            print("tokenization keys")
            for key in inventory.tokenization {
                print(
                    "  v\(key.version)  \(key.state.padding(toLength: 12, withPad: " ", startingAt: 0))  created \(key.createdAt ?? "?")  "
                        + "\(key.kmsKeyID.map { "aws-kms \($0)" } ?? key.backend ?? "-")  "
                        + "\(key.registration.rawValue)  vault entries \(key.vaultEntries) (+\(key.erasedEntries) erased), "
                        + "rows: ip \(key.ipRows), device_id \(key.deviceRows)")
            }
            print("recovery keys")
            for key in inventory.recovery {
                print(
                    "  v\(key.version)  \(key.state.padding(toLength: 12, withPad: " ", startingAt: 0))  created \(key.createdAt ?? "?")  "
                        + "\(key.registration.rawValue)  private key \(key.privateKeyPresent ? "here" : "not here"), "
                        + "data keys \(key.dataKeys) (\(key.dataKeysInUse) in use), "
                        + "protecting \(key.vaultEntries) vault entries and \(key.quarantined) quarantined messages")
            }
            print("data keys: \(inventory.dataKeys) (\(inventory.dataKeysInUse) in use by ingest)")
            if inventory.entriesWithoutDataKey > 0 {
                print("WARNING: \(inventory.entriesWithoutDataKey) vault entries have no data key row: they cannot be recovered")
            }
            let mismatched =
                inventory.tokenization.filter { $0.registration == .mismatch }.map { "tokenization v\($0.version)" }
                + inventory.recovery.filter { $0.registration == .mismatch }.map { "recovery v\($0.version)" }
            if !mismatched.isEmpty {
                print(
                    "WARNING: \(mismatched.joined(separator: ", ")) in the key files differ from the registered keys: a key file was swapped"
                )
            }
        }
    }

    struct Rotate: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new key version and make it the active one for new work.",
            discussion: """
                --tokenization: new tokens use it as soon as ingest reloads its key files (SIGHUP or within seconds); \
                then run `vault retokenize`. With --kms-key-id the new version is that AWS KMS HMAC_256 key. \
                --recovery: new data keys are wrapped to it; then run `vault rewrap`. With --kms-key-id its private key \
                is sealed by that symmetric AWS KMS key instead of the passphrase. \
                Copy the changed public files (tokenization.json, recovery-public.json) to the ingest secret. \
                --audit: new audit rows are authenticated with it; keep the old versions for `vault audit verify`. \
                --suppression: adds the key that recognizes values `vault forget` erased (key sets made before it \
                existed); it is never rotated. With --kms-key-id it is that AWS KMS HMAC_256 key. Copy tokenization.json to \
                the ingest secret: once it is registered, ingest refuses a key file without it.

                --dry-run changes nothing: it runs the checks of `vault doctor` (the key files are the registered \
                ones, the passphrase opens the recovery keys) and says which version a run would add.

                Examples:
                  vault keys rotate --tokenization --dry-run --reason \"yearly rotation\"
                  vault keys rotate --tokenization --reason \"yearly rotation\"
                  vault keys rotate --recovery --reason \"officer left\"
                """)

        @Flag var kind: RotatedKey
        @OptionGroup var reason: ReasonOption
        @Option(help: ArgumentHelp("scrypt cost for the new private key as log2(N), 14…22.", valueName: "n"))
        var scryptLogN: Int = 17
        @Option(
            help: ArgumentHelp(
                "--tokenization: the AWS KMS HMAC_256 key to use; --recovery: the symmetric KMS key to seal the private key with.",
                valueName: "key"))
        var kmsKeyID: String?
        @Flag(help: "Change nothing: check what a run needs and say which version it would add.")
        var dryRun = false
        @OptionGroup var output: JSONOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var passphrase: PassphraseOptions

        func validate() throws {
            guard (14...22).contains(scryptLogN) else { throw ValidationError("--scrypt-log-n must be between 14 and 22") }
            guard kmsKeyID == nil || kind != .audit else {
                throw ValidationError("--kms-key-id goes with --tokenization, --recovery or --suppression")
            }
        }

        func execute() async throws {
            let store = KeyStore(directory: keys.resolvedKeysDirectory)
            let connection = try await connectDatabase(database)
            let kms = vaultKMS()
            if dryRun { return try await plan(store: store, kms: kms, connection: connection) }
            let version: Int
            let next: String
            switch kind {
            case .audit:
                version = try await KeyAdministration.rotateAudit(store: store, reason: reason.text, connection: connection)
                next = "keep \(store.auditKeyPath) with the vault key set"
            case .tokenization:
                version = try await KeyAdministration.rotateTokenization(
                    store: store, kmsKeyID: kmsKeyID, kms: kms, reason: reason.text, actor: try AuditActor.current(store: store),
                    connection: connection)
                next = "distribute \(store.tokenizationPath) to ingest, then run `vault retokenize`"
            case .recovery:
                let actor = try AuditActor.current(store: store)
                let sealing = try passphrase.sealing(kmsKeyID: kmsKeyID, kms: kms, scryptLogN: scryptLogN, confirm: false)
                // One passphrase for the file: the one that seals the new key must open the current one.
                let keyring = RecoveryKeyring(store: store, kms: kms) {
                    if case .passphrase(let secret, _) = sealing { return secret }
                    return try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private keys: ")
                }
                version = try await KeyAdministration.rotateRecovery(
                    store: store, keyring: keyring, sealing: sealing, reason: reason.text, actor: actor, connection: connection)
                next = "distribute \(store.recoveryPublicPath) to ingest, then run `vault rewrap`"
            case .suppression:
                let backend = try await KeyAdministration.addSuppressionKey(
                    store: store, kmsKeyID: kmsKeyID, kms: kms, reason: reason.text, actor: try AuditActor.current(store: store),
                    connection: connection)
                version = 1
                next = "(\(backend)) distribute \(store.tokenizationPath) to ingest: erased values are no longer stored again"
            }
            printSummary(
                json: output.json, ["kind": kind.rawValue, "active_version": version],
                text: "\(kind.rawValue) key v\(version) is active; \(next)")
        }

        /// The dry run: the preflight's checks, then the version a run would add.
        private func plan(store: KeyStore, kms: LazyKMSClient, connection: PostgresConnection) async throws {
            let checks = await Preflight.run(
                store: store, kms: kms,
                passphrase: {
                    try PassphraseSource(file: passphrase.passphraseFile).read(prompt: "Passphrase for the recovery private keys: ")
                },
                connect: { connection })
            let failures = checks.compactMap { check in check.failure.map { (check.name, classify($0)) } }
            let current: [Int]
            switch kind {
            case .tokenization: current = try store.tokenizationKeyring().keys.map(\.version)
            case .recovery: current = try store.recoveryPublicKeys().keys.map(\.version)
            case .audit: current = store.hasAuditKeys ? try store.auditKeyring().keys.map(\.version) : []
            case .suppression: current = try store.tokenizationKeyring().suppression.map { [$0.version] } ?? []
            }
            let plan =
                kind == .suppression && !current.isEmpty
                ? "the key set has a suppression key already: a run would refuse (it never rotates)"
                : "a run would add \(kind.rawValue) key v\((current.max() ?? 0) + 1)\(current.isEmpty ? "" : " (now: \(current.map { "v\($0)" }.joined(separator: ", ")))")"
            printSummary(
                json: output.json,
                [
                    "dry_run": true, "kind": kind.rawValue, "next_version": (current.max() ?? 0) + 1,
                    "failed_checks": failures.map { ["name": $0.0, "detail": $0.1.0] },
                ],
                text: (failures.map { "FAIL \($0.0): \($0.1.0)" } + [failures.isEmpty ? plan : "\(plan), but it would fail first (above)"])
                    .joined(separator: "\n"))
            if let (_, (_, code)) = failures.first { throw ExitCode(code) }
        }
    }

    struct Retire: ToolCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a key version (and, for recovery keys, its private key) once nothing depends on it.",
            discussion: """
                --recovery needs the passphrase: every data key must still open with a remaining private key, \
                and each one is tried before anything is removed. Asks for confirmation on the terminal unless --yes.

                Examples:
                  vault keys retire --tokenization 1 --dry-run --reason \"rotation done\"
                """)

        @Option(help: ArgumentHelp("The tokenization key version to retire.", valueName: "version"))
        var tokenization: Int?
        @Option(help: ArgumentHelp("The recovery key version to retire.", valueName: "version"))
        var recovery: Int?
        @OptionGroup var reason: ReasonOption
        @Flag(help: "Run every check and say whether the version could go; remove nothing.")
        var dryRun = false
        @OptionGroup var confirmation: ConfirmationOptions
        @OptionGroup var output: JSONOption
        @OptionGroup var keys: KeyOptions
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var passphrase: PassphraseOptions

        func validate() throws {
            guard (tokenization == nil) != (recovery == nil) else {
                throw ValidationError("give exactly one of --tokenization N or --recovery N")
            }
        }

        func execute() async throws {
            let session = try await AuditedSession.open(keys, database)
            let store = session.store
            let kind = tokenization != nil ? "tokenization" : "recovery"
            let version = tokenization ?? recovery!
            if !dryRun { try confirmation.confirm("This deletes \(kind) key v\(version)\(recovery != nil ? " and its private key" : "")") }
            if tokenization != nil {
                try await KeyAdministration.retireTokenization(
                    version: version, store: store, kms: session.kms, dryRun: dryRun, reason: reason.text,
                    actor: session.actor, connection: session.connection)
            } else {
                try await KeyAdministration.retireRecovery(
                    version: version, store: store, keyring: passphrase.recoveryKeyring(keys, kms: session.kms), kms: session.kms,
                    dryRun: dryRun, reason: reason.text, actor: session.actor,
                    connection: session.connection)
            }
            printSummary(
                json: output.json, ["kind": kind, "version": version, "dry_run": dryRun, "retired": !dryRun],
                text: dryRun
                    ? "\(kind) key v\(version) can be retired: nothing depends on it"
                    : "\(kind) key v\(version) retired; its key material is gone from the key files")
        }
    }
}
