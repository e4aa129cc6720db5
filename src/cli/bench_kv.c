/* bench_kv.c - `keel bench kv`: RESP load generator with pipelining, latency and a history. */
#include "cli/cli.h"

#include "base/buf.h"
#include "base/rand.h"
#include "cli/bench_contend.h"
#include "cli/cluster.h"
#include "client/client.h"
#include "proto/resp.h"
#include "runtime/clock.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * N connections, each keeping `pipeline` requests in flight, spread over the
 * cluster's nodes. Each request is GET or SET on a key drawn uniformly from
 * the key space; every SET writes a value never written before, so the
 * history can be checked by keel-lincheck (docs/lincheck.md): every pipeline
 * slot is one logical process, and a slot whose connection died with a request
 * in flight is retired (its outcome is unknown: "info") and replaced by a
 * fresh process id, as Jepsen does.
 *
 * Outcomes: a reply is "ok"; -TRYAGAIN (nothing proposed) is "fail"; any
 * other error or a lost connection is "info" (the write may or may not have
 * happened).
 *
 * Each connection is a client/client.h client over every address (starting at a
 * different one per connection), with no deadline and no -TRYAGAIN resend, so every
 * outcome is recorded as the server gave it. Failed connection attempts are counted and
 * reported; a run that completed no operation exits 1 (nothing was measured).
 */
#define ADDRS_MAX KEEL_CLUSTER_NODES_MAX
#define CONNS_MAX 4096
#define PIPELINE_MAX 1024
#define SAMPLES_MAX (64u * 1024 * 1024)
#define DRAIN_MS 7000

typedef struct op {
    struct conn *c;
    int is_set;
    uint64_t key, value; /* value: the written value's id */
    uint64_t process;
    keel_ns_t invoke_ns;
} op_t;

typedef struct bench bench_t;

typedef struct conn {
    bench_t *b;
    int idx;
    keel_client_t cl;
    op_t *ops;           /* pipeline slots */
    size_t *op_free;     /* indexes of free slots in ops (a stack) */
    size_t count;        /* ops in flight */
    uint64_t *slot_proc; /* process id per free slot */
    size_t free_n;
    size_t pipeline_free; /* entries in op_free */
} conn_t;

struct bench {
    keel_loop_t loop;
    char addrs[ADDRS_MAX][64];
    size_t n_addrs;
    int conns_n, pipeline, keys, value_bytes, get_pct;
    keel_ms_t duration_ms;
    conn_t *conns;
    keel_rand_t rand;
    keel_timer_t tick;
    keel_ms_t start_ms, end_ms, drain_from_ms;
    int stopping;
    uint64_t next_process, next_value;
    FILE *history;
    uint32_t *lat_us;
    size_t lat_n;
    uint64_t ok, errors_reply, errors_tryagain, errors_timeout, lost, sec_ok;
    uint64_t connect_failures, links_lost;
    char *value; /* value_bytes of '_' padding; each SET writes its id over the front */
    int quiet;
    int final_reads, final_phase; /* after the load: one GET of every key, on connection 0 */
    uint64_t final_next;
    /* leader watcher (a thread: its HTTP calls block) */
    keel_cluster_t cluster;
    int have_cluster;
    volatile int watch_stop;
    keel_ms_t no_leader_ms;
    pthread_t watcher;
};

static void hist_op(bench_t *b, const op_t *o, const char *type, const uint8_t *val, size_t vlen,
                    int val_is_nil, keel_ns_t t)
{
    if (b->history == NULL)
        return;
    fprintf(b->history,
            "{\"process\":%" PRIu64 ",\"type\":\"%s\",\"f\":\"%s\",\"key\":\"k%" PRIu64
            "\",\"value\":",
            o->process, type, o->is_set ? "write" : "read", o->key);
    if (o->is_set)
        fprintf(b->history, "\"v%" PRIu64 "\"", o->value);
    else if (val == NULL || val_is_nil)
        fprintf(b->history, "null");
    else { /* the value's identity is the part before the '_' padding */
        const uint8_t *pad = memchr(val, '_', vlen);
        fprintf(b->history, "\"%.*s\"", (int)(pad ? (size_t)(pad - val) : vlen), (const char *)val);
    }
    fprintf(b->history, ",\"time\":%lld}\n", (long long)t);
}

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v);

static void send_one(conn_t *c)
{
    bench_t *b = c->b;
    op_t *o = &c->ops[c->op_free[--c->pipeline_free]];
    o->c = c;
    if (b->final_phase) {
        o->is_set = 0;
        o->key = b->final_next++;
    } else {
        o->is_set = (int)keel_rand_below(&b->rand, 100) >= b->get_pct;
        o->key = keel_rand_below(&b->rand, (uint64_t)b->keys);
    }
    o->process = c->slot_proc[--c->free_n];
    o->invoke_ns = keel_clock_now_ns();
    char key[32], id[32];
    const char *argv[3] = {o->is_set ? "SET" : "GET", key, b->value};
    size_t lens[3] = {3, (size_t)snprintf(key, sizeof(key), "k%" PRIu64, o->key), 0};
    if (o->is_set) {
        o->value = ++b->next_value;
        int vl = snprintf(id, sizeof(id), "v%" PRIu64, o->value);
        memcpy(b->value, id, (size_t)vl); /* padding after the unique id */
        lens[2] = b->value_bytes > vl ? (size_t)b->value_bytes : (size_t)vl;
    }
    int rc = keel_client_command(&c->cl, o->is_set ? 3 : 2, argv, lens, on_reply, o);
    assert(rc == 0); /* requests_max is the pipeline depth, which count stays under */
    c->count++;
    hist_op(b, o, "invoke", NULL, 0, 0, o->invoke_ns);
}

static int may_send(const conn_t *c)
{
    const bench_t *b = c->b;
    if (!keel_client_connected(&c->cl) || c->count >= (size_t)b->pipeline)
        return 0;
    if (b->final_phase)
        return c->idx == 0 && b->final_next < (uint64_t)b->keys;
    return !b->stopping;
}

static void fill(conn_t *c)
{
    while (may_send(c))
        send_one(c);
}

/* Gives the op's slot back; its process id too, unless its outcome is unknown. */
static void release(conn_t *c, op_t *o, int unknown)
{
    c->op_free[c->pipeline_free++] = (size_t)(o - c->ops);
    c->count--;
    c->slot_proc[c->free_n++] = unknown ? ++c->b->next_process : o->process;
}

static void complete(conn_t *c, op_t *o, const keel_resp_value_t *v)
{
    bench_t *b = c->b;
    keel_ns_t now = keel_clock_now_ns();
    const char *type = "ok";
    if (v->type == KEEL_RESP_ERROR) {
        int tryagain = v->str.len >= 8 && memcmp(v->str.ptr, "TRYAGAIN", 8) == 0;
        int timeout = v->str.len >= 7 && memcmp(v->str.ptr, "TIMEOUT", 7) == 0;
        type = tryagain ? "fail" : "info";
        if (tryagain)
            b->errors_tryagain++;
        else if (timeout)
            b->errors_timeout++;
        else
            b->errors_reply++;
    } else if (!b->final_phase) {
        b->ok++;
        b->sec_ok++;
        if (b->lat_n < SAMPLES_MAX)
            b->lat_us[b->lat_n++] = (uint32_t)((now - o->invoke_ns) / 1000);
    }
    hist_op(b, o, type, v->str.ptr, v->str.len, v->type == KEEL_RESP_NIL, now);
    release(c, o, strcmp(type, "info") == 0); /* an unknown outcome retires the id */
}

/* A request on a broken (or closed) connection has an unknown outcome. */
static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    op_t *o = ctx;
    conn_t *c = o->c;
    if (status == 0) {
        complete(c, o, v);
        fill(c);
        return;
    }
    hist_op(c->b, o, "info", NULL, 0, 0, keel_clock_now_ns());
    c->b->lost++;
    release(c, o, 1);
}

static void on_event(keel_client_t *cl, int event, int err, void *data)
{
    conn_t *c = data;
    if (event == KEEL_CLIENT_UP)
        fill(c);
    else if (event == KEEL_CLIENT_CONNECT_ERR)
        c->b->connect_failures++;
    else
        c->b->links_lost++;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(bench_t *b, double p)
{
    if (b->lat_n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(b->lat_n - 1));
    return b->lat_us[i] / 1000.0;
}

static void stop_all(bench_t *b);

static void on_tick(keel_timer_t *t, void *data)
{
    bench_t *b = data;
    keel_ms_t now = keel_loop_now_ms(&b->loop);
    if (!b->stopping) {
        if (!b->quiet)
            printf("t=%3llds  ops/s=%-8llu\n", (long long)((now - b->start_ms + 500) / 1000),
                   (unsigned long long)b->sec_ok);
        fflush(stdout);
        b->sec_ok = 0;
        if (now - b->start_ms >= b->duration_ms) {
            b->stopping = 1;
            b->end_ms = b->drain_from_ms = now;
        }
        return;
    }
    int busy = 0;
    for (int i = 0; i < b->conns_n; i++)
        busy += b->conns[i].count > 0;
    if (busy == 0 && b->final_reads && !b->final_phase) {
        b->final_phase = 1; /* everything acknowledged is in; now read every key once */
        b->drain_from_ms = now;
        fill(&b->conns[0]);
        return;
    }
    int final_done = !b->final_phase || b->final_next >= (uint64_t)b->keys;
    if ((busy == 0 && final_done) || now - b->drain_from_ms >= DRAIN_MS)
        stop_all(b);
}

static void stop_all(bench_t *b)
{
    for (int i = 0; i < b->conns_n; i++) /* what is in flight has an unknown outcome */
        keel_client_close(&b->conns[i].cl, NULL);
    keel_timer_close(&b->tick, NULL);
}

static void *watch_leader(void *arg)
{
    bench_t *b = arg;
    keel_ms_t last = keel_clock_now_ms();
    while (!b->watch_stop) {
        usleep(100 * 1000);
        int leader = 0;
        for (size_t i = 0; i < b->cluster.n && !leader; i++) {
            keel_cluster_status_t s;
            leader = keel_cluster_node_status(&b->cluster.nodes[i], &s) == 0 &&
                     strcmp(s.role, "leader") == 0;
        }
        keel_ms_t now = keel_clock_now_ms();
        if (!leader)
            b->no_leader_ms += now - last;
        last = now;
    }
    return NULL;
}

static void usage(void)
{
    printf("usage: keel bench kv (--cluster DIR|FILE | --addr host:port ...) [options]\n"
           "  --connections N   connections, spread over the nodes (default 16)\n"
           "  --pipeline D      requests in flight per connection (default 1)\n"
           "  --duration S      seconds of load (default 10)\n"
           "  --keys K          key space size (default 1000)\n"
           "  --get-pct P       percent of GETs, the rest SETs (default 50)\n"
           "  --value-bytes B   SET value size (default 100)\n"
           "  --seed S          randomness (default 1)\n"
           "  --history FILE    record every operation for keel-lincheck\n"
           "  --final-reads     after the load, read every key once (recorded too), so a\n"
           "                    lost acknowledged write shows in the history\n"
           "  --quiet           no per-second lines\n");
    keel_bench_contend_usage();
}

static int parse(bench_t *b, int argc, char **argv)
{
    b->conns_n = 16;
    b->pipeline = 1;
    b->duration_ms = 10000;
    b->keys = 1000;
    b->get_pct = 50;
    b->value_bytes = 100;
    uint64_t seed = 1;
    const char *history = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0 || strcmp(a, "--final-reads") == 0) {
            *(a[2] == 'q' ? &b->quiet : &b->final_reads) = 1;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--workload") == 0 && strcmp(v, "rw") == 0) {
            continue;
        } else if (strcmp(a, "--cluster") == 0) {
            char err[256];
            if (keel_cluster_load(v, &b->cluster, err, sizeof(err)) != 0) {
                fprintf(stderr, "keel bench kv: %s\n", err);
                return -1;
            }
            b->have_cluster = 1;
            for (size_t k = 0; k < b->cluster.n && b->n_addrs < ADDRS_MAX; k++)
                snprintf(b->addrs[b->n_addrs++], 64, "%s", b->cluster.nodes[k].client);
        } else if (strcmp(a, "--addr") == 0 && b->n_addrs < ADDRS_MAX)
            snprintf(b->addrs[b->n_addrs++], 64, "%s", v);
        else if (strcmp(a, "--connections") == 0)
            b->conns_n = atoi(v);
        else if (strcmp(a, "--pipeline") == 0)
            b->pipeline = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            b->duration_ms = (keel_ms_t)(atof(v) * 1000);
        else if (strcmp(a, "--keys") == 0)
            b->keys = atoi(v);
        else if (strcmp(a, "--get-pct") == 0)
            b->get_pct = atoi(v);
        else if (strcmp(a, "--value-bytes") == 0)
            b->value_bytes = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--history") == 0)
            history = v;
        else
            return -1;
    }
    if (b->n_addrs == 0 || b->conns_n < 1 || b->conns_n > CONNS_MAX || b->pipeline < 1 ||
        b->pipeline > PIPELINE_MAX || b->keys < 1 || b->get_pct < 0 || b->get_pct > 100 ||
        b->value_bytes < 1 || b->value_bytes > 1024 * 1024 || b->duration_ms <= 0)
        return -1;
    keel_rand_seed(&b->rand, seed);
    b->value = malloc((size_t)b->value_bytes + 32);
    if (b->value == NULL)
        return -1;
    memset(b->value, '_', (size_t)b->value_bytes + 32);
    if (history && (b->history = fopen(history, "w")) == NULL) {
        fprintf(stderr, "keel bench kv: cannot write %s\n", history);
        return -1;
    }
    return 0;
}

static int open_conn(bench_t *b, conn_t *c, int i)
{
    keel_client_config_t cfg =
        keel_bench_client_config(b->addrs, b->n_addrs, (size_t)i % b->n_addrs, (uint64_t)i + 1);
    cfg.requests_max = cfg.inflight_max = (uint32_t)b->pipeline;
    cfg.request_bytes_max = (size_t)b->value_bytes + 256;
    cfg.on_event = on_event;
    cfg.data = c;
    return keel_bench_client_open(&c->cl, &b->loop, &cfg);
}

static int setup_conns(bench_t *b)
{
    b->conns = calloc((size_t)b->conns_n, sizeof(conn_t));
    b->lat_us = malloc(SAMPLES_MAX * sizeof(uint32_t));
    if (b->conns == NULL || b->lat_us == NULL)
        return -1;
    for (int i = 0; i < b->conns_n; i++) {
        conn_t *c = &b->conns[i];
        c->b = b;
        c->idx = i;
        c->ops = calloc((size_t)b->pipeline, sizeof(op_t));
        c->op_free = calloc((size_t)b->pipeline, sizeof(size_t));
        c->slot_proc = calloc((size_t)b->pipeline, sizeof(uint64_t));
        if (c->ops == NULL || c->op_free == NULL || c->slot_proc == NULL)
            return -1;
        for (int k = 0; k < b->pipeline; k++) {
            c->slot_proc[c->free_n++] = ++b->next_process;
            c->op_free[c->pipeline_free++] = (size_t)k;
        }
        if (open_conn(b, c, i) != 0)
            return -1;
    }
    return 0;
}

static void report(bench_t *b)
{
    qsort(b->lat_us, b->lat_n, sizeof(uint32_t), cmp_u32);
    double secs = (double)(b->end_ms - b->start_ms) / 1000.0;
    printf("\nkeel bench kv: %d connections x pipeline %d, %d%% GET, %d keys, %d-byte values, "
           "%.1f s\n",
           b->conns_n, b->pipeline, b->get_pct, b->keys, b->value_bytes, secs);
    printf("  ok ops:        %llu (%.0f ops/s)\n", (unsigned long long)b->ok,
           secs > 0 ? (double)b->ok / secs : 0.0);
    printf("  latency (ms):  p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", pct_ms(b, 0.50),
           pct_ms(b, 0.99), pct_ms(b, 0.999), pct_ms(b, 1.0));
    printf("  errors:        tryagain %llu  timeout %llu  other %llu  lost-in-flight %llu\n",
           (unsigned long long)b->errors_tryagain, (unsigned long long)b->errors_timeout,
           (unsigned long long)b->errors_reply, (unsigned long long)b->lost);
    printf("  connections:   failed attempts %llu  lost %llu\n",
           (unsigned long long)b->connect_failures, (unsigned long long)b->links_lost);
    if (b->have_cluster)
        printf("  time without a leader: %lld ms (polled every 100 ms)\n",
               (long long)b->no_leader_ms);
}

/* Frees what setup_conns and parse allocated (the loop's handles are closed by then). */
static void bench_free(bench_t *b)
{
    for (int i = 0; b->conns != NULL && i < b->conns_n; i++) {
        conn_t *c = &b->conns[i];
        free(c->ops);
        free(c->op_free);
        free(c->slot_proc);
    }
    free(b->conns);
    free(b->lat_us);
    free(b->value);
    if (b->history)
        fclose(b->history);
    free(b);
}

static int bench_kv(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return 1;
    if (parse(b, argc, argv) != 0) {
        usage();
        bench_free(b);
        return 2;
    }
    keel_loop_init(&b->loop);
    if (setup_conns(b) != 0)
        return 1; /* connectors may be started: exiting is the cleanup */
    b->start_ms = keel_loop_now_ms(&b->loop);
    keel_timer_init(&b->loop, &b->tick);
    keel_timer_start(&b->tick, 1000, 1000, on_tick, b);
    if (b->have_cluster)
        pthread_create(&b->watcher, NULL, watch_leader, b);
    keel_loop_run(&b->loop);
    if (b->have_cluster) {
        b->watch_stop = 1;
        pthread_join(b->watcher, NULL);
    }
    report(b);
    int rc = 0;
    if (b->ok == 0) {
        fprintf(stderr, "keel bench kv: no operation completed (%llu failed connection attempts)\n",
                (unsigned long long)b->connect_failures);
        rc = 1;
    }
    keel_loop_close(&b->loop);
    bench_free(b);
    return rc;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

int keel_cli_bench(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage();
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "kv") == 0 && keel_bench_contend_wanted(argc - 1, argv + 1))
        return keel_bench_contend(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "kv") == 0)
        return bench_kv(argc - 1, argv + 1);
    fprintf(stderr, "usage: keel bench kv [options]   (keel bench kv --help)\n");
    return 2;
}
