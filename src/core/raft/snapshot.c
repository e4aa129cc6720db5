/* snapshot.c - log compaction and InstallSnapshot in chunks (thesis §5.1, §5.4.2). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/raft/raft_int.h"

static int compact_check(const keel_raft_t *r, uint64_t index, size_t len)
{
    assert(!r->ready_out);
    if (index > r->applied || index <= r->snap.index)
        return KEEL_EINVAL;
    return len > r->cfg.snapshot_bytes_max ? KEEL_ETOOBIG : 0;
}

static int compact_log(keel_raft_t *r, uint64_t index);

int keel_raft_compact(keel_raft_t *r, uint64_t index, const void *data, size_t len)
{
    int rc = compact_check(r, index, len);
    if (rc != 0)
        return rc;
    uint64_t term = keel__raft_log_term(&r->log, index);
    assert(term != 0);
    rc = keel__raft_snap_set(&r->snap, index, term, data, len);
    return rc != 0 ? rc : compact_log(r, index);
}

int keel_raft_compact_owned(keel_raft_t *r, uint64_t index, uint8_t *data, size_t len)
{
    int rc = compact_check(r, index, len);
    if (rc != 0) {
        free(data);
        return rc;
    }
    uint64_t term = keel__raft_log_term(&r->log, index);
    assert(term != 0);
    free(r->snap.data);
    r->snap.data = data;
    r->snap.cap = r->snap.len = len;
    r->snap.index = index;
    r->snap.term = term;
    return compact_log(r, index);
}

/* r->snap now holds the snapshot at index: drop the log behind it. */
static int compact_log(keel_raft_t *r, uint64_t index)
{
    keel__raft_conf_at(r, index, &r->snap_conf);
    /* Keep a trailing window so a follower that is only a little behind still gets
       entries rather than the whole snapshot. */
    uint64_t trail = r->cfg.log_trailing_entries;
    if (index > trail && index - trail > r->log.offset) {
        keel__raft_conf_at(r, index - trail, &r->base_conf);
        keel__raft_log_compact(&r->log, index - trail);
    }
    return 0;
}

/*
 * Leader: one chunk at a time (stop and wait); the follower acknowledges each chunk with
 * the bytes it holds, and a lost chunk or answer is retried at the next heartbeat
 * answer. If the leader compacts again meanwhile, the transfer restarts with the newer
 * snapshot. Chunk data points into r->snap, valid until advance like all ready data.
 */
int keel__raft_send_snapshot(keel_raft_t *r, keel__raft_progress_t *p)
{
    assert(r->snap.index != 0);
    if (p->state != KEEL__PR_SNAPSHOT || p->snap_index != r->snap.index) {
        keel__raft_become_probe(p, r->snap.index + 1); /* clears the pipeline */
        p->state = KEEL__PR_SNAPSHOT;
        p->snap_index = r->snap.index;
        p->snap_acked = 0;
        p->snap_sent = 0;
    }
    if (p->snap_sent)
        return 0;
    size_t off = (size_t)p->snap_acked, n = r->snap.len - off;
    if (n > r->cfg.snapshot_chunk_bytes_max)
        n = r->cfg.snapshot_chunk_bytes_max;
    keel_raft_msg_t m = {
        .type = KEEL_RAFT_MSG_SNAPSHOT,
        .to = p->id,
        .index = r->snap.index,
        .log_term = r->snap.term,
        .ctx = off,
        .data = n ? r->snap.data + off : NULL,
        .data_len = n,
        .last = off + n == r->snap.len,
        .commit = r->commit,
        .conf = &r->snap_conf,
    };
    if (keel__raft_send(r, &m) == 0)
        p->snap_sent = 1;
    return 0;
}

void keel__raft_recv_snapshot_resp(keel_raft_t *r, const keel_raft_msg_t *m)
{
    keel__raft_progress_t *p = keel__raft_progress(r, m->from);
    if (p == NULL)
        return;
    p->recent_active = 1;
    if (p->state != KEEL__PR_SNAPSHOT || m->index != p->snap_index || m->ctx > r->snap.len)
        return;
    p->snap_acked = m->ctx;
    p->snap_sent = m->ctx == r->snap.len; /* all there: wait for the install's answer */
}

/*
 * Follower: install. If our log already holds the snapshot's last entry, the entries
 * behind it are the same (Log Matching) and we only advance commit. Otherwise the
 * whole log is replaced and the snapshot goes out in the next ready. Until the driver
 * reports the snapshot durable (persisted(index, term)), reports about writes issued
 * before it are ignored: the snapshot's write discards them from storage.
 */
static void install(keel_raft_t *r, const keel_raft_conf_t *conf)
{
    keel__raft_snap_t *in = &r->snap_in;
    uint64_t index = in->index, term = in->term;
    if (index <= keel__raft_log_last(&r->log) && keel__raft_log_term(&r->log, index) == term) {
        r->commit = index;
    } else {
        keel__raft_snap_t t = r->snap; /* swap buffers: no copy */
        r->snap = *in;
        *in = t;
        keel__raft_log_reset(&r->log, index, term);
        r->commit = r->applied = r->stable = index;
        r->persist_next = index + 1;
        r->snap_out = 1;
        r->snap_unpersisted = 1;
        r->base_conf = r->snap_conf = *conf;
        keel__raft_conf_set(r, conf, 0);
    }
    in->index = in->term = 0;
    in->len = 0;
    keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_APPEND_RESP, .to = r->leader, .index = index};
    keel__raft_send(r, &resp);
}

int keel__raft_recv_snapshot(keel_raft_t *r, const keel_raft_msg_t *m)
{
    if (m->index <= r->commit) { /* we have all of it already */
        keel_raft_msg_t resp = {
            .type = KEEL_RAFT_MSG_APPEND_RESP, .to = m->from, .index = r->commit};
        return keel__raft_send(r, &resp);
    }
    if (m->index == 0 || m->log_term == 0 || m->log_term > m->term || (m->data_len && !m->data) ||
        m->conf == NULL || keel__raft_conf_check(m->conf) != 0)
        return KEEL_EPROTO;
    keel__raft_snap_t *in = &r->snap_in;
    if (m->ctx == 0) {
        in->index = m->index;
        in->term = m->log_term;
        in->len = 0;
    }
    keel_raft_msg_t resp = {.type = KEEL_RAFT_MSG_SNAPSHOT_RESP, .to = m->from, .index = m->index};
    if (in->index != m->index || in->term != m->log_term || m->ctx != in->len) {
        resp.ctx = in->index == m->index && in->term == m->log_term ? in->len : 0;
        return keel__raft_send(r, &resp); /* out of order: say where to resume */
    }
    if (in->len + m->data_len > r->cfg.snapshot_bytes_max)
        return KEEL_ETOOBIG;
    if (in->len + m->data_len > in->cap) {
        size_t cap = in->cap ? in->cap : 256;
        while (cap < in->len + m->data_len)
            cap *= 2;
        uint8_t *v = realloc(in->data, cap);
        if (v == NULL)
            return KEEL_ENOMEM;
        in->data = v;
        in->cap = cap;
    }
    if (m->data_len)
        memcpy(in->data + in->len, m->data, m->data_len);
    in->len += m->data_len;
    if (!m->last) {
        resp.ctx = in->len;
        return keel__raft_send(r, &resp);
    }
    install(r, m->conf);
    return 0;
}
