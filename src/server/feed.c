/* feed.c - KEEL.WATCH: a change feed of every key under a prefix, from any node. */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <stdlib.h>
#include <string.h>

/*
 * KEEL.WATCH prefix [FROM revision] puts the connection in push mode (only PING and QUIT
 * are accepted after it, as in Redis's subscribed mode) and streams every change to a key
 * under the prefix from this node's change history (core/kv "change history"), in revision
 * order, as this node applies the log: any node serves watches, a follower as it applies.
 *
 * Replies and pushes (RESP2, readable with any client's read_response):
 *   *3 "watching" prefix :R          R: the feed starts after revision R (FROM, or the
 *                                    revision this node has applied when no FROM)
 *   *3 "watch" :rev *n (*3 "put" key value | *3 "del" key nil) x n
 *                                    one push per revision: all of its changes under the
 *                                    prefix, so a push is never split across a reconnect
 *   -COMPACTED ...                   FROM r and changes after r are no longer all retained
 *                                    here; names the oldest available revision
 *   -LAGGED ... FROM R               sent before closing a watcher whose position left the
 *                                    history while it was not reading; R is the last
 *                                    revision it received whole
 *
 * The position "after R" means after every change of revision R: resuming with FROM R
 * (the last push's revision) gives every later revision exactly once.
 *
 * Back-pressure. A watcher is a cursor (the revision it has been sent up to), not a copy
 * of the changes: each pass appends revisions to its output until the output holds
 * WATCH_OUTPUT_BYTES_HIGH, and continues when the socket drains (client_drained) or the
 * node applies more (on_applied). A slow reader costs nothing beyond the shared history;
 * once the history no longer reaches back to its position it is told where it stopped
 * and closed, which is how it learns to resume (elsewhere, or after a resynchronization).
 */
#define WATCH_OUTPUT_BYTES_HIGH (1024u * 1024u)
/* ... or half the client output limit, if that is lower, so pushes never hit the limit. */
static size_t watch_output_high(const server_t *s)
{
    size_t half = s->cfg.resp.reply_bytes_max / 2;
    return half < WATCH_OUTPUT_BYTES_HIGH ? half : WATCH_OUTPUT_BYTES_HIGH;
}
#define WATCH_PREFIX_BYTES_MAX 4096u

void keel__srv_feed_end(server_t *s, client_state_t *cs)
{
    watcher_t *w = cs->feed;
    if (w == NULL)
        return;
    keel_list_remove(&w->link);
    if (w->reg)
        s->regfeeds_n--;
    free(w);
    s->watchers_n--;
    cs->feed = NULL;
}

static int feed_match(const watcher_t *w, const keel_kv_change_t *ch)
{
    return ch->key_len >= w->prefix_len && memcmp(ch->key, w->prefix, w->prefix_len) == 0;
}

/* Appends the push for the changes of one revision at [from, to) that match. */
static int push_revision(keel_buf_t *b, const keel_kv_t *kv, const watcher_t *w, size_t from,
                         size_t to, size_t n, uint64_t rev)
{
    int rc = keel_resp_write_array_header(b, 3);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(b, "watch");
    if (rc == 0)
        rc = keel_resp_write_int(b, (int64_t)rev);
    if (rc == 0)
        rc = keel_resp_write_array_header(b, n);
    for (size_t i = from; rc == 0 && i < to; i++) {
        keel_kv_change_t ch;
        keel_kv_history_at(kv, i, &ch);
        if (!feed_match(w, &ch))
            continue;
        rc = keel_resp_write_array_header(b, 3);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(b, ch.op == KEEL_KV_CHANGE_PUT ? "put" : "del");
        if (rc == 0)
            rc = keel_resp_write_bulk(b, ch.key, ch.key_len);
        if (rc == 0)
            rc =
                ch.value ? keel_resp_write_bulk(b, ch.value, ch.value_len) : keel_resp_write_nil(b);
    }
    return rc;
}

/* Ends cs's feed with "-LAGGED <text>" (counted in m), closing the connection once it is
 * written: the watch feed's and the registry feed's one way to stop a consumer. */
void keel__srv_feed_lagged(server_t *s, client_state_t *cs, keel_counter_t *m, const char *text)
{
    keel_resp_client_t *c = cs->feed->client;
    keel__srv_feed_end(s, cs);
    cs->feed_ended = 1;
    if (m)
        keel_counter_inc(m);
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    if (d == NULL)
        return;
    int rc = keel_resp_write_errorf(keel_resp_deferred_out(d), "LAGGED %s", text);
    keel_resp_client_close_after_reply(c);
    keel_resp_deferred_done(d, rc);
}

/* The watcher's position left the history: say where it stopped, then close. */
static void feed_lagged(server_t *s, client_state_t *cs, const keel_kv_t *kv)
{
    char text[160];
    snprintf(text, sizeof(text),
             "watcher fell behind this node's change history (oldest available revision %llu); "
             "resume with FROM %llu",
             (unsigned long long)keel_kv_history_oldest(kv), (unsigned long long)cs->feed->after);
    keel__srv_feed_lagged(s, cs, s->m_watch_lagged, text);
}

/*
 * Pushes what the watcher has not been sent, whole revisions at a time, until its output
 * holds WATCH_OUTPUT_BYTES_HIGH. The client may be closed (and cs freed) by the last call
 * into resp_server here; nothing is touched after it.
 */
static void feed_pump(server_t *s, client_state_t *cs)
{
    watcher_t *w = cs->feed;
    if (w->reg) { /* KEEL.REG FEED: the registry's history (regfeed.c) */
        keel__srv_regfeed_pump(s, cs);
        return;
    }
    const keel_kv_t *kv = s->node ? &s->kv.kv : NULL;
    size_t pos, len = kv ? keel_kv_history_len(kv) : 0;
    if (kv == NULL)
        return;
    if (keel_kv_history_seek(kv, w->after, &pos) != 0) {
        feed_lagged(s, cs, kv);
        return;
    }
    size_t held = keel_resp_client_output_bytes(w->client);
    size_t high = watch_output_high(s);
    if (pos == len || held >= high)
        return;
    keel_resp_deferred_t *d = keel_resp_client_defer(w->client); /* a push: done at once */
    if (d == NULL)
        return; /* out of memory: the next pass tries again */
    keel_buf_t *b = keel_resp_deferred_out(d);
    int rc = 0;
    while (rc == 0 && pos < len && held + keel_buf_unread(b) < high) {
        keel_kv_change_t ch;
        keel_kv_history_at(kv, pos, &ch);
        size_t end = pos, n = 0;
        for (; end < len; end++) {
            keel_kv_change_t x;
            keel_kv_history_at(kv, end, &x);
            if (x.revision != ch.revision)
                break;
            n += feed_match(w, &x);
        }
        if (n > 0)
            rc = push_revision(b, kv, w, pos, end, n, ch.revision);
        w->after = ch.revision;
        pos = end;
    }
    keel_resp_deferred_done(d, rc); /* an error (output limit) closes the client */
}

void keel__srv_feed_on_applied(void *data)
{
    server_t *s = data;
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->watchers)
    { /* w may end (lagged, or client closed) */
        watcher_t *w = KEEL_LIST_ENTRY(it, watcher_t, link);
        feed_pump(s, keel_resp_client_data(w->client));
    }
    keel__srv_reg_on_applied(s); /* the registry's blocked HTTP queries (registry_http.c) */
}

void keel__srv_feed_drained(keel_resp_client_t *c)
{
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->feed != NULL)
        feed_pump(keel__srv_of(c), cs);
}

/* Push mode: only PING and QUIT (and the connection can be closed). */
int keel__srv_cmd_keel_watch(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    client_state_t *cs = keel__srv_state(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (cs == NULL || out == NULL)
        return KEEL_ENOMEM;
    int64_t from = -1;
    if (argc != 2 && (argc != 4 || !keel__srv_arg_is(&argv[2], "from")))
        return keel__srv_error(c, "ERR syntax error: KEEL.WATCH prefix [FROM revision]");
    if (argc == 4 && (keel_parse_i64(argv[3].ptr, argv[3].len, &from) != 0 || from < 0))
        return keel__srv_error(c, "ERR value is not an integer or out of range");
    if (keel_pubsub_count(s->pubsub, c) > 0)
        return keel__srv_error(c, "ERR KEEL.WATCH is not allowed in subscribed mode");
    if (argv[1].len > WATCH_PREFIX_BYTES_MAX)
        return keel__srv_error(c, "ERR keel: watch prefix too long");
    if (s->node == NULL)
        return keel__srv_error(c, "ERR keel: server shutting down");
    const keel_kv_t *kv = &s->kv.kv;
    uint64_t after = from >= 0 ? (uint64_t)from : keel_kv_revision(kv);
    size_t pos;
    if (keel_kv_history_seek(kv, after, &pos) != 0)
        return keel_resp_write_errorf(out,
                                      "COMPACTED oldest available revision %llu on this node; "
                                      "changes after %llu are no longer all retained",
                                      (unsigned long long)keel_kv_history_oldest(kv),
                                      (unsigned long long)after);
    watcher_t *w = calloc(1, sizeof(*w) + argv[1].len);
    if (w == NULL)
        return keel__srv_oom(c);
    keel_list_init(&w->link);
    w->client = c;
    w->after = after;
    w->prefix_len = argv[1].len;
    memcpy(w->prefix, argv[1].ptr, argv[1].len);
    int rc = keel_resp_write_array_header(out, 3);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, "watching");
    if (rc == 0)
        rc = keel_resp_write_bulk(out, argv[1].ptr, argv[1].len);
    if (rc == 0)
        rc = keel_resp_write_int(out, (int64_t)after);
    if (rc != 0) {
        free(w);
        return rc;
    }
    keel_list_insert_head(&s->watchers, &w->link);
    s->watchers_n++;
    cs->feed = w;
    feed_pump(s, cs);
    return 0;
}
