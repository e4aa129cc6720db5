/* proxy_tls.c - keel proxy's TLS with OpenSSL: contexts for listeners and clusters, loaded with
 * the config, and the connection state that sits between libuv and the plaintext buffers
 * (proxy_tls.h; the data path's use of it is in proxy_conn.c and proxy_upstream.c). */
#include "proxy/proxy_tls.h"

#include "base/err.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* TLS 1.2 suites: ECDHE key exchange (forward secrecy) and AEAD ciphers only, the "intermediate"
 * set most deployments use. TLS 1.3's suites are OpenSSL's defaults (all AEAD). */
static const char tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* ALPN's wire form of our one protocol. */
static const unsigned char alpn_http11[] = "\x08http/1.1";
#define ALPN_HTTP11_BYTES 9u

/* Plaintext room asked of the buffer per SSL_read: one whole record (RFC 8446 §5.1). */
#define TLS_RECORD_PLAIN_BYTES 16384u

/* ---- errors ------------------------------------------------------------------------------ */

/* OpenSSL's reason for the last error on this thread's queue, which is then cleared. */
static void ossl_reason(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(out, cap, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
}

/* ---- files ------------------------------------------------------------------------------- */

/* The file's bytes in a memory BIO (NULL with why filled): a regular file of at most
 * KEEL_PROXY_TLS_FILE_BYTES_MAX bytes. */
static BIO *read_pem(const char *path, char *why, size_t cap)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, cap, "cannot read %.120s", path);
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    if (st.st_size > (off_t)KEEL_PROXY_TLS_FILE_BYTES_MAX) {
        snprintf(why, cap, "%.100s is larger than %u bytes", path, KEEL_PROXY_TLS_FILE_BYTES_MAX);
        fclose(f);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    BIO *b = buf ? BIO_new(BIO_s_mem()) : NULL;
    if (b == NULL || BIO_write(b, buf, (int)n) != (int)n) {
        snprintf(why, cap, "out of memory");
        BIO_free(b);
        b = NULL;
    }
    free(buf);
    return b;
}

/* Never a terminal prompt for an encrypted key: it fails to load instead. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* The certificate, its chain and its key, checked against each other: 0, or which file is at
 * fault (LOAD_CERT or LOAD_KEY) with why filled. */
enum { LOAD_CERT = 1, LOAD_KEY = 2 };

static int load_cert_key(SSL_CTX *ctx, const keel_proxy_tls_server_t *t, char *why, size_t cap)
{
    char r[128];
    BIO *b = read_pem(t->cert_file, why, cap);
    if (b == NULL)
        return LOAD_CERT;
    X509 *cert = PEM_read_bio_X509(b, NULL, no_password, NULL);
    int rc = 0;
    if (cert == NULL || SSL_CTX_use_certificate(ctx, cert) != 1) {
        ossl_reason(r, sizeof(r));
        snprintf(why, cap, "cert_file %.60s: no PEM certificate (%.50s)", t->cert_file, r);
        rc = LOAD_CERT;
    }
    X509 *more; /* intermediates, in order */
    while (rc == 0 && (more = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL)
        if (SSL_CTX_add0_chain_cert(ctx, more) != 1) {
            X509_free(more);
            snprintf(why, cap, "cert_file %.80s: a chain certificate was refused", t->cert_file);
            rc = LOAD_CERT;
        }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    if (rc == 0 && (b = read_pem(t->key_file, why, cap)) == NULL)
        rc = LOAD_KEY;
    if (rc != 0) {
        X509_free(cert);
        return rc;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL);
    BIO_free(b);
    if (key == NULL) {
        ossl_reason(r, sizeof(r));
        snprintf(why, cap, "key_file %.60s: no PEM private key (%.50s)", t->key_file, r);
        rc = LOAD_KEY;
    } else if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        snprintf(why, cap, "key_file %.50s does not match cert_file %.50s", t->key_file,
                 t->cert_file);
        rc = LOAD_KEY;
    } else if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ossl_reason(r, sizeof(r));
        snprintf(why, cap, "key_file %.60s: the key is refused (%.50s)", t->key_file, r);
        rc = LOAD_KEY;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

/* The CA certificates the hosts' certificates must chain to. */
static int load_ca(SSL_CTX *ctx, const char *path, char *why, size_t cap)
{
    BIO *b = read_pem(path, why, cap);
    if (b == NULL)
        return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509 *c;
    int n = 0;
    while ((c = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, c) == 1)
            n++;
        X509_free(c);
    }
    ERR_clear_error();
    BIO_free(b);
    if (n == 0) {
        snprintf(why, cap, "ca_file %.100s holds no PEM certificate", path);
        return -1;
    }
    return 0;
}

/* ---- contexts ---------------------------------------------------------------------------- */

/* RFC 7301 §3.2: http/1.1 when the client offers it, else a no_application_protocol alert. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl, (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int l = in[i];
        if (i + 1 + l > inlen)
            break;
        if (l == ALPN_HTTP11_BYTES - 1 && memcmp(in + i + 1, alpn_http11 + 1, l) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)l;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + l;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* A client connection got a session (a TLS 1.3 ticket, or TLS 1.2's session): to the owner. */
static int new_session(SSL *ssl, SSL_SESSION *s)
{
    keel__tls_t *t = SSL_get_app_data(ssl);
    if (t != NULL && t->on_session != NULL && SSL_SESSION_is_resumable(s))
        t->on_session(t->on_session_arg, s); /* takes its own reference */
    return 0;                                /* ours is not kept: OpenSSL drops it */
}

static SSL_CTX *ctx_new(bool server)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    /* buffers are released while a connection is idle (a keep-alive client costs little) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (server) {
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    } else { /* sessions go to the connection's on_session, not to a cache in the context */
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session);
    }
    return ctx;
}

int keel_proxy_tls_load(const keel_proxy_config_t *cfg, keel_proxy_tls_t *out,
                        keel_proxy_errors_t *errs)
{
    memset(out, 0, sizeof(*out));
    uint32_t errors = errs->count + errs->dropped;
    char why[KEEL_PROXY_ERROR_BYTES_MAX - 48], line[KEEL_PROXY_ERROR_BYTES_MAX];
    for (uint32_t i = 0; i < cfg->listeners_count; i++) {
        const keel_proxy_listener_t *l = &cfg->listeners[i];
        if (!l->tls.enabled)
            continue;
        SSL_CTX *ctx = ctx_new(true);
        int rc = ctx ? load_cert_key(ctx, &l->tls, why, sizeof(why)) : LOAD_CERT;
        if (ctx == NULL)
            snprintf(why, sizeof(why), "out of memory");
        if (rc != 0) {
            snprintf(line, sizeof(line), "listener '%.30s': tls: %s", l->name ? l->name : "", why);
            keel_proxy_errors_add(errs, rc == LOAD_KEY ? l->tls.key_line : l->tls.cert_line, line);
            SSL_CTX_free(ctx);
            continue;
        }
        out->listeners[i] = ctx;
    }
    for (uint32_t i = 0; i < cfg->clusters_count; i++) {
        const keel_proxy_cluster_t *c = &cfg->clusters[i];
        if (!c->tls.enabled)
            continue;
        SSL_CTX *ctx = ctx_new(false);
        int rc = 0;
        if (ctx == NULL) {
            snprintf(why, sizeof(why), "out of memory");
            rc = -1;
        } else if (c->tls.ca_file != NULL) {
            rc = load_ca(ctx, c->tls.ca_file, why, sizeof(why));
        } else if (c->tls.verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
            ERR_clear_error();
            snprintf(why, sizeof(why),
                     "no ca_file, and the system's CA certificates are not found");
            rc = -1;
        }
        if (rc != 0) {
            snprintf(line, sizeof(line), "cluster '%.30s': tls: %s", c->name, why);
            keel_proxy_errors_add(errs, c->tls.ca_file ? c->tls.ca_line : c->tls.line, line);
            SSL_CTX_free(ctx);
            continue;
        }
        SSL_CTX_set_verify(ctx, c->tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        out->clusters[i] = ctx;
    }
    if (errs->count + errs->dropped != errors) {
        keel_proxy_tls_free(out);
        return KEEL_EINVAL;
    }
    return 0;
}

void keel_proxy_tls_free(keel_proxy_tls_t *t)
{
    for (uint32_t i = 0; i < KEEL_PROXY_LISTENERS_MAX; i++)
        SSL_CTX_free(t->listeners[i]);
    for (uint32_t i = 0; i < KEEL_PROXY_CLUSTERS_MAX; i++)
        SSL_CTX_free(t->clusters[i]);
    memset(t, 0, sizeof(*t));
}

bool keel_proxy_tls_reads_files(const keel_proxy_config_t *cfg)
{
    for (uint32_t i = 0; i < cfg->listeners_count; i++)
        if (cfg->listeners[i].tls.enabled)
            return true;
    for (uint32_t i = 0; i < cfg->clusters_count; i++)
        if (cfg->clusters[i].tls.enabled && cfg->clusters[i].tls.ca_file != NULL)
            return true;
    return false;
}

/* ---- the BIO between OpenSSL and libuv --------------------------------------------------- */

static int bio_write(BIO *b, const char *data, int n)
{
    keel__tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    return keel_buf_append(&t->wout, data, (size_t)n) == 0 ? n : -1;
}

static int bio_read(BIO *b, char *out, int n)
{
    keel__tls_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->rin_len == 0) {
        BIO_set_retry_read(b); /* WANT_READ: the next read callback feeds more */
        return -1;
    }
    size_t k = n > 0 && (size_t)n < t->rin_len ? (size_t)n : t->rin_len;
    memcpy(out, t->rin, k);
    t->rin += k;
    t->rin_len -= k;
    return (int)k;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0; /* writes are queued, never held */
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "keel-uv");
    if (m == NULL || BIO_meth_set_write(m, bio_write) != 1 || BIO_meth_set_read(m, bio_read) != 1 ||
        BIO_meth_set_ctrl(m, bio_ctrl) != 1 || BIO_meth_set_create(m, bio_create) != 1) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ---- connections ------------------------------------------------------------------------- */

static keel__tls_t *tls_new(SSL_CTX *ctx)
{
    pthread_once(&bio_once, bio_method_init);
    if (bio_method == NULL || ctx == NULL)
        return NULL;
    keel__tls_t *t = calloc(1, sizeof(*t));
    BIO *b = t ? BIO_new(bio_method) : NULL;
    SSL *ssl = b ? SSL_new(ctx) : NULL;
    if (ssl == NULL) {
        BIO_free(b);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    BIO_set_data(b, t);
    SSL_set_bio(ssl, b, b); /* one reference, taken by ssl */
    t->ssl = ssl;
    keel_buf_init(&t->wout, 0);
    return t;
}

keel__tls_t *keel__tls_server(SSL_CTX *ctx)
{
    keel__tls_t *t = tls_new(ctx);
    if (t != NULL)
        SSL_set_accept_state(t->ssl);
    return t;
}

keel__tls_t *keel__tls_client(SSL_CTX *ctx, const char *server_name, const char *host_ip,
                              SSL_SESSION *session, void (*on_session)(void *arg, SSL_SESSION *s),
                              void *arg)
{
    keel__tls_t *t = tls_new(ctx);
    if (t == NULL)
        return NULL;
    SSL_set_connect_state(t->ssl);
    SSL_set_app_data(t->ssl, t);
    t->on_session = on_session;
    t->on_session_arg = arg;
    int ok = SSL_set_alpn_protos(t->ssl, alpn_http11, ALPN_HTTP11_BYTES) == 0;
    if (session != NULL) /* it takes its own reference */
        ok &= SSL_set_session(t->ssl, session) == 1;
    if (server_name != NULL) /* SNI, and the name the certificate must carry */
        ok &= SSL_set_tlsext_host_name(t->ssl, server_name) == 1 &&
              SSL_set1_host(t->ssl, server_name) == 1;
    else if (host_ip != NULL) /* no SNI for an address (RFC 6066 §3); the cert must name it */
        ok &= X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host_ip) == 1;
    if (!ok) {
        keel__tls_free(t);
        ERR_clear_error();
        return NULL;
    }
    int r = SSL_do_handshake(t->ssl); /* the ClientHello, into wout */
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
        keel__tls_free(t);
        ERR_clear_error();
        return NULL;
    }
    return t;
}

void keel__tls_free(keel__tls_t *t)
{
    if (t == NULL)
        return;
    /* a connection that ends without close_notify (the proxy closes pooled connections at
     * once; clients often just close) would mark its session unresumable; only a failed one
     * should be */
    if (t->done && !t->failed)
        SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(t->ssl);
    keel_buf_free(&t->wout);
    free(t);
}

/* Keeps the error for keel__tls_why and clears this thread's queue. */
static int tls_failed(keel__tls_t *t)
{
    t->err = ERR_peek_last_error();
    t->failed = true;
    ERR_clear_error();
    return KEEL__TLS_ERR;
}

int keel__tls_feed(keel__tls_t *t, const uint8_t *in, size_t n, keel_buf_t *plain)
{
    t->rin = in;
    t->rin_len = n;
    int rc = KEEL__TLS_OK;
    if (!t->done) {
        int r = SSL_do_handshake(t->ssl);
        if (r == 1) {
            t->done = true;
        } else {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                rc = tls_failed(t);
        }
    }
    while (rc == KEEL__TLS_OK && t->done) {
        if (keel_buf_reserve(plain, TLS_RECORD_PLAIN_BYTES) != 0) {
            t->over_limit = t->failed = true;
            rc = KEEL__TLS_ERR; /* over the buffer's limit, as a plaintext read would be */
            break;
        }
        size_t room = plain->cap - plain->len;
        int r = SSL_read(t->ssl, keel_buf_wptr(plain), room > INT32_MAX ? INT32_MAX : (int)room);
        if (r > 0) {
            keel_buf_commit(plain, (size_t)r);
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break; /* every byte fed is consumed; a partial record waits inside OpenSSL */
        rc = e == SSL_ERROR_ZERO_RETURN ? KEEL__TLS_EOF : tls_failed(t);
    }
    t->rin = NULL;
    t->rin_len = 0;
    return rc;
}

int keel__tls_encrypt(keel__tls_t *t, keel_buf_t *plain)
{
    while (t->done && keel_buf_unread(plain) > 0) {
        size_t n = keel_buf_unread(plain);
        int r = SSL_write(t->ssl, keel_buf_rptr(plain), n > INT32_MAX ? INT32_MAX : (int)n);
        if (r <= 0)
            return tls_failed(t);
        keel_buf_consume(plain, (size_t)r);
    }
    return 0;
}

void keel__tls_close_notify(keel__tls_t *t)
{
    if (t->done && SSL_shutdown(t->ssl) < 0)
        ERR_clear_error();
}

void keel__tls_trim(keel__tls_t *t)
{
    if (keel_buf_unread(&t->wout) == 0)
        keel_buf_free(&t->wout);
}

void keel__tls_why(keel__tls_t *t, char *out, size_t cap)
{
    long v = SSL_get_verify_result(t->ssl);
    const char *r = t->err ? ERR_reason_error_string(t->err) : NULL;
    if (v != X509_V_OK)
        snprintf(out, cap, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else
        snprintf(out, cap, "%s",
                 r               ? r
                 : t->over_limit ? "more input than the connection's buffer limit"
                 : t->err        ? "OpenSSL error"
                                 : "protocol error");
}
