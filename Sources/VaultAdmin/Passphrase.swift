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
            // The passphrase file is a secret like the keys it protects.
            try SecureFile.checkPrivateFile(file)
            guard var bytes = FileManager.default.contents(atPath: file).map([UInt8].init) else {
                throw KeyFileError(.io, "passphrase file \(file) cannot be read")
            }
            defer { wipe(&bytes) }
            // One trailing newline is what `echo … > file` leaves; it is not part of the passphrase.
            var length = bytes.count
            if length > 0, bytes[length - 1] == UInt8(ascii: "\n") { length -= 1 }
            if length > 0, bytes[length - 1] == UInt8(ascii: "\r") { length -= 1 }
            return try validated(SecureBytes(bytes[0..<length]), origin: "passphrase file \(file)")
        }
        guard isatty(STDIN_FILENO) == 1 else {
            throw KeyFileError(.missing,
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

func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { buffer in
        for index in buffer.indices { buffer[index] = 0 }
    }
}

enum Terminal {
    /// Prompts on the controlling terminal and reads one line with echo off.
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
        var line: [UInt8] = []
        defer { wipe(&line) }
        var byte: UInt8 = 0
        while read(descriptor, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return SecureBytes(line)
    }
}
