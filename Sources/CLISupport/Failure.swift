import AWS
import ArgumentParser
import Foundation
import Postgres
import Storage
import VaultCrypto

/// Process exit codes shared by `ingest` and `vault` (listed in both `--help` texts).
public enum ExitStatus {
    public static let success: Int32 = 0
    /// A runtime failure: database or queue unreachable, an operation failed.
    public static let failure: Int32 = 1
    /// Wrong usage (ArgumentParser's own code for validation errors).
    public static let usage: Int32 = 64
    /// Data failed an integrity check: a vault entry or the audit chain was altered.
    public static let integrity: Int32 = 65
    /// Access refused: wrong passphrase, insecure key file, no private key here, the four-eyes policy.
    public static let permission: Int32 = 77
    /// Not finished (interrupted, or work left over): run it again; it resumes.
    public static let tempfail: Int32 = 75
    /// Configuration is missing or invalid: no keys, a bad URL or option value.
    public static let configuration: Int32 = 78

    public static let helpText = """
        Exit codes: 0 success; 1 runtime failure (database or queue unreachable, operation failed); \
        64 usage error; 65 integrity failure (tampered data, audit chain or key files); \
        75 not finished (interrupted, or work left over): run it again, it resumes; \
        77 access refused (wrong passphrase, insecure key file, no private key here, four-eyes policy); \
        78 configuration error (missing keys, bad URL or option).
        """
}

/// An error that says what to do and which exit code it ends the tool with;
/// errors of the modules below the tools conform where the tool is built.
public protocol ReportableError: Error, CustomStringConvertible {
    var exitCode: Int32 { get }
}

/// An error the operator can act on, with the exit code it maps to.
public struct OperatorError: ReportableError {
    public let message: String
    public let exitCode: Int32

    public init(_ message: String, exitCode: Int32 = ExitStatus.failure) {
        self.message = message
        self.exitCode = exitCode
    }

    public var description: String { message }
}

/// An error's message for a person and the exit code it maps to. Messages
/// come from our own error types, which never carry an original value.
func classify(_ error: any Error) -> (String, Int32) {
    switch error {
    case let error as KeyFileError:
        switch error.code {
        case .wrongPassphrase, .insecurePermissions: return (error.message, ExitStatus.permission)
        case .missing where error.message.contains("recovery private key"): return (error.message, ExitStatus.permission)
        case .missing, .malformed, .alreadyExists, .unknownVersion: return (error.message, ExitStatus.configuration)
        default: return (error.message, ExitStatus.failure)
        }
    case let error as KeyRegistryError:
        return (error.message, error.code == .mismatch ? ExitStatus.integrity : ExitStatus.configuration)
    case let error as ValidationError:
        return (error.message, ExitStatus.usage)
    case let error as DistributionError:
        return (error.description, ExitStatus.configuration)
    case let error as CryptoError where error.code == .authenticationFailed:
        return ("integrity check failed: \(error.message)", ExitStatus.integrity)
    case let error as any ReportableError:
        return (error.description, error.exitCode)
    case let error as SQSError:
        return (error.description, error.isTransient ? ExitStatus.failure : ExitStatus.configuration)
    case let error as AWSError:
        return (error.description, error.isTransient ? ExitStatus.failure : ExitStatus.configuration)
    case let error as KMSError:
        switch error.kind {
        case .transient: return (error.description, ExitStatus.failure)
        case .accessDenied: return (error.description, ExitStatus.permission)
        case .invalidCiphertext: return (error.description, ExitStatus.integrity)
        case .keyUnusable, .invalidRequest: return (error.description, ExitStatus.configuration)
        }
    case let error as PostgresError where error.sqlState == "PSK08":
        // The database's four-eyes checks refused: its message says why.
        return ("refused by the database: \(error.message)", ExitStatus.permission)
    case let error as PostgresError where error.code == .insecureTransport:
        return (error.message, ExitStatus.configuration)
    case let error as PostgresError where error.code == .connectionFailed:
        return (
            "cannot reach PostgreSQL (\(error.message)); check DATABASE_URL or the PG* variables and that the server is up",
            ExitStatus.failure
        )
    default:
        return ("\(error)", ExitStatus.failure)
    }
}
