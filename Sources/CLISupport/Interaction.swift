public import ArgumentParser
import Foundation
import ServiceLifecycle
import UnixSignals

/// Jobs that stop cleanly when asked to: SIGTERM or SIGINT cancels the work,
/// which finishes its current step and stops; the tool then exits 75 ("not
/// finished: run it again"), and the next run resumes.
public enum Interruptible {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await work() }
        let watcher = Task {
            for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                task.cancel()
                break
            }
        }
        defer { watcher.cancel() }
        do {
            return try await task.value
        } catch is CancellationError {
            throw OperatorError(
                "interrupted before it finished; run it again to finish (it resumes where it stopped)",
                exitCode: ExitStatus.tempfail)
        }
    }
}

/// Options of destructive commands.
public struct ConfirmationOptions: ParsableArguments {
    @Flag(name: .long, help: "Do not ask for confirmation (for scripts and jobs).")
    public var yes = false

    public init() {}

    /// Asks on the terminal (`/dev/tty`, so standard input may carry data)
    /// unless `--yes`; without a terminal to answer, refuses.
    public func confirm(_ what: String) throws {
        guard !yes else { return }
        let terminal = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard terminal >= 0 else {
            throw OperatorError(
                "\(what), which cannot be undone: run it on a terminal to confirm, or pass --yes", exitCode: ExitStatus.usage)
        }
        defer { close(terminal) }
        let prompt = "\(what), which cannot be undone. Type yes to go on: "
        _ = prompt.withCString { write(terminal, $0, strlen($0)) }
        var answer: [UInt8] = []
        var byte: UInt8 = 0
        while answer.count < 16, read(terminal, &byte, 1) == 1, byte != UInt8(ascii: "\n") { answer.append(byte) }
        guard String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespaces) == "yes" else {
            throw OperatorError("not confirmed; nothing was changed", exitCode: ExitStatus.failure)
        }
    }
}

/// `--json` of the job commands.
public struct JSONOption: ParsableArguments {
    @Flag(help: "Print a machine-readable summary (one JSON object) instead of text.")
    public var json = false

    public init() {}
}

/// The summary a job prints: one JSON object with `--json`, else a line of text.
public func printSummary(json: Bool, _ object: [String: Any], text: @autoclosure () -> String) {
    if json {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(text())
    }
}
