/* test_raft_alive.c - keel_raft_leader_alive: bytes of a leader's message keep a follower from
   campaigning, and change nothing else. */
#include "core/raft/raft.h"
#include "ktest.h"

/*
 * One core (node 2 of voters 1..3) driven by hand: node 1's heartbeat makes it a follower of
 * 1, then time passes tick by tick. A large AppendEntries that takes longer than an election
 * timeout to arrive is modelled by keel_raft_leader_alive calls between ticks (the server
 * makes one per read of such bytes from the leader's connection, server/peers.c).
 */
static keel_raft_t *follower(int lease_reads)
{
    keel_raft_config_t cfg;
    keel_raft_config_default(&cfg);
    cfg.id = 2;
    cfg.voters_n = 3;
    for (int i = 0; i < 3; i++)
        cfg.voters[i] = (uint64_t)(i + 1);
    cfg.seed = 7;
    cfg.lease_reads = lease_reads;
    keel_raft_t *r;
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&r, &cfg, NULL, 0, &em), 0);
    return r;
}

/* Drains one ready; returns 1 if it holds a (pre-)vote request, the sign of a campaign. */
static int drain(keel_raft_t *r)
{
    keel_raft_ready_t rd;
    int campaign = 0;
    if (keel_raft_ready(r, &rd)) {
        for (size_t i = 0; i < rd.msgs_n; i++)
            campaign |=
                rd.msgs[i].type == KEEL_RAFT_MSG_PREVOTE || rd.msgs[i].type == KEEL_RAFT_MSG_VOTE;
        for (size_t i = 0; i < rd.msgs_after_persist_n; i++)
            campaign |= rd.msgs_after_persist[i].type == KEEL_RAFT_MSG_PREVOTE ||
                        rd.msgs_after_persist[i].type == KEEL_RAFT_MSG_VOTE;
        keel_raft_advance(r);
    }
    return campaign;
}

static void hear_leader(keel_raft_t *r, uint64_t term)
{
    keel_raft_msg_t hb = {.type = KEEL_RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = term};
    KT_EQ_INT(keel_raft_step(r, &hb), 0);
    KT_EQ_INT(keel_raft_leader(r), 1);
    KT_CHECK(!drain(r));
}

/* Ticks `n` times from *now, calling leader_alive every `alive_every` ticks (0: never);
   returns the tick at which the core campaigned, or 0. */
static int run_ticks(keel_raft_t *r, keel_ms_t *now, int n, int alive_every)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    for (int t = 1; t <= n; t++) {
        if (alive_every && t % alive_every == 0)
            keel_raft_leader_alive(r);
        *now += d.tick_ms;
        keel_raft_tick(r, *now);
        if (drain(r))
            return t;
    }
    return 0;
}

static void a_follower_that_sees_its_leaders_bytes_arrive_does_not_campaign(void)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    keel_raft_t *r = follower(0);
    keel_ms_t now = 0;
    hear_leader(r, 1);
    /* three whole election timeouts, the leader's message still arriving */
    KT_EQ_INT(run_ticks(r, &now, 3 * (int)d.election_ticks_max, (int)d.election_ticks_min - 1), 0);
    KT_EQ_INT(keel_raft_role(r), KEEL_RAFT_FOLLOWER);
    KT_EQ_INT(keel_raft_term(r), 1);
    KT_EQ_INT(keel_raft_leader(r), 1);
    /* the last bytes, then none (the leader died): the timer runs out as before */
    keel_raft_leader_alive(r);
    int t = run_ticks(r, &now, 2 * (int)d.election_ticks_max, 0);
    KT_CHECK(t >= (int)d.election_ticks_min && t <= (int)d.election_ticks_max);
    keel_raft_free(r);
}

static void without_the_hints_the_same_follower_campaigns_within_a_timeout(void)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    keel_raft_t *r = follower(0);
    keel_ms_t now = 0;
    hear_leader(r, 1);
    int t = run_ticks(r, &now, 3 * (int)d.election_ticks_max, 0); /* the test above bites */
    KT_CHECK(t >= (int)d.election_ticks_min && t <= (int)d.election_ticks_max);
    keel_raft_free(r);
}

static void a_node_that_knows_no_leader_campaigns_on_schedule_despite_hints(void)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    keel_raft_t *r = follower(0);
    keel_ms_t now = 0;
    KT_EQ_INT(keel_raft_leader(r), 0);
    int t = run_ticks(r, &now, 3 * (int)d.election_ticks_max, 1);
    KT_CHECK(t >= (int)d.election_ticks_min && t <= (int)d.election_ticks_max);
    keel_raft_free(r);
}

/* With lease reads, stickiness rests on whole messages only (heard_elapsed): the hints keep
   the node from campaigning but do not make it refuse a vote it would otherwise grant. */
static void hints_do_not_extend_a_lease_followers_refusal_of_votes(void)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    keel_raft_t *r = follower(1);
    keel_ms_t now = 0;
    hear_leader(r, 1);
    KT_EQ_INT(run_ticks(r, &now, (int)d.election_ticks_min + 1, 1), 0);
    keel_raft_msg_t v = {.type = KEEL_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 2};
    KT_EQ_INT(keel_raft_step(r, &v), 0);
    KT_EQ_INT(keel_raft_term(r), 2); /* considered (and granted: its log is as long) */
    keel_raft_ready_t rd;
    KT_CHECK(keel_raft_ready(r, &rd));
    int granted = 0;
    for (size_t i = 0; i < rd.msgs_after_persist_n; i++)
        granted |= rd.msgs_after_persist[i].type == KEEL_RAFT_MSG_VOTE_RESP &&
                   !rd.msgs_after_persist[i].reject;
    keel_raft_advance(r);
    KT_CHECK(granted);
    keel_raft_free(r);
}

int main(void)
{
    KT_RUN(a_follower_that_sees_its_leaders_bytes_arrive_does_not_campaign);
    KT_RUN(without_the_hints_the_same_follower_campaigns_within_a_timeout);
    KT_RUN(a_node_that_knows_no_leader_campaigns_on_schedule_despite_hints);
    KT_RUN(hints_do_not_extend_a_lease_followers_refusal_of_votes);
    return kt_done();
}
