/* test_tx_choreo.c - tx/choreo.c against a real keel server: a participant retries a transient
 * failure, gives an action up after its attempts (a refusal, with its effect rolled back and
 * its failure event emitted), never gives a compensation up, acknowledges malformed and
 * foreign events without effect, and applies nothing twice when the whole stream is
 * delivered again; a compensation failing past its retry_for_ms is dead-lettered and its saga
 * marked needs_attention, and the events after it go on. */
#include "test_tx_util.h"

#include "runtime/sqlite.h"
#include "tx/choreo.h"
#include "tx/inbox.h"

#include <stdlib.h>

#define STREAM "choreo:t"

static tx_server_t srv;

typedef struct script {
    const char *saga;
    int fails; /* transient failures before it applies; -1: refused at once */
    int calls;
} script_t;

typedef struct fixture {
    keel_loop_t loop;
    keel_db_t db;
    keel_choreo_t c;
    keel_timer_t check;
    script_t scripts[4];
    uint64_t want_settled; /* every outcome: applied + refused + ... + dead_lettered */
    int done, closed;
} fixture_t;

static int effects(keel_db_t *db, const char *saga)
{
    sqlite3_stmt *st;
    KT_EQ_INT(keel_db_prepare(db, "SELECT COUNT(*) FROM effects WHERE saga = ?1", &st, NULL), 0);
    sqlite3_bind_text(st, 1, saga, -1, SQLITE_STATIC);
    KT_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* Writes its effect first, then fails as scripted: a failure must roll the write back. */
static int scripted(keel_db_t *db, const keel_choreo_event_t *ev, keel_buf_t *out, void *data,
                    keel_errmsg_t *msg)
{
    fixture_t *f = data;
    script_t *s = NULL;
    for (size_t i = 0; i < 4; i++)
        if (strcmp(f->scripts[i].saga, ev->saga) == 0)
            s = &f->scripts[i];
    KT_CHECK(s != NULL);
    s->calls++;
    char sql[128];
    snprintf(sql, sizeof(sql), "INSERT INTO effects (saga) VALUES ('%s')", ev->saga);
    KT_EQ_INT(keel_db_exec(db, sql, msg), 0);
    if (s->fails < 0)
        return keel_errf(msg, KEEL_EREJECTED, "%s refused", ev->saga);
    if (s->calls <= s->fails)
        return keel_errf(msg, KEEL_EIO, "%s: transient %d", ev->saga, s->calls);
    keel_buf_append_str(out, "result-of-");
    keel_buf_append_str(out, ev->saga);
    return 0;
}

/* Whether the n bytes at p contain needle. */
static int has(const uint8_t *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, needle, k) == 0)
            return 1;
    return 0;
}

static void check(keel_timer_t *t, void *data)
{
    fixture_t *f = data;
    const keel_choreo_stats_t *s = keel_choreo_stats(&f->c);
    if (s->applied + s->refused + s->compensated + s->duplicates + s->ignored + s->malformed +
            s->dead_lettered >=
        f->want_settled)
        f->done = 1;
}

static void xadd(const char *id, const char *data)
{
    const char *argv[] = {"XADD", STREAM, "*", "id", id, "data", data};
    keel_client_reply_t r = tx_call(&srv, data ? 7 : 5, argv);
    KT_EQ_INT(r.v->type, KEEL_RESP_BULK);
    keel_client_reply_free(&r);
}

/* [(type, saga, data)] of the events this participant emitted, in stream order. */
static void emitted(char out[][96], size_t *n)
{
    const char *argv[] = {"XRANGE", STREAM, "-", "+"};
    keel_client_reply_t r = tx_call(&srv, 4, argv);
    *n = 0;
    for (size_t i = 0; i < r.v->elems_len; i++) {
        const keel_resp_value_t *fields = &r.v->elems[i].elems[1], *id = &fields->elems[1];
        if (id->str.len < 8 || memcmp(id->str.ptr, "payment/", 8) != 0)
            continue;
        const keel_resp_value_t *d = &fields->elems[3];
        snprintf(out[*n], 96, "%.*s", (int)d->str.len, (const char *)d->str.ptr);
        for (char *p = out[*n]; *p; p++)
            if (*p == '\n')
                *p = '|';
        (*n)++;
    }
    keel_client_reply_free(&r);
}

static void on_closed(keel_choreo_t *c)
{
    fixture_t *f = (fixture_t *)((char *)c - offsetof(fixture_t, c));
    f->closed = 1;
}

static void run(fixture_t *f, uint64_t want)
{
    f->want_settled = want;
    f->done = 0;
    keel_timer_start(&f->check, 10, 10, check, f);
    tx_run_until(&f->loop, &f->done, 20000);
    keel_timer_stop(&f->check);
    /* the emitted events are published by the relay: give it until they are all in */
    for (int i = 0; i < 100; i++)
        uv_run(&f->loop.uv, UV_RUN_NOWAIT), usleep(2000);
}

static void a_participant_retries_gives_actions_up_never_compensations_and_applies_once(void)
{
    fixture_t *f = calloc(1, sizeof(*f));
    keel_errmsg_t msg;
    KT_EQ_INT(keel_loop_init(&f->loop), 0);
    KT_EQ_INT(keel_db_open(&f->db, ":memory:", &msg), 0);
    KT_EQ_INT(keel_db_exec(&f->db, "CREATE TABLE effects (saga TEXT)", &msg), 0);
    f->scripts[0] = (script_t){"t-1", 2, 0};  /* two transient failures, then applies */
    f->scripts[1] = (script_t){"t-2", 99, 0}; /* transient for ever: given up after 3 */
    f->scripts[2] = (script_t){"t-3", -1, 0}; /* refused */
    f->scripts[3] = (script_t){"c-1", 5, 0};  /* a compensation failing 5 times: never given up */
    keel_choreo_config_t cfg = keel_choreo_config_default();
    cfg.db = &f->db;
    cfg.servers = srv.addr;
    cfg.stream = STREAM;
    cfg.consumer = "payment-1";
    cfg.def.name = "payment";
    cfg.def.attempts_max = 3;
    cfg.def.backoff_base_ms = 4;
    cfg.def.backoff_cap_ms = 16;
    cfg.def.rules[0] = (keel_choreo_rule_t){"stock.reserved", KEEL_CHOREO_ACTION, "payment.charged",
                                            "payment.failed", 0};
    cfg.def.rules[1] =
        (keel_choreo_rule_t){"ship.failed", KEEL_CHOREO_COMPENSATION, "payment.refunded", NULL, 0};
    cfg.def.rules_n = 2;
    cfg.handlers[0] = scripted;
    cfg.handlers[1] = scripted;
    cfg.handler_data = f;
    cfg.block_ms = 50;
    keel_metrics_t *metrics = keel_metrics_new();
    cfg.metrics = metrics;
    KT_EQ_INT(keel_choreo_init(&f->c, &f->loop, &cfg, &msg), 0);
    keel_timer_init(&f->loop, &f->check);

    xadd("src/1", "stock.reserved t-1\n1");
    xadd("src/2", "stock.reserved t-2\n2");
    xadd("src/3", "garbage without a header");
    xadd("src/4", "stock.reserved t-3\n3");
    xadd("src/5", NULL);                   /* no data field at all */
    xadd("src/6", "order.created t-4\n4"); /* not payment's business */
    char long_id[KEEL_INBOX_ID_BYTES_MAX + 2];
    memset(long_id, 'i', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    xadd(long_id, "stock.reserved t-5\n5"); /* an id the inbox cannot hold: never blocks */
    xadd("src/7", "ship.failed c-1\nx");
    keel_choreo_start(&f->c);
    run(f, 8 + 4); /* and the 4 events it emits itself, which it ignores */

    const keel_choreo_stats_t *s = keel_choreo_stats(&f->c);
    KT_EQ_U64(s->applied, 1);
    KT_EQ_U64(s->refused, 2);
    KT_EQ_U64(s->compensated, 1);
    KT_EQ_U64(s->malformed, 3);
    KT_EQ_U64(s->ignored, 1 + 4);
    KT_EQ_U64(s->duplicates, 0);
    KT_EQ_U64(s->retries, 2 + 2 + 5); /* t-1 twice, t-2 twice before its 3rd attempt, c-1 5 */
    KT_EQ_INT(f->scripts[0].calls, 3);
    KT_EQ_INT(f->scripts[1].calls, 3);
    KT_EQ_INT(f->scripts[2].calls, 1);
    KT_EQ_INT(f->scripts[3].calls, 6);
    /* only the applied effects are left: failed attempts were rolled back */
    KT_EQ_INT(effects(&f->db, "t-1"), 1);
    KT_EQ_INT(effects(&f->db, "t-2"), 0);
    KT_EQ_INT(effects(&f->db, "t-3"), 0);
    KT_EQ_INT(effects(&f->db, "c-1"), 1);
    char ev[16][96];
    size_t n;
    emitted(ev, &n);
    KT_EQ_U64(n, 4);
    KT_EQ_STR(ev[0], "payment.charged t-1|result-of-t-1"); /* the handler's output */
    KT_EQ_STR(ev[1], "payment.failed t-2|2");              /* a refusal forwards the input */
    KT_EQ_STR(ev[2], "payment.failed t-3|3");
    KT_EQ_STR(ev[3], "payment.refunded c-1|result-of-c-1");
    const char *xp[] = {"XPENDING", STREAM, "payment"};
    keel_client_reply_t r = tx_call(&srv, 3, xp);
    KT_EQ_INT(r.v->elems[0].integer, 0);
    keel_client_reply_free(&r);

    keel_buf_t text;
    keel_buf_init(&text, 0);
    KT_EQ_INT(keel_metrics_render(metrics, &text), 0);
    KT_EQ_INT(keel_buf_append(&text, "", 1), 0);
    const char *t = (const char *)keel_buf_rptr(&text);
    KT_CHECK(strstr(t, "keel_choreo_events_total{participant=\"payment\",outcome=\"refused\"} "
                       "2\n") != NULL);
    KT_CHECK(strstr(t, "keel_choreo_retries_total{participant=\"payment\"} 9\n") != NULL);
    KT_CHECK(strstr(t, "keel_outbox_published_total{choreo=\"payment\"} ") != NULL);
    keel_buf_free(&text);

    /* the whole stream delivered again (as after a lost group): nothing applies twice */
    const char *setid[] = {"XGROUP", "SETID", STREAM, "payment", "0"};
    r = tx_call(&srv, 5, setid);
    keel_client_reply_free(&r);
    run(f, 2 * 12);
    KT_EQ_U64(s->duplicates, 4);
    KT_EQ_U64(s->applied + s->refused + s->compensated, 4);
    KT_EQ_INT(effects(&f->db, "t-1") + effects(&f->db, "c-1"), 2);
    emitted(ev, &n);
    KT_EQ_U64(n, 4);

    keel_timer_close(&f->check, NULL);
    keel_choreo_close(&f->c, on_closed);
    tx_run_until(&f->loop, &f->closed, 5000);
    KT_EQ_INT(keel_loop_close(&f->loop), 0);
    keel_db_close(&f->db);
    keel_metrics_free(metrics);
    free(f);
}

/* A compensation that can never apply is retried for its rule's retry_for_ms, then given up in
 * one keel entry: its saga recorded in <stream>:attention, the entry moved to <stream>:dlq
 * with its fields and error, nothing left pending; the events after it are applied. */
static void a_compensation_failing_past_its_retry_time_is_dead_lettered_and_the_rest_go_on(void)
{
    fixture_t *f = calloc(1, sizeof(*f));
    keel_errmsg_t msg;
    KT_EQ_INT(keel_loop_init(&f->loop), 0);
    KT_EQ_INT(keel_db_open(&f->db, ":memory:", &msg), 0);
    KT_EQ_INT(keel_db_exec(&f->db, "CREATE TABLE effects (saga TEXT)", &msg), 0);
    f->scripts[0] = (script_t){"d-1", 1000000, 0}; /* never applies */
    f->scripts[1] = (script_t){"d-2", 0, 0};
    f->scripts[2] = (script_t){"d-3", 1, 0};
    f->scripts[3] = (script_t){"-", 0, 0};
    keel_choreo_config_t cfg = keel_choreo_config_default();
    cfg.db = &f->db;
    cfg.servers = srv.addr;
    cfg.stream = STREAM;
    cfg.consumer = "refund-1";
    cfg.def.name = "refund";
    cfg.def.backoff_base_ms = 4;
    cfg.def.backoff_cap_ms = 16;
    cfg.def.rules[0] =
        (keel_choreo_rule_t){"ship.lost", KEEL_CHOREO_COMPENSATION, "refund.done", NULL, 300};
    cfg.def.rules_n = 1;
    cfg.handlers[0] = scripted;
    cfg.handler_data = f;
    cfg.block_ms = 50;
    keel_metrics_t *metrics = keel_metrics_new();
    cfg.metrics = metrics;
    KT_EQ_INT(keel_choreo_init(&f->c, &f->loop, &cfg, &msg), 0);
    keel_timer_init(&f->loop, &f->check);
    const char *len_argv[] = {"XLEN", STREAM};
    keel_client_reply_t r = tx_call(&srv, 2, len_argv);
    uint64_t before = (uint64_t)r.v->integer; /* the first test's events: ignored here */
    keel_client_reply_free(&r);
    xadd("lost/1", "ship.lost d-1\nx");
    xadd("lost/2", "ship.lost d-2\ny");
    xadd("lost/3", "ship.lost d-3\nz");
    keel_ms_t t0 = keel_loop_now_ms(&f->loop);
    keel_choreo_start(&f->c);
    run(f, before + 3 + 2); /* and its own 2 events */
    keel_ms_t took = keel_loop_now_ms(&f->loop) - t0;

    const keel_choreo_stats_t *s = keel_choreo_stats(&f->c);
    KT_EQ_U64(s->dead_lettered, 1);
    KT_EQ_U64(s->compensated, 2);
    KT_CHECK(s->retries >= 300 / 16); /* retried until its time was up: backoff at most 16 ms */
    KT_CHECK(took >= 300 && took < 300 + 1500); /* on time, not a backoff late */
    KT_EQ_INT(effects(&f->db, "d-1"), 0);
    KT_EQ_INT(effects(&f->db, "d-2") + effects(&f->db, "d-3"), 2);
    /* the saga needs attention, and says who gave up on what */
    const char *hget[] = {"HGET", STREAM KEEL_CHOREO_ATTENTION_SUFFIX, "d-1"};
    r = tx_call(&srv, 3, hget);
    KT_EQ_INT(r.v->type, KEEL_RESP_BULK);
    KT_CHECK(r.v->str.len > 20 && memcmp(r.v->str.ptr, "refund ship.lost ", 17) == 0);
    KT_CHECK(has(r.v->str.ptr, r.v->str.len, "transient"));
    keel_client_reply_free(&r);
    /* the entry is in the dead-letter stream with its fields and keel's */
    const char *dlq[] = {"XRANGE", STREAM KEEL_CHOREO_DLQ_SUFFIX, "-", "+"};
    r = tx_call(&srv, 4, dlq);
    KT_EQ_U64(r.v->elems_len, 1);
    const keel_resp_value_t *fl = &r.v->elems[0].elems[1];
    KT_EQ_U64(fl->elems_len, 2 * (2 + 5));
    KT_CHECK(fl->elems[1].str.len == 6 && memcmp(fl->elems[1].str.ptr, "lost/1", 6) == 0);
    KT_CHECK(fl->elems[12].str.len == 10 && memcmp(fl->elems[12].str.ptr, "keel-error", 10) == 0);
    KT_CHECK(has(fl->elems[13].str.ptr, fl->elems[13].str.len, "d-1: transient"));
    keel_client_reply_free(&r);
    /* nothing pending, and the group keeps no dead-letter policy outside that entry */
    const char *xp[] = {"XPENDING", STREAM, "refund"};
    r = tx_call(&srv, 3, xp);
    KT_EQ_INT(r.v->elems[0].integer, 0);
    keel_client_reply_free(&r);

    keel_buf_t text;
    keel_buf_init(&text, 0);
    KT_EQ_INT(keel_metrics_render(metrics, &text), 0);
    KT_EQ_INT(keel_buf_append(&text, "", 1), 0);
    KT_CHECK(strstr((const char *)keel_buf_rptr(&text),
                    "keel_choreo_events_total{participant=\"refund\",outcome=\"dead_lettered\"} "
                    "1\n") != NULL);
    keel_buf_free(&text);
    printf("  dead-lettered after %lld ms, %llu retries\n", (long long)took,
           (unsigned long long)s->retries);

    keel_timer_close(&f->check, NULL);
    keel_choreo_close(&f->c, on_closed);
    tx_run_until(&f->loop, &f->closed, 5000);
    KT_EQ_INT(keel_loop_close(&f->loop), 0);
    keel_db_close(&f->db);
    keel_metrics_free(metrics);
    free(f);
}

static void a_definition_without_handlers_or_a_bad_consumer_is_refused(void)
{
    keel_loop_t loop;
    keel_db_t db;
    keel_choreo_t c;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_loop_init(&loop), 0);
    KT_EQ_INT(keel_db_open(&db, ":memory:", &msg), 0);
    keel_choreo_config_t cfg = keel_choreo_config_default();
    cfg.db = &db;
    cfg.servers = srv.addr;
    cfg.stream = STREAM;
    cfg.consumer = "x";
    cfg.def.name = "x";
    cfg.def.rules[0] = (keel_choreo_rule_t){"a", KEEL_CHOREO_ACTION, "b", "c", 0};
    cfg.def.rules_n = 1;
    KT_EQ_INT(keel_choreo_init(&c, &loop, &cfg, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "no handler") != NULL);
    cfg.handlers[0] = scripted;
    cfg.consumer = "a b";
    KT_EQ_INT(keel_choreo_init(&c, &loop, &cfg, &msg), KEEL_EINVAL);
    cfg.consumer = "x";
    cfg.batch_entries_max = KEEL_CHOREO_BATCH_ENTRIES_MAX + 1;
    KT_EQ_INT(keel_choreo_init(&c, &loop, &cfg, &msg), KEEL_EINVAL);
    KT_EQ_INT(keel_loop_close(&loop), 0);
    keel_db_close(&db);
}

int main(void)
{
    if (tx_server_start(&srv) != 0) {
        printf("skipped: build/keel not built\n");
        return 0;
    }
    KT_RUN(a_participant_retries_gives_actions_up_never_compensations_and_applies_once);
    KT_RUN(a_compensation_failing_past_its_retry_time_is_dead_lettered_and_the_rest_go_on);
    KT_RUN(a_definition_without_handlers_or_a_bad_consumer_is_refused);
    tx_server_stop(&srv);
    return kt_done();
}
