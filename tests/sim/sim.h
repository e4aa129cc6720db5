/* sim.h - deterministic cluster simulator for the Raft core: one seed replays one run. */
#ifndef KEEL_TESTS_SIM_H
#define KEEL_TESTS_SIM_H

#include <stdint.h>

#include "base/ktime.h"
#include "core/raft/raft.h"

typedef struct sim_opts {
    int nodes;                /* 3 or 5 (1..9) */
    keel_raft_break_t brk;    /* a deliberately broken rule (the "checks bite" test) */
    int trace;                /* print every event as it happens */
    const char *history_path; /* write the client history as JSON lines */
    int stale_reads;          /* broken on purpose: serve reads from local state */
    int serve_reads_early;    /* broken on purpose: requests.c serves a read before its read
                                 index is applied (keel_reqs_config_t.test_serve_reads_early) */
    int serve_ordered_late;   /* broken on purpose: requests.c serves a read ordered before a
                                 write after that write applied (test_serve_ordered_late) */
    int streams;              /* also send stream commands (XADD, XREADGROUP, XACK, KEEL.XNACK,
                                 XAUTOCLAIM, XTRIM on "s" with a group and a dead-letter stream) and
                                 check every node's stream and group state at every index */
} sim_opts_t;

typedef struct sim_result {
    int failed;
    char why[256];
    uint64_t ops, ops_ok, ops_unknown, entries_committed, leaders, crashes;
    uint64_t pipes;                  /* pipelined rounds checked (sim_client.c) */
    uint64_t stream_cmds, stream_ok; /* --streams: commands sent, answered without error */
    keel_ms_t sim_ms;
} sim_result_t;

/* Runs one seed. Returns 0 if every check passed; prints the failure trace otherwise. */
int sim_run(uint64_t seed, const sim_opts_t *o, sim_result_t *res);

/* Core cost: a 3-node cluster, perfect network, batches of `batch` entries, until
   `entries` are committed. Returns committed entries per second of wall time. */
double sim_bench(uint64_t entries, uint32_t batch, double *seconds_out);

#endif
