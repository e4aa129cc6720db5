/* readindex.c - linearizable reads without log writes: ReadIndex (thesis §6.4). */
#include <assert.h>
#include <stdlib.h>

#include "core/raft/raft_int.h"

/*
 * The leader records its commit index as the read index, then confirms it is still
 * the leader with one heartbeat round: a heartbeat sent after the read was registered
 * carries a round number >= the read's, and answers from a majority (the leader
 * included) prove no newer leader had been elected when they answered. The read may
 * then be served once the state machine has applied the read index. Many reads share
 * one round. Requires an entry of the leader's own term to be committed, so that its
 * commit index is at least every entry committed before it took over.
 */
/* A new heartbeat round: its number travels as ctx; its start tick bounds a lease. */
uint64_t keel__raft_new_round(keel_raft_t *r)
{
    r->read_seq++;
    r->round_tick[r->read_seq % KEEL__LEASE_ROUNDS] = r->ticks;
    return r->read_seq;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Lease (thesis §6.4.1): a voter that acknowledged round R heard from us after R was
 * sent and, by leader stickiness, votes for nobody else for election_ticks_min of its
 * ticks. If a majority acknowledged R, no other leader can exist before R's send tick
 * + election_ticks_min, less the allowed clock drift.
 */
static int lease_valid(keel_raft_t *r)
{
    if (!r->cfg.lease_reads || r->lease_off || r->transfer_to != 0)
        return 0;
    uint64_t acked[KEEL_RAFT_MEMBERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < r->prs_n; i++)
        if (r->prs[i].is_voter)
            acked[n++] = r->prs[i].is_self ? r->read_seq : r->prs[i].read_acked;
    if (n < r->quorum)
        return 0;
    qsort(acked, n, sizeof(acked[0]), cmp_desc);
    uint64_t round = acked[r->quorum - 1];
    if (round == 0 || r->read_seq - round >= KEEL__LEASE_ROUNDS)
        return 0;
    uint64_t sent = r->round_tick[round % KEEL__LEASE_ROUNDS];
    return r->ticks + r->cfg.lease_drift_ticks < sent + r->cfg.election_ticks_min;
}

int keel_raft_read_index(keel_raft_t *r, uint64_t ctx)
{
    assert(!r->ready_out);
    if (r->role != KEEL_RAFT_LEADER)
        return KEEL_ENOTLEADER;
    if (keel__raft_log_term(&r->log, r->commit) != r->term)
        return KEEL_EAGAIN;
    if (r->reads_count == r->cfg.reads_pending_max ||
        r->reads_out_n + r->reads_count >= r->cfg.reads_pending_max)
        return KEEL_EFULL;
    if (lease_valid(r)) { /* clock-dependent shortcut, see the config */
        r->reads_out[r->reads_out_n++] =
            (keel_raft_read_state_t){.ctx = ctx, .index = r->commit, .ok = 1};
        return 0;
    }
    uint32_t slot = (r->reads_start + r->reads_count) % r->cfg.reads_pending_max;
    r->reads_pending[slot] =
        (keel__raft_read_t){.ctx = ctx, .index = r->commit, .seq = keel__raft_new_round(r)};
    r->reads_count++;
    r->hb_pending = 1;
    keel__raft_reads_release(r); /* a single voter confirms itself */
    return 0;
}

static size_t acks_for(const keel_raft_t *r, uint64_t seq)
{
    size_t n = 0;
    for (size_t i = 0; i < r->prs_n; i++)
        n += r->prs[i].is_voter && (r->prs[i].is_self || r->prs[i].read_acked >= seq);
    return n;
}

/* Releases confirmed reads in order; a later round confirmed implies earlier ones. */
void keel__raft_reads_release(keel_raft_t *r)
{
    while (r->reads_count > 0) {
        keel__raft_read_t *rd = &r->reads_pending[r->reads_start];
        if (acks_for(r, rd->seq) < r->quorum)
            break;
        assert(r->reads_out_n < r->cfg.reads_pending_max);
        r->reads_out[r->reads_out_n++] =
            (keel_raft_read_state_t){.ctx = rd->ctx, .index = rd->index, .ok = 1};
        r->reads_start = (r->reads_start + 1) % r->cfg.reads_pending_max;
        r->reads_count--;
    }
}

/* Leadership lost: every unconfirmed read is answered ok=0 so clients retry elsewhere. */
void keel__raft_reads_fail_all(keel_raft_t *r)
{
    while (r->reads_count > 0) {
        keel__raft_read_t *rd = &r->reads_pending[r->reads_start];
        assert(r->reads_out_n < r->cfg.reads_pending_max);
        r->reads_out[r->reads_out_n++] = (keel_raft_read_state_t){.ctx = rd->ctx, .ok = 0};
        r->reads_start = (r->reads_start + 1) % r->cfg.reads_pending_max;
        r->reads_count--;
    }
}
