/* Tern HTTP bridge request signing: the canonical request of docs/http.md, built in the
 * caller's buffers. */
#include "tern_sign.h"

#include <string.h>

/* Output into a bounded buffer; `overflow` set once anything did not fit. */
typedef struct out_buf {
    char *buf;
    size_t cap;
    size_t len;
    int overflow;
} out_buf;

static void put_char(out_buf *out, char c) {
    if (out->len + 1 < out->cap) {
        out->buf[out->len++] = c;
    } else {
        out->overflow = 1;
    }
}

static void put_str(out_buf *out, const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        put_char(out, s[i]);
    }
}

static const char HEX_UPPER[] = "0123456789ABCDEF";
static const char HEX_LOWER[] = "0123456789abcdef";

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int unreserved(unsigned char b) {
    return (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') ||
           b == '-' || b == '.' || b == '_' || b == '~';
}

/* Decodes `n` bytes of `s` once and encodes them again (unreserved kept, the rest %XX). */
static int recode(out_buf *out, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = (unsigned char)s[i];
        if (b == '%') {
            int hi = i + 1 < n ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return TERN_ERR_ESCAPE;
            b = (unsigned char)(hi << 4 | lo);
            i += 3;
        } else {
            i += 1;
        }
        if (unreserved(b)) {
            put_char(out, (char)b);
        } else {
            put_char(out, '%');
            put_char(out, HEX_UPPER[b >> 4]);
            put_char(out, HEX_UPPER[b & 15]);
        }
    }
    return 0;
}

static void put_hex(out_buf *out, const uint8_t *bytes, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        put_char(out, HEX_LOWER[bytes[i] >> 4]);
        put_char(out, HEX_LOWER[bytes[i] & 15]);
    }
}

/* One query pair, recoded, in the scratch buffer: name at `name`, value at `value`. */
typedef struct pair {
    size_t name, name_len, value, value_len;
} pair;

static int compare_spans(const char *base, size_t a, size_t a_len, size_t b, size_t b_len) {
    size_t n = a_len < b_len ? a_len : b_len;
    int c = memcmp(base + a, base + b, n);
    if (c != 0) return c;
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

static int compare_pairs(const char *base, const pair *a, const pair *b) {
    int c = compare_spans(base, a->name, a->name_len, b->name, b->name_len);
    return c != 0 ? c : compare_spans(base, a->value, a->value_len, b->value, b->value_len);
}

static int canonical_query(out_buf *out, const char *query) {
    char scratch[TERN_QUERY_BYTES_MAX];
    out_buf s = {scratch, sizeof scratch, 0, 0};
    pair pairs[TERN_QUERY_MAX];
    size_t count = 0, i, j;
    const char *p = query ? query : "";
    while (*p) {
        const char *end = strchr(p, '&');
        const char *eq;
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            pair pr;
            int err;
            if (count == TERN_QUERY_MAX) return TERN_ERR_TOO_MANY;
            eq = memchr(p, '=', len);
            pr.name = s.len;
            err = recode(&s, p, eq ? (size_t)(eq - p) : len);
            if (err) return err;
            pr.name_len = s.len - pr.name;
            pr.value = s.len;
            if (eq) {
                err = recode(&s, eq + 1, len - (size_t)(eq + 1 - p));
                if (err) return err;
            }
            pr.value_len = s.len - pr.value;
            if (s.overflow) return TERN_ERR_SPACE;
            /* Insertion sort: a handful of parameters. */
            for (j = count; j > 0 && compare_pairs(scratch, &pr, &pairs[j - 1]) < 0; j--) {
                pairs[j] = pairs[j - 1];
            }
            pairs[j] = pr;
            count++;
        }
        p += len;
        if (*p == '&') p++;
    }
    for (i = 0; i < count; i++) {
        if (i > 0) put_char(out, '&');
        put_str(out, scratch + pairs[i].name, pairs[i].name_len);
        put_char(out, '=');
        put_str(out, scratch + pairs[i].value, pairs[i].value_len);
    }
    return 0;
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

/* Compares two header names case-insensitively. */
static int compare_names(const char *a, const char *b) {
    while (*a && lower(*a) == lower(*b)) {
        a++;
        b++;
    }
    return (unsigned char)lower(*a) - (unsigned char)lower(*b);
}

static int starts_with(const char *name, const char *prefix) {
    while (*prefix) {
        if (lower(*name) != *prefix) return 0;
        name++;
        prefix++;
    }
    return 1;
}

static int is_signed(const char *name) {
    return ((starts_with(name, "tern-") || starts_with(name, "mqtt-")) &&
            compare_names(name, "tern-signature") != 0) ||
           compare_names(name, "if-match") == 0 || compare_names(name, "if-none-match") == 0;
}

static int signed_headers(out_buf *out, const tern_header *headers, size_t header_count) {
    const tern_header *chosen[TERN_SIGNED_HEADERS_MAX];
    size_t count = 0, i, j;
    for (i = 0; i < header_count; i++) {
        const char *v;
        if (!is_signed(headers[i].name)) continue;
        for (v = headers[i].value; *v; v++) {
            unsigned char b = (unsigned char)*v;
            if (!(b == ' ' || b == '\t' || (b > 0x20 && b < 0x7f))) return TERN_ERR_HEADER;
        }
        if (count == TERN_SIGNED_HEADERS_MAX) return TERN_ERR_TOO_MANY;
        /* Stable insertion sort by name: repeated names keep the order sent. */
        for (j = count; j > 0 && compare_names(headers[i].name, chosen[j - 1]->name) < 0; j--) {
            chosen[j] = chosen[j - 1];
        }
        chosen[j] = &headers[i];
        count++;
    }
    for (i = 0; i < count; i++) {
        const char *n = chosen[i]->name, *v = chosen[i]->value, *end;
        for (; *n; n++) put_char(out, lower(*n));
        put_char(out, ':');
        while (*v == ' ' || *v == '\t') v++;
        end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
        put_str(out, v, (size_t)(end - v));
        put_char(out, '\n');
    }
    return 0;
}

int tern_canonical_request(const tern_crypto *crypto, const char *method, const char *path,
                           const char *query, const tern_header *headers, size_t header_count,
                           const uint8_t *body, size_t body_len, char *out_chars,
                           size_t out_cap) {
    out_buf out = {out_chars, out_cap, 0, 0};
    uint8_t digest[32];
    const char *m;
    int err;
    if (out_cap == 0) return TERN_ERR_SPACE;
    put_str(&out, "TERN1-HMAC-SHA256\n", 18);
    for (m = method; *m; m++) put_char(&out, *m >= 'a' && *m <= 'z' ? (char)(*m - 32) : *m);
    put_char(&out, '\n');
    /* Segments split on a literal '/': recoding byte by byte keeps them apart. */
    while (*path) {
        const char *slash = strchr(path, '/');
        size_t len = slash ? (size_t)(slash - path) : strlen(path);
        err = recode(&out, path, len);
        if (err) return err;
        path += len;
        if (*path == '/') {
            put_char(&out, '/');
            path++;
        }
    }
    put_char(&out, '\n');
    err = canonical_query(&out, query);
    if (err) return err;
    put_char(&out, '\n');
    err = signed_headers(&out, headers, header_count);
    if (err) return err;
    crypto->sha256(body, body_len, digest);
    put_hex(&out, digest, sizeof digest);
    if (out.overflow) return TERN_ERR_SPACE;
    out.buf[out.len] = '\0';
    return (int)out.len;
}

static void signature_value(const uint8_t mac[32], char header[TERN_SIGNATURE_HEADER_BYTES]) {
    out_buf out = {header, TERN_SIGNATURE_HEADER_BYTES, 0, 0};
    put_str(&out, "v1=", 3);
    put_hex(&out, mac, 32);
    header[out.len] = '\0';
}

int tern_sign_request(const tern_crypto *crypto, const uint8_t secret[32], const char *method,
                      const char *path, const char *query, const tern_header *headers,
                      size_t header_count, const uint8_t *body, size_t body_len, char *scratch,
                      size_t scratch_cap, char signature_header[TERN_SIGNATURE_HEADER_BYTES]) {
    uint8_t mac[32];
    int len = tern_canonical_request(crypto, method, path, query, headers, header_count, body,
                                     body_len, scratch, scratch_cap);
    if (len < 0) return len;
    crypto->hmac_sha256(secret, (const uint8_t *)scratch, (size_t)len, mac);
    signature_value(mac, signature_header);
    return 0;
}

int tern_verify_response(const tern_crypto *crypto, const uint8_t secret[32], int status,
                         const char *request_signature, const uint8_t *body, size_t body_len,
                         const char *time, const char *response_signature) {
    char text[256];
    out_buf out = {text, sizeof text, 0, 0};
    char expected[TERN_SIGNATURE_HEADER_BYTES];
    uint8_t digest[32], mac[32];
    unsigned char diff = 0;
    size_t i;
    char code[4];
    if (status < 100 || status > 999 || strncmp(request_signature, "v1=", 3) != 0) return 0;
    code[0] = (char)('0' + status / 100);
    code[1] = (char)('0' + status / 10 % 10);
    code[2] = (char)('0' + status % 10);
    code[3] = '\0';
    put_str(&out, "TERN1-RESP\n", 11);
    put_str(&out, code, 3);
    put_char(&out, '\n');
    put_str(&out, request_signature + 3, strlen(request_signature + 3));
    put_char(&out, '\n');
    crypto->sha256(body, body_len, digest);
    put_hex(&out, digest, sizeof digest);
    put_char(&out, '\n');
    put_str(&out, time, strlen(time));
    if (out.overflow) return 0;
    crypto->hmac_sha256(secret, (const uint8_t *)text, out.len, mac);
    signature_value(mac, expected);
    if (strlen(response_signature) != TERN_SIGNATURE_HEADER_BYTES - 1) return 0;
    for (i = 0; i < TERN_SIGNATURE_HEADER_BYTES - 1; i++) {
        diff |= (unsigned char)(expected[i] ^ response_signature[i]);
    }
    return diff == 0;
}

int tern_parse_secret(const char *hex, uint8_t secret[32]) {
    size_t i;
    if (strlen(hex) != 64) return TERN_ERR_ESCAPE;
    for (i = 0; i < 32; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return TERN_ERR_ESCAPE;
        secret[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
