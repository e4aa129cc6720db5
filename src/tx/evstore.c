/* evstore.c - the event store: expected-version appends as one KEEL.TXN entry, loads that
 * replay from the latest snapshot, snapshots written by KEEL.CAS only when newer. */
#include "tx/evstore.h"

#include "base/num.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES_MAX (KEEL_ES_AGG_BYTES_MAX + 16)
#define CMD_ARGS_MAX (8 + KEEL_ES_APPEND_EVENTS_MAX * 22)

/* ---- names ----------------------------------------------------------------------------- */

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '@' || c == '-';
}

int keel_es_name_valid(const char *agg, size_t len)
{
    if (len == 0 || len > KEEL_ES_AGG_BYTES_MAX || agg[0] == '-')
        return KEEL_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (!name_char(agg[i]))
            return KEEL_EINVAL;
    return 0;
}

static int type_valid(const char *t, size_t len)
{
    if (t == NULL || len == 0 || len > KEEL_ES_TYPE_BYTES_MAX)
        return KEEL_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (!name_char(t[i]) && t[i] != ':')
            return KEEL_EINVAL;
    return 0;
}

static int key_of(char *out, size_t cap, const char *agg, const char *suffix)
{
    size_t len = strlen(agg);
    if (keel_es_name_valid(agg, len) != 0)
        return KEEL_EINVAL;
    int n = snprintf(out, cap, "es:%s%s", agg, suffix);
    return n < 0 || (size_t)n >= cap ? KEEL_ETOOBIG : n;
}

int keel_es_stream_key(char *out, size_t cap, const char *agg)
{
    return key_of(out, cap, agg, "");
}

int keel_es_category_key(char *out, size_t cap, const char *agg)
{
    size_t len = strlen(agg);
    if (keel_es_name_valid(agg, len) != 0)
        return KEEL_EINVAL;
    const char *dash = memchr(agg, '-', len);
    size_t cat = dash ? (size_t)(dash - agg) : len;
    int n = snprintf(out, cap, "es:$ce-%.*s", (int)cat, agg);
    return n < 0 || (size_t)n >= cap ? KEEL_ETOOBIG : n;
}

static int send_args(keel_es_t *es, keel_args_t *a, keel_client_reply_fn fn, void *ctx)
{
    int rc = keel_args_resolve(a);
    if (rc != 0)
        return rc;
    if (es->cfg.request_timeout_ms > 0)
        return keel_client_command_timeout(es->cl, a->n, a->ptrs, a->lens,
                                           es->cfg.request_timeout_ms, fn, ctx);
    return keel_client_command(es->cl, a->n, a->ptrs, a->lens, fn, ctx);
}

/* A reply's error text as a NUL-terminated message. */
static void reply_text(char *out, size_t cap, const keel_resp_value_t *v)
{
    size_t n = v->str.len < cap - 1 ? v->str.len : cap - 1;
    memcpy(out, v->str.ptr, n);
    out[n] = 0;
}

static int parse_u64(const keel_resp_value_t *v, uint64_t *out)
{
    int64_t x;
    if (v->type != KEEL_RESP_BULK || keel_parse_i64(v->str.ptr, v->str.len, &x) != 0 || x < 0)
        return KEEL_EPROTO;
    *out = (uint64_t)x;
    return 0;
}

/* KEEL.GETV's reply: (value, revision), or absent (0, 0). */
static int parse_getv(const keel_resp_value_t *v, const keel_resp_value_t **value, uint64_t *rev)
{
    if (v->type == KEEL_RESP_NIL_ARRAY) {
        *value = NULL;
        *rev = 0;
        return 0;
    }
    if (v->type != KEEL_RESP_ARRAY || v->elems_len != 2 || v->elems[0].type != KEEL_RESP_BULK ||
        v->elems[1].type != KEEL_RESP_INT || v->elems[1].integer < 1)
        return KEEL_EPROTO;
    *value = &v->elems[0];
    *rev = (uint64_t)v->elems[1].integer;
    return 0;
}

keel_es_config_t keel_es_config_default(void)
{
    return (keel_es_config_t){
        .snapshot_every_events = 100, .request_timeout_ms = 0, .hints_max = 256};
}

int keel_es_init(keel_es_t *es, keel_client_t *cl, const keel_es_config_t *cfg)
{
    assert(cl != NULL);
    memset(es, 0, sizeof(*es));
    es->cl = cl;
    es->cfg = cfg ? *cfg : keel_es_config_default();
    if (es->cfg.hints_max > KEEL_ES_HINTS_LIMIT)
        return KEEL_EINVAL;
    if (es->cfg.hints_max > 0 &&
        (es->hints = calloc(es->cfg.hints_max, sizeof(*es->hints))) == NULL)
        return KEEL_ENOMEM;
    return 0;
}

void keel_es_free(keel_es_t *es)
{
    assert(es->pending == 0);
    free(es->hints);
    es->hints = NULL;
}

/* ---- hints: the (version, revision) of es:<agg>:ver last seen ---------------------------- */

static keel_es_hint_t *hint_slot(keel_es_t *es, const char *agg)
{
    if (es->hints == NULL)
        return NULL;
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const char *c = agg; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    return &es->hints[h % es->cfg.hints_max];
}

static void hint_put(keel_es_t *es, const char *agg, uint64_t version, uint64_t rev)
{
    keel_es_hint_t *h = hint_slot(es, agg);
    if (h == NULL)
        return;
    snprintf(h->agg, sizeof(h->agg), "%s", agg);
    h->version = version;
    h->rev = rev;
}

/* The hint for agg, if the slot holds it. */
static const keel_es_hint_t *hint_get(keel_es_t *es, const char *agg)
{
    keel_es_hint_t *h = hint_slot(es, agg);
    return h && strcmp(h->agg, agg) == 0 ? h : NULL;
}

/* ---- append ------------------------------------------------------------------------------ */

/*
 * Why a version key and KEEL.TXN (docs/tx.md has the longer argument): the check "the
 * aggregate's version is exactly E" must be made by the state machine, in log order.
 * XADD with the explicit id 0-(E+1) alone refuses a stale E (the id would not be above
 * the stream's top) but not an E from the future (it would leave a gap), and several
 * events in one append would be several XADDs that a failure could split. KEEL.TXN runs
 * all of them as one entry, all or nothing, if the watched key still has the revision we
 * read: so the append reads es:<agg>:ver (value E', revision R), refuses at once if
 * E' != E, and else proposes KEEL.TXN watching (ver, R) with KEEL.CAS ver R E+n, the n
 * XADDs to the aggregate's stream (ids 0-(E+1)..) and the n XADDs to the category's. Only an
 * append changes es:<agg>:ver, so the watch fails exactly when another append committed
 * in between; the version read again then names the winner's version.
 */
typedef struct append_op {
    keel_es_t *es;
    keel_es_append_fn cb;
    void *ctx;
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
    char ver_key[KEY_BYTES_MAX];
    uint64_t expected, base; /* base: the version the events go after */
    uint32_t tries;
    size_t n;
    keel_buf_t events; /* the events, encoded: type\0 | u32 data_len | data | u32 | meta */
    keel_args_t a;
} append_op_t;

static void append_done(append_op_t *op, int err, uint64_t version, const char *msg)
{
    keel_es_t *es = op->es;
    if (err == 0)
        es->stats.appends++;
    else if (err == KEEL_ECONFLICT)
        es->stats.conflicts++;
    assert(es->pending > 0);
    es->pending--;
    op->cb(es, op->ctx, err, version, msg ? msg : "");
    keel_buf_free(&op->events);
    keel_args_free(&op->a);
    free(op);
}

static void on_append_getv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);

static int send_getv(append_op_t *op)
{
    keel_args_reset(&op->a);
    keel_args_str(&op->a, "KEEL.GETV");
    keel_args_str(&op->a, op->ver_key);
    return send_args(op->es, &op->a, on_append_getv, op);
}

static uint32_t rd_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* One append's events: 0, or KEEL_EINVAL (a type, a size, a missing payload). */
static int events_valid(const keel_es_event_t *ev, size_t n)
{
    size_t total = 0;
    if (n == 0 || n > KEEL_ES_APPEND_EVENTS_MAX)
        return KEEL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        total += ev[i].data_len + ev[i].meta_len;
        if (type_valid(ev[i].type, ev[i].type_len) != 0 ||
            ev[i].data_len + ev[i].meta_len > KEEL_ES_EVENT_BYTES_MAX ||
            total > KEEL_ES_APPEND_BYTES_MAX || (ev[i].data_len && !ev[i].data) ||
            (ev[i].meta_len && !ev[i].meta))
            return KEEL_EINVAL;
    }
    return 0;
}

/* One event's two commands, each after its argument count (a KEEL.TXN's layout): XADD
 * es:<agg> 0-v type T data D meta M, and XADD es:$ce-<cat> * agg A version v type T data D
 * meta M. */
static void event_cmds(keel_args_t *a, const char *agg, const char *stream, const char *cat,
                       uint64_t version, const char *type, size_t tlen, const uint8_t *data,
                       size_t dlen, const uint8_t *meta, size_t mlen)
{
    char id[48];
    snprintf(id, sizeof(id), "0-%llu", (unsigned long long)version);
    keel_args_strs(a, 4, (const char *[]){"9", "XADD", stream, id});
    keel_args_str(a, "type");
    keel_args_add(a, type, tlen);
    keel_args_str(a, "data");
    keel_args_add(a, data, dlen);
    keel_args_str(a, "meta");
    keel_args_add(a, meta, mlen);
    keel_args_strs(a, 6, (const char *[]){"13", "XADD", cat, "*", "agg", agg});
    keel_args_str(a, "version");
    keel_args_u64(a, version);
    keel_args_str(a, "type");
    keel_args_add(a, type, tlen);
    keel_args_str(a, "data");
    keel_args_add(a, data, dlen);
    keel_args_str(a, "meta");
    keel_args_add(a, meta, mlen);
}

/* The KEEL.TXN entry for the events after version base, watching ver_key at rev. */
static int build_txn(append_op_t *op, uint64_t rev)
{
    char stream[KEY_BYTES_MAX], cat[KEY_BYTES_MAX];
    keel_es_stream_key(stream, sizeof(stream), op->agg);
    keel_es_category_key(cat, sizeof(cat), op->agg);
    keel_args_t *a = &op->a;
    keel_args_reset(a);
    keel_args_strs(a, 3, (const char *[]){"KEEL.TXN", "1", op->ver_key});
    keel_args_u64(a, rev);
    keel_args_u64(a, 1 + 2 * op->n);
    /* KEEL.CAS rather than SET: its reply is the new revision */
    keel_args_strs(a, 3, (const char *[]){"4", "KEEL.CAS", op->ver_key});
    keel_args_u64(a, rev);
    keel_args_u64(a, op->base + op->n);
    const uint8_t *p = keel_buf_rptr(&op->events);
    for (size_t i = 0; i < op->n && a->err == 0; i++) {
        const char *type = (const char *)p;
        size_t tlen = strlen(type);
        p += tlen + 1;
        uint32_t dlen = rd_u32(p);
        const uint8_t *data = p + 4;
        p = data + dlen;
        uint32_t mlen = rd_u32(p);
        const uint8_t *meta = p + 4;
        p = meta + mlen;
        event_cmds(a, op->agg, stream, cat, op->base + 1 + i, type, tlen, data, dlen, meta, mlen);
    }
    return a->err;
}

int keel_es_append_cmds(keel_args_t *a, const char *agg, uint64_t base,
                        const keel_es_event_t *events, size_t n, size_t *cmds)
{
    char stream[KEY_BYTES_MAX], cat[KEY_BYTES_MAX], ver_key[KEY_BYTES_MAX];
    if (events_valid(events, n) != 0 || keel_es_name_valid(agg, strlen(agg)) != 0)
        return KEEL_EINVAL;
    keel_es_stream_key(stream, sizeof(stream), agg);
    keel_es_category_key(cat, sizeof(cat), agg);
    key_of(ver_key, sizeof(ver_key), agg, ":ver");
    keel_args_strs(a, 3, (const char *[]){"3", "SET", ver_key});
    keel_args_u64(a, base + n);
    for (size_t i = 0; i < n; i++)
        event_cmds(a, agg, stream, cat, base + 1 + i, events[i].type, events[i].type_len,
                   events[i].data, events[i].data_len, events[i].meta, events[i].meta_len);
    *cmds = 1 + 2 * n;
    return a->err;
}

static void on_append_txn(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    append_op_t *op = ctx;
    char text[160];
    if (status != 0)
        return append_done(op, status, 0, "the append's answer was lost: its outcome is unknown");
    if (r->type == KEEL_RESP_NIL_ARRAY) { /* another append committed first: who? */
        int rc = send_getv(op);
        if (rc != 0)
            append_done(op, rc, 0, "could not ask for the version");
        return;
    }
    if (r->type == KEEL_RESP_ERROR) {
        reply_text(text, sizeof(text), r);
        return append_done(op, KEEL_EIO, 0, text);
    }
    if (r->type != KEEL_RESP_ARRAY || r->elems_len != 1 + 2 * op->n)
        return append_done(op, KEEL_EPROTO, 0, "unexpected KEEL.TXN reply");
    /* The watch held, so each command ran; one can still fail if a key was written
     * behind the store's back (another type, or an id taken by a foreign XADD). */
    for (size_t i = 0; i < r->elems_len; i++)
        if (r->elems[i].type == KEEL_RESP_ERROR) {
            reply_text(text, sizeof(text), &r->elems[i]);
            return append_done(op, KEEL_EIO, 0, text);
        }
    if (r->elems[0].type == KEEL_RESP_INT && r->elems[0].integer > 0)
        hint_put(op->es, op->agg, op->base + op->n, (uint64_t)r->elems[0].integer);
    append_done(op, 0, op->base + op->n, NULL);
}

static void on_append_getv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    append_op_t *op = ctx;
    const keel_resp_value_t *value;
    uint64_t rev, cur = 0;
    char text[160];
    if (status != 0)
        return append_done(op, status, 0, "reading the version failed");
    if (r->type == KEEL_RESP_ERROR) {
        reply_text(text, sizeof(text), r);
        return append_done(op, KEEL_EIO, 0, text);
    }
    if (parse_getv(r, &value, &rev) != 0 || (value && parse_u64(value, &cur) != 0))
        return append_done(op, KEEL_EPROTO, 0, "the version key does not hold a version");
    hint_put(op->es, op->agg, cur, rev);
    if (op->expected != KEEL_ES_ANY && cur != op->expected) {
        snprintf(text, sizeof(text), "wrong expected version: expected %llu, current %llu",
                 (unsigned long long)op->expected, (unsigned long long)cur);
        return append_done(op, KEEL_ECONFLICT, cur, text);
    }
    /* The version is the one expected but the watch may have failed on it before (a
     * write to the key that did not change it): try again, a bounded number of times. */
    if (op->tries++ == KEEL_ES_CONFLICT_RETRIES_MAX)
        return append_done(op, KEEL_ECONFLICT, cur, "the version key kept changing");
    op->base = cur;
    int rc = build_txn(op, rev);
    if (rc == 0)
        rc = send_args(op->es, &op->a, on_append_txn, op);
    if (rc != 0)
        append_done(op, rc, 0, "could not send the append");
}

/* Bounded so that the entry (each event twice: the aggregate's stream and the category's)
 * stays far below the server's entry limit. */
static int encode_events(keel_buf_t *out, const keel_es_event_t *ev, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint32_t dlen = (uint32_t)ev[i].data_len, mlen = (uint32_t)ev[i].meta_len;
        rc = keel_buf_append(out, ev[i].type, ev[i].type_len);
        if (rc == 0)
            rc = keel_buf_append(out, "", 1);
        if (rc == 0)
            rc = keel_buf_append(out, &dlen, 4);
        if (rc == 0 && dlen)
            rc = keel_buf_append(out, ev[i].data, dlen);
        if (rc == 0)
            rc = keel_buf_append(out, &mlen, 4);
        if (rc == 0 && mlen)
            rc = keel_buf_append(out, ev[i].meta, mlen);
    }
    return rc;
}

int keel_es_append(keel_es_t *es, const char *agg, uint64_t expected, const keel_es_event_t *events,
                   size_t n, keel_es_append_fn cb, void *ctx)
{
    assert(es != NULL && cb != NULL);
    if (events_valid(events, n) != 0 || keel_es_name_valid(agg, strlen(agg)) != 0)
        return KEEL_EINVAL;
    append_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return KEEL_ENOMEM;
    *op = (append_op_t){.es = es, .cb = cb, .ctx = ctx, .expected = expected, .n = n};
    snprintf(op->agg, sizeof(op->agg), "%s", agg);
    key_of(op->ver_key, sizeof(op->ver_key), agg, ":ver");
    keel_buf_init(&op->events, 0);
    keel_args_init(&op->a, CMD_ARGS_MAX, 0);
    int rc = encode_events(&op->events, events, n);
    const keel_es_hint_t *h = hint_get(es, agg);
    /* An aggregate that must not exist needs no read either: its version key is watched at
     * revision 0 (absent); if it exists, the watch fails and the version is read then. */
    static const keel_es_hint_t none = {.version = 0, .rev = 0};
    if (rc == 0 && h == NULL && expected == KEEL_ES_NO_STREAM)
        h = &none;
    if (rc == 0 && h && (expected == KEEL_ES_ANY || expected == h->version)) {
        op->base = h->version; /* one round trip; a stale hint fails the watch */
        op->tries = 1;
        rc = build_txn(op, h->rev);
        if (rc == 0)
            rc = send_args(es, &op->a, on_append_txn, op);
        es->stats.appends_hinted += rc == 0;
    } else if (rc == 0) {
        rc = send_getv(op);
    }
    if (rc != 0) {
        keel_buf_free(&op->events);
        keel_args_free(&op->a);
        free(op);
        return rc;
    }
    es->pending++;
    return 0;
}

/* ---- load -------------------------------------------------------------------------------- */

/*
 * A load: KEEL.GETV es:<agg>:snap; XRANGE es:<agg> (0-S + COUNT page, again from the last
 * id while pages come back full; then, if the version passed the snapshot by
 * snapshot_every_events, KEEL.CAS es:<agg>:snap <revision read> "<schema> <v>\n<state>"
 * (a conflict means someone wrote one meanwhile: read it, and write ours only if it is
 * still newer). The stream is append-only under the store, so the events after S read
 * later are the ones that followed S.
 */
typedef struct load_op {
    keel_es_t *es;
    keel_es_load_fn cb;
    void *ctx;
    const keel_es_fold_t *fold;
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
    char snap_key[KEY_BYTES_MAX];
    uint64_t snap_version;   /* the snapshot the load started from (0: none) */
    uint64_t stored_version; /* the snapshot stored, whatever its schema (0: none) */
    uint64_t snap_rev, version;
    uint32_t tries;
    bool answered;
    keel_buf_t state;
    keel_args_t a;
} load_op_t;

static void load_free(load_op_t *op)
{
    assert(op->es->pending > 0);
    op->es->pending--;
    keel_buf_free(&op->state);
    keel_args_free(&op->a);
    free(op);
}

static void load_answer(load_op_t *op, int err, const char *msg)
{
    if (op->answered)
        return;
    op->answered = true;
    if (err == 0)
        op->es->stats.loads++;
    op->cb(op->es, op->ctx, err, err == 0 ? op->version : 0, &op->state, msg ? msg : "");
}

static void load_fail(load_op_t *op, int err, const char *msg)
{
    load_answer(op, err, msg);
    load_free(op);
}

static void on_load_range(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void on_snap_cas(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);
static void on_snap_getv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r);

static int send_range(load_op_t *op)
{
    char stream[KEY_BYTES_MAX], from[48];
    keel_es_stream_key(stream, sizeof(stream), op->agg);
    snprintf(from, sizeof(from), "(0-%llu", (unsigned long long)op->version);
    keel_args_reset(&op->a);
    keel_args_str(&op->a, "XRANGE");
    keel_args_str(&op->a, stream);
    keel_args_str(&op->a, from);
    keel_args_str(&op->a, "+");
    keel_args_str(&op->a, "COUNT");
    keel_args_u64(&op->a, KEEL_ES_READ_PAGE_EVENTS);
    return send_args(op->es, &op->a, on_load_range, op);
}

/* "<schema> <version>\n<state>"; 0 if it parses under our schema. */
static int parse_snapshot(load_op_t *op, const keel_resp_value_t *v)
{
    const uint8_t *p = v->str.ptr, *end = p + v->str.len;
    const uint8_t *sp = memchr(p, ' ', v->str.len), *nl = memchr(p, '\n', v->str.len);
    int64_t schema, version;
    if (sp == NULL || nl == NULL || nl < sp || keel_parse_i64(p, (size_t)(sp - p), &schema) != 0 ||
        keel_parse_i64(sp + 1, (size_t)(nl - sp - 1), &version) != 0 || version < 1)
        return KEEL_EPROTO;
    op->stored_version = (uint64_t)version;
    if ((uint64_t)schema != op->fold->schema)
        return KEEL_ENOTFOUND;
    keel_buf_reset(&op->state);
    int rc = keel_buf_append(&op->state, nl + 1, (size_t)(end - nl - 1));
    if (rc == 0) {
        op->snap_version = op->version = (uint64_t)version;
        op->es->stats.snapshots_used++;
    }
    return rc;
}

static void on_load_snap(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    load_op_t *op = ctx;
    const keel_resp_value_t *value;
    char text[160];
    if (status != 0)
        return load_fail(op, status, "reading the snapshot failed");
    if (r->type == KEEL_RESP_ERROR) {
        reply_text(text, sizeof(text), r);
        return load_fail(op, KEEL_EIO, text);
    }
    if (parse_getv(r, &value, &op->snap_rev) != 0)
        return load_fail(op, KEEL_EPROTO, "unexpected KEEL.GETV reply");
    /* A snapshot of another schema (or unreadable) is ignored: replay from the start. */
    if (value && parse_snapshot(op, value) == KEEL_ENOMEM)
        return load_fail(op, KEEL_ENOMEM, "no memory for the snapshot");
    int rc = send_range(op);
    if (rc != 0)
        load_fail(op, rc, "could not read the events");
}

static int field(const keel_resp_value_t *f, const char *name, const keel_resp_value_t **out)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < f->elems_len; i += 2)
        if (f->elems[i].str.len == n && memcmp(f->elems[i].str.ptr, name, n) == 0) {
            *out = &f->elems[i + 1];
            return 0;
        }
    return KEEL_EPROTO;
}

/* One XRANGE entry [id, [type T data D meta M]] folded into the state. */
static int fold_entry(load_op_t *op, const keel_resp_value_t *e)
{
    const keel_resp_value_t *type, *data, *meta;
    int64_t v;
    if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 || e->elems[0].type != KEEL_RESP_BULK ||
        e->elems[1].type != KEEL_RESP_ARRAY || e->elems[0].str.len < 3 ||
        memcmp(e->elems[0].str.ptr, "0-", 2) != 0 ||
        keel_parse_i64(e->elems[0].str.ptr + 2, e->elems[0].str.len - 2, &v) != 0 ||
        field(&e->elems[1], "type", &type) != 0 || field(&e->elems[1], "data", &data) != 0 ||
        field(&e->elems[1], "meta", &meta) != 0)
        return KEEL_EPROTO;
    if ((uint64_t)v != op->version + 1) /* versions are dense: a gap is a foreign write */
        return KEEL_ECORRUPT;
    keel_es_event_t ev = {.type = (const char *)type->str.ptr,
                          .type_len = type->str.len,
                          .data = data->str.ptr,
                          .data_len = data->str.len,
                          .meta = meta->str.ptr,
                          .meta_len = meta->str.len,
                          .version = (uint64_t)v};
    int rc = op->fold->apply(op->fold->data, &op->state, &ev);
    if (rc == 0 && op->state.len - op->state.rpos > KEEL_ES_STATE_BYTES_MAX)
        rc = KEEL_ETOOBIG;
    if (rc == 0) {
        op->version = (uint64_t)v;
        op->es->stats.events_replayed++;
    }
    return rc;
}

static int send_snap_cas(load_op_t *op)
{
    keel_args_reset(&op->a);
    char head[64];
    int hn = snprintf(head, sizeof(head), "%u %llu\n", op->fold->schema,
                      (unsigned long long)op->version);
    keel_args_str(&op->a, "KEEL.CAS");
    keel_args_str(&op->a, op->snap_key);
    keel_args_u64(&op->a, op->snap_rev);
    keel_args_add(&op->a, head, (size_t)hn); /* then the state, in the same argument */
    if (op->a.err == 0 && keel_buf_unread(&op->state) > 0) {
        op->a.err =
            keel_buf_append(&op->a.bytes, keel_buf_rptr(&op->state), keel_buf_unread(&op->state));
        op->a.lens[op->a.n - 1] += keel_buf_unread(&op->state);
    }
    return send_args(op->es, &op->a, on_snap_cas, op);
}

static void on_load_range(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    load_op_t *op = ctx;
    char text[160];
    if (status != 0)
        return load_fail(op, status, "reading the events failed");
    if (r->type == KEEL_RESP_ERROR) {
        reply_text(text, sizeof(text), r);
        return load_fail(op, KEEL_EIO, text);
    }
    if (r->type != KEEL_RESP_ARRAY)
        return load_fail(op, KEEL_EPROTO, "unexpected XRANGE reply");
    for (size_t i = 0; i < r->elems_len; i++) {
        int rc = fold_entry(op, &r->elems[i]);
        if (rc != 0) {
            snprintf(text, sizeof(text), "event %llu: %s", (unsigned long long)op->version + 1,
                     rc == KEEL_ECORRUPT ? "versions are not dense" : keel_strerror(rc));
            return load_fail(op, rc, text);
        }
    }
    int rc = 0;
    if (r->elems_len == KEEL_ES_READ_PAGE_EVENTS) {
        if ((rc = send_range(op)) != 0)
            load_fail(op, rc, "could not read the events");
        return;
    }
    load_answer(op, 0, NULL);
    uint32_t every = op->es->cfg.snapshot_every_events;
    if (every == 0 || op->version < op->snap_version + every || op->version <= op->stored_version)
        return load_free(op);
    if ((rc = send_snap_cas(op)) != 0)
        load_free(op); /* a snapshot is an optimization: the load has answered */
}

static void on_snap_cas(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    load_op_t *op = ctx;
    if (status == 0 && r->type == KEEL_RESP_INT) {
        op->es->stats.snapshots_written++;
        return load_free(op);
    }
    /* -CONFLICT: another snapshot landed since we read; look at it (bounded). */
    if (status != 0 || r->type != KEEL_RESP_ERROR || r->str.len < 8 ||
        memcmp(r->str.ptr, "CONFLICT", 8) != 0 || op->tries++ == KEEL_ES_CONFLICT_RETRIES_MAX)
        return load_free(op);
    keel_args_reset(&op->a);
    keel_args_str(&op->a, "KEEL.GETV");
    keel_args_str(&op->a, op->snap_key);
    if (send_args(op->es, &op->a, on_snap_getv, op) != 0)
        load_free(op);
}

static void on_snap_getv(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    load_op_t *op = ctx;
    const keel_resp_value_t *value;
    if (status != 0 || parse_getv(r, &value, &op->snap_rev) != 0)
        return load_free(op);
    if (value) {
        const uint8_t *sp = memchr(value->str.ptr, ' ', value->str.len);
        const uint8_t *nl = memchr(value->str.ptr, '\n', value->str.len);
        int64_t stored = 0;
        /* Written only if newer: a stored snapshot at or past ours stays (whatever its
         * schema: a newer writer's schema wins). */
        if (sp && nl && nl > sp && keel_parse_i64(sp + 1, (size_t)(nl - sp - 1), &stored) == 0 &&
            (uint64_t)stored >= op->version)
            return load_free(op);
    }
    if (send_snap_cas(op) != 0)
        load_free(op);
}

/* A load also reads es:<agg>:ver (in the same round trip) for the hint, so that the
 * append a command handler makes after loading is one round trip. */
typedef struct hint_read {
    keel_es_t *es;
    char agg[KEEL_ES_AGG_BYTES_MAX + 1];
} hint_read_t;

static void on_hint_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    (void)cl;
    hint_read_t *hr = ctx;
    const keel_resp_value_t *value;
    uint64_t rev, version = 0;
    if (status == 0 && parse_getv(r, &value, &rev) == 0 &&
        (value == NULL || parse_u64(value, &version) == 0))
        hint_put(hr->es, hr->agg, version, rev);
    assert(hr->es->pending > 0);
    hr->es->pending--;
    free(hr);
}

static void read_hint(keel_es_t *es, const char *agg)
{
    char key[KEY_BYTES_MAX];
    hint_read_t *hr = es->hints ? malloc(sizeof(*hr)) : NULL;
    if (hr == NULL)
        return;
    hr->es = es;
    snprintf(hr->agg, sizeof(hr->agg), "%s", agg);
    key_of(key, sizeof(key), agg, ":ver");
    const char *argv[] = {"KEEL.GETV", key};
    int rc = es->cfg.request_timeout_ms > 0
                 ? keel_client_command_timeout(es->cl, 2, argv, NULL, es->cfg.request_timeout_ms,
                                               on_hint_read, hr)
                 : keel_client_command(es->cl, 2, argv, NULL, on_hint_read, hr);
    if (rc != 0)
        free(hr);
    else
        es->pending++;
}

int keel_es_load(keel_es_t *es, const char *agg, const keel_es_fold_t *fold, keel_es_load_fn cb,
                 void *ctx)
{
    assert(es != NULL && fold != NULL && fold->apply != NULL && cb != NULL);
    if (keel_es_name_valid(agg, strlen(agg)) != 0)
        return KEEL_EINVAL;
    load_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return KEEL_ENOMEM;
    *op = (load_op_t){.es = es, .cb = cb, .ctx = ctx, .fold = fold};
    snprintf(op->agg, sizeof(op->agg), "%s", agg);
    key_of(op->snap_key, sizeof(op->snap_key), agg, ":snap");
    keel_buf_init(&op->state, KEEL_ES_STATE_BYTES_MAX + KEEL_ES_EVENT_BYTES_MAX);
    keel_args_init(&op->a, CMD_ARGS_MAX, 0);
    keel_args_str(&op->a, "KEEL.GETV");
    keel_args_str(&op->a, op->snap_key);
    int rc = send_args(es, &op->a, on_load_snap, op);
    if (rc != 0) {
        keel_buf_free(&op->state);
        keel_args_free(&op->a);
        free(op);
        return rc;
    }
    es->pending++;
    read_hint(es, agg);
    return 0;
}
