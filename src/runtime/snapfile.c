/* snapfile.c - atomic snapshot files with CRC32C verification and fallback. */
#include "runtime/snapfile.h"

#include "base/crc32c.h"
#include "base/log.h"
#include "base/vec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "KEELSNP1"
#define VERSION 1u
#define PATH_BYTES_MAX 4096
/* Buffers below this are read without prefaulting (a syscall saves nothing there). */
#define PREFAULT_BYTES_MIN (1024u * 1024u)

struct keel_snapw {
    char dir[PATH_BYTES_MAX];
    char tmp[PATH_BYTES_MAX + 72];
    char final[PATH_BYTES_MAX + 64];
    int fd;
    uint64_t index, term, bytes;
    uint32_t crc;
};

typedef struct snap_name {
    uint64_t index, term;
} snap_name_t;

static void snap_path(const char *dir, const snap_name_t *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s/snap-%016" PRIx64 "-%016" PRIx64 ".snap", dir, s->index, s->term);
}

void keel_snap_remove_tmp(const char *dir, uint64_t index, uint64_t term)
{
    char final[PATH_BYTES_MAX + 64], tmp[PATH_BYTES_MAX + 72];
    snap_path(dir, &(snap_name_t){index, term}, final, sizeof(final));
    snprintf(tmp, sizeof(tmp), "%s.tmp", final);
    (void)unlink(tmp);
}

static int io_err(keel_errmsg_t *msg, const char *what, const char *path)
{
    return keel_errf(msg, KEEL_EIO, "snapshot: %s %s: %s", what, path, strerror(errno));
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = pwrite(fd, b, n, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
        off += k;
    }
    return 0;
}

int keel_snapw_open(keel_snapw_t **out, const char *dir, uint64_t index, uint64_t term,
                    keel_errmsg_t *msg)
{
    if (strlen(dir) >= PATH_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "snapshot: directory path too long");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return io_err(msg, "mkdir", dir);
    keel_snapw_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return KEEL_ENOMEM;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    snap_path(dir, &(snap_name_t){index, term}, w->final, sizeof(w->final));
    snprintf(w->tmp, sizeof(w->tmp), "%s.tmp", w->final);
    w->index = index;
    w->term = term;
    w->fd = open(w->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = io_err(msg, "create", w->tmp);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int keel_snapw_write(keel_snapw_t *w, const void *data, size_t n, keel_errmsg_t *msg)
{
    if (w->bytes + n > KEEL_SNAP_DATA_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "snapshot: over %llu bytes",
                         (unsigned long long)KEEL_SNAP_DATA_BYTES_MAX);
    if (write_all(w->fd, data, n, (off_t)(KEEL_SNAP_HEADER_BYTES + w->bytes)) != 0)
        return io_err(msg, "write", w->tmp);
    w->crc = keel_crc32c(w->crc, data, n);
    w->bytes += n;
    return 0;
}

static void encode_header(uint8_t *h, uint64_t index, uint64_t term, uint64_t bytes, uint32_t crc)
{
    uint32_t version = VERSION, zero = 0;
    memset(h, 0, KEEL_SNAP_HEADER_BYTES);
    memcpy(h, MAGIC, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &zero, 4);
    memcpy(h + 16, &index, 8);
    memcpy(h + 24, &term, 8);
    memcpy(h + 32, &bytes, 8);
    memcpy(h + 40, &crc, 4);
    uint32_t hcrc = keel_crc32c(0, h, 44);
    memcpy(h + 44, &hcrc, 4);
}

int keel_snapw_commit(keel_snapw_t *w, keel_errmsg_t *msg)
{
    uint8_t h[KEEL_SNAP_HEADER_BYTES];
    encode_header(h, w->index, w->term, w->bytes, w->crc);
    int rc = 0;
    if (write_all(w->fd, h, sizeof(h), 0) != 0 || fsync(w->fd) != 0) {
        rc = io_err(msg, "write", w->tmp);
        goto out;
    }
    if (rename(w->tmp, w->final) != 0) {
        rc = io_err(msg, "rename", w->tmp);
        goto out;
    }
    int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = io_err(msg, "fsync", w->dir);
    if (dfd >= 0)
        close(dfd);
out:
    close(w->fd);
    if (rc != 0)
        unlink(w->tmp);
    free(w);
    return rc;
}

void keel_snapw_abort(keel_snapw_t *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    unlink(w->tmp);
    free(w);
}

int keel_snap_write(const char *dir, uint64_t index, uint64_t term, const void *data, size_t n,
                    keel_errmsg_t *msg)
{
    keel_snapw_t *w = NULL;
    int rc = keel_snapw_open(&w, dir, index, term, msg);
    if (rc != 0)
        return rc;
    rc = keel_snapw_write(w, data, n, msg);
    if (rc != 0) {
        keel_snapw_abort(w);
        return rc;
    }
    return keel_snapw_commit(w, msg);
}

static int cmp_desc(const void *a, const void *b)
{
    const snap_name_t *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? 1 : -1;
    return x->term < y->term ? 1 : x->term > y->term ? -1 : 0;
}

/*
 * Lists snapshots newest first; with remove_tmp, removes leftover .tmp files too. Only the
 * start (keel_snap_load_latest) may: at any other time a .tmp may be the file a snapshot
 * child is writing, and removing it failed that snapshot at its rename (INFO persistence,
 * /status and /metrics call keel_snap_disk_bytes: polled during a snapshot that took longer
 * than the poll, the node never took one; bench/memory.sh at a million keys).
 */
static int list_snaps(const char *dir, int remove_tmp, snap_name_t **out, size_t *n_out,
                      keel_errmsg_t *msg)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : io_err(msg, "opendir", dir);
    snap_name_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        snap_name_t s;
        size_t len = strlen(e->d_name);
        if (remove_tmp && len > 4 && strcmp(e->d_name + len - 4, ".tmp") == 0 &&
            strncmp(e->d_name, "snap-", 5) == 0) {
            char p[PATH_BYTES_MAX + 300];
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            unlink(p); /* an interrupted write: never renamed, never used */
            continue;
        }
        if (len != 43 ||
            sscanf(e->d_name, "snap-%16" SCNx64 "-%16" SCNx64 ".snap", &s.index, &s.term) != 2)
            continue;
        if (keel_vec_grow(&v, &cap, n + 1, sizeof(*v), 8) != 0) {
            free(v);
            closedir(d);
            return KEEL_ENOMEM;
        }
        v[n++] = s;
    }
    closedir(d);
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_desc);
    *out = v;
    *n_out = n;
    return 0;
}

/* Reads and verifies one snapshot file. KEEL_ECORRUPT names what failed. */
/*
 * Maps the pages of a large fresh buffer in one call: reading tens of MB into it
 * otherwise takes one page fault per 4 KiB page, and faults are the dearest part of
 * loading a snapshot in a virtual machine (measured in bench/RESULTS.md, "Snapshot cost").
 * Only a hint: kernels before 5.14 lack MADV_POPULATE_WRITE and the faults happen as before.
 */
static void prefault(uint8_t *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + n) & ~(page - 1);
    if (n >= PREFAULT_BYTES_MIN && hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)n;
#endif
}

static int load_one(const char *path, const snap_name_t *s, keel_snap_t *snap, keel_errmsg_t *msg)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return io_err(msg, "open", path);
    uint8_t h[KEEL_SNAP_HEADER_BYTES];
    int rc = KEEL_ECORRUPT;
    uint8_t *data = NULL;
    if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        keel_errf(msg, rc, "snapshot %s: short header", path);
        goto out;
    }
    uint64_t index, term, bytes;
    uint32_t crc, hcrc;
    memcpy(&index, h + 16, 8);
    memcpy(&term, h + 24, 8);
    memcpy(&bytes, h + 32, 8);
    memcpy(&crc, h + 40, 4);
    memcpy(&hcrc, h + 44, 4);
    if (memcmp(h, MAGIC, 8) != 0 || hcrc != keel_crc32c(0, h, 44) || index != s->index ||
        term != s->term || bytes > KEEL_SNAP_DATA_BYTES_MAX) {
        keel_errf(msg, rc, "snapshot %s: bad header", path);
        goto out;
    }
    data = malloc(bytes ? bytes : 1);
    if (data == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    prefault(data, bytes);
    for (uint64_t got = 0; got < bytes;) {
        ssize_t k = pread(fd, data + got, bytes - got, (off_t)(KEEL_SNAP_HEADER_BYTES + got));
        if (k <= 0) {
            keel_errf(msg, rc, "snapshot %s: short data (%llu of %llu bytes)", path,
                      (unsigned long long)got, (unsigned long long)bytes);
            goto out;
        }
        got += (uint64_t)k;
    }
    if (keel_crc32c(0, data, bytes) != crc) {
        keel_errf(msg, rc, "snapshot %s: data checksum mismatch", path);
        goto out;
    }
    snap->index = index;
    snap->term = term;
    snap->data = data;
    snap->data_bytes = bytes;
    data = NULL;
    rc = 0;
out:
    free(data);
    close(fd);
    return rc;
}

int keel_snap_load_latest(const char *dir, keel_snap_t *snap, keel_errmsg_t *msg)
{
    memset(snap, 0, sizeof(*snap));
    snap_name_t *v;
    size_t n;
    int rc = list_snaps(dir, 1, &v, &n, msg);
    if (rc != 0)
        return rc;
    rc = KEEL_ENOTFOUND;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_BYTES_MAX + 64];
        keel_errmsg_t why;
        snap_path(dir, &v[i], path, sizeof(path));
        int r = load_one(path, &v[i], snap, &why);
        if (r == 0) {
            rc = 0;
            break;
        }
        if (r != KEEL_ECORRUPT) {
            rc = keel_errf(msg, r, "%s", why.text);
            break;
        }
        keel_log_warn("snapshot failed verification; trying an older one",
                      KF_STR("reason", why.text));
        snap->skipped_corrupt++;
    }
    if (rc == KEEL_ENOTFOUND)
        keel_errf(msg, rc, "no valid snapshot in %s", dir);
    free(v);
    return rc;
}

int keel_snap_load(const char *dir, uint64_t index, uint64_t term, keel_snap_t *snap,
                   keel_errmsg_t *msg)
{
    memset(snap, 0, sizeof(*snap));
    snap_name_t name = {index, term};
    char path[PATH_BYTES_MAX + 64];
    snap_path(dir, &name, path, sizeof(path));
    return load_one(path, &name, snap, msg);
}

void keel_snap_free(keel_snap_t *snap)
{
    free(snap->data);
    snap->data = NULL;
}

/* Deletes the snapshots past the newest `keep` whose index is below `below`. */
static int prune(const char *dir, size_t keep, uint64_t below, keel_errmsg_t *msg)
{
    snap_name_t *v;
    size_t n;
    int rc = list_snaps(dir, 0, &v, &n, msg);
    if (rc != 0)
        return rc;
    for (size_t i = keep; i < n; i++) {
        char path[PATH_BYTES_MAX + 64];
        if (v[i].index >= below)
            continue;
        snap_path(dir, &v[i], path, sizeof(path));
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = io_err(msg, "unlink", path);
            break;
        }
    }
    free(v);
    return rc;
}

int keel_snap_prune(const char *dir, int keep, keel_errmsg_t *msg)
{
    return prune(dir, (size_t)(keep > 0 ? keep : 0), UINT64_MAX, msg);
}

int keel_snap_prune_below(const char *dir, uint64_t index, keel_errmsg_t *msg)
{
    return prune(dir, 0, index, msg);
}

uint64_t keel_snap_disk_bytes(const char *dir)
{
    snap_name_t *v;
    size_t n;
    uint64_t total = 0;
    if (list_snaps(dir, 0, &v, &n, NULL) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_BYTES_MAX + 64];
        struct stat st;
        snap_path(dir, &v[i], path, sizeof(path));
        if (stat(path, &st) == 0)
            total += (uint64_t)st.st_size;
    }
    free(v);
    return total;
}
