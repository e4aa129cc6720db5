/* raftlog.c - Raft entries and hard state as WAL records; replay with truncation. */
#include "server/raftlog.h"

#include "base/bytes.h"
#include "base/vec.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_HEAD_BYTES 24
#define HARDSTATE_BYTES 24

typedef struct last {
    uint64_t index, term;
} last_t;

/* A submitted group holding entries: its gen and its last entry. */
typedef struct sub {
    uint64_t gen;
    last_t last;
} sub_t;

/* Highest entry index written into each segment, to know when a segment may go. */
typedef struct seg_max {
    uint64_t seq, max_index;
} seg_max_t;

struct keel_raftlog {
    keel_wal_t *wal;
    /* replay state */
    uint64_t base;      /* entries[0] is index base + 1 */
    uint64_t lsn_floor; /* ENTRY records before this position are skipped */
    keel_raft_entry_t *entries;
    size_t n, cap;
    uint64_t hs_seq; /* segment of the newest HARDSTATE record */
    seg_max_t *segs; /* ascending seq */
    size_t segs_n, segs_cap;
    keel_raft_hard_state_t hs;
    int bad_gap;
    uint64_t gap_index;
    /* group commit bookkeeping: the last entry of each submitted group holding entries */
    last_t pending_last;
    sub_t *subs;
    size_t subs_head, subs_n, subs_cap; /* subs[subs_head .. subs_n) await durability */
};

static void drop_from(keel_raftlog_t *rl, size_t keep)
{
    for (size_t i = keep; i < rl->n; i++)
        free(rl->entries[i].data);
    rl->n = keep;
}

static int note_segment(keel_raftlog_t *rl, uint64_t lsn, uint64_t index)
{
    uint64_t seq = lsn >> 32;
    if (rl->segs_n > 0 && rl->segs[rl->segs_n - 1].seq == seq) {
        seg_max_t *sm = &rl->segs[rl->segs_n - 1];
        sm->max_index = index > sm->max_index ? index : sm->max_index;
        return 0;
    }
    int rc = keel_vec_grow(&rl->segs, &rl->segs_cap, rl->segs_n + 1, sizeof(*rl->segs), 16);
    if (rc != 0)
        return rc;
    rl->segs[rl->segs_n++] = (seg_max_t){seq, index};
    return 0;
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
        rl->hs_seq = lsn >> 32;
        if (note_segment(rl, lsn, 0) != 0)
            return KEEL_ENOMEM;
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
    if (note_segment(rl, lsn, e.index) != 0)
        return KEEL_ENOMEM;
    if (lsn < rl->lsn_floor || e.index <= rl->base)
        return 0; /* covered by the snapshot this node starts from */
    if (e.index > rl->base + rl->n + 1) {
        rl->bad_gap = 1;
        rl->gap_index = e.index;
        return KEEL_ECORRUPT;
    }
    drop_from(rl, (size_t)(e.index - rl->base - 1)); /* a later write of an index wins */
    if (keel_vec_grow(&rl->entries, &rl->cap, rl->n + 1, sizeof(*rl->entries), 1024) != 0)
        return KEEL_ENOMEM;
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
                      uint64_t snap_index, uint64_t lsn_floor, keel_raft_restore_t *restore,
                      keel_errmsg_t *msg)
{
    keel_raftlog_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return KEEL_ENOMEM;
    rl->base = snap_index;
    rl->lsn_floor = lsn_floor;
    int rc = keel_wal_open(&rl->wal, dir, cfg, replay, rl, msg);
    if (rc != 0) {
        if (rl->bad_gap)
            keel_errf(msg, KEEL_ECORRUPT, "raft log in %s: entry %llu leaves a gap", dir,
                      (unsigned long long)rl->gap_index);
        keel_raftlog_close(rl);
        return rc;
    }
    /* A commit index beyond the stored log is possible after a torn tail (entries this
     * node never acknowledged); the Raft core lowers it on restore. */
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
    free(rl->segs);
    free(rl->subs);
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
        uint64_t lsn;
        int rc = keel_wal_append(rl->wal, KEEL_RAFTLOG_REC_HARDSTATE, p, sizeof(p), &lsn);
        if (rc == 0)
            rc = note_segment(rl, lsn, 0);
        if (rc != 0)
            return rc;
        rl->hs_seq = lsn >> 32;
    }
    for (size_t i = 0; i < n; i++) {
        const keel_raft_entry_t *e = &entries[i];
        /* The head is framed here and the data copied once, into the WAL's record (no
           copy of up to a 63 MiB entry into a buffer of ours first). */
        uint8_t head[ENTRY_HEAD_BYTES];
        keel_put_u64(head, e->term);
        keel_put_u64(head + 8, e->index);
        keel_put_u32(head + 16, e->type);
        keel_put_u32(head + 20, 0);
        uint64_t lsn;
        int rc = keel_wal_append2(rl->wal, KEEL_RAFTLOG_REC_ENTRY, head, sizeof(head), e->data,
                                  e->len, &lsn);
        if (rc == 0)
            rc = note_segment(rl, lsn, e->index);
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

/* Room for one more submitted group in subs. */
static int subs_reserve(keel_raftlog_t *rl)
{
    if (rl->subs_head > 0) { /* slide the groups still waiting down */
        memmove(rl->subs, rl->subs + rl->subs_head,
                (rl->subs_n - rl->subs_head) * sizeof(*rl->subs));
        rl->subs_n -= rl->subs_head;
        rl->subs_head = 0;
    }
    return keel_vec_grow(&rl->subs, &rl->subs_cap, rl->subs_n + 1, sizeof(*rl->subs), 16);
}

int keel_raftlog_submit(keel_raftlog_t *rl, uint64_t *gen)
{
    int has_entries = rl->pending_last.index != 0;
    int rc = has_entries ? subs_reserve(rl) : 0; /* first, so a failure submits nothing */
    if (rc == 0)
        rc = keel_wal_submit(rl->wal, gen);
    if (rc != 0 || *gen == 0 || !has_entries)
        return rc;
    assert(rl->subs_n < rl->subs_cap);
    rl->subs[rl->subs_n].gen = *gen;
    rl->subs[rl->subs_n].last = rl->pending_last;
    rl->subs_n++;
    rl->pending_last = (last_t){0, 0};
    return 0;
}

int keel_raftlog_durable(keel_raftlog_t *rl, uint64_t *gen, uint64_t *index, uint64_t *term,
                         keel_errmsg_t *msg)
{
    *index = *term = 0;
    int rc = keel_wal_durable(rl->wal, gen, msg);
    if (rc != 0)
        return rc;
    while (rl->subs_head < rl->subs_n && rl->subs[rl->subs_head].gen <= *gen) {
        *index = rl->subs[rl->subs_head].last.index;
        *term = rl->subs[rl->subs_head].last.term;
        rl->subs_head++;
    }
    return 0;
}

int keel_raftlog_sync(keel_raftlog_t *rl, uint64_t *index, uint64_t *term, keel_errmsg_t *msg)
{
    uint64_t gen;
    *index = *term = 0;
    int rc = keel_raftlog_submit(rl, &gen);
    if (rc == 0 && gen != 0)
        rc = keel_wal_wait(rl->wal, gen, msg);
    if (rc == 0 && gen != 0)
        rc = keel_raftlog_durable(rl, &gen, index, term, msg);
    return rc;
}

keel_wal_t *keel_raftlog_wal(keel_raftlog_t *rl)
{
    return rl->wal;
}

uint64_t keel_raftlog_next_lsn(const keel_raftlog_t *rl)
{
    return keel_wal_next_lsn(rl->wal);
}

int keel_raftlog_release(keel_raftlog_t *rl, uint64_t snap_index, keel_errmsg_t *msg)
{
    /* Segments go in order while every entry in them is covered by the snapshot and the
     * newest hard state is not among them. The newest segment always stays. */
    size_t k = 0;
    while (k + 1 < rl->segs_n && rl->segs[k].max_index <= snap_index &&
           rl->segs[k].seq < rl->hs_seq)
        k++;
    if (k == 0)
        return 0;
    int rc = keel_wal_release_before(rl->wal, rl->segs[k].seq << 32, msg);
    if (rc != 0)
        return rc;
    memmove(rl->segs, rl->segs + k, (rl->segs_n - k) * sizeof(*rl->segs));
    rl->segs_n -= k;
    return 0;
}
