/* The host's SHA-256 and HMAC-SHA256, from OpenSSL's libcrypto (on an ESP32, the same two
 * functions over mbedTLS). */
#include "crypto_openssl.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

static void sha256(const uint8_t *data, size_t len, uint8_t out[32]) {
    SHA256(data, len, out);
}

static void hmac_sha256(const uint8_t key[32], const uint8_t *data, size_t len,
                        uint8_t out[32]) {
    unsigned int out_len = 32;
    HMAC(EVP_sha256(), key, 32, data, len, out, &out_len);
}

const tern_crypto TERN_CRYPTO_OPENSSL = {sha256, hmac_sha256};
