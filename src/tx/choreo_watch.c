/* choreo_watch.c - the deadline watcher of choreographed sagas: every event into a sorted set of
 * deadlines in keel server, the overdue sagas into the attention hash (choreo_watch.h). */
#include "tx/choreo_watch.h"

#include "base/log.h"
#include "runtime/clock.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

enum { PH_GROUP, PH_HISTORY, PH_LIVE };
enum { CK_NONE, CK_OVERDUE, CK_RUNNING, CK_ATTENTION };

keel_choreo_watch_config_t keel_choreo_watch_config_default(void)
{
    keel_choreo_watch_config_t c;
    memset(&c, 0, sizeof(c));
    c.name = "watch";
    c.check_interval_ms = 500;
    c.batch_max = 64;
    c.block_ms = 200;
    c.request_timeout_ms = 5000;
    c.retry_ms = 200;
    return c;
}

static int config_check(const keel_choreo_watch_config_t *c, keel_errmsg_t *msg)
{
    if (c->servers == NULL || c->stream == NULL || c->stream[0] == '\0' ||
        strlen(c->stream) > KEEL_OUTBOX_STREAM_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo watch: servers and a stream are required");
    if (c->name == NULL || !keel_choreo_type_valid(c->name) ||
        strlen(c->name) > KEEL_CHOREO_NAME_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo watch: bad name");
    if (c->consumer != NULL && (!keel_choreo_saga_valid(c->consumer) ||
                                strlen(c->consumer) > KEEL_CHOREO_NAME_BYTES_MAX * 2))
        return keel_errf(msg, KEEL_EINVAL, "choreo watch: bad consumer name");
    if (c->ends_n == 0 || c->ends_n > KEEL_CHOREO_WATCH_ENDS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo watch: 1 to %u end types",
                         KEEL_CHOREO_WATCH_ENDS_MAX);
    for (size_t i = 0; i < c->ends_n; i++)
        if (!keel_choreo_type_valid(c->ends[i]))
            return keel_errf(msg, KEEL_EINVAL, "choreo watch: end type %zu is not a valid type", i);
    if (c->saga_deadline_ms <= 0 || c->check_interval_ms <= 0 || c->block_ms <= 0 ||
        c->request_timeout_ms <= 0 || c->retry_ms <= 0 || c->batch_max == 0 ||
        c->batch_max > KEEL_CHOREO_WATCH_BATCH_MAX)
        return keel_errf(msg, KEEL_EINVAL,
                         "choreo watch: saga_deadline_ms and the other times must be positive, "
                         "batch_max 1..%u",
                         KEEL_CHOREO_WATCH_BATCH_MAX);
    return 0;
}

static void metrics_register(keel_choreo_watch_t *w)
{
    keel_metrics_t *m = w->cfg.metrics;
    if (m == NULL)
        return;
    /* the label holds at most 200 bytes of the escaped stream name (labels: 256 in all) */
    char l[KEEL_METRICS_LABELS_BYTES_MAX], s[201];
    keel_metrics_label_escape(s, sizeof(s), w->stream);
    const char *help = "Choreographed sagas in keel server by state (the watcher's last check).";
    snprintf(l, sizeof(l), "stream=\"%.200s\",state=\"running\"", s);
    w->g_running = keel_metrics_gauge(m, "keel_choreo_sagas", help, l);
    snprintf(l, sizeof(l), "stream=\"%.200s\",state=\"needs_attention\"", s);
    w->g_attention = keel_metrics_gauge(m, "keel_choreo_sagas", help, l);
    snprintf(l, sizeof(l), "stream=\"%.200s\"", s);
    w->m_missed = keel_metrics_counter(m, "keel_choreo_deadlines_missed_total",
                                       "Sagas this watcher marked needs_attention: not ended "
                                       "by their deadline.",
                                       l);
}

int keel_choreo_watch_init(keel_choreo_watch_t *w, keel_loop_t *loop,
                           const keel_choreo_watch_config_t *cfg, keel_errmsg_t *msg)
{
    memset(w, 0, sizeof(*w));
    int rc = config_check(cfg, msg);
    if (rc != 0)
        return rc;
    w->cfg = *cfg;
    w->loop = loop;
    snprintf(w->stream, sizeof(w->stream), "%s", cfg->stream);
    snprintf(w->name, sizeof(w->name), "%s", cfg->name);
    snprintf(w->consumer, sizeof(w->consumer), "%s", cfg->consumer ? cfg->consumer : cfg->name);
    snprintf(w->deadlines, sizeof(w->deadlines), "%s" KEEL_CHOREO_DEADLINES_SUFFIX, cfg->stream);
    snprintf(w->attention, sizeof(w->attention), "%s" KEEL_CHOREO_ATTENTION_SUFFIX, cfg->stream);
    w->cfg.stream = w->stream;
    w->cfg.name = w->name;
    w->cfg.consumer = w->consumer;
    w->stats.running = w->stats.needs_attention = -1;
    keel_client_config_t cc = keel_client_config_default();
    snprintf(w->seeds_text, sizeof(w->seeds_text), "%s", cfg->servers);
    if ((rc = keel_client_config_seeds(&cc, w->seeds_text, "choreo watch servers", msg)) != 0)
        return rc;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.seed = cfg->seed;
    if ((rc = keel_client_init(&w->client, loop, &cc, msg)) != 0)
        return rc;
    keel_timer_init(loop, &w->wait);
    keel_timer_init(loop, &w->check);
    w->handles_open = 3;
    metrics_register(w);
    return 0;
}

const keel_choreo_watch_stats_t *keel_choreo_watch_stats(const keel_choreo_watch_t *w)
{
    return &w->stats;
}

/* ---- requests, one at a time -------------------------------------------------------------- */

static void next(keel_choreo_watch_t *w);

static void wait_done(keel_timer_t *t, void *data)
{
    keel_choreo_watch_t *w = data;
    w->waiting = false;
    next(w);
}

static void request_failed(keel_choreo_watch_t *w, const char *what, int status,
                           const keel_resp_value_t *reply)
{
    w->stats.request_errors++;
    if (reply && keel_resp_error_contains(reply, "NOGROUP"))
        w->phase = PH_GROUP;
    else if (w->phase == PH_LIVE) /* a read whose answer was lost may have delivered entries */
        w->phase = PH_HISTORY;
    w->check_step = CK_NONE; /* the next tick starts the check again */
    keel_log_warn("choreo watch: request failed", KF_STR("stream", w->stream),
                  KF_STR("request", what),
                  KF_STR("error", status ? keel_strerror(status) : "reply"));
    w->waiting = true;
    keel_timer_start(&w->wait, w->cfg.retry_ms, 0, wait_done, w);
}

static bool reply_ok(int status, const keel_resp_value_t *reply)
{
    if (status != 0 || reply->type == KEEL_RESP_ERROR)
        return false;
    if (reply->type == KEEL_RESP_ARRAY) /* a KEEL.TXN: each of its commands */
        for (size_t i = 0; i < reply->elems_len; i++)
            if (reply->elems[i].type == KEEL_RESP_ERROR)
                return false;
    return true;
}

static void send_req(keel_choreo_watch_t *w, size_t argc, const char *const *argv,
                     keel_ms_t timeout_ms, keel_client_reply_fn fn)
{
    w->inflight = true;
    int rc = keel_client_command_timeout(&w->client, argc, argv, NULL, timeout_ms, fn, w);
    if (rc != 0) {
        w->inflight = false;
        request_failed(w, argv[0], rc, NULL);
    }
}

static bool is_end(const keel_choreo_watch_t *w, const char *type)
{
    for (size_t i = 0; i < w->cfg.ends_n; i++)
        if (strcmp(w->cfg.ends[i], type) == 0)
            return true;
    return false;
}

static keel_choreo_watch_t *from_ctx(void *ctx, int status)
{
    keel_choreo_watch_t *w = ctx;
    w->inflight = false;
    return status == KEEL_ECANCELED || w->closing ? NULL : w;
}

/* ---- the events ----------------------------------------------------------------------------- */

static void on_batch_done(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (!reply_ok(status, reply)) { /* nothing of it applied, or all: read again, idempotent */
        request_failed(w, "KEEL.TXN (events)", status, reply);
        return;
    }
    next(w);
}

/* Per entry of a batch: [id, [field, value, ...]] with the event in `data`. */
typedef struct watch_cmd {
    char saga[KEEL_CHOREO_SAGA_BYTES_MAX + 1], deadline[24];
    bool end;
} watch_cmd_t;

/* One KEEL.TXN: a ZADD NX or ZREM per event of the batch, and the batch's XACK. */
static void handle_entries(keel_choreo_watch_t *w, const keel_resp_value_t *entries)
{
    watch_cmd_t cmds[KEEL_CHOREO_WATCH_BATCH_MAX]; /* about 23 KiB of stack, as the argv below */
    const char *ids[KEEL_CHOREO_WATCH_BATCH_MAX];
    size_t idn[KEEL_CHOREO_WATCH_BATCH_MAX], n_ids = 0, n_cmds = 0;
    for (size_t i = 0; i < entries->elems_len && n_ids < KEEL_CHOREO_WATCH_BATCH_MAX; i++) {
        const keel_resp_value_t *e = &entries->elems[i];
        if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 || e->elems[0].type != KEEL_RESP_BULK)
            continue;
        ids[n_ids] = (const char *)e->elems[0].str.ptr;
        idn[n_ids++] = e->elems[0].str.len;
        const keel_resp_value_t *f = &e->elems[1], *data = NULL;
        for (size_t k = 0; f->type == KEEL_RESP_ARRAY && k + 1 < f->elems_len; k += 2)
            if (f->elems[k].str.len == 4 && memcmp(f->elems[k].str.ptr, "data", 4) == 0)
                data = &f->elems[k + 1];
        keel_choreo_event_t ev;
        keel_ms_t deadline;
        w->stats.events++;
        if (data == NULL || data->type != KEEL_RESP_BULK ||
            keel_choreo_event_decode(data->str.ptr, data->str.len, &ev, NULL) != 0 ||
            keel_choreo_deadline_of(e->elems[0].str.ptr, e->elems[0].str.len,
                                    w->cfg.saga_deadline_ms, &deadline) != 0) {
            w->stats.malformed++; /* not a saga's event: acknowledged only */
            continue;
        }
        watch_cmd_t *c = &cmds[n_cmds++];
        snprintf(c->saga, sizeof(c->saga), "%s", ev.saga);
        snprintf(c->deadline, sizeof(c->deadline), "%" PRId64, deadline);
        c->end = is_end(w, ev.type);
        w->stats.ends += c->end;
    }
    if (n_ids == 0) {
        next(w);
        return;
    }
    /* KEEL.TXN 0 <k> [5 ZADD key NX score saga | 3 ZREM key saga]... <3+n> XACK s g ids... */
    enum { ARGS_MAX = 3 + 6 * KEEL_CHOREO_WATCH_BATCH_MAX + 4 + KEEL_CHOREO_WATCH_BATCH_MAX };
    const char *argv[ARGS_MAX];
    size_t lens[ARGS_MAX];
    char cmds_s[16], xack_s[16];
    size_t a = 0;
    snprintf(cmds_s, sizeof(cmds_s), "%zu", n_cmds + 1);
    snprintf(xack_s, sizeof(xack_s), "%zu", 3 + n_ids);
    const char *head[] = {"KEEL.TXN", "0", cmds_s};
    for (size_t i = 0; i < 3; i++)
        argv[a++] = head[i];
    for (size_t i = 0; i < n_cmds; i++) {
        watch_cmd_t *c = &cmds[i];
        const char *zadd[] = {"5", "ZADD", w->deadlines, "NX", c->deadline, c->saga};
        const char *zrem[] = {"3", "ZREM", w->deadlines, c->saga};
        const char **cmd = c->end ? zrem : zadd;
        for (size_t k = 0; k < (c->end ? 4u : 6u); k++)
            argv[a++] = cmd[k];
    }
    const char *xack[] = {xack_s, "XACK", w->stream, w->name};
    for (size_t i = 0; i < 4; i++)
        argv[a++] = xack[i];
    for (size_t i = 0; i < a; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < n_ids; i++) {
        argv[a] = ids[i];
        lens[a++] = idn[i];
    }
    assert(a <= ARGS_MAX);
    w->inflight = true;
    int rc = keel_client_command(&w->client, a, argv, lens, on_batch_done, w);
    if (rc != 0) {
        w->inflight = false;
        request_failed(w, "KEEL.TXN (events)", rc, NULL);
    }
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (status != 0 || reply->type == KEEL_RESP_ERROR) {
        request_failed(w, "XREADGROUP", status, reply);
        return;
    }
    const keel_resp_value_t *entries = NULL;
    if (reply->type == KEEL_RESP_ARRAY && reply->elems_len == 1 &&
        reply->elems[0].type == KEEL_RESP_ARRAY && reply->elems[0].elems_len == 2)
        entries = &reply->elems[0].elems[1];
    if (entries == NULL || entries->type != KEEL_RESP_ARRAY || entries->elems_len == 0) {
        if (w->phase == PH_HISTORY)
            w->phase = PH_LIVE; /* nothing of ours is pending */
        next(w);
        return;
    }
    handle_entries(w, entries);
}

static void on_group(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (status != 0 ||
        (reply->type == KEEL_RESP_ERROR && !keel_resp_error_contains(reply, "BUSYGROUP"))) {
        request_failed(w, "XGROUP CREATE", status, reply);
        return;
    }
    w->phase = PH_HISTORY;
    next(w);
}

/* ---- the check ------------------------------------------------------------------------------ */

static void on_count(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (status != 0 || reply->type != KEEL_RESP_INT) {
        request_failed(w, w->check_step == CK_RUNNING ? "ZCARD" : "HLEN", status, reply);
        return;
    }
    if (w->check_step == CK_RUNNING) {
        w->stats.running = reply->integer;
        if (w->g_running)
            keel_gauge_set(w->g_running, reply->integer);
        w->check_step = CK_ATTENTION;
    } else {
        w->stats.needs_attention = reply->integer;
        if (w->g_attention)
            keel_gauge_set(w->g_attention, reply->integer);
        w->check_step = CK_NONE;
    }
    next(w);
}

static void on_marked(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (!reply_ok(status, reply)) {
        request_failed(w, "KEEL.TXN (overdue)", status, reply);
        return;
    }
    /* counted once applied, not when sent: whoever reads the count may then read the marks
     * (a test read the attention hash before the TXN had applied) */
    w->stats.missed += w->marking;
    if (w->m_missed)
        keel_counter_add(w->m_missed, w->marking);
    next(w); /* check_step is still CK_OVERDUE: look for more */
}

/* [saga, deadline, ...] of the overdue sagas: each into the attention hash, out of the
 * deadlines, in one KEEL.TXN. */
static void on_overdue(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_watch_t *w = from_ctx(ctx, status);
    if (w == NULL)
        return;
    if (status != 0 || reply->type != KEEL_RESP_ARRAY) {
        request_failed(w, "ZRANGEBYSCORE", status, reply);
        return;
    }
    size_t n = reply->elems_len / 2;
    if (n > KEEL_CHOREO_WATCH_BATCH_MAX)
        n = KEEL_CHOREO_WATCH_BATCH_MAX; /* LIMIT asked for at most batch_max */
    if (n == 0) {
        w->check_step = CK_RUNNING;
        next(w);
        return;
    }
    enum { ARGS_MAX = 3 + 9 * KEEL_CHOREO_WATCH_BATCH_MAX };
    const char *argv[ARGS_MAX];
    size_t lens[ARGS_MAX];
    char why[KEEL_CHOREO_WATCH_BATCH_MAX][64], name[KEEL_CHOREO_SAGA_BYTES_MAX + 1];
    char cmds_s[16];
    size_t a = 0;
    snprintf(cmds_s, sizeof(cmds_s), "%zu", 2 * n);
    argv[a++] = "KEEL.TXN";
    argv[a++] = "0";
    argv[a++] = cmds_s;
    for (size_t i = 0; i < a; i++)
        lens[i] = strlen(argv[i]);
    for (size_t i = 0; i < n; i++) {
        const keel_resp_value_t *saga = &reply->elems[2 * i], *score = &reply->elems[2 * i + 1];
        snprintf(why[i], sizeof(why[i]), "watch deadline %.*s passed",
                 (int)(score->str.len < 24 ? score->str.len : 24), (const char *)score->str.ptr);
        const char *hset[] = {"4", "HSET", w->attention};
        for (size_t k = 0; k < 3; k++) {
            argv[a] = hset[k];
            lens[a++] = strlen(hset[k]);
        }
        argv[a] = (const char *)saga->str.ptr;
        lens[a++] = saga->str.len;
        argv[a] = why[i];
        lens[a++] = strlen(why[i]);
        const char *zrem[] = {"3", "ZREM", w->deadlines};
        for (size_t k = 0; k < 3; k++) {
            argv[a] = zrem[k];
            lens[a++] = strlen(zrem[k]);
        }
        argv[a] = (const char *)saga->str.ptr;
        lens[a++] = saga->str.len;
        snprintf(name, sizeof(name), "%.*s", (int)saga->str.len, (const char *)saga->str.ptr);
        keel_log_warn("choreo watch: saga past its deadline: needs attention",
                      KF_STR("stream", w->stream), KF_STR("saga", name), KF_STR("why", why[i]));
    }
    assert(a <= ARGS_MAX);
    w->marking = (uint32_t)n;
    w->inflight = true;
    int rc = keel_client_command(&w->client, a, argv, lens, on_marked, w);
    if (rc != 0) {
        w->inflight = false;
        request_failed(w, "KEEL.TXN (overdue)", rc, NULL);
    }
}

static void next(keel_choreo_watch_t *w)
{
    if (w->closing || w->inflight || w->waiting)
        return;
    char count_s[16], block_s[24], now_s[24];
    snprintf(count_s, sizeof(count_s), "%" PRIu32, w->cfg.batch_max);
    keel_ms_t timeout_ms = w->cfg.request_timeout_ms;
    if (w->phase == PH_GROUP) {
        const char *argv[] = {"XGROUP", "CREATE", w->stream, w->name, "0", "MKSTREAM"};
        send_req(w, 6, argv, timeout_ms, on_group);
    } else if (w->check_step == CK_OVERDUE) {
        snprintf(now_s, sizeof(now_s), "%" PRId64, keel_clock_unix_ms());
        const char *argv[] = {"ZRANGEBYSCORE", w->deadlines, "-inf", now_s,
                              "WITHSCORES",    "LIMIT",      "0",    count_s};
        send_req(w, 8, argv, timeout_ms, on_overdue);
    } else if (w->check_step == CK_RUNNING) {
        const char *argv[] = {"ZCARD", w->deadlines};
        send_req(w, 2, argv, timeout_ms, on_count);
    } else if (w->check_step == CK_ATTENTION) {
        const char *argv[] = {"HLEN", w->attention};
        send_req(w, 2, argv, timeout_ms, on_count);
    } else if (w->phase == PH_HISTORY) {
        const char *argv[] = {"XREADGROUP", "GROUP",   w->name,   w->consumer, "COUNT",
                              count_s,      "STREAMS", w->stream, "0"};
        send_req(w, 9, argv, timeout_ms, on_read);
    } else {
        snprintf(block_s, sizeof(block_s), "%" PRId64, w->cfg.block_ms);
        const char *argv[] = {"XREADGROUP", "GROUP", w->name,   w->consumer, "COUNT", count_s,
                              "BLOCK",      block_s, "STREAMS", w->stream,   ">"};
        send_req(w, 11, argv, timeout_ms + w->cfg.block_ms, on_read);
    }
}

static void check_tick(keel_timer_t *t, void *data)
{
    keel_choreo_watch_t *w = data;
    if (w->check_step == CK_NONE)
        w->check_step = CK_OVERDUE;
    next(w);
}

void keel_choreo_watch_start(keel_choreo_watch_t *w)
{
    assert(!w->started && !w->closing);
    w->started = true;
    keel_timer_start(&w->check, w->cfg.check_interval_ms, w->cfg.check_interval_ms, check_tick, w);
    next(w);
}

/* ---- closing -------------------------------------------------------------------------------- */

static void handle_closed(keel_choreo_watch_t *w)
{
    if (--w->handles_open > 0)
        return;
    if (w->closed)
        w->closed(w);
}

static void wait_closed(keel_timer_t *t)
{
    handle_closed((keel_choreo_watch_t *)((char *)t - offsetof(keel_choreo_watch_t, wait)));
}

static void check_closed(keel_timer_t *t)
{
    handle_closed((keel_choreo_watch_t *)((char *)t - offsetof(keel_choreo_watch_t, check)));
}

static void client_closed(keel_client_t *cl)
{
    handle_closed((keel_choreo_watch_t *)((char *)cl - offsetof(keel_choreo_watch_t, client)));
}

void keel_choreo_watch_close(keel_choreo_watch_t *w, void (*closed)(keel_choreo_watch_t *w))
{
    assert(!w->closing);
    w->closing = true;
    w->closed = closed;
    keel_timer_close(&w->wait, wait_closed);
    keel_timer_close(&w->check, check_closed);
    keel_client_close(&w->client, client_closed);
}
