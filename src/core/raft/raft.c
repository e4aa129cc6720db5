/* raft.c - Raft core: configuration, role changes, ticks, message dispatch and the ready batch. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft/raft_int.h"
#include "base/vec.h"

void keel_raft_config_default(keel_raft_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tick_ms = 10;
    cfg->election_ticks_min = 10; /* 100..200 ms at 10 ms ticks (thesis §9.3: >> RTT) */
    cfg->election_ticks_max = 20;
    cfg->heartbeat_ticks = 2;
    cfg->msg_entries_max = 1024;
    cfg->msg_bytes_max = 1 << 20;
    cfg->inflight_msgs_max = 64;
    cfg->inflight_bytes_max = 16 << 20;
    cfg->entry_bytes_max = 1 << 20;
    cfg->reads_pending_max = 4096;
    cfg->snapshot_chunk_bytes_max = 1 << 20;
    cfg->snapshot_bytes_max = 1ULL << 32;
    cfg->log_trailing_entries = 1024;
    cfg->pre_vote = 1;
    cfg->check_quorum = 1;
    cfg->lease_reads = 0;
    cfg->lease_drift_ticks = 2;
}

int keel_raft_config_validate(const keel_raft_config_t *c, keel_errmsg_t *msg)
{
    if (c->id == 0)
        return keel_errf(msg, KEEL_EINVAL, "raft: id must be nonzero");
    if (c->voters_n > KEEL_RAFT_VOTERS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "raft: voters_n %zu not in 0..%d", c->voters_n,
                         KEEL_RAFT_VOTERS_MAX);
    int self = 0;
    for (size_t i = 0; i < c->voters_n; i++) {
        if (c->voters[i] == 0)
            return keel_errf(msg, KEEL_EINVAL, "raft: voter id 0 at position %zu", i);
        for (size_t j = 0; j < i; j++)
            if (c->voters[j] == c->voters[i])
                return keel_errf(msg, KEEL_EINVAL, "raft: voter %llu listed twice",
                                 (unsigned long long)c->voters[i]);
        self |= c->voters[i] == c->id;
    }
    if (!self && c->voters_n > 0)
        return keel_errf(msg, KEEL_EINVAL, "raft: id %llu is not among the voters",
                         (unsigned long long)c->id);
    if (c->tick_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "raft: tick_ms must be > 0");
    if (c->heartbeat_ticks == 0)
        return keel_errf(msg, KEEL_EINVAL, "raft: heartbeat_ticks must be > 0");
    if (c->election_ticks_min <= c->heartbeat_ticks)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: election_ticks_min (%u) must exceed heartbeat_ticks (%u)",
                         c->election_ticks_min, c->heartbeat_ticks);
    if (c->election_ticks_max < c->election_ticks_min)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: election_ticks_max (%u) < election_ticks_min (%u)",
                         c->election_ticks_max, c->election_ticks_min);
    if (c->lease_reads && (!c->check_quorum || c->lease_drift_ticks >= c->election_ticks_min))
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: lease_reads needs check_quorum and lease_drift_ticks (%u) < "
                         "election_ticks_min (%u)",
                         c->lease_drift_ticks, c->election_ticks_min);
    if (c->msg_entries_max == 0 || c->msg_bytes_max == 0)
        return keel_errf(msg, KEEL_EINVAL, "raft: msg_entries_max and msg_bytes_max must be > 0");
    if (c->inflight_msgs_max == 0 || c->inflight_bytes_max == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: inflight_msgs_max and inflight_bytes_max must be > 0");
    if (c->snapshot_chunk_bytes_max == 0 || c->snapshot_bytes_max == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: snapshot_chunk_bytes_max and snapshot_bytes_max must be > 0");
    if (c->entry_bytes_max == 0 || c->reads_pending_max == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: entry_bytes_max and reads_pending_max must be > 0");
    return 0;
}

static int restore_log(keel_raft_t *r, const keel_raft_restore_t *rs, keel_errmsg_t *msg)
{
    const keel_raft_snapshot_t *sn = &rs->snapshot;
    if (sn->index != 0) {
        if (sn->term == 0 || sn->term > rs->hard_state.term)
            return keel_errf(msg, KEEL_EINVAL, "raft: restored snapshot term %llu invalid",
                             (unsigned long long)sn->term);
        if (keel__raft_conf_check(&sn->conf) != 0)
            return keel_errf(msg, KEEL_EINVAL, "raft: restored snapshot configuration invalid");
        int rc = keel__raft_snap_set(&r->snap, sn->index, sn->term, sn->data, sn->data_len);
        if (rc != 0)
            return rc;
        r->base_conf = r->snap_conf = sn->conf;
        keel__raft_log_reset(&r->log, sn->index, sn->term);
    }
    uint64_t prev_term = sn->term;
    for (size_t i = 0; i < rs->entries_n; i++) {
        const keel_raft_entry_t *e = &rs->entries[i];
        if (e->index != sn->index + i + 1 || e->term < prev_term || e->term > rs->hard_state.term)
            return keel_errf(msg, KEEL_EINVAL, "raft: restored entry %zu has index %llu term %llu",
                             i, (unsigned long long)e->index, (unsigned long long)e->term);
        prev_term = e->term;
        int rc = keel__raft_log_append(&r->log, e->term, e->type, e->data, e->len);
        if (rc != 0)
            return rc;
    }
    uint64_t last = keel__raft_log_last(&r->log);
    r->term = rs->hard_state.term;
    r->vote = rs->hard_state.vote;
    r->commit = rs->hard_state.commit;
    /* The commit index is volatile in Raft (thesis §3.8): persisting it only saves
       re-learning it. A torn write can keep the hard state but lose some of the entries
       written with it, so a commit beyond the stored log is lowered, not refused. */
    if (r->commit > last)
        r->commit = last;
    if (r->commit < sn->index)
        r->commit = sn->index;
    if (rs->applied > r->commit || rs->applied < sn->index)
        return keel_errf(msg, KEEL_EINVAL,
                         "raft: applied %llu outside snapshot %llu .. commit %llu",
                         (unsigned long long)rs->applied, (unsigned long long)sn->index,
                         (unsigned long long)r->commit);
    r->applied = rs->applied;
    r->stable = last;
    r->persist_next = last + 1;
    r->hs_handed = rs->hard_state;
    return 0;
}

int keel_raft_new(keel_raft_t **out, const keel_raft_config_t *cfg,
                  const keel_raft_restore_t *restore, keel_ms_t now_ms, keel_errmsg_t *msg)
{
    int rc = keel_raft_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    keel_raft_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    r->cfg = *cfg;
    r->log.mem = &r->cfg.mem;
    keel_rand_seed(&r->rand, keel_mix64(cfg->seed ^ cfg->id));
    for (size_t i = 0; i < cfg->voters_n; i++)
        r->base_conf.voters[i] = cfg->voters[i];
    r->base_conf.voters_n = (uint32_t)cfg->voters_n;
    rc = KEEL_ENOMEM;
    for (size_t i = 0; i < KEEL_RAFT_MEMBERS_MAX; i++) {
        keel__raft_progress_t *p = &r->prs[i];
        p->infl_last = calloc(cfg->inflight_msgs_max, sizeof(uint64_t));
        p->infl_bytes = calloc(cfg->inflight_msgs_max, sizeof(uint64_t));
        if (p->infl_last == NULL || p->infl_bytes == NULL)
            goto err_after_alloc;
    }
    r->reads_pending = calloc(cfg->reads_pending_max, sizeof(*r->reads_pending));
    r->reads_out = calloc(cfg->reads_pending_max, sizeof(*r->reads_out));
    if (r->reads_pending == NULL || r->reads_out == NULL)
        goto err_after_alloc;
    r->persist_next = 1;
    if (restore != NULL && (rc = restore_log(r, restore, msg)) != 0)
        goto err_after_alloc;
    keel__raft_conf_recompute(r);
    r->next_tick_ms = now_ms + cfg->tick_ms;
    keel__raft_become_follower(r, r->term, 0);
    *out = r;
    return 0;
err_after_alloc:
    keel_raft_free(r);
    return rc;
}

void keel_raft_free(keel_raft_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < KEEL_RAFT_MEMBERS_MAX; i++) {
        free(r->prs[i].infl_last);
        free(r->prs[i].infl_bytes);
    }
    free(r->reads_pending);
    free(r->reads_out);
    free(r->out_now.v);
    free(r->out_after.v);
    free(r->snap.data);
    free(r->snap_in.data);
    keel__raft_log_free(&r->log);
    free(r);
}

keel__raft_progress_t *keel__raft_progress(keel_raft_t *r, uint64_t id)
{
    for (size_t i = 0; i < r->prs_n; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

/*
 * Queues a message. The leader's replication traffic may leave before its own log
 * write is durable; so may a heartbeat answer, which acknowledges no entry (docs/raft.md,
 * "Heartbeat answers before persistence"). Everything else (votes, append
 * acknowledgements) waits for durability.
 */
int keel__raft_send(keel_raft_t *r, const keel_raft_msg_t *m)
{
    int early = (r->role == KEEL_RAFT_LEADER &&
                 (m->type == KEEL_RAFT_MSG_APPEND || m->type == KEEL_RAFT_MSG_HEARTBEAT ||
                  m->type == KEEL_RAFT_MSG_TIMEOUT_NOW || m->type == KEEL_RAFT_MSG_SNAPSHOT)) ||
                m->type == KEEL_RAFT_MSG_HEARTBEAT_RESP;
    if (r->cfg.test_break == KEEL_RAFT_BREAK_ACK_UNDURABLE)
        early = 1;
    keel__raft_msgs_t *q = early ? &r->out_now : &r->out_after;
    if (keel_vec_grow(&q->v, &q->cap, q->n + 1, sizeof(*q->v), 16) != 0)
        return KEEL_ENOMEM; /* the message is lost, as if by the network */
    q->v[q->n] = *m;
    q->v[q->n].from = r->cfg.id;
    q->v[q->n].term = m->term ? m->term : r->term;
    q->n++;
    return 0;
}

void keel__raft_become_follower(keel_raft_t *r, uint64_t term, uint64_t leader)
{
    assert(term >= r->term);
    if (term != r->term) {
        r->term = term;
        r->vote = 0;
    }
    if (r->role == KEEL_RAFT_LEADER)
        keel__raft_reads_fail_all(r);
    r->role = KEEL_RAFT_FOLLOWER;
    r->leader = leader;
    r->transfer_to = 0;
    keel__raft_reset_election_timer(r);
}

void keel__raft_become_leader(keel_raft_t *r)
{
    assert(r->role == KEEL_RAFT_CANDIDATE);
    r->role = KEEL_RAFT_LEADER;
    r->leader = r->cfg.id;
    r->transfer_to = 0;
    r->lease_off = 0;
    r->heartbeat_elapsed = 0;
    r->election_elapsed = 0;
    keel__raft_progress_reset(r);
    /* A no-op of the new term lets the leader commit earlier terms' entries (§3.6.2). */
    int rc = keel__raft_log_append(&r->log, r->term, KEEL_RAFT_ENTRY_NOOP, NULL, 0);
    if (rc != 0)
        keel__raft_become_follower(r, r->term, 0); /* cannot lead without memory */
}

/* Follower log conflict: drop entries >= from_index, never a committed one (Raft §5.3). */
void keel__raft_truncate(keel_raft_t *r, uint64_t from_index)
{
    assert(from_index > r->commit);
    keel__raft_log_truncate(&r->log, from_index);
    if (r->conf_index >= from_index)
        keel__raft_conf_recompute(r); /* the configuration entry is gone: revert */
    if (r->stable >= from_index)
        r->stable = from_index - 1;
    if (r->persist_next > from_index)
        r->persist_next = from_index;
}

static void tick_once(keel_raft_t *r)
{
    r->ticks++;
    if (r->heard_elapsed < UINT32_MAX)
        r->heard_elapsed++;
    r->election_elapsed++;
    if (r->role != KEEL_RAFT_LEADER) {
        /* Learners and departed nodes never campaign, but their timer still runs: a
           node must not keep a dead leader's lease (and ignore votes) forever. */
        if (r->election_elapsed >= r->election_timeout) {
            if (r->self_voter)
                keel__raft_campaign(r, r->cfg.pre_vote, 0);
            else
                r->election_elapsed = r->election_timeout;
        }
        return;
    }
    if (r->transfer_to != 0 && ++r->transfer_elapsed >= r->cfg.election_ticks_min)
        r->transfer_to = 0; /* target did not take over in time: resume (thesis §3.10) */
    if (r->election_elapsed >= r->cfg.election_ticks_min) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum) {
            size_t active = 0;
            for (size_t i = 0; i < r->prs_n; i++) {
                active += r->prs[i].is_voter && (r->prs[i].is_self || r->prs[i].recent_active);
                r->prs[i].recent_active = 0;
            }
            if (active < r->quorum) {
                keel__raft_become_follower(r, r->term, 0);
                return;
            }
        }
    }
    if (++r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        r->hb_pending = 1;
    }
}

void keel_raft_tick(keel_raft_t *r, keel_ms_t now_ms)
{
    assert(!r->ready_out);
    int n = 0;
    while (now_ms >= r->next_tick_ms && n < KEEL_RAFT_TICKS_PER_CALL_MAX) {
        tick_once(r);
        r->next_tick_ms += r->cfg.tick_ms;
        n++;
    }
    if (now_ms >= r->next_tick_ms) { /* long pause: skip ahead rather than spin */
        r->ticks += (uint64_t)((now_ms - r->next_tick_ms) / r->cfg.tick_ms) + 1;
        r->next_tick_ms = now_ms + r->cfg.tick_ms;
    }
}

keel_ms_t keel_raft_next_deadline_ms(const keel_raft_t *r)
{
    return r->next_tick_ms;
}

static int is_leader_msg(keel_raft_msg_type_t t)
{
    return t == KEEL_RAFT_MSG_APPEND || t == KEEL_RAFT_MSG_HEARTBEAT ||
           t == KEEL_RAFT_MSG_TIMEOUT_NOW || t == KEEL_RAFT_MSG_SNAPSHOT;
}

/*
 * Term rules (thesis §3.3, §9.6, etcd raft.Step). Returns 1 if the message is to be
 * processed further, 0 if it was consumed or ignored.
 */
static int step_term(keel_raft_t *r, const keel_raft_msg_t *m)
{
    if (m->term > r->term) {
        if (m->type == KEEL_RAFT_MSG_VOTE || m->type == KEEL_RAFT_MSG_PREVOTE) {
            /* Leader stickiness: while a leader is heard from, ignore disruptive
               campaigns, unless they come from a leadership transfer (thesis §4.2.3). */
            int in_lease = r->cfg.check_quorum && r->leader != 0 &&
                           r->election_elapsed < r->cfg.election_ticks_min; /* With lease reads the
    rule is strict: no vote within election_ticks_min of hearing from any leader, whatever happened
    to terms meanwhile, and none in the first election_ticks_min after a start (a restarted node may
    have acknowledged a lease it no longer remembers). */
            if (r->cfg.lease_reads)
                in_lease = r->heard_elapsed < r->cfg.election_ticks_min;
            if (in_lease && !m->transfer)
                return 0;
        }
        if (m->type == KEEL_RAFT_MSG_PREVOTE ||
            (m->type == KEEL_RAFT_MSG_PREVOTE_RESP && !m->reject))
            return 1; /* pre-votes never change terms */
        keel__raft_become_follower(r, m->term, is_leader_msg(m->type) ? m->from : 0);
        return 1;
    }
    if (m->term < r->term) {
        /* A stale leader must learn our term or it (and a pre-voting cluster) can be stuck:
           the pre-vote + check-quorum pitfall (etcd #8501). Answer with our term. */
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == KEEL_RAFT_MSG_APPEND || m->type == KEEL_RAFT_MSG_HEARTBEAT ||
             m->type == KEEL_RAFT_MSG_SNAPSHOT)) {
            keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_APPEND_RESP, .to = m->from};
            keel__raft_send(r, &resp);
        } else if (m->type == KEEL_RAFT_MSG_PREVOTE) {
            keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_PREVOTE_RESP, .to = m->from, .reject = 1};
            keel__raft_send(r, &resp);
        }
        return 0;
    }
    return 1;
}

int keel_raft_step(keel_raft_t *r, const keel_raft_msg_t *m)
{
    assert(!r->ready_out);
    /* Any sender is heard: a joining node learns of its leader, a candidate may be
       newer than our configuration. Answers are matched against progress below. */
    if (m->to != r->cfg.id || m->from == 0 || m->from == r->cfg.id)
        return KEEL_EINVAL;
    if (m->type < KEEL_RAFT_MSG_APPEND || m->type > KEEL_RAFT_MSG_SNAPSHOT_RESP)
        return KEEL_EPROTO;
    if (!step_term(r, m))
        return 0;
    switch (m->type) {
    case KEEL_RAFT_MSG_PREVOTE:
    case KEEL_RAFT_MSG_VOTE:
        keel__raft_recv_vote(r, m);
        return 0;
    case KEEL_RAFT_MSG_PREVOTE_RESP:
    case KEEL_RAFT_MSG_VOTE_RESP:
        keel__raft_recv_vote_resp(r, m);
        return 0;
    case KEEL_RAFT_MSG_APPEND:
    case KEEL_RAFT_MSG_HEARTBEAT:
    case KEEL_RAFT_MSG_TIMEOUT_NOW:
    case KEEL_RAFT_MSG_SNAPSHOT:
        assert(r->role != KEEL_RAFT_LEADER); /* election safety: one leader per term */
        if (r->role != KEEL_RAFT_FOLLOWER || r->leader != m->from)
            keel__raft_become_follower(r, r->term, m->from);
        r->election_elapsed = 0;
        r->heard_elapsed = 0;
        if (m->type == KEEL_RAFT_MSG_APPEND)
            return keel__raft_recv_append(r, m);
        if (m->type == KEEL_RAFT_MSG_SNAPSHOT)
            return keel__raft_recv_snapshot(r, m);
        if (m->type == KEEL_RAFT_MSG_HEARTBEAT)
            keel__raft_recv_heartbeat(r, m);
        else
            keel__raft_campaign(r, 0, 1);
        return 0;
    case KEEL_RAFT_MSG_APPEND_RESP:
        if (r->role == KEEL_RAFT_LEADER)
            keel__raft_recv_append_resp(r, m);
        return 0;
    case KEEL_RAFT_MSG_HEARTBEAT_RESP:
        if (r->role == KEEL_RAFT_LEADER)
            keel__raft_recv_heartbeat_resp(r, m);
        return 0;
    case KEEL_RAFT_MSG_SNAPSHOT_RESP:
        if (r->role == KEEL_RAFT_LEADER)
            keel__raft_recv_snapshot_resp(r, m);
        return 0;
    }
    return KEEL_EPROTO;
}

void keel_raft_leader_alive(keel_raft_t *r)
{
    assert(!r->ready_out);
    if (r->role == KEEL_RAFT_FOLLOWER && r->leader != 0)
        r->election_elapsed = 0; /* as a message from it would; heard_elapsed stays */
}

int keel_raft_propose(keel_raft_t *r, const void *data, size_t len, uint64_t *index_out)
{
    assert(!r->ready_out);
    if (r->role != KEEL_RAFT_LEADER)
        return KEEL_ENOTLEADER;
    if (r->transfer_to != 0)
        return KEEL_EBUSY;
    if (len > r->cfg.entry_bytes_max)
        return KEEL_ETOOBIG;
    int rc = keel__raft_log_append(&r->log, r->term, KEEL_RAFT_ENTRY_NORMAL, data, len);
    if (rc != 0)
        return rc;
    if (index_out != NULL)
        *index_out = keel__raft_log_last(&r->log);
    return 0;
}

int keel_raft_transfer_leadership(keel_raft_t *r, uint64_t to)
{
    assert(!r->ready_out);
    if (r->role != KEEL_RAFT_LEADER)
        return KEEL_ENOTLEADER;
    keel__raft_progress_t *p = keel__raft_progress(r, to);
    if (p == NULL || p->is_self || !p->is_voter)
        return KEEL_EINVAL;
    if (r->transfer_to != 0)
        return KEEL_EBUSY;
    r->transfer_to = to;
    r->transfer_elapsed = 0;
    r->lease_off = 1; /* the target's campaign will ignore follower leases */
    if (p->match == keel__raft_log_last(&r->log)) {
        keel_raft_msg_t m = {.type = KEEL_RAFT_MSG_TIMEOUT_NOW, .to = to};
        keel__raft_send(r, &m);
    } else {
        keel__raft_become_probe(p, p->match + 1); /* catch it up now, not at a stall check */
    }
    return 0;
}

int keel_raft_campaign(keel_raft_t *r)
{
    assert(!r->ready_out);
    if (r->role == KEEL_RAFT_LEADER)
        return KEEL_EINVAL;
    keel__raft_campaign(r, r->cfg.pre_vote, 0);
    return 0;
}

void keel_raft_persisted(keel_raft_t *r, uint64_t index, uint64_t term)
{
    assert(!r->ready_out);
    if (r->snap_unpersisted) { /* only the installed snapshot's own report counts */
        if (index == r->snap.index && term == r->snap.term)
            r->snap_unpersisted = 0;
        return;
    }
    /* Ignore reports about entries since replaced by a conflicting leader's. */
    if (index <= r->stable || index >= r->persist_next ||
        keel__raft_log_term(&r->log, index) != term)
        return;
    r->stable = index;
    if (r->role == KEEL_RAFT_LEADER)
        keel__raft_maybe_commit(r);
}

int keel_raft_ready(keel_raft_t *r, keel_raft_ready_t *rd)
{
    assert(!r->ready_out);
    keel__raft_flush(r);
    memset(rd, 0, sizeof(*rd));
    if (r->snap_out)
        rd->snapshot = (keel_raft_snapshot_t){r->snap.index, r->snap.term, r->snap_conf,
                                              r->snap.data, r->snap.len};
    keel_raft_hard_state_t hs = {r->term, r->vote, r->commit};
    if (memcmp(&hs, &r->hs_handed, sizeof(hs)) != 0) {
        rd->hard_state_changed = 1;
        rd->hard_state = hs;
    }
    uint64_t last = keel__raft_log_last(&r->log);
    if (r->persist_next <= last) {
        rd->entries = keel__raft_log_at(&r->log, r->persist_next);
        rd->entries_n = last - r->persist_next + 1;
    }
    rd->msgs = r->out_now.v;
    rd->msgs_n = r->out_now.n;
    rd->msgs_after_persist = r->out_after.v;
    rd->msgs_after_persist_n = r->out_after.n;
    uint64_t apply_to = r->commit < r->stable ? r->commit : r->stable;
    if (apply_to > r->applied) {
        rd->committed = keel__raft_log_at(&r->log, r->applied + 1);
        rd->committed_n = apply_to - r->applied;
    }
    rd->reads = r->reads_out;
    rd->reads_n = r->reads_out_n;
    r->ready_out = r->snap_out || rd->hard_state_changed || rd->entries_n || rd->msgs_n ||
                   rd->msgs_after_persist_n || rd->committed_n || rd->reads_n;
    return r->ready_out;
}

void keel_raft_advance(keel_raft_t *r)
{
    assert(r->ready_out);
    r->ready_out = 0;
    r->snap_out = 0;
    r->hs_handed = (keel_raft_hard_state_t){r->term, r->vote, r->commit};
    r->persist_next = keel__raft_log_last(&r->log) + 1;
    uint64_t apply_to = r->commit < r->stable ? r->commit : r->stable;
    if (apply_to > r->applied)
        r->applied = apply_to;
    r->out_now.n = 0;
    r->out_after.n = 0;
    r->reads_out_n = 0;
}

keel_raft_role_t keel_raft_role(const keel_raft_t *r)
{
    return r->role;
}

uint64_t keel_raft_id(const keel_raft_t *r)
{
    return r->cfg.id;
}

uint64_t keel_raft_term(const keel_raft_t *r)
{
    return r->term;
}

uint64_t keel_raft_leader(const keel_raft_t *r)
{
    return r->leader;
}

uint64_t keel_raft_commit(const keel_raft_t *r)
{
    return r->commit;
}

uint64_t keel_raft_last_index(const keel_raft_t *r)
{
    return keel__raft_log_last(&r->log);
}

uint64_t keel_raft_stable_index(const keel_raft_t *r)
{
    return r->stable;
}

uint64_t keel_raft_first_index(const keel_raft_t *r)
{
    return r->log.offset + 1;
}

uint64_t keel_raft_snapshot_index(const keel_raft_t *r)
{
    return r->snap.index;
}

const keel_raft_conf_t *keel_raft_snapshot_conf(const keel_raft_t *r)
{
    return &r->snap_conf;
}

const keel_raft_entry_t *keel_raft_entry_at(const keel_raft_t *r, uint64_t index)
{
    return keel__raft_log_at(&r->log, index);
}

const char *keel_raft_role_name(keel_raft_role_t role)
{
    static const char *names[] = {"follower", "precandidate", "candidate", "leader"};
    return (unsigned)role < 4 ? names[role] : "?";
}

const char *keel_raft_msg_type_name(keel_raft_msg_type_t t)
{
    static const char *names[] = {"?",         "append",      "append_resp",  "heartbeat",
                                  "hb_resp",   "prevote",     "prevote_resp", "vote",
                                  "vote_resp", "timeout_now", "snapshot",     "snapshot_resp"};
    return (unsigned)t <= KEEL_RAFT_MSG_SNAPSHOT_RESP ? names[t] : "?";
}
