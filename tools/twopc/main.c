/* keel-twopc - money transfers between two SQLite banks by two-phase commit (tx/twopc) with
 * the decision log in a keel cluster; recovery, a conservation check, and a benchmark of the
 * same transfer as 2PC and as a saga (tx/saga).
 *
 *   keel-twopc --addr host:port[,...] --dir D setup [--accounts N] [--balance B]
 *   keel-twopc --addr ... --dir D run [--count N] [--prefix P] [--seed S] [--slow-ms D]
 *   keel-twopc --addr ... --dir D recover
 *   keel-twopc --dir D check --expect TOTAL
 *   keel-twopc --addr ... --dir D bench [--count N] [--mode 2pc|saga] [--slow-ms D]
 *                                       [--down-ms D] [--prepare-timeout-ms T]
 *
 * The banks are D/bank-a.db and D/bank-b.db (tx/twopc_ledger.h: accounts, holds).
 * run: transfers P-1..P-N, each between a random account of one bank and one of the other
 *      (direction and amount 1..50 from the seed and the index, so a restarted run repeats
 *      the same transfers); first it resolves the banks' transactions in doubt and finishes
 *      open transactions (a killed run leaves both). Prints "end ID committed|aborted" per
 *      transfer, "error ID ..." for one that could not finish (it stays open for recovery),
 *      and a summary. Exits 0 when every transfer ended. --slow-ms: each bank call sleeps first.
 * check: prints "total=T holds=H in_doubt_a=X in_doubt_b=Y" and exits 0 when T == TOTAL and
 *      H, X, Y are 0 (money conserved, nothing in doubt).
 * bench: N transfers from bank-a to bank-b one after another, as 2PC or as a two-step saga
 *      (debit, credit; each compensated by a refund) on the same banks and cluster; bank-b
 *      can be slowed
 *      (--slow-ms per call) or down for --down-ms at the start of each transfer. Prints
 *      "mode=... n=... tx_per_s=... p50_ms=... p99_ms=... max_ms=... committed=... aborted=...".
 */
#include "base/err.h"
#include "base/log.h"
#include "base/rand.h"
#include "runtime/clock.h"
#include "runtime/logsink.h"
#include "tx/saga.h"
#include "tx/twopc.h"
#include "tx/twopc_ledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNT_MAX 1000000L
#define ACCOUNTS_MAX 100000L

static const char *seeds[KEEL_CLIENT_SEEDS_MAX];
static size_t seeds_n;
static const char *dir;
static keel_ledger_t ledger_a = {"bank-a"}, ledger_b = {"bank-b"};
static keel_twopc_sqlite_t bank_a, bank_b;
static const char *const PARTS[2] = {"bank-a", "bank-b"};

static int parse_addrs(char *s)
{
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (seeds_n == KEEL_CLIENT_SEEDS_MAX)
            return -1;
        seeds[seeds_n++] = tok;
    }
    return seeds_n > 0 ? 0 : -1;
}

static long opt_long(int argc, char **argv, const char *name, long dflt, long lo, long hi)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) {
            char *end;
            long v = strtol(argv[i + 1], &end, 10);
            if (*end || v < lo || v > hi) {
                fprintf(stderr, "keel-twopc: %s must be %ld..%ld\n", name, lo, hi);
                exit(2);
            }
            return v;
        }
    return dflt;
}

static const char *opt_str(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return dflt;
}

static int open_banks(void)
{
    char pa[4200], pb[4200];
    snprintf(pa, sizeof(pa), "%s/bank-a.db", dir);
    snprintf(pb, sizeof(pb), "%s/bank-b.db", dir);
    keel_errmsg_t m = {{0}};
    if (keel_twopc_sqlite_open(&bank_a, pa, "bank-a", &keel_ledger_ops, &ledger_a, &m) != 0 ||
        keel_twopc_sqlite_open(&bank_b, pb, "bank-b", &keel_ledger_ops, &ledger_b, &m) != 0) {
        fprintf(stderr, "keel-twopc: %s\n", m.text);
        return 1;
    }
    return 0;
}

static int coord_init(keel_twopcs_t *t, keel_ms_t prepare_timeout_ms)
{
    keel_twopcs_config_t cfg = keel_twopcs_config_default();
    for (size_t i = 0; i < seeds_n; i++)
        cfg.seeds[i] = seeds[i];
    cfg.seeds_n = seeds_n;
    cfg.tx.prepare_timeout_ms = prepare_timeout_ms;
    cfg.lock_ttl_ms = 3000;
    cfg.seed = (uint64_t)keel_clock_now_ns();
    keel_errmsg_t m = {{0}};
    if (seeds_n == 0 || keel_twopcs_init(t, &cfg, &m) != 0) {
        fprintf(stderr, "keel-twopc: %s\n", seeds_n ? m.text : "--addr is needed");
        return 1;
    }
    keel_twopcs_add(t, keel_twopc_sqlite_participant(&bank_a));
    keel_twopcs_add(t, keel_twopc_sqlite_participant(&bank_b));
    return 0;
}

static int64_t accounts_n(keel_twopc_sqlite_t *s)
{
    int64_t bal, n = 0, hs;
    (void)bal;
    (void)hs;
    sqlite3_stmt *q;
    if (keel_db_prepare(&s->db, "SELECT COUNT(*) FROM accounts", &q, NULL) == 0) {
        if (sqlite3_step(q) == SQLITE_ROW)
            n = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    return n;
}

/* The transfer number i of a run: the same for a given seed, so a restart repeats it. */
static void transfer(uint64_t seed, long i, int64_t accounts, bool a_to_b, char *out, size_t cap)
{
    keel_rand_t r;
    keel_rand_seed(&r, keel_mix64(seed ^ (uint64_t)i));
    bool ab = keel_rand_chance(&r, 0.5) || a_to_b;
    uint64_t from = keel_rand_below(&r, (uint64_t)accounts),
             to = keel_rand_below(&r, (uint64_t)accounts);
    long amount = 1 + (long)keel_rand_below(&r, 50);
    snprintf(out, cap, "%s acct-%" PRIu64 " %s acct-%" PRIu64 " %ld", ab ? "bank-a" : "bank-b",
             from, ab ? "bank-b" : "bank-a", to, amount);
}

static int recover_all(keel_twopcs_t *t)
{
    keel_errmsg_t m = {{0}};
    uint32_t ra = 0, rb = 0, open = 0;
    int rc = keel_twopc_sqlite_recover(&bank_a, t, 0, &ra, &m);
    if (rc == 0)
        rc = keel_twopc_sqlite_recover(&bank_b, t, 0, &rb, &m);
    if (rc == 0)
        rc = keel_twopcs_recover(t, &open, &m);
    if (rc != 0)
        fprintf(stderr, "keel-twopc: recover: %s\n", m.text);
    printf("recovered in_doubt_a=%u in_doubt_b=%u open=%u\n", ra, rb, open);
    fflush(stdout);
    return rc;
}

static int cmd_setup(int argc, char **argv)
{
    long n = opt_long(argc, argv, "--accounts", 10, 1, ACCOUNTS_MAX);
    long b = opt_long(argc, argv, "--balance", 1000, 0, 1000000000L);
    keel_errmsg_t m = {{0}};
    if (keel_ledger_setup(&bank_a.db, (uint32_t)n, b, &m) != 0 ||
        keel_ledger_setup(&bank_b.db, (uint32_t)n, b, &m) != 0) {
        fprintf(stderr, "keel-twopc: setup: %s\n", m.text);
        return 1;
    }
    printf("setup accounts=%ld balance=%ld total=%ld\n", n, b, 2 * n * b);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    long count = opt_long(argc, argv, "--count", 100, 1, COUNT_MAX);
    const char *prefix = opt_str(argc, argv, "--prefix", "t");
    bank_a.delay_ms = bank_b.delay_ms = opt_long(argc, argv, "--slow-ms", 0, 0, 60000);
    uint64_t seed = (uint64_t)opt_long(argc, argv, "--seed", 1, 0, 1L << 40);
    if (!keel_twopc_id_valid(prefix, 32)) {
        fprintf(stderr, "keel-twopc: --prefix must be 1..32 of [A-Za-z0-9_.-]\n");
        return 2;
    }
    keel_twopcs_t t;
    if (coord_init(&t, 2000) != 0)
        return 1;
    recover_all(&t);
    int64_t accounts = accounts_n(&bank_a);
    long ended = 0, committed = 0, errors = 0;
    for (long i = 1; i <= count; i++) {
        char id[64], in[160];
        snprintf(id, sizeof(id), "%s-%ld", prefix, i);
        transfer(seed, i, accounts, false, in, sizeof(in));
        keel_twopc_state_t out;
        keel_errmsg_t m = {{0}};
        int rc = KEEL_EBUSY;
        for (int tries = 0; tries < 50 && (rc == KEEL_EBUSY || rc == KEEL_ECANCELED); tries++) {
            rc = keel_twopcs_run(&t, id, PARTS, 2, in, strlen(in), &out, &m);
            if (rc == KEEL_EBUSY || rc == KEEL_ECANCELED) /* a dead owner's lease */
                nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
        }
        if (rc == 0) {
            ended++;
            committed += out == KEEL_TWOPC_COMMITTED;
            printf("end %s %s\n", id, keel_twopc_state_name(out));
        } else {
            errors++;
            printf("error %s %s\n", id, m.text);
        }
        fflush(stdout);
    }
    printf("summary ended=%ld committed=%ld aborted=%ld errors=%ld fenced=%" PRIu64
           " slot_lost=%" PRIu64 "\n",
           ended, committed, ended - committed, errors, t.stats.fenced, t.stats.slot_lost);
    keel_twopcs_close(&t);
    return ended == count ? 0 : 1;
}

static int cmd_recover(void)
{
    keel_twopcs_t t;
    if (coord_init(&t, 2000) != 0)
        return 1;
    int rc = recover_all(&t);
    keel_twopcs_close(&t);
    return rc == 0 ? 0 : 1;
}

static int cmd_check(int argc, char **argv)
{
    long expect = opt_long(argc, argv, "--expect", -1, -1, 1L << 50);
    int64_t ba, bb, ha, hb, sa, sb;
    keel_errmsg_t m = {{0}};
    char ids[1][KEEL_TWOPC_ID_BYTES_MAX + 1];
    size_t da, db;
    if (keel_ledger_totals(&bank_a.db, &ba, &ha, &sa, &m) != 0 ||
        keel_ledger_totals(&bank_b.db, &bb, &hb, &sb, &m) != 0 ||
        keel_twopc_sqlite_in_doubt(&bank_a, ids, 1, &da, &m) != 0 ||
        keel_twopc_sqlite_in_doubt(&bank_b, ids, 1, &db, &m) != 0) {
        fprintf(stderr, "keel-twopc: check: %s\n", m.text);
        return 1;
    }
    printf("total=%" PRId64 " holds=%" PRId64 " in_doubt_a=%zu in_doubt_b=%zu\n", ba + bb, ha + hb,
           da, db);
    return (expect < 0 || ba + bb == expect) && ha + hb == 0 && da + db == 0 ? 0 : 1;
}

/* ---- the same transfer as a saga ------------------------------------------------------ */

/* A step on one bank, idempotent by key (table saga_keys): the action moves `sign * amount`
 * on its account (a debit is refused when the balance does not cover it); the compensation
 * moves it back if the action applied, else leaves a tombstone so a late action is refused. */
typedef struct saga_bank {
    keel_twopc_sqlite_t *bank;
    int sign; /* -1 debit, +1 credit */
} saga_bank_t;

static keel_saga_outcome_t saga_apply(saga_bank_t *sb, keel_saga_call_t *call)
{
    keel_twopc_sqlite_t *s = sb->bank;
    keel_db_t *db = &s->db;
    if (s->delay_ms > 0)
        nanosleep(&(struct timespec){s->delay_ms / 1000, (long)(s->delay_ms % 1000) * 1000000L},
                  NULL);
    if (s->down || keel_clock_unix_ms() < s->down_until_ms)
        return KEEL_SAGA_TRANSIENT;
    char fb[40], fa[40], tb[40], ta[40];
    int64_t amount;
    if (keel_ledger_parse(call->input, call->input_len, fb, fa, tb, ta, &amount) != 0)
        return KEEL_SAGA_BUSINESS;
    const char *acct = strcmp(fb, s->name) == 0 ? fa : ta;
    /* the action's key names the row, for the action and its compensation alike */
    char key[KEEL_SAGA_KEY_BYTES_MAX + 8];
    snprintf(key, sizeof(key), "%s", call->key);
    char *colon = strrchr(key, ':');
    if (colon)
        *colon = '\0';
    if (keel_db_exec(db,
                     "CREATE TABLE IF NOT EXISTS saga_keys (key TEXT PRIMARY KEY, state TEXT, "
                     "done_ms INTEGER, undone_ms INTEGER)",
                     NULL) != 0 ||
        keel_db_begin(db, NULL) != 0)
        return KEEL_SAGA_TRANSIENT;
    sqlite3_stmt *q;
    char state[16] = "";
    if (keel_db_prepare(db, "SELECT state FROM saga_keys WHERE key = ?1", &q, NULL) == 0) {
        sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            snprintf(state, sizeof(state), "%s", sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
    }
    keel_saga_outcome_t out = KEEL_SAGA_OK;
    const char *new_state = NULL;
    int64_t move = 0;
    if (!call->undo) {
        if (strcmp(state, "done") == 0)
            out = KEEL_SAGA_OK;
        else if (state[0])
            out = KEEL_SAGA_BUSINESS; /* refused before, or undone first */
        else {
            int64_t bal = -1;
            if (keel_db_prepare(db, "SELECT balance FROM accounts WHERE id = ?1", &q, NULL) == 0) {
                sqlite3_bind_text(q, 1, acct, -1, SQLITE_STATIC);
                if (sqlite3_step(q) == SQLITE_ROW)
                    bal = sqlite3_column_int64(q, 0);
                sqlite3_finalize(q);
            }
            if (bal < 0 || (sb->sign < 0 && bal < amount)) {
                out = KEEL_SAGA_BUSINESS;
                new_state = "refused";
            } else {
                new_state = "done";
                move = sb->sign * amount;
            }
        }
    } else if (strcmp(state, "done") == 0) {
        new_state = "undone";
        move = -sb->sign * amount;
    } else if (!state[0]) {
        new_state = "undone"; /* tombstone */
    }
    int rc = 0;
    if (move != 0 && keel_db_prepare(db, "UPDATE accounts SET balance = balance + ?2 WHERE id = ?1",
                                     &q, NULL) == 0) {
        sqlite3_bind_text(q, 1, acct, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, move);
        rc = sqlite3_step(q) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(q);
    }
    if (rc == 0 && new_state &&
        keel_db_prepare(db,
                        call->undo ? "INSERT INTO saga_keys (key, state, undone_ms) VALUES (?1, "
                                     "?2, ?3) ON CONFLICT (key) DO UPDATE SET state = ?2, "
                                     "undone_ms = ?3"
                                   : "INSERT INTO saga_keys (key, state, done_ms) VALUES (?1, ?2, "
                                     "?3) ON CONFLICT (key) DO UPDATE SET state = ?2, done_ms = ?3",
                        &q, NULL) == 0) {
        sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, new_state, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, keel_clock_unix_ms());
        rc = sqlite3_step(q) == SQLITE_DONE ? 0 : -1;
        sqlite3_finalize(q);
    }
    if (rc != 0 || keel_db_commit(db, NULL) != 0) {
        keel_db_rollback(db);
        return KEEL_SAGA_TRANSIENT;
    }
    return out;
}

/* The saga's steps: "from" is the bank debited, "to" the one credited (by the input). */
static void saga_step(keel_saga_call_t *call, void *data)
{
    int which = *(int *)data; /* 0: the debit, 1: the credit */
    char fb[40], fa[40], tb[40], ta[40];
    int64_t amount;
    if (keel_ledger_parse(call->input, call->input_len, fb, fa, tb, ta, &amount) != 0) {
        keel_saga_call_done(call, KEEL_SAGA_BUSINESS, NULL, 0);
        return;
    }
    const char *bank = which == 0 ? fb : tb;
    saga_bank_t sb = {strcmp(bank, "bank-a") == 0 ? &bank_a : &bank_b, which == 0 ? -1 : 1};
    keel_saga_call_done(call, saga_apply(&sb, call), NULL, 0);
}

static int saga_ended;
static keel_saga_state_t saga_state;

static void saga_end(keel_sagas_t *o, const char *id, int err, keel_saga_state_t st, void *data)
{
    (void)o;
    (void)id;
    (void)data;
    saga_ended = err == 0 ? 1 : -1;
    saga_state = st;
}

static int sagas_closed;

static void on_sagas_closed(keel_sagas_t *o)
{
    (void)o;
    sagas_closed = 1;
}

/* ---- bench ------------------------------------------------------------------------------ */

static int cmp_ms(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmd_bench(int argc, char **argv)
{
    long count = opt_long(argc, argv, "--count", 200, 1, COUNT_MAX);
    const char *mode = opt_str(argc, argv, "--mode", "2pc");
    long slow = opt_long(argc, argv, "--slow-ms", 0, 0, 60000);
    long down = opt_long(argc, argv, "--down-ms", 0, 0, 600000);
    long prep = opt_long(argc, argv, "--prepare-timeout-ms", 1000, 1, 600000);
    bool saga = strcmp(mode, "saga") == 0;
    if (!saga && strcmp(mode, "2pc") != 0) {
        fprintf(stderr, "keel-twopc: --mode is 2pc or saga\n");
        return 2;
    }
    double *lat = calloc((size_t)count, sizeof(double));
    if (lat == NULL)
        return 1;
    bank_b.delay_ms = slow;
    int64_t accounts = accounts_n(&bank_a);
    uint64_t seed = (uint64_t)keel_clock_now_ns();
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "b%" PRIx64, seed & 0xffffffffu);
    long committed = 0, aborted = 0, failed = 0;
    keel_twopcs_t t;
    keel_loop_t loop;
    keel_sagas_t sagas;
    static keel_saga_type_t type;
    static int which[2] = {0, 1};
    if (!saga && coord_init(&t, prep) != 0)
        return 1;
    if (saga) {
        keel_errmsg_t m = {{0}};
        keel_saga_def_default(&type.def, "transfer");
        keel_saga_type_step(&type, "debit", saga_step, saga_step, &which[0]);
        keel_saga_type_step(&type, "credit", saga_step, saga_step, &which[1]);
        for (int i = 0; i < 2; i++) {
            type.def.steps[i].timeout_ms = 5000 + slow;
            type.def.steps[i].backoff_base_ms = 50;
            type.def.steps[i].backoff_cap_ms = 500;
        }
        type.def.undo_backoff_base_ms = 50;
        type.def.undo_backoff_cap_ms = 500;
        keel_sagas_config_t sc = keel_sagas_config_default();
        for (size_t i = 0; i < seeds_n; i++)
            sc.seeds[i] = seeds[i];
        sc.seeds_n = seeds_n;
        sc.scan_interval_ms = 0;
        sc.seed = seed;
        if (keel_loop_init(&loop) != 0 || keel_sagas_init(&sagas, &loop, &sc, &m) != 0 ||
            keel_sagas_register(&sagas, &type, &m) != 0) {
            fprintf(stderr, "keel-twopc: saga: %s\n", m.text);
            return 1;
        }
    }
    keel_ns_t begin = keel_clock_now_ns();
    for (long i = 1; i <= count; i++) {
        char id[64], in[160];
        snprintf(id, sizeof(id), "%s-%ld", prefix, i);
        transfer(seed, i, accounts, true, in, sizeof(in));
        if (down)
            bank_b.down_until_ms = keel_clock_unix_ms() + down;
        keel_ns_t t0 = keel_clock_now_ns();
        bool ok = false, commit = false;
        if (!saga) {
            keel_twopc_state_t out;
            keel_errmsg_t m = {{0}};
            ok = keel_twopcs_run(&t, id, PARTS, 2, in, strlen(in), &out, &m) == 0;
            commit = out == KEEL_TWOPC_COMMITTED;
            if (!ok)
                fprintf(stderr, "keel-twopc: %s: %s\n", id, m.text);
        } else {
            saga_ended = 0;
            if (keel_sagas_start(&sagas, "transfer", id, in, strlen(in), saga_end, NULL) == 0)
                while (!saga_ended)
                    uv_run(&loop.uv, UV_RUN_ONCE);
            ok = saga_ended == 1;
            commit = saga_state == KEEL_SAGA_DONE;
        }
        lat[i - 1] = (double)(keel_clock_now_ns() - t0) / 1e6;
        if (!ok)
            failed++;
        else if (commit)
            committed++;
        else
            aborted++;
    }
    double secs = (double)(keel_clock_now_ns() - begin) / 1e9;
    /* how long bank-a's money was neither spendable nor gone: 2PC, a hold from prepare to
     * the decision applied (every transfer); saga, a debit from its action to its refund
     * (compensated transfers only: a done debit is final) */
    double held_avg = 0, held_max = 0;
    long held_n = 0;
    sqlite3_stmt *q;
    char like[40];
    snprintf(like, sizeof(like), "%s-%%", prefix);
    if (keel_db_prepare(&bank_a.db,
                        saga ? "SELECT undone_ms - done_ms FROM saga_keys WHERE key LIKE ?1 AND "
                               "state = 'undone' AND done_ms IS NOT NULL"
                             : "SELECT resolved_ms - prepared_ms FROM twopc_tx WHERE id LIKE ?1 "
                               "AND prepared_ms IS NOT NULL AND resolved_ms IS NOT NULL",
                        &q, NULL) == 0) {
        sqlite3_bind_text(q, 1, like, -1, SQLITE_STATIC);
        while (sqlite3_step(q) == SQLITE_ROW) {
            double v = (double)sqlite3_column_int64(q, 0);
            held_avg += v;
            held_max = v > held_max ? v : held_max;
            held_n++;
        }
        sqlite3_finalize(q);
    }
    if (held_n)
        held_avg /= (double)held_n;
    qsort(lat, (size_t)count, sizeof(double), cmp_ms);
    printf("mode=%s n=%ld slow_ms=%ld down_ms=%ld tx_per_s=%.1f p50_ms=%.2f p99_ms=%.2f "
           "max_ms=%.2f committed=%ld aborted=%ld failed=%ld a_held_n=%ld a_held_avg_ms=%.1f "
           "a_held_max_ms=%.0f",
           mode, count, slow, down, (double)count / secs, lat[count / 2],
           lat[(size_t)((double)count * 0.99) < (size_t)count ? (size_t)((double)count * 0.99)
                                                              : (size_t)count - 1],
           lat[count - 1], committed, aborted, failed, held_n, held_avg, held_max);
    if (!saga)
        printf(" keel_log_writes=%" PRIu64 " log_write_avg_ms=%.2f\n", t.stats.log_writes,
               t.stats.log_writes ? (double)t.stats.log_write_ns / 1e6 / (double)t.stats.log_writes
                                  : 0.0);
    else
        printf(" keel_log_writes=%" PRIu64 " log_write_avg_ms=%.2f\n", sagas.stats.log_writes,
               sagas.stats.log_writes
                   ? (double)sagas.stats.log_write_ns / 1e6 / (double)sagas.stats.log_writes
                   : 0.0);
    fflush(stdout);
    if (!saga) {
        keel_twopcs_close(&t);
    } else {
        sagas_closed = 0;
        keel_sagas_close(&sagas, on_sagas_closed);
        while (!sagas_closed)
            uv_run(&loop.uv, UV_RUN_ONCE);
        while (uv_loop_alive(&loop.uv))
            uv_run(&loop.uv, UV_RUN_NOWAIT);
        keel_loop_close(&loop);
    }
    free(lat);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int i = 1;
    while (i + 1 < argc && argv[i][0] == '-' && argv[i][1] == '-') {
        if (strcmp(argv[i], "--addr") == 0 && parse_addrs(argv[i + 1]) == 0)
            i += 2;
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1], i += 2;
        else
            goto usage;
    }
    if (dir == NULL || i >= argc)
        goto usage;
    keel_logsink_init_stderr("warn");
    if (open_banks() != 0)
        return 1;
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    int rc = 2;
    if (strcmp(cmd, "setup") == 0)
        rc = cmd_setup(sub_argc, sub_argv);
    else if (strcmp(cmd, "run") == 0)
        rc = cmd_run(sub_argc, sub_argv);
    else if (strcmp(cmd, "recover") == 0)
        rc = cmd_recover();
    else if (strcmp(cmd, "check") == 0)
        rc = cmd_check(sub_argc, sub_argv);
    else if (strcmp(cmd, "bench") == 0)
        rc = cmd_bench(sub_argc, sub_argv);
    keel_twopc_sqlite_close(&bank_a);
    keel_twopc_sqlite_close(&bank_b);
    if (rc != 2)
        return rc;
usage:
    fprintf(
        stderr,
        "usage: keel-twopc [--addr host:port[,...]] --dir D (setup [--accounts N] "
        "[--balance B] | run [--count N] [--prefix P] [--seed S] [--slow-ms D] | recover | check "
        "[--expect TOTAL] | bench [--count N] [--mode 2pc|saga] [--slow-ms D] "
        "[--down-ms D] [--prepare-timeout-ms T])\n");
    return 2;
}
