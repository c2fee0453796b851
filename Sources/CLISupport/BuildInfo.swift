import Foundation

/// What a binary is: its release version and the source revision, which the
/// images record at build time (`PSEUDONYMIZER_REVISION`) and a binary built
/// in a git checkout reads from the checkout it lives in.
public enum BuildInfo {
    public static let version = "0.11.0"

    /// `PSEUDONYMIZER_REVISION`, else the commit of the git checkout holding the executable, else "unknown".
    public static var revision: String {
        if let recorded = ProcessInfo.processInfo.environment["PSEUDONYMIZER_REVISION"], !recorded.isEmpty { return recorded }
        return checkoutRevision() ?? "unknown"
    }

    /// What `--version` prints.
    public static var description: String { "\(version) (revision \(revision))" }

    /// The commit HEAD names in the nearest `.git` above the executable (a
    /// build in `.build/…` of a checkout), abbreviated to 12 hex digits.
    static func checkoutRevision() -> String? {
        guard let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        var directory = (executable as NSString).deletingLastPathComponent
        while directory != "/" && !directory.isEmpty {
            let git = directory + "/.git"
            if let head = try? String(contentsOfFile: git + "/HEAD", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) {
                return commit(head, in: git).map { String($0.prefix(12)) }
            }
            directory = (directory as NSString).deletingLastPathComponent
        }
        return nil
    }

    /// HEAD's commit: itself when detached, else its branch's, loose or packed.
    private static func commit(_ head: String, in git: String) -> String? {
        guard head.hasPrefix("ref: ") else { return isCommit(head) ? head : nil }
        let reference = String(head.dropFirst(5))
        if let loose = try? String(contentsOfFile: git + "/" + reference, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            isCommit(loose)
        {
            return loose
        }
        let packed = (try? String(contentsOfFile: git + "/packed-refs", encoding: .utf8)) ?? ""
        for line in packed.split(separator: "\n") where line.hasSuffix(" " + reference) {
            let commit = String(line.prefix(while: { $0 != " " }))
            if isCommit(commit) { return commit }
        }
        return nil
    }

    private static func isCommit(_ text: String) -> Bool { text.count == 40 && text.allSatisfy(\.isHexDigit) }
}
