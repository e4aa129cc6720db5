/* cache.c - the two-level cache: L1 (core/lru), L2 in keel server, pub/sub invalidation. */
#include "kit/cache.h"

#include "base/log.h"
#include "base/vec.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/*
 * L2 values carry a one-byte tag: 'v' and the value, or 't' alone (a tombstone). Anything
 * else under a cache key (another program wrote it) is treated as a miss and never
 * overwritten by a fill (fills are SET NX).
 */
#define TAG_VALUE 'v'
#define TAG_TOMB 't'
#define L2_KEY_BYTES (sizeof("cache:") + KEEL_CACHE_NAME_BYTES_MAX + KEEL_CACHE_KEY_BYTES_MAX + 1)
/* "<unix_ms> <instance> <key>" */
#define MESSAGE_BYTES_MAX (24 + KEEL_CACHE_INSTANCE_BYTES + KEEL_CACHE_KEY_BYTES_MAX)

typedef struct waiter {
    keel_cache_get_fn fn;
    void *ctx;
} waiter_t;

/* A key being read from L2 or loaded; the loader's handle. */
struct keel_cache_load {
    keel_list_t link; /* in the cache's loads */
    keel_cache_t *c;  /* NULL once answered: keel_cache_load_done() then only frees */
    char key[KEEL_CACHE_KEY_BYTES_MAX + 1];
    size_t key_len;
    uint64_t epoch;  /* the feed's epoch when it started */
    bool dirty;      /* an invalidation overtook it: fill no L1 */
    bool tombstoned; /* L2 held a tombstone: fill no L2 either */
    bool loading;    /* handed to the loader */
    bool detached;   /* out of the pending map: an invalidation overtook it */
    waiter_t *w;
    size_t n, cap;
};

/* An invalidation: the tombstone, then PUBLISH. */
typedef struct op {
    keel_cache_t *c;
    keel_cache_done_fn fn;
    void *ctx;
    char msg[MESSAGE_BYTES_MAX];
    size_t msg_len;
} op_t;

static uint64_t feed_epoch(const keel_cache_t *c);

static void inc(keel_counter_t *m)
{
    if (m != NULL)
        keel_counter_inc(m);
}

static size_t l2_key(const keel_cache_t *c, const char *key, size_t key_len, char *out)
{
    size_t nl = strlen(c->name);
    memcpy(out, "cache:", 6);
    memcpy(out + 6, c->name, nl);
    out[6 + nl] = ':';
    memcpy(out + 7 + nl, key, key_len);
    return 7 + nl + key_len;
}

static bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= KEEL_CACHE_NAME_BYTES_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

/* ---- answering gets --------------------------------------------------------------------- */

static void pending_free(keel_cache_load_t *p)
{
    free(p->w);
    free(p);
}

/* Answers every waiter of p and ends it (unless a loader still holds it: then it is only
 * detached from the cache). */
static void finish(keel_cache_t *c, keel_cache_load_t *p, int status, const uint8_t *val,
                   size_t len)
{
    if (!p->detached)
        keel_map_del(&c->pending, p->key, p->key_len, NULL);
    keel_list_remove(&p->link);
    waiter_t *w = p->w;
    size_t n = p->n;
    p->w = NULL;
    p->n = p->cap = 0;
    for (size_t i = 0; i < n; i++)
        w[i].fn(c, w[i].ctx, status, val, len);
    free(w);
    p->c = NULL;
    if (!p->loading)
        pending_free(p);
}

static bool l1_usable(const keel_cache_t *c, const keel_cache_load_t *p)
{
    return c->live && !p->dirty && p->epoch == feed_epoch(c);
}

static void l1_fill(keel_cache_t *c, keel_cache_load_t *p, const uint8_t *val, size_t len)
{
    if (l1_usable(c, p))
        keel_lru_put(&c->l1, p->key, p->key_len, val, len, keel_loop_now_ms(c->loop),
                     c->cfg.l1_ttl_ms);
}

static void on_fill(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_cache_t *c = ctx;
    (void)cl;
    if (status != 0 || r->type == KEEL_RESP_ERROR) {
        c->stats.l2_errors++;
        inc(c->m_l2_errors);
    } else if (r->type == KEEL_RESP_NIL) {
        c->stats.fills_refused++; /* something newer (a set, a tombstone) is there */
    } else {
        c->stats.fills++;
    }
}

void keel_cache_load_done(keel_cache_load_t *p, int status, const void *val, size_t len)
{
    p->loading = false;
    keel_cache_t *c = p->c;
    if (c == NULL) { /* the cache closed while the loader ran: answered already */
        pending_free(p);
        return;
    }
    if (status == 0 && len > KEEL_CACHE_VALUE_BYTES_MAX)
        status = KEEL_ETOOBIG;
    if (status != 0) {
        if (status != KEEL_ENOTFOUND) {
            c->stats.load_errors++;
            inc(c->m_load_errors);
        }
        finish(c, p, status, NULL, 0);
        return;
    }
    if (!p->tombstoned && !p->dirty) {
        char k[L2_KEY_BYTES], px[24];
        size_t kl = l2_key(c, p->key, p->key_len, k);
        uint8_t *tagged = malloc(len + 1);
        if (tagged != NULL) {
            tagged[0] = TAG_VALUE;
            memcpy(tagged + 1, val, len);
            snprintf(px, sizeof(px), "%llu", (unsigned long long)c->cfg.l2_ttl_ms);
            const char *argv[] = {"SET", k, (const char *)tagged, "NX", "PX", px};
            size_t lens[] = {3, kl, len + 1, 2, 2, strlen(px)};
            if (keel_client_command_timeout(c->cmd, 6, argv, lens, c->cfg.timeout_ms, on_fill, c) !=
                0) {
                c->stats.l2_errors++;
                inc(c->m_l2_errors);
            }
            free(tagged);
        }
    }
    l1_fill(c, p, val, len);
    finish(c, p, 0, val, len);
}

static void load(keel_cache_t *c, keel_cache_load_t *p)
{
    c->stats.misses++;
    inc(c->m_misses);
    if (c->cfg.load == NULL) {
        finish(c, p, KEEL_ENOTFOUND, NULL, 0);
        return;
    }
    c->stats.loads++;
    inc(c->m_loads);
    p->loading = true;
    c->cfg.load(c, p, p->key, c->cfg.data);
}

static void on_l2_get(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_cache_load_t *p = ctx;
    keel_cache_t *c = p->c;
    (void)cl;
    if (c == NULL || c->closing) {
        if (c != NULL)
            finish(c, p, KEEL_ECANCELED, NULL, 0);
        return;
    }
    if (status != 0 || (r->type != KEEL_RESP_BULK && r->type != KEEL_RESP_NIL)) {
        /* keel server out of reach: the source answers, nothing is filled in L2 */
        c->stats.l2_errors++;
        inc(c->m_l2_errors);
        p->tombstoned = true;
        load(c, p);
        return;
    }
    if (r->type == KEEL_RESP_BULK && r->str.len >= 1 && r->str.ptr[0] == TAG_VALUE) {
        c->stats.l2_hits++;
        inc(c->m_l2_hits);
        const uint8_t *v = (const uint8_t *)r->str.ptr + 1;
        l1_fill(c, p, v, r->str.len - 1);
        finish(c, p, 0, v, r->str.len - 1);
        return;
    }
    if (r->type == KEEL_RESP_BULK) /* a tombstone, or a value not ours */
        p->tombstoned = true;
    load(c, p);
}

int keel_cache_get(keel_cache_t *c, const char *key, const uint8_t **val, size_t *len,
                   keel_cache_get_fn fn, void *ctx)
{
    size_t kl = strlen(key);
    if (kl == 0 || kl > KEEL_CACHE_KEY_BYTES_MAX || fn == NULL)
        return KEEL_EINVAL;
    if (c->closing)
        return KEEL_ECLOSED;
    if (c->live && keel_lru_get(&c->l1, key, kl, keel_loop_now_ms(c->loop), val, len) == 0) {
        c->stats.l1_hits++;
        inc(c->m_l1_hits);
        return 1;
    }
    void **slot = keel_map_get(&c->pending, key, kl);
    keel_cache_load_t *p = slot ? *slot : NULL;
    if (p != NULL) {
        if (p->n >= KEEL_CACHE_WAITERS_MAX)
            return KEEL_EFULL;
        c->stats.waits++;
    } else {
        if ((p = calloc(1, sizeof(*p))) == NULL)
            return KEEL_ENOMEM;
        keel_list_init(&p->link);
        p->c = c;
        memcpy(p->key, key, kl + 1);
        p->key_len = kl;
        p->epoch = feed_epoch(c);
        int rc = keel_map_put(&c->pending, key, kl, p, NULL);
        if (rc != 0) {
            free(p);
            return rc;
        }
        keel_list_insert_tail(&c->loads, &p->link);
        char k[L2_KEY_BYTES];
        size_t lens[2] = {3, l2_key(c, key, kl, k)};
        const char *argv[] = {"GET", k};
        rc = keel_client_command_timeout(c->cmd, 2, argv, lens, c->cfg.timeout_ms, on_l2_get, p);
        if (rc != 0) {
            keel_map_del(&c->pending, key, kl, NULL);
            keel_list_remove(&p->link);
            free(p);
            return rc;
        }
    }
    if (keel_vec_grow(&p->w, &p->cap, p->n + 1, sizeof(*p->w), 2) != 0)
        return KEEL_ENOMEM; /* a fresh p has its GET out: it ends, with no waiter, then */
    p->w[p->n++] = (waiter_t){fn, ctx};
    return 0;
}

/* ---- set and invalidate ----------------------------------------------------------------- */

/* A change of key made here, or an invalidation of it from anywhere (this instance's own
 * included: harmless). A read or load under way may carry the old value: it still answers
 * the gets that started before (they may see the old value), fills no L1, and leaves the
 * pending map so that a get from now on starts afresh. */
static void drop_local(keel_cache_t *c, const char *key, size_t kl)
{
    keel_lru_del(&c->l1, key, kl);
    void *old;
    if (keel_map_del(&c->pending, key, kl, &old) == 0) {
        keel_cache_load_t *p = old;
        p->dirty = true;
        p->detached = true;
    }
}

static void op_end(op_t *o, int status)
{
    if (o->fn)
        o->fn(o->c, o->ctx, status);
    free(o);
}

static void on_published(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    op_t *o = ctx;
    (void)cl;
    if (status == 0 && r->type == KEEL_RESP_ERROR)
        status = KEEL_EIO;
    if (status == 0) {
        o->c->stats.invalidations_sent++;
        inc(o->c->m_inv_sent);
    }
    op_end(o, status);
}

static void on_l2_written(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    op_t *o = ctx;
    keel_cache_t *c = o->c;
    (void)cl;
    if (status == 0 && r->type == KEEL_RESP_ERROR)
        status = KEEL_EIO;
    if (status != 0) {
        c->stats.l2_errors++;
        inc(c->m_l2_errors);
        op_end(o, status);
        return;
    }
    /* Now that L2 holds the change, tell the others: a get they start after the message
     * reads the new L2 (keel's reads are linearizable). */
    const char *argv[] = {"PUBLISH", c->channel, o->msg};
    size_t lens[] = {7, strlen(c->channel), o->msg_len};
    int rc = keel_client_command_timeout(c->cmd, 3, argv, lens, c->cfg.timeout_ms, on_published, o);
    if (rc != 0)
        op_end(o, rc);
}

int keel_cache_invalidate(keel_cache_t *c, const char *key, keel_cache_done_fn fn, void *ctx)
{
    size_t kl = strlen(key);
    if (kl == 0 || kl > KEEL_CACHE_KEY_BYTES_MAX)
        return KEEL_EINVAL;
    if (c->closing)
        return KEEL_ECLOSED;
    op_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return KEEL_ENOMEM;
    *o = (op_t){.c = c, .fn = fn, .ctx = ctx};
    o->msg_len = (size_t)snprintf(o->msg, sizeof(o->msg), "%llu %s ",
                                  (unsigned long long)keel_clock_unix_ms(), c->instance);
    memcpy(o->msg + o->msg_len, key, kl);
    o->msg_len += kl;
    char k[L2_KEY_BYTES], px[24];
    snprintf(px, sizeof(px), "%llu", (unsigned long long)c->cfg.tombstone_ms);
    const char tomb = TAG_TOMB;
    const char *argv[] = {"SET", k, &tomb, "PX", px};
    size_t lens[] = {3, l2_key(c, key, kl, k), 1, 2, strlen(px)};
    int rc =
        keel_client_command_timeout(c->cmd, 5, argv, lens, c->cfg.timeout_ms, on_l2_written, o);
    if (rc != 0) {
        free(o);
        return rc;
    }
    drop_local(c, key, kl);
    return 0;
}

/* ---- the invalidation feed -------------------------------------------------------------- */

/* The feed's epoch: bumped whenever it stops being subscribed (messages may have been lost),
 * so a read that started before cannot fill L1 after. */
static uint64_t feed_epoch(const keel_cache_t *c)
{
    return c->stats.feed_resets;
}

static bool bulk_is(const keel_resp_value_t *v, const char *s)
{
    size_t n = strlen(s);
    return v->type == KEEL_RESP_BULK && v->str.len == n &&
           strncasecmp((const char *)v->str.ptr, s, n) == 0;
}

static void on_message(keel_cache_t *c, const char *m, size_t n)
{
    /* "<unix_ms> <instance> <key>" */
    const char *sp1 = memchr(m, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - m)) : NULL;
    if (sp2 == NULL || (size_t)(m + n - (sp2 + 1)) == 0 ||
        (size_t)(m + n - (sp2 + 1)) > KEEL_CACHE_KEY_BYTES_MAX) {
        keel_log_warn("cache: malformed invalidation ignored", KF_STR("cache", c->name),
                      KF_INT("bytes", n));
        return;
    }
    c->stats.invalidations_received++;
    inc(c->m_inv_recv);
    drop_local(c, sp2 + 1, (size_t)(m + n - (sp2 + 1)));
    uint64_t sent = 0;
    for (const char *p = m; p < sp1 && *p >= '0' && *p <= '9'; p++)
        sent = sent * 10 + (uint64_t)(*p - '0');
    uint64_t now = keel_clock_unix_ms();
    if (c->m_lag != NULL && sent > 0 && now >= sent)
        keel_histogram_observe(c->m_lag, (double)(now - sent) / 1000.0);
}

static void on_push(keel_client_t *cl, const keel_resp_value_t *r, void *data)
{
    keel_cache_t *c = data;
    (void)cl;
    if (r->type != KEEL_RESP_ARRAY || r->elems_len != 3)
        return;
    if (bulk_is(&r->elems[0], "subscribe")) {
        if (!c->live)
            keel_log_info("cache: invalidation feed subscribed; L1 in use",
                          KF_STR("cache", c->name), KF_STR("node", keel_client_addr(c->feed)));
        c->live = true;
    } else if (bulk_is(&r->elems[0], "message") && r->elems[2].type == KEEL_RESP_BULK) {
        on_message(c, (const char *)r->elems[2].str.ptr, r->elems[2].str.len);
    }
}

static void on_feed_event(keel_client_t *cl, int event, int err, void *data)
{
    keel_cache_t *c = data;
    (void)cl;
    if (event != KEEL_CLIENT_LOST || !c->live)
        return;
    c->live = false;
    c->stats.feed_resets++;
    inc(c->m_resets);
    keel_lru_clear(&c->l1);
    keel_log_warn("cache: invalidation feed lost; L1 cleared and bypassed until resubscribed",
                  KF_STR("cache", c->name), KF_STR("error", keel_strerror(err)));
}

/* ---- life ------------------------------------------------------------------------------- */

keel_cache_config_t keel_cache_config_default(const char *name, const char *seeds)
{
    return (keel_cache_config_t){
        .name = name,
        .seeds = seeds,
        .l1_bytes_max = 64u << 20,
        .l1_entries_max = 1000000,
        .l1_ttl_ms = 10000,
        .l2_ttl_ms = 300000,
        .tombstone_ms = 2000,
        .timeout_ms = 1000,
    };
}

static void metrics_init(keel_cache_t *c, keel_metrics_t *m)
{
    char l[KEEL_METRICS_LABELS_BYTES_MAX];
#define LBL(extra) (snprintf(l, sizeof(l), "cache=\"%s\"%s", c->name, extra), l)
    const char *gets = "Cache gets by where they were answered (source: the loader).";
    c->m_l1_hits = keel_metrics_counter(m, "keel_cache_gets_total", gets, LBL(",level=\"l1\""));
    c->m_l2_hits = keel_metrics_counter(m, "keel_cache_gets_total", gets, LBL(",level=\"l2\""));
    c->m_misses = keel_metrics_counter(m, "keel_cache_gets_total", gets, LBL(",level=\"source\""));
    c->m_loads = keel_metrics_counter(m, "keel_cache_loads_total",
                                      "Loader calls (one per key at a time).", LBL(""));
    c->m_load_errors =
        keel_metrics_counter(m, "keel_cache_load_errors_total", "Loader failures.", LBL(""));
    c->m_l2_errors = keel_metrics_counter(m, "keel_cache_l2_errors_total",
                                          "L2 (keel server) requests that failed.", LBL(""));
    const char *inv = "Invalidations broadcast and received.";
    c->m_inv_sent =
        keel_metrics_counter(m, "keel_cache_invalidations_total", inv, LBL(",dir=\"sent\""));
    c->m_inv_recv =
        keel_metrics_counter(m, "keel_cache_invalidations_total", inv, LBL(",dir=\"received\""));
    c->m_resets = keel_metrics_counter(m, "keel_cache_feed_resets_total",
                                       "Invalidation feed losses (L1 cleared each time).", LBL(""));
    c->m_lag = keel_metrics_histogram(
        m, "keel_cache_invalidation_lag_seconds",
        "From an invalidation's broadcast to its arrival (wall clocks).", LBL(""), NULL, 0);
#undef LBL
}

static int client_start(keel_cache_t *c, keel_client_t **out, bool feed, keel_errmsg_t *msg)
{
    char text[1024];
    if (strlen(c->cfg.seeds) >= sizeof(text))
        return keel_errf(msg, KEEL_EINVAL, "cache: seed list over %zu bytes", sizeof(text) - 1);
    strcpy(text, c->cfg.seeds);
    keel_client_config_t cc = keel_client_config_default();
    int rc = keel_client_config_seeds(&cc, text, "cache: seeds", msg);
    if (rc != 0)
        return rc;
    cc.request_timeout_ms = c->cfg.timeout_ms;
    cc.seed = c->cfg.seed + (feed ? 1 : 0);
    cc.first_seed = (size_t)(c->cfg.seed % cc.seeds_n);
    cc.data = c; /* client_closed finds the cache by it */
    if (feed) {
        cc.on_push = on_push;
        cc.on_event = on_feed_event;
    }
    keel_client_t *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return KEEL_ENOMEM;
    if ((rc = keel_client_init(cl, c->loop, &cc, msg)) != 0) {
        free(cl);
        return rc;
    }
    *out = cl;
    return 0;
}

static void client_closed(keel_client_t *cl);
static void one_closed(keel_cache_t *c);

/* Closes a client of a cache whose init failed: its memory is freed later, the cache's is
 * the caller's at once. */
static void abandon(keel_client_t *cl)
{
    cl->cfg.data = NULL;
    keel_client_close(cl, client_closed);
}

int keel_cache_init(keel_cache_t *c, keel_loop_t *loop, const keel_cache_config_t *cfg,
                    keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    if (cfg->name == NULL || !name_valid(cfg->name))
        return keel_errf(msg, KEEL_EINVAL, "cache: name must be 1..%u of [A-Za-z0-9_.-]",
                         KEEL_CACHE_NAME_BYTES_MAX - 1);
    if (cfg->seeds == NULL)
        return keel_errf(msg, KEEL_EINVAL, "cache: no seeds");
    if (cfg->l2_ttl_ms == 0 || cfg->tombstone_ms == 0 || cfg->timeout_ms == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "cache: l2_ttl_ms, tombstone_ms, timeout_ms must be > 0");
    c->loop = loop;
    c->cfg = *cfg;
    strcpy(c->name, cfg->name);
    c->cfg.name = c->name;
    snprintf(c->channel, sizeof(c->channel), "keel.cache.%s", c->name);
    if (c->cfg.seed == 0)
        c->cfg.seed = keel_clock_unix_ms() * 1000003u ^ (uint64_t)getpid() << 32 ^ (uintptr_t)c;
    keel_rand_t r;
    keel_rand_seed(&r, c->cfg.seed);
    snprintf(c->instance, sizeof(c->instance), "%016llx", (unsigned long long)keel_rand_u64(&r));
    keel_lru_config_t lc = {cfg->l1_bytes_max, cfg->l1_entries_max, keel_rand_u64(&r)};
    int rc = keel_lru_init(&c->l1, &lc);
    if (rc != 0)
        return keel_errf(msg, rc, "cache: L1 limits must be > 0");
    keel_list_init(&c->loads);
    if ((rc = keel_map_init(&c->pending, 64, KEEL_CACHE_PENDING_MAX, keel_rand_u64(&r))) != 0) {
        keel_lru_free(&c->l1);
        return rc;
    }
    if (cfg->metrics != NULL)
        metrics_init(c, cfg->metrics);
    if ((rc = client_start(c, &c->cmd, false, msg)) != 0)
        goto fail;
    if ((rc = client_start(c, &c->feed, true, msg)) != 0) {
        abandon(c->cmd);
        goto fail;
    }
    const char *ch[] = {c->channel};
    if ((rc = keel_client_subscribe(c->feed, 1, ch)) != 0) {
        abandon(c->cmd);
        abandon(c->feed);
        goto fail;
    }
    return 0;
fail:
    keel_map_free(&c->pending, NULL);
    keel_lru_free(&c->l1);
    return rc;
}

bool keel_cache_live(const keel_cache_t *c)
{
    return c->live;
}

const keel_cache_stats_t *keel_cache_stats(const keel_cache_t *c)
{
    return &c->stats;
}

static void one_closed(keel_cache_t *c)
{
    if (--c->closes_left > 0)
        return;
    keel_map_free(&c->pending, NULL);
    keel_lru_free(&c->l1);
    if (c->closed)
        c->closed(c);
}

static void client_closed(keel_client_t *cl)
{
    keel_cache_t *c = cl->cfg.data;
    free(cl);
    if (c != NULL && c->closing)
        one_closed(c);
}

void keel_cache_close(keel_cache_t *c, void (*closed)(keel_cache_t *c))
{
    if (c->closing)
        return;
    c->closing = true;
    c->closed = closed;
    c->live = false;
    c->closes_left = 2; /* the two clients */
    /* Gets waiting for L2 end with KEEL_ECANCELED inside the clients' close; those with a
     * loader running end now and are left for keel_cache_load_done() to free. */
    keel_client_close(c->cmd, client_closed);
    keel_client_close(c->feed, client_closed);
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &c->loads)
    finish(c, KEEL_LIST_ENTRY(it, keel_cache_load_t, link), KEEL_ECANCELED, NULL, 0);
}
