/* test_raft_large.c - large entries: bytes of a leader's message keep a follower from campaigning
   (keel_raft_leader_alive), and a large entry is not resent while its follower writes it. */
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

/* ---- a large entry in flight -------------------------------------------------------- */

/* Drains the leader's readies (its writes durable at once); returns the bytes of the entries
   it sent to node 2 in AppendEntries. */
static size_t leader_drain(keel_raft_t *r)
{
    size_t sent = 0;
    keel_raft_ready_t rd;
    while (keel_raft_ready(r, &rd)) {
        uint64_t li = 0, lt = 0;
        if (rd.entries_n) {
            li = rd.entries[rd.entries_n - 1].index;
            lt = rd.entries[rd.entries_n - 1].term;
        }
        for (size_t i = 0; i < rd.msgs_n; i++)
            if (rd.msgs[i].type == KEEL_RAFT_MSG_APPEND)
                for (size_t k = 0; k < rd.msgs[i].entries_n; k++)
                    sent += rd.msgs[i].entries[k].len;
        keel_raft_advance(r);
        if (li)
            keel_raft_persisted(r, li, lt);
    }
    return sent;
}

/* Node 1 of voters {1, 2}, leader, node 2 holding its log (node 2 is played by hand). */
static keel_raft_t *leader_of_two(void)
{
    keel_raft_config_t cfg;
    keel_raft_config_default(&cfg);
    cfg.id = 1;
    cfg.voters_n = 2;
    cfg.voters[0] = 1;
    cfg.voters[1] = 2;
    cfg.seed = 7;
    cfg.entry_bytes_max = 16u << 20;
    cfg.msg_bytes_max = 16u << 20;
    keel_raft_t *r;
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&r, &cfg, NULL, 0, &em), 0);
    KT_EQ_INT(keel_raft_campaign(r), 0);
    leader_drain(r);
    keel_raft_msg_t pv = {
        .type = KEEL_RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = keel_raft_term(r) + 1};
    KT_EQ_INT(keel_raft_step(r, &pv), 0);
    leader_drain(r);
    keel_raft_msg_t v = {
        .type = KEEL_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = keel_raft_term(r)};
    KT_EQ_INT(keel_raft_step(r, &v), 0);
    KT_EQ_INT(keel_raft_role(r), KEEL_RAFT_LEADER);
    leader_drain(r);
    keel_raft_msg_t ack = {.type = KEEL_RAFT_MSG_APPEND_RESP,
                           .from = 2,
                           .to = 1,
                           .term = keel_raft_term(r),
                           .index = keel_raft_last_index(r)};
    KT_EQ_INT(keel_raft_step(r, &ack), 0); /* node 2 holds the no-op: replicate state */
    leader_drain(r);
    return r;
}

/* Heartbeat rounds in which node 2 answers every heartbeat but acknowledges nothing (its
   disk is still writing); returns the entry bytes the leader sent it meanwhile. */
static size_t rounds_without_ack(keel_raft_t *r, keel_ms_t *now, int rounds)
{
    keel_raft_config_t d;
    keel_raft_config_default(&d);
    size_t sent = 0;
    for (int k = 0; k < rounds; k++) {
        *now += (keel_ms_t)d.heartbeat_ticks * d.tick_ms;
        keel_raft_tick(r, *now);
        sent += leader_drain(r);
        keel_raft_msg_t hr = {
            .type = KEEL_RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = keel_raft_term(r)};
        KT_EQ_INT(keel_raft_step(r, &hr), 0);
        sent += leader_drain(r);
    }
    return sent;
}

static void a_large_entry_is_not_resent_while_its_follower_writes_it(void)
{
    keel_raft_t *r = leader_of_two();
    keel_ms_t now = 0;
    static uint8_t big[8u << 20];
    KT_EQ_INT(keel_raft_propose(r, big, sizeof(big), NULL), 0);
    KT_EQ_INT(leader_drain(r), sizeof(big));
    /* 8 MiB in flight: 8 rounds more than a small entry gets, and no resend in them */
    KT_EQ_INT(rounds_without_ack(r, &now, 8), 0);
    /* still no acknowledgement: the leader takes it as lost and sends it again */
    KT_EQ_INT(rounds_without_ack(r, &now, 2), sizeof(big));
    keel_raft_free(r);
}

static void a_small_entry_is_resent_after_one_stuck_round_as_before(void)
{
    keel_raft_t *r = leader_of_two();
    keel_ms_t now = 0;
    uint8_t small[100] = {0};
    KT_EQ_INT(keel_raft_propose(r, small, sizeof(small), NULL), 0);
    KT_EQ_INT(leader_drain(r), sizeof(small));
    KT_EQ_INT(rounds_without_ack(r, &now, 1), 0); /* the first answer records the match */
    KT_EQ_INT(rounds_without_ack(r, &now, 1), sizeof(small));
    keel_raft_free(r);
}

int main(void)
{
    KT_RUN(a_follower_that_sees_its_leaders_bytes_arrive_does_not_campaign);
    KT_RUN(without_the_hints_the_same_follower_campaigns_within_a_timeout);
    KT_RUN(a_node_that_knows_no_leader_campaigns_on_schedule_despite_hints);
    KT_RUN(hints_do_not_extend_a_lease_followers_refusal_of_votes);
    KT_RUN(a_large_entry_is_not_resent_while_its_follower_writes_it);
    KT_RUN(a_small_entry_is_resent_after_one_stuck_round_as_before);
    return kt_done();
}
