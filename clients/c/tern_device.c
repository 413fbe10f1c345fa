/*
 * A device of the Tern HTTP bridge in C over a plain socket, as a microcontroller would be:
 * it publishes, subscribes its mailbox and polls it over one keep-alive connection, signing
 * every request with a counter nonce (kept in a file, as an ESP32 keeps it in RTC memory) and
 * checking every answer's signature.
 *
 *   tern_device HOST PORT KEY_ID SECRET_HEX COUNTER_FILE COMMAND...
 *
 * Commands, run in order: `pub TOPIC PAYLOAD` (QoS 1), `sub FILTER` (`#` written `%23`),
 * `poll WAIT` (a long poll of WAIT seconds, acknowledging what the previous poll handed out).
 * Each answer is printed as `STATUS BODY` on one line. Exit status: 0 when every answer was
 * 200 and signed by the key's secret, 1 otherwise, 2 on a usage or network error.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto_openssl.h"
#include "tern_sign.h"

#define BUFFER_BYTES 8192

typedef struct device {
    int fd;
    const char *key_id;
    uint8_t secret[32];
    const char *counter_file;
    unsigned long long counter;
    unsigned long long next_ack; /* the seq to acknowledge, when has_ack */
    int has_ack;
    char buf[BUFFER_BYTES];
    size_t buffered;
} device;

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints, *found, *a;
    int fd = -1;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &found) != 0) return -1;
    for (a = found; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    return fd;
}

/* The next counter nonce, written to the file before it is used: a nonce is never reused,
 * even when the device resets after sending. */
static int next_counter(device *d) {
    FILE *f = fopen(d->counter_file, "r");
    unsigned long long last = 0;
    if (f) {
        if (fscanf(f, "%llu", &last) != 1) last = 0;
        fclose(f);
    }
    d->counter = last + 1;
    f = fopen(d->counter_file, "w");
    if (!f) return -1;
    fprintf(f, "%llu\n", d->counter);
    return fclose(f);
}

static int send_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, data, len, 0);
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A header's value in the answer head `head` (NUL-terminated), copied into `out`. */
static int header_value(const char *head, const char *name, char *out, size_t cap) {
    size_t name_len = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line && line[2] != '\r' && line[2] != '\0') {
        const char *start = line + 2, *end = strstr(start, "\r\n");
        size_t i;
        int same = end && (size_t)(end - start) > name_len && start[name_len] == ':';
        for (i = 0; same && i < name_len; i++) {
            char c = start[i];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            same = c == name[i];
        }
        if (same) {
            const char *v = start + name_len + 1;
            size_t len;
            while (*v == ' ') v++;
            len = (size_t)(end - v);
            if (len + 1 > cap) return -1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 0;
        }
        line = end;
    }
    return -1;
}

/* Sends one signed request and reads its answer; prints `STATUS BODY`. Returns 0 for a 200
 * answer whose signature verifies, 1 for any other answer, -1 on a network error. */
static int request(device *d, const char *method, const char *path, const char *query,
                   const char *content_type, const char *body) {
    char nonce[24], signature[TERN_SIGNATURE_HEADER_BYTES], scratch[1024];
    char head[1024], time_value[24], response_signature[80], length[16];
    char *end;
    size_t body_len = strlen(body), head_len, content_length;
    int status, written;
    if (next_counter(d) != 0) return -1;
    snprintf(nonce, sizeof nonce, "c:%llx", d->counter);
    {
        const tern_header headers[] = {
            {"Tern-Key", d->key_id}, {"Tern-Time", "-"}, {"Tern-Nonce", nonce}};
        if (tern_sign_request(&TERN_CRYPTO_OPENSSL, d->secret, method, path, query, headers,
                              3, (const uint8_t *)body, body_len, scratch, sizeof scratch,
                              signature) != 0) {
            return -1;
        }
    }
    written = snprintf(head, sizeof head,
                       "%s %s%s%s HTTP/1.1\r\nHost: tern\r\nTern-Key: %s\r\nTern-Time: -\r\n"
                       "Tern-Nonce: %s\r\nTern-Signature: %s\r\nContent-Type: %s\r\n"
                       "Content-Length: %lu\r\n\r\n",
                       method, path, *query ? "?" : "", query, d->key_id, nonce, signature,
                       content_type, (unsigned long)body_len);
    if (written < 0 || (size_t)written >= sizeof head) return -1;
    if (send_all(d->fd, head, (size_t)written) != 0 || send_all(d->fd, body, body_len) != 0) {
        return -1;
    }
    /* The answer: a head, then Content-Length bytes of body. */
    for (;;) {
        ssize_t n;
        d->buf[d->buffered] = '\0';
        end = strstr(d->buf, "\r\n\r\n");
        if (end) {
            head_len = (size_t)(end - d->buf) + 4;
            end[2] = '\0';
            if (header_value(d->buf, "content-length", length, sizeof length) != 0) return -1;
            content_length = strtoul(length, NULL, 10);
            if (d->buffered >= head_len + content_length) break;
            end[2] = '\r';
        }
        if (d->buffered + 1 >= sizeof d->buf) return -1;
        n = recv(d->fd, d->buf + d->buffered, sizeof d->buf - 1 - d->buffered, 0);
        if (n <= 0) return -1;
        d->buffered += (size_t)n;
    }
    status = atoi(d->buf + 9);
    {
        const char *answer = d->buf + head_len;
        int verified = header_value(d->buf, "tern-time", time_value, sizeof time_value) == 0 &&
                       header_value(d->buf, "tern-response-signature", response_signature,
                                    sizeof response_signature) == 0 &&
                       tern_verify_response(&TERN_CRYPTO_OPENSSL, d->secret, status, signature,
                                            (const uint8_t *)answer, content_length,
                                            time_value, response_signature);
        const char *seq = strstr(answer, "\"next_ack\":");
        printf("%d %.*s\n", status, (int)content_length, answer);
        fflush(stdout);
        if (status == 200 && verified && seq) {
            d->next_ack = strtoull(seq + 11, NULL, 10);
            d->has_ack = 1;
        }
        memmove(d->buf, d->buf + head_len + content_length,
                d->buffered - head_len - content_length);
        d->buffered -= head_len + content_length;
        if (!verified) fprintf(stderr, "the answer's signature does not verify\n");
        return status == 200 && verified ? 0 : 1;
    }
}

int main(int argc, char **argv) {
    static device d;
    char path[512], query[64];
    int i, result = 0;
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s HOST PORT KEY_ID SECRET_HEX COUNTER_FILE "
                "(pub TOPIC PAYLOAD | sub FILTER | poll WAIT)...\n",
                argv[0]);
        return 2;
    }
    d.key_id = argv[3];
    d.counter_file = argv[5];
    if (tern_parse_secret(argv[4], d.secret) != 0) {
        fprintf(stderr, "the secret is 64 hex digits\n");
        return 2;
    }
    d.fd = connect_to(argv[1], argv[2]);
    if (d.fd < 0) {
        fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
        return 2;
    }
    for (i = 6; i < argc; i++) {
        int r;
        if (strcmp(argv[i], "pub") == 0 && i + 2 < argc) {
            snprintf(path, sizeof path, "/v1/pub/%s", argv[i + 1]);
            r = request(&d, "POST", path, "qos=1", "text/plain", argv[i + 2]);
            i += 2;
        } else if (strcmp(argv[i], "sub") == 0 && i + 1 < argc) {
            snprintf(path, sizeof path, "/v1/mbox/subs/%s", argv[i + 1]);
            r = request(&d, "PUT", path, "", "text/plain", "");
            i += 1;
        } else if (strcmp(argv[i], "poll") == 0 && i + 1 < argc) {
            if (d.has_ack) {
                snprintf(query, sizeof query, "ack=%llu&wait=%d", d.next_ack, atoi(argv[i + 1]));
            } else {
                snprintf(query, sizeof query, "wait=%d", atoi(argv[i + 1]));
            }
            r = request(&d, "GET", "/v1/mbox", query, "text/plain", "");
            i += 1;
        } else {
            fprintf(stderr, "unknown command %s\n", argv[i]);
            close(d.fd);
            return 2;
        }
        if (r < 0) {
            fprintf(stderr, "network error\n");
            close(d.fd);
            return 2;
        }
        if (r > 0) result = 1;
    }
    close(d.fd);
    return result;
}
