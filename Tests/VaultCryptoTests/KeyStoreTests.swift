import Foundation
import Testing
import VaultCrypto

@Suite("Key files")
struct KeyStoreTests {
    let passphrase = SecureBytes(Array("correct horse battery staple".utf8))
    let fastKDF = Scrypt.Parameters(n: 1 << 14, r: 8, p: 1)

    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "keystore-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path + "/keys"
    }

    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    @Test("init writes secret files 0600, the public file 0644, and refuses a second init")
    func initAndRefuse() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        #expect(try mode(store.tokenizationPath) == 0o600)
        #expect(try mode(store.recoveryPrivatePath) == 0o600)
        #expect(try mode(store.recoveryPublicPath) == 0o644)
        #expect(try mode(store.directory) == 0o700)
        #expect(throws: KeyFileError(.alreadyExists, "")) {
            try store.initialize(passphrase: passphrase, parameters: fastKDF)
        }
        let keyring = try store.tokenizationKeyring()
        #expect(keyring.active.version == 1)
        #expect(try store.recoveryPublicKeys().active.version == 1)
    }

    @Test("the private-key file holds no raw key bytes, and the passphrase opens it")
    func privateKeyIsSealed() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        let privateKey = try store.recoveryPrivateKeys().unlock(version: 1, passphrase: passphrase, path: store.recoveryPrivatePath)
        #expect(privateKey.publicKey == (try store.recoveryPublicKeys().active.publicKey))
        let file = try Data(contentsOf: URL(fileURLWithPath: store.recoveryPrivatePath))
        let raw = privateKey.rawRepresentation.withUnsafeBytes(Array.init)
        let text = String(decoding: file, as: UTF8.self)
        #expect(file.range(of: Data(raw)) == nil)
        #expect(!text.contains(Base64.encode(raw)))
        #expect(!text.contains(Hex.encode(raw)))
    }

    @Test("a wrong passphrase is a clear error, not a crash")
    func wrongPassphrase() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        let wrong = SecureBytes(Array("correct horse battery stapler".utf8))
        #expect {
            try store.recoveryPrivateKeys().unlock(version: 1, passphrase: wrong, path: store.recoveryPrivatePath)
        } throws: { error in
            guard let error = error as? KeyFileError else { return false }
            return error.code == .wrongPassphrase && error.message.contains(store.recoveryPrivatePath)
        }
    }

    @Test("a secret file readable by others is refused with its mode and the fix")
    func insecurePermissions() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        chmod(store.tokenizationPath, 0o644)
        #expect {
            try store.tokenizationKeyring()
        } throws: { error in
            guard let error = error as? KeyFileError else { return false }
            return error.code == .insecurePermissions && error.message.contains("0644")
                && error.message.contains("chmod 600 \(store.tokenizationPath)")
        }
        chmod(store.recoveryPrivatePath, 0o640)
        if geteuid() == 0 {
            // Group-readable is refused unless root owns the file.
            chown(store.recoveryPrivatePath, 65_534, 65_534)
        }
        #expect(throws: KeyFileError(.insecurePermissions, "")) { try store.recoveryPrivateKeys() }
    }

    @Test("a root-owned secret readable by its group only (a Kubernetes Secret with fsGroup) is accepted")
    func rootOwnedGroupReadable() throws {
        guard geteuid() == 0 else { return }  // only root can make a file root-owned
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        chown(store.tokenizationPath, 0, 10_001)
        chmod(store.tokenizationPath, 0o440)
        #expect(try store.tokenizationKeyring().active.version == 1)
        chmod(store.tokenizationPath, 0o460)
        #expect(throws: KeyFileError(.insecurePermissions, "")) { try store.tokenizationKeyring() }
        chmod(store.tokenizationPath, 0o444)
        #expect(throws: KeyFileError(.insecurePermissions, "")) { try store.tokenizationKeyring() }
    }

    @Test("missing and damaged key files name the file")
    func missingAndDamaged() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        #expect(throws: KeyFileError(.missing, "")) { try store.tokenizationKeyring() }
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        try Data("{\"format\": \"something else\", \"format_version\": 1}".utf8).write(to: URL(fileURLWithPath: store.recoveryPublicPath))
        #expect {
            try store.recoveryPublicKeys()
        } throws: { error in
            (error as? KeyFileError)?.code == .malformed && "\(error)".contains(store.recoveryPublicPath)
        }
    }

    @Test("a sealed private key moved to another version does not open")
    func sealedKeyIsBoundToItsEntry() throws {
        let store = KeyStore(directory: try temporaryDirectory())
        try store.initialize(passphrase: passphrase, parameters: fastKDF)
        var json = try String(contentsOfFile: store.recoveryPrivatePath, encoding: .utf8)
        json = json.replacingOccurrences(of: "\"version\": 1", with: "\"version\": 2")
        try json.write(toFile: store.recoveryPrivatePath, atomically: true, encoding: .utf8)
        chmod(store.recoveryPrivatePath, 0o600)
        #expect(throws: KeyFileError(.wrongPassphrase, "")) {
            try store.recoveryPrivateKeys().unlock(version: 2, passphrase: passphrase, path: store.recoveryPrivatePath)
        }
    }

    @Test("rotation adds an active version and keeps the old one for existing data")
    func rotation() throws {
        let keyring = try TokenizationKeyring.generate(now: Date())
        let rotated = try keyring.rotated(now: Date())
        #expect(rotated.active.version == 2)
        #expect(rotated.key(version: 1)?.state == .decryptOnly)
        #expect(try rotated.key(version: 1)?.localSecret() == keyring.active.localSecret())
        #expect(throws: KeyFileError(.refused, "")) { try rotated.removing(version: 2) }
        #expect(try rotated.removing(version: 1).keys.map(\.version) == [2])
    }
}
