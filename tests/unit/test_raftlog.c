/* test_raftlog.c - Raft log persistence: replay, conflict truncation, gaps, group commit marks. */
#include "ktest.h"
#include "server/raftlog.h"

#include <stdlib.h>

/* Small segments, so a few records cross segment boundaries. */
static keel_wal_config_t small_cfg(void)
{
    keel_wal_config_t cfg;
    keel_wal_config_default(&cfg);
    cfg.segment_bytes = 64 * 1024;
    cfg.record_bytes_max = 8192;
    return cfg;
}

static keel_raft_entry_t ent(uint64_t term, uint64_t index, const char *s)
{
    return (keel_raft_entry_t){term, index, 0, (uint32_t)strlen(s), (uint8_t *)s};
}

static void replays_entries_and_the_last_hard_state(void)
{
    char dir[64];
    KT_TMPDIR(dir, "raftlog");
    keel_wal_config_t cfg = small_cfg();
    keel_raftlog_t *rl;
    keel_raft_restore_t rs;
    keel_errmsg_t m;
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    KT_EQ_INT(rs.entries_n, 0);
    keel_raft_hard_state_t hs = {1, 1, 0};
    keel_raft_entry_t e[3] = {ent(1, 1, ""), ent(1, 2, "b"), ent(1, 3, "cc")};
    e[0].type = 1;
    KT_EQ_INT(keel_raftlog_append(rl, &hs, e, 3), 0);
    uint64_t idx, term;
    KT_EQ_INT(keel_raftlog_sync(rl, &idx, &term, &m), 0);
    KT_EQ_U64(idx, 3);
    KT_EQ_U64(term, 1);
    hs = (keel_raft_hard_state_t){2, 3, 2};
    KT_EQ_INT(keel_raftlog_append(rl, &hs, NULL, 0), 0);
    KT_EQ_INT(keel_raftlog_sync(rl, &idx, &term, &m), 0);
    KT_EQ_U64(idx, 0); /* hard state only */
    /* a conflict: index 3 rewritten in term 2, then 4 appended */
    keel_raft_entry_t f[2] = {ent(2, 3, "new3"), ent(2, 4, "four")};
    KT_EQ_INT(keel_raftlog_append(rl, NULL, f, 2), 0);
    KT_EQ_INT(keel_raftlog_sync(rl, &idx, &term, &m), 0);
    KT_EQ_U64(idx, 4);
    KT_EQ_U64(term, 2);
    keel_raftlog_close(rl);

    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    KT_EQ_INT(rs.entries_n, 4);
    KT_EQ_U64(rs.hard_state.term, 2);
    KT_EQ_U64(rs.hard_state.vote, 3);
    KT_EQ_U64(rs.hard_state.commit, 2);
    KT_EQ_INT(rs.entries[0].type, 1);
    KT_EQ_INT(rs.entries[0].len, 0);
    KT_EQ_MEM(rs.entries[1].data, "b", 1);
    KT_EQ_U64(rs.entries[2].term, 2);
    KT_EQ_INT(rs.entries[2].len, 4);
    KT_EQ_MEM(rs.entries[2].data, "new3", 4);
    KT_EQ_MEM(rs.entries[3].data, "four", 4);
    keel_raftlog_drop_restore(rl);
    keel_raftlog_close(rl);
    KT_RMRF(dir);
}

static void refuses_a_log_with_a_gap(void)
{
    char dir[64];
    KT_TMPDIR(dir, "raftlog");
    keel_wal_config_t cfg = small_cfg();
    keel_raftlog_t *rl;
    keel_raft_restore_t rs;
    keel_errmsg_t m;
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    keel_raft_entry_t e[2] = {ent(1, 1, "a"), ent(1, 3, "c")};
    KT_EQ_INT(keel_raftlog_append(rl, NULL, e, 2), 0);
    uint64_t idx, term;
    KT_EQ_INT(keel_raftlog_sync(rl, &idx, &term, &m), 0);
    keel_raftlog_close(rl);
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), KEEL_ECORRUPT);
    KT_CHECK(strstr(m.text, "gap") != NULL);
    KT_RMRF(dir);
}

static void leaves_a_commit_index_beyond_the_log_to_the_core(void)
{
    char dir[64];
    KT_TMPDIR(dir, "raftlog");
    keel_wal_config_t cfg = small_cfg();
    keel_raftlog_t *rl;
    keel_raft_restore_t rs;
    keel_errmsg_t m;
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    keel_raft_hard_state_t hs = {1, 1, 5};
    KT_EQ_INT(keel_raftlog_append(rl, &hs, NULL, 0), 0);
    uint64_t idx, term;
    KT_EQ_INT(keel_raftlog_sync(rl, &idx, &term, &m), 0);
    keel_raftlog_close(rl);
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    KT_EQ_U64(rs.hard_state.commit, 5); /* keel_raft_new lowers it to the last entry */
    KT_EQ_INT(rs.entries_n, 0);
    keel_raftlog_close(rl);
    KT_RMRF(dir);
}

/* Several groups handed over before any is durable: durable() reports the last entry of
 * the newest durable group holding entries, once; hard-state-only groups report none. */
static void reports_the_last_durable_entry_of_groups_handed_over_together(void)
{
    char dir[64];
    KT_TMPDIR(dir, "raftlog");
    keel_wal_config_t cfg = small_cfg();
    keel_raftlog_t *rl;
    keel_raft_restore_t rs;
    keel_errmsg_t m;
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    keel_raft_entry_t e[3] = {ent(1, 1, "a"), ent(1, 2, "b"), ent(2, 3, "c")};
    keel_raft_hard_state_t hs = {2, 0, 1};
    uint64_t g1, g2, g3, g4, gen, idx, term;
    KT_EQ_INT(keel_raftlog_append(rl, NULL, e, 2), 0);
    KT_EQ_INT(keel_raftlog_submit(rl, &g1), 0);
    KT_EQ_INT(keel_raftlog_append(rl, &hs, NULL, 0), 0);
    KT_EQ_INT(keel_raftlog_submit(rl, &g2), 0);
    KT_EQ_INT(keel_raftlog_append(rl, NULL, e + 2, 1), 0);
    KT_EQ_INT(keel_raftlog_submit(rl, &g3), 0);
    KT_EQ_INT(keel_raftlog_submit(rl, &g4), 0);
    KT_EQ_U64(g4, 0); /* nothing pending */
    KT_CHECK(g1 < g2 && g2 < g3);
    KT_EQ_INT(keel_raftlog_durable(rl, &gen, &idx, &term, &m), 0);
    KT_EQ_U64(gen, 0); /* no sync ran yet */
    KT_EQ_U64(idx, 0);
    KT_EQ_INT(keel_wal_wait(keel_raftlog_wal(rl), g2, &m), 0);
    KT_EQ_INT(keel_raftlog_durable(rl, &gen, &idx, &term, &m), 0);
    KT_CHECK(gen >= g2);
    if (gen == g2) { /* g3 was taken separately: entry 2 now, 3 later */
        KT_EQ_U64(idx, 2);
        KT_EQ_INT(keel_wal_wait(keel_raftlog_wal(rl), g3, &m), 0);
        KT_EQ_INT(keel_raftlog_durable(rl, &gen, &idx, &term, &m), 0);
    }
    KT_EQ_U64(gen, g3);
    KT_EQ_U64(idx, 3);
    KT_EQ_U64(term, 2);
    KT_EQ_INT(keel_raftlog_durable(rl, &gen, &idx, &term, &m), 0);
    KT_EQ_U64(idx, 0); /* reported once */
    keel_raftlog_close(rl);
    KT_EQ_INT(keel_raftlog_open(&rl, dir, &cfg, 0, 0, &rs, &m), 0);
    KT_EQ_INT(rs.entries_n, 3);
    KT_EQ_U64(rs.hard_state.term, 2);
    keel_raftlog_close(rl);
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(replays_entries_and_the_last_hard_state);
    KT_RUN(refuses_a_log_with_a_gap);
    KT_RUN(leaves_a_commit_index_beyond_the_log_to_the_core);
    KT_RUN(reports_the_last_durable_entry_of_groups_handed_over_together);
    return kt_done();
}
