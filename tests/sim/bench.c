/* bench.c - cost of the Raft core per committed entry: 3 nodes, perfect network, big batches. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sim.h"

/*
 * The driver here is as thin as a driver can be: storage is "durable" at once,
 * messages are handed straight from one core's ready to the next core's step (the
 * receiving core copies what it keeps, so no copy is made here), and entries carry a
 * 16-byte payload. What is measured is therefore the core's own work: proposal,
 * batching into AppendEntries, the follower's log append, acknowledgements, the
 * commit rule, handing entries out for apply, and log compaction every COMPACT_EVERY
 * entries (so memory stays bounded, as in a long-running server).
 */
#define COMPACT_EVERY 16384

static void drain(keel_raft_t **r, int n, uint64_t *applied)
{
    for (int pass = 0; pass < 8; pass++) {
        int busy = 0;
        for (int i = 0; i < n; i++) {
            keel_raft_ready_t rd;
            if (!keel_raft_ready(r[i], &rd))
                continue;
            busy = 1;
            for (size_t k = 0; k < rd.msgs_n; k++)
                keel_raft_step(r[rd.msgs[k].to - 1], &rd.msgs[k]);
            for (size_t k = 0; k < rd.msgs_after_persist_n; k++)
                keel_raft_step(r[rd.msgs_after_persist[k].to - 1], &rd.msgs_after_persist[k]);
            uint64_t li = 0, lt = 0;
            if (rd.entries_n) {
                li = rd.entries[rd.entries_n - 1].index;
                lt = rd.entries[rd.entries_n - 1].term;
            }
            uint64_t last_applied = rd.committed_n ? rd.committed[rd.committed_n - 1].index : 0;
            applied[i] += rd.committed_n;
            keel_raft_advance(r[i]);
            if (li)
                keel_raft_persisted(r[i], li, lt);
            /* like an application: snapshot now and then so the log stays bounded */
            if (last_applied && last_applied >= keel_raft_snapshot_index(r[i]) + COMPACT_EVERY)
                keel_raft_compact(r[i], last_applied, "snapshot", 8);
        }
        if (!busy)
            return;
    }
}

double sim_bench(uint64_t entries, uint32_t batch, double *seconds_out)
{
    keel_raft_t *r[3];
    for (int i = 0; i < 3; i++) {
        keel_raft_config_t cfg;
        keel_raft_config_default(&cfg);
        cfg.id = (uint64_t)(i + 1);
        cfg.voters_n = 3;
        for (int j = 0; j < 3; j++)
            cfg.voters[j] = (uint64_t)(j + 1);
        cfg.msg_entries_max = batch;
        cfg.seed = 1;
        keel_errmsg_t em;
        if (keel_raft_new(&r[i], &cfg, NULL, 0, &em) != 0) {
            fprintf(stderr, "bench: %s\n", em.text);
            exit(1);
        }
    }
    uint64_t applied[3] = {0, 0, 0};
    keel_raft_campaign(r[0]);
    drain(r, 3, applied);
    uint64_t start_applied = applied[0];
    char payload[16] = "0123456789abcde";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (applied[0] - start_applied < entries) {
        for (uint32_t k = 0; k < batch; k++)
            keel_raft_propose(r[0], payload, sizeof(payload), NULL);
        drain(r, 3, applied);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    uint64_t done = applied[0] - start_applied;
    for (int i = 0; i < 3; i++)
        keel_raft_free(r[i]);
    *seconds_out = secs;
    return (double)done / secs;
}
