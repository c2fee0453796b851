public import ArgumentParser

/// A tool's man page (man(7) macros), made from its commands' own help, so it
/// cannot drift from `--help`: every command with its options and examples,
/// then what a reader of a man page looks for (exit status, environment,
/// files, examples). `--generate-manual` prints it; `scripts/install-docs`
/// installs it with the completion scripts.
public struct ManualPage: Sendable {
    public let description: String
    public let environment: [(name: String, meaning: String)]
    public let files: [(path: String, meaning: String)]
    public let examples: [(command: String, meaning: String)]

    public init(
        description: String, environment: [(name: String, meaning: String)], files: [(path: String, meaning: String)],
        examples: [(command: String, meaning: String)]
    ) {
        self.description = description
        self.environment = environment
        self.files = files
        self.examples = examples
    }

    public func render(_ root: any ParsableCommand.Type, version: String) -> String {
        let name = root._commandName
        var lines = [
            ".TH \(name.uppercased()) 1 \"\" \"\(Self.escaped(version))\" \"User Commands\"",
            ".SH NAME", "\(name) \\- \(Self.escaped(root.configuration.abstract))",
            ".SH SYNOPSIS", ".B \(name)", ".I command", ".RI [ options ]",
            ".SH DESCRIPTION", Self.escaped(description),
            ".SH COMMANDS",
        ]
        for (path, command) in Self.leaves(of: root, path: [name]) {
            lines += [".SS \"\(path.joined(separator: " "))\"", ".nf"]
            let help = root.helpMessage(for: command, includeHidden: false, columns: 78)
            lines += help.split(separator: "\n", omittingEmptySubsequences: false).map { Self.escaped(String($0)) }
            lines.append(".fi")
        }
        lines.append(".SH EXIT STATUS")
        for (code, meaning) in ExitStatus.table { lines += [".TP", ".B \(code)", Self.escaped(meaning)] }
        lines.append(".SH ENVIRONMENT")
        for (variable, meaning) in environment { lines += [".TP", ".B \(variable)", Self.escaped(meaning)] }
        lines.append(".SH FILES")
        for (path, meaning) in files { lines += [".TP", ".I \(Self.escaped(path))", Self.escaped(meaning)] }
        lines.append(".SH EXAMPLES")
        for (command, meaning) in examples {
            lines += [Self.escaped(meaning) + ":", ".PP", ".RS", ".nf", Self.escaped(command), ".fi", ".RE", ".PP"]
        }
        lines += [".SH SEE ALSO", name == "vault" ? ".BR ingest (1)" : ".BR vault (1)"]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Every command that does work, depth first, with its full name.
    static func leaves(of command: any ParsableCommand.Type, path: [String]) -> [([String], any ParsableCommand.Type)] {
        let subcommands = command.configuration.subcommands
        guard !subcommands.isEmpty else { return [(path, command)] }
        var found: [([String], any ParsableCommand.Type)] = []
        for subcommand in subcommands { found += leaves(of: subcommand, path: path + [subcommand._commandName]) }
        return found
    }

    /// Text as man(7) takes it: backslashes escaped, no line read as a
    /// request, non-ASCII characters by code point (no warnings in any locale).
    static func escaped(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result += "\\e"
            case "-": result += "\\-"
            case _ where scalar.isASCII: result.unicodeScalars.append(scalar)
            default: result += "\\[u\(String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4))]"
            }
        }
        return result.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix(".") || $0.hasPrefix("'") ? "\\&" + $0 : String($0) }.joined(separator: "\n")
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
