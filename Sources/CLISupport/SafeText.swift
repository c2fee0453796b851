import CProcess
import Foundation

/// Text that reaches a terminal or the audit log from people: reasons, and
/// whatever the audit log holds.
public enum SafeText {
    /// Characters that can hide or reorder what a reader sees: control
    /// characters (Cc), invisible formatting including the bidirectional
    /// overrides and isolates (Cf, e.g. U+202E), and line and paragraph separators.
    public static func isHidden(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }

    /// The first hidden character's position (1-based, in characters), if any.
    public static func firstHidden(in text: String) -> Int? {
        for (offset, character) in text.enumerated() where character.unicodeScalars.contains(where: isHidden) {
            return offset + 1
        }
        return nil
    }

    /// `text` with every hidden character, and the backslash, written as an escape
    /// (`\u{202E}`, `\\`), so what is printed is what is stored.
    public static func escaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if scalar == "\\" {
                out += "\\\\"
            } else if isHidden(scalar) {
                out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// What a tool that loads secret keys does first.
public enum ProcessHardening {
    /// No core dumps, and on Linux not dumpable (no ptrace or /proc/PID/mem by
    /// other processes of the same user), before any secret is loaded.
    public static func disableCoreDumps() {
        if pp_disable_core_dumps() != 0 {
            FileHandle.standardError.write(Data("warning: could not disable core dumps (\(String(cString: strerror(errno))))\n".utf8))
        }
    }
}
