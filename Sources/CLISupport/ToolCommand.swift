public import ArgumentParser
import Foundation
import Postgres

/// A subcommand of `ingest` or `vault`. Its failures all end the same way
/// (`ToolMain.fail`): an error found after parsing is still a usage error of
/// *this* subcommand, with its usage; anything else is one line (or, with
/// `LOG_FORMAT=json`, one JSON object) on stderr and the documented exit code.
public protocol ToolCommand: AsyncParsableCommand {
    /// The command's work.
    func execute() async throws

    /// A job that resumes where it stopped when run again: losing the
    /// database midway is "not finished, run it again" (75), not a failure.
    static var resumesWhenRunAgain: Bool { get }
}

extension ToolCommand {
    public static var resumesWhenRunAgain: Bool { false }

    public func run() async throws {
        do {
            try await execute()
        } catch let error as PostgresError where Self.resumesWhenRunAgain && error.isUnavailable {
            ToolMain.fail(
                OperatorError(
                    "PostgreSQL went away before the job finished (\(error.message)); what it did is kept: run it again when the database is back, it resumes",
                    exitCode: ExitStatus.tempfail), command: Self.self)
        } catch {
            ToolMain.fail(error, command: Self.self)
        }
    }
}

/// The executables' entry point and last words.
public enum ToolMain {
    /// The root command, for the usage of a subcommand that fails after parsing.
    nonisolated(unsafe) static var root: (any ParsableCommand.Type)?

    static var toolName: String {
        CommandLine.arguments.first.map { ($0 as NSString).lastPathComponent } ?? "tool"
    }

    /// Parses and runs `root`'s command line, like ArgumentParser's own `main`,
    /// but with the failure reporting above for parse errors too.
    public static func main(_ root: any AsyncParsableCommand.Type, manual: ManualPage) async {
        Self.root = root
        if Array(CommandLine.arguments.dropFirst()) == ["--generate-manual"] {
            print(manual.render(root, version: BuildInfo.description), terminator: "")
            Foundation.exit(ExitStatus.success)
        }
        if let (command, message) = ArgumentCheck.problem(in: Array(CommandLine.arguments.dropFirst()), root: root) {
            fail(ValidationError(message), command: command)
        }
        do {
            var command = try await root.asyncParseAsRoot(nil)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            fail(error, command: root)
        }
    }

    /// Reports `error` and exits. Help and `--version` requests print as usual.
    public static func fail(_ error: any Error, command: any ParsableCommand.Type) -> Never {
        let json = ToolLogging.isJSON()
        if let exit = error as? ExitCode {
            Foundation.exit(exit.rawValue)
        }
        let usageError = error is ValidationError || isArgumentParserError(error)
        if usageError {
            let exitCode = command.exitCode(for: error)
            if json, exitCode != .success { emit(command.message(for: error), code: exitCode.rawValue, json: true) }
            // Found after parsing: the subcommand's usage, with its whole name.
            if let validation = error as? ValidationError, let root, let path = path(to: command, from: root) {
                FileHandle.standardError.write(
                    Data(
                        """
                        Error: \(validation.message)
                        Usage: \(root.usageString(for: command))
                          See '\(path.joined(separator: " ")) --help' for more information.

                        """.utf8))
                Foundation.exit(ExitStatus.usage)
            }
            command.exit(withError: error)
        }
        let (message, code) = classify(error)
        emit(message, code: code, json: json)
    }

    /// The command names from `root` down to `target`.
    static func path(to target: any ParsableCommand.Type, from root: any ParsableCommand.Type) -> [String]? {
        if target == root { return [root._commandName] }
        for subcommand in root.configuration.subcommands {
            if let rest = path(to: target, from: subcommand) { return [root._commandName] + rest }
        }
        return nil
    }

    /// ArgumentParser's own errors (parse errors, help, version) are not ours.
    private static func isArgumentParserError(_ error: any Error) -> Bool {
        String(reflecting: type(of: error)).hasPrefix("ArgumentParser.")
    }

    private static func emit(_ message: String, code: Int32, json: Bool) -> Never {
        if json {
            FileHandle.standardError.write(
                JSONLogHandler.line(
                    level: "error", logger: toolName, message: message,
                    fields: ["exit_code": Int(code)]))
        } else {
            FileHandle.standardError.write(Data("\(toolName): error: \(message)\n".utf8))
        }
        Foundation.exit(code)
    }
}
