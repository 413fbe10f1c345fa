/* Checks tern_sign against docs/http.md: the worked example's canonical request, request
 * signature and response signature, and how paths, queries and headers are normalised.
 * Exits 0 when every check holds. */
#include <stdio.h>
#include <string.h>

#include "crypto_openssl.h"
#include "tern_sign.h"

static int failures = 0;

static void check_str(const char *what, const char *got, const char *want) {
    if (strcmp(got, want) != 0) {
        printf("FAIL %s:\n  got  %s\n  want %s\n", what, got, want);
        failures++;
    }
}

static void check_int(const char *what, int got, int want) {
    if (got != want) {
        printf("FAIL %s: got %d, want %d\n", what, got, want);
        failures++;
    }
}

static const char *EMPTY_SHA256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static void canonical(const char *what, const char *method, const char *path, const char *query,
                      const tern_header *headers, size_t count, const char *body,
                      const char *want) {
    char out[1024];
    int len = tern_canonical_request(&TERN_CRYPTO_OPENSSL, method, path, query, headers, count,
                                     (const uint8_t *)body, strlen(body), out, sizeof out);
    if (len < 0) {
        printf("FAIL %s: error %d\n", what, len);
        failures++;
        return;
    }
    check_str(what, out, want);
}

int main(void) {
    const tern_crypto *crypto = &TERN_CRYPTO_OPENSSL;
    uint8_t secret[32];
    char scratch[512], signature[TERN_SIGNATURE_HEADER_BYTES], expected[1024];
    const char *body = "{\"t\":21.5}";
    const char *answer = "{\"qos\":1,\"matched\":2}";
    /* The worked example, headers in the order a device might send them. */
    const tern_header headers[] = {
        {"Tern-Key", "d:ESP32-7F3A"},
        {"Tern-Time", "1767225600"},
        {"Tern-Nonce", "c:1a4"},
        {"Content-Type", "application/json"},
        {"Mqtt-User-Property", "fw=1.7.24"},
    };
    check_int("secret parses",
              tern_parse_secret(
                  "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", secret),
              0);
    canonical("worked example's canonical request", "POST", "/v1/pub/sensors/ESP32-7F3A/temp",
              "retain=0&qos=1", headers, 5, body,
              "TERN1-HMAC-SHA256\nPOST\n/v1/pub/sensors/ESP32-7F3A/temp\nqos=1&retain=0\n"
              "mqtt-user-property:fw=1.7.24\ntern-key:d:ESP32-7F3A\ntern-nonce:c:1a4\n"
              "tern-time:1767225600\n"
              "64cb2922cbcd122329525c35461f0e6c3e56d112c21aed2200ed6d45a448f9af");
    check_int("worked example signs",
              tern_sign_request(crypto, secret, "POST", "/v1/pub/sensors/ESP32-7F3A/temp",
                                "retain=0&qos=1", headers, 5, (const uint8_t *)body,
                                strlen(body), scratch, sizeof scratch, signature),
              0);
    check_str("worked example's signature", signature,
              "v1=5b060164faa8f136926a4960f7ecb1aa7b5e2e4eb6c390467252d9aa659cfa1f");
    check_int("worked example's answer verifies",
              tern_verify_response(
                  crypto, secret, 200, signature, (const uint8_t *)answer, strlen(answer),
                  "1767225601",
                  "v1=dae46e5f1eb8cfbe1d98cfc8306a64c16d7070204a6eafe8f192ed28a4157642"),
              1);
    check_int("an answer with another status does not verify",
              tern_verify_response(
                  crypto, secret, 201, signature, (const uint8_t *)answer, strlen(answer),
                  "1767225601",
                  "v1=dae46e5f1eb8cfbe1d98cfc8306a64c16d7070204a6eafe8f192ed28a4157642"),
              0);
    check_int("an answer at another time does not verify",
              tern_verify_response(
                  crypto, secret, 200, signature, (const uint8_t *)answer, strlen(answer),
                  "1767225602",
                  "v1=dae46e5f1eb8cfbe1d98cfc8306a64c16d7070204a6eafe8f192ed28a4157642"),
              0);

    /* Escapes are normalised; a %2F stays inside its segment; '+' is a plus. */
    snprintf(expected, sizeof expected,
             "TERN1-HMAC-SHA256\nGET\n/v1/kv/a%%20b/c%%2Fd/~~\n"
             "a=&b=%%3D&b=1%%2B1&z=%%C3%%A9\n%s",
             EMPTY_SHA256);
    canonical("escapes", "get", "/v1/kv/a%20b/c%2fd/%7e~", "z=%c3%a9&b=1+1&&b=%3D&a", NULL, 0, "",
              expected);
    /* Signed headers: lower-case, trimmed, sorted by name, repeats in the order sent;
     * others and Tern-Signature left out; If-Match signed. */
    {
        const tern_header h[] = {
            {"Mqtt-User-Property", "  b=2 "},
            {"Tern-Signature", "v1=00"},
            {"If-Match", "\"e:5\""},
            {"Accept", "*/*"},
            {"MQTT-User-Property", "a=1"},
            {"Tern-Key", "d:x"},
        };
        snprintf(expected, sizeof expected,
                 "TERN1-HMAC-SHA256\nPUT\n/v1/kv/k\n\nif-match:\"e:5\"\n"
                 "mqtt-user-property:b=2\nmqtt-user-property:a=1\ntern-key:d:x\n%s",
                 EMPTY_SHA256);
        canonical("signed headers", "PUT", "/v1/kv/k", NULL, h, 6, "", expected);
    }
    {
        char out[64];
        const tern_header bad[] = {{"Tern-Key", "d:\x01"}};
        check_int("a bad escape is refused",
                  tern_canonical_request(crypto, "GET", "/v1/%zz", "", NULL, 0,
                                         (const uint8_t *)"", 0, scratch, sizeof scratch),
                  TERN_ERR_ESCAPE);
        check_int("a control character in a signed header is refused",
                  tern_canonical_request(crypto, "GET", "/v1/mbox", "", bad, 1,
                                         (const uint8_t *)"", 0, scratch, sizeof scratch),
                  TERN_ERR_HEADER);
        check_int("a small buffer is refused",
                  tern_canonical_request(crypto, "GET", "/v1/mbox", "", NULL, 0,
                                         (const uint8_t *)"", 0, out, sizeof out),
                  TERN_ERR_SPACE);
    }
    if (failures == 0) printf("all signing checks passed\n");
    return failures == 0 ? 0 : 1;
}
