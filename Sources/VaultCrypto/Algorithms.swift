import CLibCrypto

/// OpenSSL algorithm implementations, fetched once per process.
///
/// Fetching walks the provider tables under a lock; doing it per message costs
/// several times the operation itself. Fetched objects are reference counted and
/// safe to share between threads (OpenSSL 3 "Algorithm fetching"), and these are
/// never freed: they live as long as the process.
final class Algorithms: @unchecked Sendable {
    static let shared: Algorithms = {
        do { return try Algorithms() } catch { fatalError("OpenSSL 3 default provider is unusable: \(error)") }
    }()

    let hmac: OpaquePointer
    let hkdf: OpaquePointer
    let scrypt: OpaquePointer
    let sha256: OpaquePointer
    let aes128GCM: OpaquePointer
    let aes256GCM: OpaquePointer

    private init() throws {
        guard let hmac = EVP_MAC_fetch(nil, vc_name_hmac(), nil) else { throw CryptoError.openSSL("EVP_MAC_fetch(HMAC)") }
        guard let hkdf = EVP_KDF_fetch(nil, vc_name_hkdf(), nil) else { throw CryptoError.openSSL("EVP_KDF_fetch(HKDF)") }
        guard let scrypt = EVP_KDF_fetch(nil, vc_name_scrypt(), nil) else { throw CryptoError.openSSL("EVP_KDF_fetch(SCRYPT)") }
        guard let sha256 = EVP_MD_fetch(nil, vc_name_sha256(), nil) else { throw CryptoError.openSSL("EVP_MD_fetch(SHA256)") }
        guard let aes128GCM = EVP_CIPHER_fetch(nil, vc_name_aes_128_gcm(), nil) else {
            throw CryptoError.openSSL("EVP_CIPHER_fetch(AES-128-GCM)")
        }
        guard let aes256GCM = EVP_CIPHER_fetch(nil, vc_name_aes_256_gcm(), nil) else {
            throw CryptoError.openSSL("EVP_CIPHER_fetch(AES-256-GCM)")
        }
        (self.hmac, self.hkdf, self.scrypt, self.sha256) = (hmac, hkdf, scrypt, sha256)
        (self.aes128GCM, self.aes256GCM) = (aes128GCM, aes256GCM)
    }
}
