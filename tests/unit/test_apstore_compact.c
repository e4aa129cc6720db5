/* test_apstore_compact.c - compaction of the AP replica store's log (src/runtime/apstore). */
#include "base/buf.h"
#include "core/apval.h"
#include "ktest.h"
#include "runtime/apstore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every pwrite fails with ENOSPC while disk_full is set (the log and the snapshot file write
 * through pwrite). */
static int disk_full;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (disk_full) {
        errno = ENOSPC;
        return -1;
    }
    return (ssize_t)syscall(SYS_pwrite64, fd, buf, n, off);
}

/* ---- the whole contents of a store, as sorted text --------------------------------------- */

typedef struct dump {
    keel_apstore_t *s;
    char **lines;
    size_t n, cap;
} dump_t;

static void add_line(dump_t *d, keel_buf_t *b)
{
    KT_EQ_INT(keel_buf_append(b, "", 1), 0);
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 256;
        d->lines = realloc(d->lines, d->cap * sizeof(*d->lines));
        KT_CHECK(d->lines != NULL);
    }
    d->lines[d->n++] = strdup((const char *)b->data);
    keel_buf_reset(b);
}

static void hex(keel_buf_t *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        KT_EQ_INT(keel_buf_printf(b, "%02x", p[i]), 0);
}

static void dump_key(void *arg, const uint8_t *key, size_t len, const keel_apval_t *v)
{
    dump_t *d = arg;
    keel_buf_t b, enc;
    keel_buf_init(&b, 0);
    keel_buf_init(&enc, 0);
    KT_EQ_INT(keel_apval_encode(v, &enc), 0);
    KT_EQ_INT(keel_buf_append_str(&b, "key "), 0);
    hex(&b, key, len);
    KT_EQ_INT(keel_buf_printf(&b, " item %016" PRIx64 " hints %zu state ",
                              keel_apstore_key_item(d->s, key, len),
                              keel_apstore_key_hints(d->s, key, len)),
              0);
    hex(&b, enc.data, enc.len);
    add_line(d, &b);
    keel_buf_free(&b);
    keel_buf_free(&enc);
}

static void dump_hint(void *arg, uint64_t home, const uint8_t *key, size_t len, uint64_t version)
{
    dump_t *d = arg;
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_CHECK(version != 0); /* versions are per life: only their presence is compared */
    KT_EQ_INT(keel_buf_printf(&b, "hint %" PRIu64 " ", home), 0);
    hex(&b, key, len);
    add_line(d, &b);
    keel_buf_free(&b);
}

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every key's state, item and hint count, every hint, the ring, the incarnation, the Merkle root
 * and the live-bytes estimate: what replay must rebuild. Owned by the caller. */
static char *dump(keel_apstore_t *s)
{
    dump_t d = {.s = s};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    keel_apstore_each(s, dump_key, &d);
    size_t pos = 0;
    keel_apstore_hints_each(s, &pos, SIZE_MAX, dump_hint, &d);
    uint64_t ring[KEEL_APSTORE_RING_IDS_MAX];
    uint32_t rn = keel_apstore_moved_ring(s, ring, KEEL_APSTORE_RING_IDS_MAX);
    KT_EQ_INT(keel_buf_append_str(&b, "ring"), 0);
    for (uint32_t i = 0; i < rn; i++)
        KT_EQ_INT(keel_buf_printf(&b, " %" PRIu64, ring[i]), 0);
    add_line(&d, &b);
    KT_EQ_INT(keel_buf_printf(
                  &b,
                  "zz incarnation %" PRIu64 " keys %zu hints %zu root %016" PRIx64 " live %" PRIu64,
                  keel_apstore_incarnation(s), keel_apstore_count(s), keel_apstore_hints(s),
                  keel_merkle_root(keel_apstore_tree(s)), keel_apstore_live_bytes(s)),
              0);
    add_line(&d, &b);
    qsort(d.lines, d.n, sizeof(*d.lines), cmp_line);
    for (size_t i = 0; i < d.n; i++) {
        KT_EQ_INT(keel_buf_append_str(&b, d.lines[i]), 0);
        KT_EQ_INT(keel_buf_append(&b, "\n", 1), 0);
        free(d.lines[i]);
    }
    KT_EQ_INT(keel_buf_append(&b, "", 1), 0);
    free(d.lines);
    return (char *)b.data;
}

/* ---- a workload with siblings, deletes, counters, sets, hints, forgets and a ring ---------- */

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* ops changes on keys k0..k<keys-1>: a third each siblings, PN-counters, OR-sets. Lazy merges,
 * one sync per 256 (as keel server's replicas), so the log grows fast without an fdatasync each. */
static void workload(keel_apstore_t *s, uint64_t seed, int keys, int ops)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull | 1;
    keel_errmsg_t msg;
    char key[32], val[160];
    for (int i = 0; i < ops; i++) {
        int k = (int)(rnd(&x) % (uint64_t)keys), act = (int)(rnd(&x) % 16);
        uint64_t actor = 1 + rnd(&x) % 3;
        int kl = snprintf(key, sizeof(key), "k%d", k);
        const keel_apval_t *cur = keel_apstore_get(s, key, (size_t)kl);
        if (act == 0 && cur) { /* forget the copy (refused while a hint names it) */
            int rc =
                keel_apstore_forget(s, key, (size_t)kl, keel_apstore_key_item(s, key, kl), &msg);
            KT_CHECK(rc == (keel_apstore_key_hints(s, key, (size_t)kl) > 0 ? 0 : 1));
            continue;
        }
        if (act == 1 && cur) { /* a move's hint, then maybe its handoff */
            uint64_t home = 10 + rnd(&x) % 3;
            KT_CHECK(keel_apstore_hint_add(s, home, key, (size_t)kl) >= 0);
            if (rnd(&x) % 2)
                KT_EQ_INT(keel_apstore_hint_done(s, home, key, (size_t)kl,
                                                 keel_apstore_hint(s, home, key, (size_t)kl)),
                          1);
            continue;
        }
        keel_apval_t v;
        if (cur)
            KT_EQ_INT(keel_apval_copy(&v, cur), 0);
        else
            KT_EQ_INT(keel_apval_init(&v, (uint8_t)(1 + k % 3)), 0);
        if (v.kind == KEEL_APVAL_SIBLINGS) {
            int n = snprintf(val, sizeof(val), "%d-%0120d", i, k);
            int sup = v.u.obj.n >= 6 || rnd(&x) % 2; /* a context: supersede the siblings */
            KT_EQ_INT(keel_apobj_put(&v.u.obj, sup ? &v.u.obj.vv : NULL, actor, act == 2 && sup,
                                     val, act == 2 && sup ? 0 : (uint32_t)n, NULL),
                      0);
        } else if (v.kind == KEEL_APVAL_PNCOUNTER) {
            KT_EQ_INT(
                keel_pncounter_add(&v.u.pn, actor, (int64_t)(rnd(&x) % 3) - 3 + 4 * (act % 2)), 0);
        } else {
            int n = snprintf(val, sizeof(val), "e%d", (int)(rnd(&x) % 8));
            KT_CHECK((act == 3 ? keel_orset_remove(&v.u.set, val, (uint16_t)n)
                               : keel_orset_add(&v.u.set, actor, val, (uint16_t)n)) >= 0);
        }
        if (act == 4) /* a stand-in's write */
            KT_EQ_INT(
                keel_apstore_merge_hinted_lazy(s, key, (size_t)kl, &v, 20 + actor, NULL, &msg), 0);
        else
            KT_EQ_INT(keel_apstore_merge_lazy(s, key, (size_t)kl, &v, NULL, &msg), 0);
        keel_apval_free(&v);
        if (i % 256 == 255)
            KT_EQ_INT(keel_apstore_sync(s, &msg), 0);
    }
    uint64_t ring[3] = {seed, seed + 1, seed + 2};
    KT_EQ_INT(keel_apstore_set_moved_ring(s, ring, 3, &msg), 0); /* syncs everything */
}

static int count_files(const char *dir, const char *glob)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "exit $(ls '%s'/%s 2>/dev/null | wc -l)", dir, glob);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

__attribute__((format(printf, 1, 2))) static void sh(const char *fmt, ...)
{
    char cmd[2000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    KT_EQ_INT(system(cmd), 0);
}

/* got == want, or a failure naming the first line that differs (the dumps are long). */
static void same_dump(const char *got, const char *want)
{
    size_t i = 0, line = 1;
    for (; got[i] && got[i] == want[i]; i++)
        line += got[i] == '\n';
    if (got[i] == want[i])
        return;
    while (i > 0 && got[i - 1] != '\n')
        i--;
    KT_FAIL("the states differ from line %zu:\n  got  %.120s\n  want %.120s", line, got + i,
            want + i);
}

/* Opens dir and checks it holds exactly `want`. */
static void reopens_to(const char *dir, const char *want)
{
    keel_apstore_t *s;
    keel_errmsg_t msg;
    int rc = keel_apstore_open(&s, dir, &msg);
    KT_EQ_INT(rc, 0);
    if (rc != 0) {
        printf("  open %s: %s\n", dir, msg.text);
        return;
    }
    char *got = dump(s);
    same_dump(got, want);
    free(got);
    keel_apstore_close(s);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void compaction_keeps_every_state_hint_forget_and_the_ring_across_reopens(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apcompact");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    workload(s, 1, 300, 6000);
    KT_CHECK(keel_apstore_hints(s) > 0 && keel_apstore_count(s) > 0);
    char *before = dump(s);
    uint64_t log0 = keel_apstore_log_bytes(s);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    KT_EQ_U64(keel_apstore_compactions(s), 1);
    char *now = dump(s);
    same_dump(now, before); /* memory is untouched */
    free(now);
    /* the snapshot is what the estimate said, and a fraction of the log it replaces */
    KT_EQ_U64(keel_apstore_log_bytes(s), keel_apstore_live_bytes(s));
    KT_CHECK(keel_apstore_log_bytes(s) * 4 < log0);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0); /* nothing logged since: nothing to do */
    KT_EQ_U64(keel_apstore_compactions(s), 1);
    keel_apstore_close(s);
    reopens_to(dir, before);

    /* writes after the snapshot are replayed on top of it; three more rounds of both */
    for (int round = 2; round <= 4; round++) {
        KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
        KT_EQ_U64(keel_apstore_log_bytes(s), keel_apstore_live_bytes(s)); /* the snapshot alone */
        workload(s, (uint64_t)round, 300, 3000);
        free(before);
        before = dump(s);
        keel_apstore_close(s);
        reopens_to(dir, before);
        KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
        KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
        keel_apstore_close(s);
        reopens_to(dir, before);
        KT_EQ_INT(count_files(dir, "snap-*.snap"), 1); /* the older ones went */
    }
    free(before);
    KT_RMRF(dir);
}

static void compaction_is_due_once_the_log_passes_its_limits(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apcompact");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apstore_set_compaction(s, 64 * 1024, 200);
    workload(s, 5, 50, 200);
    KT_EQ_INT(keel_apstore_compact_due(s), 0);
    int ops = 0;
    while (!keel_apstore_compact_due(s) && ops < 100000) {
        workload(s, 6 + (uint64_t)ops, 50, 100);
        ops += 100;
    }
    KT_EQ_INT(keel_apstore_compact_due(s), 1);
    KT_CHECK(keel_apstore_log_bytes(s) >= 64 * 1024);
    KT_CHECK(keel_apstore_log_bytes(s) > 2 * keel_apstore_live_bytes(s));
    KT_CHECK(keel_apstore_log_bytes(s) < 3 * keel_apstore_live_bytes(s) + 64 * 1024);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    KT_EQ_INT(keel_apstore_compact_due(s), 0);
    keel_apstore_set_compaction(s, 0, 100); /* raised to the minimum ratio */
    KT_EQ_INT(keel_apstore_compact_due(s), 0);
    keel_apstore_close(s);
    KT_RMRF(dir);
}

/*
 * The disk as a crash leaves it at each step of a compaction, rebuilt from copies of the
 * directory taken before and after one (the third, so that it releases log segments and an
 * old snapshot): every one opens to the same state.
 */
static void a_crash_at_any_step_of_compaction_recovers_the_same_state(void)
{
    char dir[256], pre[300], c[300];
    KT_TMPDIR(dir, "apcompact");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    for (uint64_t round = 7; round <= 8; round++) { /* each past a 4 MiB log segment */
        workload(s, round, 400, 30000);
        KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    }
    workload(s, 9, 400, 30000);
    char *want = dump(s);
    keel_apstore_close(s);
    snprintf(pre, sizeof(pre), "%s.pre", dir);
    sh("cp -a '%s' '%s'", dir, pre);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    keel_apstore_close(s);
    reopens_to(dir, want);
    int segs_pre = count_files(pre, "wal-*.log"), segs = count_files(dir, "wal-*.log");
    KT_CHECK(segs < segs_pre); /* log segments went */
    KT_EQ_INT(count_files(pre, "snap-*.snap"), 1);
    KT_EQ_INT(count_files(dir, "snap-*.snap"), 1); /* the one before went */

    /* 1. the new snapshot half written (.tmp), 2. written whole but not renamed */
    sh("cp -a '%s' '%s.1'; f=$(ls '%s'/snap-*.snap | tail -1); "
       "head -c $(($(stat -c %%s $f) / 2)) $f > '%s.1'/$(basename $f).tmp",
       pre, dir, dir, dir);
    sh("cp -a '%s' '%s.2'; f=$(ls '%s'/snap-*.snap | tail -1); cp $f '%s.2'/$(basename $f).tmp",
       pre, dir, dir, dir);
    for (int i = 1; i <= 2; i++) {
        snprintf(c, sizeof(c), "%s.%d", dir, i);
        KT_EQ_INT(count_files(c, "snap-*.tmp"), 1);
        reopens_to(c, want);
        KT_EQ_INT(count_files(c, "snap-*.tmp"), 0); /* never applied, removed */
    }
    /* 3. renamed, nothing released yet; 4. the log released, the old snapshot not yet */
    sh("cp -a '%s' '%s.3' && for f in '%s'/*; do [ -e '%s.3'/${f##*/} ] || cp -a $f '%s.3'/; "
       "done",
       dir, dir, pre, dir, dir);
    snprintf(c, sizeof(c), "%s.3", dir);
    KT_EQ_INT(count_files(c, "wal-*.log"), segs_pre);
    KT_EQ_INT(count_files(c, "snap-*.snap"), 2);
    reopens_to(c, want);
    sh("cp -a '%s' '%s.4' && for f in '%s'/snap-*; do [ -e '%s.4'/${f##*/} ] || cp -a $f "
       "'%s.4'/; done",
       dir, dir, pre, dir, dir);
    snprintf(c, sizeof(c), "%s.4", dir);
    KT_EQ_INT(count_files(c, "wal-*.log"), segs);
    KT_EQ_INT(count_files(c, "snap-*.snap"), 2);
    reopens_to(c, want);

    /* 5. as 3. with the new snapshot corrupt (a flipped byte), 6. cut short: the old one and
     * the whole log are still there, and used */
    sh("cp -a '%s.3' '%s.5'; f=$(ls '%s.5'/snap-*.snap | tail -1); /usr/bin/python3 -c "
       "\"import sys;f=open(sys.argv[1],'r+b');f.seek(5000);b=f.read(1);f.seek(5000);"
       "f.write(bytes([b[0]^1]))\" $f",
       dir, dir, dir);
    snprintf(c, sizeof(c), "%s.5", dir);
    reopens_to(c, want);
    sh("cp -a '%s.3' '%s.6'; f=$(ls '%s.6'/snap-*.snap | tail -1); truncate -s 4000 $f", dir, dir,
       dir);
    snprintf(c, sizeof(c), "%s.6", dir);
    reopens_to(c, want);

    /* 7. the snapshot corrupt once the log it replaced is gone: the open is refused rather than
     * serve a state with keys missing; 8. the same with the old snapshot still there (4.) */
    sh("cp -a '%s' '%s.7'; truncate -s 4000 '%s.7'/snap-*.snap", dir, dir, dir);
    snprintf(c, sizeof(c), "%s.7", dir);
    KT_EQ_INT(keel_apstore_open(&s, c, &msg), KEEL_ECORRUPT);
    KT_CHECK(strstr(msg.text, "the log starts at segment") != NULL);
    sh("cp -a '%s.4' '%s.8'; truncate -s 4000 $(ls '%s.8'/snap-*.snap | tail -1)", dir, dir, dir);
    snprintf(c, sizeof(c), "%s.8", dir);
    KT_EQ_INT(keel_apstore_open(&s, c, &msg), KEEL_ECORRUPT);
    KT_CHECK(strstr(msg.text, "the log starts at segment") != NULL);
    free(want);
    sh("rm -rf '%s' '%s'.[1-8]", dir, dir);
    KT_RMRF(pre);
}

static void a_compaction_that_cannot_write_leaves_the_store_as_it_was(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apcompact");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    workload(s, 9, 100, 2000);
    char *want = dump(s);
    disk_full = 1;
    KT_EQ_INT(keel_apstore_compact(s, &msg), KEEL_EIO);
    disk_full = 0;
    KT_EQ_INT(count_files(dir, "snap-*"), 0); /* the .tmp file removed */
    KT_EQ_U64(keel_apstore_compactions(s), 0);
    keel_errmsg_t m2;
    keel_apval_t v;
    KT_EQ_INT(keel_apval_init(&v, KEEL_APVAL_PNCOUNTER), 0);
    KT_EQ_INT(keel_pncounter_add(&v.u.pn, 1, 1), 0);
    KT_EQ_INT(keel_apstore_merge(s, "after", 5, &v, NULL, &m2), 0); /* the log still works */
    free(want);
    want = dump(s);
    keel_apstore_close(s);
    reopens_to(dir, want);
    keel_apval_free(&v);
    free(want);
    KT_RMRF(dir);
}

/* Lazy merges still pending when a compaction starts are synced before the snapshot is named
 * after the log's position: else a crash loses them from the log, the log after a restart goes on
 * from an earlier position, and what is written then would sort before the snapshot and be
 * skipped by every later replay. */
static void a_write_after_a_crash_that_followed_a_compaction_is_replayed(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apcompact");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    workload(s, 11, 50, 500);
    keel_apval_t v;
    KT_EQ_INT(keel_apval_init(&v, KEEL_APVAL_PNCOUNTER), 0);
    KT_EQ_INT(keel_pncounter_add(&v.u.pn, 1, 1), 0);
    for (int i = 0; i < 20; i++) /* logged, not synced */
        KT_EQ_INT(keel_apstore_merge_lazy(s, "lazy", 4, &v, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    disk_full = 1; /* the crash: nothing more reaches the disk */
    keel_apstore_close(s);
    disk_full = 0;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "after", 5, &v, NULL, &msg), 0); /* acknowledged */
    char *want = dump(s);
    keel_apstore_close(s);
    reopens_to(dir, want);
    free(want);
    keel_apval_free(&v);
    KT_RMRF(dir);
}

/* The file written by a thread while merges go on: the snapshot holds the state as of its start,
 * the log after it what came later; a reopen gives the state of the end, and the log a restart
 * reads is the snapshot plus what was logged meanwhile. */
static void a_compaction_written_by_a_thread_lets_merges_go_on_meanwhile(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apcompact-thread");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    workload(s, 7, 300, 6000);
    char *at_start = dump(s);
    KT_EQ_INT(keel_apstore_compact_start(s, &msg), 1);
    KT_CHECK(keel_apstore_compacting(s));
    KT_CHECK(!keel_apstore_compact_due(s));
    KT_EQ_INT(keel_apstore_compact_start(s, &msg), KEEL_EBUSY); /* one at a time */
    uint64_t log_at_start = keel_apstore_log_bytes(s);
    workload(s, 8, 300, 500); /* merges, hints, forgets while the thread writes */
    int rc = 1, polls = 0;
    while (!keel_apstore_compact_poll(s, &rc, &msg)) {
        KT_CHECK(++polls < 100000); /* about 10 s */
        usleep(100);
    }
    KT_EQ_INT(rc, 0);
    KT_CHECK(!keel_apstore_compacting(s));
    KT_EQ_U64(keel_apstore_compactions(s), 1);
    KT_EQ_INT(count_files(dir, "snap-*.snap"), 1);
    /* what a restart reads: the snapshot of the state at the start, plus what came since */
    KT_CHECK(keel_apstore_log_bytes(s) < log_at_start);
    char *at_end = dump(s);
    KT_CHECK(strcmp(at_start, at_end) != 0);
    keel_apstore_close(s);
    reopens_to(dir, at_end);
    /* a store closed while its thread writes waits for it; the file is a valid snapshot */
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    workload(s, 9, 300, 3000);
    free(at_end);
    at_end = dump(s);
    KT_EQ_INT(keel_apstore_compact_start(s, &msg), 1);
    keel_apstore_close(s);
    reopens_to(dir, at_end);
    free(at_start);
    free(at_end);
    KT_RMRF(dir);
}

/* ---- bench: test_apstore_compact --bench KEYS (bench/RESULTS.md, docs/ap.md) ------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t du_bytes(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "du -sb '%s' | cut -f1", dir);
    FILE *f = popen(cmd, "r");
    unsigned long long b = 0;
    if (f) {
        if (fscanf(f, "%llu", &b) != 1)
            b = 0;
        pclose(f);
    }
    return b;
}

static double reopen_ms(const char *dir, size_t keys)
{
    keel_apstore_t *s;
    keel_errmsg_t msg;
    double t0 = now_ms();
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    double ms = now_ms() - t0;
    KT_EQ_U64(keel_apstore_count(s), keys);
    keel_apstore_close(s);
    return ms;
}

/* keys keys, each written three times (a blind write, then two that supersede it with its
 * context: the live state stays one 100-byte value per key), lazily with a sync per 256 as a
 * replica does; then one compaction. Prints the log and disk bytes and the times. */
static int bench(size_t keys)
{
    char dir[256], key[32], val[101];
    KT_TMPDIR(dir, "apcompact-bench");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    memset(val, 'v', 100);
    double t0 = now_ms();
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < keys; i++) {
            int kl = snprintf(key, sizeof(key), "key:%zu", i);
            const keel_apval_t *cur = keel_apstore_get(s, key, (size_t)kl);
            keel_apval_t v;
            KT_EQ_INT(cur ? keel_apval_copy(&v, cur) : keel_apval_init(&v, KEEL_APVAL_SIBLINGS), 0);
            val[0] = (char)('0' + round);
            KT_EQ_INT(keel_apobj_put(&v.u.obj, &v.u.obj.vv, 1, 0, val, 100, NULL), 0);
            KT_EQ_INT(keel_apstore_merge_lazy(s, key, (size_t)kl, &v, NULL, &msg), 0);
            keel_apval_free(&v);
            if (i % 256 == 255)
                KT_EQ_INT(keel_apstore_sync(s, &msg), 0);
        }
    KT_EQ_INT(keel_apstore_sync(s, &msg), 0);
    double write_ms = now_ms() - t0;
    uint64_t log0 = keel_apstore_log_bytes(s), live = keel_apstore_live_bytes(s);
    int due = keel_apstore_compact_due(s);
    keel_apstore_close(s);
    uint64_t disk0 = du_bytes(dir);
    double open0 = reopen_ms(dir, keys);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    t0 = now_ms();
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    double compact_ms = now_ms() - t0;
    uint64_t log1 = keel_apstore_log_bytes(s);
    keel_apstore_close(s);
    uint64_t disk1 = du_bytes(dir);
    double open1 = reopen_ms(dir, keys);
    /* the same compaction with the file written by a thread: the caller's share, and the whole
       (the store is reopened on the first snapshot and the log rewritten once more) */
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    for (size_t i = 0; i < keys; i++) {
        int kl = snprintf(key, sizeof(key), "key:%zu", i);
        keel_apval_t v;
        KT_EQ_INT(keel_apval_copy(&v, keel_apstore_get(s, key, (size_t)kl)), 0);
        KT_EQ_INT(keel_apobj_put(&v.u.obj, &v.u.obj.vv, 1, 0, val, 100, NULL), 0);
        KT_EQ_INT(keel_apstore_merge_lazy(s, key, (size_t)kl, &v, NULL, &msg), 0);
        keel_apval_free(&v);
    }
    KT_EQ_INT(keel_apstore_sync(s, &msg), 0); /* as keel server's log, synced every turn */
    t0 = now_ms();
    KT_EQ_INT(keel_apstore_compact_start(s, &msg), 1);
    double start_ms = now_ms() - t0;
    int rc = 1;
    while (!keel_apstore_compact_poll(s, &rc, &msg))
        usleep(200);
    double thread_ms = now_ms() - t0;
    KT_EQ_INT(rc, 0);
    keel_apstore_close(s);
    printf("keys %zu, 3 writes each (%.0f ms); live state %.1f MB; due %d\n", keys, write_ms,
           (double)live / 1e6, due);
    printf("before: log a restart reads %.1f MB, on disk %.1f MB, reopen %.0f ms\n",
           (double)log0 / 1e6, (double)disk0 / 1e6, open0);
    printf("compaction %.0f ms\n", compact_ms);
    printf("compaction by a thread: the caller's share %.0f ms (the records encoded), "
           "done after %.0f ms\n",
           start_ms, thread_ms);
    printf("after:  log a restart reads %.1f MB, on disk %.1f MB, reopen %.0f ms\n",
           (double)log1 / 1e6, (double)disk1 / 1e6, open1);
    KT_RMRF(dir);
    return kt_done();
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--bench") == 0)
        return bench((size_t)strtoull(argv[2], NULL, 10));
    KT_RUN(compaction_keeps_every_state_hint_forget_and_the_ring_across_reopens);
    KT_RUN(compaction_is_due_once_the_log_passes_its_limits);
    KT_RUN(a_crash_at_any_step_of_compaction_recovers_the_same_state);
    KT_RUN(a_compaction_that_cannot_write_leaves_the_store_as_it_was);
    KT_RUN(a_write_after_a_crash_that_followed_a_compaction_is_replayed);
    KT_RUN(a_compaction_written_by_a_thread_lets_merges_go_on_meanwhile);
    return kt_done();
}
