/* test_raft_conf.c - Raft core scenarios on a tiny synchronous cluster: membership changes
 * (learners, promotion, removal, refused changes, truncated and decoded CONF entries, their
 * ctx). */
#include "test_raft_util.h"

static keel_raft_conf_t conf_of(const uint64_t *voters, uint32_t vn, const uint64_t *learners,
                                uint32_t ln)
{
    keel_raft_conf_t c = {.voters_n = vn, .learners_n = ln};
    memcpy(c.voters, voters, vn * sizeof(uint64_t));
    if (ln)
        memcpy(c.learners, learners, ln * sizeof(uint64_t));
    return c;
}

static void learner_catches_up_without_voting_then_promotion_counts_it(void)
{
    cluster_t c;
    cl_init_joiners(&c, 4, 3);
    cl_elect(&c, 1);
    uint64_t v3[] = {1, 2, 3}, v4[] = {1, 2, 3, 4}, l4[] = {4};
    keel_raft_conf_t with_learner = conf_of(v3, 3, l4, 1);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &with_learner), 0);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &with_learner), KEEL_EBUSY); /* one at a time */
    cl_pump(&c);
    KT_EQ_U64(c.applied[4], keel_raft_commit(c.r[1])); /* it caught up from index 1 */
    KT_EQ_INT(keel_raft_conf(c.r[4])->learners_n, 1);
    cl_isolate(&c, 4, 1);
    cl_tick(&c, 0, 100); /* a learner never campaigns; the leader does not need it */
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_LEADER);
    KT_EQ_INT(keel_raft_role(c.r[4]), KEEL_RAFT_FOLLOWER);
    KT_EQ_U64(keel_raft_term(c.r[4]), 1);
    cl_isolate(&c, 4, 0);
    cl_pump(&c);
    keel_raft_conf_t promoted = conf_of(v4, 4, NULL, 0);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &promoted), 0);
    cl_pump(&c);
    KT_EQ_INT(keel_raft_conf(c.r[4])->voters_n, 4);
    /* 4 voters: 1 and 4 are not a majority without 2 or 3 */
    cl_isolate(&c, 2, 1);
    cl_isolate(&c, 3, 1);
    uint64_t before = keel_raft_commit(c.r[1]);
    KT_EQ_INT(keel_raft_propose(c.r[1], "x", 1, NULL), 0);
    cl_pump(&c);
    KT_EQ_U64(keel_raft_commit(c.r[1]), before);
    cl_isolate(&c, 2, 0);
    cl_tick(&c, 0, 6); /* the lost append is resent after a heartbeat round */
    KT_EQ_U64(keel_raft_commit(c.r[1]), before + 1);
    cl_free(&c);
}

static void conf_change_of_two_voters_or_before_a_commit_is_refused(void)
{
    cluster_t c;
    cl_init(&c, 3);
    uint64_t v1[] = {1}, v12[] = {1, 2}, l3[] = {3};
    keel_raft_conf_t two = conf_of(v1, 1, NULL, 0), one = conf_of(v12, 2, l3, 1);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &one), KEEL_ENOTLEADER);
    KT_EQ_INT(keel_raft_campaign(c.r[1]), 0);
    cl_ready_all(&c); /* votes out, not yet answered */
    KT_CHECK(keel_raft_role(c.r[1]) != KEEL_RAFT_LEADER);
    cl_pump(&c);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &two), KEEL_EINVAL);
    keel_raft_conf_t dup = one;
    dup.learners[0] = 2;
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &dup), KEEL_EINVAL);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &one), 0);
    cl_free(&c);
}

static void leader_removing_itself_steps_down_once_the_change_commits(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    uint64_t v23[] = {2, 3};
    keel_raft_conf_t without_1 = conf_of(v23, 2, NULL, 0);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &without_1), 0);
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_LEADER); /* until committed */
    cl_pump(&c);
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_FOLLOWER);
    cl_tick(&c, 0, 60);
    int l = leader_of(&c);
    KT_CHECK(l == 2 || l == 3);
    KT_EQ_INT(keel_raft_propose(c.r[l], "y", 1, NULL), 0);
    cl_pump(&c);
    KT_EQ_U64(keel_raft_commit(c.r[l]), keel_raft_last_index(c.r[l]));
    cl_free(&c);
}

static void a_truncated_conf_entry_reverts_the_configuration(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 1, 1);
    uint64_t v12[] = {1, 2};
    keel_raft_conf_t smaller = conf_of(v12, 2, NULL, 0);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &smaller), 0);
    cl_pump(&c); /* never leaves node 1 */
    KT_EQ_INT(keel_raft_conf(c.r[1])->voters_n, 2);
    cl_tick(&c, 0, 60); /* 2 and 3 elect a leader of term 2 without node 1 */
    int l = leader_of(&c);
    KT_CHECK(l == 2 || l == 3);
    cl_isolate(&c, 1, 0);
    cl_tick(&c, 0, 3);
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_FOLLOWER);
    KT_EQ_INT(keel_raft_conf(c.r[1])->voters_n, 3); /* its CONF entry was overwritten */
    KT_CHECK(keel_raft_entry_at(c.r[1], 2)->term > 1);
    cl_free(&c);
}

static void conf_ctx_reaches_joiners_through_the_log_and_through_a_snapshot(void)
{
    cluster_t c;
    cl_init_joiners(&c, 5, 3);
    cl_elect(&c, 1);
    uint64_t v3[] = {1, 2, 3}, l4[] = {4}, l45[] = {4, 5};
    keel_raft_conf_t a = conf_of(v3, 3, l4, 1);
    a.ctx_len = 5;
    memcpy(a.ctx, "dir-A", 5);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &a), 0);
    cl_pump(&c);
    KT_EQ_INT(keel_raft_conf(c.r[4])->ctx_len, 5); /* learned from the CONF entry */
    KT_EQ_MEM(keel_raft_conf(c.r[4])->ctx, "dir-A", 5);
    const keel_raft_entry_t *e = keel_raft_entry_at(c.r[4], keel_raft_last_index(c.r[4]));
    keel_raft_conf_t d;
    KT_EQ_INT(keel_raft_conf_decode(e->data, e->len, &d), 0);
    KT_EQ_MEM(d.ctx, "dir-A", 5);
    cl_isolate(&c, 5, 1);
    keel_raft_conf_t b = conf_of(v3, 3, l45, 2);
    b.ctx_len = 5;
    memcpy(b.ctx, "dir-B", 5);
    KT_EQ_INT(keel_raft_propose_conf(c.r[1], &b), 0);
    KT_EQ_INT(keel_raft_propose(c.r[1], "e", 1, NULL), 0);
    cl_pump(&c);
    KT_EQ_INT(keel_raft_compact(c.r[1], c.applied[1], "S", 1), 0);
    KT_EQ_MEM(keel_raft_snapshot_conf(c.r[1])->ctx, "dir-B", 5);
    cl_isolate(&c, 5, 0);
    cl_tick(&c, 1, 2);
    cl_pump(&c);
    KT_EQ_INT(c.snap_len[5], 1); /* it could only catch up from the snapshot */
    KT_EQ_INT(keel_raft_conf(c.r[5])->learners_n, 2);
    KT_EQ_INT(keel_raft_conf(c.r[5])->ctx_len, 5);
    KT_EQ_MEM(keel_raft_conf(c.r[5])->ctx, "dir-B", 5);
    cl_free(&c);
}

static void conf_entry_without_ctx_still_decodes_and_oversized_ctx_is_refused(void)
{
    uint8_t old[16] = {1, 0, 0, 0, 0, 0, 0, 0, 7}; /* one voter, id 7, written before ctx */
    keel_raft_conf_t d;
    KT_EQ_INT(keel_raft_conf_decode(old, sizeof(old), &d), 0);
    KT_EQ_INT(d.voters_n, 1);
    KT_EQ_U64(d.voters[0], 7);
    KT_EQ_INT(d.ctx_len, 0);
    KT_EQ_INT(keel_raft_conf_decode(old, 7, &d), KEEL_EPROTO);
    static uint8_t big[16 + KEEL_RAFT_CONF_CTX_BYTES_MAX + 1];
    memcpy(big, old, sizeof(old));
    KT_EQ_INT(keel_raft_conf_decode(big, sizeof(big), &d), KEEL_EPROTO);
    KT_EQ_INT(keel_raft_conf_decode(big, sizeof(big) - 1, &d), 0);
    KT_EQ_INT(d.ctx_len, KEEL_RAFT_CONF_CTX_BYTES_MAX);
}

int main(void)
{
    KT_RUN(learner_catches_up_without_voting_then_promotion_counts_it);
    KT_RUN(conf_change_of_two_voters_or_before_a_commit_is_refused);
    KT_RUN(leader_removing_itself_steps_down_once_the_change_commits);
    KT_RUN(a_truncated_conf_entry_reverts_the_configuration);
    KT_RUN(conf_ctx_reaches_joiners_through_the_log_and_through_a_snapshot);
    KT_RUN(conf_entry_without_ctx_still_decodes_and_oversized_ctx_is_refused);
    return kt_done();
}
