/* election.c - leader election: randomized timeouts, pre-vote, votes and the tally. */
#include <assert.h>

#include "core/raft/raft_int.h"

/* A fresh timeout in [min, max] ticks spreads candidates apart (thesis §3.4). */
void keel__raft_reset_election_timer(keel_raft_t *r)
{
    r->election_elapsed = 0;
    r->election_timeout =
        (uint32_t)keel_rand_range(&r->rand, r->cfg.election_ticks_min, r->cfg.election_ticks_max);
}

static void tally_reset(keel_raft_t *r)
{
    for (size_t i = 0; i < r->prs_n; i++)
        r->prs[i].vote = r->prs[i].is_self && r->prs[i].is_voter ? 1 : 0;
}

/* Counts the tally; acts when a majority granted (next phase) or rejected (give up). */
static void tally_decide(keel_raft_t *r, int transfer)
{
    size_t granted = 0, rejected = 0;
    for (size_t i = 0; i < r->prs_n; i++) {
        granted += r->prs[i].is_voter && r->prs[i].vote > 0;
        rejected += r->prs[i].is_voter && r->prs[i].vote < 0;
    }
    if (granted >= r->quorum) {
        if (r->role == KEEL_RAFT_PRECANDIDATE)
            keel__raft_campaign(r, 0, transfer);
        else
            keel__raft_become_leader(r);
    } else if (rejected >= r->quorum) {
        keel__raft_become_follower(r, r->term, 0);
    }
}

/*
 * Pre-vote (thesis §9.6): a would-be candidate first asks whether it could win at
 * term+1 without changing any term, so a node returning from a partition does not
 * disrupt a working leader. Only a majority of pre-votes starts the real election.
 */
void keel__raft_campaign(keel_raft_t *r, int pre_vote, int transfer)
{
    if (!r->self_voter)
        return;
    uint64_t vote_term;
    if (pre_vote) {
        r->role = KEEL_RAFT_PRECANDIDATE;
        vote_term = r->term + 1;
    } else {
        r->term++;
        r->vote = r->cfg.id;
        r->role = KEEL_RAFT_CANDIDATE;
        vote_term = r->term;
    }
    r->leader = 0;
    keel__raft_reset_election_timer(r);
    tally_reset(r);
    keel_raft_msg_t m = {
        .type = pre_vote ? KEEL_RAFT_MSG_PREVOTE : KEEL_RAFT_MSG_VOTE,
        .term = vote_term,
        .index = keel__raft_log_last(&r->log),
        .log_term = keel__raft_log_term(&r->log, keel__raft_log_last(&r->log)),
        .transfer = (uint8_t)transfer,
    };
    for (size_t i = 0; i < r->prs_n; i++) {
        if (r->prs[i].is_self || !r->prs[i].is_voter)
            continue;
        m.to = r->prs[i].id;
        keel__raft_send(r, &m);
    }
    tally_decide(r, transfer); /* a single-voter cluster wins at once */
}

/* Election restriction (thesis §3.6.1): only a candidate whose log is at least as
   up to date as ours may get our vote. */
static int log_up_to_date(const keel_raft_t *r, uint64_t index, uint64_t term)
{
    uint64_t last = keel__raft_log_last(&r->log);
    uint64_t last_term = keel__raft_log_term(&r->log, last);
    return term > last_term || (term == last_term && index >= last);
}

void keel__raft_recv_vote(keel_raft_t *r, const keel_raft_msg_t *m)
{
    int pre = m->type == KEEL_RAFT_MSG_PREVOTE;
    int can_vote =
        r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    int ok = can_vote && (log_up_to_date(r, m->index, m->log_term) ||
                          r->cfg.test_break == KEEL_RAFT_BREAK_VOTE_ANY_LOG);
    keel_raft_msg_t resp = {
        .type = pre ? KEEL_RAFT_MSG_PREVOTE_RESP : KEEL_RAFT_MSG_VOTE_RESP,
        .to = m->from,
        .reject = (uint8_t)!ok,
        /* A granted pre-vote carries the asked-for term so the asker counts it;
           a rejection carries ours so an outdated asker catches up. */
        .term = ok && pre ? m->term : r->term,
    };
    if (ok && !pre) {
        assert(m->term == r->term);
        r->vote = m->from;
        r->election_elapsed = 0;
    }
    keel__raft_send(r, &resp);
}

void keel__raft_recv_vote_resp(keel_raft_t *r, const keel_raft_msg_t *m)
{
    int pre = m->type == KEEL_RAFT_MSG_PREVOTE_RESP;
    if (pre ? r->role != KEEL_RAFT_PRECANDIDATE : r->role != KEEL_RAFT_CANDIDATE)
        return;
    if (pre && !m->reject && m->term != r->term + 1)
        return; /* answer to an older pre-vote round */
    if (!pre && m->term != r->term)
        return;
    keel__raft_progress_t *p = keel__raft_progress(r, m->from);
    if (p == NULL || !p->is_voter)
        return; /* not a voter of our configuration */
    if (p->vote == 0)
        p->vote = m->reject ? -1 : 1;
    tally_decide(r, 0);
}
