public import AWS
public import VaultCrypto

/// A recovery private key sealed by an AWS KMS key instead of a passphrase:
/// KMS `Encrypt` of its 32 bytes under a symmetric key, with an encryption
/// context naming the version and public key (so the blob opens only for its
/// own entry, and CloudTrail records which key was opened). Whoever may call
/// `kms:Decrypt` on that key with that context can open it; nobody else can,
/// with or without the file.
public enum KMSRecoverySealing {
    /// Checks the key is a usable symmetric encryption key, then seals.
    public static func seal(
        _ privateKey: X25519.PrivateKey, version: Int, createdAt: String, keyID: String, kms: KMSClient
    ) async throws -> RecoveryPrivateKeys.Sealed {
        let description = try await kms.describeKey(keyID)
        // A SYMMETRIC_DEFAULT key is always for ENCRYPT_DECRYPT.
        guard description.keySpec == "SYMMETRIC_DEFAULT" else {
            throw KeyFileError(
                .refused,
                "KMS key \(keyID) is a \(description.keySpec) key; sealing a recovery key needs a symmetric encryption key (SYMMETRIC_DEFAULT)"
            )
        }
        let context = RecoveryPrivateKeys.kmsEncryptionContext(version: version, publicKey: privateKey.publicKey.rawRepresentation)
        let blob = try await kms.encrypt(keyID: keyID, plaintext: privateKey.rawRepresentation, context: context)
        return RecoveryPrivateKeys.kmsSealed(
            publicKey: privateKey.publicKey, version: version, createdAt: createdAt, keyID: keyID, blob: blob)
    }

    /// Opens a KMS-sealed entry (KMS checks the context) and checks the key against its public key.
    public static func unseal(_ entry: RecoveryPrivateKeys.Sealed, kms: KMSClient, path: String) async throws -> X25519.PrivateKey {
        guard let keyID = entry.kmsKeyID else {
            throw KeyFileError(.refused, "\(path): recovery key v\(entry.version) is sealed by a passphrase, not by AWS KMS")
        }
        let raw = try await kms.decrypt(keyID: keyID, ciphertext: entry.sealedPrivateKey, context: entry.kmsEncryptionContext)
        return try RecoveryPrivateKeys.privateKey(raw, matching: entry, path: path)
    }
}

/// Checks that a KMS key can make tokens: an enabled `HMAC_256` key for
/// `GENERATE_VERIFY_MAC`.
public enum KMSTokenizationKeyCheck {
    public static func requireUsable(_ keyID: String, kms: KMSClient) async throws -> KMSKeyDescription {
        let description = try await kms.describeKey(keyID)
        // An HMAC key is always for GENERATE_VERIFY_MAC.
        guard description.keySpec == "HMAC_256" else {
            throw KeyFileError(
                .refused,
                "KMS key \(keyID) is a \(description.keySpec) key; a tokenization key must be an HMAC_256 key"
            )
        }
        guard description.keyState == "Enabled" else {
            throw KeyFileError(.refused, "KMS key \(keyID) is \(description.keyState); enable it first")
        }
        return description
    }
}
