/* main.c - keel-sim command line: run seeds, seed ranges, a timed soak, or the core benchmark. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

static void usage(void)
{
    fprintf(stderr, "usage: keel-sim [--nodes N] (--seed S | --seeds A..B | --soak SECONDS)\n"
                    "                [--trace] [--history FILE] [--break NAME] [--stale-reads]\n"
                    "                [--streams] [--expect-failure]\n"
                    "       keel-sim --bench ENTRIES [--batch N]\n"
                    "  --break: commit-old-term | vote-any-log | ack-undurable (Raft core) |\n"
                    "           serve-reads-early | serve-ordered-late (the request path)\n"
                    "           (tests only)\n"
                    "  --stale-reads: serve reads from any node's local state (tests only)\n"
                    "  --streams: stream commands beside the KV workload, every node's stream\n"
                    "             and group state checked at every index\n"
                    "  --expect-failure: exit 0 only if some seed fails (the checks bite)\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_break(const char *s, keel_raft_break_t *out)
{
    static const struct {
        const char *name;
        keel_raft_break_t v;
    } t[] = {{"none", KEEL_RAFT_BREAK_NONE},
             {"commit-old-term", KEEL_RAFT_BREAK_COMMIT_OLD_TERM},
             {"vote-any-log", KEEL_RAFT_BREAK_VOTE_ANY_LOG},
             {"ack-undurable", KEEL_RAFT_BREAK_ACK_UNDURABLE}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(s, t[i].name) == 0) {
            *out = t[i].v;
            return 0;
        }
    return -1;
}

typedef struct totals {
    uint64_t seeds, failed, ops, ops_ok, entries, crashes, stream_cmds, stream_ok;
} totals_t;

static void run_one(uint64_t seed, const sim_opts_t *o, totals_t *t)
{
    sim_result_t res;
    sim_run(seed, o, &res);
    t->seeds++;
    t->failed += res.failed != 0;
    t->ops += res.ops;
    t->ops_ok += res.ops_ok;
    t->entries += res.entries_committed;
    t->stream_cmds += res.stream_cmds;
    t->stream_ok += res.stream_ok;
    t->crashes += res.crashes;
    if (o->trace || o->history_path)
        printf("seed %" PRIu64 ": %s; %" PRIu64 " ops (%" PRIu64 " ok, %" PRIu64
               " unknown), %" PRIu64 " entries committed, %" PRIu64 " leaderships, %" PRIu64
               " crashes, %" PRIu64 " pipelined rounds checked, %" PRId64 " ms simulated\n",
               seed, res.failed ? "FAILED" : "ok", res.ops, res.ops_ok, res.ops_unknown,
               res.entries_committed, res.leaders, res.crashes, res.pipes, res.sim_ms);
}

int main(int argc, char **argv)
{
    sim_opts_t o = {.nodes = 3};
    uint64_t a = 0, b = 0, bench = 0;
    uint32_t batch = 1000;
    double soak_s = 0;
    int have_seeds = 0, expect_failure = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--trace") == 0) {
            o.trace = 1;
        } else if (strcmp(arg, "--stale-reads") == 0) {
            o.stale_reads = 1;
        } else if (strcmp(arg, "--streams") == 0) {
            o.streams = 1;
        } else if (strcmp(arg, "--expect-failure") == 0) {
            expect_failure = 1;
        } else if (val == NULL) {
            usage();
            return 2;
        } else if (strcmp(arg, "--nodes") == 0) {
            o.nodes = atoi(val), i++;
        } else if (strcmp(arg, "--seed") == 0) {
            a = b = strtoull(val, NULL, 10), have_seeds = 1, i++;
        } else if (strcmp(arg, "--seeds") == 0) {
            if (sscanf(val, "%" SCNu64 "..%" SCNu64, &a, &b) != 2 || b < a) {
                usage();
                return 2;
            }
            have_seeds = 1, i++;
        } else if (strcmp(arg, "--soak") == 0) {
            soak_s = atof(val), i++;
        } else if (strcmp(arg, "--history") == 0) {
            o.history_path = val, i++;
        } else if (strcmp(arg, "--break") == 0 && strcmp(val, "serve-reads-early") == 0) {
            o.serve_reads_early = 1, i++;
        } else if (strcmp(arg, "--break") == 0 && strcmp(val, "serve-ordered-late") == 0) {
            o.serve_ordered_late = 1, i++;
        } else if (strcmp(arg, "--break") == 0) {
            if (parse_break(val, &o.brk) != 0) {
                usage();
                return 2;
            }
            i++;
        } else if (strcmp(arg, "--bench") == 0) {
            bench = strtoull(val, NULL, 10), i++;
        } else if (strcmp(arg, "--batch") == 0) {
            batch = (uint32_t)atoi(val), i++;
        } else {
            usage();
            return 2;
        }
    }
    if (o.nodes < 1 || o.nodes > KEEL_RAFT_VOTERS_MAX) {
        fprintf(stderr, "keel-sim: --nodes must be 1..%d\n", KEEL_RAFT_VOTERS_MAX);
        return 2;
    }
    if (bench) {
        double secs;
        double rate = sim_bench(bench, batch, &secs);
        printf("bench: 3 nodes, batch %u: %" PRIu64 " entries committed in %.3f s = %.0f "
               "entries/s (%.0f ns/entry)\n",
               batch, bench, secs, rate, 1e9 / rate);
        return 0;
    }
    if (!have_seeds && soak_s <= 0) {
        usage();
        return 2;
    }
    totals_t t = {0};
    double t0 = now_s();
    if (soak_s > 0) {
        /* Seeds from the clock's nanoseconds so every soak explores new ground; each
           failure prints its seed, which replays deterministically. */
        uint64_t seed = (uint64_t)(t0 * 1e9);
        int nodes[2] = {3, 5};
        while (now_s() - t0 < soak_s) {
            o.nodes = nodes[t.seeds % 2];
            run_one(seed++, &o, &t);
        }
    } else {
        for (uint64_t s = a; s <= b; s++) {
            run_one(s, &o, &t);
            if (expect_failure && t.failed)
                break; /* one failing seed proves the point */
        }
    }
    double dt = now_s() - t0;
    printf("keel-sim: %" PRIu64 " seeds, %" PRIu64 " failed, %" PRIu64 " client ops (%" PRIu64
           " ok), %" PRIu64 " entries committed, %" PRIu64 " crashes; %.2f s, %.1f seeds/s\n",
           t.seeds, t.failed, t.ops, t.ops_ok, t.entries, t.crashes, dt,
           dt > 0 ? (double)t.seeds / dt : 0.0);
    if (o.streams)
        printf("keel-sim: %" PRIu64 " stream commands sent, %" PRIu64 " answered without error\n",
               t.stream_cmds, t.stream_ok);
    if (expect_failure) {
        printf("keel-sim: expected a failure: %s\n", t.failed ? "found one (checks bite)" : "NONE");
        return t.failed ? 0 : 1;
    }
    return t.failed ? 1 : 0;
}
