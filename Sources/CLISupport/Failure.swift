import AWS
import ArgumentParser
import Foundation
import Postgres
import Storage
import VaultCrypto

/// Process exit codes shared by `ingest` and `vault` (listed in both `--help` texts).
public enum ExitStatus {
    public static let success: Int32 = 0
    /// Anything the other codes do not name: an operation failed unexpectedly.
    public static let failure: Int32 = 1
    /// Wrong usage: an unknown option or command, a missing or conflicting one.
    public static let usage: Int32 = 64
    /// Bad input (a malformed token, an invalid IP address), or data that
    /// fails an integrity check (an altered vault entry, audit chain or key file).
    public static let integrity: Int32 = 65
    /// What was asked for is not there: an unknown or erased token, a user
    /// with no rows, a quarantined message that does not exist.
    public static let notFound: Int32 = 66
    /// A dependency is unavailable (PostgreSQL, SQS or KMS unreachable or
    /// shutting down): try again later.
    public static let unavailable: Int32 = 69
    /// Not finished (interrupted, the database went away mid-run, or work
    /// left over): run it again; it resumes.
    public static let tempfail: Int32 = 75
    /// Access refused: wrong passphrase, insecure key file, no private key here, the four-eyes policy.
    public static let permission: Int32 = 77
    /// Configuration is missing or invalid: no keys, a bad URL or option value.
    public static let configuration: Int32 = 78

    /// Every code and what it means, for `--help`, the man pages and the README.
    public static let table: [(code: Int32, meaning: String)] = [
        (success, "success"),
        (failure, "an unexpected failure (none of the codes below)"),
        (usage, "usage error: unknown or misspelt option or command, missing or conflicting options"),
        (integrity, "bad input (a malformed token, an invalid address) or an integrity failure (tampered data, audit chain or key files)"),
        (notFound, "not found: an unknown or erased token, a user with no rows, no such quarantined message"),
        (unavailable, "a dependency is unavailable (PostgreSQL, SQS, KMS): try again later"),
        (tempfail, "not finished (interrupted, the database went away mid-run, work left over): run it again, it resumes"),
        (permission, "access refused (wrong passphrase, insecure key file, no private key here, the four-eyes policy)"),
        (configuration, "configuration error (missing keys, a bad database URL or option value)"),
    ]

    public static let helpText = "Exit codes: " + table.map { "\($0.code) \($0.meaning)" }.joined(separator: "; ") + "."
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
public func classify(_ error: any Error) -> (String, Int32) {
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
        return (error.description, error.isTransient ? ExitStatus.unavailable : ExitStatus.configuration)
    case let error as AWSError:
        return (error.description, error.isTransient ? ExitStatus.unavailable : ExitStatus.configuration)
    case let error as KMSError:
        switch error.kind {
        case .transient: return (error.description, ExitStatus.unavailable)
        case .accessDenied: return (error.description, ExitStatus.permission)
        case .invalidCiphertext: return (error.description, ExitStatus.integrity)
        case .keyUnusable, .invalidRequest: return (error.description, ExitStatus.configuration)
        }
    case let error as PostgresError where error.sqlState == "PSK08":
        // The database's four-eyes checks refused: its message says why.
        return ("refused by the database: \(error.message)", ExitStatus.permission)
    case let error as PostgresError where error.code == .insecureTransport || error.code == .invalidConninfo:
        return (error.message, ExitStatus.configuration)
    case let error as PostgresError where error.code == .connectionFailed:
        return (
            "cannot reach PostgreSQL (\(error.message)); check DATABASE_URL or the PG* variables and that the server is up",
            ExitStatus.unavailable
        )
    case let error as PostgresError where error.isUnavailable:
        return ("PostgreSQL is unavailable (\(error.message)); try again when it is back", ExitStatus.unavailable)
    default:
        return ("\(error)", ExitStatus.failure)
    }
}
