/* test_evstore.c - the event store against a real keel server: expected versions, conflicts
 * naming the current version, racing writers, loads from snapshots. */
#include "test_tx_util.h"
#include "tx/evstore.h"

#include <stdlib.h>

static tx_server_t srv;
static int have_server;

typedef struct env {
    keel_loop_t loop;
    keel_client_t cl[4];
    keel_es_t es[4];
    int n;
} env_t;

static void env_init(env_t *e, int n, uint32_t snapshot_every)
{
    KT_EQ_INT(keel_loop_init(&e->loop), 0);
    e->n = n;
    keel_es_config_t cfg = keel_es_config_default();
    cfg.snapshot_every_events = snapshot_every;
    for (int i = 0; i < n; i++) {
        tx_client_init(&e->cl[i], &e->loop, &srv);
        KT_EQ_INT(keel_es_init(&e->es[i], &e->cl[i], &cfg), 0);
    }
}

static void env_free(env_t *e)
{
    for (int i = 0; i < e->n; i++) {
        KT_EQ_INT(keel_es_pending(&e->es[i]), 0);
        keel_es_free(&e->es[i]);
        tx_client_close(&e->cl[i], &e->loop);
    }
    KT_EQ_INT(keel_loop_close(&e->loop), 0);
}

/* ---- one append, one load, waited for ---------------------------------------------------- */

typedef struct result {
    int done, err;
    uint64_t version;
    char msg[200];
    keel_buf_t state;
} result_t;

static void on_append(keel_es_t *es, void *ctx, int err, uint64_t version, const char *msg)
{
    (void)es;
    result_t *r = ctx;
    r->err = err;
    r->version = version;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    r->done = 1;
}

static void on_load(keel_es_t *es, void *ctx, int err, uint64_t version, const keel_buf_t *state,
                    const char *msg)
{
    (void)es;
    result_t *r = ctx;
    r->err = err;
    r->version = version;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    keel_buf_init(&r->state, 0);
    if (err == 0)
        keel_buf_append(&r->state, keel_buf_rptr(state), keel_buf_unread(state));
    r->done = 1;
}

static keel_es_event_t ev(const char *type, const char *data, const char *meta)
{
    return (keel_es_event_t){.type = type,
                             .type_len = strlen(type),
                             .data = (const uint8_t *)data,
                             .data_len = strlen(data),
                             .meta = (const uint8_t *)meta,
                             .meta_len = strlen(meta)};
}

static result_t append(env_t *e, int w, const char *agg, uint64_t expected,
                       const keel_es_event_t *evs, size_t n)
{
    result_t r = {0};
    KT_EQ_INT(keel_es_append(&e->es[w], agg, expected, evs, n, on_append, &r), 0);
    tx_run_until(&e->loop, &r.done, 10000);
    return r;
}

/* The fold used here: the state is the text "v:type(data|meta);" for each event. */
static int fold_text(void *data, keel_buf_t *state, const keel_es_event_t *ev)
{
    (void)data;
    return keel_buf_printf(state, "%llu:%.*s(%.*s|%.*s);", (unsigned long long)ev->version,
                           (int)ev->type_len, ev->type, (int)ev->data_len, (const char *)ev->data,
                           (int)ev->meta_len, (const char *)ev->meta);
}

static result_t load(env_t *e, const char *agg, uint32_t schema)
{
    keel_es_fold_t fold = {.apply = fold_text, .schema = schema};
    result_t r = {0};
    KT_EQ_INT(keel_es_load(&e->es[0], agg, &fold, on_load, &r), 0);
    tx_run_until(&e->loop, &r.done, 10000);
    /* a snapshot write may follow the answer */
    while (keel_es_pending(&e->es[0]) > 0)
        uv_run(&e->loop.uv, UV_RUN_ONCE);
    return r;
}

static int state_is(result_t *r, const char *want)
{
    size_t n = strlen(want);
    int ok = keel_buf_unread(&r->state) == n &&
             (n == 0 || memcmp(keel_buf_rptr(&r->state), want, n) == 0);
    if (!ok)
        fprintf(stderr, "state: %.*s\nwant:  %s\n", (int)keel_buf_unread(&r->state),
                (const char *)keel_buf_rptr(&r->state), want);
    keel_buf_free(&r->state);
    return ok;
}

static int64_t xlen(const char *key)
{
    const char *argv[] = {"XLEN", key};
    keel_client_reply_t r = tx_call(&srv, 2, argv);
    int64_t n = r.v->integer;
    keel_client_reply_free(&r);
    return n;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void appends_at_the_expected_version_number_events_densely_from_one(void)
{
    env_t e;
    env_init(&e, 1, 0);
    keel_es_event_t a[] = {ev("Opened", "alice", "corr=1"), ev("Deposited", "50", "corr=2"),
                           ev("Deposited", "", "")};
    result_t r = append(&e, 0, "acct-1", KEEL_ES_NO_STREAM, a, 3);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 3);
    keel_es_event_t b[] = {ev("Withdrawn", "20", "corr=3")};
    r = append(&e, 0, "acct-1", 3, b, 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 4);
    r = load(&e, "acct-1", 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 4);
    KT_CHECK(state_is(&r, "1:Opened(alice|corr=1);2:Deposited(50|corr=2);3:Deposited(|);"
                          "4:Withdrawn(20|corr=3);"));
    KT_EQ_INT(xlen("es:acct-1"), 4);
    KT_EQ_INT(xlen("es:$ce-acct"), 4);
    /* an aggregate never written loads as version 0 with an empty state */
    r = load(&e, "acct-none", 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 0);
    KT_CHECK(state_is(&r, ""));
    env_free(&e);
}

static void a_stale_or_future_expected_version_is_a_conflict_naming_the_current_one(void)
{
    env_t e;
    env_init(&e, 2, 0);
    keel_es_event_t a[] = {ev("A", "1", ""), ev("B", "2", "")};
    KT_EQ_INT(append(&e, 0, "conf-1", KEEL_ES_NO_STREAM, a, 2).err, 0);
    result_t r = append(&e, 0, "conf-1", KEEL_ES_NO_STREAM, a, 1);
    KT_EQ_INT(r.err, KEEL_ECONFLICT);
    KT_EQ_U64(r.version, 2);
    KT_CHECK(strstr(r.msg, "expected 0, current 2") != NULL);
    /* a store that never saw it sends no read first (the version key watched absent): the
     * watch fails, and the version read then names the conflict */
    r = append(&e, 1, "conf-1", KEEL_ES_NO_STREAM, a, 1);
    KT_EQ_INT(r.err, KEEL_ECONFLICT);
    KT_EQ_U64(r.version, 2);
    KT_EQ_U64(e.es[1].stats.appends_hinted, 1);
    r = append(&e, 0, "conf-1", 1, a, 1);
    KT_EQ_INT(r.err, KEEL_ECONFLICT);
    KT_EQ_U64(r.version, 2);
    r = append(&e, 0, "conf-1", 7, a, 1); /* from the future: no gap is made */
    KT_EQ_INT(r.err, KEEL_ECONFLICT);
    KT_EQ_U64(r.version, 2);
    KT_EQ_INT(xlen("es:conf-1"), 2);
    KT_EQ_INT(xlen("es:$ce-conf"), 2);
    /* KEEL_ES_ANY appends after whatever is there */
    r = append(&e, 0, "conf-1", KEEL_ES_ANY, a, 2);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 4);
    env_free(&e);
}

static void bad_names_types_and_counts_are_refused_before_anything_is_sent(void)
{
    env_t e;
    env_init(&e, 1, 0);
    result_t r = {0};
    keel_es_event_t a[] = {ev("A", "", "")}, bad[] = {ev("has space", "", "")};
    KT_EQ_INT(keel_es_append(&e.es[0], "no:colon", 0, a, 1, on_append, &r), KEEL_EINVAL);
    KT_EQ_INT(keel_es_append(&e.es[0], "", 0, a, 1, on_append, &r), KEEL_EINVAL);
    KT_EQ_INT(keel_es_append(&e.es[0], "x-1", 0, bad, 1, on_append, &r), KEEL_EINVAL);
    KT_EQ_INT(keel_es_append(&e.es[0], "x-1", 0, a, 0, on_append, &r), KEEL_EINVAL);
    KT_EQ_INT(keel_es_append(&e.es[0], "x-1", 0, a, KEEL_ES_APPEND_EVENTS_MAX + 1, on_append, &r),
              KEEL_EINVAL);
    /* at most KEEL_ES_APPEND_BYTES_MAX in one append: exactly that goes in, one more not */
    size_t big_n = KEEL_ES_APPEND_BYTES_MAX / 4; /* four fit, five do not */
    char *big = malloc(big_n + 1);
    memset(big, 'x', big_n);
    big[big_n] = 0;
    keel_es_event_t four[5]; /* the fifth is one too many */
    for (int i = 0; i < 5; i++)
        four[i] = ev("Big", big, "");
    KT_EQ_INT(keel_es_append(&e.es[0], "big-1", 0, four, 5, on_append, &r), KEEL_EINVAL);
    KT_EQ_INT(r.done, 0);
    KT_EQ_INT(keel_es_pending(&e.es[0]), 0);
    r = append(&e, 0, "big-1", 0, four, 4);
    if (r.err != 0)
        KT_FAIL("%s: %s", keel_err_name(r.err), r.msg);
    KT_EQ_U64(r.version, 4);
    r = load(&e, "big-1", 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 4);
    KT_CHECK(keel_buf_unread(&r.state) > 4 * big_n);
    keel_buf_free(&r.state);
    free(big);
    env_free(&e);
}

/* Two writers on two connections append at the same expected version in the same loop turn,
 * 200 times: each time exactly one wins and the other is told the winner's version. */
static void two_writers_racing_on_one_version_exactly_one_wins_each_time(void)
{
    env_t e;
    env_init(&e, 2, 0);
    int wins[2] = {0, 0};
    for (uint64_t v = 0; v < 200; v++) {
        char d0[32], d1[32];
        snprintf(d0, sizeof(d0), "w0@%llu", (unsigned long long)v);
        snprintf(d1, sizeof(d1), "w1@%llu", (unsigned long long)v);
        keel_es_event_t e0[] = {ev("W", d0, "")}, e1[] = {ev("W", d1, ""), ev("W", d1, "")};
        result_t r0 = {0}, r1 = {0};
        KT_EQ_INT(keel_es_append(&e.es[0], "race-1", v, e0, 1, on_append, &r0), 0);
        KT_EQ_INT(keel_es_append(&e.es[1], "race-1", v, e1, 2, on_append, &r1), 0);
        tx_run_until(&e.loop, &r0.done, 10000);
        tx_run_until(&e.loop, &r1.done, 10000);
        if ((r0.err == 0) == (r1.err == 0))
            KT_FAIL("round %llu: errs %d and %d", (unsigned long long)v, r0.err, r1.err);
        result_t *won = r0.err == 0 ? &r0 : &r1, *lost = r0.err == 0 ? &r1 : &r0;
        KT_EQ_INT(lost->err, KEEL_ECONFLICT);
        KT_EQ_U64(lost->version, won->version);
        wins[r0.err == 0 ? 0 : 1]++;
        /* writer 1 appends two events: the next round starts at the winner's version */
        if (r1.err == 0) {
            KT_EQ_U64(r1.version, v + 2);
            v++;
        }
    }
    fprintf(stderr, "     wins: writer 0 %d, writer 1 %d\n", wins[0], wins[1]);
    /* the stream is dense and each version holds exactly one writer's event */
    result_t r = load(&e, "race-1", 1);
    KT_EQ_INT(r.err, 0);
    KT_CHECK(r.version >= 200);
    KT_EQ_INT(xlen("es:race-1"), (int64_t)r.version);
    KT_EQ_INT(xlen("es:$ce-race"), (int64_t)r.version);
    keel_buf_free(&r.state);
    env_free(&e);
}

/* Four writers each retry from the version a conflict names until each has 40 events in:
 * the aggregate ends at exactly 160 with every event present once. */
typedef struct writer {
    env_t *e;
    int id, wins, conflicts, busy;
    uint64_t next_expected;
    char data[32];
} writer_t;

static void writer_go(writer_t *w);

static void on_writer(keel_es_t *es, void *ctx, int err, uint64_t version, const char *msg)
{
    (void)es;
    writer_t *w = ctx;
    if (err != 0 && err != KEEL_ECONFLICT)
        KT_FAIL("writer %d: %s %s", w->id, keel_err_name(err), msg);
    if (err == 0)
        w->wins++;
    else
        w->conflicts++;
    w->next_expected = version;
    w->busy = 0;
    if (w->wins < 40)
        writer_go(w);
}

static void writer_go(writer_t *w)
{
    snprintf(w->data, sizeof(w->data), "%d.%d", w->id, w->wins);
    keel_es_event_t a[] = {ev("W", w->data, "")};
    w->busy = 1;
    KT_EQ_INT(keel_es_append(&w->e->es[w->id], "free-1", w->next_expected, a, 1, on_writer, w), 0);
}

static int count_of(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static void racing_writers_that_retry_from_the_named_version_lose_and_repeat_nothing(void)
{
    env_t e;
    env_init(&e, 4, 0);
    writer_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){.e = &e, .id = i};
        writer_go(&w[i]);
    }
    int all = 0;
    while (!all) {
        uv_run(&e.loop.uv, UV_RUN_ONCE);
        all = 1;
        for (int i = 0; i < 4; i++)
            all &= w[i].wins == 40 && !w[i].busy;
    }
    int conflicts = w[0].conflicts + w[1].conflicts + w[2].conflicts + w[3].conflicts;
    fprintf(stderr, "     160 appends, %d conflicts\n", conflicts);
    result_t r = load(&e, "free-1", 1);
    KT_EQ_U64(r.version, 160);
    keel_buf_append(&r.state, "", 1);
    const char *s = (const char *)keel_buf_rptr(&r.state);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 40; k++) {
            char want[32];
            snprintf(want, sizeof(want), "(%d.%d|)", i, k);
            KT_EQ_INT(count_of(s, want), 1);
        }
    keel_buf_free(&r.state);
    env_free(&e);
}

static void a_load_starts_from_the_latest_snapshot_and_writes_one_every_n_events(void)
{
    env_t e;
    env_init(&e, 1, 10);
    char data[16];
    for (int i = 1; i <= 25; i++) {
        snprintf(data, sizeof(data), "%d", i);
        keel_es_event_t a[] = {ev("N", data, "")};
        KT_EQ_INT(append(&e, 0, "snap-1", (uint64_t)i - 1, a, 1).err, 0);
    }
    result_t r = load(&e, "snap-1", 1);
    KT_EQ_U64(r.version, 25);
    keel_buf_free(&r.state);
    KT_EQ_U64(e.es[0].stats.events_replayed, 25);
    KT_EQ_U64(e.es[0].stats.snapshots_written, 1);
    const char *argv[] = {"GET", "es:snap-1:snap"};
    keel_client_reply_t g = tx_call(&srv, 2, argv);
    KT_CHECK(g.v->type == KEEL_RESP_BULK && g.v->str.len > 6 &&
             memcmp(g.v->str.ptr, "1 25\n1:N(1|);", 13) == 0);
    keel_client_reply_free(&g);
    for (int i = 26; i <= 28; i++) {
        snprintf(data, sizeof(data), "%d", i);
        keel_es_event_t a[] = {ev("N", data, "")};
        KT_EQ_INT(append(&e, 0, "snap-1", (uint64_t)i - 1, a, 1).err, 0);
    }
    r = load(&e, "snap-1", 1); /* from the snapshot: three events replayed */
    KT_EQ_U64(r.version, 28);
    KT_EQ_U64(e.es[0].stats.snapshots_used, 1);
    KT_EQ_U64(e.es[0].stats.events_replayed, 28);
    KT_EQ_U64(e.es[0].stats.snapshots_written, 1); /* 28 < 25 + 10 */
    keel_buf_append(&r.state, "", 1);
    KT_CHECK(strstr((const char *)keel_buf_rptr(&r.state), "25:N(25|);26:N(26|);27:N(27|);28:N("
                                                           "28|);") != NULL);
    KT_CHECK(strncmp((const char *)keel_buf_rptr(&r.state), "1:N(1|);2:N(2|);", 16) == 0);
    keel_buf_free(&r.state);
    /* another schema ignores the snapshot and replays everything (and writes its own) */
    r = load(&e, "snap-1", 2);
    KT_EQ_U64(r.version, 28);
    KT_EQ_U64(e.es[0].stats.events_replayed, 28 + 28);
    KT_EQ_U64(e.es[0].stats.snapshots_written, 2);
    keel_buf_free(&r.state);
    env_free(&e);
}

static void a_snapshot_is_never_replaced_by_an_older_one(void)
{
    env_t e;
    env_init(&e, 1, 1);
    keel_es_event_t a[] = {ev("N", "x", "")};
    KT_EQ_INT(append(&e, 0, "old-1", 0, a, 1).err, 0);
    KT_EQ_INT(append(&e, 0, "old-1", 1, a, 1).err, 0);
    /* someone wrote a newer snapshot (version 9) in the meantime */
    const char *set[] = {"SET", "es:old-1:snap", "1 9\nNEWER"};
    keel_client_reply_t g = tx_call(&srv, 3, set);
    keel_client_reply_free(&g);
    /* a load that uses it... */
    result_t r = load(&e, "old-1", 1);
    KT_EQ_U64(r.version, 9);
    KT_CHECK(state_is(&r, "NEWER"));
    /* ...and one under another schema, which replays 2 events and would write version 2:
     * the stored version 9 stays */
    r = load(&e, "old-1", 2);
    KT_EQ_U64(r.version, 2);
    keel_buf_free(&r.state);
    const char *get[] = {"GET", "es:old-1:snap"};
    g = tx_call(&srv, 2, get);
    KT_CHECK(g.v->str.len == 9 && memcmp(g.v->str.ptr, "1 9\nNEWER", 9) == 0);
    keel_client_reply_free(&g);
    env_free(&e);
}

/* The store remembers the version key's revision from its last append or load of an
 * aggregate: the next append at that version skips the read. A hint made stale by another
 * writer only costs the read: the watch fails and the conflict names the current version. */
/* An append's commands in a caller's own transaction (a saga's end entry): the events land
 * at the versions after base, and the store's next append, hinted or not, follows them. */
static void append_commands_in_a_transaction_of_ones_own_number_the_events_after_base(void)
{
    env_t e;
    env_init(&e, 1, 0);
    keel_es_event_t a[] = {ev("Opened", "bob", "")};
    result_t r = append(&e, 0, "acct-7", KEEL_ES_NO_STREAM, a, 1);
    KT_EQ_INT(r.err, 0);
    keel_args_t args;
    keel_args_init(&args, 256, 0);
    keel_args_strs(&args, 2, (const char *[]){"KEEL.TXN", "0"});
    keel_args_str(&args, "0"); /* the count: replaced below */
    keel_es_event_t b[] = {ev("Deposited", "5", "m"), ev("Closed", "", "")};
    size_t cmds = 0;
    KT_EQ_INT(keel_es_append_cmds(&args, "acct-7", 1, b, 2, &cmds), 0);
    KT_EQ_U64(cmds, 5); /* the version, two XADDs per event */
    char count[8];
    snprintf(count, sizeof(count), "%zu", cmds);
    KT_EQ_INT(keel_args_resolve(&args), 0);
    args.ptrs[2] = count;
    args.lens[2] = strlen(count);
    const char *argv[64];
    KT_CHECK(args.n <= 64);
    for (size_t i = 0; i < args.n; i++)
        argv[i] = strndup(args.ptrs[i], args.lens[i]); /* the blocking call's C strings */
    keel_client_reply_t t = tx_call(&srv, args.n, argv);
    KT_CHECK(t.v->type == KEEL_RESP_ARRAY && t.v->elems_len == 5);
    keel_client_reply_free(&t);
    for (size_t i = 0; i < args.n; i++)
        free((void *)argv[i]);
    r = load(&e, "acct-7", 1);
    KT_EQ_U64(r.version, 3);
    KT_CHECK(state_is(&r, "1:Opened(bob|);2:Deposited(5|m);3:Closed(|);"));
    KT_EQ_INT(xlen("es:acct-7"), 3);
    /* the store's hint (version 1, from its own append) is stale: the append reads, and
     * goes after version 3 */
    keel_es_event_t c[] = {ev("Reopened", "", "")};
    r = append(&e, 0, "acct-7", 3, c, 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 4);
    /* bad input is refused before anything is added */
    size_t before = args.n;
    keel_es_event_t bad[] = {ev("no space", "", "")};
    KT_EQ_INT(keel_es_append_cmds(&args, "acct-7", 4, bad, 1, &cmds), KEEL_EINVAL);
    KT_EQ_INT(keel_es_append_cmds(&args, "acct 7", 4, c, 1, &cmds), KEEL_EINVAL);
    KT_EQ_U64(args.n, before);
    keel_args_free(&args);
    env_free(&e);
}

static void an_append_after_a_load_or_an_append_skips_the_read_and_a_stale_hint_is_harmless(void)
{
    env_t e;
    env_init(&e, 2, 0);
    keel_es_event_t a[] = {ev("A", "1", "")};
    KT_EQ_INT(append(&e, 1, "hint-1", 0, a, 1).err, 0); /* writer 1 creates it */
    result_t r = load(&e, "hint-1", 1);                 /* writer 0 loads it: version 1 */
    keel_buf_free(&r.state);
    uint64_t before = e.es[0].stats.appends_hinted;
    r = append(&e, 0, "hint-1", 1, a, 1);
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(e.es[0].stats.appends_hinted, before + 1);
    r = append(&e, 0, "hint-1", 2, a, 1); /* after its own append */
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(e.es[0].stats.appends_hinted, before + 2);
    KT_EQ_INT(append(&e, 1, "hint-1", KEEL_ES_ANY, a, 1).err, 0); /* now 4: writer 0's hint is 3 */
    r = append(&e, 0, "hint-1", 3, a, 1);
    KT_EQ_INT(r.err, KEEL_ECONFLICT);
    KT_EQ_U64(r.version, 4);
    KT_EQ_U64(e.es[0].stats.appends_hinted, before + 3);
    r = append(&e, 0, "hint-1", 4, a, 1); /* the conflict refreshed the hint */
    KT_EQ_INT(r.err, 0);
    KT_EQ_U64(r.version, 5);
    KT_EQ_U64(e.es[0].stats.appends_hinted, before + 4);
    KT_EQ_INT(xlen("es:hint-1"), 5);
    env_free(&e);
}

int main(void)
{
    if (tx_server_start(&srv) != 0) {
        printf("skipped: build/keel not built\n");
        return 0;
    }
    have_server = 1;
    KT_RUN(appends_at_the_expected_version_number_events_densely_from_one);
    KT_RUN(a_stale_or_future_expected_version_is_a_conflict_naming_the_current_one);
    KT_RUN(bad_names_types_and_counts_are_refused_before_anything_is_sent);
    KT_RUN(two_writers_racing_on_one_version_exactly_one_wins_each_time);
    KT_RUN(racing_writers_that_retry_from_the_named_version_lose_and_repeat_nothing);
    KT_RUN(a_load_starts_from_the_latest_snapshot_and_writes_one_every_n_events);
    KT_RUN(a_snapshot_is_never_replaced_by_an_older_one);
    KT_RUN(an_append_after_a_load_or_an_append_skips_the_read_and_a_stale_hint_is_harmless);
    KT_RUN(append_commands_in_a_transaction_of_ones_own_number_the_events_after_base);
    tx_server_stop(&srv);
    return kt_done();
}
