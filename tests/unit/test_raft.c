/* test_raft.c - Raft core scenarios on a tiny synchronous cluster, compared as traces
 * (membership changes: test_raft_conf.c; the harness: test_raft_util.h). */
#include "test_raft_util.h"

static void config_validate_rejects_nonsense_with_a_reason(void)
{
    keel_raft_config_t cfg;
    keel_errmsg_t em;
    cfg_for(&cfg, 3, 1);
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), 0);
    cfg.id = 4;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    KT_CHECK(strstr(em.text, "not among the voters") != NULL);
    cfg_for(&cfg, 3, 1);
    cfg.election_ticks_min = 2;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    KT_CHECK(strstr(em.text, "heartbeat_ticks") != NULL);
    cfg_for(&cfg, 3, 1);
    cfg.election_ticks_max = 5;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    cfg_for(&cfg, 3, 1);
    cfg.voters[2] = 2;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    KT_CHECK(strstr(em.text, "twice") != NULL);
    cfg_for(&cfg, 3, 1);
    cfg.inflight_msgs_max = 0;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    cfg_for(&cfg, 3, 1);
    cfg.lease_reads = 1;
    cfg.check_quorum = 0;
    KT_EQ_INT(keel_raft_config_validate(&cfg, &em), KEEL_EINVAL);
    KT_CHECK(strstr(em.text, "lease_reads needs check_quorum") != NULL);
}

static void pre_vote_then_vote_elects_a_leader_and_commits_its_noop(void)
{
    cluster_t c;
    cl_init(&c, 3);
    c.tracing = 1;
    cl_elect(&c, 1);
    const char *want = "1>2 prevote t1\n"
                       "1>3 prevote t1\n"
                       "2>1 prevote_resp t1\n"
                       "3>1 prevote_resp t1\n"
                       "1>2 vote t1\n"
                       "1>3 vote t1\n"
                       "2>1 vote_resp t1\n"
                       "3>1 vote_resp t1\n"
                       "1>2 append t1 i0/0 n1 c0\n"
                       "1>3 append t1 i0/0 n1 c0\n"
                       "2>1 append_resp t1 i1\n"
                       "3>1 append_resp t1 i1\n"
                       "1>2 heartbeat t1\n"
                       "1>3 heartbeat t1\n"
                       "2>1 hb_resp t1\n"
                       "3>1 hb_resp t1\n";
    KT_EQ_STR(c.trace, want);
    for (int i = 1; i <= 3; i++) {
        KT_EQ_U64(keel_raft_commit(c.r[i]), 1);
        KT_EQ_U64(c.applied[i], 1);
        KT_EQ_U64(keel_raft_leader(c.r[i]), 1);
    }
    cl_free(&c);
}

static void election_timeout_starts_an_election_within_the_random_range(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_tick(&c, 0, 20); /* election_ticks_max */
    int l = leader_of(&c);
    KT_CHECK(l != 0);
    KT_EQ_U64(keel_raft_term(c.r[l]), 1);
    cl_free(&c);
}

static void batches_many_proposals_into_one_append_per_follower(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    for (int k = 0; k < 100; k++)
        KT_EQ_INT(keel_raft_propose(c.r[1], "v", 1, NULL), 0);
    c.tracing = 1;
    cl_pump(&c);
    KT_CHECK(strstr(c.trace, "1>2 append t1 i1/1 n100 c1\n") != NULL);
    KT_CHECK(strstr(c.trace, "1>3 append t1 i1/1 n100 c1\n") != NULL);
    KT_EQ_U64(keel_raft_commit(c.r[1]), 101);
    KT_EQ_U64(c.applied[2], 101);
    cl_free(&c);
}

static void pipelines_at_most_inflight_msgs_max_appends(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    keel_raft_free(c.r[1]);
    keel_raft_config_t cfg;
    cfg_for(&cfg, 3, 1);
    cfg.msg_entries_max = 1;
    cfg.inflight_msgs_max = 3;
    /* restart node 1 with tight limits and re-elect it at term 2 */
    const keel_raft_entry_t *e = keel_raft_entry_at(c.r[2], 1);
    keel_raft_restore_t rs = {.hard_state = {1, 1, 1}, .entries = e, .entries_n = 1, .applied = 1};
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&c.r[1], &cfg, &rs, c.now_ms, &em), 0);
    cl_tick(&c, 2, 25); /* node 1 is silent as a follower; node 2 or 3 takes over */
    int l = leader_of(&c);
    KT_CHECK(l == 2 || l == 3);
    KT_EQ_INT(keel_raft_transfer_leadership(c.r[l], 1), 0);
    cl_pump(&c);
    KT_EQ_INT(leader_of(&c), 1);
    for (int k = 0; k < 10; k++)
        KT_EQ_INT(keel_raft_propose(c.r[1], "v", 1, NULL), 0);
    keel_raft_ready_t rd;
    KT_CHECK(keel_raft_ready(c.r[1], &rd));
    int to2 = 0;
    for (size_t k = 0; k < rd.msgs_n; k++) {
        if (rd.msgs[k].to == 2 && rd.msgs[k].type == KEEL_RAFT_MSG_APPEND) {
            KT_EQ_INT(rd.msgs[k].entries_n, 1);
            to2++;
        }
    }
    KT_EQ_INT(to2, 3);
    for (size_t k = 0; k < rd.msgs_n; k++)
        enqueue(&c, &rd.msgs[k]);
    uint64_t li = rd.entries[rd.entries_n - 1].index, lt = rd.entries[rd.entries_n - 1].term;
    keel_raft_advance(c.r[1]);
    keel_raft_persisted(c.r[1], li, lt);
    cl_pump(&c); /* acknowledgements open the window until all ten are through */
    KT_EQ_U64(keel_raft_commit(c.r[1]), keel_raft_last_index(c.r[1]));
    cl_free(&c);
}

static void leader_counts_itself_only_after_its_own_write_is_durable(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 3, 1);
    c.slow_disk[1] = 1;
    KT_EQ_INT(keel_raft_propose(c.r[1], "x", 1, NULL), 0);
    cl_pump(&c);
    /* node 2 acknowledged index 2, but 1 of 3 is not a majority without the leader */
    KT_EQ_U64(keel_raft_commit(c.r[1]), 1);
    cl_persist(&c, 1);
    cl_pump(&c);
    KT_EQ_U64(keel_raft_commit(c.r[1]), 2);
    cl_free(&c);
}

/* Figure 8 of the Raft paper, reduced: entries of an earlier term are not committed by
   counting replicas; only an entry of the leader's term commits (thesis §3.6.2). */
static void commits_an_old_term_entry_only_through_a_current_term_entry(void)
{
    for (int broken = 0; broken <= 1; broken++) {
        keel_raft_config_t cfg;
        cfg_for(&cfg, 3, 1);
        cfg.test_break = broken ? KEEL_RAFT_BREAK_COMMIT_OLD_TERM : KEEL_RAFT_BREAK_NONE;
        keel_raft_entry_t ents[2] = {{.term = 1, .index = 1}, {.term = 1, .index = 2}};
        keel_raft_restore_t rs = {.hard_state = {2, 0, 1}, .entries = ents, .entries_n = 2};
        keel_raft_t *r;
        keel_errmsg_t em;
        KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), 0);
        KT_EQ_INT(keel_raft_campaign(r), 0);
        keel_raft_msg_t g = {.type = KEEL_RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 3};
        KT_EQ_INT(keel_raft_step(r, &g), 0);
        g.type = KEEL_RAFT_MSG_VOTE_RESP;
        KT_EQ_INT(keel_raft_step(r, &g), 0);
        KT_EQ_INT(keel_raft_role(r), KEEL_RAFT_LEADER);
        keel_raft_ready_t rd;
        KT_CHECK(keel_raft_ready(r, &rd));
        keel_raft_advance(r);
        keel_raft_persisted(r, 3, 3); /* the leader's noop at index 3 is durable */
        keel_raft_msg_t ack = {
            .type = KEEL_RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 3, .index = 2};
        KT_EQ_INT(keel_raft_step(r, &ack), 0);
        KT_EQ_U64(keel_raft_commit(r), broken ? 2 : 1);
        ack.index = 3;
        KT_EQ_INT(keel_raft_step(r, &ack), 0);
        KT_EQ_U64(keel_raft_commit(r), 3);
        keel_raft_free(r);
    }
}

static void follower_conflict_hint_skips_a_whole_term(void)
{
    /* leader log: t1 t3 t3 t3; follower 2: t1 t2 t2 t2 t2 (uncommitted, stale term) */
    keel_raft_entry_t l[4] = {{1, 1, 0, 0, 0}, {3, 2, 0, 0, 0}, {3, 3, 0, 0, 0}, {3, 4, 0, 0, 0}};
    keel_raft_entry_t f[5] = {
        {1, 1, 0, 0, 0}, {2, 2, 0, 0, 0}, {2, 3, 0, 0, 0}, {2, 4, 0, 0, 0}, {2, 5, 0, 0, 0}};
    cluster_t c;
    memset(&c, 0, sizeof(c));
    c.n = 3;
    keel_errmsg_t em;
    for (int i = 1; i <= 3; i++) {
        keel_raft_config_t cfg;
        cfg_for(&cfg, 3, i);
        keel_raft_restore_t rs = {
            .hard_state = {3, 0, 1}, .entries = i == 2 ? f : l, .entries_n = i == 2 ? 5 : 4};
        KT_EQ_INT(keel_raft_new(&c.r[i], &cfg, &rs, 0, &em), 0);
    }
    cl_isolate(&c, 3, 1);
    c.tracing = 1;
    KT_EQ_INT(keel_raft_campaign(c.r[1]), 0);
    cl_pump(&c);
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_LEADER);
    const char *want = "1>2 prevote t4\n"
                       "2>1 prevote_resp t4\n"
                       "1>2 vote t4\n"
                       "2>1 vote_resp t4\n"
                       "1>2 append t4 i4/3 n1 c1\n"
                       "2>1 append_resp t4 i4 reject hint 2/2\n"
                       "1>2 append t4 i1/1 n4 c1\n"
                       "2>1 append_resp t4 i5\n"
                       "1>2 heartbeat t4\n"
                       "2>1 hb_resp t4\n";
    KT_EQ_STR(c.trace, want);
    KT_EQ_U64(keel_raft_entry_at(c.r[2], 5)->term, 4);
    KT_EQ_U64(keel_raft_commit(c.r[2]), 5);
    cl_free(&c);
}

static void vote_is_refused_to_a_candidate_with_a_stale_log(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 3, 1);
    KT_EQ_INT(keel_raft_propose(c.r[1], "x", 1, NULL), 0);
    cl_pump(&c);
    /* 3 missed index 2: when 1 is gone, 3 cannot win against 2 */
    cl_isolate(&c, 3, 0);
    cl_isolate(&c, 1, 1);
    KT_EQ_INT(keel_raft_campaign(c.r[3]), 0);
    cl_tick(&c, 3, 1);
    KT_CHECK(keel_raft_role(c.r[3]) != KEEL_RAFT_LEADER);
    cl_tick(&c, 0, 60);
    KT_EQ_INT(leader_of(&c) == 2 || leader_of(&c) == 1, 1);
    KT_EQ_INT(keel_raft_role(c.r[2]), KEEL_RAFT_LEADER);
    cl_free(&c);
}

static void check_quorum_makes_an_isolated_leader_step_down(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 1, 1);
    cl_tick(&c, 1, 2 * 10 + 1); /* two check-quorum rounds of election_ticks_min */
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_FOLLOWER);
    cl_free(&c);
}

static void pre_vote_keeps_a_partitioned_node_from_raising_terms(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 3, 1);
    cl_tick(&c, 0, 200);
    KT_EQ_U64(keel_raft_term(c.r[3]), 1);
    cl_isolate(&c, 3, 0);
    cl_tick(&c, 0, 5);
    KT_EQ_INT(leader_of(&c), 1);
    KT_EQ_U64(keel_raft_term(c.r[1]), 1);
    cl_free(&c);
}

static void leader_stickiness_ignores_votes_while_a_leader_is_heard(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    keel_raft_msg_t v = {
        .type = KEEL_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 5, .index = 1, .log_term = 1};
    KT_EQ_INT(keel_raft_step(c.r[2], &v), 0);
    KT_EQ_U64(keel_raft_term(c.r[2]), 1); /* ignored: 2 heard from 1 recently */
    v.transfer = 1;
    KT_EQ_INT(keel_raft_step(c.r[2], &v), 0);
    KT_EQ_U64(keel_raft_term(c.r[2]), 5); /* a transfer campaign is honoured */
    cl_free(&c);
}

/* The pre-vote + check-quorum pitfall: a node whose term ran ahead must not keep the
   cluster from electing (etcd #8501). The stale leader learns the term and steps down. */
static void a_node_with_a_higher_term_does_not_wedge_the_cluster(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    keel_raft_free(c.r[3]);
    keel_raft_config_t cfg;
    cfg_for(&cfg, 3, 3);
    keel_raft_restore_t rs = {.hard_state = {7, 0, 0}};
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&c.r[3], &cfg, &rs, c.now_ms, &em), 0);
    c.applied[3] = 0;
    cl_tick(&c, 0, 80);
    int l = leader_of(&c);
    KT_CHECK(l != 0);
    KT_CHECK(keel_raft_term(c.r[l]) > 7);
    for (int i = 1; i <= 3; i++)
        KT_EQ_U64(keel_raft_term(c.r[i]), keel_raft_term(c.r[l]));
    KT_EQ_INT(keel_raft_propose(c.r[l], "y", 1, NULL), 0);
    cl_pump(&c);
    KT_EQ_U64(keel_raft_commit(c.r[3]), keel_raft_last_index(c.r[l]));
    cl_free(&c);
}

static void read_index_waits_for_a_heartbeat_quorum(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 2, 1);
    cl_isolate(&c, 3, 1);
    KT_EQ_INT(keel_raft_read_index(c.r[1], 77), 0);
    cl_pump(&c);
    KT_EQ_INT(c.reads_n, 0); /* nobody confirmed leadership */
    cl_isolate(&c, 2, 0);
    cl_tick(&c, 1, 2); /* next heartbeat round */
    KT_EQ_INT(c.reads_n, 1);
    KT_EQ_U64(c.reads[0].ctx, 77);
    KT_EQ_U64(c.reads[0].index, 1);
    KT_EQ_INT(c.reads[0].ok, 1);
    KT_EQ_INT(keel_raft_read_index(c.r[2], 1), KEEL_ENOTLEADER);
    cl_free(&c);
}

static void read_index_is_refused_before_the_leader_commits_in_its_term(void)
{
    keel_raft_config_t cfg;
    cfg_for(&cfg, 3, 1);
    keel_raft_t *r;
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&r, &cfg, NULL, 0, &em), 0);
    KT_EQ_INT(keel_raft_campaign(r), 0);
    keel_raft_msg_t g = {.type = KEEL_RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 1};
    KT_EQ_INT(keel_raft_step(r, &g), 0);
    g.type = KEEL_RAFT_MSG_VOTE_RESP;
    KT_EQ_INT(keel_raft_step(r, &g), 0);
    KT_EQ_INT(keel_raft_role(r), KEEL_RAFT_LEADER);
    KT_EQ_INT(keel_raft_read_index(r, 1), KEEL_EAGAIN);
    keel_raft_free(r);
}

static void lost_leadership_fails_pending_reads(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 1, 1);
    KT_EQ_INT(keel_raft_read_index(c.r[1], 5), 0);
    cl_tick(&c, 1, 21);
    KT_EQ_INT(keel_raft_role(c.r[1]), KEEL_RAFT_FOLLOWER);
    KT_EQ_INT(c.reads_n, 1);
    KT_EQ_INT(c.reads[0].ok, 0);
    KT_EQ_U64(c.reads[0].ctx, 5);
    cl_free(&c);
}

static void leadership_transfer_hands_over_to_a_caught_up_follower(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 3, 1);
    KT_EQ_INT(keel_raft_propose(c.r[1], "z", 1, NULL), 0);
    cl_pump(&c);
    cl_isolate(&c, 3, 0);
    KT_EQ_INT(keel_raft_transfer_leadership(c.r[1], 3), 0);
    KT_EQ_INT(keel_raft_propose(c.r[1], "no", 2, NULL), KEEL_EBUSY);
    cl_pump(&c); /* 3 catches up first, then gets TimeoutNow */
    KT_EQ_INT(leader_of(&c), 3);
    KT_EQ_U64(keel_raft_term(c.r[3]), 2);
    KT_EQ_INT(keel_raft_transfer_leadership(c.r[1], 2), KEEL_ENOTLEADER);
    cl_free(&c);
}

static void restart_reapplies_committed_entries_from_restored_storage(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    for (int k = 0; k < 5; k++)
        KT_EQ_INT(keel_raft_propose(c.r[1], "abc", 3, NULL), 0);
    cl_pump(&c);
    keel_raft_entry_t ents[6];
    for (uint64_t i = 1; i <= 6; i++)
        ents[i - 1] = *keel_raft_entry_at(c.r[2], i);
    keel_raft_config_t cfg;
    cfg_for(&cfg, 3, 2);
    keel_raft_restore_t rs = {.hard_state = {1, 1, 6}, .entries = ents, .entries_n = 6};
    keel_raft_t *r;
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), 0);
    keel_raft_ready_t rd;
    KT_CHECK(keel_raft_ready(r, &rd));
    KT_EQ_INT(rd.entries_n, 0);
    KT_EQ_INT(rd.hard_state_changed, 0);
    KT_EQ_INT(rd.committed_n, 6);
    KT_EQ_MEM(rd.committed[5].data, "abc", 3);
    keel_raft_advance(r);
    keel_raft_free(r);
    rs.hard_state.commit = 9; /* a torn write kept the hard state, not all entries */
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), 0);
    KT_EQ_U64(keel_raft_commit(r), 6);
    keel_raft_free(r);
    rs.applied = 7;
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), KEEL_EINVAL);
    KT_CHECK(strstr(em.text, "applied") != NULL);
    ents[3].term = 2; /* term beyond the hard state's */
    rs.applied = 0;
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), KEEL_EINVAL);
    cl_free(&c);
}

static void compacted_follower_catches_up_through_a_chunked_snapshot(void)
{
    cluster_t c;
    cl_init(&c, 3);
    cl_elect(&c, 1);
    cl_isolate(&c, 3, 1);
    for (int k = 0; k < 20; k++)
        KT_EQ_INT(keel_raft_propose(c.r[1], "e", 1, NULL), 0);
    cl_pump(&c);
    KT_EQ_U64(c.applied[1], 21);
    KT_EQ_INT(keel_raft_compact(c.r[1], 22, "x", 1), KEEL_EINVAL); /* not applied yet */
    /* the owned variant adopts the buffer (and frees it on refusal: ASan sees leaks) */
    uint8_t *owned = malloc(22);
    memcpy(owned, "SNAPSHOT-OF-21-ENTRIES", 22);
    KT_EQ_INT(keel_raft_compact_owned(c.r[1], 21, owned, 22), 0);
    KT_EQ_INT(keel_raft_compact(c.r[1], 21, "again", 5), KEEL_EINVAL);
    KT_EQ_INT(keel_raft_compact_owned(c.r[1], 21, malloc(5), 5), KEEL_EINVAL);
    KT_EQ_U64(keel_raft_first_index(c.r[1]), 22);
    KT_EQ_U64(keel_raft_snapshot_index(c.r[1]), 21);
    cl_isolate(&c, 3, 0);
    c.tracing = 1;
    cl_tick(&c, 1, 2); /* a heartbeat answer shows node 3 is back */
    KT_CHECK(strstr(c.trace, "1>3 snapshot t1 i21 off0 len8\n"
                             "3>1 snapshot_resp t1 i21 off8\n"
                             "1>3 snapshot t1 i21 off8 len8\n"
                             "3>1 snapshot_resp t1 i21 off16\n"
                             "1>3 snapshot t1 i21 off16 len6 last\n"
                             "3>1 append_resp t1 i21\n") != NULL);
    KT_EQ_INT((int)c.snap_len[3], 22);
    KT_EQ_MEM(c.snap[3], "SNAPSHOT-OF-21-ENTRIES", 22);
    KT_EQ_U64(keel_raft_first_index(c.r[3]), 22);
    KT_EQ_U64(keel_raft_commit(c.r[3]), 21);
    KT_EQ_INT(keel_raft_propose(c.r[1], "after", 5, NULL), 0);
    cl_pump(&c);
    KT_EQ_U64(c.applied[3], 22);
    KT_EQ_MEM(keel_raft_entry_at(c.r[3], 22)->data, "after", 5);
    cl_free(&c);
}

/* Block memory that checks the core hands every block back, with the size it asked for. */
typedef struct memcount {
    long live, allocs, mismatched;
} memcount_t;

static void *mc_alloc(void *ctx, size_t bytes)
{
    memcount_t *m = ctx;
    size_t *p = malloc(2 * sizeof(size_t) + bytes);
    if (p == NULL)
        return NULL;
    p[0] = bytes;
    m->live++;
    m->allocs++;
    return p + 2;
}

static void mc_free(void *ctx, void *block, size_t bytes)
{
    memcount_t *m = ctx;
    size_t *p = (size_t *)block - 2;
    m->mismatched += p[0] != bytes;
    m->live--;
    free(p);
}

static void log_blocks_come_from_the_configured_memory_and_all_go_back(void)
{
    memcount_t m = {0};
    g_mem = (keel_raft_mem_t){mc_alloc, mc_free, &m};
    cluster_t c;
    cl_init(&c, 3);
    g_mem = (keel_raft_mem_t){0};
    cl_elect(&c, 1);
    static uint8_t big[100 * 1024]; /* over a quarter block: a block of its own */
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    uint64_t last = 0;
    for (int round = 0; round < 40; round++) {
        for (int k = 0; k < 50; k++) {
            char v[3000];
            memset(v, 'a' + k % 26, sizeof(v));
            KT_EQ_INT(keel_raft_propose(c.r[1], v, (size_t)(1 + (k * 61) % 3000), &last), 0);
        }
        KT_EQ_INT(keel_raft_propose(c.r[1], big, sizeof(big), &last), 0);
        cl_pump(&c);
    }
    KT_EQ_U64(c.applied[1], last);
    /* every node copied about 7 MB of entry data into blocks of at most 256 KiB */
    KT_CHECK(m.allocs >= 3 * (40 * (50 * 1500 + (long)sizeof(big)) / (256 * 1024)));
    long before = m.live;
    for (int i = 1; i <= 3; i++)
        KT_EQ_INT(keel_raft_compact(c.r[i], last - 10, "s", 1), 0);
    KT_CHECK(m.live < before); /* compaction handed blocks back */
    KT_EQ_MEM(keel_raft_entry_at(c.r[2], last)->data, big, sizeof(big));
    cl_free(&c);
    KT_EQ_INT((int)m.live, 0);
    KT_EQ_INT((int)m.mismatched, 0);
}

static void snapshot_restart_restores_the_log_after_it(void)
{
    keel_raft_config_t cfg;
    cfg_for(&cfg, 3, 2);
    keel_raft_entry_t ents[2] = {{.term = 3, .index = 11}, {.term = 3, .index = 12}};
    keel_raft_restore_t rs = {.hard_state = {3, 1, 12},
                              .snapshot = {.index = 10,
                                           .term = 2,
                                           .conf = {.voters = {1, 2, 3}, .voters_n = 3},
                                           .data = (const uint8_t *)"S",
                                           .data_len = 1},
                              .entries = ents,
                              .entries_n = 2,
                              .applied = 10};
    keel_raft_t *r;
    keel_errmsg_t em;
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), 0);
    KT_EQ_U64(keel_raft_first_index(r), 11);
    KT_EQ_U64(keel_raft_last_index(r), 12);
    keel_raft_ready_t rd;
    KT_CHECK(keel_raft_ready(r, &rd));
    KT_EQ_INT(rd.committed_n, 2);
    KT_EQ_U64(rd.committed[0].index, 11);
    keel_raft_advance(r);
    keel_raft_free(r);
    ents[0].index = 12; /* a gap after the snapshot */
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), KEEL_EINVAL);
    ents[0].index = 11;
    rs.applied = 9; /* the state machine cannot be behind its snapshot */
    KT_EQ_INT(keel_raft_new(&r, &cfg, &rs, 0, &em), KEEL_EINVAL);
}

/* Lease clusters stay quiet for election_ticks_min after start; let them elect. */
static int cl_lease_cluster(cluster_t *c)
{
    g_lease_reads = 1;
    cl_init(c, 3);
    g_lease_reads = 0;
    cl_tick(c, 0, 40);
    int l = leader_of(c);
    KT_CHECK(l != 0);
    return l;
}

static void lease_read_is_served_without_a_round_until_the_lease_runs_out(void)
{
    cluster_t c;
    int l = cl_lease_cluster(&c);
    cl_tick(&c, 0, 2); /* a heartbeat round acknowledged by both followers */
    KT_EQ_INT(keel_raft_read_index(c.r[l], 9), 0);
    keel_raft_ready_t rd;
    KT_CHECK(keel_raft_ready(c.r[l], &rd));
    KT_EQ_INT(rd.reads_n, 1); /* at once: no message had to travel */
    KT_EQ_U64(rd.reads[0].ctx, 9);
    KT_EQ_INT(rd.reads[0].ok, 1);
    for (size_t k = 0; k < rd.msgs_n; k++)
        enqueue(&c, &rd.msgs[k]);
    keel_raft_advance(c.r[l]);
    cl_isolate(&c, l, 1);
    cl_tick(&c, l, 9); /* election_ticks_min (10) - drift (2) after the last round */
    KT_EQ_INT(keel_raft_role(c.r[l]), KEEL_RAFT_LEADER);
    KT_EQ_INT(keel_raft_read_index(c.r[l], 10), 0);
    KT_CHECK(keel_raft_ready(c.r[l], &rd));
    KT_EQ_INT(rd.reads_n, 0); /* lease over: back to a ReadIndex round */
    keel_raft_advance(c.r[l]);
    cl_free(&c);
}

static void lease_follower_ignores_votes_even_after_learning_a_newer_term(void)
{
    cluster_t c;
    int l = cl_lease_cluster(&c);
    int f = l == 1 ? 2 : 1, o = 6 - l - f;
    /* f learns of term 50 from a stray answer: it still holds l's lease */
    keel_raft_msg_t stray = {.type = KEEL_RAFT_MSG_VOTE_RESP,
                             .from = (uint64_t)o,
                             .to = (uint64_t)f,
                             .term = 50,
                             .reject = 1};
    KT_EQ_INT(keel_raft_step(c.r[f], &stray), 0);
    KT_EQ_U64(keel_raft_term(c.r[f]), 50);
    keel_raft_msg_t v = {.type = KEEL_RAFT_MSG_VOTE,
                         .from = (uint64_t)o,
                         .to = (uint64_t)f,
                         .term = 51,
                         .index = 1,
                         .log_term = 1};
    KT_EQ_INT(keel_raft_step(c.r[f], &v), 0);
    KT_EQ_U64(keel_raft_term(c.r[f]), 50); /* ignored */
    cl_free(&c);
}

int main(void)
{
    KT_RUN(config_validate_rejects_nonsense_with_a_reason);
    KT_RUN(pre_vote_then_vote_elects_a_leader_and_commits_its_noop);
    KT_RUN(election_timeout_starts_an_election_within_the_random_range);
    KT_RUN(batches_many_proposals_into_one_append_per_follower);
    KT_RUN(pipelines_at_most_inflight_msgs_max_appends);
    KT_RUN(leader_counts_itself_only_after_its_own_write_is_durable);
    KT_RUN(commits_an_old_term_entry_only_through_a_current_term_entry);
    KT_RUN(follower_conflict_hint_skips_a_whole_term);
    KT_RUN(vote_is_refused_to_a_candidate_with_a_stale_log);
    KT_RUN(check_quorum_makes_an_isolated_leader_step_down);
    KT_RUN(pre_vote_keeps_a_partitioned_node_from_raising_terms);
    KT_RUN(leader_stickiness_ignores_votes_while_a_leader_is_heard);
    KT_RUN(a_node_with_a_higher_term_does_not_wedge_the_cluster);
    KT_RUN(read_index_waits_for_a_heartbeat_quorum);
    KT_RUN(read_index_is_refused_before_the_leader_commits_in_its_term);
    KT_RUN(lost_leadership_fails_pending_reads);
    KT_RUN(leadership_transfer_hands_over_to_a_caught_up_follower);
    KT_RUN(restart_reapplies_committed_entries_from_restored_storage);
    KT_RUN(compacted_follower_catches_up_through_a_chunked_snapshot);
    KT_RUN(snapshot_restart_restores_the_log_after_it);
    KT_RUN(lease_read_is_served_without_a_round_until_the_lease_runs_out);
    KT_RUN(lease_follower_ignores_votes_even_after_learning_a_newer_term);
    KT_RUN(log_blocks_come_from_the_configured_memory_and_all_go_back);
    return kt_done();
}
