/* The host's hash functions for tern_sign (OpenSSL's libcrypto). */
#ifndef TERN_CRYPTO_OPENSSL_H
#define TERN_CRYPTO_OPENSSL_H

#include "tern_sign.h"

extern const tern_crypto TERN_CRYPTO_OPENSSL;

#endif
