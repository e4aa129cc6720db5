/* keel-outbox - writes business rows with outbox rows, and runs the outbox relay (src/tx/
 * outbox.c), optionally killing itself between publish and mark: the relay's kill tests.
 *
 *   keel-outbox write --db FILE --stream S --count N [--rate rows/s] [--from K]
 *       N transactions, each one business row (table orders, n = K, K+1, ...) and one
 *       outbox row for S with payload "order <n>"; prints "wrote N".
 *   keel-outbox relay --db FILE --servers host:port,... --producer P [--batch rows]
 *                     [--crash-after-publish pct] [--crash-after-mark pct] [--seed n]
 *                     [--until-idle]
 *       Publishes until SIGTERM (or, with --until-idle, until nothing is left to send).
 *       With --crash-after-*, each batch has pct% odds of SIGKILLing the process at that
 *       point (after printing "crash after publish a..b" or "crash after mark a..b").
 *       Prints "duplicates D in a..b" for a batch keel recognised as already appended, and
 *       "published P duplicates D dead X errors E" and the relay's metrics (Prometheus text)
 *       on a clean exit.
 *   keel-outbox consume --db FILE --servers host:port,... --stream S --group G
 *                       --consumer C --until N [--crash-after-commit pct] [--seed n]
 *       A consumer group member with an inbox (src/tx/inbox.c): reads its own pending
 *       entries first (those a crash left unacknowledged), then new ones; applies each in
 *       one SQLite transaction with its inbox claim (the effect: a row in table `applied`,
 *       no uniqueness constraint, so a second effect would show); then XACKs the batch.
 *       With --crash-after-commit, each entry has pct% odds of a SIGKILL after its commit
 *       and before the XACK ("crash after commit ID"). Prints "skipped ID" for an entry the
 *       inbox had seen, and exits 0 once `applied` has N rows and nothing is pending.
 */
#include "base/buf.h"
#include "base/err.h"
#include "base/metrics.h"
#include "base/num.h"
#include "base/rand.h"
#include "client/blocking.h"
#include "runtime/clock.h"
#include "runtime/loop.h"
#include "runtime/sqlite.h"
#include "tx/inbox.h"
#include "tx/outbox.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int usage(void)
{
    fprintf(stderr,
            "usage: keel-outbox write --db FILE --stream S --count N [--rate r] [--from K]\n"
            "       keel-outbox relay --db FILE --servers a,b --producer P [--batch n]\n"
            "         [--crash-after-publish pct] [--crash-after-mark pct] [--seed n]"
            " [--until-idle]\n"
            "       keel-outbox consume --db FILE --servers a,b --stream S --group G"
            " --consumer C --until N\n"
            "         [--crash-after-commit pct] [--seed n]\n");
    return 2;
}

static int write_rows(const char *path, const char *stream, int64_t count, int64_t rate,
                      int64_t from)
{
    keel_db_t db;
    keel_errmsg_t msg = {{0}};
    if (keel_db_open(&db, path, &msg) != 0 || keel_outbox_init(&db, &msg) != 0 ||
        keel_db_exec(&db, "CREATE TABLE IF NOT EXISTS orders (n INTEGER PRIMARY KEY)", &msg) != 0) {
        fprintf(stderr, "keel-outbox: %s\n", msg.text);
        return 1;
    }
    keel_ms_t t0 = keel_clock_now_ms();
    for (int64_t i = 0; i < count; i++) {
        if (rate > 0) { /* a steady rate: row i is due at t0 + i / rate */
            keel_ms_t due = t0 + i * 1000 / rate, now = keel_clock_now_ms();
            if (due > now) {
                struct timespec ts = {(due - now) / 1000, ((due - now) % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
        int64_t n = from + i;
        char sql[96], payload[48];
        snprintf(sql, sizeof(sql), "INSERT INTO orders (n) VALUES (%lld)", (long long)n);
        int plen = snprintf(payload, sizeof(payload), "order %lld", (long long)n);
        int rc = keel_db_begin(&db, &msg);
        if (rc == 0)
            rc = keel_db_exec(&db, sql, &msg);
        if (rc == 0)
            rc = keel_outbox_add(&db, stream, payload, (size_t)plen, NULL, &msg);
        if (rc == 0)
            rc = keel_db_commit(&db, &msg);
        if (rc != 0) {
            keel_db_rollback(&db);
            fprintf(stderr, "keel-outbox: row %lld: %s\n", (long long)n, msg.text);
            keel_db_close(&db);
            return 1;
        }
    }
    keel_db_close(&db);
    printf("wrote %lld\n", (long long)count);
    return 0;
}

typedef struct relay_run {
    keel_loop_t loop;
    keel_db_t db;
    keel_outbox_relay_t relay;
    keel_timer_t idle_check;
    keel_rand_t rand;
    keel_metrics_t *metrics;
    int64_t crash_publish_pct, crash_mark_pct;
    bool until_idle;
} relay_run_t;

static void maybe_crash(relay_run_t *run, int64_t pct, const char *where,
                        const keel_outbox_batch_t *b)
{
    if (pct <= 0 || b->n == 0 || (int64_t)keel_rand_below(&run->rand, 100) >= pct)
        return;
    printf("crash after %s %lld..%lld\n", where, (long long)b->rows[0].id,
           (long long)b->rows[b->n - 1].id);
    fflush(stdout);
    raise(SIGKILL);
}

static void on_published(keel_outbox_relay_t *r, const keel_outbox_batch_t *b, void *data)
{
    relay_run_t *run = data;
    (void)r;
    size_t dups = 0;
    for (size_t i = 0; i < b->n; i++)
        dups += b->rows[i].outcome == KEEL_OUTBOX_DUPLICATE;
    if (dups > 0) {
        printf("duplicates %zu in %lld..%lld\n", dups, (long long)b->rows[0].id,
               (long long)b->rows[b->n - 1].id);
        fflush(stdout);
    }
    maybe_crash(run, run->crash_publish_pct, "publish", b);
}

static void on_marked(keel_outbox_relay_t *r, const keel_outbox_batch_t *b, void *data)
{
    relay_run_t *run = data;
    (void)r;
    maybe_crash(run, run->crash_mark_pct, "mark", b);
}

static void relay_closed(keel_outbox_relay_t *r)
{
    (void)r;
}

static void stop(relay_run_t *run)
{
    const keel_outbox_relay_stats_t *st = keel_outbox_relay_stats(&run->relay);
    printf("published %llu duplicates %llu dead %llu errors %llu\n",
           (unsigned long long)st->published, (unsigned long long)st->duplicates,
           (unsigned long long)st->dead, (unsigned long long)st->errors);
    keel_buf_t text;
    keel_buf_init(&text, 0);
    if (keel_metrics_render(run->metrics, &text) == 0) /* the relay's /metrics lines */
        fwrite(keel_buf_rptr(&text), 1, keel_buf_unread(&text), stdout);
    keel_buf_free(&text);
    fflush(stdout);
    keel_timer_close(&run->idle_check, NULL);
    keel_outbox_relay_close(&run->relay, relay_closed);
}

static void check_idle(keel_timer_t *t, void *data)
{
    relay_run_t *run = data;
    (void)t;
    if (run->until_idle && keel_outbox_relay_idle(&run->relay))
        stop(run);
}

static void on_shutdown(void *data)
{
    stop(data);
}

static int relay(int argc, char **argv)
{
    relay_run_t run; /* outlives the loop: it runs inside this call */
    memset(&run, 0, sizeof(run));
    keel_outbox_relay_config_t cfg = keel_outbox_relay_config_default();
    const char *path = NULL;
    int64_t batch = cfg.batch_rows_max, seed = 1;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--until-idle") == 0) {
            run.until_idle = true;
            continue;
        }
        if (v == NULL)
            return usage();
        i++;
        if (strcmp(a, "--db") == 0)
            path = v;
        else if (strcmp(a, "--servers") == 0)
            cfg.servers = v;
        else if (strcmp(a, "--producer") == 0)
            cfg.producer = v;
        else if (strcmp(a, "--batch") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &batch) == 0)
            ;
        else if (strcmp(a, "--seed") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &seed) == 0)
            ;
        else if (strcmp(a, "--crash-after-publish") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &run.crash_publish_pct) == 0)
            ;
        else if (strcmp(a, "--crash-after-mark") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &run.crash_mark_pct) == 0)
            ;
        else
            return usage();
    }
    if (path == NULL || batch <= 0)
        return usage();
    keel_errmsg_t msg = {{0}};
    if (keel_loop_init(&run.loop) != 0 || keel_loop_handle_signals(&run.loop) != 0)
        return 1;
    if (keel_db_open(&run.db, path, &msg) != 0 || keel_outbox_init(&run.db, &msg) != 0) {
        fprintf(stderr, "keel-outbox: %s\n", msg.text);
        return 1;
    }
    keel_rand_seed(&run.rand, (uint64_t)seed);
    cfg.db = &run.db;
    cfg.batch_rows_max = (uint32_t)batch;
    cfg.seed = (uint64_t)seed;
    if ((run.metrics = keel_metrics_new()) == NULL)
        return 1;
    cfg.metrics = run.metrics;
    cfg.metrics_labels = "outbox=\"keel-outbox\"";
    cfg.on_published = on_published;
    cfg.on_marked = on_marked;
    cfg.hook_data = &run;
    if (keel_outbox_relay_init(&run.relay, &run.loop, &cfg, &msg) != 0) {
        fprintf(stderr, "keel-outbox: %s\n", msg.text);
        return 1;
    }
    keel_timer_init(&run.loop, &run.idle_check);
    keel_timer_start(&run.idle_check, 50, 50, check_idle, &run);
    keel_loop_on_shutdown(&run.loop, on_shutdown, &run);
    keel_outbox_relay_start(&run.relay);
    printf("relay running\n");
    fflush(stdout);
    keel_loop_run(&run.loop);
    keel_loop_close(&run.loop);
    keel_db_close(&run.db);
    keel_metrics_free(run.metrics);
    return 0;
}

/* ---- consume ------------------------------------------------------------------------ */

typedef struct consumer {
    const char *seeds[KEEL_CLIENT_SEEDS_MAX];
    size_t seeds_n;
    const char *stream, *group, *name;
    keel_db_t db;
    keel_rand_t rand;
    int64_t crash_pct;
} consumer_t;

static int call(consumer_t *c, size_t argc, const char *const *argv, keel_client_reply_t *r)
{
    keel_errmsg_t msg = {{0}};
    int rc = keel_client_call(c->seeds, c->seeds_n, argc, argv, 5000, r, &msg);
    if (rc != 0)
        fprintf(stderr, "keel-outbox: %s: %s\n", argv[0], msg.text);
    return rc;
}

static int64_t applied_rows(keel_db_t *db)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    if (keel_db_prepare(db, "SELECT COUNT(*) FROM applied", &st, NULL) != 0)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

typedef struct entry_effect {
    const char *data;
    size_t data_len;
} entry_effect_t;

static int apply_entry(keel_db_t *db, void *data, keel_errmsg_t *msg)
{
    entry_effect_t *e = data;
    sqlite3_stmt *st;
    int rc = keel_db_prepare(db, "INSERT INTO applied (data) VALUES (?1)", &st, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(st, 1, e->data, (int)e->data_len, SQLITE_STATIC);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : keel_db_error(db, src, "apply", msg);
}

/* The value of field `name` in an entry's field array, or NULL. */
static const keel_resp_value_t *field(const keel_resp_value_t *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elems_len; i += 2)
        if (fields->elems[i].str.len == strlen(name) &&
            memcmp(fields->elems[i].str.ptr, name, strlen(name)) == 0)
            return &fields->elems[i + 1];
    return NULL;
}

/* Applies one XREADGROUP answer's entries and acknowledges them; how many there were, or -1. */
static int consume_batch(consumer_t *c, const keel_resp_value_t *reply)
{
    if (reply->type == KEEL_RESP_NIL_ARRAY || reply->type == KEEL_RESP_NIL)
        return 0;
    if (reply->type != KEEL_RESP_ARRAY || reply->elems_len != 1)
        return -1;
    const keel_resp_value_t *entries = &reply->elems[0].elems[1];
    const char *ack[2 + 64 + 1] = {"XACK", c->stream, c->group};
    char ids[64][48];
    size_t n = 0;
    for (size_t i = 0; i < entries->elems_len && n < 64; i++) {
        const keel_resp_value_t *e = &entries->elems[i];
        const keel_resp_value_t *id = &e->elems[0], *fields = &e->elems[1];
        snprintf(ids[n], sizeof(ids[n]), "%.*s", (int)id->str.len, (const char *)id->str.ptr);
        ack[3 + n] = ids[n];
        n++;
        if (fields->type != KEEL_RESP_ARRAY) /* deleted meanwhile: nothing to apply */
            continue;
        const keel_resp_value_t *mid = field(fields, "id"), *data = field(fields, "data");
        if (mid == NULL || data == NULL)
            return -1;
        entry_effect_t eff = {(const char *)data->str.ptr, data->str.len};
        keel_errmsg_t msg = {{0}};
        int rc = keel_inbox_process(&c->db, "applier", mid->str.ptr, mid->str.len, apply_entry,
                                    &eff, &msg);
        if (rc == KEEL_EEXISTS) {
            printf("skipped %.*s\n", (int)mid->str.len, (const char *)mid->str.ptr);
        } else if (rc != 0) {
            fprintf(stderr, "keel-outbox: apply: %s\n", msg.text);
            return -1;
        } else if (c->crash_pct > 0 && (int64_t)keel_rand_below(&c->rand, 100) < c->crash_pct) {
            printf("crash after commit %.*s\n", (int)mid->str.len, (const char *)mid->str.ptr);
            fflush(stdout);
            raise(SIGKILL);
        }
    }
    if (n > 0) {
        keel_client_reply_t r;
        if (call(c, 3 + n, ack, &r) != 0)
            return -1;
        keel_client_reply_free(&r);
    }
    return (int)n;
}

static int consume(int argc, char **argv)
{
    consumer_t c = {0};
    char seeds_text[512] = "";
    int64_t until = -1, seed = 1;
    const char *path = NULL;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--db") == 0)
            path = v;
        else if (strcmp(a, "--servers") == 0)
            snprintf(seeds_text, sizeof(seeds_text), "%s", v);
        else if (strcmp(a, "--stream") == 0)
            c.stream = v;
        else if (strcmp(a, "--group") == 0)
            c.group = v;
        else if (strcmp(a, "--consumer") == 0)
            c.name = v;
        else if (strcmp(a, "--until") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &until) == 0)
            ;
        else if (strcmp(a, "--seed") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &seed) == 0)
            ;
        else if (strcmp(a, "--crash-after-commit") == 0 &&
                 keel_parse_i64((const uint8_t *)v, strlen(v), &c.crash_pct) == 0)
            ;
        else
            return usage();
    }
    for (char *p = seeds_text, *tok; (tok = strsep(&p, ",")) != NULL;)
        if (*tok != '\0' && c.seeds_n < KEEL_CLIENT_SEEDS_MAX)
            c.seeds[c.seeds_n++] = tok;
    if (path == NULL || c.seeds_n == 0 || !c.stream || !c.group || !c.name || until < 0)
        return usage();
    keel_rand_seed(&c.rand, (uint64_t)seed);
    keel_errmsg_t msg = {{0}};
    if (keel_db_open(&c.db, path, &msg) != 0 || keel_inbox_init(&c.db, &msg) != 0 ||
        keel_db_exec(&c.db, "CREATE TABLE IF NOT EXISTS applied (data TEXT NOT NULL)", &msg) != 0) {
        fprintf(stderr, "keel-outbox: %s\n", msg.text);
        return 1;
    }
    keel_client_reply_t r;
    const char *create[] = {"XGROUP", "CREATE", c.stream, c.group, "0", "MKSTREAM"};
    if (call(&c, 6, create, &r) != 0)
        return 1;
    keel_client_reply_free(&r); /* -BUSYGROUP when it exists: fine */
    printf("consumer running\n");
    bool history = true; /* first what a crash left pending, then new entries */
    while (applied_rows(&c.db) < until || history) {
        const char *read[] = {"XREADGROUP",
                              "GROUP",
                              c.group,
                              c.name,
                              "COUNT",
                              "64",
                              "BLOCK",
                              "200",
                              "STREAMS",
                              c.stream,
                              history ? "0" : ">"};
        if (call(&c, 11, read, &r) != 0)
            return 1;
        int n = consume_batch(&c, r.v);
        keel_client_reply_free(&r);
        if (n < 0)
            return 1;
        if (history && n == 0)
            history = false;
    }
    keel_db_close(&c.db);
    printf("applied %lld\n", (long long)until);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "relay") == 0)
        return relay(argc, argv);
    if (strcmp(argv[1], "consume") == 0)
        return consume(argc, argv);
    if (strcmp(argv[1], "write") != 0)
        return usage();
    const char *path = NULL, *stream = NULL;
    int64_t count = -1, rate = 0, from = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        int64_t *num = strcmp(a, "--count") == 0  ? &count
                       : strcmp(a, "--rate") == 0 ? &rate
                       : strcmp(a, "--from") == 0 ? &from
                                                  : NULL;
        if (strcmp(a, "--db") == 0)
            path = v;
        else if (strcmp(a, "--stream") == 0)
            stream = v;
        else if (num == NULL || keel_parse_i64((const uint8_t *)v, strlen(v), num) != 0)
            return usage();
    }
    if (path == NULL || stream == NULL || count < 0 || argc % 2 != 0)
        return usage();
    return write_rows(path, stream, count, rate, from);
}
