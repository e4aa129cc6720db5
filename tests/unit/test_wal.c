/* test_wal.c - write-ahead log: replay, segment cuts, torn tails, corruption, crash safety. */
#include "base/err.h"
#include "base/rand.h"
#include "ktest.h"
#include "runtime/wal.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct seen {
    size_t n;
    uint8_t types[20000];
    uint32_t ids[20000];
    uint64_t lsns[20000];
} seen_t;

static int collect(void *data, uint8_t type, const uint8_t *payload, size_t len, uint64_t lsn)
{
    seen_t *s = data;
    if (s->n >= 20000 || len < 4)
        return KEEL_EINVAL;
    s->types[s->n] = type;
    memcpy(&s->ids[s->n], payload, 4);
    /* the payload is the id repeated as bytes: check the whole body */
    for (size_t i = 4; i < len; i++)
        if (payload[i] != (uint8_t)(s->ids[s->n] + i))
            return KEEL_ECORRUPT;
    s->lsns[s->n] = lsn;
    s->n++;
    return 0;
}

static size_t make_payload(uint8_t *p, uint32_t id, size_t len)
{
    memcpy(p, &id, 4);
    for (size_t i = 4; i < len; i++)
        p[i] = (uint8_t)(id + i);
    return len;
}

static keel_wal_config_t small_cfg(void)
{
    keel_wal_config_t c;
    keel_wal_config_default(&c);
    c.segment_bytes = 64 * 1024;
    c.record_bytes_max = 8192;
    return c;
}

static seen_t seen;

static void replays_what_was_synced_in_order_across_segments(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    uint8_t buf[8192];
    uint64_t lsns[3000];
    for (uint32_t i = 0; i < 3000; i++) {
        size_t len = 4 + (i * 37) % 900;
        KT_EQ_INT(keel_wal_append(w, (uint8_t)(i % 7), buf, make_payload(buf, i, len), &lsns[i]),
                  0);
        if (i > 0)
            KT_CHECK(lsns[i] > lsns[i - 1]);
        if (i % 100 == 99)
            KT_EQ_INT(keel_wal_sync(w, &m), 0);
    }
    keel_wal_stats_t st;
    keel_wal_get_stats(w, &st);
    KT_CHECK(st.segments_cut >= 10); /* ~1.4 MB over 64 KiB segments */
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_EQ_INT(seen.n, 3000);
    for (uint32_t i = 0; i < 3000; i++) {
        KT_EQ_INT(seen.ids[i], i);
        KT_EQ_INT(seen.types[i], i % 7);
        KT_EQ_U64(seen.lsns[i], lsns[i]);
    }
    /* appending after recovery continues the log */
    uint64_t lsn;
    KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, 3000, 10), &lsn), 0);
    KT_CHECK(lsn > lsns[2999]);
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_EQ_INT(seen.n, 3001);
    keel_wal_close(w);
    KT_RMRF(dir);
}

static void unsynced_records_are_lost_like_in_a_crash(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    uint8_t buf[64];
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, 1, 20), NULL), 0);
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, 2, 20), NULL), 0);
    KT_CHECK(keel_wal_pending_bytes(w) > 0);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_EQ_INT(seen.n, 1);
    keel_wal_close(w);
    KT_RMRF(dir);
}

static void rejects_records_over_the_limit(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    static uint8_t big[9000];
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    KT_EQ_INT(keel_wal_append(w, 1, big, 8192, NULL), KEEL_ETOOBIG); /* body = 1 + 8192 */
    KT_EQ_INT(keel_wal_append(w, 1, big, 8191, NULL), 0);
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    keel_wal_close(w);
    cfg.segment_bytes = 1000;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), KEEL_EINVAL);
    KT_RMRF(dir);
}

/* Writes n records of 100 bytes, synced, and returns the path of the last segment. */
static keel_wal_t *write_some(const char *dir, int n)
{
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    uint8_t buf[128];
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    for (int i = 0; i < n; i++)
        KT_EQ_INT(keel_wal_append(w, 2, buf, make_payload(buf, (uint32_t)i, 100), NULL), 0);
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    return w;
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    KT_CHECK(fd >= 0);
    uint8_t b;
    KT_EQ_INT(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    KT_EQ_INT(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* Records of a 100-byte payload take pad8(8 + 101) = 112 bytes after the 32-byte header. */
#define REC 112
#define HDR 32

static void truncates_a_torn_tail_of_the_last_segment(void)
{
    char dir[64], path[128];
    KT_TMPDIR(dir, "wal");
    keel_wal_close(write_some(dir, 50));
    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 1);
    flip_byte(path, HDR + 49 * REC + 40); /* inside the last record */
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_EQ_INT(seen.n, 49);
    keel_wal_stats_t st;
    keel_wal_get_stats(w, &st);
    KT_CHECK(st.torn_bytes_truncated > 0);
    /* the log goes on from the truncation point */
    uint8_t buf[128];
    KT_EQ_INT(keel_wal_append(w, 2, buf, make_payload(buf, 49, 100), NULL), 0);
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_EQ_INT(seen.n, 50);
    keel_wal_close(w);
    KT_RMRF(dir);
}

static void refuses_to_start_on_corruption_in_the_middle(void)
{
    char dir[64], path[128];
    KT_TMPDIR(dir, "wal");
    keel_wal_close(write_some(dir, 50));
    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 1);
    flip_byte(path, HDR + 20 * REC + 50);
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w = NULL;
    keel_errmsg_t m;
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), KEEL_ECORRUPT);
    KT_CHECK(strstr(m.text, "wal-0000000000000001.log") != NULL);
    char want[64];
    snprintf(want, sizeof(want), "offset %d", HDR + 20 * REC);
    KT_CHECK(strstr(m.text, want) != NULL);
    KT_RMRF(dir);
}

static void refuses_a_corrupt_record_in_an_older_segment(void)
{
    char dir[64], path[128];
    KT_TMPDIR(dir, "wal");
    keel_wal_close(write_some(dir, 1500)); /* 168 KB: three segments */
    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 1);
    flip_byte(path, HDR + 3); /* the length of the first record */
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w = NULL;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), KEEL_ECORRUPT);
    KT_CHECK(strstr(m.text, "offset 32") != NULL);
    /* a missing middle segment is reported, not skipped */
    flip_byte(path, HDR + 3);
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    keel_wal_close(w);
    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 2);
    KT_EQ_INT(unlink(path), 0);
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), KEEL_ECORRUPT);
    KT_CHECK(strstr(m.text, "missing") != NULL);
    KT_RMRF(dir);
}

static void releases_segments_behind_a_snapshot_point(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    uint8_t buf[128];
    uint64_t lsn_mid = 0;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    for (int i = 0; i < 2000; i++) {
        uint64_t lsn;
        KT_EQ_INT(keel_wal_append(w, 2, buf, make_payload(buf, (uint32_t)i, 100), &lsn), 0);
        if (i == 1500)
            lsn_mid = lsn;
    }
    KT_EQ_INT(keel_wal_sync(w, &m), 0);
    uint64_t before = keel_wal_disk_bytes(w);
    KT_EQ_INT(keel_wal_release_before(w, lsn_mid, &m), 0);
    KT_CHECK(keel_wal_disk_bytes(w) < before);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_CHECK(seen.n < 2000 && seen.n >= 500);
    KT_EQ_INT(seen.ids[seen.n - 1], 1999);
    KT_CHECK(seen.ids[0] <= 1500);
    keel_wal_close(w);
    KT_RMRF(dir);
}

/*
 * The parent's side of the crash tests: once the child (writing to the WAL in dir) has
 * acknowledged a record on the pipe (slow under sanitizers), waits delay_us, SIGKILLs it,
 * reads every acknowledgement it sent, reopens the WAL and checks that every acknowledged
 * record, and all before it, is replayed in order.
 */
static void kill_then_check_acknowledged(pid_t pid, int acks_fd, char *dir, useconds_t delay_us)
{
    uint32_t acked = 0, v;
    int any = read(acks_fd, &v, 4) == 4;
    if (any)
        acked = v;
    usleep(delay_us);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(acks_fd, &v, 4) == 4) {
        acked = v;
        any = 1;
    }
    close(acks_fd);
    KT_CHECK(any);
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    memset(&seen, 0, sizeof(seen));
    int rc = keel_wal_open(&w, dir, &cfg, collect, &seen, &m);
    if (rc != 0)
        KT_FAIL("reopen after kill: %s", m.text);
    KT_CHECK(seen.n >= acked + 1);
    for (size_t i = 0; i < seen.n; i++)
        KT_EQ_INT(seen.ids[i], i);
    keel_wal_close(w);
    KT_RMRF(dir);
}

/*
 * Crash safety: a child appends and syncs in a loop, reporting each acknowledged
 * id on a pipe; SIGKILL lands at a random moment. Every acknowledged record must
 * be replayed, in order, after restart.
 */
static void survives_sigkill_without_losing_acknowledged_records(void)
{
    for (int round = 0; round < 5; round++) {
        char dir[64];
        KT_TMPDIR(dir, "wal");
        int fds[2];
        KT_EQ_INT(pipe(fds), 0);
        pid_t pid = fork();
        KT_CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            keel_wal_config_t cfg = small_cfg();
            keel_wal_t *w;
            keel_errmsg_t m;
            uint8_t buf[2048];
            if (keel_wal_open(&w, dir, &cfg, NULL, NULL, &m) != 0)
                _exit(3);
            for (uint32_t i = 0;; i++) {
                keel_wal_append(w, 1, buf, make_payload(buf, i, 4 + (i * 131) % 1500), NULL);
                if (i % 4 == 3) {
                    if (keel_wal_sync(w, &m) != 0)
                        _exit(4);
                    uint32_t acked = i;
                    if (write(fds[1], &acked, 4) != 4)
                        _exit(5);
                }
            }
            pause(); /* all written: wait for the kill */
        }
        close(fds[1]);
        kill_then_check_acknowledged(pid, fds[0], dir, 10000 + (useconds_t)round * 30000);
    }
}

/* What the sync thread's notify callback saw: every durable gen, in call order. */
typedef struct notes {
    keel_wal_t *w;
    pthread_mutex_t mu;
    size_t n;
    uint64_t gens[100000];
    int failed;
} notes_t;

static notes_t notes;

static void note_durable(void *data)
{
    notes_t *nt = data;
    uint64_t gen;
    keel_errmsg_t m;
    int rc = keel_wal_durable(nt->w, &gen, &m);
    pthread_mutex_lock(&nt->mu);
    if (rc != 0)
        nt->failed = 1;
    else if (nt->n < sizeof(nt->gens) / sizeof(nt->gens[0]))
        nt->gens[nt->n++] = gen;
    pthread_mutex_unlock(&nt->mu);
}

static void start_noting(keel_wal_t *w)
{
    memset(&notes, 0, sizeof(notes));
    pthread_mutex_init(&notes.mu, NULL);
    notes.w = w;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_syncer_start(w, note_durable, &notes, &m), 0);
}

/*
 * The sync thread: groups handed over while it syncs are taken together by the next
 * sync, durable gens only grow, and every record comes back in order, across segment
 * cuts and a release_before made while the thread runs.
 */
static void the_sync_thread_makes_groups_durable_in_order_while_appends_go_on(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    start_noting(w);
    uint8_t buf[1024];
    uint64_t gen = 0, last_gen = 0, durable = 0, lsn_mid = 0;
    const uint32_t records = 4000;
    for (uint32_t i = 0; i < records; i++) {
        uint64_t lsn;
        KT_EQ_INT(keel_wal_append(w, 3, buf, make_payload(buf, i, 4 + (i * 53) % 600), &lsn), 0);
        if (i == records / 2)
            lsn_mid = lsn;
        if (i % 10 != 9)
            continue;
        KT_EQ_INT(keel_wal_submit(w, &gen), 0);
        KT_EQ_U64(gen, last_gen + 1); /* gens count the handoffs */
        last_gen = gen;
        uint64_t d;
        KT_EQ_INT(keel_wal_durable(w, &d, &m), 0);
        KT_CHECK(d >= durable && d <= gen);
        durable = d;
        if (i != records * 3 / 4 + 9)
            continue;
        /* Segments behind the midpoint go while the thread runs: once the midpoint is
         * durable (before that, the one the thread last wrote bounds what may go). */
        KT_EQ_INT(keel_wal_wait(w, gen, &m), 0);
        KT_EQ_INT(keel_wal_append(w, 3, buf, make_payload(buf, ++i, 100), NULL), 0);
        KT_EQ_INT(keel_wal_submit(w, &gen), 0);
        last_gen = gen;
        KT_EQ_INT(keel_wal_release_before(w, lsn_mid, &m), 0);
    }
    KT_EQ_INT(keel_wal_submit(w, &gen), 0);
    KT_EQ_U64(gen, 0); /* nothing pending */
    KT_EQ_INT(keel_wal_wait(w, last_gen, &m), 0);
    keel_wal_stats_t st;
    keel_wal_get_stats(w, &st);
    KT_CHECK(st.syncs >= 1 && st.syncs < last_gen); /* handoffs made during a sync merged */
    KT_CHECK(st.segments_cut >= 10);
    uint32_t us[KEEL_WAL_SYNC_TIMES_MAX];
    size_t k = keel_wal_take_sync_times(w, us, KEEL_WAL_SYNC_TIMES_MAX);
    KT_CHECK(k >= 1 && k <= st.syncs);
    keel_wal_syncer_stop(w);
    pthread_mutex_lock(&notes.mu);
    KT_CHECK(notes.n >= 1 && !notes.failed);
    for (size_t i = 1; i < notes.n; i++)
        KT_CHECK(notes.gens[i] >= notes.gens[i - 1]);
    KT_EQ_U64(notes.gens[notes.n - 1], last_gen);
    pthread_mutex_unlock(&notes.mu);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_CHECK(seen.n >= records / 2 && seen.n < records);
    uint32_t first = seen.ids[0];
    KT_CHECK(first <= records / 2);
    for (size_t i = 0; i < seen.n; i++)
        KT_EQ_INT(seen.ids[i], first + i);
    keel_wal_close(w);
    KT_RMRF(dir);
}

/* The segment files in dir (wal-*.log). */
static int segment_files(const char *dir)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c '^wal-.*\\.log$'", dir);
    FILE *f = popen(cmd, "r");
    int n = -1;
    if (f == NULL || fscanf(f, "%d", &n) != 1)
        n = -1;
    if (f)
        pclose(f);
    return n;
}

/*
 * While the sync thread runs, release_before only marks segments released (gone for the
 * WAL's readers at once) and the janitor thread unlinks them; a segment it cannot unlink is
 * reported by the next release_before, and the WAL goes on.
 */
static void released_segments_are_unlinked_by_the_janitor_and_its_failure_is_reported(void)
{
    char dir[64];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    start_noting(w);
    uint8_t buf[128];
    uint64_t lsns[3000], gen;
    for (int i = 0; i < 3000; i++)
        KT_EQ_INT(keel_wal_append(w, 2, buf, make_payload(buf, (uint32_t)i, 100), &lsns[i]), 0);
    KT_EQ_INT(keel_wal_submit(w, &gen), 0);
    KT_EQ_INT(keel_wal_wait(w, gen, &m), 0);
    int files = segment_files(dir);
    KT_CHECK(files >= 6);
    /* the segment before the one of record 1000 is made a directory: unlink fails on it */
    uint64_t bad = (lsns[1000] >> 32) - 1;
    char path[160], inner[200];
    snprintf(path, sizeof(path), "%s/wal-%016llx.log", dir, (unsigned long long)bad);
    KT_EQ_INT(unlink(path), 0);
    KT_EQ_INT(mkdir(path, 0755), 0);
    snprintf(inner, sizeof(inner), "%s/x", path);
    FILE *f = fopen(inner, "w");
    KT_CHECK(f != NULL);
    fclose(f);
    KT_EQ_INT(keel_wal_release_before(w, lsns[1000], &m), 0);
    KT_EQ_U64(keel_wal_first_seq(w), lsns[1000] >> 32); /* at once */
    int waited = 0;
    while (segment_files(dir) > files - (int)(bad - 1) && waited++ < 500)
        usleep(10000); /* the janitor removes the ones before the bad one */
    KT_EQ_INT(segment_files(dir), files - (int)(bad - 1));
    int rc = KEEL_OK;
    for (waited = 0; (rc = keel_wal_release_before(w, lsns[1000], &m)) == 0 && waited < 500;
         waited++)
        usleep(10000);
    KT_EQ_INT(rc, KEEL_EIO);
    KT_CHECK(strstr(m.text, "unlink") != NULL);
    KT_EQ_INT(keel_wal_release_before(w, lsns[1000], &m), 0); /* reported once */
    /* the WAL goes on; with the obstacle gone, the next release takes the rest */
    snprintf(inner, sizeof(inner), "rm -rf %s", path);
    KT_EQ_INT(system(inner), 0);
    KT_EQ_INT(keel_wal_append(w, 2, buf, make_payload(buf, 3000, 100), NULL), 0);
    KT_EQ_INT(keel_wal_submit(w, &gen), 0);
    KT_EQ_INT(keel_wal_wait(w, gen, &m), 0);
    KT_EQ_INT(keel_wal_release_before(w, lsns[2000], &m), 0);
    keel_wal_syncer_stop(w); /* what the janitor had not done yet, done here */
    int left = segment_files(dir);
    keel_wal_close(w);
    memset(&seen, 0, sizeof(seen));
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, collect, &seen, &m), 0);
    KT_CHECK(left >= 1 && seen.n >= 1001 && seen.ids[0] <= 2000 && seen.ids[0] > 1000);
    KT_EQ_INT(seen.ids[seen.n - 1], 3000);
    keel_wal_close(w);
    KT_RMRF(dir);
}

/*
 * A failed write stops the syncing side for good: the notify callback sees the
 * failure, durable() and wait() report it with the cause, and no later submit is
 * accepted (an fsync error cannot be retried). The failure is a segment cut whose
 * file already exists (creation is O_EXCL).
 */
static void a_failed_sync_stops_the_wal_for_good(void)
{
    char dir[64], path[128];
    KT_TMPDIR(dir, "wal");
    keel_wal_config_t cfg = small_cfg();
    keel_wal_t *w;
    keel_errmsg_t m;
    KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
    start_noting(w);
    uint8_t buf[1024];
    uint64_t gen, ok_gen;
    KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, 0, 100), NULL), 0);
    KT_EQ_INT(keel_wal_submit(w, &ok_gen), 0);
    KT_EQ_INT(keel_wal_wait(w, ok_gen, &m), 0);
    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 2);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    KT_CHECK(fd >= 0);
    close(fd);
    for (uint32_t i = 1; i < 200; i++) /* ~200 KB: past the 64 KiB segment */
        KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, i, 1000), NULL), 0);
    KT_EQ_INT(keel_wal_submit(w, &gen), 0);
    KT_EQ_INT(keel_wal_wait(w, gen, &m), KEEL_EIO);
    KT_CHECK(strstr(m.text, "create") != NULL);
    uint64_t d;
    KT_EQ_INT(keel_wal_durable(w, &d, &m), KEEL_EIO);
    KT_EQ_U64(d, ok_gen); /* what was durable stays reported, nothing more */
    KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, 500, 100), NULL), 0);
    KT_EQ_INT(keel_wal_submit(w, &gen), KEEL_EIO);
    KT_CHECK(keel_wal_pending_bytes(w) > 0); /* refused, not dropped */
    for (int i = 0; i < 100; i++) {          /* the callback runs after wait() returned */
        pthread_mutex_lock(&notes.mu);
        int f = notes.failed;
        pthread_mutex_unlock(&notes.mu);
        if (f)
            break;
        usleep(10000);
    }
    KT_CHECK(notes.failed);
    keel_wal_close(w);
    KT_RMRF(dir);
}

/*
 * Crash safety with the sync thread: a child appends, submits without waiting, and
 * reports records acknowledged as soon as durable() covers their group; SIGKILL lands
 * at a random moment. Every acknowledged record must be replayed, in order.
 */
static void sync_thread_survives_sigkill_without_losing_acknowledged_records(void)
{
    uint64_t seed = (uint64_t)getpid() ^ (uint64_t)time(NULL);
    KT_SEED(seed);
    keel_rand_t rng;
    keel_rand_seed(&rng, seed);
    for (int round = 0; round < 5; round++) {
        char dir[64];
        KT_TMPDIR(dir, "wal");
        int fds[2];
        KT_EQ_INT(pipe(fds), 0);
        pid_t pid = fork();
        KT_CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            keel_wal_config_t cfg = small_cfg();
            keel_wal_t *w;
            keel_errmsg_t m;
            uint8_t buf[2048];
            static uint32_t last_of_gen[1u << 16]; /* last id of each gen, by gen % size */
            if (keel_wal_open(&w, dir, &cfg, NULL, NULL, &m) != 0)
                _exit(3);
            memset(&notes, 0, sizeof(notes));
            notes.w = w;
            pthread_mutex_init(&notes.mu, NULL);
            if (keel_wal_syncer_start(w, note_durable, &notes, &m) != 0)
                _exit(3);
            uint64_t acked_gen = 0;
            for (uint32_t i = 0; i < 12000; i++) { /* replay collects at most 20,000 */
                keel_wal_append(w, 1, buf, make_payload(buf, i, 4 + (i * 131) % 1500), NULL);
                if (i % 4 != 3)
                    continue;
                uint64_t gen, d;
                if (keel_wal_submit(w, &gen) != 0 || keel_wal_durable(w, &d, &m) != 0)
                    _exit(4);
                last_of_gen[gen % (1u << 16)] = i;
                if (gen - d > 4 && keel_wal_wait(w, gen - 4, &m) == 0) /* a bounded backlog */
                    keel_wal_durable(w, &d, &m);
                if (d > acked_gen) {
                    acked_gen = d;
                    uint32_t acked = last_of_gen[d % (1u << 16)];
                    if (write(fds[1], &acked, 4) != 4)
                        _exit(5);
                }
            }
            pause(); /* all written: wait for the kill */
        }
        close(fds[1]);
        kill_then_check_acknowledged(pid, fds[0], dir,
                                     5000 + (useconds_t)keel_rand_below(&rng, 150000));
    }
}

/* 1 if an extent overlapping [from, to) of path is unwritten (fallocated, never written),
 * 0 if none, -1 if the file system cannot say (no FIEMAP, e.g. tmpfs). */
static int has_unwritten_extent(const char *path, size_t from, size_t to)
{
    struct {
        struct fiemap fm;
        struct fiemap_extent ext[64];
    } q;
    memset(&q, 0, sizeof(q));
    q.fm.fm_start = from;
    q.fm.fm_length = to - from;
    q.fm.fm_flags = FIEMAP_FLAG_SYNC; /* after writeback, so conversions are done */
    q.fm.fm_extent_count = 64;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    int rc = ioctl(fd, FS_IOC_FIEMAP, &q.fm);
    close(fd);
    if (rc != 0 || q.fm.fm_mapped_extents == 0)
        return -1;
    for (uint32_t i = 0; i < q.fm.fm_mapped_extents; i++)
        if (q.ext[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            return 1;
    return 0;
}

/*
 * Zero-ahead: past the synced data, the next half window is already written (zeros), so
 * the next syncs write into written extents and do not convert any (wal.h). Without it
 * (the control) the same range is still unwritten, so the check can fail.
 */
static void zero_ahead_leaves_no_unwritten_extent_after_the_data(void)
{
    for (int on = 1; on >= 0; on--) {
        char dir[64], path[128];
        KT_TMPDIR(dir, "wal");
        keel_wal_config_t cfg = small_cfg();
        cfg.segment_bytes = 4u << 20;
        cfg.zero_ahead_bytes = on ? 256u * 1024 : 0;
        keel_wal_t *w;
        keel_errmsg_t m;
        KT_EQ_INT(keel_wal_open(&w, dir, &cfg, NULL, NULL, &m), 0);
        uint8_t buf[1024];
        for (uint32_t i = 0; i < 100; i++)
            KT_EQ_INT(keel_wal_append(w, 1, buf, make_payload(buf, i, 1000), NULL), 0);
        KT_EQ_INT(keel_wal_sync(w, &m), 0);
        uint64_t end = keel_wal_next_lsn(w) & 0xffffffffu;
        snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 1);
        int u = has_unwritten_extent(path, (size_t)end, (size_t)end + 128 * 1024);
        keel_wal_close(w);
        KT_RMRF(dir);
        if (u < 0) {
            printf("     (no FIEMAP or no unwritten extents on this file system: not checked)\n");
            return;
        }
        KT_EQ_INT(u, on ? 0 : 1);
    }
}

int main(void)
{
    KT_RUN(replays_what_was_synced_in_order_across_segments);
    KT_RUN(unsynced_records_are_lost_like_in_a_crash);
    KT_RUN(rejects_records_over_the_limit);
    KT_RUN(truncates_a_torn_tail_of_the_last_segment);
    KT_RUN(refuses_to_start_on_corruption_in_the_middle);
    KT_RUN(refuses_a_corrupt_record_in_an_older_segment);
    KT_RUN(releases_segments_behind_a_snapshot_point);
    KT_RUN(survives_sigkill_without_losing_acknowledged_records);
    KT_RUN(the_sync_thread_makes_groups_durable_in_order_while_appends_go_on);
    KT_RUN(released_segments_are_unlinked_by_the_janitor_and_its_failure_is_reported);
    KT_RUN(a_failed_sync_stops_the_wal_for_good);
    KT_RUN(sync_thread_survives_sigkill_without_losing_acknowledged_records);
    KT_RUN(zero_ahead_leaves_no_unwritten_extent_after_the_data);
    return kt_done();
}
