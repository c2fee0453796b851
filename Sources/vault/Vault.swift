import ArgumentParser
public import CLISupport
public import Storage
public import VaultAdmin

@main
struct Vault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vault",
        abstract: "The privileged tool: recovery of pseudonymized values with an audit trail, erasure, key management.",
        discussion: ExitStatus.helpText,
        version: BuildInfo.description,
        subcommands: [
            Recover.self, Lookup.self, Subject.self, Forget.self, Requests.self, Approve.self, Quarantine.self, Audit.self, Keys.self,
            Doctor.self,
            Rewrap.self, Retokenize.self,
        ]
    )

    /// Hardens the process before anything is parsed or any key is read.
    static func main() async {
        ProcessHardening.disableCoreDumps()
        await ToolMain.main(Vault.self, manual: manual)
    }

    static let manual = ManualPage(
        description: """
            vault is the privileged tool of the pseudonymizer: compliance staff recover the original behind a token, \
            answer subject-access and erasure requests by person, review quarantined messages, and search and verify \
            the audit log; the key jobs create, rotate, register and retire keys and move the vault to new ones. \
            Every reveal and erasure is audited in the same transaction by the database, which also enforces the \
            owner's four-eyes policy.
            """,
        environment: [
            ("DATABASE_URL", "The database (postgresql://user@host:port/database); else the PG* variables of libpq."),
            ("KEYS_DIR", "The key directory (default ./keys)."),
            ("VAULT_PASSPHRASE_FILE", "A file holding the recovery-key passphrase; else it is asked on the terminal."),
            ("LOG_FORMAT", "json for one JSON object per log line and error."),
            ("LOG_LEVEL", "trace, debug, info (default), notice, warning, error."),
            (
                "AWS_REGION, AWS_*",
                "For keys held in AWS KMS: the AWS SDK's credential chain (environment, web identity, container, profile)."
            ),
            ("VAULT_ALLOW_INSECURE_ENDPOINT", "1 allows plain http to a KMS emulator that is not on this machine."),
        ],
        files: [
            ("keys/tokenization.json", "The tokenization (HMAC) keys, or the KMS keys that hold them."),
            ("keys/recovery-public.json", "The recovery public keys data keys are wrapped to."),
            (
                "keys/recovery-private.json",
                "The recovery private keys, sealed under the passphrase or by KMS (compliance machines and key jobs only)."
            ),
            ("keys/audit-key.json", "The audit key every audit row is authenticated with."),
        ],
        examples: [
            ("vault keys init", "Create a key set and register it"),
            ("vault recover --token ip_t1_… --reason TICKET-1", "Recover one original"),
            (
                "psql -Atc 'SELECT masked_ip FROM t' | vault recover --tokens-file - --reason INC-7",
                "Recover many (the passphrase is asked on the terminal)"
            ),
            ("vault subject --user-id 424cdd21-… --reason SAR-9 --export sar-9.csv", "Answer a subject-access request"),
            ("vault forget --user-id 424cdd21-… --reason ERASE-4 --dry-run", "See what erasing a person would erase and keep"),
            ("vault audit log --reason SAR-9", "Everything done for a ticket"),
            ("vault audit verify --head 812:9f…", "Check the audit log against a head recorded earlier"),
            (
                "vault recover --token ip_t1_… --reason SAR-1 --request-approval",
                "Ask for four-eyes approval; another login runs vault approve ID"
            ),
        ])
}

extension RetokenizeError: ReportableError {
    public var exitCode: Int32 { isIntegrityFailure ? ExitStatus.integrity : ExitStatus.failure }
}

/// The audit trail itself does not hold: tampered functions or rows, or clocks too far apart.
extension AuditError: ReportableError {
    public var exitCode: Int32 { ExitStatus.integrity }
}

/// The four-eyes policy refused, or a request cannot be used.
extension ApprovalError: ReportableError {
    public var exitCode: Int32 { ExitStatus.permission }
}

extension PrivateFileError: ReportableError {
    public var exitCode: Int32 { ExitStatus.configuration }
}

/// Input that is not an address or device id.
extension LookupError: ReportableError {
    public var exitCode: Int32 { ExitStatus.integrity }
}

/// A token that is not one, unknown or erased, or fails its checks.
extension RecoveryError: ReportableError {
    public var exitCode: Int32 { exitStatus(for: kind) }
}

/// What `vault doctor` found wrong.
extension Preflight.Finding: ReportableError {}
