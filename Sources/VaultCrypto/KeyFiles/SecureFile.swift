import Foundation

/// Reading and writing key files with the care SSH takes with its keys.
///
/// Every key file, public ones included, must belong to the running user or
/// root and must not be writable by group or others: whoever can replace
/// `recovery-public.json` could otherwise redirect every new data key to a key
/// of their own. Secret files must not be readable by others either.
public enum SecureFile {
    /// Files larger than this are not key files.
    static let maximumByteCount = 1 << 20

    /// Reads a file that holds secrets into wiped memory, refusing it when
    /// others may read it or anyone else may change it.
    /// `missing` says what to do when the file does not exist (default: it is a key file).
    public static func readSecret(_ path: String, missing: String? = nil) throws -> SecureBytes {
        try read(path, secret: true, missing: missing)
    }

    /// Reads a public key file, refusing it when anyone else may change it.
    static func readPublic(_ path: String) throws -> SecureBytes {
        try read(path, secret: false)
    }

    static let missingKeyFile = "create a key set with `vault keys init` or mount the key directory"

    private static func read(_ path: String, secret: Bool, missing: String? = nil) throws -> SecureBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { throw KeyFileError(.missing, "\(path) does not exist; \(missing ?? missingKeyFile)") }
            throw KeyFileError(.io, "\(path) cannot be read (\(String(cString: strerror(errno)))); check its owner and mode")
        }
        defer { close(descriptor) }
        // The checks look at the file that was opened, not at whatever the path names a moment later.
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw KeyFileError(.io, "\(path) cannot be examined (\(String(cString: strerror(errno))))")
        }
        try check(info, path: path, secret: secret)
        try checkDirectories(of: path, opened: info)
        guard (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) <= maximumByteCount else {
            throw KeyFileError(.malformed, "\(path) is not a key file (not a regular file of at most 1 MiB)")
        }
        let size = Int(info.st_size)
        return try SecureBytes(count: size) { buffer in
            var offset = 0
            while offset < size {
                let count = Foundation.read(descriptor, buffer.baseAddress! + offset, size - offset)
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { throw KeyFileError(.io, "\(path) changed or could not be read while it was being read; try again") }
                offset += count
            }
        }
    }

    /// Refuses a passphrase or other secret file by the rules for secret key files.
    public static func checkPrivateFile(_ path: String, missing: String? = nil) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { throw KeyFileError(.missing, "\(path) does not exist; \(missing ?? missingKeyFile)") }
            throw KeyFileError(.io, "\(path) cannot be examined (\(String(cString: strerror(errno))))")
        }
        try check(info, path: path, secret: true)
        try checkDirectories(of: path, opened: info)
    }

    /// The rules, as SSH and PostgreSQL apply them:
    /// - the owner is the running user or root (root-owned is how orchestrators
    ///   hand files to an unprivileged user);
    /// - nobody but the owner may write it;
    /// - a secret file is not readable by others, nor by its group unless root
    ///   owns it (PostgreSQL's rule for its TLS key: a Kubernetes Secret volume
    ///   with `fsGroup` is root-owned and mode 0440).
    static func check(_ info: stat, path: String, secret: Bool) throws {
        let mode = info.st_mode & 0o777
        let octal = "0" + String(mode, radix: 8)
        guard info.st_uid == geteuid() || info.st_uid == 0 else {
            throw KeyFileError(
                .insecurePermissions,
                "\(path) belongs to uid \(info.st_uid), not to this user (uid \(geteuid())) or root; whoever owns a key file can swap the key: run `chown \(geteuid()) \(path)` if the file is genuine"
            )
        }
        guard mode & 0o022 == 0 else {
            throw KeyFileError(
                .insecurePermissions,
                "\(path) is writable by group or others (mode \(octal)); anyone who can change it can swap the key: run `chmod \(secret ? "600" : "644") \(path)`"
            )
        }
        guard secret else { return }
        let forbidden: mode_t = info.st_uid == 0 ? 0o037 : 0o077
        guard mode & forbidden == 0 else {
            throw KeyFileError(
                .insecurePermissions,
                "\(path) is accessible to group or others (mode \(octal)); it holds secrets: run `chmod 600 \(path)`")
        }
    }

    /// A directory that others may write lets them replace the files in it,
    /// and so does any directory above it: every directory on the path as
    /// given and on the path it resolves to (through symlinks, as a
    /// Kubernetes Secret volume's `..data` link) must belong to this user or
    /// root and be writable by nobody else, unless it has the sticky bit
    /// (as /tmp and Kubernetes' tmpfs volumes, 1777), which stops others from
    /// replacing files they do not own. `opened` is the file that was opened:
    /// the resolved path must still name it.
    static func checkDirectories(of path: String, opened: stat) throws {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        guard let resolvedPointer = realpath(absolute, nil) else {
            throw KeyFileError(.io, "\(path) cannot be resolved (\(String(cString: strerror(errno)))); check the path and its links")
        }
        let resolved = String(cString: resolvedPointer)
        free(resolvedPointer)
        var target = stat()
        guard stat(resolved, &target) == 0, target.st_dev == opened.st_dev, target.st_ino == opened.st_ino else {
            throw KeyFileError(.io, "\(path) changed while it was being checked; try again, and find out what is replacing it")
        }
        var checked = Set<String>()
        for file in [absolute, resolved] {
            var directory = (file as NSString).deletingLastPathComponent
            while checked.insert(directory).inserted {
                try checkDirectory(directory, holding: path, resolvedTo: file == resolved && resolved != absolute ? resolved : nil)
                guard directory != "/" else { break }
                directory = (directory as NSString).deletingLastPathComponent
            }
        }
    }

    private static func checkDirectory(_ directory: String, holding path: String, resolvedTo resolved: String?) throws {
        var info = stat()
        guard stat(directory, &info) == 0 else {
            throw KeyFileError(.io, "the directory \(directory) above \(path) cannot be examined (\(String(cString: strerror(errno))))")
        }
        let mode = info.st_mode & 0o7777
        let via = resolved.map { " (\(path) leads there: it resolves to \($0))" } ?? ""
        guard info.st_uid == geteuid() || info.st_uid == 0 else {
            throw KeyFileError(
                .insecurePermissions,
                "the directory \(directory)\(via) belongs to uid \(info.st_uid), not to this user or root; its owner can swap the key files"
            )
        }
        guard mode & 0o022 == 0 || mode & S_ISVTX != 0 else {
            throw KeyFileError(
                .insecurePermissions,
                "the directory \(directory)\(via) is writable by group or others (mode 0\(String(mode, radix: 8))); they could swap the key files: run `chmod go-w \(directory)` or keep the keys elsewhere"
            )
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
    static func write(_ bytes: some ReadableBytes, to path: String, visibility: Visibility, replace: Bool) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, visibility.mode)
        guard descriptor >= 0 else {
            throw KeyFileError(
                .io,
                "cannot create a file in \(directory) (\(String(cString: strerror(errno)))); check the directory exists and is writable")
        }
        defer { unlink(temporary) }
        // The umask may have narrowed the mode; set it exactly.
        fchmod(descriptor, visibility.mode)
        let (written, count) = bytes.withUnsafeBytes { (Foundation.write(descriptor, $0.baseAddress, $0.count), $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == count, synced else {
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
