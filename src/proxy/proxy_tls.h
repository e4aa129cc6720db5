/* proxy_tls.h - keel proxy's TLS (OpenSSL): contexts loaded with the config for TLS listeners
 * and TLS clusters, and the per-connection state that puts TLS between a libuv stream and the
 * proxy's plaintext buffers (docs/proxy.md, "TLS"). */
#ifndef KEEL_PROXY_PROXY_TLS_H
#define KEEL_PROXY_PROXY_TLS_H

#include "base/buf.h"
#include "proxy/config.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Contexts. Like the JWT keys (proxy/auth.h), certificates, keys and CA files are read each
 * time a config is loaded: `keel proxy --check`, start, and every reload, so replacing the
 * files and sending SIGHUP rotates them. A file that cannot be read, a certificate or key that
 * does not parse, or a key that does not match its certificate refuses the config, the error on
 * the line of the listener's or cluster's tls section. Connections hold their own reference to
 * the context they were made from, so a reload never disturbs a connection already open.
 *
 * Listener defaults: TLS 1.2 and 1.3 only; TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305
 * only (forward secrecy, AEAD), the server's order preferred; no renegotiation, no compression;
 * ALPN answers http/1.1 (a client that offers ALPN without http/1.1 is refused, RFC 7301
 * §3.2); session resumption by the OpenSSL defaults (a session cache and tickets per context).
 * Cluster defaults: the same versions and ciphers, ALPN http/1.1, the peer verified against
 * ca_file (or the system's CAs) unless verify is false, SNI and the name check from
 * server_name, or else the certificate must carry the host's IP address; the last session a
 * host gave is offered again by the next connection to it (resumption: no certificate
 * exchange, no signature), kept by the caller (on_session).
 */
#define KEEL_PROXY_TLS_FILE_BYTES_MAX (1u << 20) /* a PEM file larger than this is refused */
#define KEEL_PROXY_TLS_WHY_BYTES_MAX 160u        /* the reason given for a failed handshake */

typedef struct keel_proxy_tls {
    SSL_CTX *listeners[KEEL_PROXY_LISTENERS_MAX]; /* one per cfg->listeners; NULL: plaintext */
    SSL_CTX *clusters[KEEL_PROXY_CLUSTERS_MAX];   /* one per cfg->clusters; NULL: plaintext */
} keel_proxy_tls_t;

/* 0 and out filled (free with keel_proxy_tls_free), or KEEL_EINVAL with errs appended to (out
 * holds nothing then). */
int keel_proxy_tls_load(const keel_proxy_config_t *cfg, keel_proxy_tls_t *out,
                        keel_proxy_errors_t *errs);
void keel_proxy_tls_free(keel_proxy_tls_t *t);
/* Whether cfg names any TLS file (a reload reads them again). */
bool keel_proxy_tls_reads_files(const keel_proxy_config_t *cfg);

/*
 * A connection's TLS. OpenSSL never touches the socket: a BIO of our own hands it the
 * ciphertext a read callback received (keel__tls_feed) and collects what it writes in `wout`,
 * which the connection writes like any output (keel__tls_flush). Reads go whole into the
 * plaintext buffer at once, so nothing waits inside OpenSSL while libuv's reading is paused, and
 * the proxy's backpressure rules hold as for plaintext. WANT_READ means "feed more";
 * WANT_WRITE cannot happen (the BIO takes every byte); renegotiation is off.
 */
typedef struct keel__tls {
    SSL *ssl;
    const uint8_t *rin; /* ciphertext being fed (during keel__tls_feed only) */
    size_t rin_len;
    keel_buf_t wout;   /* ciphertext to send */
    bool done;         /* the handshake completed */
    bool over_limit;   /* the plaintext buffer was full */
    bool failed;       /* a feed or an encryption failed (its session is not to be resumed) */
    unsigned long err; /* OpenSSL's error of the last failure, for keel__tls_why */
    /* client connections: called with each session the server gives (TLS 1.3 tickets come
     * after the handshake) so a later connection can resume it; it takes a reference */
    void (*on_session)(void *arg, SSL_SESSION *s);
    void *on_session_arg;
} keel__tls_t;

enum {
    KEEL__TLS_OK = 0,   /* fed; plaintext (maybe none) appended */
    KEEL__TLS_EOF = 1,  /* the peer sent close_notify */
    KEEL__TLS_ERR = -1, /* the handshake failed, or a record was bad: close (after sending wout,
                           which may hold an alert) */
};

/* A server connection from a listener's context; NULL when out of memory. */
keel__tls_t *keel__tls_server(SSL_CTX *ctx);
/* A client connection toward host_ip (the host's numeric address, for the certificate check
 * when server_name is NULL), offering to resume session (NULL: none; one from the same context
 * only), with its ClientHello in wout; on_session (NULL: none) gets the sessions the server
 * gives. NULL when out of memory. */
keel__tls_t *keel__tls_client(SSL_CTX *ctx, const char *server_name, const char *host_ip,
                              SSL_SESSION *session, void (*on_session)(void *arg, SSL_SESSION *s),
                              void *arg);
void keel__tls_free(keel__tls_t *t);
/* Feeds ciphertext in[0..n): handshake progress, then every whole record decrypted into plain. */
int keel__tls_feed(keel__tls_t *t, const uint8_t *in, size_t n, keel_buf_t *plain);
/* Encrypts plain's unread bytes (after the handshake; before it they wait in plain) into wout.
 * 0, or KEEL__TLS_ERR. */
int keel__tls_encrypt(keel__tls_t *t, keel_buf_t *plain);
/* Queues close_notify in wout (after the handshake). */
void keel__tls_close_notify(keel__tls_t *t);
/* Frees wout's memory while it is empty (an idle keep-alive connection keeps little). */
void keel__tls_trim(keel__tls_t *t);
/* Why the last keel__tls_feed failed, for the log (OpenSSL's reason, or the verify result). */
void keel__tls_why(keel__tls_t *t, char *out, size_t cap);

#endif
