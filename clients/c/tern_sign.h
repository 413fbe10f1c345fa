/*
 * Tern HTTP bridge request signing for microcontrollers (docs/http.md, "Signing").
 *
 * No allocation, no libc beyond string.h: the caller gives every buffer. SHA-256 and
 * HMAC-SHA256 come from the platform through `tern_crypto` (mbedTLS on an ESP32, OpenSSL's
 * libcrypto on a host: crypto_openssl.c).
 */
#ifndef TERN_SIGN_H
#define TERN_SIGN_H

#include <stddef.h>
#include <stdint.h>

/* The platform's hash functions. */
typedef struct tern_crypto {
    /* SHA-256 of `len` bytes at `data`. */
    void (*sha256)(const uint8_t *data, size_t len, uint8_t out[32]);
    /* HMAC-SHA256 under a 32-byte key. */
    void (*hmac_sha256)(const uint8_t key[32], const uint8_t *data, size_t len,
                        uint8_t out[32]);
} tern_crypto;

/* A request header as sent. */
typedef struct tern_header {
    const char *name;
    const char *value;
} tern_header;

/* Errors (negative return values). */
#define TERN_ERR_SPACE (-1)      /* a buffer is too small */
#define TERN_ERR_ESCAPE (-2)     /* a '%' not followed by two hex digits */
#define TERN_ERR_HEADER (-3)     /* a signed header's value is not printable ASCII */
#define TERN_ERR_TOO_MANY (-4)   /* more query parameters or signed headers than handled */

/* Query parameters and signed headers one request may have. */
#define TERN_QUERY_MAX 16
#define TERN_SIGNED_HEADERS_MAX 16
/* Bytes of a canonical query at most. */
#define TERN_QUERY_BYTES_MAX 512

/* "v1=" + 64 hex digits + NUL. */
#define TERN_SIGNATURE_HEADER_BYTES 68

/*
 * The canonical request: method, path (each segment decoded once and encoded again), query
 * (pairs decoded and encoded again, sorted by name then value), every tern-* and mqtt-*
 * header but Tern-Signature and If-Match / If-None-Match (lower-case name, trimmed value,
 * sorted by name, repeated names in the order sent), the body's SHA-256. `query` may be NULL.
 * Writes a NUL-terminated string; returns its length or a TERN_ERR_*.
 */
int tern_canonical_request(const tern_crypto *crypto, const char *method, const char *path,
                           const char *query, const tern_header *headers, size_t header_count,
                           const uint8_t *body, size_t body_len, char *out, size_t out_cap);

/*
 * The Tern-Signature value ("v1=<64 hex>") of a request under `secret`; `scratch` holds the
 * canonical request on the way (a few hundred bytes). Returns 0 or a TERN_ERR_*.
 */
int tern_sign_request(const tern_crypto *crypto, const uint8_t secret[32], const char *method,
                      const char *path, const char *query, const tern_header *headers,
                      size_t header_count, const uint8_t *body, size_t body_len, char *scratch,
                      size_t scratch_cap, char signature_header[TERN_SIGNATURE_HEADER_BYTES]);

/*
 * Whether `response_signature` (the answer's Tern-Response-Signature) is the signature, under
 * `secret`, of an answer with this status, body and Tern-Time to the request signed
 * `request_signature` (its Tern-Signature value, "v1=..."). Compared in constant time.
 * Returns 1 if it is, 0 if not.
 */
int tern_verify_response(const tern_crypto *crypto, const uint8_t secret[32], int status,
                         const char *request_signature, const uint8_t *body, size_t body_len,
                         const char *time, const char *response_signature);

/* 64 hex digits into 32 bytes; returns 0, or TERN_ERR_ESCAPE for anything else. */
int tern_parse_secret(const char *hex, uint8_t secret[32]);

#endif
