public import Foundation
public import VaultCrypto

/// Where the recovery-key passphrase comes from, in order: `--passphrase-file`,
/// the file named by `VAULT_PASSPHRASE_FILE`, or a no-echo prompt on the terminal.
public struct PassphraseSource: Sendable {
    public let file: String?

    public init(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.file = file ?? environment["VAULT_PASSPHRASE_FILE"].flatMap { $0.isEmpty ? nil : $0 }
    }

    public static let minimumLength = 12

    /// Reads the passphrase. With `confirm`, a terminal user types it twice.
    public func read(prompt: String, confirm: Bool = false) throws -> SecureBytes {
        if let file {
            // The passphrase file is a secret like the keys it protects; it is
            // read straight into wiped memory.
            let bytes = try SecureFile.readSecret(
                file,
                missing:
                    "it is the recovery-key passphrase file (--passphrase-file or VAULT_PASSPHRASE_FILE): check the path, or the mount of its Secret"
            )
            // One trailing newline is what `echo … > file` leaves; it is not part of the passphrase.
            let length = bytes.withUnsafeBytes { bytes in
                var length = bytes.count
                if length > 0, bytes[length - 1] == UInt8(ascii: "\n") { length -= 1 }
                if length > 0, bytes[length - 1] == UInt8(ascii: "\r") { length -= 1 }
                return length
            }
            let passphrase = bytes.withUnsafeBytes { bytes in
                SecureBytes(count: length) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<length])) }
            }
            return try validated(passphrase, origin: "passphrase file \(file)")
        }
        // The prompt is on the terminal, whatever standard input is: in
        // `psql … | vault recover --tokens-file -` it carries the tokens.
        guard Terminal.isAvailable else {
            throw KeyFileError(
                .missing,
                "no passphrase given: pass --passphrase-file FILE, set VAULT_PASSPHRASE_FILE, or run on a terminal to be prompted")
        }
        let first = try Terminal.readWithoutEcho(prompt: prompt)
        if confirm {
            let second = try Terminal.readWithoutEcho(prompt: "Repeat the passphrase: ")
            guard first == second else { throw KeyFileError(.refused, "the two passphrases differ; nothing was created") }
        }
        return try validated(first, origin: "the passphrase")
    }

    private func validated(_ passphrase: SecureBytes, origin: String) throws -> SecureBytes {
        guard passphrase.count >= Self.minimumLength else {
            throw KeyFileError(.refused, "\(origin) is shorter than \(Self.minimumLength) characters; choose a longer passphrase")
        }
        return passphrase
    }
}

public enum Terminal {
    /// The longest line the prompt accepts.
    static let maximumLength = 1024

    /// Whether the process has a controlling terminal to prompt on.
    public static var isAvailable: Bool {
        let descriptor = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        close(descriptor)
        return true
    }

    /// One line typed at a no-echo prompt (a value to look up: it stays off the screen).
    public static func readLine(prompt: String) throws -> String {
        try readWithoutEcho(prompt: prompt).withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
    }

    /// Prompts on the controlling terminal and reads one line with echo off,
    /// straight into wiped memory (a growing array would leave copies behind).
    static func readWithoutEcho(prompt: String) throws -> SecureBytes {
        let descriptor = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw KeyFileError(.io, "cannot open the terminal to ask for the passphrase") }
        defer { close(descriptor) }
        var original = termios()
        tcgetattr(descriptor, &original)
        var silent = original
        silent.c_lflag &= ~tcflag_t(ECHO)
        silent.c_lflag |= tcflag_t(ECHONL)
        tcsetattr(descriptor, TCSAFLUSH, &silent)
        defer { tcsetattr(descriptor, TCSAFLUSH, &original) }
        _ = prompt.withCString { write(descriptor, $0, strlen($0)) }
        var length = 0
        let line = try SecureBytes(count: maximumLength) { buffer in
            var byte: UInt8 = 0
            while read(descriptor, &byte, 1) == 1, byte != UInt8(ascii: "\n") {
                guard length < maximumLength else { throw KeyFileError(.refused, "the line typed is longer than \(maximumLength) bytes") }
                buffer[length] = byte
                length += 1
            }
            byte = 0
        }
        return line.withUnsafeBytes { line in
            SecureBytes(count: length) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: line[0..<length])) }
        }
    }
}
