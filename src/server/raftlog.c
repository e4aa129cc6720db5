/* raftlog.c - Raft entries and hard state as WAL records; replay with truncation. */
#include "server/raftlog.h"

#include "base/bytes.h"

#include <stdlib.h>
#include <string.h>

#define ENTRY_HEAD_BYTES 24
#define HARDSTATE_BYTES 24

typedef struct last {
    uint64_t index, term;
} last_t;

struct keel_raftlog {
    keel_wal_t *wal;
    /* replay state */
    keel_raft_entry_t *entries;
    size_t n, cap;
    keel_raft_hard_state_t hs;
    int bad_gap;
    uint64_t gap_index;
    /* group commit bookkeeping */
    last_t pending_last, inflight_last;
    keel_buf_t scratch;
};

static void drop_from(keel_raftlog_t *rl, size_t keep)
{
    for (size_t i = keep; i < rl->n; i++)
        free(rl->entries[i].data);
    rl->n = keep;
}

static int replay(void *data, uint8_t type, const uint8_t *p, size_t len, uint64_t lsn)
{
    keel_raftlog_t *rl = data;
    keel_rd_t r;
    keel_rd_init(&r, p, len);
    if (type == KEEL_RAFTLOG_REC_HARDSTATE) {
        rl->hs.term = keel_rd_u64(&r);
        rl->hs.vote = keel_rd_u64(&r);
        rl->hs.commit = keel_rd_u64(&r);
        return r.bad || r.left ? KEEL_ECORRUPT : 0;
    }
    if (type != KEEL_RAFTLOG_REC_ENTRY)
        return KEEL_ECORRUPT;
    keel_raft_entry_t e = {0};
    e.term = keel_rd_u64(&r);
    e.index = keel_rd_u64(&r);
    e.type = keel_rd_u32(&r);
    uint32_t reserved = keel_rd_u32(&r);
    if (r.bad || e.index == 0 || reserved != 0)
        return KEEL_ECORRUPT;
    if (e.index > rl->n + 1) {
        rl->bad_gap = 1;
        rl->gap_index = e.index;
        return KEEL_ECORRUPT;
    }
    drop_from(rl, (size_t)(e.index - 1)); /* a later write of the same index wins */
    if (rl->n == rl->cap) {
        size_t ncap = rl->cap ? rl->cap * 2 : 1024;
        keel_raft_entry_t *ne = realloc(rl->entries, ncap * sizeof(*ne));
        if (ne == NULL)
            return KEEL_ENOMEM;
        rl->entries = ne;
        rl->cap = ncap;
    }
    e.len = (uint32_t)r.left;
    if (e.len) {
        e.data = malloc(e.len);
        if (e.data == NULL)
            return KEEL_ENOMEM;
        memcpy(e.data, r.p, e.len);
    }
    rl->entries[rl->n++] = e;
    return 0;
}

int keel_raftlog_open(keel_raftlog_t **out, const char *dir, const keel_wal_config_t *cfg,
                      keel_raft_restore_t *restore, keel_errmsg_t *msg)
{
    keel_raftlog_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return KEEL_ENOMEM;
    keel_buf_init(&rl->scratch, 0);
    int rc = keel_wal_open(&rl->wal, dir, cfg, replay, rl, msg);
    if (rc != 0) {
        if (rl->bad_gap)
            keel_errf(msg, KEEL_ECORRUPT, "raft log in %s: entry %llu leaves a gap", dir,
                      (unsigned long long)rl->gap_index);
        keel_raftlog_close(rl);
        return rc;
    }
    if (rl->hs.commit > rl->n) {
        rc = keel_errf(msg, KEEL_ECORRUPT, "raft log in %s: commit %llu beyond last entry %zu", dir,
                       (unsigned long long)rl->hs.commit, rl->n);
        keel_raftlog_close(rl);
        return rc;
    }
    memset(restore, 0, sizeof(*restore));
    restore->hard_state = rl->hs;
    restore->entries = rl->entries;
    restore->entries_n = rl->n;
    *out = rl;
    return 0;
}

void keel_raftlog_drop_restore(keel_raftlog_t *rl)
{
    drop_from(rl, 0);
    free(rl->entries);
    rl->entries = NULL;
    rl->cap = 0;
}

void keel_raftlog_close(keel_raftlog_t *rl)
{
    if (rl == NULL)
        return;
    keel_raftlog_drop_restore(rl);
    keel_wal_close(rl->wal);
    keel_buf_free(&rl->scratch);
    free(rl);
}

int keel_raftlog_append(keel_raftlog_t *rl, const keel_raft_hard_state_t *hs,
                        const keel_raft_entry_t *entries, size_t n)
{
    if (hs != NULL) {
        uint8_t p[HARDSTATE_BYTES];
        keel_put_u64(p, hs->term);
        keel_put_u64(p + 8, hs->vote);
        keel_put_u64(p + 16, hs->commit);
        int rc = keel_wal_append(rl->wal, KEEL_RAFTLOG_REC_HARDSTATE, p, sizeof(p), NULL);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const keel_raft_entry_t *e = &entries[i];
        keel_buf_reset(&rl->scratch);
        int rc = keel_buf_reserve(&rl->scratch, ENTRY_HEAD_BYTES + e->len);
        if (rc != 0)
            return rc;
        uint8_t *p = keel_buf_wptr(&rl->scratch);
        keel_put_u64(p, e->term);
        keel_put_u64(p + 8, e->index);
        keel_put_u32(p + 16, e->type);
        keel_put_u32(p + 20, 0);
        if (e->len)
            memcpy(p + ENTRY_HEAD_BYTES, e->data, e->len);
        rc = keel_wal_append(rl->wal, KEEL_RAFTLOG_REC_ENTRY, p, ENTRY_HEAD_BYTES + e->len, NULL);
        if (rc != 0)
            return rc;
        rl->pending_last = (last_t){e->index, e->term};
    }
    return 0;
}

int keel_raftlog_has_pending(const keel_raftlog_t *rl)
{
    return keel_wal_pending_bytes(rl->wal) > 0;
}

int keel_raftlog_sync_start(keel_raftlog_t *rl, int *started)
{
    int rc = keel_wal_sync_start(rl->wal, started);
    if (rc == 0 && *started) {
        rl->inflight_last = rl->pending_last;
        rl->pending_last = (last_t){0, 0};
    }
    return rc;
}

void keel_raftlog_sync_run(keel_raftlog_t *rl)
{
    keel_wal_sync_run(rl->wal);
}

int keel_raftlog_sync_finish(keel_raftlog_t *rl, uint64_t *index, uint64_t *term,
                             keel_errmsg_t *msg)
{
    int rc = keel_wal_sync_finish(rl->wal, msg);
    *index = rc == 0 ? rl->inflight_last.index : 0;
    *term = rc == 0 ? rl->inflight_last.term : 0;
    rl->inflight_last = (last_t){0, 0};
    return rc;
}

int keel_raftlog_sync(keel_raftlog_t *rl, uint64_t *index, uint64_t *term, keel_errmsg_t *msg)
{
    int started;
    *index = *term = 0;
    int rc = keel_raftlog_sync_start(rl, &started);
    if (rc != 0 || !started)
        return rc;
    keel_raftlog_sync_run(rl);
    return keel_raftlog_sync_finish(rl, index, term, msg);
}

keel_wal_t *keel_raftlog_wal(keel_raftlog_t *rl)
{
    return rl->wal;
}
