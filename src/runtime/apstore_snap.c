/* apstore_snap.c - compaction of the AP replica store's log (see apstore.h, "Compaction"): the
   snapshot of the live state, written in one go or by a thread while the caller goes on. */
#include "runtime/apstore_int.h"

#include "base/buf.h"
#include "base/bytes.h"
#include "core/apval.h"
#include "runtime/snapfile.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- compaction (apstore.h) ------------------------------------------------------------------ */

typedef struct snap_out {
    keel_apstore_job_t *job; /* whose thread writes the chunks (compact_start) */
    keel_buf_t buf;
    uint64_t bytes; /* handed on so far */
} snap_out_t;

static int job_push(keel_apstore_job_t *j, keel_buf_t *b, keel_errmsg_t *msg);

/* Hands what o->buf holds to the job's thread (o->buf: an empty one back). */
static int snap_flush(snap_out_t *o, keel_errmsg_t *msg)
{
    size_t n = o->buf.len;
    if (n == 0)
        return 0;
    int rc = job_push(o->job, &o->buf, msg);
    o->bytes += n;
    keel_buf_reset(&o->buf);
    return rc;
}

/* Starts a record in o->buf (its length patched by rec_end) and returns where it starts. */
static size_t rec_begin(snap_out_t *o, uint8_t type, int *rc)
{
    size_t at = o->buf.len;
    uint8_t head[SNAP_REC_HEAD_BYTES] = {type};
    if (*rc == 0)
        *rc = keel_buf_append(&o->buf, head, sizeof(head));
    return at;
}

/* Ends the record started at `at` and writes the buffer out once it is large. */
static void rec_end(snap_out_t *o, size_t at, int *rc, keel_errmsg_t *msg)
{
    if (*rc != 0)
        return;
    keel_put_u32(o->buf.data + at + 1, (uint32_t)(o->buf.len - at - SNAP_REC_HEAD_BYTES));
    if (o->buf.len >= SNAP_WRITE_BYTES)
        *rc = snap_flush(o, msg);
}

/* The snapshot's records (apstore.h, "Compaction"): what replay needs to rebuild the state. */
static int snap_records(keel_apstore_t *s, snap_out_t *o, keel_errmsg_t *msg)
{
    int rc = 0;
    uint8_t b[1 + 8 * KEEL_APSTORE_RING_IDS_MAX];
    size_t at = rec_begin(o, REC_INCARNATION, &rc);
    keel_put_u64(b, s->incarnation);
    if (rc == 0)
        rc = keel_buf_append(&o->buf, b, 8);
    rec_end(o, at, &rc, msg);
    if (s->ring_n > 0) {
        at = rec_begin(o, REC_MOVED_RING, &rc);
        b[0] = (uint8_t)s->ring_n;
        for (uint32_t i = 0; i < s->ring_n; i++)
            keel_put_u64(b + 1 + 8 * i, s->ring[i]);
        if (rc == 0)
            rc = keel_buf_append(&o->buf, b, 1 + 8 * s->ring_n);
        rec_end(o, at, &rc, msg);
    }
    size_t pos = 0, kl;
    const uint8_t *k;
    void *v;
    while (rc == 0 && keel_map_next(&s->map, &pos, &k, &kl, &v)) { /* states before hints */
        at = rec_begin(o, REC_STATE, &rc);
        keel_put_u16(b, (uint16_t)kl);
        if (rc == 0 && (rc = keel_buf_append(&o->buf, b, 2)) == 0 &&
            (rc = keel_buf_append(&o->buf, k, kl)) == 0)
            rc = keel_apval_encode(&((entry_t *)v)->v, &o->buf);
        rec_end(o, at, &rc, msg);
    }
    pos = 0;
    while (rc == 0 && keel_map_next(&s->hints, &pos, &k, &kl, &v)) { /* u64 home | u16 | key */
        at = rec_begin(o, REC_HINT, &rc);
        memcpy(b, k, 8);
        keel_put_u16(b + 8, (uint16_t)(kl - 8));
        if (rc == 0 && (rc = keel_buf_append(&o->buf, b, 10)) == 0)
            rc = keel_buf_append(&o->buf, k + 8, kl - 8);
        rec_end(o, at, &rc, msg);
    }
    pos = 0;
    while (rc == 0 && keel_map_next(&s->dropped, &pos, &k, &kl, &v)) { /* after the incarnation */
        at = rec_begin(o, REC_DROPPED_OWN, &rc);
        if (rc == 0)
            rc = keel_buf_append(&o->buf, k, 8);
        rec_end(o, at, &rc, msg);
    }
    if (rc == 0 && s->dropped_all) {
        uint8_t all = DROPPED_ALL_MARK;
        at = rec_begin(o, REC_DROPPED_OWN, &rc);
        if (rc == 0)
            rc = keel_buf_append(&o->buf, &all, 1);
        rec_end(o, at, &rc, msg);
    }
    if (rc == 0)
        rc = snap_flush(o, msg);
    return rc;
}

/* The part of a compaction before the snapshot is written: the log synced up to lsn (everything
 * before the snapshot's LSN is durable first: a torn tail after a crash then lies past it, so the
 * log that new records go to after a restart starts past it too). 1: a snapshot is due at *lsn;
 * 0: nothing logged since the last one; else the error. */
static int compact_prepare(keel_apstore_t *s, uint64_t *lsn, keel_errmsg_t *msg)
{
    int rc = keel__aps_failed(s, msg);
    if (rc != 0)
        return rc;
    if (s->job)
        return keel_errf(msg, KEEL_EBUSY, "a compaction is under way");
    if (keel_wal_pending_bytes(s->wal) > 0) {
        s->syncs++;
        if ((rc = keel_wal_sync(s->wal, msg)) != 0)
            return rc;
    }
    *lsn = keel_wal_next_lsn(s->wal);
    if (*lsn == s->snap_lsn)
        return 0;
    assert(*lsn > s->snap_lsn);
    return 1;
}

/* The snapshot of lsn, `bytes` long with its header, is durable: it is in force, and what it
 * replaces goes, the log first (a crash in between leaves an older snapshot that a restart does
 * not load, the new one verifying, or, if it must fall back to it, refuses). logged_since: the
 * log bytes appended after lsn (records logged while the file was written by a thread). */
static int compact_finish(keel_apstore_t *s, uint64_t lsn, uint64_t bytes, uint64_t logged_since,
                          keel_errmsg_t *msg)
{
    s->snap_lsn = lsn;
    s->log_bytes = bytes + logged_since;
    s->compactions++;
    int rc = keel_wal_release_before(s->wal, lsn, msg);
    if (rc == 0)
        rc = keel_snap_prune_below(s->dir, lsn, msg);
    return rc;
}

/* ---- compaction with the file written by a thread ------------------------------------------ */

/*
 * The loop encodes the records into chunks of SNAP_WRITE_BYTES and hands each to the job's thread,
 * which writes it to the snapshot's .tmp file while the loop encodes the next; the thread then
 * fsyncs and renames it. At most JOB_CHUNKS chunks wait: past that the loop waits for the disk,
 * so the memory stays bounded whatever the state's size, and the loop's share is the encoding
 * (plus any wait for a disk slower than it), not the write and the fsync.
 */
#define JOB_CHUNKS 4

struct keel_apstore_job {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    keel_snapw_t *w;
    keel_buf_t chunk[JOB_CHUNKS]; /* full ones: [head, head + n) mod JOB_CHUNKS */
    int head, n;
    int ended; /* the loop handed its last chunk (or gave up: abort) */
    int abort; /* the loop failed: the .tmp file is removed, nothing committed */
    int rc;    /* the thread's: 0, or the write's or commit's error */
    keel_errmsg_t msg;
    atomic_int done;
    uint64_t lsn, log_bytes_at_start, bytes;
};

static void *job_main(void *arg)
{
    keel_apstore_job_t *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (j->n == 0 && !j->ended)
            pthread_cond_wait(&j->cv, &j->mu);
        if (j->n == 0)
            break;
        keel_buf_t *c = &j->chunk[j->head];
        pthread_mutex_unlock(&j->mu); /* the loop fills other slots meanwhile */
        int rc = j->rc == 0 ? keel_snapw_write(j->w, c->data, c->len, &j->msg) : 0;
        pthread_mutex_lock(&j->mu);
        if (j->rc == 0)
            j->rc = rc;
        keel_buf_reset(c);
        j->head = (j->head + 1) % JOB_CHUNKS;
        j->n--;
        pthread_cond_broadcast(&j->cv);
    }
    int commit = j->rc == 0 && !j->abort;
    pthread_mutex_unlock(&j->mu);
    if (commit)
        j->rc = keel_snapw_commit(j->w, &j->msg); /* fsync, rename, fsync of the directory */
    else
        keel_snapw_abort(j->w); /* the .tmp file is removed */
    j->w = NULL;
    atomic_store(&j->done, 1);
    return NULL;
}

/* The loop hands the full buffer b to the thread and gets an empty one back (waiting while
 * JOB_CHUNKS are queued). The thread's error, if it failed. */
static int job_push(keel_apstore_job_t *j, keel_buf_t *b, keel_errmsg_t *msg)
{
    pthread_mutex_lock(&j->mu);
    while (j->n == JOB_CHUNKS && j->rc == 0)
        pthread_cond_wait(&j->cv, &j->mu);
    int rc = j->rc;
    if (rc == 0) {
        keel_buf_t *slot = &j->chunk[(j->head + j->n) % JOB_CHUNKS], empty = *slot;
        *slot = *b;
        *b = empty; /* reset by the thread: its capacity is reused */
        j->n++;
        pthread_cond_broadcast(&j->cv);
    } else if (msg) {
        *msg = j->msg;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

/* The loop is done with the job: abort (nothing committed) or let the thread commit. */
static void job_end(keel_apstore_job_t *j, int abort)
{
    pthread_mutex_lock(&j->mu);
    j->ended = 1;
    j->abort = abort;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void job_free(keel_apstore_job_t *j)
{
    for (int i = 0; i < JOB_CHUNKS; i++)
        keel_buf_free(&j->chunk[i]);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

void keel__aps_job_join_free(keel_apstore_job_t *j)
{
    pthread_join(j->thread, NULL);
    job_free(j);
}

int keel_apstore_compact_start(keel_apstore_t *s, keel_errmsg_t *msg)
{
    uint64_t lsn = 0;
    int rc = compact_prepare(s, &lsn, msg);
    if (rc <= 0)
        return rc;
    keel_apstore_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return keel_errf(msg, KEEL_ENOMEM, "no memory for a compaction");
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    for (int i = 0; i < JOB_CHUNKS; i++)
        keel_buf_init(&j->chunk[i], 0);
    j->lsn = lsn;
    j->log_bytes_at_start = s->log_bytes;
    snap_out_t o = {.job = j};
    keel_buf_init(&o.buf, 0);
    rc = keel_buf_reserve(&o.buf, SNAP_WRITE_BYTES + 4096u);
    if (rc == 0)
        rc = keel_snapw_open(&j->w, s->dir, lsn, 0, msg);
    if (rc == 0 && pthread_create(&j->thread, NULL, job_main, j) != 0) {
        keel_snapw_abort(j->w);
        rc = keel_errf(msg, KEEL_EIO, "no thread for a compaction");
    }
    if (rc != 0) {
        keel_buf_free(&o.buf);
        job_free(j);
        return rc;
    }
    rc = snap_records(s, &o, msg); /* the last chunk too */
    keel_buf_free(&o.buf);
    j->bytes = o.bytes;
    job_end(j, rc != 0);
    if (rc != 0) { /* the thread removes the .tmp file */
        keel__aps_job_join_free(j);
        return rc;
    }
    s->job = j;
    return 1;
}

/* Waits for the job's thread, then puts its snapshot in force (or returns its error). */
static int compact_end(keel_apstore_t *s, keel_errmsg_t *msg)
{
    keel_apstore_job_t *j = s->job;
    pthread_join(j->thread, NULL);
    s->job = NULL;
    int rc = j->rc;
    if (rc != 0) /* the snapshot in use and the whole log since it are still in force */
        *msg = j->msg;
    else
        rc = compact_finish(s, j->lsn, KEEL_SNAP_HEADER_BYTES + j->bytes,
                            s->log_bytes - j->log_bytes_at_start, msg);
    job_free(j);
    return rc;
}

int keel_apstore_compact_poll(keel_apstore_t *s, int *rc, keel_errmsg_t *msg)
{
    if (!s->job || !atomic_load(&s->job->done))
        return 0;
    *rc = compact_end(s, msg);
    return 1;
}

/* In one go: the same job, waited for (the caller's thread encodes, the job's writes). */
int keel_apstore_compact(keel_apstore_t *s, keel_errmsg_t *msg)
{
    int rc = keel_apstore_compact_start(s, msg);
    return rc <= 0 ? rc : compact_end(s, msg);
}

int keel_apstore_compacting(const keel_apstore_t *s)
{
    return s->job != NULL;
}

void keel_apstore_set_compaction(keel_apstore_t *s, uint64_t log_bytes_min, uint32_t ratio_pct)
{
    s->compact_log_bytes_min = log_bytes_min;
    s->compact_ratio_pct = ratio_pct < KEEL_APSTORE_COMPACT_RATIO_PCT_MIN
                               ? KEEL_APSTORE_COMPACT_RATIO_PCT_MIN
                               : ratio_pct;
}

uint64_t keel_apstore_live_bytes(const keel_apstore_t *s)
{
    uint64_t fixed = KEEL_SNAP_HEADER_BYTES + SNAP_REC_BYTES(8); /* header, incarnation */
    if (s->ring_n > 0)
        fixed += SNAP_REC_BYTES(1 + 8 * s->ring_n);
    return fixed + s->live_bytes;
}

int keel_apstore_compact_due(const keel_apstore_t *s)
{
    return !s->job && s->log_bytes >= s->compact_log_bytes_min &&
           s->log_bytes * 100u > keel_apstore_live_bytes(s) * s->compact_ratio_pct;
}

uint64_t keel_apstore_log_bytes(const keel_apstore_t *s)
{
    return s->log_bytes;
}

uint64_t keel_apstore_compactions(const keel_apstore_t *s)
{
    return s->compactions;
}

uint64_t keel_apstore_snapshot_lsn(const keel_apstore_t *s)
{
    return s->snap_lsn;
}
