/* bench_contend.c - `keel bench kv --workload cas|txn`: optimistic increments of hot counters. */
#include "cli/bench_contend.h"

#include "base/buf.h"
#include "base/num.h"
#include "base/rand.h"
#include "cli/cluster.h"
#include "client/client.h"
#include "proto/resp.h"
#include "runtime/clock.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * N clients, one connection each, spread over the nodes. Each repeatedly adds 1 to one of K
 * hot counters (keys PREFIX0 .. PREFIX{K-1}) by an optimistic read-modify-write, and retries
 * the same increment until it commits:
 *
 *   cas:  KEEL.GETV key -> [value, version] (or nil: 0, 0); KEEL.CAS key version value+1
 *         -> :new_version, or -CONFLICT (someone else wrote first: read again).
 *   txn:  WATCH key + GET key (one round trip); MULTI + SET key value+1 + EXEC (one round
 *         trip) -> *1 [+OK], or *-1 (a watched key changed: read again). This is what
 *         redis-py's transaction() helper sends, so --addr can point at redis-server.
 *
 * Outcomes of a commit (the CAS or the EXEC): acknowledged; conflict or not run (-TRYAGAIN
 * or -EXECABORT: nothing was proposed), both retried; indeterminate (-TIMEOUT, -UNKNOWN,
 * any other error, a broken MULTI, or the connection lost with the commit in flight): the
 * increment may or may not have happened, so it is counted apart and not retried (a retry
 * could apply it twice).
 *
 * The check: every counter is read (MGET, linearizable on keel) before the load and after
 * it; the sum of the differences must lie in [acked, acked + indeterminate]. Below: an
 * acknowledged increment was lost; above: an increment was applied twice or invented.
 */
#define CONTEND_ADDRS_MAX KEEL_CLUSTER_NODES_MAX
#define CONTEND_CONNS_MAX 4096
#define CONTEND_HOT_KEYS_MAX 1000000
#define CONTEND_PREFIX_BYTES_MAX 64
#define CONTEND_SAMPLES_MAX (4u * 1024 * 1024) /* latencies kept (uint32 us each) */
#define CONTEND_TICK_MS 100
#define CONTEND_DRAIN_MS 7000  /* after --duration, commits in flight get this long */
#define CONTEND_CHECK_MS 20000 /* reading every counter (before or after) must end within */
#define CONTEND_PAUSE_MS 20    /* before retrying after -TRYAGAIN, an error or a reconnect */
#define CONTEND_BACKOFF_MS_MAX 10000
#define CONTEND_MGET_KEYS_MAX 100 /* counters per MGET of the check */
#define CONTEND_BATCH_MAX 4       /* requests of one attempt (UNWATCH WATCH GET, MULTI SET EXEC) */

enum workload { WL_CAS, WL_TXN };
enum phase { PH_IDLE, PH_READ, PH_COMMIT, PH_CHECK };
enum outcome { OUT_OK, OUT_CONFLICT, OUT_NOT_RUN, OUT_UNKNOWN };
enum err_kind { E_TRYAGAIN, E_TIMEOUT, E_UNKNOWN, E_EXECABORT, E_OTHER, E_KINDS };
static const char *const err_names[E_KINDS] = {"tryagain", "timeout", "unknown", "execabort",
                                               "other"};

typedef struct contend contend_t;

typedef struct client {
    contend_t *b;
    int idx, is_checker;
    keel_client_t cl;       /* session_bound: a loss fails the batch */
    keel_timer_t pause;     /* backoff before the next attempt */
    int phase, expect, got; /* replies due and received for the batch in flight */
    int need_unwatch;       /* txn: a WATCH may be left over from a failed attempt */
    /* the increment in progress: its counter and when its first attempt started */
    int have_incr;
    unsigned conflicts_in_row; /* of this increment, for --backoff-ms */
    uint64_t key;
    keel_ns_t incr_start_ns;
    /* what the batch in flight has said so far */
    int read_failed, multi_broken, outcome;
    int64_t value, version;
} client_t;

struct contend {
    keel_loop_t loop;
    int workload;
    char addrs[CONTEND_ADDRS_MAX][64];
    size_t n_addrs;
    int conns_n, hot_keys, quiet;
    keel_backoff_config_t backoff; /* base_ms 0: retry a conflict at once */
    char prefix[CONTEND_PREFIX_BYTES_MAX + 1];
    keel_ms_t duration_ms;
    keel_rand_t rand;
    client_t *clients; /* conns_n load clients, then the checker */
    client_t *checker;
    keel_timer_t tick;
    int running, stopping, shutdown, check_stage; /* stage 0: before the load, 1: after */
    keel_ms_t start_ms, end_ms, last_print_ms, drain_from_ms, check_from_ms;
    uint64_t check_next;
    int64_t sum_before, sum_after;
    const char *fatal; /* why the run cannot be trusted */
    uint64_t acked, attempts, conflicts, not_run, indeterminate, lost_read, lost_commit;
    uint64_t errors[E_KINDS];
    uint64_t connect_failures; /* attempts that did not connect, all clients together */
    uint64_t acked_by_node[CONTEND_ADDRS_MAX];
    keel_ns_t end_ns;
    uint64_t sec_acked, sec_attempts, sec_conflicts;
    uint32_t *lat_us;
    size_t lat_n;
};

/* ---- connection plumbing (client/client.h: move to the next node on any failure) --------- */

static void client_resume(client_t *c);
static void on_reply(client_t *c, const keel_resp_value_t *v);

/* The connection broke: a commit in flight has an unknown outcome; a read is just retried. */
static void batch_lost(client_t *c)
{
    contend_t *b = c->b;
    if (c->phase == PH_COMMIT) {
        b->lost_commit++;
        b->indeterminate++;
        c->have_incr = 0;
    } else if (c->phase == PH_READ) {
        b->lost_read++;
    }
    if (c->phase != PH_CHECK)
        c->phase = PH_IDLE; /* the checker resends its chunk once reconnected */
    c->expect = c->got = 0;
    keel_timer_stop(&c->pause);
}

/* Every request of a batch failing together (session_bound) ends the batch once. */
static void conn_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    client_t *c = ctx;
    if (status != 0) {
        if (c->expect > 0)
            batch_lost(c);
        return;
    }
    if (c->got >= c->expect) { /* a reply nobody asked for */
        c->b->errors[E_OTHER]++;
        keel_client_move(cl);
        return;
    }
    on_reply(c, v);
}

static void conn_event(keel_client_t *cl, int event, int err, void *data)
{
    client_t *c = data;
    c->b->connect_failures += event == KEEL_CLIENT_CONNECT_ERR;
    if (event != KEEL_CLIENT_UP)
        return;
    c->need_unwatch = 0; /* a new connection has no WATCH */
    client_resume(c);
}

/* Gives up on the connection: what is in flight fails (batch_lost), the next node follows. */
static void conn_lost(client_t *c)
{
    keel_client_move(&c->cl);
}

/* Index of the address in use among b->addrs, or -1 (a node named by a redirect). */
static int node_of(client_t *c)
{
    const char *addr = keel_client_addr(&c->cl);
    for (size_t i = 0; i < c->b->n_addrs; i++)
        if (strcmp(c->b->addrs[i], addr) == 0)
            return (int)i;
    return -1;
}

/* ---- the increment ---------------------------------------------------------------------- */

static void put_cmd(client_t *c, int argc, const char *const *argv)
{
    assert(argc <= 4);
    int rc = keel_client_command(&c->cl, (size_t)argc, argv, NULL, conn_reply, c);
    assert(rc == 0); /* a batch is at most CONTEND_BATCH_MAX requests, the client's limit */
    c->expect++;
}

static void key_name(const contend_t *b, uint64_t i, char *out, size_t cap)
{
    snprintf(out, cap, "%s%" PRIu64, b->prefix, i);
}

static void send_read(client_t *c)
{
    contend_t *b = c->b;
    char key[CONTEND_PREFIX_BYTES_MAX + 24];
    if (!c->have_incr) {
        c->have_incr = 1;
        c->conflicts_in_row = 0;
        c->key = keel_rand_below(&b->rand, (uint64_t)b->hot_keys);
        c->incr_start_ns = keel_clock_now_ns();
    }
    key_name(b, c->key, key, sizeof(key));
    c->phase = PH_READ;
    c->expect = c->got = 0;
    c->read_failed = 0;
    c->value = c->version = 0;
    if (b->workload == WL_CAS) {
        put_cmd(c, 2, (const char *[]){"KEEL.GETV", key});
    } else {
        if (c->need_unwatch)
            put_cmd(c, 1, (const char *[]){"UNWATCH"});
        c->need_unwatch = 0;
        put_cmd(c, 2, (const char *[]){"WATCH", key});
        put_cmd(c, 2, (const char *[]){"GET", key});
    }
}

static void send_commit(client_t *c)
{
    contend_t *b = c->b;
    char key[CONTEND_PREFIX_BYTES_MAX + 24], ver[24], val[24];
    key_name(b, c->key, key, sizeof(key));
    snprintf(ver, sizeof(ver), "%" PRId64, c->version);
    snprintf(val, sizeof(val), "%" PRId64, c->value + 1);
    c->phase = PH_COMMIT;
    c->expect = c->got = 0;
    c->multi_broken = 0;
    c->outcome = OUT_UNKNOWN;
    if (b->workload == WL_CAS) {
        put_cmd(c, 4, (const char *[]){"KEEL.CAS", key, ver, val});
    } else {
        put_cmd(c, 1, (const char *[]){"MULTI"});
        put_cmd(c, 3, (const char *[]){"SET", key, val});
        put_cmd(c, 1, (const char *[]){"EXEC"});
    }
    b->attempts++;
    b->sec_attempts++;
}

static void resume_later(keel_timer_t *t, void *data)
{
    client_resume(data);
}

/* Starts (or retries) an increment after pause_ms, unless the load is over. */
static void next_attempt(client_t *c, keel_ms_t pause_ms)
{
    c->phase = PH_IDLE;
    c->expect = c->got = 0;
    if (pause_ms > 0)
        keel_timer_start(&c->pause, pause_ms, 0, resume_later, c);
    else
        client_resume(c);
}

/* --backoff-ms B: the n-th conflict in a row waits [cap/2, cap], cap = min(B * 2^n, 32 B). */
static keel_ms_t conflict_pause_ms(client_t *c)
{
    contend_t *b = c->b;
    if (b->backoff.base_ms == 0)
        return 0;
    return keel_backoff_delay_ms(&b->backoff, c->conflicts_in_row++, &b->rand);
}

static int err_is(const keel_resp_value_t *v, const char *word)
{
    size_t n = strlen(word);
    return v->type == KEEL_RESP_ERROR && v->str.len >= n && memcmp(v->str.ptr, word, n) == 0 &&
           (v->str.len == n || v->str.ptr[n] == ' ');
}

static void count_error(contend_t *b, const keel_resp_value_t *v)
{
    if (err_is(v, "TRYAGAIN"))
        b->errors[E_TRYAGAIN]++;
    else if (err_is(v, "TIMEOUT"))
        b->errors[E_TIMEOUT]++;
    else if (err_is(v, "UNKNOWN"))
        b->errors[E_UNKNOWN]++;
    else if (err_is(v, "EXECABORT"))
        b->errors[E_EXECABORT]++;
    else if (!err_is(v, "CONFLICT"))
        b->errors[E_OTHER]++;
    if (v->str.len >= 15 && memcmp(v->str.ptr, "ERR unknown com", 15) == 0)
        b->fatal = "the server does not know a command of this workload (KEEL.* are keel's)";
}

/* A counter's text (nil counts as 0). 0, or -1 if it is not an integer. */
static int counter_value(const keel_resp_value_t *v, int64_t *out)
{
    *out = 0;
    if (v->type == KEEL_RESP_NIL)
        return 0;
    if (v->type != KEEL_RESP_BULK)
        return -1;
    return keel_parse_i64(v->str.ptr, v->str.len, out);
}

static void read_reply(client_t *c, const keel_resp_value_t *v, int last)
{
    if (v->type == KEEL_RESP_ERROR) {
        c->read_failed = 1;
        return;
    }
    if (!last)
        return; /* UNWATCH / WATCH: +OK */
    if (c->b->workload == WL_TXN) {
        if (counter_value(v, &c->value) != 0)
            c->b->fatal = "a hot counter holds something that is not an integer";
        return;
    }
    if (v->type == KEEL_RESP_NIL_ARRAY)
        return; /* absent: value 0, version 0 ("must not exist") */
    if (v->type != KEEL_RESP_ARRAY || v->elems_len != 2 || v->elems[1].type != KEEL_RESP_INT ||
        counter_value(&v->elems[0], &c->value) != 0)
        c->b->fatal = "KEEL.GETV gave something other than [integer, version]";
    else
        c->version = v->elems[1].integer;
}

static int outcome_of_error(const keel_resp_value_t *v)
{
    if (err_is(v, "CONFLICT"))
        return OUT_CONFLICT;
    if (err_is(v, "TRYAGAIN") || err_is(v, "EXECABORT"))
        return OUT_NOT_RUN; /* refused before anything was proposed */
    return OUT_UNKNOWN;
}

static int is_simple(const keel_resp_value_t *v, const char *s)
{
    return v->type == KEEL_RESP_SIMPLE && v->str.len == strlen(s) &&
           memcmp(v->str.ptr, s, v->str.len) == 0;
}

static void commit_reply(client_t *c, const keel_resp_value_t *v, int i, int last)
{
    if (c->b->workload == WL_CAS) {
        c->outcome = v->type == KEEL_RESP_INT     ? OUT_OK
                     : v->type == KEEL_RESP_ERROR ? outcome_of_error(v)
                                                  : OUT_UNKNOWN;
        return;
    }
    if (!last) { /* MULTI -> +OK, SET -> +QUEUED; anything else and the SET may have run bare */
        if (!is_simple(v, i == 0 ? "OK" : "QUEUED"))
            c->multi_broken = 1;
        return;
    }
    if (v->type == KEEL_RESP_ARRAY && v->elems_len == 1 && is_simple(&v->elems[0], "OK"))
        c->outcome = OUT_OK;
    else if (v->type == KEEL_RESP_NIL_ARRAY)
        c->outcome = OUT_CONFLICT;
    else if (v->type == KEEL_RESP_ERROR)
        c->outcome = outcome_of_error(v);
    if (c->multi_broken)
        c->outcome = OUT_UNKNOWN;
}

static void read_done(client_t *c)
{
    if (c->read_failed) {
        c->need_unwatch = 1;
        next_attempt(c, CONTEND_PAUSE_MS);
    } else if (c->b->stopping || c->b->fatal) {
        next_attempt(c, 0); /* the increment is abandoned: nothing was written */
    } else {
        send_commit(c);
    }
}

static void commit_done(client_t *c)
{
    contend_t *b = c->b;
    switch (c->outcome) {
    case OUT_OK:
        b->acked++;
        if (node_of(c) >= 0)
            b->acked_by_node[node_of(c)]++;
        b->sec_acked++;
        if (b->lat_n < CONTEND_SAMPLES_MAX)
            b->lat_us[b->lat_n++] = (uint32_t)((keel_clock_now_ns() - c->incr_start_ns) / 1000);
        c->have_incr = 0;
        next_attempt(c, 0);
        break;
    case OUT_CONFLICT:
        b->conflicts++;
        b->sec_conflicts++;
        next_attempt(c, conflict_pause_ms(c));
        break;
    case OUT_NOT_RUN:
        b->not_run++;
        c->need_unwatch = 1;
        next_attempt(c, CONTEND_PAUSE_MS);
        break;
    default:
        b->indeterminate++;
        c->have_incr = 0;
        c->need_unwatch = 1;
        next_attempt(c, CONTEND_PAUSE_MS);
    }
}

/* ---- the check: every counter read before and after the load ---------------------------- */

static void send_check(client_t *c)
{
    contend_t *b = c->b;
    uint64_t n = (uint64_t)b->hot_keys - b->check_next;
    if (n > CONTEND_MGET_KEYS_MAX)
        n = CONTEND_MGET_KEYS_MAX;
    char keys[CONTEND_MGET_KEYS_MAX][CONTEND_PREFIX_BYTES_MAX + 24];
    const char *argv[1 + CONTEND_MGET_KEYS_MAX] = {"MGET"};
    for (uint64_t i = 0; i < n; i++) {
        key_name(b, b->check_next + i, keys[i], sizeof(keys[i]));
        argv[1 + i] = keys[i];
    }
    c->phase = PH_CHECK;
    c->expect = 1;
    c->got = 0;
    int rc = keel_client_command(&c->cl, 1 + n, argv, NULL, conn_reply, c);
    assert(rc == 0); /* the client is idle between batches */
}

static void start_load(contend_t *b);
static void finish(contend_t *b);

static void check_reply(client_t *c, const keel_resp_value_t *v)
{
    contend_t *b = c->b;
    c->expect = c->got = 0;
    if (v->type != KEEL_RESP_ARRAY) {
        keel_timer_start(&c->pause, CONTEND_PAUSE_MS * 5, 0, resume_later, c); /* no leader? */
        return;
    }
    int64_t sum = 0;
    for (size_t i = 0; i < v->elems_len; i++) {
        int64_t x;
        if (counter_value(&v->elems[i], &x) != 0) {
            b->fatal = "a hot counter holds something that is not an integer";
            finish(b);
            return;
        }
        sum += x;
    }
    *(b->check_stage == 0 ? &b->sum_before : &b->sum_after) += sum;
    b->check_next += v->elems_len;
    if (b->check_next < (uint64_t)b->hot_keys)
        send_check(c);
    else if (b->check_stage == 0)
        start_load(b);
    else
        finish(b);
}

static void on_reply(client_t *c, const keel_resp_value_t *v)
{
    int i = c->got++, last = c->got == c->expect;
    if (v->type == KEEL_RESP_ERROR)
        count_error(c->b, v);
    if (c->phase == PH_READ)
        read_reply(c, v, last);
    else if (c->phase == PH_COMMIT)
        commit_reply(c, v, i, last);
    else if (c->phase == PH_CHECK)
        check_reply(c, v);
    if (!last || c->phase == PH_CHECK)
        return;
    if (c->phase == PH_READ)
        read_done(c);
    else if (c->phase == PH_COMMIT)
        commit_done(c);
}

/* What a client does next when it is free: its check chunk, or the next attempt. */
static void client_resume(client_t *c)
{
    contend_t *b = c->b;
    if (!keel_client_connected(&c->cl) || c->expect > 0 || b->shutdown)
        return;
    if (c->is_checker) {
        if (b->check_stage >= 0 && b->check_next < (uint64_t)b->hot_keys)
            send_check(c);
        return;
    }
    if (b->running && !b->stopping && !b->fatal)
        send_read(c);
}

/* ---- run ---------------------------------------------------------------------------------- */

static void start_load(contend_t *b)
{
    b->check_stage = -1; /* the checker idles */
    b->running = 1;
    b->start_ms = b->last_print_ms = keel_loop_now_ms(&b->loop);
    for (int i = 0; i < b->conns_n; i++)
        client_resume(&b->clients[i]);
}

static void start_final_check(contend_t *b, keel_ms_t now)
{
    b->check_stage = 1;
    b->check_next = 0;
    b->check_from_ms = now;
    client_resume(b->checker);
}

static void print_second(contend_t *b, keel_ms_t now)
{
    if (!b->quiet)
        printf("t=%3llds  incr/s=%-7llu attempts/s=%-7llu conflicts=%5.1f%%\n",
               (long long)((now - b->start_ms + 500) / 1000), (unsigned long long)b->sec_acked,
               (unsigned long long)b->sec_attempts,
               b->sec_attempts ? 100.0 * (double)b->sec_conflicts / (double)b->sec_attempts : 0.0);
    fflush(stdout);
    b->sec_acked = b->sec_attempts = b->sec_conflicts = 0;
    b->last_print_ms = now;
}

static void on_tick(keel_timer_t *t, void *data)
{
    contend_t *b = data;
    keel_ms_t now = keel_loop_now_ms(&b->loop);
    if (b->fatal) {
        finish(b);
        return;
    }
    if (!b->running || b->check_stage == 1) { /* reading the counters */
        if (now - b->check_from_ms >= CONTEND_CHECK_MS) {
            b->fatal = "could not read every hot counter in time (no leader?)";
            finish(b);
        }
        return;
    }
    if (!b->stopping) {
        if (now - b->last_print_ms >= 1000)
            print_second(b, now);
        if (now - b->start_ms >= b->duration_ms) {
            b->stopping = 1;
            b->end_ms = b->drain_from_ms = now;
            b->end_ns = keel_clock_now_ns();
        }
        return;
    }
    int busy = 0;
    for (int i = 0; i < b->conns_n; i++)
        busy += b->clients[i].phase == PH_COMMIT;
    if (busy > 0 && now - b->drain_from_ms < CONTEND_DRAIN_MS)
        return;
    for (int i = 0; i < b->conns_n; i++)
        if (b->clients[i].phase == PH_COMMIT)
            conn_lost(&b->clients[i]); /* counted as indeterminate */
    start_final_check(b, now);
}

static void finish(contend_t *b)
{
    if (b->shutdown)
        return;
    b->shutdown = 1;
    for (int i = 0; i <= b->conns_n; i++) {
        keel_client_close(&b->clients[i].cl, NULL);
        keel_timer_close(&b->clients[i].pause, NULL);
    }
    keel_timer_close(&b->tick, NULL);
}

/* ---- options, report ---------------------------------------------------------------------- */

void keel_bench_contend_usage(void)
{
    printf("  --workload W      rw (default: GET/SET above), or contention on hot counters:\n"
           "                    cas (KEEL.GETV + KEEL.CAS) or txn (WATCH/GET + MULTI/SET/EXEC),\n"
           "                    each client retrying its increment until it commits; checks\n"
           "                    at the end that no acknowledged increment was lost or doubled\n"
           "  --hot-keys K      cas/txn: number of counters (default 1)\n"
           "  --key-prefix P    cas/txn: counter names P0..P{K-1} (default contend:)\n"
           "  --backoff-ms B    cas/txn: after the n-th conflict in a row wait a random time in\n"
           "                    [cap/2, cap], cap = min(B * 2^n, 32 B) ms (default 0: at once)\n"
           "  (cas/txn take --cluster, --addr, --connections, --duration, --seed, --quiet)\n");
}

int keel_bench_contend_wanted(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--workload") == 0)
            return strcmp(argv[i + 1], "cas") == 0 || strcmp(argv[i + 1], "txn") == 0;
    return 0;
}

static int parse_addr_opt(contend_t *b, const char *a, const char *v)
{
    if (strcmp(a, "--addr") == 0) {
        if (b->n_addrs < CONTEND_ADDRS_MAX)
            snprintf(b->addrs[b->n_addrs++], 64, "%s", v);
        return 0;
    }
    keel_cluster_t cl;
    char err[256];
    if (keel_cluster_load(v, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel bench kv: %s\n", err);
        return -1;
    }
    for (size_t k = 0; k < cl.n && b->n_addrs < CONTEND_ADDRS_MAX; k++)
        snprintf(b->addrs[b->n_addrs++], 64, "%s", cl.nodes[k].client);
    return 0;
}

static int parse(contend_t *b, int argc, char **argv)
{
    b->conns_n = 16;
    b->hot_keys = 1;
    b->duration_ms = 10000;
    snprintf(b->prefix, sizeof(b->prefix), "contend:");
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0) {
            b->quiet = 1;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--addr") == 0 || strcmp(a, "--cluster") == 0) {
            if (parse_addr_opt(b, a, v) != 0)
                return -1;
        } else if (strcmp(a, "--workload") == 0)
            b->workload = strcmp(v, "cas") == 0 ? WL_CAS : WL_TXN;
        else if (strcmp(a, "--connections") == 0)
            b->conns_n = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            b->duration_ms = (keel_ms_t)(atof(v) * 1000);
        else if (strcmp(a, "--hot-keys") == 0)
            b->hot_keys = atoi(v);
        else if (strcmp(a, "--key-prefix") == 0 && strlen(v) <= CONTEND_PREFIX_BYTES_MAX)
            snprintf(b->prefix, sizeof(b->prefix), "%s", v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--backoff-ms") == 0)
            b->backoff.base_ms = atoi(v);
        else {
            fprintf(stderr, "keel bench kv: %s is not an option of --workload cas/txn\n", a);
            return -1;
        }
    }
    if (b->n_addrs == 0 || b->conns_n < 1 || b->conns_n > CONTEND_CONNS_MAX || b->hot_keys < 1 ||
        b->hot_keys > CONTEND_HOT_KEYS_MAX || b->duration_ms <= 0 || b->backoff.base_ms < 0 ||
        b->backoff.base_ms > CONTEND_BACKOFF_MS_MAX)
        return -1;
    b->backoff.max_ms = 32 * b->backoff.base_ms;
    keel_rand_seed(&b->rand, seed);
    return 0;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, c = *(const uint32_t *)y;
    return a < c ? -1 : a > c;
}

static double pct_ms(const contend_t *b, double p)
{
    if (b->lat_n == 0)
        return 0;
    return b->lat_us[(size_t)(p * (double)(b->lat_n - 1))] / 1000.0;
}

static double per_s(uint64_t n, double secs)
{
    return secs > 0 ? (double)n / secs : 0.0;
}

/*
 * The latencies above count committed increments only: an increment still retrying when the
 * load stopped is abandoned (nothing of it was written) and shows here, with the age of the
 * oldest one, so that starved clients are not hidden. Then the share of each node's clients.
 */
static void report_unfinished(const contend_t *b)
{
    uint64_t n = 0;
    keel_ns_t oldest_ns = 0;
    for (int i = 0; i < b->conns_n; i++) {
        const client_t *c = &b->clients[i];
        if (!c->have_incr)
            continue;
        n++;
        if (b->end_ns - c->incr_start_ns > oldest_ns)
            oldest_ns = b->end_ns - c->incr_start_ns;
    }
    printf("  unfinished:    %llu increments still retrying at the end (abandoned), oldest "
           "begun %.0f ms before it\n",
           (unsigned long long)n, (double)oldest_ns / 1e6);
    if (b->n_addrs < 2)
        return;
    printf("  acked by node: ");
    for (size_t k = 0; k < b->n_addrs; k++)
        printf(" %s %llu", b->addrs[k], (unsigned long long)b->acked_by_node[k]);
    printf("\n");
}

/* Prints the figures and the check; 0 if the run passed. */
static int report(contend_t *b)
{
    qsort(b->lat_us, b->lat_n, sizeof(uint32_t), cmp_u32);
    double secs = (double)(b->end_ms - b->start_ms) / 1000.0;
    printf("\nkeel bench kv --workload %s: %d connections, %d hot keys, backoff %lld ms, %.1f s\n",
           b->workload == WL_CAS ? "cas" : "txn", b->conns_n, b->hot_keys,
           (long long)b->backoff.base_ms, secs);
    printf("  increments:    %llu acknowledged (%.0f /s)\n", (unsigned long long)b->acked,
           per_s(b->acked, secs));
    printf("  attempts:      %llu (%.0f /s), %.2f per acknowledged increment\n",
           (unsigned long long)b->attempts, per_s(b->attempts, secs),
           b->acked ? (double)b->attempts / (double)b->acked : 0.0);
    printf("  conflicts:     %llu (%.1f%% of attempts)  not run: %llu\n",
           (unsigned long long)b->conflicts,
           b->attempts ? 100.0 * (double)b->conflicts / (double)b->attempts : 0.0,
           (unsigned long long)b->not_run);
    printf("  increment latency, retries included (ms): p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
           pct_ms(b, 0.50), pct_ms(b, 0.99), pct_ms(b, 0.999), pct_ms(b, 1.0));
    printf("  errors:       ");
    for (int k = 0; k < E_KINDS; k++)
        printf(" %s %llu", err_names[k], (unsigned long long)b->errors[k]);
    printf("  connections lost: %llu reading, %llu committing; failed attempts %llu\n",
           (unsigned long long)(b->lost_read), (unsigned long long)b->lost_commit,
           (unsigned long long)b->connect_failures);
    printf("  indeterminate: %llu (commit sent, outcome unknown)\n",
           (unsigned long long)b->indeterminate);
    report_unfinished(b);
    if (b->fatal) {
        printf("  check:         FAILED: %s\n", b->fatal);
        return 1;
    }
    int64_t delta = b->sum_after - b->sum_before;
    uint64_t hi = b->acked + b->indeterminate;
    int ok = delta >= 0 && (uint64_t)delta >= b->acked && (uint64_t)delta <= hi;
    printf("  check:         counters went from %" PRId64 " to %" PRId64 " (+%" PRId64
           "), expected +[%llu, %llu]: %s\n",
           b->sum_before, b->sum_after, delta, (unsigned long long)b->acked, (unsigned long long)hi,
           ok                          ? "OK"
           : delta < (int64_t)b->acked ? "FAILED (acknowledged increments lost)"
                                       : "FAILED (increments applied twice or invented)");
    if (ok && b->acked == 0) {
        printf("  check:         FAILED: no increment was acknowledged\n");
        return 1;
    }
    return ok ? 0 : 1;
}

static int open_client(contend_t *b, client_t *c)
{
    size_t first = c->is_checker ? 0 : (size_t)c->idx % b->n_addrs;
    keel_client_config_t cfg =
        keel_bench_client_config(b->addrs, b->n_addrs, first, (uint64_t)c->idx + 1);
    cfg.requests_max = cfg.inflight_max = CONTEND_BATCH_MAX;
    cfg.on_event = conn_event;
    cfg.data = c;
    return keel_bench_client_open(&c->cl, &b->loop, &cfg);
}

keel_client_config_t keel_bench_client_config(const char (*addrs)[64], size_t n, size_t first,
                                              uint64_t seed)
{
    keel_client_config_t cfg = keel_client_config_default();
    for (size_t k = 0; k < n; k++)
        cfg.seeds[k] = addrs[k];
    cfg.seeds_n = n;
    cfg.first_seed = first;
    cfg.request_timeout_ms = 0; /* the server's -TIMEOUT is an outcome of its own */
    cfg.retry_tryagain = false; /* recorded (rw) or retried as a whole attempt (cas, txn) */
    cfg.session_bound = true;   /* WATCH and MULTI live on one connection */
    cfg.backoff.backoff_cap_ms = 500;
    cfg.seed = seed;
    return cfg;
}

int keel_bench_client_open(keel_client_t *cl, keel_loop_t *loop, const keel_client_config_t *cfg)
{
    keel_errmsg_t m;
    if (keel_client_init(cl, loop, cfg, &m) != 0) {
        fprintf(stderr, "keel bench kv: %s\n", m.text);
        return -1;
    }
    return 0;
}

static int setup(contend_t *b)
{
    b->clients = calloc((size_t)b->conns_n + 1, sizeof(client_t));
    b->lat_us = malloc(CONTEND_SAMPLES_MAX * sizeof(uint32_t));
    if (b->clients == NULL || b->lat_us == NULL)
        return -1;
    b->checker = &b->clients[b->conns_n];
    b->checker->is_checker = 1;
    for (int i = 0; i <= b->conns_n; i++) {
        client_t *c = &b->clients[i];
        c->b = b;
        c->idx = i;
        keel_timer_init(&b->loop, &c->pause);
        if (open_client(b, c) != 0)
            return -1;
    }
    return 0;
}

static void cleanup(contend_t *b)
{
    free(b->clients);
    free(b->lat_us);
    free(b);
}

int keel_bench_contend(int argc, char **argv)
{
    contend_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return 1;
    if (parse(b, argc, argv) != 0) {
        fprintf(stderr, "usage: keel bench kv --workload cas|txn (--cluster DIR | --addr "
                        "host:port ...) [--hot-keys K] [--connections N] [--duration S] ...\n"
                        "       (keel bench kv --help)\n");
        free(b);
        return 2;
    }
    keel_loop_init(&b->loop);
    int rc = 1;
    if (setup(b) == 0) {
        b->check_from_ms = keel_loop_now_ms(&b->loop);
        keel_timer_init(&b->loop, &b->tick);
        keel_timer_start(&b->tick, CONTEND_TICK_MS, CONTEND_TICK_MS, on_tick, b);
        keel_loop_run(&b->loop);
        if (!b->running)
            b->start_ms = b->end_ms = 0;
        rc = report(b);
    }
    keel_loop_close(&b->loop);
    cleanup(b);
    return rc;
}
