/* test_tx_choreo_watch.c - tx/choreo_watch.c against a real keel server: a saga that does not
 * reach an end event by its deadline is marked needs_attention and one that ends is not; the
 * deadlines live in keel server, so a watcher started after the deadline passed (its
 * predecessor closed) still marks the saga, and the gauges count what keel holds. */
#include "test_tx_util.h"

#include "tx/choreo_watch.h"

#include <stdlib.h>
#include <unistd.h>

#define STREAM "choreo:w"

static tx_server_t srv;

typedef struct fixture {
    keel_loop_t loop;
    keel_choreo_watch_t w;
    keel_timer_t poll;
    uint64_t want_events, want_missed;
    int done, closed;
} fixture_t;

static void xadd(const char *data)
{
    const char *argv[] = {"XADD", STREAM, "*", "id", "t/1", "data", data};
    keel_client_reply_t r = tx_call(&srv, 7, argv);
    KT_EQ_INT(r.v->type, KEEL_RESP_BULK);
    keel_client_reply_free(&r);
}

/* The attention record of saga, or "" when it has none. */
static void attention(const char *saga, char *out, size_t cap)
{
    const char *argv[] = {"HGET", STREAM KEEL_CHOREO_ATTENTION_SUFFIX, saga};
    keel_client_reply_t r = tx_call(&srv, 3, argv);
    if (r.v->type == KEEL_RESP_BULK)
        snprintf(out, cap, "%.*s", (int)r.v->str.len, (const char *)r.v->str.ptr);
    else
        snprintf(out, cap, "%s", "");
    keel_client_reply_free(&r);
}

static int64_t int_reply(size_t argc, const char **argv)
{
    keel_client_reply_t r = tx_call(&srv, argc, argv);
    int64_t v = r.v->type == KEEL_RESP_INT ? r.v->integer : -1;
    keel_client_reply_free(&r);
    return v;
}

static void poll_tick(keel_timer_t *t, void *data)
{
    fixture_t *f = data;
    const keel_choreo_watch_stats_t *s = keel_choreo_watch_stats(&f->w);
    if (s->events >= f->want_events && s->missed >= f->want_missed && s->needs_attention >= 0)
        f->done = 1;
}

static void on_closed(keel_choreo_watch_t *w)
{
    fixture_t *f = (fixture_t *)((char *)w - offsetof(fixture_t, w));
    f->closed = 1;
}

static void watch_start(fixture_t *f, keel_metrics_t *m)
{
    keel_choreo_watch_config_t cfg = keel_choreo_watch_config_default();
    keel_errmsg_t msg;
    cfg.servers = srv.addr;
    cfg.stream = STREAM;
    cfg.ends[0] = "x.done";
    cfg.ends[1] = "x.undone";
    cfg.ends_n = 2;
    cfg.saga_deadline_ms = 400;
    cfg.check_interval_ms = 50;
    cfg.block_ms = 50;
    cfg.metrics = m;
    f->closed = 0;
    KT_EQ_INT(keel_choreo_watch_init(&f->w, &f->loop, &cfg, &msg), 0);
    keel_choreo_watch_start(&f->w);
}

static void watch_until(fixture_t *f, uint64_t events, uint64_t missed)
{
    f->want_events = events;
    f->want_missed = missed;
    f->done = 0;
    keel_timer_start(&f->poll, 10, 10, poll_tick, f);
    tx_run_until(&f->loop, &f->done, 10000);
    keel_timer_stop(&f->poll);
}

static void watch_close(fixture_t *f)
{
    keel_choreo_watch_close(&f->w, on_closed);
    tx_run_until(&f->loop, &f->closed, 5000);
}

static void a_saga_past_its_deadline_needs_attention_even_across_a_watcher_restart(void)
{
    fixture_t *f = calloc(1, sizeof(*f));
    KT_EQ_INT(keel_loop_init(&f->loop), 0);
    keel_timer_init(&f->loop, &f->poll);
    keel_metrics_t *m1 = keel_metrics_new(), *m2 = keel_metrics_new();

    xadd("x.start w-1\n1");
    xadd("x.mid w-1\n1");
    xadd("x.done w-1\n1");
    xadd("x.start w-2\n2"); /* never ends */
    xadd("not an event");
    keel_ms_t t0 = keel_loop_now_ms(&f->loop);
    watch_start(f, m1);
    watch_until(f, 5, 1);
    keel_ms_t took = keel_loop_now_ms(&f->loop) - t0;
    const keel_choreo_watch_stats_t *s = keel_choreo_watch_stats(&f->w);
    KT_EQ_U64(s->ends, 1);
    KT_EQ_U64(s->malformed, 1);
    KT_EQ_U64(s->missed, 1);
    KT_CHECK(took >= 350 && took < 3000); /* 400 ms after w-2's entry, give or take a check */
    char why[128];
    attention("w-2", why, sizeof(why));
    KT_CHECK(strncmp(why, "watch deadline ", 15) == 0);
    attention("w-1", why, sizeof(why));
    KT_EQ_STR(why, "");
    const char *zcard[] = {"ZCARD", STREAM KEEL_CHOREO_DEADLINES_SUFFIX};
    KT_EQ_INT(int_reply(2, zcard), 0);

    /* w-3 starts while this watcher runs; the watcher closes before its deadline */
    xadd("x.start w-3\n3");
    const char *zscore[] = {"ZSCORE", STREAM KEEL_CHOREO_DEADLINES_SUFFIX, "w-3"};
    for (int i = 0; i < 200; i++) {
        keel_client_reply_t r = tx_call(&srv, 3, zscore);
        int there = r.v->type == KEEL_RESP_BULK;
        keel_client_reply_free(&r);
        if (there)
            break;
        uv_run(&f->loop.uv, UV_RUN_NOWAIT);
        usleep(5000);
    }
    KT_EQ_INT(int_reply(2, zcard), 1);
    watch_close(f);
    /* while nobody watches: w-4 starts and ends; w-3's deadline passes */
    xadd("x.start w-4\n4");
    xadd("x.undone w-4\n4");
    usleep(500 * 1000);
    attention("w-3", why, sizeof(why));
    KT_EQ_STR(why, ""); /* nobody marked it yet */
    watch_start(f, m2);
    watch_until(f, 2, 1); /* the new instance reads w-4's two events and marks w-3 */
    attention("w-3", why, sizeof(why));
    KT_CHECK(strncmp(why, "watch deadline ", 15) == 0);
    attention("w-4", why, sizeof(why));
    KT_EQ_STR(why, "");
    KT_EQ_INT(int_reply(2, zcard), 0);
    /* the gauges: what keel holds, read at the check after the marking */
    s = keel_choreo_watch_stats(&f->w);
    for (int i = 0; i < 100 && s->needs_attention != 2; i++)
        uv_run(&f->loop.uv, UV_RUN_ONCE);
    KT_EQ_INT(s->needs_attention, 2);
    KT_EQ_INT(s->running, 0);
    keel_buf_t text;
    keel_buf_init(&text, 0);
    KT_EQ_INT(keel_metrics_render(m2, &text), 0);
    KT_EQ_INT(keel_buf_append(&text, "", 1), 0);
    const char *t = (const char *)keel_buf_rptr(&text);
    KT_CHECK(strstr(t, "keel_choreo_sagas{stream=\"choreo:w\",state=\"needs_attention\"} 2\n"));
    KT_CHECK(strstr(t, "keel_choreo_sagas{stream=\"choreo:w\",state=\"running\"} 0\n"));
    KT_CHECK(strstr(t, "keel_choreo_deadlines_missed_total{stream=\"choreo:w\"} 1\n"));
    keel_buf_free(&text);
    const char *xp[] = {"XPENDING", STREAM, "watch"};
    keel_client_reply_t r = tx_call(&srv, 3, xp);
    KT_EQ_INT(r.v->elems[0].integer, 0);
    keel_client_reply_free(&r);

    watch_close(f);
    keel_timer_close(&f->poll, NULL);
    KT_EQ_INT(keel_loop_close(&f->loop), 0);
    keel_metrics_free(m1);
    keel_metrics_free(m2);
    free(f);
}

static void a_watcher_without_end_types_or_a_deadline_is_refused(void)
{
    keel_loop_t loop;
    keel_choreo_watch_t w;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_loop_init(&loop), 0);
    keel_choreo_watch_config_t cfg = keel_choreo_watch_config_default();
    cfg.servers = srv.addr;
    cfg.stream = STREAM;
    cfg.saga_deadline_ms = 1000;
    KT_EQ_INT(keel_choreo_watch_init(&w, &loop, &cfg, &msg), KEEL_EINVAL);
    cfg.ends[0] = "x done";
    cfg.ends_n = 1;
    KT_EQ_INT(keel_choreo_watch_init(&w, &loop, &cfg, &msg), KEEL_EINVAL);
    cfg.ends[0] = "x.done";
    cfg.saga_deadline_ms = 0;
    KT_EQ_INT(keel_choreo_watch_init(&w, &loop, &cfg, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "saga_deadline_ms") != NULL);
    KT_EQ_INT(keel_loop_close(&loop), 0);
}

int main(void)
{
    if (tx_server_start(&srv) != 0) {
        printf("skipped: build/keel not built\n");
        return 0;
    }
    KT_RUN(a_saga_past_its_deadline_needs_attention_even_across_a_watcher_restart);
    KT_RUN(a_watcher_without_end_types_or_a_deadline_is_refused);
    tx_server_stop(&srv);
    return kt_done();
}
