/* sim.h - test_apsim's world: the design of the simulation, its limits, events, operations,
 * nodes and the sim itself; shared by test_apsim.c (the simulation) and check.c (the
 * checker). */
#ifndef KEEL_TEST_APSIM_SIM_H
#define KEEL_TEST_APSIM_SIM_H

#include "base/buf.h"
#include "base/rand.h"
#include "core/apobj.h"
#include "core/applace.h"
#include "core/crdt.h"
#include "core/merkle.h"
#include "core/vclock.h"

#include <inttypes.h>
#include <stdio.h>

/*
 * Five nodes, each with a replica store (sibling sets and PN-counters, kept
 * as if fsync'd: they survive a crash, and are lost only when a node loses
 * its data directory, after which it takes a new actor id). Clients send
 * PUT / DEL (with the context of their last read of the key, or none), GET
 * and INCR to any node, which coordinates:
 *
 * - writes: the coordinator issues the dot on its own store (so its actor's
 *   history stays contiguous), sends the new state to the key's N = 3 homes,
 *   and after a timeout sends it to fallbacks on the ring with a hint naming
 *   each home that did not answer (sloppy quorum). It acknowledges once W
 *   homes' copies are stored (by the home, or by a fallback holding a hint
 *   for it; a home and its stand-in count once), and fails after a second
 *   timeout with the count it reached.
 * - reads: ask the homes, answer with the merge of the first R replies (its
 *   siblings and context), then read-repair every replier whose state
 *   differs from the merge.
 * - hinted handoff: a fallback sends hinted keys to their home until the home
 *   acknowledges the version it was sent.
 * - anti-entropy: each node keeps, per peer, a Merkle tree of the keys both
 *   are homes of; it sends a peer that tree, the peer diffs it against its
 *   own and both push the keys in the differing ranges.
 *
 * In half of the seeds a sixth node joins the ring mid-run: every node rebuilds its
 * shared-range trees, and anti-entropy moves the new home's ranges to it; a node that
 * stops being a home hands its keys to the new homes as hints, and so does a node that
 * gets a key (a write or a handoff) meant for it as a home under the old ring.
 *
 * The network loses, delays (hence reorders) and duplicates messages and is
 * partitioned at random; nodes crash and restart, and sometimes lose their
 * data. Then the faults stop, and the run checks, over the recorded history:
 * every acknowledged write (unless every replica that acknowledged it lost
 * its data) is a sibling of the final value or was superseded by a write
 * whose context covered it and which itself reached the replicas; a read at
 * R after a write acknowledged by W homes, R + W > N, saw it (its context
 * covers the write); each actor's counter contribution is a prefix of its
 * increments that includes every acknowledged one (so the counter equals the
 * sum of acknowledged increments plus possibly some that failed, never
 * fewer); every hint was delivered; the homes of every key converged.
 *
 * Usage: test_apsim [--seeds A..B]
 * [--break overwrite|no-hints|counter-replace|no-stream|count-answers] [--expect-failure] [-v]
 * --break breaks a rule on purpose, to show the checker bites: "overwrite" makes a write
 * replace whatever the coordinator holds (last writer wins), "no-hints" makes fallbacks
 * forget the home they stand in for (so nothing is handed off), "counter-replace" makes a
 * replica take a peer's counter state instead of merging it, "no-stream" makes a node that
 * stops being a key's home on a ring change keep the key to itself, "count-answers" makes the
 * coordinator count answers toward W, so a home and its own stand-in count twice.
 * Each seed reproduces its run exactly; a failure prints the seed.
 */

#define NODES 6 /* node 5 is not on the ring until it joins (half of the seeds) */
#define NREP 3
#define SKEYS 6 /* keys holding sibling sets */
#define CKEYS 2 /* keys holding PN-counters */
#define NK (SKEYS + CKEYS)
#define CLIENTS 4
#define OPS_MAX 3000
#define EVENTS_MAX 200000
#define DEPTH 3
#define FAULT_PHASE_MS 20000
#define HEAL_PHASE_MS 15000
#define T1_MS 60  /* coordinator: go to fallbacks */
#define T2_MS 200 /* coordinator: give up (writes), finish repair (reads) */
#define TICK_MS 100

enum { OP_PUT, OP_DEL, OP_GET, OP_INCR };
enum {
    M_REQ,
    M_REPL,
    M_REPL_ACK,
    M_READ,
    M_READ_REPLY,
    M_HANDOFF,
    M_HANDOFF_ACK,
    M_AE_TREE,
    M_AE_PULL,
    T_OP1,
    T_OP2,
    T_CLIENT,
    T_TICK,
    T_NEMESIS
};

typedef struct ev {
    uint64_t at, seq;
    int type, from, to, key, op, hint, client;
    uint64_t hint_seq;
    keel_buf_t body; /* encoded state, or Merkle nodes */
} ev_t;

typedef struct op {
    int kind, client, coord, key, w, r, done, ok, abandoned;
    uint64_t start, end;
    keel_dot_t dot;
    keel_vv_t ctx; /* the client's context (PUT/DEL), or the read's answer (GET) */
    int has_ctx;
    int64_t delta;
    uint64_t cum; /* INCR: the actor's count after it (P or N side) */
    uint64_t actor;
    uint32_t ackers, home_ackers, asked, replied;
    uint32_t covered; /* writes: the homes whose copy is stored, by the home or its stand-in */
    uint32_t held;    /* writes: the same, as the replicas stored it (the checker's record) */
    int held_at_ack;  /* writes: homes in held when the write was acknowledged */
    uint64_t digest[NODES];
    keel_apobj_t rd;
    keel_pncounter_t rc;
    uint32_t prefs[NODES]; /* writes: the key's preference list when it was coordinated, */
    uint32_t prefs_n;      /* as keel server's op keeps its homes and fallbacks */
    int wiped_ackers_at_risk;
    int coordinated; /* writes: a node issued its dot (a forwarded request's copy is ignored) */
    int forwarded;   /* writes: a non-home sent it to a home (keel server's forward) */
} op_t;

typedef struct node {
    int up, inc;
    uint64_t actor;
    int has[NK];
    keel_apobj_t obj[NK];
    keel_pncounter_t cnt[NK];
    uint64_t item[NK];
    keel_merkle_t tree[NODES];
    uint64_t hint_seq[NK][NODES]; /* 0: no hint; else the version of the pending hint */
    uint32_t dropped_own; /* bit k: dropped while it held this actor's dots (a write of it takes
                             a new actor first, as keel server's set of dropped keys) */
} node_t;

typedef struct sim {
    uint64_t seed, now, seq;
    keel_rand_t rnd;
    ev_t **heap;
    uint32_t heap_n;
    node_t node[NODES];
    uint64_t ids[NODES];
    keel_applace_t place;
    uint32_t prefs[NK][NODES];
    uint32_t ring_n;          /* nodes 0..ring_n-1 are on the ring */
    uint64_t ring_changed_at; /* when node 5 joined, 0: never */
    uint64_t join_at;         /* when it will */
    int blocked[NODES][NODES];
    double loss, dup;
    int faults;
    op_t *ops;
    int ops_n;
    keel_vv_t client_ctx[CLIENTS][NK];
    int client_has_ctx[CLIENTS][NK];
    uint64_t wiped_at[NODES]; /* last wipe time + 1, 0: never */
    int brk_overwrite, brk_no_hints, brk_counter_replace, brk_no_stream, brk_count_answers, verbose;
    int brk_no_renew;
    uint64_t stat_drops, stat_drops_own, stat_renewals;
    char fail[512];
    uint64_t stat_writes_checked, stat_incrs_checked, stat_reads_checked, stat_exempt, stat_acked,
        stat_failed, stat_repairs, stat_handoffs, stat_ae_keys, stat_siblings;
} sim_t;

#define FAIL(s, ...) (snprintf((s)->fail, sizeof((s)->fail), __VA_ARGS__), -1)

/* test_apsim.c */
uint64_t apsim_state_digest(const node_t *nd, int k);
/* check.c: the end-of-run checks; 0, or -1 with s->fail set */
int apsim_check(sim_t *s);

#endif
