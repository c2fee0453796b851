import Foundation

/// Reading and writing key files with the care SSH takes with its keys.
public enum SecureFile {
    /// Reads a file that holds secrets, refusing it when group or others may
    /// read or write it.
    static func readSecret(_ path: String) throws -> [UInt8] {
        try checkPrivateFile(path)
        return try read(path)
    }

    static func read(_ path: String) throws -> [UInt8] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw KeyFileError(.missing, "\(path) does not exist; create a key set with `vault keys init` or mount the key directory")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeyFileError(.io, "\(path) cannot be read (\(String(cString: strerror(errno)))); check its owner and mode")
        }
        return [UInt8](data)
    }

    /// Refuses a secret file that others may access, or that its group may
    /// access, as SSH does. One exception, PostgreSQL's rule for its TLS key:
    /// a file owned by root may be readable by its group (0640 or less). That
    /// is how orchestrators hand secrets to an unprivileged user: a Kubernetes
    /// Secret volume with `fsGroup` is root-owned and mode 0440.
    public static func checkPrivateFile(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT {
                throw KeyFileError(.missing, "\(path) does not exist; create a key set with `vault keys init` or mount the key directory")
            }
            throw KeyFileError(.io, "\(path) cannot be examined (\(String(cString: strerror(errno))))")
        }
        let mode = info.st_mode & 0o777
        let forbidden: mode_t = info.st_uid == 0 ? 0o037 : 0o077
        guard mode & forbidden == 0 else {
            let octal = String(mode, radix: 8)
            throw KeyFileError(
                .insecurePermissions,
                "\(path) is accessible to group or others (mode 0\(octal)); it holds secrets: run `chmod 600 \(path)`")
        }
    }

    enum Visibility {
        /// 0600: secret key material.
        case secret
        /// 0644: public keys.
        case `public`

        var mode: mode_t { self == .secret ? 0o600 : 0o644 }
    }

    /// Writes `bytes` atomically: a temporary file in the same directory, fsync,
    /// then rename (or, with `replace: false`, a hard link that fails if the
    /// target exists, so two concurrent inits cannot both win).
    static func write(_ bytes: [UInt8], to path: String, visibility: Visibility, replace: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, visibility.mode)
        guard descriptor >= 0 else {
            throw KeyFileError(.io, "cannot create a file in \(directory) (\(String(cString: strerror(errno)))); check the directory exists and is writable")
        }
        defer { unlink(temporary) }
        // The umask may have narrowed the mode; set it exactly.
        fchmod(descriptor, visibility.mode)
        let written = bytes.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced else {
            throw KeyFileError(.io, "writing \(path) failed (\(String(cString: strerror(errno)))); no key file was changed")
        }
        if replace {
            guard rename(temporary, path) == 0 else {
                throw KeyFileError(.io, "replacing \(path) failed (\(String(cString: strerror(errno))))")
            }
        } else {
            guard link(temporary, path) == 0 else {
                if errno == EEXIST {
                    throw KeyFileError(.alreadyExists, "\(path) already exists; refusing to overwrite keys")
                }
                throw KeyFileError(.io, "creating \(path) failed (\(String(cString: strerror(errno))))")
            }
        }
        syncDirectory(directory)
    }

    /// Makes a rename durable: the directory entry itself must reach the disk.
    private static func syncDirectory(_ directory: String) {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }

    static func createDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KeyFileError(.io, "cannot create key directory \(path): \(error.localizedDescription)")
        }
    }
}
