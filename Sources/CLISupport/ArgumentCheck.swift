import ArgumentParser
import Foundation

/// Looks at a command line before ArgumentParser does, for the mistakes it
/// reports as something else: a misspelt command or option (it would say a
/// required option is missing, or that an option belongs to no command)
/// gets "did you mean", and a stray word is explained. Words that might be
/// personal data (a pasted address) are described, never echoed.
enum ArgumentCheck {
    /// The command the mistake is in and what to say, or nil to let the parser go on.
    static func problem(in arguments: [String], root: any ParsableCommand.Type) -> (any ParsableCommand.Type, String)? {
        let helpOrVersion: Set = ["-h", "--help", "help", "--version", "--experimental-dump-help"]
        if arguments.contains(where: { helpOrVersion.contains($0) || $0.hasPrefix("--generate-completion-script") }) { return nil }
        var command = root
        var index = 0
        while index < arguments.count, !command.configuration.subcommands.isEmpty {
            let word = arguments[index]
            if word.hasPrefix("-") { return nil }  // a group's own options: the parser's to judge
            guard let next = subcommand(named: word, of: command) else {
                let names = command.configuration.subcommands.map { $0._commandName }
                let meant = suggestion(for: word, among: names)
                let group = ToolMain.path(to: command, from: root)?.joined(separator: " ") ?? "this tool"
                return (
                    command,
                    "\(describe(word, as: "an argument", echo: meant != nil)) is not a command of \(group)\(meant.map { ": did you mean '\($0)'?" } ?? "") (its commands: \(names.joined(separator: ", ")))"
                )
            }
            command = next
            index += 1
        }
        guard command.configuration.subcommands.isEmpty else { return nil }
        let options = knownOptions(of: command, root: root)
        let takesArguments = help(of: command, root: root).contains("\nARGUMENTS:")
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if word == "--" { return nil }
            if word.hasPrefix("--") {
                let name = String(word.split(separator: "=", maxSplits: 1)[0])
                guard let takesValue = options[name] else {
                    let hint =
                        suggestion(for: name, among: Array(options.keys)).map { ": did you mean \($0)?" } ?? ": see --help for its options"
                    return (command, "\(describe(name, as: "an option", echo: true)) is not an option of this command\(hint)")
                }
                if takesValue && !word.contains("=") { index += 1 }
            } else if !word.hasPrefix("-") && !takesArguments {
                let hint =
                    word.hasPrefix("ip_t") || word.hasPrefix("dev_t")
                    ? "a token is given with --token (many with --tokens-file)"
                    : "this command takes options only (they start with --)"
                return (command, "\(describe(word, as: "an argument", echo: false)) was not expected: \(hint)")
            }
        }
        return nil
    }

    static func subcommand(named word: String, of command: any ParsableCommand.Type) -> (any ParsableCommand.Type)? {
        for subcommand in command.configuration.subcommands
        where subcommand._commandName == word || subcommand.configuration.aliases.contains(word) {
            return subcommand
        }
        return nil
    }

    /// Each long option of `command` (hidden ones too) and whether it takes a value, from its help.
    static func knownOptions(of command: any ParsableCommand.Type, root: any ParsableCommand.Type) -> [String: Bool] {
        var options: [String: Bool] = ["--help": false, "--version": false]
        for line in help(of: command, root: root).split(separator: "\n") {
            let trimmed = line.drop(while: { $0 == " " })
            guard trimmed.hasPrefix("-") else { continue }
            // "-y, --yes", "--token <token>", "--json/--no-json": up to the first double space (the description).
            let synopsis = trimmed.components(separatedBy: "  ").first ?? ""
            let parts = synopsis.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "/" })
            let takesValue = parts.contains { $0.hasPrefix("<") }
            for part in parts where part.hasPrefix("--") { options[String(part)] = takesValue }
        }
        return options
    }

    /// The whole help of `command`, hidden options included, one line per option.
    static func help(of command: any ParsableCommand.Type, root: any ParsableCommand.Type) -> String {
        root.helpMessage(for: command, includeHidden: true, columns: 10_000)
    }

    /// The closest name, if close enough to be the one meant.
    static func suggestion(for word: String, among names: [String]) -> String? {
        let scored = names.map { ($0, distance(word.lowercased(), $0.lowercased())) }
        guard let (best, score) = scored.min(by: { $0.1 < $1.1 }) else { return nil }
        let bare = word.drop(while: { $0 == "-" })
        if score <= max(1, min(2, bare.count / 3)) { return best }
        // A prefix of a name (--tok for --token), if it names only one.
        let prefixed = names.filter { $0.hasPrefix(word) && bare.count >= 3 }
        return prefixed.count == 1 ? prefixed[0] : nil
    }

    /// A word as it may be shown: quoted only when `echo` (an option name, or
    /// a near miss of a command) and it is a plain identifier; else only its
    /// length ("an argument of 8 characters": it may be a pasted value).
    static func describe(_ word: String, as kind: String, echo: Bool) -> String {
        let plain = word.count <= 40 && word.allSatisfy { $0.isASCII && ($0.isLetter || $0 == "-" || $0 == "_") }
        return echo && plain ? "'\(word)'" : "\(kind) of \(word.count) characters"
    }

    /// Edits from one word to the other: insertions, deletions,
    /// substitutions and swaps of neighbours ("lgo" is one from "log").
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in stride(from: 1, through: a.count, by: 1) {
            for j in stride(from: 1, through: b.count, by: 1) {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1) }
            }
        }
        return table[a.count][b.count]
    }
}
