/* replication.c - log replication: per-follower progress, pipelined batches, commit rule. */
#include <assert.h>
#include <stdlib.h>

#include "core/raft/raft_int.h"

static void inflight_clear(keel__raft_progress_t *p)
{
    p->infl_start = p->infl_count = 0;
    p->infl_bytes_total = 0;
}

static int inflight_full(const keel_raft_t *r, const keel__raft_progress_t *p)
{
    return p->infl_count == r->cfg.inflight_msgs_max ||
           p->infl_bytes_total >= r->cfg.inflight_bytes_max;
}

static void inflight_add(keel_raft_t *r, keel__raft_progress_t *p, uint64_t last, uint64_t bytes)
{
    assert(p->infl_count < r->cfg.inflight_msgs_max);
    uint32_t slot = (p->infl_start + p->infl_count) % r->cfg.inflight_msgs_max;
    p->infl_last[slot] = last;
    p->infl_bytes[slot] = bytes;
    p->infl_count++;
    p->infl_bytes_total += bytes;
}

/* Frees every in-flight message whose entries are all acknowledged (last <= index). */
static void inflight_free_to(keel_raft_t *r, keel__raft_progress_t *p, uint64_t index)
{
    while (p->infl_count > 0 && p->infl_last[p->infl_start] <= index) {
        p->infl_bytes_total -= p->infl_bytes[p->infl_start];
        p->infl_start = (p->infl_start + 1) % r->cfg.inflight_msgs_max;
        p->infl_count--;
    }
}

void keel__raft_become_probe(keel__raft_progress_t *p, uint64_t next)
{
    p->state = KEEL__PR_PROBE;
    p->next = next;
    p->probe_sent = 0;
    p->stall_rounds = 0;
    inflight_clear(p);
}

void keel__raft_progress_reset(keel_raft_t *r)
{
    uint64_t last = keel__raft_log_last(&r->log);
    for (size_t i = 0; i < r->prs_n; i++) {
        keel__raft_progress_t *p = &r->prs[i];
        keel__raft_become_probe(p, last + 1);
        p->match = p->commit_sent = p->match_at_hb = p->read_acked = 0;
        p->recent_active = 1; /* give everyone one check-quorum round */
    }
}

/*
 * Sends the next batch to p, if its flow state allows. PROBE: one message at a time
 * until the follower's match is known. REPLICATE: optimistic next index, up to
 * inflight_msgs_max messages / inflight_bytes_max bytes in flight (thesis §10.2.2).
 * Returns 1 if another message could follow at once.
 */
static int send_append(keel_raft_t *r, keel__raft_progress_t *p)
{
    uint64_t last = keel__raft_log_last(&r->log);
    if (p->state == KEEL__PR_SNAPSHOT || p->next - 1 < r->log.offset)
        return keel__raft_send_snapshot(r, p); /* the entries it needs are compacted */
    if (p->state == KEEL__PR_PROBE ? p->probe_sent : (inflight_full(r, p) || p->next > last))
        return 0;
    uint64_t prev = p->next - 1, n = 0, bytes = 0;
    for (uint64_t i = p->next; i <= last && n < r->cfg.msg_entries_max; i++) {
        uint32_t len = keel__raft_log_at(&r->log, i)->len;
        if (n > 0 && bytes + len > r->cfg.msg_bytes_max)
            break;
        bytes += len;
        n++;
    }
    keel_raft_msg_t m = {
        .type = KEEL_RAFT_MSG_APPEND,
        .to = p->id,
        .index = prev,
        .log_term = keel__raft_log_term(&r->log, prev),
        .commit = r->commit,
        .entries = n ? keel__raft_log_at(&r->log, p->next) : NULL,
        .entries_n = n,
    };
    if (keel__raft_send(r, &m) != 0)
        return 0;
    uint64_t told = r->commit < prev + n ? r->commit : prev + n;
    if (told > p->commit_sent)
        p->commit_sent = told;
    if (p->state == KEEL__PR_PROBE) {
        p->probe_sent = 1;
        return 0;
    }
    p->next = prev + n + 1;
    inflight_add(r, p, prev + n, bytes);
    return 1;
}

static void send_heartbeat(keel_raft_t *r, keel__raft_progress_t *p)
{
    uint64_t commit = p->match < r->commit ? p->match : r->commit;
    keel_raft_msg_t m = {
        .type = KEEL_RAFT_MSG_HEARTBEAT, .to = p->id, .commit = commit, .ctx = r->read_seq};
    if (keel__raft_send(r, &m) == 0 && commit > p->commit_sent)
        p->commit_sent = commit;
}

void keel__raft_bcast_heartbeat(keel_raft_t *r)
{
    keel__raft_new_round(r);
    for (size_t i = 0; i < r->prs_n; i++)
        if (!r->prs[i].is_self)
            send_heartbeat(r, &r->prs[i]);
}

/*
 * Batching: proposals and acknowledgements only mark state; the messages are built
 * here, once per ready, so many proposals travel in one AppendEntries (run at your
 * own pace, TigerBeetle style). Followers that learned of nothing new but can apply a
 * newer commit index get a heartbeat, which carries no log position and so cannot be
 * rejected by a reordering network.
 */
void keel__raft_flush(keel_raft_t *r)
{
    if (r->role != KEEL_RAFT_LEADER)
        return;
    if (r->hb_pending) {
        r->hb_pending = 0;
        keel__raft_bcast_heartbeat(r);
    }
    for (size_t i = 0; i < r->prs_n; i++) {
        keel__raft_progress_t *p = &r->prs[i];
        if (p->is_self)
            continue;
        while (send_append(r, p))
            ;
        uint64_t can_know = p->match < r->commit ? p->match : r->commit;
        if (can_know > p->commit_sent)
            send_heartbeat(r, p);
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/*
 * Commit rule (thesis §3.6.2): the highest index stored durably on a majority of
 * voters (the leader counts its own durable prefix only), and only if that entry is of
 * the current term; earlier entries then commit indirectly.
 */
void keel__raft_maybe_commit(keel_raft_t *r)
{
    uint64_t m[KEEL_RAFT_MEMBERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < r->prs_n; i++)
        if (r->prs[i].is_voter)
            m[n++] = r->prs[i].is_self ? r->stable : r->prs[i].match;
    if (n == 0)
        return;
    qsort(m, n, sizeof(m[0]), cmp_desc);
    uint64_t q = m[r->quorum - 1];
    if (q <= r->commit)
        return;
    if (keel__raft_log_term(&r->log, q) == r->term ||
        r->cfg.test_break == KEEL_RAFT_BREAK_COMMIT_OLD_TERM)
        r->commit = q;
    /* A leader that removed itself hands over once the removal is committed (§4.2.2). */
    if (!r->self_voter && r->conf_index <= r->commit)
        keel__raft_become_follower(r, r->term, 0);
}

/* Follower: the conflict hint of thesis §5.3 (end): the conflicting term and the first
   index we hold of it, or our last index + 1 if we lack the previous entry altogether. */
static void reject_hint(const keel_raft_t *r, uint64_t prev, keel_raft_msg_t *resp)
{
    uint64_t last = keel__raft_log_last(&r->log);
    if (prev > last) {
        resp->hint_index = last + 1;
        resp->hint_term = 0;
        return;
    }
    uint64_t t = keel__raft_log_term(&r->log, prev), i = prev;
    while (i > r->commit + 1 && keel__raft_log_term(&r->log, i - 1) == t)
        i--;
    resp->hint_index = i;
    resp->hint_term = t;
}

static int check_entries(const keel_raft_msg_t *m)
{
    uint64_t t = m->log_term;
    for (size_t k = 0; k < m->entries_n; k++) {
        const keel_raft_entry_t *e = &m->entries[k];
        if (e->index != m->index + 1 + k || e->term < t || e->term > m->term ||
            (e->len > 0 && e->data == NULL))
            return KEEL_EPROTO;
        t = e->term;
    }
    return 0;
}

int keel__raft_recv_append(keel_raft_t *r, const keel_raft_msg_t *m)
{
    keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_APPEND_RESP, .to = m->from};
    if (check_entries(m) != 0)
        return KEEL_EPROTO;
    if (m->index < r->commit) { /* stale: everything up to commit already matches */
        resp.index = r->commit;
        return keel__raft_send(r, &resp);
    }
    if (keel__raft_log_term(&r->log, m->index) != m->log_term ||
        m->index > keel__raft_log_last(&r->log)) {
        resp.reject = 1;
        resp.index = m->index;
        reject_hint(r, m->index, &resp);
        return keel__raft_send(r, &resp);
    }
    int rc = 0;
    for (size_t k = 0; k < m->entries_n && rc == 0; k++) {
        const keel_raft_entry_t *e = &m->entries[k];
        if (e->index <= keel__raft_log_last(&r->log)) {
            if (keel__raft_log_term(&r->log, e->index) == e->term)
                continue; /* already have it (duplicate or reordered message) */
            keel__raft_truncate(r, e->index);
        }
        rc = keel__raft_log_append(&r->log, e->term, e->type, e->data, e->len);
        keel_raft_conf_t c;
        if (rc == 0 && e->type == KEEL_RAFT_ENTRY_CONF &&
            keel__raft_conf_decode(e->data, e->len, &c) == 0)
            keel__raft_conf_set(r, &c, e->index); /* in force once appended (§4.1) */
    }
    if (rc != 0)
        return rc; /* a prefix was appended; no acknowledgement, the leader retries */
    uint64_t last_new = m->index + m->entries_n;
    uint64_t c = m->commit < last_new ? m->commit : last_new;
    if (c > r->commit)
        r->commit = c;
    resp.index = last_new;
    return keel__raft_send(r, &resp);
}

/* Leader: the follower rejected prev index `rejected`; back off using its hint. */
static void back_off(keel_raft_t *r, keel__raft_progress_t *p, const keel_raft_msg_t *m)
{
    uint64_t rejected = m->index;
    if (p->state == KEEL__PR_SNAPSHOT)
        return;
    if (m->hint_term == 0 && m->hint_index <= p->match && rejected >= p->match) {
        /* Its log ends before what it acknowledged: a restart truncated a damaged tail
         * record (docs/wal.md, known limit). Waiting for match + 1 would stall it forever;
         * send again from its end. Commit never moves back, so this costs only resends,
         * even for a reordered old rejection. */
        p->match = m->hint_index - 1;
        keel__raft_become_probe(p, m->hint_index);
        return;
    }
    if (p->state == KEEL__PR_REPLICATE ? rejected <= p->match : rejected != p->next - 1)
        return; /* stale rejection */
    uint64_t next = m->hint_index;
    if (m->hint_term != 0) {
        uint64_t j =
            rejected < keel__raft_log_last(&r->log) ? rejected : keel__raft_log_last(&r->log);
        while (j > p->match && keel__raft_log_term(&r->log, j) > m->hint_term)
            j--;
        if (keel__raft_log_term(&r->log, j) == m->hint_term)
            next = j + 1; /* we hold that term: resume after our last entry of it */
    }
    if (next > rejected)
        next = rejected;
    if (next < p->match + 1)
        next = p->match + 1;
    keel__raft_become_probe(p, next);
}

void keel__raft_recv_append_resp(keel_raft_t *r, const keel_raft_msg_t *m)
{
    keel__raft_progress_t *p = keel__raft_progress(r, m->from);
    if (p == NULL)
        return; /* no longer a member */
    p->recent_active = 1;
    if (m->reject) {
        back_off(r, p, m);
        return;
    }
    if (m->index > keel__raft_log_last(&r->log))
        return; /* cannot be: our own term's acknowledgement beyond our log */
    if (m->index > p->match) {
        p->match = m->index;
        if (p->state != KEEL__PR_REPLICATE) {
            p->state = KEEL__PR_REPLICATE;
            p->next = p->match + 1;
            inflight_clear(p);
        } else {
            inflight_free_to(r, p, m->index);
            if (p->next <= p->match)
                p->next = p->match + 1;
        }
        keel__raft_maybe_commit(r);
    }
    p->probe_sent = 0;
    if (r->transfer_to == p->id && p->match == keel__raft_log_last(&r->log)) {
        keel_raft_msg_t tn = {.type = KEEL_RAFT_MSG_TIMEOUT_NOW, .to = p->id};
        keel__raft_send(r, &tn);
    }
}

void keel__raft_recv_heartbeat(keel_raft_t *r, const keel_raft_msg_t *m)
{
    uint64_t last = keel__raft_log_last(&r->log);
    uint64_t c = m->commit < last ? m->commit : last;
    if (c > r->commit)
        r->commit = c;
    /* Leaves before our pending writes are durable: it acknowledges none of them. */
    keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .ctx = m->ctx};
    keel__raft_send(r, &resp);
}

/*
 * A heartbeat answer proves the follower is alive. A probe is retried; a pipeline
 * whose match did not move over a whole heartbeat round while entries are due has
 * lost a message (an entry or its acknowledgement) and falls back to probing from
 * match + 1. Answers do not wait for the follower's disk, so a disk slower than a
 * heartbeat interval also triggers this; the resent entries are then acknowledged twice.
 * That guess is given one round more per KEEL_RAFT_STALL_ROUND_BYTES in flight: a 63 MiB
 * entry takes a follower longer than one round to receive, write and sync, and resending
 * it (the leader copying it into a frame per follower again, the follower taking it
 * again) made the stall it was waiting for longer (docs/server.md, "Large values"). Only
 * when a resend happens changes: liveness, never safety.
 */
void keel__raft_recv_heartbeat_resp(keel_raft_t *r, const keel_raft_msg_t *m)
{
    keel__raft_progress_t *p = keel__raft_progress(r, m->from);
    if (p == NULL)
        return;
    p->recent_active = 1;
    p->probe_sent = 0;
    p->snap_sent = 0; /* SNAPSHOT: resend the unacknowledged chunk */
    int stuck = p->state == KEEL__PR_REPLICATE && p->match < keel__raft_log_last(&r->log) &&
                p->match == p->match_at_hb && p->infl_count > 0;
    p->stall_rounds = stuck ? p->stall_rounds + 1 : 0;
    if (stuck && p->stall_rounds > p->infl_bytes_total / KEEL_RAFT_STALL_ROUND_BYTES) {
        p->stall_rounds = 0;
        keel__raft_become_probe(p, p->match + 1);
    }
    p->match_at_hb = p->match;
    if (m->ctx > p->read_acked) {
        p->read_acked = m->ctx;
        keel__raft_reads_release(r);
    }
}
