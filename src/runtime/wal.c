/* wal.c - segmented write-ahead log with CRC32C records, recovery and group commit. */
#define _GNU_SOURCE /* sync_file_range */
#include "runtime/wal.h"

#include "base/bytes.h"

#include "base/crc32c.h"
#include "base/log.h"
#include "base/vec.h"
#include "runtime/clock.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "KEELWAL1"
#define VERSION 1u
#define PATH_BYTES_MAX 4096

/* A run of bytes of one group that goes to one segment at one offset. */
typedef struct chunk {
    uint64_t seq;
    size_t off;       /* offset in the segment */
    size_t buf_start; /* where the bytes start in the group's buffer */
    size_t len;
} chunk_t;

typedef struct group {
    keel_buf_t buf;
    chunk_t *chunks;
    size_t n_chunks, cap_chunks;
} group_t;

struct keel_wal {
    char dir[PATH_BYTES_MAX];
    keel_wal_config_t cfg;
    int dir_fd;
    /* Owner thread: where the next appended record goes. */
    uint64_t next_seq;
    size_t next_off;
    uint64_t first_seq;  /* oldest segment not released (older ones are gone, or going) */
    uint64_t submit_gen; /* groups handed over so far */
    group_t groups[3];   /* rotate: pending -> handed -> writing -> pending... */
    group_t *pending;    /* owner: appends land here */
    /* Syncing side: the sync thread while it runs, else the thread in wait(). */
    group_t *writing;
    int fd;
    uint64_t fd_seq;
    size_t zero_end; /* in fd_seq: zeros written up to here (zero-ahead, wal.h) */
    /* Under mu. */
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* handed became non-empty, or stop */
    pthread_cond_t done_cv; /* durable_gen moved, or failed */
    group_t *handed;        /* submitted, not yet taken by the syncing side */
    uint64_t handed_gen;    /* newest gen merged into handed */
    uint64_t durable_gen;
    uint64_t written_seq; /* segment the syncing side last wrote: older ones are done */
    int syncing;          /* the syncing side holds a group (writing) */
    int failed;
    char sync_err[KEEL_ERRMSG_BYTES_MAX];
    uint64_t syncs, segments_cut;
    uint32_t times_us[KEEL_WAL_SYNC_TIMES_MAX];
    size_t times_n;
    int stop;
    int thread_on;
    pthread_t thread;
    /* Released segments (release_before) are unlinked by the janitor thread while the sync
       thread runs: dropping a 64 MiB segment's page cache takes about 15 ms, a snapshot
       releases several, and the owner's loop must not wait for that. Under mu. */
    pthread_cond_t janitor_cv; /* unlink_to moved, or stop */
    pthread_t janitor;
    uint64_t gone_seq;  /* segments below it are unlinked */
    uint64_t unlink_to; /* segments below it may be */
    uint64_t failed_to; /* unlink_to when the janitor last failed: it waits for more */
    int janitor_on;
    int unlink_failed; /* reported (and cleared) by the next release_before */
    char unlink_err[KEEL_ERRMSG_BYTES_MAX];
    keel_wal_notify_fn notify;
    void *notify_data;
    keel_wal_stats_t stats; /* owner: appended; the rest is filled from above */
};

static inline size_t pad8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

void keel_wal_config_default(keel_wal_config_t *cfg)
{
    cfg->segment_bytes = KEEL_WAL_SEGMENT_BYTES_DEFAULT;
    cfg->record_bytes_max = KEEL_WAL_RECORD_BYTES_MAX;
    cfg->preallocate = 1;
    cfg->zero_ahead_bytes = KEEL_WAL_ZERO_AHEAD_BYTES_DEFAULT;
    cfg->sync_enabled = 1;
}

int keel_wal_config_validate(const keel_wal_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->segment_bytes < KEEL_WAL_SEGMENT_BYTES_MIN || cfg->segment_bytes > UINT32_MAX)
        return keel_errf(msg, KEEL_EINVAL, "wal: segment_bytes %zu outside [%u, 4 GiB)",
                         cfg->segment_bytes, KEEL_WAL_SEGMENT_BYTES_MIN);
    if (cfg->record_bytes_max == 0 || cfg->record_bytes_max > KEEL_WAL_RECORD_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "wal: record_bytes_max %zu outside [1, %u]",
                         cfg->record_bytes_max, KEEL_WAL_RECORD_BYTES_MAX);
    if (pad8(KEEL_WAL_RECORD_HEADER_BYTES + cfg->record_bytes_max) >
        cfg->segment_bytes - KEEL_WAL_HEADER_BYTES)
        return keel_errf(msg, KEEL_EINVAL, "wal: record_bytes_max %zu does not fit a segment",
                         cfg->record_bytes_max);
    return 0;
}

static void seg_path(const keel_wal_t *w, uint64_t seq, char *out, size_t cap)
{
    snprintf(out, cap, "%s/wal-%016" PRIx64 ".log", w->dir, seq);
}

static const char *seg_name(uint64_t seq, char *out, size_t cap)
{
    snprintf(out, cap, "wal-%016" PRIx64 ".log", seq);
    return out;
}

static int io_err(keel_errmsg_t *msg, const char *what, const char *path)
{
    return keel_errf(msg, KEEL_EIO, "wal: %s %s: %s", what, path, strerror(errno));
}

/* ---- segment creation (sync side, or open) --------------------------------- */

static int create_segment(keel_wal_t *w, uint64_t seq, int *fd_out, keel_errmsg_t *msg)
{
    char path[PATH_BYTES_MAX + 32];
    seg_path(w, seq, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return io_err(msg, "create", path);
    if (w->cfg.preallocate) {
        int prc = posix_fallocate(fd, 0, (off_t)w->cfg.segment_bytes);
        if (prc != 0 && prc != EOPNOTSUPP && prc != EINVAL) {
            errno = prc;
            goto fail;
        }
    }
    uint8_t hdr[KEEL_WAL_HEADER_BYTES] = {0};
    memcpy(hdr, MAGIC, 8);
    keel_put_u32(hdr + 8, VERSION);
    keel_put_u64(hdr + 16, seq);
    keel_put_u32(hdr + 28, keel_crc32c(0, hdr, 28));
    if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
        goto fail;
    if (w->cfg.sync_enabled && (fdatasync(fd) != 0 || fsync(w->dir_fd) != 0))
        goto fail;
    *fd_out = fd;
    return 0;
fail:
    io_err(msg, "create", path);
    close(fd);
    unlink(path);
    return KEEL_EIO;
}

/* ---- appending (owner thread) ---------------------------------------------- */

static int group_add_chunk(group_t *g, uint64_t seq, size_t off)
{
    if (g->n_chunks > 0) {
        chunk_t *last = &g->chunks[g->n_chunks - 1];
        if (last->seq == seq && last->off + last->len == off)
            return 0;
    }
    if (g->n_chunks == g->cap_chunks) {
        size_t ncap = g->cap_chunks ? g->cap_chunks * 2 : 4;
        chunk_t *nc = realloc(g->chunks, ncap * sizeof(*nc));
        if (nc == NULL)
            return KEEL_ENOMEM;
        g->chunks = nc;
        g->cap_chunks = ncap;
    }
    g->chunks[g->n_chunks++] = (chunk_t){seq, off, g->buf.len, 0};
    return 0;
}

int keel_wal_append(keel_wal_t *w, uint8_t type, const void *payload, size_t len, uint64_t *lsn_out)
{
    return keel_wal_append2(w, type, payload, len, NULL, 0, lsn_out);
}

int keel_wal_append2(keel_wal_t *w, uint8_t type, const void *head, size_t head_len,
                     const void *tail, size_t tail_len, uint64_t *lsn_out)
{
    size_t len = head_len + tail_len, body = 1 + len;
    if (body > w->cfg.record_bytes_max)
        return KEEL_ETOOBIG;
    size_t rec = pad8(KEEL_WAL_RECORD_HEADER_BYTES + body);
    uint64_t seq = w->next_seq;
    size_t off = w->next_off;
    if (off + rec > w->cfg.segment_bytes) { /* cut: the record starts the next segment */
        seq++;
        off = KEEL_WAL_HEADER_BYTES;
    }
    group_t *g = w->pending;
    size_t mark_len = g->buf.len, mark_chunks = g->n_chunks;
    int rc = group_add_chunk(g, seq, off);
    if (rc == 0)
        rc = keel_buf_reserve(&g->buf, rec);
    if (rc != 0) {
        g->buf.len = mark_len;
        g->n_chunks = mark_chunks;
        return rc;
    }
    uint8_t *p = keel_buf_wptr(&g->buf);
    p[8] = type;
    if (head_len)
        memcpy(p + 9, head, head_len);
    if (tail_len)
        memcpy(p + 9 + head_len, tail, tail_len);
    memset(p + 8 + body, 0, rec - 8 - body);
    keel_put_u32(p, (uint32_t)body);
    keel_put_u32(p + 4, keel_crc32c(0, p + 8, body));
    keel_buf_commit(&g->buf, rec);
    g->chunks[g->n_chunks - 1].len += rec;
    if (lsn_out)
        *lsn_out = (seq << 32) | off;
    w->next_seq = seq;
    w->next_off = off + rec;
    w->stats.records_appended++;
    w->stats.bytes_appended += rec;
    return 0;
}

uint64_t keel_wal_next_lsn(const keel_wal_t *w)
{
    return (w->next_seq << 32) | w->next_off;
}

size_t keel_wal_pending_bytes(const keel_wal_t *w)
{
    return w->pending->buf.len;
}

/* ---- syncing ---------------------------------------------------------------- */

static void group_reset(group_t *g)
{
    keel_buf_reset(&g->buf);
    g->n_chunks = 0;
}

/* Appends src's records after dst's (a turn handed over while the sync thread was busy). */
static int group_merge(group_t *dst, const group_t *src)
{
    size_t base = dst->buf.len, mark_chunks = dst->n_chunks;
    int rc = keel_buf_reserve(&dst->buf, src->buf.len);
    for (size_t i = 0; rc == 0 && i < src->n_chunks; i++) {
        const chunk_t *c = &src->chunks[i];
        size_t before = dst->n_chunks;
        rc = group_add_chunk(dst, c->seq, c->off);
        if (rc != 0)
            break;
        chunk_t *d = &dst->chunks[dst->n_chunks - 1];
        if (dst->n_chunks > before) /* a new run: its bytes start where src's do, shifted */
            d->buf_start = base + c->buf_start;
        d->len += c->len;
    }
    if (rc != 0) {
        dst->n_chunks = mark_chunks;
        return rc;
    }
    memcpy(keel_buf_wptr(&dst->buf), src->buf.data, src->buf.len);
    keel_buf_commit(&dst->buf, src->buf.len);
    assert(dst->buf.len == base + src->buf.len);
    return 0;
}

int keel_wal_submit(keel_wal_t *w, uint64_t *gen)
{
    *gen = 0;
    if (w->pending->buf.len == 0)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (w->failed) {
        rc = KEEL_EIO;
    } else if (w->handed->buf.len == 0) { /* the common case: a swap, no copy */
        group_t *t = w->handed;
        w->handed = w->pending;
        w->pending = t;
    } else {
        rc = group_merge(w->handed, w->pending);
        if (rc == 0)
            group_reset(w->pending);
    }
    if (rc == 0) {
        *gen = w->handed_gen = ++w->submit_gen;
        pthread_cond_signal(&w->work_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/*
 * Zero-ahead (wal.h): once the data reaches the second half of the zeroed window, the
 * next window is written with zeros and its writeback started. Only offsets past
 * everything written so far are zeroed, and only this thread writes the file, so no
 * record is ever overwritten. A failure here is an I/O error like any other.
 */
static int zero_ahead(keel_wal_t *w, size_t data_end, keel_errmsg_t *msg)
{
    size_t win = w->cfg.zero_ahead_bytes;
    if (!w->cfg.preallocate || win == 0 || data_end + win / 2 <= w->zero_end)
        return 0;
    static const uint8_t zeros[64 * 1024];
    size_t from = data_end > w->zero_end ? data_end : w->zero_end;
    size_t to = from + win < w->cfg.segment_bytes ? from + win : w->cfg.segment_bytes;
    for (size_t p = from; p < to;) {
        size_t n = to - p < sizeof(zeros) ? to - p : sizeof(zeros);
        ssize_t k = pwrite(w->fd, zeros, n, (off_t)p);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return io_err(msg, "write", w->dir);
        p += (size_t)k;
    }
    if (to > from && w->cfg.sync_enabled &&
        sync_file_range(w->fd, (off_t)from, (off_t)(to - from), SYNC_FILE_RANGE_WRITE) != 0)
        return io_err(msg, "sync_file_range", w->dir);
    w->zero_end = to;
    return 0;
}

static int write_chunk(keel_wal_t *w, const group_t *g, const chunk_t *c, keel_errmsg_t *msg)
{
    if (c->seq != w->fd_seq) {
        assert(c->seq == w->fd_seq + 1);
        /* The old segment's data is made durable before the new one is used. */
        if (w->cfg.sync_enabled && fdatasync(w->fd) != 0)
            return io_err(msg, "fdatasync", w->dir);
        int nfd;
        int rc = create_segment(w, c->seq, &nfd, msg);
        if (rc != 0)
            return rc;
        close(w->fd);
        w->fd = nfd;
        w->fd_seq = c->seq;
        w->zero_end = KEEL_WAL_HEADER_BYTES;
        pthread_mutex_lock(&w->mu);
        w->segments_cut++;
        pthread_mutex_unlock(&w->mu);
    }
    const uint8_t *p = g->buf.data + c->buf_start;
    size_t left = c->len, off = c->off;
    while (left > 0) {
        ssize_t n = pwrite(w->fd, p, left, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return io_err(msg, "write", w->dir);
        p += n;
        off += (size_t)n;
        left -= (size_t)n;
    }
    return zero_ahead(w, off, msg);
}

/*
 * One sync, called with mu held and a non-empty handed group: takes it, writes it
 * and fdatasyncs without the lock, then publishes the result. Returns with mu held.
 */
static void sync_once_locked(keel_wal_t *w)
{
    group_t *g = w->handed;
    uint64_t gen = w->handed_gen;
    w->handed = w->writing;
    w->writing = g;
    w->syncing = 1;
    pthread_mutex_unlock(&w->mu);

    keel_errmsg_t m = {{0}};
    keel_us_t t0 = keel_clock_now_us();
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < g->n_chunks; i++)
        rc = write_chunk(w, g, &g->chunks[i], &m);
    if (rc == 0 && w->cfg.sync_enabled && fdatasync(w->fd) != 0)
        rc = io_err(&m, "fdatasync", w->dir);
    keel_us_t took = keel_clock_now_us() - t0;
    group_reset(g);

    pthread_mutex_lock(&w->mu);
    w->syncing = 0;
    w->written_seq = w->fd_seq;
    if (rc != 0) {
        w->failed = rc;
        memcpy(w->sync_err, m.text, sizeof(w->sync_err));
    } else {
        w->durable_gen = gen;
        w->syncs++;
        if (w->times_n == KEEL_WAL_SYNC_TIMES_MAX) { /* not drained: drop the oldest */
            memmove(w->times_us, w->times_us + 1, (w->times_n - 1) * sizeof(w->times_us[0]));
            w->times_n--;
        }
        w->times_us[w->times_n++] = took > UINT32_MAX ? UINT32_MAX : (uint32_t)took;
    }
    pthread_cond_broadcast(&w->done_cv);
}

/* Unlinks the released segments not yet gone, in order, then syncs the directory. Runs on
   the janitor thread, or on the owner's when no sync thread runs. */
static int unlink_released(keel_wal_t *w, keel_errmsg_t *msg)
{
    pthread_mutex_lock(&w->mu);
    uint64_t from = w->gone_seq, to = w->unlink_to;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    uint64_t seq = from;
    for (; seq < to; seq++) {
        char path[PATH_BYTES_MAX + 32];
        seg_path(w, seq, path, sizeof(path));
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = io_err(msg, "unlink", path);
            break;
        }
    }
    if (seq > from && w->cfg.sync_enabled && fsync(w->dir_fd) != 0 && rc == 0)
        rc = io_err(msg, "fsync", w->dir);
    pthread_mutex_lock(&w->mu);
    w->gone_seq = seq;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static void *janitor_main(void *arg)
{
    keel_wal_t *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (w->gone_seq < w->unlink_to && w->unlink_to != w->failed_to) {
            pthread_mutex_unlock(&w->mu);
            keel_errmsg_t m = {{0}};
            int rc = unlink_released(w, &m);
            pthread_mutex_lock(&w->mu);
            if (rc != 0) {
                w->failed_to = w->unlink_to; /* no retry until the next release */
                w->unlink_failed = 1;
                memcpy(w->unlink_err, m.text, sizeof(w->unlink_err));
            }
            continue;
        }
        pthread_cond_wait(&w->janitor_cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The sync thread: back-to-back syncs while groups are handed over. */
static void *sync_main(void *arg)
{
    keel_wal_t *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop && !w->failed) {
        if (w->handed->buf.len == 0) {
            pthread_cond_wait(&w->work_cv, &w->mu);
            continue;
        }
        sync_once_locked(w);
        pthread_mutex_unlock(&w->mu);
        w->notify(w->notify_data);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int keel_wal_syncer_start(keel_wal_t *w, keel_wal_notify_fn notify, void *data, keel_errmsg_t *msg)
{
    assert(!w->thread_on && notify != NULL);
    w->notify = notify;
    w->notify_data = data;
    w->stop = 0;
    int prc = pthread_create(&w->thread, NULL, sync_main, w);
    if (prc != 0)
        return keel_errf(msg, KEEL_EIO, "wal: cannot start the sync thread: %s", strerror(prc));
    w->thread_on = 1;
    prc = pthread_create(&w->janitor, NULL, janitor_main, w);
    if (prc != 0) {
        keel_wal_syncer_stop(w);
        return keel_errf(msg, KEEL_EIO, "wal: cannot start the janitor thread: %s", strerror(prc));
    }
    pthread_mutex_lock(&w->mu);
    w->janitor_on = 1;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void keel_wal_syncer_stop(keel_wal_t *w)
{
    if (!w->thread_on)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->work_cv);
    pthread_cond_signal(&w->janitor_cv);
    int janitor = w->janitor_on;
    w->janitor_on = 0;
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    if (janitor)
        pthread_join(w->janitor, NULL);
    w->thread_on = 0;
    keel_errmsg_t m;
    (void)unlink_released(w, &m); /* what the janitor left: best effort, as a crash leaves it */
}

int keel_wal_durable(keel_wal_t *w, uint64_t *gen, keel_errmsg_t *msg)
{
    pthread_mutex_lock(&w->mu);
    *gen = w->durable_gen;
    int rc = w->failed ? keel_errf(msg, w->failed, "%s", w->sync_err) : 0;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int keel_wal_wait(keel_wal_t *w, uint64_t gen, keel_errmsg_t *msg)
{
    pthread_mutex_lock(&w->mu);
    assert(gen <= w->submit_gen);
    while (w->durable_gen < gen && !w->failed) {
        if (w->thread_on || w->syncing)
            pthread_cond_wait(&w->done_cv, &w->mu);
        else
            sync_once_locked(w);
    }
    int rc = w->failed && w->durable_gen < gen ? keel_errf(msg, w->failed, "%s", w->sync_err) : 0;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int keel_wal_sync(keel_wal_t *w, keel_errmsg_t *msg)
{
    uint64_t gen;
    int rc = keel_wal_submit(w, &gen);
    if (rc != 0)
        return keel_errf(msg, rc, "wal: sync refused: %s", keel_strerror(rc));
    return gen == 0 ? 0 : keel_wal_wait(w, gen, msg);
}

size_t keel_wal_take_sync_times(keel_wal_t *w, uint32_t *us, size_t cap)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->times_n < cap ? w->times_n : cap;
    memcpy(us, w->times_us, n * sizeof(*us));
    w->times_n = 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* ---- recovery ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists segment seqs in DIR, sorted. */
static int list_segments(keel_wal_t *w, uint64_t **out, size_t *n_out, keel_errmsg_t *msg)
{
    DIR *d = opendir(w->dir);
    if (d == NULL)
        return io_err(msg, "opendir", w->dir);
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq;
        char tail[8];
        if (sscanf(e->d_name, "wal-%16" SCNx64 ".%3s", &seq, tail) != 2 ||
            strcmp(tail, "log") != 0 || strlen(e->d_name) != 24)
            continue;
        if (keel_vec_grow(&seqs, &cap, n + 1, sizeof(*seqs), 16) != 0) {
            free(seqs);
            closedir(d);
            return KEEL_ENOMEM;
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (n > 1)
        qsort(seqs, n, sizeof(*seqs), cmp_u64);
    *out = seqs;
    *n_out = n;
    return 0;
}

static int read_file(const char *path, uint8_t **data, size_t *size, keel_errmsg_t *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_err(msg, "open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return io_err(msg, "stat", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL) {
        close(fd);
        return KEEL_ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(p);
            close(fd);
            return io_err(msg, "read", path);
        }
        got += (size_t)r;
    }
    close(fd);
    *data = p;
    *size = n;
    return 0;
}

/* Is there a valid record at p? Returns its full padded size, or 0. */
static size_t valid_record_at(const uint8_t *data, size_t size, size_t p, size_t body_max)
{
    if (p + KEEL_WAL_RECORD_HEADER_BYTES > size)
        return 0;
    uint32_t body = keel_get_u32(data + p);
    if (body == 0 || body > body_max || p + KEEL_WAL_RECORD_HEADER_BYTES + body > size)
        return 0;
    if (keel_crc32c(0, data + p + 8, body) != keel_get_u32(data + p + 4))
        return 0;
    return pad8(KEEL_WAL_RECORD_HEADER_BYTES + body);
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

typedef struct scan {
    size_t end;     /* offset after the last valid record */
    size_t bad_off; /* first bad record, or 0 if none */
    int later_valid;
} scan_t;

static int scan_segment(keel_wal_t *w, uint64_t seq, const uint8_t *data, size_t size,
                        keel_wal_replay_fn replay, void *rd, scan_t *s)
{
    size_t p = KEEL_WAL_HEADER_BYTES;
    memset(s, 0, sizeof(*s));
    while (p + KEEL_WAL_RECORD_HEADER_BYTES <= size) {
        size_t rec = valid_record_at(data, size, p, w->cfg.record_bytes_max);
        if (rec == 0) {
            if (all_zero(data + p, size - p))
                break; /* the unused, preallocated end of the segment */
            s->bad_off = p;
            for (size_t q = p + 8; q + KEEL_WAL_RECORD_HEADER_BYTES <= size; q += 8)
                if (valid_record_at(data, size, q, w->cfg.record_bytes_max)) {
                    s->later_valid = 1;
                    break;
                }
            break;
        }
        int rc = replay ? replay(rd, data[p + 8], data + p + 9, keel_get_u32(data + p) - 1,
                                 (seq << 32) | p)
                        : 0;
        if (rc != 0)
            return rc;
        p += rec;
    }
    s->end = p;
    return 0;
}

static int check_header(const uint8_t *data, size_t size, uint64_t seq)
{
    if (size < KEEL_WAL_HEADER_BYTES || memcmp(data, MAGIC, 8) != 0)
        return 0;
    if (keel_get_u32(data + 28) != keel_crc32c(0, data, 28))
        return 0;
    return keel_get_u32(data + 8) == VERSION && keel_get_u64(data + 16) == seq;
}

/* Zeroes [from, size) of the last segment: a torn tail that was never acknowledged. */
static int truncate_tail(keel_wal_t *w, const char *path, size_t from, size_t size,
                         keel_errmsg_t *msg)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return io_err(msg, "open", path);
    static const uint8_t zeros[4096];
    for (size_t p = from; p < size;) {
        size_t n = size - p < sizeof(zeros) ? size - p : sizeof(zeros);
        if (pwrite(fd, zeros, n, (off_t)p) != (ssize_t)n) {
            close(fd);
            return io_err(msg, "truncate", path);
        }
        p += n;
    }
    int rc = fdatasync(fd) == 0 ? 0 : io_err(msg, "fdatasync", path);
    close(fd);
    return rc;
}

static int recover_segment(keel_wal_t *w, uint64_t seq, int is_last, keel_wal_replay_fn replay,
                           void *rd, keel_errmsg_t *msg)
{
    char path[PATH_BYTES_MAX + 32], name[32];
    seg_path(w, seq, path, sizeof(path));
    seg_name(seq, name, sizeof(name));
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = read_file(path, &data, &size, msg);
    if (rc != 0)
        return rc;
    if (!check_header(data, size, seq)) {
        if (is_last &&
            all_zero(data, size < KEEL_WAL_HEADER_BYTES ? size : KEEL_WAL_HEADER_BYTES)) {
            /* Created but never written: the crash hit segment creation. */
            keel_log_warn("wal: removing empty last segment", KF_STR("file", name));
            free(data);
            if (unlink(path) != 0)
                return io_err(msg, "unlink", path);
            return 1;
        }
        free(data);
        return keel_errf(msg, KEEL_ECORRUPT, "wal: %s/%s: bad segment header at offset 0", w->dir,
                         name);
    }
    scan_t s;
    rc = scan_segment(w, seq, data, size, replay, rd, &s);
    free(data);
    if (rc != 0)
        return keel_errf(msg, rc, "wal: replay stopped at %s", name);
    if (s.bad_off != 0) {
        if (!is_last || s.later_valid)
            return keel_errf(msg, KEEL_ECORRUPT,
                             "wal: %s/%s: corrupt record at offset %zu (valid records follow it; "
                             "refusing to skip)",
                             w->dir, name, s.bad_off);
        keel_log_warn("wal: truncating torn tail", KF_STR("file", name),
                      KF_INT("offset", s.bad_off), KF_INT("bytes", size - s.bad_off));
        w->stats.torn_bytes_truncated = size - s.bad_off;
        rc = truncate_tail(w, path, s.bad_off, size, msg);
        if (rc != 0)
            return rc;
    }
    w->next_seq = seq;
    w->next_off = s.end;
    return 0;
}

static int mkdir_p(const char *dir)
{
    char tmp[PATH_BYTES_MAX];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return (mkdir(tmp, 0755) != 0 && errno != EEXIST) ? -1 : 0;
}

static int recover_all(keel_wal_t *w, keel_wal_replay_fn replay, void *rd, keel_errmsg_t *msg)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    int rc = list_segments(w, &seqs, &n, msg);
    if (rc != 0)
        return rc;
    for (size_t i = 1; i < n; i++)
        if (seqs[i] != seqs[i - 1] + 1) {
            rc = keel_errf(msg, KEEL_ECORRUPT, "wal: %s: segment %" PRIx64 " missing", w->dir,
                           seqs[i - 1] + 1);
            goto out;
        }
    w->first_seq = n ? seqs[0] : 1;
    for (size_t i = 0; i < n; i++) {
        rc = recover_segment(w, seqs[i], i == n - 1, replay, rd, msg);
        if (rc == 1) { /* empty last segment removed */
            n--;
            rc = 0;
            break;
        }
        if (rc != 0)
            goto out;
    }
    if (n == 0) {
        w->first_seq = w->next_seq = seqs && w->first_seq > 1 ? w->first_seq : 1;
        rc = create_segment(w, w->next_seq, &w->fd, msg);
        w->next_off = KEEL_WAL_HEADER_BYTES;
    } else {
        char path[PATH_BYTES_MAX + 32];
        seg_path(w, w->next_seq, path, sizeof(path));
        w->fd = open(path, O_RDWR | O_CLOEXEC);
        rc = w->fd < 0 ? io_err(msg, "open", path) : 0;
    }
    w->fd_seq = w->written_seq = w->next_seq;
    w->zero_end = w->next_off; /* past the tail: unwritten extents, or zeros */
out:
    free(seqs);
    return rc;
}

int keel_wal_open(keel_wal_t **out, const char *dir, const keel_wal_config_t *cfg,
                  keel_wal_replay_fn replay, void *replay_data, keel_errmsg_t *msg)
{
    const uint16_t probe = 1;
    assert(*(const uint8_t *)&probe == 1 && "keel's on-disk formats are little-endian");
    int rc = keel_wal_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    if (strlen(dir) >= PATH_BYTES_MAX - 32)
        return keel_errf(msg, KEEL_EINVAL, "wal: directory path too long");
    keel_wal_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    w->cfg = *cfg;
    w->fd = -1;
    w->dir_fd = -1;
    for (int i = 0; i < 3; i++)
        keel_buf_init(&w->groups[i].buf, 0);
    w->pending = &w->groups[0];
    w->handed = &w->groups[1];
    w->writing = &w->groups[2];
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    pthread_cond_init(&w->janitor_cv, NULL);
    if (mkdir_p(dir) != 0) {
        rc = io_err(msg, "mkdir", dir);
        goto fail;
    }
    w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dir_fd < 0) {
        rc = io_err(msg, "open", dir);
        goto fail;
    }
    rc = recover_all(w, replay, replay_data, msg);
    if (rc != 0)
        goto fail;
    w->gone_seq = w->unlink_to = w->first_seq;
    *out = w;
    return 0;
fail:
    keel_wal_close(w);
    return rc;
}

void keel_wal_close(keel_wal_t *w)
{
    if (w == NULL)
        return;
    keel_wal_syncer_stop(w);
    assert(!w->syncing && "close with a sync in flight");
    if (w->fd >= 0)
        close(w->fd);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    for (int i = 0; i < 3; i++) {
        keel_buf_free(&w->groups[i].buf);
        free(w->groups[i].chunks);
    }
    pthread_cond_destroy(&w->janitor_cv);
    pthread_cond_destroy(&w->done_cv);
    pthread_cond_destroy(&w->work_cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int keel_wal_release_before(keel_wal_t *w, uint64_t lsn, keel_errmsg_t *msg)
{
    uint64_t keep_seq = lsn >> 32;
    pthread_mutex_lock(&w->mu);
    if (keep_seq > w->written_seq)
        keep_seq = w->written_seq; /* never the segment the syncing side writes */
    if (keep_seq > w->first_seq) {
        w->first_seq = keep_seq; /* gone for readers now; unlinked below or by the janitor */
        w->unlink_to = keep_seq;
        pthread_cond_signal(&w->janitor_cv);
    }
    int on = w->janitor_on, rc = 0;
    if (w->unlink_failed) { /* a failure of the janitor's, reported once */
        rc = keel_errf(msg, KEEL_EIO, "%s", w->unlink_err);
        w->unlink_failed = 0;
    }
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && !on)
        rc = unlink_released(w, msg);
    return rc;
}

uint64_t keel_wal_first_seq(const keel_wal_t *w)
{
    return w->first_seq;
}

void keel_wal_get_stats(keel_wal_t *w, keel_wal_stats_t *out)
{
    *out = w->stats;
    pthread_mutex_lock(&w->mu);
    out->syncs = w->syncs;
    out->segments_cut = w->segments_cut;
    pthread_mutex_unlock(&w->mu);
}

uint64_t keel_wal_disk_bytes(keel_wal_t *w)
{
    uint64_t total = 0;
    pthread_mutex_lock(&w->mu);
    uint64_t last_seq = w->written_seq;
    pthread_mutex_unlock(&w->mu);
    for (uint64_t seq = w->first_seq; seq <= last_seq; seq++) {
        char path[PATH_BYTES_MAX + 32];
        struct stat st;
        seg_path(w, seq, path, sizeof(path));
        if (stat(path, &st) == 0)
            total += (uint64_t)st.st_size;
    }
    return total;
}
