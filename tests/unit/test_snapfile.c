/* test_snapfile.c - snapshot files: round trip, newest wins, corruption falls back, prune. */
#include "base/err.h"
#include "ktest.h"
#include "runtime/snapfile.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void loads_the_newest_snapshot_written(void)
{
    char dir[64];
    KT_TMPDIR(dir, "snap");
    keel_errmsg_t m;
    keel_snap_t s;
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_snap_write(dir, 100, 2, "hundred", 7, &m), 0);
    KT_EQ_INT(keel_snap_write(dir, 250, 3, "two-fifty", 9, &m), 0);
    KT_EQ_INT(keel_snap_write(dir, 90, 2, "ninety", 6, &m), 0);
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 250);
    KT_EQ_U64(s.term, 3);
    KT_EQ_INT(s.data_bytes, 9);
    KT_EQ_MEM(s.data, "two-fifty", 9);
    KT_EQ_INT(s.skipped_corrupt, 0);
    keel_snap_free(&s);
    KT_EQ_INT(keel_snap_prune(dir, 1, &m), 0);
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 250);
    keel_snap_free(&s);
    KT_CHECK(keel_snap_disk_bytes(dir) == 48 + 9);
    KT_RMRF(dir);
}

static void streams_large_snapshots_in_pieces(void)
{
    char dir[64];
    KT_TMPDIR(dir, "snap");
    keel_errmsg_t m;
    keel_snapw_t *w;
    KT_EQ_INT(keel_snapw_open(&w, dir, 7, 1, &m), 0);
    uint8_t chunk[4096];
    for (int i = 0; i < 256; i++) {
        memset(chunk, i, sizeof(chunk));
        KT_EQ_INT(keel_snapw_write(w, chunk, sizeof(chunk), &m), 0);
    }
    KT_EQ_INT(keel_snapw_commit(w, &m), 0);
    keel_snap_t s;
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_INT(s.data_bytes, 256 * 4096);
    for (int i = 0; i < 256; i++)
        KT_EQ_INT(s.data[i * 4096 + 17], i);
    KT_EQ_INT(s.data[256 * 4096 - 1], 255); /* 1 MiB: read into a prefaulted buffer */
    keel_snap_free(&s);
    /* an aborted writer leaves nothing behind */
    KT_EQ_INT(keel_snapw_open(&w, dir, 9, 1, &m), 0);
    KT_EQ_INT(keel_snapw_write(w, "x", 1, &m), 0);
    keel_snapw_abort(w);
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 7);
    keel_snap_free(&s);
    KT_RMRF(dir);
}

static void falls_back_to_an_older_snapshot_when_the_newest_is_corrupt(void)
{
    char dir[64], path[160];
    KT_TMPDIR(dir, "snap");
    keel_errmsg_t m;
    keel_snap_t s;
    KT_EQ_INT(keel_snap_write(dir, 10, 1, "older-state", 11, &m), 0);
    KT_EQ_INT(keel_snap_write(dir, 20, 1, "newer-state", 11, &m), 0);
    snprintf(path, sizeof(path), "%s/snap-%016x-%016x.snap", dir, 20, 1);
    int fd = open(path, O_RDWR);
    KT_CHECK(fd >= 0);
    KT_EQ_INT(pwrite(fd, "X", 1, 48 + 3), 1); /* a byte of the data */
    close(fd);
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 10);
    KT_EQ_INT(s.skipped_corrupt, 1);
    KT_EQ_MEM(s.data, "older-state", 11);
    keel_snap_free(&s);
    /* a truncated file and a leftover .tmp are handled too */
    KT_EQ_INT(truncate(path, 30), 0);
    snprintf(path, sizeof(path), "%s/snap-%016x-%016x.snap.tmp", dir, 30, 1);
    fd = open(path, O_CREAT | O_WRONLY, 0644);
    close(fd);
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 10);
    keel_snap_free(&s);
    KT_CHECK(access(path, F_OK) != 0);
    KT_RMRF(dir);
}

/* A snapshot child's file in progress survives the disk-usage figure (INFO persistence,
   /status, /metrics poll it) and a prune, and commits; only the start removes leftovers. */
static void a_snapshot_being_written_survives_status_polls_and_prunes(void)
{
    char dir[64];
    KT_TMPDIR(dir, "snap");
    keel_errmsg_t m;
    keel_snapw_t *w;
    KT_EQ_INT(keel_snap_write(dir, 5, 1, "five", 4, &m), 0);
    KT_EQ_INT(keel_snapw_open(&w, dir, 8, 1, &m), 0);
    KT_EQ_INT(keel_snapw_write(w, "eight", 5, &m), 0);
    KT_CHECK(keel_snap_disk_bytes(dir) == 48 + 4);
    KT_EQ_INT(keel_snap_prune(dir, 1, &m), 0);
    KT_EQ_INT(keel_snapw_commit(w, &m), 0);
    keel_snap_t s;
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 8);
    KT_EQ_MEM(s.data, "eight", 5);
    keel_snap_free(&s);
    KT_RMRF(dir);
}

/* A snapshot child killed mid-write (the OOM killer) leaves its .tmp; the parent removes that
   file by its name (server/snapshots.c, keel__node_poll_snapshot_child), nothing else. */
static void a_killed_writers_tmp_is_removed_by_its_name(void)
{
    char dir[64], path[128];
    KT_TMPDIR(dir, "snap");
    keel_errmsg_t m;
    KT_EQ_INT(keel_snap_write(dir, 5, 1, "five", 4, &m), 0);
    pid_t pid = fork();
    KT_CHECK(pid >= 0);
    if (pid == 0) {
        keel_snapw_t *w;
        if (keel_snapw_open(&w, dir, 9, 2, &m) == 0 && keel_snapw_write(w, "nine", 4, &m) == 0)
            raise(SIGKILL);
        _exit(1);
    }
    int status;
    KT_CHECK(waitpid(pid, &status, 0) == pid);
    KT_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    snprintf(path, sizeof(path), "%s/snap-%016x-%016x.snap.tmp", dir, 9, 2);
    KT_CHECK(access(path, F_OK) == 0);
    keel_snap_remove_tmp(dir, 8, 2); /* another job's name: nothing happens */
    KT_CHECK(access(path, F_OK) == 0);
    keel_snap_remove_tmp(dir, 9, 2);
    KT_CHECK(access(path, F_OK) != 0);
    keel_snap_t s;
    KT_EQ_INT(keel_snap_load_latest(dir, &s, &m), 0);
    KT_EQ_U64(s.index, 5);
    keel_snap_free(&s);
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(loads_the_newest_snapshot_written);
    KT_RUN(streams_large_snapshots_in_pieces);
    KT_RUN(falls_back_to_an_older_snapshot_when_the_newest_is_corrupt);
    KT_RUN(a_snapshot_being_written_survives_status_polls_and_prunes);
    KT_RUN(a_killed_writers_tmp_is_removed_by_its_name);
    return kt_done();
}
