#ifndef VAULT_CLIBCRYPTO_SHIM_H
#define VAULT_CLIBCRYPTO_SHIM_H

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

// OpenSSL's parameter and algorithm names are string macros. Swift imports them
// as Swift `String`s, so a pointer taken from one dangles as soon as the call
// that made it returns. These accessors hand Swift the literals themselves,
// which live for the whole process.
static inline const char *vc_name_hmac(void) { return OSSL_MAC_NAME_HMAC; }
static inline const char *vc_name_hkdf(void) { return OSSL_KDF_NAME_HKDF; }
static inline const char *vc_name_scrypt(void) { return OSSL_KDF_NAME_SCRYPT; }
static inline const char *vc_name_sha256(void) { return OSSL_DIGEST_NAME_SHA2_256; }
static inline const char *vc_name_aes_128_gcm(void) { return "AES-128-GCM"; }
static inline const char *vc_name_aes_256_gcm(void) { return "AES-256-GCM"; }

static inline const char *vc_param_mac_digest(void) { return OSSL_MAC_PARAM_DIGEST; }
static inline const char *vc_param_kdf_digest(void) { return OSSL_KDF_PARAM_DIGEST; }
static inline const char *vc_param_kdf_key(void) { return OSSL_KDF_PARAM_KEY; }
static inline const char *vc_param_kdf_salt(void) { return OSSL_KDF_PARAM_SALT; }
static inline const char *vc_param_kdf_info(void) { return OSSL_KDF_PARAM_INFO; }
static inline const char *vc_param_kdf_mode(void) { return OSSL_KDF_PARAM_MODE; }
static inline const char *vc_param_kdf_password(void) { return OSSL_KDF_PARAM_PASSWORD; }
static inline const char *vc_param_scrypt_n(void) { return OSSL_KDF_PARAM_SCRYPT_N; }
static inline const char *vc_param_scrypt_r(void) { return OSSL_KDF_PARAM_SCRYPT_R; }
static inline const char *vc_param_scrypt_p(void) { return OSSL_KDF_PARAM_SCRYPT_P; }
static inline const char *vc_param_scrypt_maxmem(void) { return OSSL_KDF_PARAM_SCRYPT_MAXMEM; }

// OPENSSL_free is a function-like macro.
static inline void vc_openssl_free(void *pointer) { OPENSSL_free(pointer); }

#endif
