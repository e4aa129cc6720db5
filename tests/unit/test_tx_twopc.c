/* test_tx_twopc.c - two-phase commit (tx/twopc) against a real one-node keel server and two
 * SQLite ledger participants: transfers, refusals, a participant down, a coordinator gone
 * after deciding, participants in doubt resolving alone, and the lock of another owner. */
#include "client/blocking.h"
#include "core/twopc.h"
#include "kit/call.h"
#include "kit/service.h"
#include "ktest.h"
#include "runtime/clock.h"
#include "test_tx_util.h"
#include "tx/twopc.h"
#include "tx/twopc_ledger.h"

#include "base/buf.h"
#include "base/metrics.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef struct bank2 {
    tx_server_t srv;
    char dir[256];
    keel_ledger_t la, lb;
    keel_twopc_sqlite_t a, b;
} bank2_t;

static const char *const PARTS[2] = {"bank-a", "bank-b"};

static bool setup(bank2_t *w)
{
    memset(w, 0, sizeof(*w));
    if (tx_server_start(&w->srv) != 0) {
        fprintf(stderr, "  (keel server not built: skipped)\n");
        return false;
    }
    KT_TMPDIR(w->dir, "twopc");
    char pa[300], pb[300];
    snprintf(pa, sizeof(pa), "%s/a.db", w->dir);
    snprintf(pb, sizeof(pb), "%s/b.db", w->dir);
    snprintf(w->la.bank, sizeof(w->la.bank), "bank-a");
    snprintf(w->lb.bank, sizeof(w->lb.bank), "bank-b");
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopc_sqlite_open(&w->a, pa, "bank-a", &keel_ledger_ops, &w->la, &m), 0);
    KT_EQ_INT(keel_twopc_sqlite_open(&w->b, pb, "bank-b", &keel_ledger_ops, &w->lb, &m), 0);
    KT_EQ_INT(keel_ledger_setup(&w->a.db, 4, 100, &m), 0);
    KT_EQ_INT(keel_ledger_setup(&w->b.db, 4, 100, &m), 0);
    return true;
}

static void teardown(bank2_t *w)
{
    keel_twopc_sqlite_close(&w->a);
    keel_twopc_sqlite_close(&w->b);
    tx_server_stop(&w->srv);
    KT_RMRF(w->dir);
}

static void coord(keel_twopcs_t *t, bank2_t *w, keel_ms_t lock_ttl_ms)
{
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    cfg.seeds[0] = w->srv.addr;
    cfg.seeds_n = 1;
    cfg.tx.prepare_timeout_ms = 300;
    cfg.tx.resend_base_ms = 10;
    cfg.tx.resend_cap_ms = 50;
    cfg.lock_ttl_ms = lock_ttl_ms;
    keel_errmsg_t m;
    if (keel_twopcs_init(t, &cfg, &m) != 0)
        KT_FAIL("init: %s", m.text);
    KT_EQ_INT(keel_twopcs_add(t, keel_twopc_sqlite_participant(&w->a)), 0);
    KT_EQ_INT(keel_twopcs_add(t, keel_twopc_sqlite_participant(&w->b)), 0);
    KT_EQ_INT(keel_twopcs_add(t, keel_twopc_sqlite_participant(&w->b)), KEEL_EEXISTS);
}

static void totals(keel_twopc_sqlite_t *s, int64_t *bal, int64_t *holds)
{
    int64_t hs;
    KT_EQ_INT(keel_ledger_totals(&s->db, bal, holds, &hs, NULL), 0);
}

static int64_t balance(keel_twopc_sqlite_t *s, const char *acct)
{
    sqlite3_stmt *q;
    KT_EQ_INT(keel_db_prepare(&s->db, "SELECT balance FROM accounts WHERE id = ?1", &q, NULL), 0);
    sqlite3_bind_text(q, 1, acct, -1, SQLITE_STATIC);
    KT_EQ_INT(sqlite3_step(q), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* The types of the records in 2pc:<id>:log, as "begin commit end". */
static void log_types(bank2_t *w, const char *id, char *out, size_t cap)
{
    char key[96];
    snprintf(key, sizeof(key), "2pc:%s:log", id);
    const char *argv[] = {"XRANGE", key, "-", "+"};
    keel_client_reply_t r = tx_call(&w->srv, 4, argv);
    out[0] = '\0';
    for (size_t i = 0; i < r.v->elems_len; i++) {
        const keel_resp_value_t *f = &r.v->elems[i].elems[1];
        keel_twopc_rec_t rec;
        KT_EQ_INT(keel_twopc_rec_decode(f->elems[1].str.ptr, f->elems[1].str.len, &rec, NULL), 0);
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? " " : "", keel_twopc_rec_type_name(rec.type));
    }
    keel_client_reply_free(&r);
}

/* Whether the transaction is in the index of open ones (the hash 2pc:open). */
static bool open_marked(bank2_t *w, const char *id)
{
    const char *argv[] = {"HEXISTS", "2pc:open", id};
    keel_client_reply_t r = tx_call(&w->srv, 3, argv);
    bool yes = r.v->integer == 1;
    keel_client_reply_free(&r);
    return yes;
}

static void a_transfer_commits_on_both_banks_and_logs_its_decision_first(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    const char *in = "bank-a acct-1 bank-b acct-2 30";
    keel_twopc_state_t out;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-1", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_COMMITTED);
    KT_EQ_INT(balance(&w.a, "acct-1"), 70);
    KT_EQ_INT(balance(&w.b, "acct-2"), 130);
    char types[64];
    log_types(&w, "tx-1", types, sizeof(types));
    KT_EQ_STR(types, "begin commit end");
    KT_CHECK(!open_marked(&w, "tx-1"));
    /* the same id again: the log says it is over; nothing moves twice */
    KT_EQ_INT(keel_twopcs_run(&t, "tx-1", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_COMMITTED);
    KT_EQ_INT(balance(&w.a, "acct-1"), 70);
    int64_t bal, holds;
    totals(&w.a, &bal, &holds);
    KT_EQ_INT(holds, 0);
    KT_EQ_INT(t.stats.log_writes, 3);
    keel_twopcs_close(&t);
    teardown(&w);
}

static void a_refused_debit_aborts_and_releases_the_other_banks_hold(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    const char *parts_ba[2] = {"bank-b", "bank-a"}; /* the credit prepares first */
    const char *in = "bank-a acct-0 bank-b acct-0 500";
    keel_twopc_state_t out;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-2", parts_ba, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    int64_t bal, holds;
    totals(&w.b, &bal, &holds);
    KT_EQ_INT(bal, 400);
    KT_EQ_INT(holds, 0); /* bank-b had prepared a hold: the abort released it */
    keel_twopc_state_t st;
    KT_EQ_INT(keel_twopc_sqlite_participant(&w.a).ops->state(&w.a, "tx-2", &st, NULL), 0);
    KT_EQ_INT(st, KEEL_TWOPC_ABORTED); /* the no left a tombstone */
    char types[64];
    log_types(&w, "tx-2", types, sizeof(types));
    KT_EQ_STR(types, "begin abort end");
    keel_twopcs_close(&t);
    teardown(&w);
}

static bool has_line(const char *text, const char *line)
{
    const char *p = strstr(text, line);
    return p != NULL && (p == text || p[-1] == '\n');
}

/* The coordinator's counts and phase timings on a metrics registry, as /metrics renders it. */
static void a_coordinator_with_a_registry_counts_outcomes_and_times_the_phases(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_metrics_t *reg = keel_metrics_new();
    KT_CHECK(reg != NULL);
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    cfg.seeds[0] = w.srv.addr;
    cfg.seeds_n = 1;
    cfg.metrics = reg;
    keel_twopcs_t t;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_init(&t, &cfg, &m), 0);
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_sqlite_participant(&w.a)), 0);
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_sqlite_participant(&w.b)), 0);
    keel_twopc_state_t out;
    const char *ok = "bank-a acct-1 bank-b acct-2 5", *refused = "bank-a acct-0 bank-b acct-0 500";
    KT_EQ_INT(keel_twopcs_run(&t, "m-1", PARTS, 2, ok, strlen(ok), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_COMMITTED);
    KT_EQ_INT(keel_twopcs_run(&t, "m-2", PARTS, 2, refused, strlen(refused), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    bool commit = false;
    KT_EQ_INT(keel_twopcs_inquire(&t, "m-1", &commit, &m), 0);
    KT_CHECK(commit);

    keel_buf_t text;
    keel_buf_init(&text, 0);
    KT_EQ_INT(keel_metrics_render(reg, &text), 0);
    KT_EQ_INT(keel_buf_append(&text, "", 1), 0);
    const char *x = (const char *)keel_buf_rptr(&text);
    KT_CHECK(has_line(x, "keel_twopc_runs_total 2\n"));
    KT_CHECK(has_line(x, "keel_twopc_transactions_total{outcome=\"committed\"} 1\n"));
    KT_CHECK(has_line(x, "keel_twopc_transactions_total{outcome=\"aborted\"} 1\n"));
    KT_CHECK(has_line(x, "keel_twopc_recovered_total 0\n"));
    KT_CHECK(has_line(x, "keel_twopc_inquiries_total 1\n"));
    KT_CHECK(has_line(x, "keel_twopc_abort_proposals_total 0\n"));
    KT_CHECK(has_line(x, "keel_twopc_fenced_total 0\n"));
    KT_CHECK(has_line(x, "keel_twopc_log_write_seconds_count 6\n")); /* 3 records each */
    KT_CHECK(has_line(x, "keel_twopc_prepare_seconds_count 2\n"));
    KT_CHECK(has_line(x, "keel_twopc_decision_seconds_count 2\n"));
    KT_CHECK(has_line(x, "# TYPE keel_twopc_prepare_seconds histogram\n"));
    keel_buf_free(&text);
    KT_EQ_U64(t.stats.committed, 1);
    KT_EQ_U64(t.stats.log_writes, 6);
    keel_twopcs_close(&t);
    keel_metrics_free(reg);
    teardown(&w);
}

static void a_participant_down_at_prepare_aborts_at_the_prepare_deadline(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    w.b.down = true;
    const char *in = "bank-a acct-1 bank-b acct-1 10";
    keel_twopc_state_t out;
    keel_errmsg_t m;
    keel_ms_t t0 = keel_clock_now_ms();
    /* bank-b stays down: the abort cannot be delivered to it until it is back, and 2PC waits */
    t.cfg.decision_give_up_ms = 200;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-3", PARTS, 2, in, strlen(in), &out, &m), KEEL_ETIMEDOUT);
    KT_CHECK(keel_clock_now_ms() - t0 >= 300);
    KT_CHECK(t.stats.sends_failed > 0);
    int64_t bal, holds;
    totals(&w.a, &bal, &holds);
    KT_EQ_INT(holds, 0); /* bank-a's hold was released by the abort */
    KT_CHECK(open_marked(&w, "tx-3"));
    w.b.down = false;
    keel_twopcs_t t2; /* the owner gave up and let go: another coordinator finishes it */
    coord(&t2, &w, 10000);
    uint32_t n;
    KT_EQ_INT(keel_twopcs_recover(&t2, &n, &m), 0);
    KT_EQ_INT(n, 1);
    KT_CHECK(!open_marked(&w, "tx-3"));
    char types[64];
    log_types(&w, "tx-3", types, sizeof(types));
    KT_EQ_STR(types, "begin abort end");
    KT_EQ_INT(keel_twopcs_run(&t, "tx-3", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    keel_twopcs_close(&t2);
    keel_twopcs_close(&t);
    teardown(&w);
}

/* bank-b behind a switch: its commits fail while `fail_commit` is set (down after it
 * prepared). */
static bool fail_commit;
static keel_twopc_participant_t real_b;

static int fb_prepare(void *d, const char *id, const uint8_t *in, size_t len, bool *yes,
                      keel_errmsg_t *m)
{
    return real_b.ops->prepare(d, id, in, len, yes, m);
}
static int fb_commit(void *d, const char *id, keel_errmsg_t *m)
{
    return fail_commit ? KEEL_EAGAIN : real_b.ops->commit(d, id, m);
}
static int fb_abort(void *d, const char *id, keel_errmsg_t *m)
{
    return real_b.ops->abort(d, id, m);
}
static int fb_state(void *d, const char *id, keel_twopc_state_t *st, keel_errmsg_t *m)
{
    return real_b.ops->state(d, id, st, m);
}
static const keel_twopc_participant_ops_t FB_OPS = {fb_prepare, fb_commit, fb_abort, fb_state,
                                                    NULL};

static void a_decided_commit_is_finished_after_the_owner_gave_up_by_inquiry_and_recovery(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    cfg.seeds[0] = w.srv.addr;
    cfg.seeds_n = 1;
    cfg.lock_ttl_ms = 400;
    cfg.decision_give_up_ms = 100;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_init(&t, &cfg, &m), 0);
    real_b = keel_twopc_sqlite_participant(&w.b);
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_sqlite_participant(&w.a)), 0);
    KT_EQ_INT(keel_twopcs_add(&t, (keel_twopc_participant_t){"bank-b", &FB_OPS, &w.b}), 0);
    fail_commit = true;
    const char *in = "bank-a acct-3 bank-b acct-3 25";
    keel_twopc_state_t out;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-4", PARTS, 2, in, strlen(in), &out, &m), KEEL_ETIMEDOUT);
    KT_EQ_INT(balance(&w.a, "acct-3"), 75); /* bank-a committed */
    int64_t bal, holds;
    totals(&w.b, &bal, &holds);
    KT_EQ_INT(holds, 1); /* bank-b in doubt, holding the credit: visible */
    char ids[4][KEEL_TWOPC_ID_BYTES_MAX + 1];
    size_t n_doubt;
    KT_EQ_INT(keel_twopc_sqlite_in_doubt(&w.b, ids, 4, &n_doubt, &m), 0);
    KT_EQ_INT(n_doubt, 1);
    KT_EQ_STR(ids[0], "tx-4");
    /* bank-b, back, asks the log itself: commit */
    fail_commit = false;
    uint32_t n = 0;
    KT_EQ_INT(keel_twopc_sqlite_recover(&w.b, &t, 0, &n, &m), 0);
    KT_EQ_INT(n, 1);
    KT_EQ_INT(balance(&w.b, "acct-3"), 125);
    char types[64];
    log_types(&w, "tx-4", types, sizeof(types));
    KT_EQ_STR(types, "begin commit");
    /* another coordinator adopts the transaction (the owner let go of it): END */
    keel_twopcs_t t2;
    KT_EQ_INT(keel_twopcs_init(&t2, &cfg, &m), 0);
    KT_EQ_INT(keel_twopcs_add(&t2, keel_twopc_sqlite_participant(&w.a)), 0);
    KT_EQ_INT(keel_twopcs_add(&t2, real_b), 0);
    usleep(500 * 1000);
    KT_EQ_INT(keel_twopcs_recover(&t2, &n, &m), 0);
    KT_EQ_INT(n, 1);
    log_types(&w, "tx-4", types, sizeof(types));
    KT_EQ_STR(types, "begin commit end");
    KT_CHECK(!open_marked(&w, "tx-4"));
    KT_EQ_INT(balance(&w.b, "acct-3"), 125); /* applied once */
    keel_twopcs_close(&t2);
    keel_twopcs_close(&t);
    teardown(&w);
}

/* An async write with binary arguments (the blocking client takes C strings). */
static int added;
static void on_added(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    (void)cl;
    (void)ctx;
    added = status == 0 && v->type == KEEL_RESP_BULK ? 1 : -1;
}

static void participants_in_doubt_abort_alone_when_no_decision_was_logged(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    const char *in = "bank-a acct-2 bank-b acct-1 40";
    /* a coordinator that died after BEGIN and the prepares, before deciding */
    keel_twopc_coord_t c;
    keel_twopc_config_t tc = keel_twopc_config_default();
    KT_EQ_INT(keel_twopc_coord_init(&c, &tc, "tx-5", PARTS, 2, 1, NULL), 0);
    keel_twopc_coord_update_t u;
    KT_EQ_INT(keel_twopc_coord_begin(&c, 1, in, strlen(in), &u), 0);
    keel_loop_t loop;
    KT_EQ_INT(keel_loop_init(&loop), 0);
    keel_client_t cl;
    tx_client_init(&cl, &loop, &w.srv);
    const char *add[] = {"XADD", "2pc:tx-5:log", "0-1", "r", (const char *)u.record};
    size_t lens[] = {4, 12, 3, 1, u.record_len};
    added = 0;
    KT_EQ_INT(keel_client_command(&cl, 5, add, lens, on_added, NULL), 0);
    tx_run_until(&loop, &added, 5000);
    KT_EQ_INT(added, 1);
    tx_client_close(&cl, &loop);
    keel_loop_close(&loop);
    keel_errmsg_t m;
    bool yes;
    keel_twopc_participant_t pa = keel_twopc_sqlite_participant(&w.a);
    keel_twopc_participant_t pb = keel_twopc_sqlite_participant(&w.b);
    KT_EQ_INT(pa.ops->prepare(pa.data, "tx-5", (const uint8_t *)in, strlen(in), &yes, &m), 0);
    KT_CHECK(yes);
    KT_EQ_INT(pb.ops->prepare(pb.data, "tx-5", (const uint8_t *)in, strlen(in), &yes, &m), 0);
    KT_CHECK(yes);
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    uint32_t n;
    KT_EQ_INT(keel_twopc_sqlite_recover(&w.a, &t, 60000, &n, &m), 0);
    KT_EQ_INT(n, 0); /* prepared just now: not in doubt long enough to force the question */
    KT_EQ_INT(keel_twopc_sqlite_recover(&w.a, &t, 0, &n, &m), 0);
    KT_EQ_INT(n, 1);
    KT_EQ_INT(t.stats.proposals, 1); /* bank-a proposed the abort and won the slot */
    KT_EQ_INT(keel_twopc_sqlite_recover(&w.b, &t, 0, &n, &m), 0);
    KT_EQ_INT(n, 1);
    KT_EQ_INT(t.stats.proposals, 1); /* bank-b read it */
    int64_t bal, holds;
    totals(&w.a, &bal, &holds);
    KT_EQ_INT(bal, 400);
    KT_EQ_INT(holds, 0);
    totals(&w.b, &bal, &holds);
    KT_EQ_INT(bal, 400);
    KT_EQ_INT(holds, 0);
    /* a coordinator resuming it follows the slot: abort, delivered (acknowledged), END */
    keel_twopc_state_t out;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-5", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    char types[64];
    log_types(&w, "tx-5", types, sizeof(types));
    KT_EQ_STR(types, "begin abort end");
    bool commit = true;
    KT_EQ_INT(keel_twopcs_inquire(&t, "tx-5", &commit, &m), 0);
    KT_CHECK(!commit);
    KT_EQ_INT(keel_twopcs_inquire(&t, "tx-none", &commit, &m), KEEL_ENOTFOUND);
    keel_twopcs_close(&t);
    teardown(&w);
}

static void a_transaction_another_coordinator_holds_is_refused_busy(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    const char *argv[] = {"KEEL.LOCK", "2pc:tx-6", "10000"};
    keel_client_reply_t r = tx_call(&w.srv, 3, argv);
    KT_EQ_INT(r.v->type, KEEL_RESP_INT);
    keel_client_reply_free(&r);
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    const char *in = "bank-a acct-1 bank-b acct-2 1";
    keel_twopc_state_t out;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-6", PARTS, 2, in, strlen(in), &out, &m), KEEL_EBUSY);
    const char *bad[] = {"bank-a", "bank-z"};
    KT_EQ_INT(keel_twopcs_run(&t, "tx-7", bad, 2, in, strlen(in), &out, &m), KEEL_EINVAL);
    KT_EQ_INT(keel_twopcs_run(&t, "tx 7", PARTS, 2, in, strlen(in), &out, &m), KEEL_EINVAL);
    KT_EQ_INT(keel_twopcs_run(&t, "open", PARTS, 2, in, strlen(in), &out, &m), KEEL_EINVAL);
    keel_twopcs_close(&t);
    teardown(&w);
}

/* bank-b's prepare stalls past the coordinator's lease; meanwhile a participant in doubt
 * (another process) proposes abort into the empty decision slot. */
static keel_twopcs_t *thief;
static int stall_ms;

static int stall_prepare(void *d, const char *id, const uint8_t *in, size_t len, bool *yes,
                         keel_errmsg_t *m)
{
    if (stall_ms > 0) {
        usleep((useconds_t)stall_ms * 1000);
        bool commit = true;
        KT_EQ_INT(keel_twopcs_inquire(thief, id, &commit, NULL), 0);
        KT_CHECK(!commit);
    }
    return real_b.ops->prepare(d, id, in, len, yes, m);
}
static const keel_twopc_participant_ops_t STALL_OPS = {stall_prepare, fb_commit, fb_abort, fb_state,
                                                       NULL};

static void a_coordinator_whose_lease_lapsed_follows_the_abort_proposed_meanwhile(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t, t2;
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    cfg.seeds[0] = w.srv.addr;
    cfg.seeds_n = 1;
    cfg.lock_ttl_ms = 300;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_init(&t, &cfg, &m), 0);
    KT_EQ_INT(keel_twopcs_init(&t2, &cfg, &m), 0);
    thief = &t2;
    real_b = keel_twopc_sqlite_participant(&w.b);
    fail_commit = false;
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_sqlite_participant(&w.a)), 0);
    KT_EQ_INT(keel_twopcs_add(&t, (keel_twopc_participant_t){"bank-b", &STALL_OPS, &w.b}), 0);
    stall_ms = 450;
    const char *in = "bank-a acct-0 bank-b acct-0 5";
    keel_twopc_state_t out;
    /* both vote yes, but the slot already says abort: the coordinator reloads and follows */
    KT_EQ_INT(keel_twopcs_run(&t, "tx-8", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    KT_EQ_INT(t2.stats.proposals, 1);
    char types[64];
    log_types(&w, "tx-8", types, sizeof(types));
    KT_EQ_STR(types, "begin abort end");
    int64_t bal, holds;
    totals(&w.a, &bal, &holds);
    KT_EQ_INT(bal, 400);
    KT_EQ_INT(holds, 0);
    totals(&w.b, &bal, &holds);
    KT_EQ_INT(bal, 400);
    KT_EQ_INT(holds, 0);
    stall_ms = 0;
    keel_twopcs_close(&t2);
    keel_twopcs_close(&t);
    teardown(&w);
}

static void caller_closed(keel_caller_t *c, void *data)
{
    (void)c;
    (void)data;
}

static void a_participant_over_http_votes_and_resolves_through_the_kit(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    cfg.seeds[0] = w.srv.addr;
    cfg.seeds_n = 1;
    cfg.tx.prepare_timeout_ms = 300;
    cfg.decision_give_up_ms = 300;
    keel_errmsg_t m;
    KT_EQ_INT(keel_twopcs_init(&t, &cfg, &m), 0);
    keel_loop_t *loop = keel_twopcs_loop(&t);
    /* bank-b's service, on the coordinator's loop (one process, one thread) */
    keel_service_t svc;
    keel_service_config_t sc = keel_service_config_default("bank-b");
    sc.listen = "127.0.0.1:0";
    sc.drain_timeout_ms = 100;
    KT_EQ_INT(keel_service_init(&svc, loop, &sc, &m), 0);
    keel_twopc_server_t srv;
    KT_EQ_INT(
        keel_twopc_serve(&srv, &svc, "/2pc", keel_twopc_sqlite_participant(&w.b), &cfg.tx, &m), 0);
    KT_EQ_INT(keel_service_start(&svc, &m), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", keel_service_port(&svc));
    keel_caller_t caller;
    keel_caller_config_t cc = keel_caller_config_default("bank-b");
    cc.endpoints = addr;
    cc.breaker.open_ms = 100; /* the 503s below open it; recovery comes after */
    KT_EQ_INT(keel_caller_init(&caller, loop, &cc, NULL, &m), 0);
    keel_twopc_http_t h;
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_sqlite_participant(&w.a)), 0);
    KT_EQ_INT(keel_twopcs_add(&t, keel_twopc_http_participant(&h, "bank-b", &caller, loop, "/2pc")),
              0);
    keel_twopc_state_t out;
    const char *in = "bank-a acct-1 bank-b acct-1 12";
    KT_EQ_INT(keel_twopcs_run(&t, "tx-h1", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_COMMITTED);
    KT_EQ_INT(balance(&w.a, "acct-1"), 88);
    KT_EQ_INT(balance(&w.b, "acct-1"), 112);
    /* bank-b refuses a debit it cannot cover: "no" over HTTP, an abort */
    const char *no = "bank-b acct-2 bank-a acct-2 1000";
    KT_EQ_INT(keel_twopcs_run(&t, "tx-h2", PARTS, 2, no, strlen(no), &out, &m), 0);
    KT_EQ_INT(out, KEEL_TWOPC_ABORTED);
    int64_t bal, holds;
    totals(&w.a, &bal, &holds);
    KT_EQ_INT(holds, 0);
    /* bank-b answering 503 (its database down): no vote by the deadline, abort; the abort
     * cannot reach it, so the coordinator gives up and leaves it open for recovery */
    w.b.down = true;
    KT_EQ_INT(keel_twopcs_run(&t, "tx-h3", PARTS, 2, in, strlen(in), &out, &m), KEEL_ETIMEDOUT);
    KT_CHECK(t.stats.sends_failed > 0);
    w.b.down = false;
    usleep(150 * 1000); /* the breaker's open time */
    uint32_t n;
    KT_EQ_INT(keel_twopcs_recover(&t, &n, &m), 0);
    KT_EQ_INT(n, 1);
    char types[64];
    log_types(&w, "tx-h3", types, sizeof(types));
    KT_EQ_STR(types, "begin abort end");
    KT_EQ_INT(balance(&w.a, "acct-1"), 88);

    keel_caller_close(&caller, caller_closed, NULL);
    keel_service_drain(&svc);
    keel_ms_t end = keel_clock_now_ms() + 400;
    while (keel_clock_now_ms() < end)
        uv_run(&loop->uv, UV_RUN_NOWAIT);
    keel_twopcs_close(&t);
    keel_service_free(&svc);
    teardown(&w);
}

/* Whether the transaction is indexed as ended (the sorted set 2pc:ended). */
static bool ended_indexed(bank2_t *w, const char *id)
{
    const char *argv[] = {"ZSCORE", "2pc:ended", id};
    keel_client_reply_t r = tx_call(&w->srv, 3, argv);
    bool yes = r.v->type == KEEL_RESP_BULK;
    keel_client_reply_free(&r);
    return yes;
}

/* With a retention, an end indexes its transaction in the same entry as the open mark's
 * deletion, and a sweep deletes the logs due with their members; without one, nothing is
 * indexed and a sweep does nothing. */
static void ended_transactions_logs_go_after_the_retention(void)
{
    bank2_t w;
    if (!setup(&w))
        return;
    keel_twopcs_t t;
    coord(&t, &w, 10000);
    const char *in = "bank-a acct-1 bank-b acct-2 5";
    keel_twopc_state_t out;
    keel_errmsg_t m;
    uint64_t deleted = 9;
    KT_EQ_INT(keel_twopcs_run(&t, "kept-1", PARTS, 2, in, strlen(in), &out, &m), 0);
    KT_CHECK(!ended_indexed(&w, "kept-1"));
    KT_EQ_INT(keel_twopcs_sweep(&t, &deleted, &m), 0);
    KT_EQ_U64(deleted, 0);
    t.cfg.log_retention_ms = 1;
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "old-%d", i);
        KT_EQ_INT(keel_twopcs_run(&t, id, PARTS, 2, in, strlen(in), &out, &m), 0);
        KT_CHECK(ended_indexed(&w, id));
    }
    t.cfg.log_retention_ms = 60000; /* not due yet */
    KT_EQ_INT(keel_twopcs_sweep(&t, &deleted, &m), 0);
    KT_EQ_U64(deleted, 0);
    usleep(5000);
    t.cfg.log_retention_ms = 1;
    KT_EQ_INT(keel_twopcs_sweep(&t, &deleted, &m), 0);
    KT_EQ_U64(deleted, 3);
    char types[64];
    log_types(&w, "old-1", types, sizeof(types));
    KT_EQ_STR(types, "");
    KT_CHECK(!ended_indexed(&w, "old-1"));
    log_types(&w, "kept-1", types, sizeof(types)); /* ended with no retention: kept */
    KT_EQ_STR(types, "begin commit end");
    keel_twopcs_close(&t);
    teardown(&w);
}

int main(void)
{
    KT_RUN(a_transfer_commits_on_both_banks_and_logs_its_decision_first);
    KT_RUN(a_refused_debit_aborts_and_releases_the_other_banks_hold);
    KT_RUN(a_coordinator_with_a_registry_counts_outcomes_and_times_the_phases);
    KT_RUN(a_participant_down_at_prepare_aborts_at_the_prepare_deadline);
    KT_RUN(a_decided_commit_is_finished_after_the_owner_gave_up_by_inquiry_and_recovery);
    KT_RUN(participants_in_doubt_abort_alone_when_no_decision_was_logged);
    KT_RUN(a_transaction_another_coordinator_holds_is_refused_busy);
    KT_RUN(a_coordinator_whose_lease_lapsed_follows_the_abort_proposed_meanwhile);
    KT_RUN(a_participant_over_http_votes_and_resolves_through_the_kit);
    KT_RUN(ended_transactions_logs_go_after_the_retention);
    return kt_done();
}
