/* regfeed.c - KEEL.REG FEED: a push feed of the registry's changes, on feed.c's watchers. */
#include "server/server_int.h"

#include "base/num.h"
#include "core/registry.h"
#include "proto/resp.h"

#include <stdlib.h>
#include <string.h>

/*
 * KEEL.REG FEED [service] [FROM index] puts the connection in push mode, as KEEL.WATCH does
 * (only PING and QUIT after it), and streams the registry's changes (core/registry's change
 * history) as this node applies them: any node serves feeds, a follower as it applies.
 *
 *   *3 "regfeed" service-or-"" :R     the reply: the feed goes on after registry index R
 *   *3 "regstate" :R *n instance      first, when there was no FROM or FROM is older than
 *                                     this node's history: every live instance (of the
 *                                     service, or of every service) as of index R
 *   *4 "regchange" :index op instance one push per change after R, op register, update,
 *                                     status, deregister or expire; the instance as
 *                                     KEEL.REG GET shows it, as the change left it
 *   -LAGGED ... FROM R                 sent before closing a feed whose client fell behind:
 *                                     R is the last index whose changes it has whole
 *
 * FROM i inside the history resumes exactly: every change at an index above i, once.
 *
 * A feed is a cursor into the shared history (feed.c's watcher_t), not a queue of copies:
 * each pass appends the changes not yet sent, whole indexes at a time (one index's changes
 * may go past the bound: at most a sweep's KEEL_KV_SM_SWEEP_KEYS_MAX instances; a cursor
 * inside an index would make FROM inexact), while the client's unsent output is under
 * REG_FEED_OUTPUT_BYTES_MAX, and goes on when the socket drains or
 * the node applies more. A consumer that does not read is bounded: when a pass finds its
 * output still holding that much with changes waiting (or its position gone from the
 * history), the feed ends with -LAGGED, and the client resubscribes with FROM.
 *
 * Each feed counts against the registry's watchers limit (KEEL_SRV_REG_WATCHERS_MAX, with
 * the blocked queries of registry_http.c).
 */
#define REG_FEED_OUTPUT_BYTES_MAX (1024u * 1024u)
/* ... or half the client output limit, if that is lower, so pushes never hit the limit. */
static size_t output_max(const server_t *s)
{
    size_t half = s->cfg.resp.reply_bytes_max / 2;
    return half < REG_FEED_OUTPUT_BYTES_MAX ? half : REG_FEED_OUTPUT_BYTES_MAX;
}

#define REG_FEED_SERVICE_BYTES_MAX KEEL_REG_NAME_BYTES_CEILING

static int feed_match(const watcher_t *w, const keel_reg_event_t *ev)
{
    return w->prefix_len == 0 ||
           (ev->service.n == w->prefix_len && memcmp(ev->service.p, w->prefix, w->prefix_len) == 0);
}

/* The feed cannot go on: say where it stopped and why, then close. */
static void feed_lagged(server_t *s, client_state_t *cs, const char *why)
{
    const keel_reg_t *reg = s->kv.kv.reg;
    char text[200];
    snprintf(text, sizeof(text),
             "registry feed %s (oldest index in this node's history %llu); resume with FROM %llu",
             why, reg ? (unsigned long long)keel_reg_history_oldest(reg) : 1ull,
             (unsigned long long)cs->feed->after);
    keel__srv_feed_lagged(s, cs, s->m_regfeed_lagged, text);
}

void keel__srv_regfeed_pump(server_t *s, client_state_t *cs)
{
    watcher_t *w = cs->feed;
    const keel_reg_t *reg = s->node ? s->kv.kv.reg : NULL;
    size_t pos;
    if (reg == NULL)
        return; /* no registry yet: no change to push */
    if (keel_reg_history_seek(reg, w->after, &pos) != 0) {
        feed_lagged(s, cs, "fell behind the history");
        return;
    }
    size_t len = keel_reg_history_len(reg);
    if (pos == len)
        return;
    size_t held = keel_resp_client_output_bytes(w->client), high = output_max(s);
    if (held >= high) {
        feed_lagged(s, cs, "client not reading (output bound reached)");
        return;
    }
    keel_resp_deferred_t *d = keel_resp_client_defer(w->client); /* a push: done at once */
    if (d == NULL)
        return; /* out of memory: the next pass tries again */
    keel_buf_t *b = keel_resp_deferred_out(d);
    int rc = 0;
    while (rc == 0 && pos < len && held + keel_buf_unread(b) < high) {
        uint64_t ix = keel_reg_history_at(reg, pos)->index;
        for (; rc == 0 && pos < len && keel_reg_history_at(reg, pos)->index == ix; pos++)
            if (feed_match(w, keel_reg_history_at(reg, pos)))
                rc = keel_kv_reg_feed_event(keel_reg_history_at(reg, pos), b);
        w->after = ix;
    }
    keel_resp_deferred_done(d, rc); /* an error (output limit) closes the client */
}

/* [service] [FROM index]: 0, or -1 (a syntax error). */
static int parse(size_t argc, const keel_resp_arg_t *argv, size_t *svc, int64_t *from)
{
    *svc = 0;
    *from = -1;
    size_t i = 2;
    if (argc > i && !(argc == i + 2 && keel__srv_arg_is(&argv[i], "from")))
        *svc = i++;
    if (argc == i)
        return 0;
    if (argc != i + 2 || !keel__srv_arg_is(&argv[i], "from") ||
        keel_parse_i64(argv[i + 1].ptr, argv[i + 1].len, from) != 0 || *from < 0)
        return -1;
    return 0;
}

/* The reply, then the state when the feed does not resume from FROM. */
static int start_replies(server_t *s, keel_buf_t *out, const keel_resp_arg_t *svc, uint64_t after,
                         int state)
{
    int rc = keel_resp_write_array_header(out, 3);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, "regfeed");
    if (rc == 0)
        rc =
            svc ? keel_resp_write_bulk(out, svc->ptr, svc->len) : keel_resp_write_bulk_str(out, "");
    if (rc == 0)
        rc = keel_resp_write_int(out, (int64_t)after);
    if (rc == 0 && state)
        rc = keel_kv_reg_feed_state(&s->kv.kv, keel_node_read_now_ms(s->node),
                                    svc ? svc->ptr : NULL, svc ? svc->len : 0, out);
    return rc;
}

int keel__srv_regfeed_start(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (cs == NULL || out == NULL)
        return KEEL_ENOMEM;
    size_t svc;
    int64_t from;
    if (parse(argc, argv, &svc, &from) != 0)
        return keel__srv_error(c, "ERR syntax error: KEEL.REG FEED [service] [FROM index]");
    if (svc && (argv[svc].len == 0 || argv[svc].len > REG_FEED_SERVICE_BYTES_MAX))
        return keel__srv_error(c, "ERR registry: the service name is empty or too long");
    if (keel_pubsub_count(s->pubsub, c) > 0)
        return keel__srv_error(c, "ERR KEEL.REG FEED is not allowed in subscribed mode");
    if (cs->inflight > 0 || cs->held_head != NULL) /* it starts from the state now */
        return keel__srv_error(c, "ERR KEEL.REG FEED must not follow commands still running "
                                  "on this connection: wait for their replies");
    if (s->node == NULL)
        return keel__srv_error(c, "ERR keel: server shutting down");
    if (keel__srv_reg_blocked(s) + s->regfeeds_n >= KEEL_SRV_REG_WATCHERS_MAX)
        return keel_resp_write_errorf(out,
                                      "LIMIT registry: too many watchers on this node "
                                      "(watchers_max %u: feeds and blocked queries)",
                                      KEEL_SRV_REG_WATCHERS_MAX);
    const keel_reg_t *reg = s->kv.kv.reg;
    size_t pos;
    int resume =
        from >= 0 && (reg == NULL || keel_reg_history_seek(reg, (uint64_t)from, &pos) == 0);
    uint64_t after = resume ? (uint64_t)from : reg ? reg->index : 0;
    size_t name_len = svc ? argv[svc].len : 0;
    watcher_t *w = calloc(1, sizeof(*w) + name_len);
    if (w == NULL)
        return keel__srv_oom(c);
    keel_list_init(&w->link);
    w->client = c;
    w->after = after;
    w->reg = 1;
    w->prefix_len = name_len;
    if (name_len)
        memcpy(w->prefix, argv[svc].ptr, name_len);
    int rc = start_replies(s, out, svc ? &argv[svc] : NULL, after, !resume);
    if (rc != 0) {
        free(w);
        return rc;
    }
    keel_list_insert_head(&s->watchers, &w->link);
    s->watchers_n++;
    s->regfeeds_n++;
    cs->feed = w;
    keel__srv_regfeed_pump(s, cs);
    return 0;
}
