import Foundation

/// What a binary is: its release version and, when the build recorded it (the
/// container images do, from the build's git revision), the source revision.
public enum BuildInfo {
    public static let version = "0.11.0"

    /// `PSEUDONYMIZER_REVISION`, set in the images at build time; "unknown" otherwise.
    public static var revision: String {
        ProcessInfo.processInfo.environment["PSEUDONYMIZER_REVISION"].flatMap { $0.isEmpty ? nil : $0 } ?? "unknown"
    }

    /// What `--version` prints.
    public static var description: String { "\(version) (revision \(revision))" }
}
