/* registry_http.c - the registry's Consul-shaped HTTP API on the admin listener, with
   blocking queries that share one wake-up per service. */
#include "server/server_int.h"

#include "base/map.h"
#include "core/registry.h"
#include "base/num.h"
#include "proto/reg_json.h"
#include "proto/resp.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Routes (docs/registry.md), after Consul's agent, catalog and health endpoints:
 *   PUT /v1/agent/service/register            Consul's registration JSON (proto/reg_json.h)
 *   PUT /v1/agent/service/deregister/:id
 *   PUT /v1/agent/check/pass|warn|fail/:check_id?note=   check_id "service:<id>" or "<id>"
 *   GET /v1/catalog/services                  {"name": ["tag", ...], ...}
 *   GET /v1/health/service/:name[?passing][&tag=t]   [{"Node", "Service", "Checks"}, ...]
 * Every answer carries X-Keel-Index: the registry's index (catalog), the service's (health)
 * or the one a write made (register).
 *
 * Writes go through the node as a client connection's do (keel_node_write, the KEEL.REG.WRITE
 * entry). Reads are linearizable: a ReadIndex round (keel_node_read of KEEL.REG.READ INDEX,
 * also on a follower) and then the answer from this node's registry, which has applied at
 * least that far; ?stale skips the round and answers from what this node has applied.
 *
 * Blocking queries (?index=N&wait=30s): when the index the answer would carry is still N,
 * the request waits on its service's wait list (the catalog has one of its own). After each
 * pass of applied entries (keel__srv_reg_on_applied) every list whose service index moved is
 * woken once: its waiters are answered from the state now, one rendering per filter shared by
 * all the waiters that asked for it. So a change costs one comparison per watched service and
 * one JSON rendering per filter, not one query per watcher. A waiter whose wait ends is
 * answered with the same index (a tick every REG_WAIT_TICK_MS looks for them); one whose
 * client goes away leaves its list at once. KEEL.REG WAIT (the same over RESP, below) waits
 * on the same lists, its answer rendered as KEEL.REG INSTANCES by core/kv.
 */
#define REG_WAIT_MS_DEFAULT (5u * 60u * 1000u)    /* Consul's default wait */
#define REG_WAIT_MS_MAX (10u * 60u * 1000u)       /* Consul's cap; longer asks are cut */
#define REG_WAITERS_MAX KEEL_SRV_REG_WATCHERS_MAX /* blocked queries on one node */
#define REG_WAIT_TICK_MS 100u                     /* a wait ends at most this late */
#define REG_NAME_BYTES_MAX 512u                   /* a decoded path segment or tag */

enum { HQ_HEALTH, HQ_CATALOG, HQ_REGISTER, HQ_DEREGISTER, HQ_CHECK, HQ_RESP };

typedef struct waitlist {
    keel_list_t waiters; /* hq_t.link */
    size_t n;
    uint64_t index; /* the index every waiter on it waits to see move */
    int catalog;
    size_t name_len;
    char name[];
} waitlist_t;

typedef struct hq {
    keel_list_t link; /* in its waitlist */
    keel_list_t all;  /* in reg_http.all (the tick's walk) */
    waitlist_t *list;
    server_t *s;
    keel_http_req_t *req;       /* an HTTP query, or */
    keel_resp_deferred_t *slot; /* KEEL.REG WAIT's reply (HQ_RESP), a barrier slot */
    int kind;
    int has_index, passing, has_tag;
    uint64_t index;
    uint64_t deadline_ms; /* loop time */
    uint64_t wait_ms;
    size_t name_len, tag_len;
    char name[REG_NAME_BYTES_MAX + 1];
    char tag[REG_NAME_BYTES_MAX + 1];
} hq_t;

struct reg_http {
    server_t *s;
    keel_map_t lists; /* service name -> waitlist_t */
    waitlist_t *catalog;
    keel_list_t all;
    size_t waiters_n;
    uint64_t seen_index;
    keel_timer_t tick;
    int tick_inited, tick_on, closing;
    keel_counter_t *m_wakeups, *m_woken, *m_timeouts;
};

static void hq_free(hq_t *q)
{
    free(q);
}

/* ---- answers -------------------------------------------------------------------------- */

static int respond(keel_http_req_t *req, int status, const char *body, size_t len, int has_index,
                   uint64_t index)
{
    char ix[32];
    keel_http_header_t h[2] = {
        {.name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16},
        {.name = "X-Keel-Index", .name_len = 12, .value = ix, .value_len = 0},
    };
    h[1].value_len = (size_t)snprintf(ix, sizeof(ix), "%llu", (unsigned long long)index);
    return keel_http_respond(req, status, h, has_index ? 2 : 1, body, len);
}

/* {"error": {"code": status, "message": text}} (ARCHITECTURE.md), the text JSON-escaped:
 * it may quote a client's bytes. */
static void respond_error(keel_http_req_t *req, int status, const char *text)
{
    json_t *j = json_pack("{s:{s:i,s:o}}", "error", "code", status, "message",
                          keel__srv_reg_jstr((const uint8_t *)text, strlen(text)));
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (body)
        keel_http_respond_body(req, status, "application/json", body, strlen(body));
    else
        keel_http_respond_error(req, status, "out of memory");
    free(body);
    json_decref(j);
}

/* An error for either kind of query: HTTP status and JSON, or a RESP error. */
static void q_error(const hq_t *q, int status, const char *text)
{
    if (q->slot == NULL) {
        respond_error(q->req, status, text);
        return;
    }
    keel_buf_t *out = keel_resp_deferred_out(q->slot);
    keel_resp_deferred_done(q->slot, keel_resp_write_errorf(out, "ERR keel: %s", text));
}

static uint64_t now_ms(server_t *s)
{
    return s->node ? keel_node_read_now_ms(s->node) : s->kv.kv.time_ms;
}

static const keel_reg_t *registry(server_t *s)
{
    return s->kv.kv.reg;
}

/* The index an answer carries now: never 0, which Consul's clients take as "no index"
 * (an empty registry answers 1; every change is at a Raft index above 1). */
static uint64_t current_index(server_t *s, const char *name, size_t name_len, int catalog)
{
    const keel_reg_t *reg = registry(s);
    uint64_t ix = reg == NULL ? 0
                  : catalog   ? reg->index
                              : keel_reg_service_index(reg, (const uint8_t *)name, name_len);
    return ix ? ix : 1;
}

static char *render_health(server_t *s, const hq_t *q)
{
    const keel_reg_t *reg = registry(s);
    const keel_reg_service_t *svc =
        reg ? keel_reg_service(reg, (const uint8_t *)q->name, q->name_len) : NULL;
    uint64_t now = now_ms(s);
    json_t *arr = json_array();
    for (size_t i = 0; svc && i < svc->n; i++) {
        const keel_reg_instance_t *in = svc->inst[i];
        if (!keel_reg_alive(in, now) || (q->passing && in->status != KEEL_REG_PASSING) ||
            (q->has_tag && !keel_reg_has_tag(in, (const uint8_t *)q->tag, q->tag_len)))
            continue;
        json_array_append_new(arr, keel__srv_reg_health_entry(s, in));
    }
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return text;
}

/* KEEL.REG WAIT's answer: what KEEL.REG INSTANCES answers, read from this node's store as
 * a stale read is (conn.c's read_stale), into out. */
static int render_resp(server_t *s, const hq_t *q, keel_buf_t *out)
{
    static const char cmd[] = "KEEL.REG.READ", sub[] = "INSTANCES";
    const uint8_t *argv[6] = {(const uint8_t *)cmd, (const uint8_t *)sub, (const uint8_t *)q->name};
    size_t lens[6] = {sizeof(cmd) - 1, sizeof(sub) - 1, q->name_len};
    int argc = 3;
    if (q->passing) {
        argv[argc] = (const uint8_t *)"PASSING";
        lens[argc++] = 7;
    }
    if (q->has_tag) {
        argv[argc] = (const uint8_t *)"TAG";
        lens[argc++] = 3;
        argv[argc] = (const uint8_t *)q->tag;
        lens[argc++] = q->tag_len;
    }
    return keel_kv_read_at(&s->kv.kv, now_ms(s), argc, argv, lens, out);
}

/* Answers a read now from this node's registry (and frees q). */
static void answer_read(hq_t *q)
{
    server_t *s = q->s;
    if (q->slot != NULL) {
        keel_resp_deferred_done(q->slot, render_resp(s, q, keel_resp_deferred_out(q->slot)));
        hq_free(q);
        return;
    }
    uint64_t ix = current_index(s, q->name, q->name_len, q->kind == HQ_CATALOG);
    char *body =
        q->kind == HQ_CATALOG ? keel__srv_reg_render_catalog(s, now_ms(s)) : render_health(s, q);
    if (body)
        respond(q->req, 200, body, strlen(body), 1, ix);
    else
        respond_error(q->req, 500, "cannot render the answer");
    free(body);
    hq_free(q);
}

/* Waiters gone before their answer: an HTTP client that left, a RESP slot orphaned. */
static int q_gone(const hq_t *q)
{
    return q->slot ? keel_resp_deferred_orphaned(q->slot) : keel_http_req_gone(q->req);
}

/* ---- wait lists --------------------------------------------------------------------------- */

static void tick_fn(keel_timer_t *t, void *data);

/* Takes q off its list (and the list off the map when it empties). */
static void unblock(reg_http_t *rh, hq_t *q)
{
    waitlist_t *l = q->list;
    keel_list_remove(&q->link);
    keel_list_remove(&q->all);
    q->list = NULL;
    l->n--;
    rh->waiters_n--;
    if (q->req)
        keel_http_req_on_gone(q->req, NULL, NULL);
    if (l->n == 0) {
        if (l->catalog) {
            rh->catalog = NULL;
        } else {
            void *old = NULL;
            keel_map_del(&rh->lists, l->name, l->name_len, &old);
        }
        free(l);
    }
    if (rh->waiters_n == 0 && rh->tick_on) {
        keel_timer_stop(&rh->tick);
        rh->tick_on = 0;
    }
}

/*
 * Wakes every waiter of a list whose index moved: one rendering per filter (the unfiltered
 * answer and the ?passing one are shared; a ?tag answer is rendered per tag asked), then
 * each waiter gets the same bytes.
 */
static void wake_list(reg_http_t *rh, waitlist_t *l)
{
    server_t *s = rh->s;
    uint64_t ix = current_index(s, l->name, l->name_len, l->catalog);
    char *shared[2] = {NULL, NULL};
    keel_buf_t resp[2]; /* KEEL.REG WAIT's shared answers */
    int resp_ok[2] = {-1, -1};
    keel_buf_init(&resp[0], 0);
    keel_buf_init(&resp[1], 0);
    if (rh->m_wakeups)
        keel_counter_inc(rh->m_wakeups);
    while (!keel_list_empty(&l->waiters)) {
        hq_t *q = KEEL_LIST_ENTRY(keel_list_first(&l->waiters), hq_t, link);
        int last = l->n == 1;
        unblock(rh, q); /* frees l with the last waiter */
        if (rh->m_woken)
            keel_counter_inc(rh->m_woken);
        if (q->slot != NULL && !q->has_tag) {
            if (resp_ok[q->passing] < 0)
                resp_ok[q->passing] = render_resp(s, q, &resp[q->passing]);
            keel_buf_t *b = &resp[q->passing];
            int rc = resp_ok[q->passing];
            if (rc == 0)
                rc = keel_buf_append(keel_resp_deferred_out(q->slot), keel_buf_rptr(b),
                                     keel_buf_unread(b));
            keel_resp_deferred_done(q->slot, rc);
            hq_free(q);
            if (last)
                break;
            continue;
        }
        if (q->slot != NULL) {
            answer_read(q);
            if (last)
                break;
            continue;
        }
        char *body, *own = NULL;
        if (q->kind == HQ_CATALOG) {
            if (shared[0] == NULL)
                shared[0] = keel__srv_reg_render_catalog(s, now_ms(s));
            body = shared[0];
        } else if (!q->has_tag) {
            if (shared[q->passing] == NULL)
                shared[q->passing] = render_health(s, q);
            body = shared[q->passing];
        } else {
            body = own = render_health(s, q);
        }
        if (body)
            respond(q->req, 200, body, strlen(body), 1, ix);
        else
            respond_error(q->req, 500, "cannot render the answer");
        free(own);
        hq_free(q);
        if (last)
            break;
    }
    free(shared[0]);
    free(shared[1]);
    keel_buf_free(&resp[0]);
    keel_buf_free(&resp[1]);
}

static void on_gone(keel_http_req_t *req, void *data)
{
    hq_t *q = data;
    reg_http_t *rh = q->s->reg_http;
    unblock(rh, q);
    keel_http_respond(req, 200, NULL, 0, NULL, 0); /* frees the request */
    hq_free(q);
}

/* Blocks q on its list; the list must wait on index ix (a stale list is woken first). */
static void block(reg_http_t *rh, hq_t *q, uint64_t ix)
{
    server_t *s = rh->s;
    if (q_gone(q)) { /* left during the read round: no hook would fire */
        answer_read(q);
        return;
    }
    if (rh->waiters_n + s->regfeeds_n >= REG_WAITERS_MAX) { /* feeds are watchers too */
        char text[128];
        snprintf(text, sizeof(text),
                 "too many blocked queries on this node (watchers_max %u); retry without index",
                 REG_WAITERS_MAX);
        q_error(q, 429, text);
        hq_free(q);
        return;
    }
    int catalog = q->kind == HQ_CATALOG;
    waitlist_t *l = catalog ? rh->catalog : NULL;
    void **slot = catalog ? NULL : keel_map_get(&rh->lists, q->name, q->name_len);
    if (slot)
        l = *slot;
    if (l != NULL && l->index != ix) {
        wake_list(rh, l); /* an apply moved it before its wake-up pass ran */
        l = NULL;
    }
    if (l == NULL) {
        l = calloc(1, sizeof(*l) + q->name_len + 1);
        if (l == NULL ||
            (!catalog && keel_map_put(&rh->lists, q->name, q->name_len, l, NULL) < 0)) {
            free(l);
            q_error(q, 503, "out of memory for the wait list");
            hq_free(q);
            return;
        }
        keel_list_init(&l->waiters);
        l->index = ix;
        l->catalog = catalog;
        l->name_len = q->name_len;
        memcpy(l->name, q->name, q->name_len);
        if (catalog)
            rh->catalog = l;
    }
    keel_list_insert_tail(&l->waiters, &q->link);
    keel_list_insert_tail(&rh->all, &q->all);
    l->n++;
    rh->waiters_n++;
    q->list = l;
    q->deadline_ms = keel_loop_now_ms(&s->loop) + q->wait_ms;
    if (q->req)
        keel_http_req_on_gone(q->req, on_gone, q);
    if (!rh->tick_on && rh->tick_inited) {
        keel_timer_start(&rh->tick, REG_WAIT_TICK_MS, REG_WAIT_TICK_MS, tick_fn, rh);
        rh->tick_on = 1;
    }
}

/* Waits ended: answered with the state now (the same index, or a newer one not yet woken). */
static void tick_fn(keel_timer_t *t, void *data)
{
    reg_http_t *rh = data;
    uint64_t now = keel_loop_now_ms(&rh->s->loop);
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &rh->all)
    {
        hq_t *q = KEEL_LIST_ENTRY(it, hq_t, all);
        if (q->deadline_ms > now && !(q->slot && keel_resp_deferred_orphaned(q->slot)))
            continue;
        unblock(rh, q); /* tmp is another waiter: still linked */
        if (rh->m_timeouts)
            keel_counter_inc(rh->m_timeouts);
        answer_read(q);
    }
}

/* Reads: block, or answer now. */
static void answer_or_block(hq_t *q)
{
    server_t *s = q->s;
    reg_http_t *rh = s->reg_http;
    uint64_t ix = current_index(s, q->name, q->name_len, q->kind == HQ_CATALOG);
    if (q->has_index && q->index == ix && q->wait_ms > 0 && !rh->closing)
        block(rh, q, ix);
    else
        answer_read(q);
}

void keel__srv_reg_on_applied(server_t *s)
{
    reg_http_t *rh = s->reg_http;
    if (rh == NULL || rh->waiters_n == 0)
        return;
    const keel_reg_t *reg = registry(s);
    uint64_t ix = reg ? reg->index : 0;
    if (ix == rh->seen_index)
        return;
    rh->seen_index = ix;
    if (rh->catalog && rh->catalog->index != current_index(s, NULL, 0, 1))
        wake_list(rh, rh->catalog);
    /* Lists to wake are collected first: waking one deletes it from the map. */
    size_t n = rh->lists.count, k = 0, pos = 0;
    waitlist_t **wake = n ? malloc(n * sizeof(*wake)) : NULL;
    const uint8_t *key;
    size_t key_len;
    void *v;
    while (wake && keel_map_next(&rh->lists, &pos, &key, &key_len, &v)) {
        waitlist_t *l = v;
        if (current_index(s, l->name, l->name_len, 0) != l->index)
            wake[k++] = l;
    }
    for (size_t i = 0; i < k; i++)
        wake_list(rh, wake[i]);
    free(wake);
}

/* ---- requests ----------------------------------------------------------------------------- */

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes p[0..n) into out (cap bytes + NUL); '+' is a space in a query. -1 if long. */
static int decode(const char *p, size_t n, int query, char *out, size_t cap, size_t *out_n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c == '%' && i + 2 < n + 0 && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            c = hexval(p[i + 1]) * 16 + hexval(p[i + 2]);
            i += 2;
        } else if (c == '+' && query) {
            c = ' ';
        }
        if (o >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *out_n = o;
    return 0;
}

/* The query's parameters a registry request understands; -1 with a reason if malformed. */
static int parse_query(const keel_http_msg_t *m, hq_t *q, int *stale, char *note, size_t *note_n,
                       const char **why)
{
    const char *p = m->query, *end = m->query + m->query_len;
    *stale = 0;
    *note_n = 0;
    q->wait_ms = REG_WAIT_MS_DEFAULT;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        size_t klen = (size_t)((eq ? eq : e) - p);
        const char *val = eq ? eq + 1 : e;
        size_t vlen = (size_t)(e - val);
        char v[REG_NAME_BYTES_MAX + 1];
        size_t vn;
        if (decode(val, vlen, 1, v, REG_NAME_BYTES_MAX, &vn) != 0) {
            *why = "a query parameter is too long";
            return -1;
        }
        int truthy = !(vn == 5 && memcmp(v, "false", 5) == 0) && !(vn == 1 && v[0] == '0');
        if (klen == 5 && memcmp(p, "index", 5) == 0) {
            char *stop;
            unsigned long long x = strtoull(v, &stop, 10);
            if (vn == 0 || *stop != '\0') {
                *why = "index must be a number";
                return -1;
            }
            q->index = x;
            q->has_index = 1;
        } else if (klen == 4 && memcmp(p, "wait", 4) == 0) {
            uint64_t w;
            if (keel_reg_duration_ms(v, vn, &w) != 0) {
                *why = "wait must be a duration like 30s";
                return -1;
            }
            q->wait_ms = w > REG_WAIT_MS_MAX ? REG_WAIT_MS_MAX : w;
        } else if (klen == 7 && memcmp(p, "passing", 7) == 0) {
            q->passing = truthy;
        } else if (klen == 3 && memcmp(p, "tag", 3) == 0) {
            memcpy(q->tag, v, vn + 1);
            q->tag_len = vn;
            q->has_tag = 1;
        } else if (klen == 5 && memcmp(p, "stale", 5) == 0) {
            *stale = truthy;
        } else if (klen == 4 && memcmp(p, "note", 4) == 0) {
            memcpy(note, v, vn + 1);
            *note_n = vn;
        }
        p = e + (amp != NULL);
    }
    return 0;
}

static hq_t *hq_new(server_t *s, keel_http_req_t *req, int kind)
{
    hq_t *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        respond_error(req, 503, "out of memory");
        return NULL;
    }
    keel_list_init(&q->link);
    keel_list_init(&q->all);
    q->s = s;
    q->req = req;
    q->kind = kind;
    return q;
}

/* The path after prefix, percent-decoded into out; -1 (answered 400) if empty or too long. */
static int path_rest(keel_http_req_t *req, const char *prefix, char *out, size_t *out_n)
{
    const keel_http_msg_t *m = req->msg;
    size_t pl = strlen(prefix);
    if (m->path_len <= pl ||
        decode(m->path + pl, m->path_len - pl, 0, out, REG_NAME_BYTES_MAX, out_n) != 0 ||
        *out_n == 0) {
        respond_error(req, 400, "the path must end in a name of at most 512 bytes");
        return -1;
    }
    return 0;
}

static void on_read_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    hq_t *q = ctx;
    if (status != 0 || len == 0 || reply[0] == '-') {
        char text[160];
        snprintf(text, sizeof(text), "no linearizable read: %s; retry, or ask with ?stale",
                 status ? keel_strerror(status) : "refused");
        q_error(q, status == KEEL_ETIMEDOUT ? 504 : 503, text);
        hq_free(q);
        return;
    }
    answer_or_block(q);
}

static void start_read(hq_t *q, int stale)
{
    server_t *s = q->s;
    if (s->node == NULL || s->reg_http->closing) {
        q_error(q, 503, "server shutting down");
        hq_free(q);
        return;
    }
    if (stale) {
        answer_or_block(q);
        return;
    }
    static const char cmd[] = "KEEL.REG.READ", sub[] = "INDEX";
    const uint8_t *argv[2] = {(const uint8_t *)cmd, (const uint8_t *)sub};
    size_t lens[2] = {sizeof(cmd) - 1, sizeof(sub) - 1};
    int rc = keel_node_read(s->node, 2, argv, lens, on_read_done, q);
    if (rc != 0)
        on_read_done(q, rc, NULL, 0);
}

static void http_health_service(keel_http_req_t *req, void *data)
{
    hq_t *q = hq_new(data, req, HQ_HEALTH);
    int stale;
    char note[REG_NAME_BYTES_MAX + 1];
    size_t note_n;
    const char *why = NULL;
    if (q == NULL)
        return;
    if (path_rest(req, "/v1/health/service/", q->name, &q->name_len) != 0) {
        hq_free(q);
        return;
    }
    if (parse_query(req->msg, q, &stale, note, &note_n, &why) != 0) {
        respond_error(req, 400, why);
        hq_free(q);
        return;
    }
    start_read(q, stale);
}

static void http_catalog_services(keel_http_req_t *req, void *data)
{
    hq_t *q = hq_new(data, req, HQ_CATALOG);
    int stale;
    char note[REG_NAME_BYTES_MAX + 1];
    size_t note_n;
    const char *why = NULL;
    if (q == NULL)
        return;
    if (parse_query(req->msg, q, &stale, note, &note_n, &why) != 0) {
        respond_error(req, 400, why);
        hq_free(q);
        return;
    }
    start_read(q, stale);
}

/*
 * KEEL.REG WAIT service index timeout_ms [PASSING] [TAG tag]: the blocking query over RESP,
 * on the same wait lists. Answers what KEEL.REG INSTANCES answers once the service's index
 * is not `index` (at once if it already is not), or when timeout_ms ends (the same index).
 * Its reply slot is a barrier: the connection's later commands wait, as behind Redis's
 * BLPOP. The read round is linearizable unless the connection asked KEEL.READS stale.
 */
int keel__srv_reg_wait(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv, int stale)
{
    server_t *s = keel__srv_of(c);
    int64_t ix, ms;
    int passing = 0;
    size_t tag = 0;
    int ok = argc >= 5 && argv[2].len > 0 && argv[2].len <= REG_NAME_BYTES_MAX &&
             keel_parse_i64(argv[3].ptr, argv[3].len, &ix) == 0 && ix >= 0 &&
             keel_parse_i64(argv[4].ptr, argv[4].len, &ms) == 0 && ms >= 0;
    for (size_t i = 5; ok && i < argc; i++) {
        if (keel__srv_arg_is(&argv[i], "passing"))
            passing = 1;
        else if (keel__srv_arg_is(&argv[i], "tag") && i + 1 < argc &&
                 argv[i + 1].len <= REG_NAME_BYTES_MAX)
            tag = ++i;
        else
            ok = 0;
    }
    if (!ok)
        return keel__srv_error(
            c, "ERR syntax error: KEEL.REG WAIT service index timeout_ms [PASSING] [TAG tag]");
    hq_t *q = calloc(1, sizeof(*q));
    keel_resp_deferred_t *slot = q ? keel_resp_client_defer_barrier(c) : NULL;
    if (slot == NULL) {
        free(q);
        return keel__srv_oom(c);
    }
    keel_list_init(&q->link);
    keel_list_init(&q->all);
    q->s = s;
    q->slot = slot;
    q->kind = HQ_RESP;
    q->has_index = 1;
    q->index = (uint64_t)ix;
    q->wait_ms = (uint64_t)ms > REG_WAIT_MS_MAX ? REG_WAIT_MS_MAX : (uint64_t)ms;
    q->passing = passing;
    memcpy(q->name, argv[2].ptr, argv[2].len);
    q->name_len = argv[2].len;
    if (tag) {
        memcpy(q->tag, argv[tag].ptr, argv[tag].len);
        q->tag_len = argv[tag].len;
        q->has_tag = 1;
    }
    start_read(q, stale);
    return 0;
}

/* ---- writes ------------------------------------------------------------------------------- */

/* The HTTP status of a registry error reply's first word. */
static int error_status(const uint8_t *reply, size_t len)
{
    if (len >= 6 && memcmp(reply, "-LIMIT", 6) == 0)
        return 429;
    if (len >= 9 && memcmp(reply, "-NOTFOUND", 9) == 0)
        return 404;
    return 400;
}

static void on_write_done(void *ctx, int status, const uint8_t *reply, size_t len)
{
    hq_t *q = ctx;
    if (status != 0) {
        char text[160];
        snprintf(text, sizeof(text), "%s: %s", keel_strerror(status),
                 status == KEEL_ETIMEDOUT || status == KEEL_ECONNRESET
                     ? "the change may or may not have been applied"
                     : "the change was not applied; retry");
        respond_error(q->req, status == KEEL_ETIMEDOUT ? 504 : 503, text);
    } else if (len > 0 && reply[0] == '-') {
        size_t n = len;
        while (n > 1 && (reply[n - 1] == '\r' || reply[n - 1] == '\n'))
            n--;
        char text[KEEL_ERRMSG_BYTES_MAX + 64];
        snprintf(text, sizeof(text), "%.*s", (int)(n - 1), (const char *)reply + 1);
        respond_error(q->req, error_status(reply, len), text);
    } else if (q->kind == HQ_DEREGISTER && len >= 2 && reply[1] == '0') {
        respond_error(q->req, 404, "Unknown service ID");
    } else {
        uint64_t ix = 0;
        int has = q->kind == HQ_REGISTER && len > 1 && reply[0] == ':';
        if (has)
            ix = strtoull((const char *)reply + 1, NULL, 10);
        respond(q->req, 200, "", 0, has, ix);
    }
    hq_free(q);
}

static void submit_write(hq_t *q, int argc, const uint8_t *const *argv, const size_t *lens)
{
    server_t *s = q->s;
    if (s->node == NULL || s->reg_http->closing) {
        respond_error(q->req, 503, "server shutting down");
        hq_free(q);
        return;
    }
    keel_buf_reset(&s->buf);
    if (keel_kv_check(argc, argv, lens, &s->buf) != 0) {
        on_write_done(q, 0, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf));
        return;
    }
    int rc = keel_node_write(s->node, argc, argv, lens, on_write_done, q);
    if (rc != 0)
        on_write_done(q, rc, NULL, 0);
}

static void http_register(keel_http_req_t *req, void *data)
{
    hq_t *q = hq_new(data, req, HQ_REGISTER);
    if (q == NULL)
        return;
    keel_reg_json_t j;
    keel_errmsg_t msg = {{0}};
    int rc = keel_reg_json_parse(req->msg->body, req->msg->body_len, &j, &msg);
    if (rc != 0) {
        respond_error(req, rc == KEEL_ENOMEM ? 503 : 400,
                      rc == KEEL_ENOMEM ? "out of memory" : msg.text);
        hq_free(q);
        return;
    }
    submit_write(q, (int)j.argc, j.argv, j.lens);
    keel_reg_json_free(&j);
}

static void http_deregister(keel_http_req_t *req, void *data)
{
    hq_t *q = hq_new(data, req, HQ_DEREGISTER);
    if (q == NULL)
        return;
    if (path_rest(req, "/v1/agent/service/deregister/", q->name, &q->name_len) != 0) {
        hq_free(q);
        return;
    }
    static const char cmd[] = "KEEL.REG.WRITE", sub[] = "DEREGISTER";
    const uint8_t *argv[3] = {(const uint8_t *)cmd, (const uint8_t *)sub, (const uint8_t *)q->name};
    size_t lens[3] = {sizeof(cmd) - 1, sizeof(sub) - 1, q->name_len};
    submit_write(q, 3, argv, lens);
}

/* PUT /v1/agent/check/pass|warn|fail/:check_id?note=... */
static void http_check(keel_http_req_t *req, void *data)
{
    static const char *const words[] = {"pass/", "warn/", "fail/"};
    static const char *const subs[] = {"PASS", "WARN", "FAIL"};
    const keel_http_msg_t *m = req->msg;
    const size_t pl = strlen("/v1/agent/check/");
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (m->path_len > pl + 5 && memcmp(m->path + pl, words[i], 5) == 0)
            which = i;
    if (which < 0) {
        respond_error(req, 404, "no such check endpoint: use pass, warn or fail");
        return;
    }
    hq_t *q = hq_new(data, req, HQ_CHECK);
    if (q == NULL)
        return;
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "/v1/agent/check/%s", words[which]);
    int stale;
    char note[REG_NAME_BYTES_MAX + 1];
    size_t note_n;
    const char *why = NULL;
    if (path_rest(req, prefix, q->name, &q->name_len) != 0) {
        hq_free(q);
        return;
    }
    if (parse_query(m, q, &stale, note, &note_n, &why) != 0) {
        respond_error(req, 400, why);
        hq_free(q);
        return;
    }
    const char *id = q->name;
    size_t id_len = q->name_len;
    if (id_len > 8 && memcmp(id, "service:", 8) == 0) /* Consul's check id of a service */
        id += 8, id_len -= 8;
    static const char cmd[] = "KEEL.REG.WRITE";
    const uint8_t *argv[4] = {(const uint8_t *)cmd, (const uint8_t *)subs[which],
                              (const uint8_t *)id, (const uint8_t *)note};
    size_t lens[4] = {sizeof(cmd) - 1, 4, id_len, note_n};
    submit_write(q, 4, argv, lens);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

size_t keel__srv_reg_routes(server_t *s, keel_http_route_t *out)
{
    const keel_http_route_t routes[KEEL_SRV_REG_ROUTES] = {
        {HTTP_PUT, "/v1/agent/service/register", http_register, s},
        {HTTP_PUT, "/v1/agent/service/deregister/", http_deregister, s},
        {HTTP_PUT, "/v1/agent/check/", http_check, s},
        {HTTP_GET, "/v1/catalog/services", http_catalog_services, s},
        {HTTP_GET, "/v1/health/service/", http_health_service, s},
    };
    memcpy(out, routes, sizeof(routes));
    return KEEL_SRV_REG_ROUTES;
}

size_t keel__srv_reg_blocked(const server_t *s)
{
    return s->reg_http ? s->reg_http->waiters_n : 0;
}

static double gauge_waiters(void *data)
{
    reg_http_t *rh = data;
    return (double)rh->waiters_n;
}

/* Every blocked query is answered now (the state as it is): the admin listener can drain. */
static void on_shutdown(void *data)
{
    reg_http_t *rh = data;
    rh->closing = 1;
    while (!keel_list_empty(&rh->all)) {
        hq_t *q = KEEL_LIST_ENTRY(keel_list_first(&rh->all), hq_t, all);
        unblock(rh, q);
        answer_read(q);
    }
    if (rh->tick_inited) {
        keel_timer_close(&rh->tick, NULL);
        rh->tick_inited = 0;
    }
}

int keel__srv_reg_http_start(server_t *s)
{
    reg_http_t *rh = calloc(1, sizeof(*rh));
    if (rh == NULL)
        return KEEL_ENOMEM;
    rh->s = s;
    keel_list_init(&rh->all);
    int rc = keel_map_init(&rh->lists, 16, REG_WAITERS_MAX, 0x77616974);
    if (rc != 0) {
        free(rh);
        return rc;
    }
    s->reg_http = rh;
    rc = keel_loop_on_shutdown(&s->loop, on_shutdown, rh); /* before the timer it closes */
    if (rc == 0)
        rc = keel_timer_init(&s->loop, &rh->tick);
    if (rc != 0)
        return rc;
    rh->tick_inited = 1;
    if (s->metrics) {
        keel_metrics_gauge_fn(s->metrics, "keel_registry_blocked_queries",
                              "Registry HTTP queries blocked waiting for a change.", NULL,
                              gauge_waiters, rh);
        rh->m_wakeups = keel_metrics_counter(s->metrics, "keel_registry_wakeups_total",
                                             "Wait lists woken by a change (one per service "
                                             "per change, whatever its waiters).",
                                             NULL);
        rh->m_woken = keel_metrics_counter(s->metrics, "keel_registry_woken_total",
                                           "Blocked queries answered because of a change.", NULL);
        rh->m_timeouts =
            keel_metrics_counter(s->metrics, "keel_registry_wait_timeouts_total",
                                 "Blocked queries answered when their wait ended.", NULL);
    }
    return 0;
}

void keel__srv_reg_http_free(server_t *s)
{
    reg_http_t *rh = s->reg_http;
    if (rh == NULL)
        return;
    /* answered at shutdown; a start that failed may have left the timer */
    assert(rh->waiters_n == 0);
    keel_map_free(&rh->lists, free);
    free(rh->catalog);
    free(rh);
    s->reg_http = NULL;
}
