/* keel-streambench - end to end on streams: producers XADD to one stream, a consumer group of
 * C consumers reads it (XREADGROUP >, BLOCK) and acknowledges every batch (XACK); reports the
 * messages per second delivered and acknowledged, and the latency from each XADD's send to
 * its delivery to a consumer.
 *
 *   keel-streambench --addr host:port[,...] [--producers P] [--pipeline N] [--consumers C]
 *                    [--count K] [--rate msgs/s] [--duration s] [--value-bytes B]
 *                    [--stream key] [--json FILE]
 *
 * Closed loop (no --rate): each producer keeps N XADDs in flight for the duration; the
 * figure is how fast the group got and acknowledged everything, backlog included (the clock
 * stops at the last acknowledgement). Open loop (--rate R): R XADDs a second in all, each
 * stamped with its intended send time, so a slow server cannot slow the arrivals and hide
 * its latency (coordinated omission, as wrk2 corrects it); an XADD waits for a free pipeline
 * slot when all N are busy, and that wait counts. Each entry carries that time (field t, ns
 * on this host's monotonic clock: producers and consumers are this one process) and a
 * value of B bytes (field v). A consumer sends its XACK for a batch and its next XREADGROUP
 * together, without waiting in between. Nothing here is keel-specific: the same run against
 * redis-server is the anchor (bench/streams.sh).
 *
 * At the end (after the duration, up to DRAIN_WAIT_S more) the group must have delivered
 * every acknowledged XADD at least once; exit 1 if not, or if nothing was delivered.
 */
#include "base/lat.h"
#include "base/num.h"
#include "client/blocking.h"
#include "client/client.h"
#include "runtime/clock.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS_MAX 256
#define CONSUMERS_MAX 64
#define PIPELINE_MAX 1024
#define COUNT_MAX 10000
#define VALUE_BYTES_MAX 65536
#define DURATION_S_MAX 3600
#define BLOCK_MS 1000
#define DRAIN_WAIT_S 30
#define TICK_MS 1
#define SETUP_TIMEOUT_MS 10000

typedef struct bench bench_t;

typedef struct slot {
    struct producer *p;
    keel_ns_t sent_ns; /* the send (its intended send with --rate) */
    int busy;
} slot_t;

typedef struct producer {
    bench_t *b;
    keel_client_t cl;
    slot_t *slots; /* pipeline slots */
    int inflight;
} producer_t;

typedef struct consumer {
    bench_t *b;
    keel_client_t cl;
    char name[16];
} consumer_t;

enum phase { LOAD, DRAIN, DONE };

struct bench {
    keel_loop_t loop;
    keel_timer_t tick;
    keel_client_config_t cfg;
    producer_t prod[PRODUCERS_MAX];
    consumer_t cons[CONSUMERS_MAX];
    int producers, consumers, pipeline, count, duration_s, next_prod, closing;
    double rate;
    size_t value_bytes;
    char *value;
    const char *stream, *json_path;
    enum phase phase;
    keel_ns_t t0_ns, load_end_ns, last_ack_ns;
    uint64_t scheduled, added, add_errors, delivered, acked, ack_errors, read_errors;
    keel_lat_t e2e_us, add_us;
};

static double secs(keel_ns_t a, keel_ns_t b)
{
    return (double)(b - a) / 1e9;
}

static void on_xadd(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply);

/* Sends one XADD stamped sent_ns on a free slot of some producer: 0, or -1 if every slot
 * of every producer is busy (the caller tries again when one frees). */
static int send_one(bench_t *b, keel_ns_t sent_ns)
{
    for (int k = 0; k < b->producers; k++) {
        producer_t *p = &b->prod[(b->next_prod + k) % b->producers];
        if (p->inflight >= b->pipeline)
            continue;
        b->next_prod = (b->next_prod + k + 1) % b->producers;
        slot_t *s = NULL;
        for (int i = 0; i < b->pipeline && s == NULL; i++)
            s = p->slots[i].busy ? NULL : &p->slots[i];
        char t[KEEL_DEC_BYTES_MAX + 1];
        size_t tn = keel_fmt_u64(t, (uint64_t)sent_ns);
        const char *argv[] = {"XADD", b->stream, "*", "t", t, "v", b->value};
        size_t lens[] = {4, strlen(b->stream), 1, 1, tn, 1, b->value_bytes};
        *s = (slot_t){p, sent_ns, 1};
        if (keel_client_command(&p->cl, 7, argv, lens, on_xadd, s) != 0) {
            s->busy = 0;
            b->add_errors++;
            return 0;
        }
        p->inflight++;
        return 0;
    }
    return -1;
}

/* Open loop: every XADD due by now (the schedule's intended times) that a slot can take. */
static void send_due(bench_t *b, keel_ns_t now)
{
    uint64_t due = (uint64_t)(secs(b->t0_ns, now) * b->rate);
    uint64_t total = (uint64_t)(b->rate * b->duration_s);
    if (due > total)
        due = total;
    while (b->scheduled < due) {
        keel_ns_t intended = b->t0_ns + (keel_ns_t)((double)b->scheduled / b->rate * 1e9);
        if (send_one(b, intended) != 0)
            return;
        b->scheduled++;
    }
}

static void on_xadd(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    slot_t *s = ctx;
    producer_t *p = s->p;
    bench_t *b = p->b;
    (void)cl;
    keel_ns_t now = keel_clock_now_ns();
    s->busy = 0;
    p->inflight--;
    if (status == 0 && reply->type == KEEL_RESP_BULK) {
        b->added++;
        keel_lat_record(&b->add_us, (uint64_t)(now - s->sent_ns) / 1000);
    } else {
        b->add_errors++;
    }
    if (b->phase != LOAD || b->closing)
        return;
    if (b->rate > 0)
        send_due(b, now);
    else
        send_one(b, now);
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply);

static void read_next(consumer_t *c)
{
    bench_t *b = c->b;
    char count[KEEL_DEC_BYTES_MAX + 1], block[KEEL_DEC_BYTES_MAX + 1];
    count[keel_fmt_u64(count, (uint64_t)b->count)] = '\0';
    block[keel_fmt_u64(block, BLOCK_MS)] = '\0';
    const char *argv[] = {"XREADGROUP", "GROUP", "g",       c->name,   "COUNT", count,
                          "BLOCK",      block,   "STREAMS", b->stream, ">"};
    if (keel_client_command_timeout(&c->cl, 11, argv, NULL, BLOCK_MS + 10000, on_read, c) != 0)
        b->read_errors++;
}

static void on_ack(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    bench_t *b = ctx;
    (void)cl;
    if (status == 0 && reply->type == KEEL_RESP_INT) {
        b->acked += (uint64_t)reply->integer;
        b->last_ack_ns = keel_clock_now_ns();
    } else {
        b->ack_errors++;
    }
}

/* The send time in an entry's fields (t), or 0. */
static keel_ns_t stamp_of(const keel_resp_value_t *fields)
{
    for (size_t i = 0; i + 1 < fields->elems_len; i += 2) {
        const keel_resp_value_t *f = &fields->elems[i], *v = &fields->elems[i + 1];
        int64_t t;
        if (f->str.len == 1 && f->str.ptr[0] == 't' &&
            keel_parse_i64(v->str.ptr, v->str.len, &t) == 0 && t > 0)
            return (keel_ns_t)t;
    }
    return 0;
}

/* One batch: latencies recorded, XACK of its ids sent; then the next read. */
static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    consumer_t *c = ctx;
    bench_t *b = c->b;
    (void)cl;
    if (b->closing)
        return;
    if (status != 0 || reply->type == KEEL_RESP_ERROR) {
        b->read_errors++;
    } else if (reply->type == KEEL_RESP_ARRAY && reply->elems_len == 1 &&
               reply->elems[0].elems_len == 2) {
        const keel_resp_value_t *entries = &reply->elems[0].elems[1];
        keel_ns_t now = keel_clock_now_ns();
        const char **argv = malloc((entries->elems_len + 3) * sizeof(*argv));
        size_t *lens = malloc((entries->elems_len + 3) * sizeof(*lens));
        if (argv == NULL || lens == NULL)
            abort();
        argv[0] = "XACK", lens[0] = 4;
        argv[1] = b->stream, lens[1] = strlen(b->stream);
        argv[2] = "g", lens[2] = 1;
        size_t n = 3;
        for (size_t i = 0; i < entries->elems_len; i++) {
            const keel_resp_value_t *e = &entries->elems[i];
            keel_ns_t t = stamp_of(&e->elems[1]);
            if (t != 0 && now > t)
                keel_lat_record(&b->e2e_us, (uint64_t)(now - t) / 1000);
            argv[n] = (const char *)e->elems[0].str.ptr, lens[n++] = e->elems[0].str.len;
        }
        b->delivered += entries->elems_len;
        if (n > 3 && keel_client_command(&c->cl, n, argv, lens, on_ack, b) != 0)
            b->ack_errors++;
        free(argv);
        free(lens);
    }
    read_next(c);
}

static void closed_timer(keel_timer_t *t)
{
    (void)t;
}

static void finish(bench_t *b)
{
    b->phase = DONE;
    b->closing = 1;
    for (int i = 0; i < b->producers; i++)
        keel_client_close(&b->prod[i].cl, NULL);
    for (int i = 0; i < b->consumers; i++)
        keel_client_close(&b->cons[i].cl, NULL);
    keel_timer_close(&b->tick, closed_timer);
}

static void tick(keel_timer_t *t, void *data)
{
    bench_t *b = data;
    (void)t;
    keel_ns_t now = keel_clock_now_ns();
    if (b->phase == LOAD) {
        if (b->rate > 0)
            send_due(b, now);
        if (secs(b->t0_ns, now) >= b->duration_s) {
            b->phase = DRAIN;
            b->load_end_ns = now;
        }
        return;
    }
    int inflight = 0;
    for (int i = 0; i < b->producers; i++)
        inflight += b->prod[i].inflight;
    int caught_up = inflight == 0 && b->acked >= b->added && b->delivered >= b->added;
    if (caught_up || secs(b->load_end_ns, now) > DRAIN_WAIT_S)
        finish(b);
}

/* XGROUP CREATE stream g $ MKSTREAM after deleting the stream: a fresh run. */
static int setup(bench_t *b)
{
    keel_errmsg_t msg = {{0}};
    const char *del[] = {"DEL", b->stream};
    const char *create[] = {"XGROUP", "CREATE", b->stream, "g", "$", "MKSTREAM"};
    keel_client_reply_t r;
    int rc = keel_client_call(b->cfg.seeds, b->cfg.seeds_n, 2, del, SETUP_TIMEOUT_MS, &r, &msg);
    if (rc == 0) {
        keel_client_reply_free(&r);
        rc = keel_client_call(b->cfg.seeds, b->cfg.seeds_n, 6, create, SETUP_TIMEOUT_MS, &r, &msg);
    }
    if (rc != 0) {
        fprintf(stderr, "keel-streambench: setup: %s (%s)\n", keel_strerror(rc), msg.text);
        return rc;
    }
    rc = r.v->type == KEEL_RESP_SIMPLE ? 0 : KEEL_EPROTO;
    if (rc != 0)
        fprintf(stderr, "keel-streambench: XGROUP CREATE: %.*s\n", (int)r.v->str.len, r.v->str.ptr);
    keel_client_reply_free(&r);
    return rc;
}

static int start_clients(bench_t *b)
{
    keel_errmsg_t msg = {{0}};
    for (int i = 0; i < b->producers + b->consumers; i++) {
        keel_client_config_t cfg = b->cfg;
        cfg.first_seed = (size_t)i % cfg.seeds_n;
        cfg.requests_max = (uint32_t)(i < b->producers ? b->pipeline : 4) + 4;
        cfg.inflight_max = cfg.requests_max;
        cfg.seed = (uint64_t)i + 1;
        keel_client_t *cl = i < b->producers ? &b->prod[i].cl : &b->cons[i - b->producers].cl;
        if (keel_client_init(cl, &b->loop, &cfg, &msg) != 0) {
            fprintf(stderr, "keel-streambench: %s\n", msg.text);
            return -1;
        }
    }
    return 0;
}

static void report(bench_t *b)
{
    double load_s = secs(b->t0_ns, b->load_end_ns);
    double e2e_s = secs(b->t0_ns, b->last_ack_ns > b->t0_ns ? b->last_ack_ns : b->load_end_ns);
    double p50 = (double)keel_lat_percentile(&b->e2e_us, 0.5) / 1000.0;
    double p99 = (double)keel_lat_percentile(&b->e2e_us, 0.99) / 1000.0;
    double p999 = (double)keel_lat_percentile(&b->e2e_us, 0.999) / 1000.0;
    double add99 = (double)keel_lat_percentile(&b->add_us, 0.99) / 1000.0;
    printf("%d producers x %d in flight, %d consumers (COUNT %d, XACK per batch), %zu-byte "
           "values, %s\n",
           b->producers, b->pipeline, b->consumers, b->count, b->value_bytes,
           b->rate > 0 ? "open loop" : "closed loop");
    printf("XADD acknowledged: %" PRIu64 " in %.1f s (%.0f/s), errors %" PRIu64 ", p99 %.2f ms\n",
           b->added, load_s, (double)b->added / load_s, b->add_errors, add99);
    printf("delivered %" PRIu64 ", acknowledged by XACK %" PRIu64 " (read errors %" PRIu64
           ", XACK errors %" PRIu64 ")\n",
           b->delivered, b->acked, b->read_errors, b->ack_errors);
    printf("end to end: %.0f messages/s delivered and acknowledged (%.1f s to the last XACK)\n",
           (double)b->acked / e2e_s, e2e_s);
    printf("XADD send to delivery (ms): p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", p50, p99, p999,
           (double)b->e2e_us.max / 1000.0);
    if (b->json_path == NULL)
        return;
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "added", (json_int_t)b->added, "delivered",
        (json_int_t)b->delivered, "acked", (json_int_t)b->acked, "xadd_per_s",
        (double)b->added / load_s, "e2e_msgs_per_s", (double)b->acked / e2e_s, "e2e_p50_ms", p50,
        "e2e_p99_ms", p99, "e2e_p999_ms", p999, "xadd_p99_ms", add99, "rate", b->rate);
    if (j == NULL || json_dump_file(j, b->json_path, JSON_INDENT(1)) != 0)
        fprintf(stderr, "keel-streambench: cannot write %s\n", b->json_path);
    json_decref(j);
}

/* When the group missed acknowledged XADDs: its state, to tell entries it never read (lag)
 * from deliveries whose replies never reached a consumer (pending). */
static void report_group(bench_t *b)
{
    keel_errmsg_t msg = {{0}};
    const char *argv[] = {"XINFO", "GROUPS", b->stream};
    keel_client_reply_t r;
    if (keel_client_call(b->cfg.seeds, b->cfg.seeds_n, 3, argv, SETUP_TIMEOUT_MS, &r, &msg) != 0)
        return;
    const keel_resp_value_t *g = r.v->type == KEEL_RESP_ARRAY && r.v->elems_len ? r.v->elems : NULL;
    printf("the group now:");
    for (size_t i = 0; g && g->type == KEEL_RESP_ARRAY && i + 1 < g->elems_len; i += 2) {
        const keel_resp_value_t *k = &g->elems[i], *v = &g->elems[i + 1];
        if (v->type == KEEL_RESP_INT)
            printf(" %.*s %" PRId64, (int)k->str.len, (const char *)k->str.ptr, v->integer);
        else if (v->type == KEEL_RESP_BULK)
            printf(" %.*s %.*s", (int)k->str.len, (const char *)k->str.ptr, (int)v->str.len,
                   (const char *)v->str.ptr);
    }
    printf("\n");
    keel_client_reply_free(&r);
}

static long num(const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (v == NULL || *v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "keel-streambench: %s '%s': expected an integer in %ld..%ld\n", flag,
                v ? v : "", lo, hi);
        exit(2);
    }
    return x;
}

static void usage(void)
{
    printf("usage: keel-streambench --addr host:port[,...] [--producers P] [--pipeline N]\n"
           "       [--consumers C] [--count K] [--rate msgs/s] [--duration s]\n"
           "       [--value-bytes B] [--stream key] [--json FILE]\n"
           "(tools/streambench/main.c says what it measures)\n");
}

static int parse(bench_t *b, int argc, char **argv, char **addrs)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        i++;
        if (strcmp(a, "--addr") == 0 && v)
            *addrs = argv[i];
        else if (strcmp(a, "--producers") == 0)
            b->producers = (int)num(a, v, 1, PRODUCERS_MAX);
        else if (strcmp(a, "--pipeline") == 0)
            b->pipeline = (int)num(a, v, 1, PIPELINE_MAX);
        else if (strcmp(a, "--consumers") == 0)
            b->consumers = (int)num(a, v, 1, CONSUMERS_MAX);
        else if (strcmp(a, "--count") == 0)
            b->count = (int)num(a, v, 1, COUNT_MAX);
        else if (strcmp(a, "--rate") == 0)
            b->rate = (double)num(a, v, 0, 10000000);
        else if (strcmp(a, "--duration") == 0)
            b->duration_s = (int)num(a, v, 1, DURATION_S_MAX);
        else if (strcmp(a, "--value-bytes") == 0)
            b->value_bytes = (size_t)num(a, v, 0, VALUE_BYTES_MAX);
        else if (strcmp(a, "--stream") == 0 && v)
            b->stream = v;
        else if (strcmp(a, "--json") == 0 && v)
            b->json_path = v;
        else {
            fprintf(stderr, "keel-streambench: unknown option or missing value '%s'\n", a);
            return 2;
        }
    }
    if (*addrs == NULL) {
        fprintf(stderr, "keel-streambench: --addr host:port[,...] is required\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static bench_t b;
    char *addrs = NULL;
    b.producers = 4, b.pipeline = 16, b.consumers = 4, b.count = 100, b.duration_s = 10;
    b.value_bytes = 100, b.stream = "bench:e2e";
    if (parse(&b, argc, argv, &addrs) != 0)
        return 2;
    keel_errmsg_t msg = {{0}};
    b.cfg = keel_client_config_default();
    b.cfg.request_timeout_ms = 10000;
    if (keel_client_config_seeds(&b.cfg, addrs, "--addr", &msg) != 0) {
        fprintf(stderr, "keel-streambench: %s\n", msg.text);
        return 2;
    }
    b.value = malloc(b.value_bytes + 1);
    memset(b.value, 'x', b.value_bytes);
    keel_lat_reset(&b.e2e_us);
    keel_lat_reset(&b.add_us);
    if (setup(&b) != 0 || keel_loop_init(&b.loop) != 0 || start_clients(&b) != 0)
        return 1;
    for (int i = 0; i < b.producers; i++) {
        b.prod[i].b = &b;
        b.prod[i].slots = calloc((size_t)b.pipeline, sizeof(slot_t));
    }
    b.t0_ns = b.last_ack_ns = keel_clock_now_ns();
    for (int i = 0; i < b.consumers; i++) {
        b.cons[i].b = &b;
        snprintf(b.cons[i].name, sizeof(b.cons[i].name), "c%d", i);
        read_next(&b.cons[i]);
    }
    if (b.rate == 0)
        for (int i = 0; i < b.producers * b.pipeline; i++)
            send_one(&b, b.t0_ns);
    keel_timer_init(&b.loop, &b.tick);
    keel_timer_start(&b.tick, TICK_MS, TICK_MS, tick, &b);
    keel_loop_run(&b.loop);
    keel_loop_close(&b.loop);
    report(&b);
    for (int i = 0; i < b.producers; i++)
        free(b.prod[i].slots);
    free(b.value);
    int lost = b.delivered < b.added;
    if (lost) {
        printf("the group was delivered %" PRIu64 " of %" PRIu64 " acknowledged XADDs\n",
               b.delivered, b.added);
        report_group(&b);
    }
    return b.delivered > 0 && !lost ? 0 : 1;
}
