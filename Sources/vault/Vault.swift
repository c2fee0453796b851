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
            Rewrap.self, Retokenize.self,
        ]
    )

    /// Hardens the process before anything is parsed or any key is read.
    static func main() async {
        ProcessHardening.disableCoreDumps()
        await ToolMain.main(Vault.self)
    }
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
