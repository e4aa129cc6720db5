/* idem.c - idempotency keys: fingerprints, stored records, and the claim/answer exchange
 * with keel server around a request. */
#include "tx/idem.h"

#include "base/hash.h"
#include "base/log.h"
#include "runtime/clock.h"

#include <assert.h>
#include <http_parser.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

keel_idem_config_t keel_idem_config_default(void)
{
    return (keel_idem_config_t){
        .ttl_ms = 24 * 3600 * 1000,
        .lock_ms = 60 * 1000,
        .response_bytes_max = 256 * 1024,
        .request_timeout_ms = 2000,
    };
}

/* ---- the pure part ------------------------------------------------------------------- */

bool keel_idem_key_valid(const char *key, size_t len)
{
    if (len == 0 || len > KEEL_IDEM_KEY_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (key[i] < 0x21 || key[i] > 0x7e)
            return false;
    return true;
}

void keel_idem_fingerprint(const char *method, const char *target, size_t target_len,
                           const void *body, size_t body_len,
                           char out[KEEL_IDEM_FINGERPRINT_HEX + 1])
{
    unsigned char md[32];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok =
        ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, method, strlen(method)) == 1 && EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
        EVP_DigestUpdate(ctx, target, target_len) == 1 && EVP_DigestUpdate(ctx, "\n", 1) == 1 &&
        (body_len == 0 || EVP_DigestUpdate(ctx, body, body_len) == 1) &&
        EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
    EVP_MD_CTX_free(ctx);
    assert(ok && md_len == 32); /* SHA-256 in libcrypto does not fail but for memory */
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[KEEL_IDEM_FINGERPRINT_HEX] = '\0';
}

/* The headers an answer keeps: those that carry its meaning for the client. */
static bool stored_header(const keel_http_header_t *h)
{
    static const char *const names[] = {"content-type",  "location", "etag",
                                        "last-modified", "link",     "retry-after",
                                        "cache-control"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (h->name_len == strlen(names[i]) && strncasecmp(h->name, names[i], h->name_len) == 0)
            return true;
    return false;
}

int keel_idem_encode_claim(keel_buf_t *out, const char *fingerprint, const char *nonce)
{
    assert(strlen(fingerprint) == KEEL_IDEM_FINGERPRINT_HEX &&
           strlen(nonce) == KEEL_IDEM_NONCE_HEX);
    return keel_buf_printf(out, "P %s %s", fingerprint, nonce);
}

int keel_idem_encode_answer(keel_buf_t *out, const char *fingerprint, int status,
                            const keel_http_header_t *headers, size_t headers_n, const void *body,
                            size_t body_len)
{
    assert(strlen(fingerprint) == KEEL_IDEM_FINGERPRINT_HEX && status >= 100 && status <= 999);
    int rc = keel_buf_printf(out, "D %s %03d %zu\n", fingerprint, status, body_len);
    size_t kept = 0;
    for (size_t i = 0; i < headers_n && rc == 0; i++) {
        const keel_http_header_t *h = &headers[i];
        if (!stored_header(h) || kept == KEEL_IDEM_HEADERS_MAX ||
            memchr(h->value, '\n', h->value_len) != NULL)
            continue;
        kept++;
        rc = keel_buf_printf(out, "%.*s: %.*s\n", (int)h->name_len, h->name, (int)h->value_len,
                             h->value);
    }
    if (rc == 0)
        rc = keel_buf_append(out, "\n", 1);
    if (rc == 0 && body_len > 0)
        rc = keel_buf_append(out, body, body_len);
    return rc;
}

static bool is_hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    return true;
}

int keel_idem_decode(uint8_t *buf, size_t len, keel_idem_record_t *out)
{
    const size_t fp_end = 2 + KEEL_IDEM_FINGERPRINT_HEX;
    memset(out, 0, sizeof(*out));
    if (len < fp_end || (buf[0] != 'P' && buf[0] != 'D') || buf[1] != ' ' ||
        !is_hex(buf + 2, KEEL_IDEM_FINGERPRINT_HEX))
        return KEEL_ECORRUPT;
    memcpy(out->fingerprint, buf + 2, KEEL_IDEM_FINGERPRINT_HEX);
    if (buf[0] == 'P' && len == fp_end)
        return 0; /* a claim written before nonces */
    if (buf[0] == 'P') {
        if (len != fp_end + 1 + KEEL_IDEM_NONCE_HEX || buf[fp_end] != ' ' ||
            !is_hex(buf + fp_end + 1, KEEL_IDEM_NONCE_HEX))
            return KEEL_ECORRUPT;
        memcpy(out->nonce, buf + fp_end + 1, KEEL_IDEM_NONCE_HEX);
        return 0;
    }
    /* "D <fp> <status> <body bytes>\n" headers "\n" body: the length catches a cut record */
    size_t p = fp_end;
    if (len < p + 7 || buf[p] != ' ' || buf[p + 4] != ' ')
        return KEEL_ECORRUPT;
    for (size_t i = 1; i <= 3; i++)
        if (buf[p + i] < '0' || buf[p + i] > '9')
            return KEEL_ECORRUPT;
    out->status = (buf[p + 1] - '0') * 100 + (buf[p + 2] - '0') * 10 + (buf[p + 3] - '0');
    if (out->status < 100)
        return KEEL_ECORRUPT;
    p += 5;
    size_t body_len = 0, digits = 0;
    for (; p < len && buf[p] >= '0' && buf[p] <= '9' && digits < 10; p++, digits++)
        body_len = body_len * 10 + (size_t)(buf[p] - '0');
    if (digits == 0 || p >= len || buf[p] != '\n')
        return KEEL_ECORRUPT;
    p++;
    for (;;) {
        if (p >= len)
            return KEEL_ECORRUPT; /* the blank line is missing */
        if (buf[p] == '\n')
            break;
        uint8_t *nl = memchr(buf + p, '\n', len - p);
        uint8_t *colon = memchr(buf + p, ':', len - p);
        if (nl == NULL || colon == NULL || colon > nl || colon == buf + p || colon + 1 == nl ||
            colon[1] != ' ' || out->headers_n == KEEL_IDEM_HEADERS_MAX)
            return KEEL_ECORRUPT;
        keel_http_header_t *h = &out->headers[out->headers_n++];
        *colon = '\0';
        *nl = '\0';
        h->name = (const char *)buf + p;
        h->name_len = (size_t)(colon - (buf + p));
        h->value = (const char *)colon + 2;
        h->value_len = (size_t)(nl - (colon + 2));
        p = (size_t)(nl - buf) + 1;
    }
    if (len - p - 1 != body_len)
        return KEEL_ECORRUPT;
    out->done = true;
    out->body = buf + p + 1;
    out->body_len = body_len;
    return 0;
}

keel_idem_decision_t keel_idem_decide(const keel_idem_record_t *rec, const char *fingerprint)
{
    if (rec == NULL)
        return KEEL_IDEM_RUN;
    if (strcmp(rec->fingerprint, fingerprint) != 0)
        return KEEL_IDEM_MISMATCH; /* even while running: the key names another request */
    return rec->done ? KEEL_IDEM_REPLAY : KEEL_IDEM_IN_PROGRESS;
}

/* ---- on the loop ----------------------------------------------------------------------- */

enum { OUT_RUN, OUT_REPLAY, OUT_MISMATCH, OUT_IN_PROGRESS, OUT_UNAVAILABLE, OUT_BAD_KEY, OUT_N };

int keel_idem_init(keel_idem_t *idem, keel_loop_t *loop, const keel_idem_config_t *cfg,
                   keel_metrics_t *metrics, const char *metrics_labels, keel_errmsg_t *msg)
{
    memset(idem, 0, sizeof(*idem));
    idem->loop = loop;
    keel_list_init(&idem->claiming);
    if (cfg->servers == NULL || cfg->prefix == NULL ||
        strlen(cfg->prefix) >= KEEL_IDEM_PREFIX_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "idempotency: servers and a prefix under %u bytes",
                         KEEL_IDEM_PREFIX_BYTES_MAX);
    if (cfg->ttl_ms <= 0 || cfg->lock_ms <= 0 || cfg->request_timeout_ms <= 0 ||
        cfg->response_bytes_max == 0)
        return keel_errf(msg, KEEL_EINVAL, "idempotency: ttl, lock, timeout and size > 0");
    idem->cfg = *cfg;
    snprintf(idem->prefix, sizeof(idem->prefix), "%s", cfg->prefix);
    idem->cfg.prefix = idem->prefix;
    keel_client_config_t cc = keel_client_config_default();
    snprintf(idem->seeds_text, sizeof(idem->seeds_text), "%s", cfg->servers);
    for (char *p = idem->seeds_text, *tok; (tok = strsep(&p, ",")) != NULL;) {
        if (*tok == '\0')
            continue;
        if (cc.seeds_n == KEEL_CLIENT_SEEDS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "idempotency: more than %u servers",
                             KEEL_CLIENT_SEEDS_MAX);
        cc.seeds[cc.seeds_n++] = tok;
    }
    if (cc.seeds_n == 0)
        return keel_errf(msg, KEEL_EINVAL, "idempotency: no server address");
    cc.request_timeout_ms = cfg->request_timeout_ms;
    int rc = keel_timer_init(loop, &idem->timer);
    if (rc != 0)
        return keel_errf(msg, rc, "idempotency: timer: %s", keel_strerror(rc));
    idem->timer_open = true;
    if ((rc = keel_client_init(&idem->client, loop, &cc, msg)) != 0) {
        keel_timer_close(&idem->timer, NULL);
        return rc;
    }
    idem->nonce_base = (uint64_t)keel_clock_now_ns() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    idem->cfg.servers = NULL; /* the text lives in seeds_text, cut up */
    if (metrics != NULL) {
        static const char *const outcome[OUT_N] = {"run",         "replay",      "mismatch",
                                                   "in_progress", "unavailable", "bad_key"};
        char labels[KEEL_METRICS_LABELS_BYTES_MAX];
        const char *base = metrics_labels ? metrics_labels : "";
        for (int i = 0; i < OUT_N; i++) {
            snprintf(labels, sizeof(labels), "%s%soutcome=\"%s\"", base, *base ? "," : "",
                     outcome[i]);
            idem->m_outcome[i] = keel_metrics_counter(
                metrics, "keel_idem_requests_total",
                "Requests with an Idempotency-Key, by what became of them.", labels);
        }
        idem->m_store_failures = keel_metrics_counter(
            metrics, "keel_idem_store_failures_total",
            "Answers sent without being stored (keel server unreachable or the claim lapsed).",
            metrics_labels);
        idem->m_late = keel_metrics_counter(
            metrics, "keel_idem_claims_late_total",
            "Claims unanswered past the request timeout (the request got 503).", metrics_labels);
        idem->m_withdrawn = keel_metrics_counter(
            metrics, "keel_idem_claims_withdrawn_total",
            "Late claims that landed after their request was answered, and were deleted.",
            metrics_labels);
    }
    return 0;
}

const keel_idem_stats_t *keel_idem_stats(const keel_idem_t *idem)
{
    return &idem->stats;
}

/* One request between its claim and its answer. */
typedef struct op {
    keel_idem_t *idem;
    keel_http_req_t *req; /* NULL once answered while the claim was late */
    keel_list_t link;     /* in idem->claiming while the claim is in flight */
    keel_ms_t sent_ms;
    char nonce[KEEL_IDEM_NONCE_HEX + 1];
    void (*run)(void *data);
    void *data;
    char fingerprint[KEEL_IDEM_FINGERPRINT_HEX + 1];
    keel_buf_t rec; /* the claim, then the answer being stored */
    size_t key_len;
    char key[]; /* prefix + idempotency key */
} op_t;

static void count(keel_idem_t *idem, int outcome)
{
    uint64_t *n[OUT_N] = {&idem->stats.runs,        &idem->stats.replays,
                          &idem->stats.mismatches,  &idem->stats.in_progress,
                          &idem->stats.unavailable, &idem->stats.bad_keys};
    (*n[outcome])++;
    if (idem->m_outcome[outcome])
        keel_counter_inc(idem->m_outcome[outcome]);
}

static void op_free(op_t *op)
{
    assert(op->idem->ops > 0);
    op->idem->ops--;
    keel_buf_free(&op->rec);
    free(op);
}

static void respond_retry_later(keel_http_req_t *req, int status, const char *message)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", status,
                     message);
    keel_http_header_t h[2] = {
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16},
        {.name = "Retry-After", .name_len = 11, .value = "1", .value_len = 1}};
    keel_http_respond(req, status, h, 2, body, (size_t)n);
}

/* Sends a decoded answer record, marked as a replay or not. */
static void send_record(keel_http_req_t *req, const keel_idem_record_t *rec, bool replayed)
{
    keel_http_header_t h[KEEL_IDEM_HEADERS_MAX + 1];
    memcpy(h, rec->headers, rec->headers_n * sizeof(h[0]));
    size_t n = rec->headers_n;
    if (replayed)
        h[n++] = (keel_http_header_t){
            .name = "Idempotent-Replayed", .name_len = 19, .value = "true", .value_len = 4};
    keel_http_respond(req, rec->status, h, n, rec->body, rec->body_len);
}

static void ignore_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl, (void)ctx, (void)status, (void)r;
}

static void on_stored(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    op_t *op = ctx;
    keel_idem_t *idem = op->idem;
    (void)cl;
    if (status != 0 || reply->type != KEEL_RESP_SIMPLE) {
        /* unreachable, or nil: the claim lapsed (lock_ms) and XX found no key */
        idem->stats.store_failures++;
        if (idem->m_store_failures)
            keel_counter_inc(idem->m_store_failures);
        keel_log_warn("idempotency: answer not stored", KF_STR("key", op->key),
                      KF_STR("why", status != 0 ? keel_strerror(status) : "claim lapsed"));
    }
    keel_idem_record_t rec;
    int rc = keel_idem_decode(op->rec.data + op->rec.rpos, keel_buf_unread(&op->rec), &rec);
    assert(rc == 0); /* encoded by us a moment ago */
    send_record(op->req, &rec, false);
    op_free(op);
}

/* The handler's answer, before it leaves: stored, then sent from what was stored. */
static int on_answer(keel_http_req_t *req, int status, const keel_http_header_t *headers,
                     size_t headers_n, const void *body, size_t body_len, void *data)
{
    op_t *op = data;
    keel_idem_t *idem = op->idem;
    keel_buf_reset(&op->rec);
    int rc = status >= 500 || body_len > idem->cfg.response_bytes_max
                 ? KEEL_EREJECTED
                 : keel_idem_encode_answer(&op->rec, op->fingerprint, status, headers, headers_n,
                                           body, body_len);
    if (rc == 0) {
        char px[24];
        snprintf(px, sizeof(px), "%lld", (long long)idem->cfg.ttl_ms);
        const char *argv[] = {"SET", op->key, (const char *)keel_buf_rptr(&op->rec),
                              "XX",  "PX",    px};
        size_t lens[] = {3, op->key_len, keel_buf_unread(&op->rec), 2, 2, strlen(px)};
        if ((rc = keel_client_command(&idem->client, 6, argv, lens, on_stored, op)) == 0)
            return 0;
    }
    /* not stored (a 5xx, too large, or no room to send): release the key so a retry runs
       the handler again, and send the answer as it is */
    const char *del[] = {"DEL", op->key};
    size_t del_lens[] = {3, op->key_len};
    keel_client_command(&idem->client, 2, del, del_lens, ignore_reply, NULL);
    op_free(op);
    return keel_http_respond(req, status, headers, headers_n, body, body_len);
}

static void on_withdrawn(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    op_t *op = ctx;
    (void)cl;
    if (status == 0 && reply->type == KEEL_RESP_ARRAY) { /* *-1: it moved, nothing deleted */
        op->idem->stats.claims_withdrawn++;
        if (op->idem->m_withdrawn)
            keel_counter_inc(op->idem->m_withdrawn);
    }
    op_free(op);
}

/* A late claim that landed: still ours (the nonce), delete it at the version read. */
static void on_late_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    op_t *op = ctx;
    keel_idem_t *idem = op->idem;
    (void)cl;
    if (status != 0 || reply->type != KEEL_RESP_ARRAY || reply->elems_len != 2 ||
        reply->elems[0].type != KEEL_RESP_BULK || reply->elems[1].type != KEEL_RESP_INT ||
        reply->elems[0].str.len != keel_buf_unread(&op->rec) ||
        memcmp(reply->elems[0].str.ptr, keel_buf_rptr(&op->rec), reply->elems[0].str.len) != 0) {
        op_free(op); /* gone, or another request's by now: not ours to delete */
        return;
    }
    char ver[24];
    snprintf(ver, sizeof(ver), "%lld", (long long)reply->elems[1].integer);
    const char *argv[] = {"KEEL.TXN", "1", op->key, ver, "1", "2", "DEL", op->key};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = i == 2 || i == 7 ? op->key_len : strlen(argv[i]);
    if (keel_client_command(&idem->client, 8, argv, lens, on_withdrawn, op) != 0)
        op_free(op);
}

static void on_claim(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    op_t *op = ctx;
    keel_idem_t *idem = op->idem;
    (void)cl;
    if (keel_list_linked(&op->link))
        keel_list_remove(&op->link);
    if (op->req == NULL) { /* answered 503 while this was late */
        const char *argv[] = {"KEEL.GETV", op->key};
        size_t lens[] = {9, op->key_len};
        if (status != 0 || reply->type != KEEL_RESP_NIL || idem->closing ||
            keel_client_command(&idem->client, 2, argv, lens, on_late_read, op) != 0)
            op_free(op); /* it did not land, or cannot be read: it lapses by lock_ms */
        return;
    }
    if (status != 0 || reply->type == KEEL_RESP_ERROR ||
        (reply->type != KEEL_RESP_NIL && reply->type != KEEL_RESP_BULK)) {
        char why[96];
        snprintf(why, sizeof(why), "%.*s",
                 status != 0 ? (int)strlen(keel_strerror(status)) : (int)reply->str.len,
                 status != 0 ? keel_strerror(status) : (const char *)reply->str.ptr);
        keel_log_warn("idempotency: claim failed", KF_STR("key", op->key), KF_STR("why", why));
        count(idem, OUT_UNAVAILABLE);
        respond_retry_later(op->req, 503, "the idempotency key store cannot be reached");
        op_free(op);
        return;
    }
    if (reply->type == KEEL_RESP_NIL) { /* claimed: run, and catch the answer */
        count(idem, OUT_RUN);
        keel_http_req_on_respond(op->req, on_answer, op);
        op->run(op->data);
        return;
    }
    keel_buf_reset(&op->rec);
    keel_idem_record_t rec;
    if (reply->str.len < 2 + KEEL_IDEM_FINGERPRINT_HEX ||
        keel_buf_append(&op->rec, reply->str.ptr, reply->str.len) != 0 ||
        keel_idem_decode(op->rec.data + op->rec.rpos, reply->str.len, &rec) != 0) {
        keel_log_error("idempotency: unreadable record", KF_STR("key", op->key));
        keel_http_respond_error(op->req, 500, "unreadable idempotency record");
        op_free(op);
        return;
    }
    switch (keel_idem_decide(&rec, op->fingerprint)) {
    case KEEL_IDEM_REPLAY:
        count(idem, OUT_REPLAY);
        send_record(op->req, &rec, true);
        break;
    case KEEL_IDEM_MISMATCH:
        count(idem, OUT_MISMATCH);
        keel_http_respond_error(op->req, 422, "this Idempotency-Key was used with another request");
        break;
    case KEEL_IDEM_IN_PROGRESS:
        count(idem, OUT_IN_PROGRESS);
        respond_retry_later(op->req, 409, "a request with this Idempotency-Key is in progress");
        break;
    case KEEL_IDEM_RUN:
        assert(0 && "a record never decides RUN");
        break;
    }
    op_free(op);
}

/* Requests whose claim is unanswered past request_timeout_ms: 503 now; the claim goes on. */
static void on_timer(keel_timer_t *t, void *data)
{
    keel_idem_t *idem = data;
    (void)t;
    keel_ms_t now = keel_loop_now_ms(idem->loop);
    while (!keel_list_empty(&idem->claiming)) {
        op_t *op = KEEL_LIST_ENTRY(keel_list_first(&idem->claiming), op_t, link);
        if (now < op->sent_ms + idem->cfg.request_timeout_ms)
            break;
        keel_list_remove(&op->link);
        count(idem, OUT_UNAVAILABLE);
        idem->stats.claims_late++;
        if (idem->m_late)
            keel_counter_inc(idem->m_late);
        keel_log_warn("idempotency: claim unanswered", KF_STR("key", op->key),
                      KF_INT("after_ms", now - op->sent_ms));
        respond_retry_later(op->req, 503, "the idempotency key store did not answer in time");
        op->req = NULL;
    }
    if (keel_list_empty(&idem->claiming)) {
        keel_timer_stop(&idem->timer);
        idem->timer_on = false;
    }
}

static void arm_timer(keel_idem_t *idem)
{
    if (idem->timer_on || !idem->timer_open)
        return;
    keel_ms_t every = idem->cfg.request_timeout_ms < 100 ? idem->cfg.request_timeout_ms : 100;
    if (keel_timer_start(&idem->timer, every, every, on_timer, idem) == 0)
        idem->timer_on = true;
}

void keel_idem_handle(keel_idem_t *idem, keel_http_req_t *req, const char *key, size_t key_len,
                      void (*run)(void *data), void *data)
{
    if (!keel_idem_key_valid(key, key_len)) {
        count(idem, OUT_BAD_KEY);
        keel_http_respond_error(req, 400, "Idempotency-Key: 1 to 255 visible ASCII characters");
        return;
    }
    size_t prefix_len = strlen(idem->prefix);
    op_t *op = calloc(1, sizeof(*op) + prefix_len + key_len + 1);
    if (op == NULL || idem->closing) {
        free(op);
        respond_retry_later(req, 503, idem->closing ? "shutting down" : "out of memory");
        return;
    }
    idem->ops++;
    *op = (op_t){.idem = idem, .req = req, .run = run, .data = data};
    keel_list_init(&op->link);
    keel_buf_init(&op->rec, 0);
    memcpy(op->key, idem->prefix, prefix_len);
    memcpy(op->key + prefix_len, key, key_len);
    op->key_len = prefix_len + key_len;
    op->key[op->key_len] = '\0';
    const keel_http_msg_t *m = req->msg;
    keel_idem_fingerprint(http_method_str((enum http_method)m->method), m->url, m->url_len, m->body,
                          m->body_len, op->fingerprint);
    char px[24];
    snprintf(px, sizeof(px), "%lld", (long long)idem->cfg.lock_ms);
    uint64_t seq = ++idem->nonce_seq, nonce = keel_hash64(&seq, sizeof(seq), idem->nonce_base);
    snprintf(op->nonce, sizeof(op->nonce), "%016llx", (unsigned long long)nonce);
    int rc = keel_idem_encode_claim(&op->rec, op->fingerprint, op->nonce);
    const char *argv[] = {"SET", op->key, (const char *)keel_buf_rptr(&op->rec), "NX", "GET",
                          "PX",  px};
    size_t lens[] = {3, op->key_len, keel_buf_unread(&op->rec), 2, 3, 2, strlen(px)};
    /* the claim may land until it would have lapsed anyway; the request waits less */
    if (rc == 0)
        rc = keel_client_command_timeout(&idem->client, 7, argv, lens, idem->cfg.lock_ms, on_claim,
                                         op);
    if (rc == 0) {
        op->sent_ms = keel_loop_now_ms(idem->loop);
        keel_list_insert_tail(&idem->claiming, &op->link);
        arm_timer(idem);
    }
    if (rc != 0) {
        count(idem, OUT_UNAVAILABLE);
        respond_retry_later(req, 503, "the idempotency key store is overloaded");
        op_free(op);
    }
}

static void closed_part(keel_idem_t *idem)
{
    if (--idem->closing_parts == 0 && idem->closed)
        idem->closed(idem);
}

static void client_closed(keel_client_t *cl)
{
    closed_part((keel_idem_t *)((char *)cl - offsetof(keel_idem_t, client)));
}

static void timer_closed(keel_timer_t *t)
{
    closed_part((keel_idem_t *)((char *)t - offsetof(keel_idem_t, timer)));
}

void keel_idem_close(keel_idem_t *idem, void (*closed)(keel_idem_t *idem))
{
    assert(!idem->closing);
    idem->closing = true;
    idem->closed = closed;
    idem->closing_parts = 2;
    idem->timer_open = idem->timer_on = false;
    keel_timer_close(&idem->timer, timer_closed);
    keel_client_close(&idem->client, client_closed);
}
