/* test_apstore.c - the AP keyspace's durable replica store (src/runtime/apstore). */
#include "core/apval.h"
#include "ktest.h"
#include "runtime/apstore.h"
#include "test_oom.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The disk, for this test binary: every pwrite fails with ENOSPC while disk_full is set (the
 * store's log writes through pwrite). */
static int disk_full;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (disk_full) {
        errno = ENOSPC;
        return -1;
    }
    return (ssize_t)syscall(SYS_pwrite64, fd, buf, n, off);
}

static keel_apval_t sibling(const keel_vv_t *ctx, uint64_t actor, const char *s)
{
    keel_apval_t v;
    KT_EQ_INT(keel_apval_init(&v, KEEL_APVAL_SIBLINGS), 0);
    KT_EQ_INT(keel_apobj_put(&v.u.obj, ctx, actor, 0, s, (uint32_t)strlen(s), NULL), 0);
    return v;
}

static keel_apval_t counter(uint64_t actor, int64_t d)
{
    keel_apval_t v;
    KT_EQ_INT(keel_apval_init(&v, KEEL_APVAL_PNCOUNTER), 0);
    KT_EQ_INT(keel_pncounter_add(&v.u.pn, actor, d), 0);
    return v;
}

static void merged_states_survive_a_reopen(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b");
    keel_apval_t c1 = counter(1, 5), c2 = counter(2, -2);
    keel_apval_t set;
    KT_EQ_INT(keel_apval_init(&set, KEEL_APVAL_ORSET), 0);
    KT_EQ_INT(keel_orset_add(&set.u.set, 1, "x", 1), 0);
    int changed;
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &a, &changed, &msg), 0);
    KT_EQ_INT(changed, 1);
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &b, &changed, &msg), 0); /* a concurrent sibling */
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &a, &changed, &msg), 0); /* a duplicate */
    KT_EQ_INT(changed, 0);
    KT_EQ_INT(keel_apstore_merge(s, "n", 1, &c1, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "n", 1, &c2, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "s", 1, &set, NULL, &msg), 0);
    /* another kind for an existing key is refused and changes nothing */
    KT_EQ_INT(keel_apstore_merge(s, "n", 1, &a, NULL, &msg), KEEL_ECONFLICT);
    char big[KEEL_APSTORE_KEY_BYTES_MAX + 1] = {0};
    KT_EQ_INT(keel_apstore_merge(s, big, sizeof(big), &a, NULL, &msg), KEEL_ETOOBIG);
    KT_EQ_U64(keel_apstore_syncs(s), 5); /* one fdatasync per changing merge, none otherwise */
    const keel_apval_t *k = keel_apstore_get(s, "k", 1);
    KT_CHECK(k && k->u.obj.n == 2);
    uint64_t dk = keel_apval_digest(k), dn = keel_apval_digest(keel_apstore_get(s, "n", 1));
    uint64_t root = keel_merkle_root(keel_apstore_tree(s));

    uint64_t life = keel_apstore_incarnation(s);
    KT_CHECK(life != 0);
    keel_apstore_close(s);

    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_U64(keel_apstore_incarnation(s), life); /* the same life after a restart */
    KT_EQ_U64(keel_apstore_replayed(s), 5);
    KT_EQ_INT(keel_apstore_count(s), 3);
    KT_EQ_U64(keel_apval_digest(keel_apstore_get(s, "k", 1)), dk);
    KT_EQ_U64(keel_apval_digest(keel_apstore_get(s, "n", 1)), dn);
    KT_EQ_U64(keel_merkle_root(keel_apstore_tree(s)), root);
    int64_t val;
    KT_EQ_INT(keel_pncounter_value(&keel_apstore_get(s, "n", 1)->u.pn, &val), 0);
    KT_EQ_INT(val, 3);
    KT_CHECK(keel_orset_contains(&keel_apstore_get(s, "s", 1)->u.set, "x", 1));
    KT_CHECK(keel_apstore_get(s, "nope", 4) == NULL);
    /* a new incarnation (keel server's new actor): above the old one, synced, and kept across
       a restart and a compaction; the states stay as they were */
    uint64_t syncs = keel_apstore_syncs(s);
    KT_EQ_INT(keel_apstore_renew_incarnation(s, &msg), 0);
    uint64_t life2 = keel_apstore_incarnation(s);
    KT_CHECK(life2 > life);
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 1);
    KT_EQ_INT(keel_apstore_renew_incarnation(s, &msg), 0); /* twice in one ms: still above */
    KT_CHECK(keel_apstore_incarnation(s) > life2);
    life2 = keel_apstore_incarnation(s);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_U64(keel_apstore_incarnation(s), life2);
    KT_EQ_U64(keel_apval_digest(keel_apstore_get(s, "k", 1)), dk);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_U64(keel_apstore_incarnation(s), life2);
    KT_EQ_INT(keel_apstore_count(s), 3);
    keel_apstore_close(s);
    life = life2;
    /* the directory lost: a new life, so new dots (the clock moved on by then) */
    KT_RMRF(dir);
    KT_TMPDIR(dir, "apstore");
    usleep(2000);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_CHECK(keel_apstore_incarnation(s) != life);
    KT_EQ_INT(keel_apstore_count(s), 0);
    keel_apstore_close(s);
    keel_apval_free(&a), keel_apval_free(&b), keel_apval_free(&c1), keel_apval_free(&c2);
    keel_apval_free(&set);
    KT_RMRF(dir);
}

static void a_torn_tail_is_dropped_and_what_was_synced_stays(void)
{
    char dir[256], cmd[600];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a");
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &a, NULL, &msg), 0);
    uint64_t d = keel_apval_digest(keel_apstore_get(s, "k", 1));
    keel_apstore_close(s);
    /* half a record after the last synced one: a write that was never acknowledged */
    snprintf(cmd, sizeof(cmd),
             "f=$(ls '%s'/wal-*.log | tail -1); "
             "/usr/bin/python3 -c \"import sys,struct;f=open(sys.argv[1],'r+b');d=f.read();"
             "i=d.rstrip(b'\\0').__len__();i=(i+7)//"
             "8*8;f.seek(i);f.write(struct.pack('<II',64,1)+b'xy')\" \"$f\"",
             dir);
    KT_EQ_INT(system(cmd), 0);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_U64(keel_apval_digest(keel_apstore_get(s, "k", 1)), d);
    keel_apstore_close(s);
    keel_apval_free(&a);
    KT_RMRF(dir);
}

typedef struct seen {
    int n;
    uint64_t home[4], version[4];
} seen_t;

static void see_hint(void *arg, uint64_t home, const uint8_t *key, size_t len, uint64_t version)
{
    seen_t *s = arg;
    KT_CHECK(len == 1 && key[0] == 'k');
    if (s->n < 4)
        s->home[s->n] = home, s->version[s->n] = version;
    s->n++;
}

static void observed(void *arg, const uint8_t *key, size_t len, uint64_t old_item,
                     uint64_t new_item)
{
    uint64_t *sum = arg;
    KT_CHECK(len == 1);
    (void)key;
    *sum += new_item - old_item;
}

static void hints_are_durable_and_dropped_only_for_the_version_handed_off(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    uint64_t sum = 0;
    keel_apstore_observe(s, observed, &sum);
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b");
    int changed;
    KT_EQ_INT(keel_apstore_merge_hinted(s, "k", 1, &a, 7, &changed, &msg), 0);
    KT_EQ_INT(changed, 1);
    KT_EQ_U64(keel_apstore_syncs(s), 1); /* the state and the hint: one fdatasync */
    KT_EQ_U64(sum, keel_apstore_item("k", 1, keel_apstore_get(s, "k", 1)));
    uint64_t v1 = keel_apstore_hint(s, 7, "k", 1);
    KT_CHECK(v1 != 0);
    KT_EQ_U64(keel_apstore_hint(s, 8, "k", 1), 0);
    /* the same state again, hinted: nothing to log, but the hint gets a new version */
    KT_EQ_INT(keel_apstore_merge_hinted(s, "k", 1, &a, 7, &changed, &msg), 0);
    KT_EQ_INT(changed, 0);
    KT_EQ_U64(keel_apstore_syncs(s), 1);
    uint64_t v2 = keel_apstore_hint(s, 7, "k", 1);
    KT_CHECK(v2 != v1);
    /* the home acknowledges the older version: the hint stays */
    KT_EQ_INT(keel_apstore_hint_done(s, 7, "k", 1, v1), 0);
    KT_EQ_INT(keel_apstore_hints(s), 1);
    /* a second home's hint for the same key, with a newer state */
    KT_EQ_INT(keel_apstore_merge_hinted(s, "k", 1, &b, 9, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_hints(s), 2);
    KT_EQ_INT(keel_apstore_merge_hinted(s, "k", 1, &b, 0, NULL, &msg), KEEL_EINVAL);
    seen_t seen = {0};
    size_t pos = 0;
    keel_apstore_hints_each(s, &pos, 1, see_hint, &seen);
    KT_EQ_INT(seen.n, 1);
    KT_CHECK(pos != 0);
    keel_apstore_hints_each(s, &pos, 10, see_hint, &seen);
    KT_EQ_INT(seen.n, 2);
    KT_EQ_INT(pos, 0); /* the end: the next call starts over */
    KT_CHECK((seen.home[0] == 7 && seen.home[1] == 9) || (seen.home[0] == 9 && seen.home[1] == 7));
    KT_EQ_INT(keel_apstore_hint_done(s, 9, "k", 1, keel_apstore_hint(s, 9, "k", 1)), 1);
    keel_apstore_close(s);
    /* after a restart: the pending hint is back (a new version), the handed-off one is not */
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_hints(s), 1);
    KT_CHECK(keel_apstore_hint(s, 7, "k", 1) != 0);
    KT_EQ_U64(keel_apstore_hint(s, 9, "k", 1), 0);
    KT_EQ_INT(keel_apstore_get(s, "k", 1)->u.obj.n, 2);
    KT_EQ_INT(keel_apstore_hint_done(s, 7, "k", 1, keel_apstore_hint(s, 7, "k", 1)), 1);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_hints(s), 0);
    keel_apstore_close(s);
    keel_apval_free(&a), keel_apval_free(&b);
    KT_RMRF(dir);
}

static void count_key(void *arg, const uint8_t *key, size_t len)
{
    (void)key, (void)len;
    (*(int *)arg)++;
}

static void the_ring_moved_for_and_move_hints_survive_a_reopen(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    uint64_t ids[KEEL_APSTORE_RING_IDS_MAX];
    KT_EQ_INT(keel_apstore_moved_ring(s, ids, KEEL_APSTORE_RING_IDS_MAX), 0); /* none yet */
    keel_apval_t a = sibling(NULL, 1, "a");
    char key[8];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        KT_EQ_INT(keel_apstore_merge(s, key, strlen(key), &a, NULL, &msg), 0);
    }
    /* a walk in steps of 7 visits every key once, and says when it is done */
    size_t pos = 0;
    int seen = 0, done = 0, steps = 0;
    while (!done && steps++ < 100)
        done = keel_apstore_scan(s, &pos, 7, count_key, &seen);
    KT_EQ_INT(done, 1);
    KT_EQ_INT(seen, 100);
    /* a move hint needs the key held; a second one for the same pair is the same hint */
    KT_EQ_INT(keel_apstore_hint_add(s, 4, "nope", 4), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_apstore_hint_add(s, 0, "k1", 2), KEEL_EINVAL);
    uint64_t syncs = keel_apstore_syncs(s);
    KT_EQ_INT(keel_apstore_hint_add(s, 4, "k1", 2), 1);
    KT_EQ_INT(keel_apstore_hint_add(s, 4, "k1", 2), 0);
    KT_EQ_INT(keel_apstore_hint_add(s, 4, "k2", 2), 1);
    KT_EQ_U64(keel_apstore_syncs(s), syncs); /* not synced on their own */
    KT_EQ_INT(keel_apstore_hints(s), 2);
    uint64_t ring[3] = {1, 2, 4};
    KT_EQ_INT(keel_apstore_set_moved_ring(s, ring, 3, &msg), 0); /* syncs them too */
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 1);
    keel_apstore_close(s);

    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_moved_ring(s, ids, KEEL_APSTORE_RING_IDS_MAX), 3);
    KT_EQ_U64(ids[0], 1);
    KT_EQ_U64(ids[2], 4);
    KT_EQ_INT(keel_apstore_hints(s), 2);
    KT_CHECK(keel_apstore_hint(s, 4, "k2", 2) != 0);
    keel_apstore_close(s);
    keel_apval_free(&a);
    KT_RMRF(dir);
}

static void a_lazy_merge_is_durable_after_the_next_sync_or_synced_merge(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b");
    uint64_t syncs = keel_apstore_syncs(s);
    int changed;
    KT_EQ_INT(keel_apstore_merge_lazy(s, "k", 1, &a, &changed, &msg), 0);
    KT_EQ_INT(keel_apstore_merge_lazy(s, "j", 1, &a, &changed, &msg), 0);
    KT_EQ_INT(changed, 1);
    KT_CHECK(keel_apstore_get(s, "k", 1) != NULL); /* in force at once */
    KT_EQ_U64(keel_apstore_syncs(s), syncs);
    /* a merge that changes nothing still syncs what is pending before it returns */
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &a, &changed, &msg), 0);
    KT_EQ_INT(changed, 0);
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 1);
    KT_EQ_INT(keel_apstore_sync(s, &msg), 0); /* nothing pending: no fdatasync */
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 1);
    KT_EQ_INT(keel_apstore_merge_lazy(s, "k", 1, &b, &changed, &msg), 0);
    KT_EQ_INT(keel_apstore_sync(s, &msg), 0);
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 2);
    uint64_t dk = keel_apval_digest(keel_apstore_get(s, "k", 1));
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_count(s), 2);
    KT_EQ_U64(keel_apval_digest(keel_apstore_get(s, "k", 1)), dk);
    keel_apstore_close(s);
    keel_apval_free(&a), keel_apval_free(&b);
    KT_RMRF(dir);
}

/* A lazy merge whose group sync failed is in memory but not on disk: from then on the store
 * acknowledges nothing (a repeat of the same state changes nothing and has nothing pending,
 * which must not read as durable), and a reopen does not have it. */
static void after_a_failed_sync_nothing_is_acknowledged_as_stored(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t c = counter(1, 5);
    int changed = 0;
    KT_EQ_INT(keel_apstore_merge_lazy(s, "k", 1, &c, &changed, &msg), 0);
    KT_EQ_INT(changed, 1);
    disk_full = 1;
    KT_CHECK(keel_apstore_sync(s, &msg) != 0);
    disk_full = 0;
    KT_CHECK(keel_apstore_merge_lazy(s, "k", 1, &c, &changed, &msg) != 0); /* a re-handoff */
    KT_CHECK(keel_apstore_sync(s, &msg) != 0);
    KT_CHECK(keel_apstore_merge(s, "k", 1, &c, &changed, &msg) != 0); /* a replica's WRITE */
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_CHECK(keel_apstore_get(s, "k", 1) == NULL);
    keel_apstore_close(s);
    keel_apval_free(&c);
}

/* A copy is forgotten only in the state the caller proved the homes hold (its digest), never
 * while a hint names the key; the forget survives a reopen, and a later state of the key brings
 * it back in log order. */
static void a_key_is_forgotten_only_unchanged_and_unhinted_and_stays_forgotten(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b"), c = counter(3, 4);
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &a, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "n", 1, &c, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "h", 1, &a, NULL, &msg), 0);
    uint64_t root0 = keel_merkle_root(keel_apstore_tree(s));
    uint64_t dk = keel_apstore_key_item(s, "k", 1);
    KT_EQ_INT(keel_apstore_merge(s, "k", 1, &b, NULL, &msg), 0); /* a write after the proof */
    KT_EQ_INT(keel_apstore_forget(s, "k", 1, dk, &msg), 0);      /* changed: kept */
    KT_CHECK(keel_apstore_get(s, "k", 1) != NULL);
    dk = keel_apstore_key_item(s, "k", 1);
    KT_EQ_INT(keel_apstore_hint_add(s, 9, "h", 1), 1);
    KT_EQ_INT(keel_apstore_key_hints(s, "h", 1), 1);
    uint64_t dh = keel_apstore_key_item(s, "h", 1);
    KT_EQ_INT(keel_apstore_forget(s, "h", 1, dh, &msg), 0); /* hinted: kept */
    KT_EQ_INT(keel_apstore_hint_done(s, 9, "h", 1, keel_apstore_hint(s, 9, "h", 1)), 1);
    KT_EQ_INT(keel_apstore_key_hints(s, "h", 1), 0);
    KT_EQ_INT(keel_apstore_forget(s, "k", 1, dk, &msg), 1);
    KT_EQ_INT(keel_apstore_forget(s, "h", 1, dh, &msg), 1);
    KT_EQ_INT(keel_apstore_forget(s, "k", 1, dk, &msg), 0); /* gone already */
    KT_CHECK(keel_apstore_get(s, "k", 1) == NULL && keel_apstore_get(s, "h", 1) == NULL);
    KT_EQ_INT(keel_apstore_count(s), 1);
    KT_CHECK(keel_merkle_root(keel_apstore_tree(s)) != root0);
    KT_EQ_INT(keel_apstore_merge(s, "h", 1, &b, NULL, &msg), 0); /* back, with the new state */
    uint64_t root = keel_merkle_root(keel_apstore_tree(s));
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_count(s), 2);
    KT_CHECK(keel_apstore_get(s, "k", 1) == NULL);
    KT_EQ_INT(keel_apstore_get(s, "h", 1)->u.obj.n, 1); /* only the state after the forget */
    KT_EQ_INT(keel_apstore_hints(s), 0);
    KT_EQ_U64(keel_merkle_root(keel_apstore_tree(s)), root);
    keel_apstore_close(s);
    keel_apval_free(&a), keel_apval_free(&b), keel_apval_free(&c);
    KT_RMRF(dir);
}

/* A key forgotten holding this node's own dots leaves its hash in a set that survives a reopen
 * and a compaction, until a new incarnation empties it (keel server takes one before it writes
 * such a key again). */
static void a_key_dropped_holding_own_dots_is_remembered_until_a_new_incarnation(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a");
    KT_EQ_INT(keel_apstore_merge(s, "own", 3, &a, NULL, &msg), 0);
    KT_EQ_INT(keel_apstore_merge(s, "other", 5, &a, NULL, &msg), 0);
    uint64_t live0 = keel_apstore_live_bytes(s);
    KT_EQ_INT(keel_apstore_forget_own(s, "own", 3, 12345, &msg), 0); /* a stale hash: kept */
    KT_EQ_INT(keel_apstore_dropped_count(s), 0);
    KT_EQ_INT(keel_apstore_forget_own(s, "own", 3, keel_apstore_key_item(s, "own", 3), &msg), 1);
    KT_EQ_INT(keel_apstore_forget(s, "other", 5, keel_apstore_key_item(s, "other", 5), &msg), 1);
    KT_CHECK(keel_apstore_dropped_own(s, "own", 3));
    KT_CHECK(!keel_apstore_dropped_own(s, "other", 5)); /* not its dots: nothing to remember */
    KT_EQ_INT(keel_apstore_dropped_count(s), 1);
    KT_CHECK(keel_apstore_live_bytes(s) < live0); /* the states went, one small record came */
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0); /* replayed from the log */
    KT_CHECK(keel_apstore_dropped_own(s, "own", 3) && keel_apstore_dropped_count(s) == 1);
    KT_EQ_INT(keel_apstore_merge(s, "x", 1, &a, NULL, &msg), 0);
    uint64_t live = keel_apstore_live_bytes(s);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    KT_EQ_U64(keel_apstore_log_bytes(s), live); /* the estimate counts its record */
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0); /* from the snapshot */
    KT_CHECK(keel_apstore_dropped_own(s, "own", 3) && keel_apstore_dropped_count(s) == 1);
    KT_EQ_U64(keel_apstore_live_bytes(s), live);
    KT_EQ_INT(keel_apstore_renew_incarnation(s, &msg), 0);
    KT_CHECK(!keel_apstore_dropped_own(s, "own", 3) && keel_apstore_dropped_count(s) == 0);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0); /* the incarnation record emptied it */
    KT_EQ_INT(keel_apstore_dropped_count(s), 0);
    KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_dropped_count(s), 0);
    KT_EQ_INT(keel_apstore_count(s), 1);
    keel_apstore_close(s);
    keel_apval_free(&a);
    KT_RMRF(dir);
}

/* A new incarnation empties the set of dropped keys, or is not taken: with an allocation failing
 * anywhere in it, either it fails (the old incarnation and set stay) or it is in force with the
 * set empty. A set left holding the old incarnation's hashes would let a later drop of such a key,
 * holding the new actor's dots, log no hash (it looks there already), and a reopen, whose replay
 * empties the set at the incarnation record, would forget it: the key's next write would issue a
 * dot the homes have seen. */
static void a_new_incarnation_short_of_memory_leaves_no_stale_dropped_key(void)
{
    if (!KVT_OOM) {
        fprintf(stderr, "     (skipped under ASan: the sanitizer owns malloc)\n");
        return;
    }
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b");
    long failed = 1;
    for (long n = 0; failed > 0 && n < 1000; n++) {
        char dir[256];
        KT_TMPDIR(dir, "apstore");
        keel_apstore_t *s;
        keel_errmsg_t msg;
        KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
        KT_EQ_INT(keel_apstore_merge(s, "own", 3, &a, NULL, &msg), 0);
        KT_EQ_INT(keel_apstore_forget_own(s, "own", 3, keel_apstore_key_item(s, "own", 3), &msg),
                  1);
        uint64_t inc = keel_apstore_incarnation(s);
        failures = 0;
        fail_in = n;
        int rc = keel_apstore_renew_incarnation(s, &msg);
        fail_in = -1;
        failed = failures;
        if (rc != 0) { /* not taken: the old actor stays, and so does what it must not reissue */
            KT_EQ_U64(keel_apstore_incarnation(s), inc);
            KT_CHECK(keel_apstore_dropped_own(s, "own", 3));
        } else {
            KT_CHECK(keel_apstore_incarnation(s) > inc);
            KT_EQ_INT(keel_apstore_dropped_count(s), 0);
            /* the key comes back, is written under the new actor, and is dropped again */
            KT_EQ_INT(keel_apstore_merge(s, "own", 3, &b, NULL, &msg), 0);
            KT_EQ_INT(
                keel_apstore_forget_own(s, "own", 3, keel_apstore_key_item(s, "own", 3), &msg), 1);
            keel_apstore_close(s);
            KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
            KT_CHECK(keel_apstore_dropped_own(s, "own", 3));
        }
        keel_apstore_close(s);
        KT_RMRF(dir);
    }
    KT_EQ_INT(failed, 0); /* every allocation of the renewal was made to fail */
    keel_apval_free(&a);
    keel_apval_free(&b);
}

/* A drop whose hash the set cannot take (no memory here; full, past KEEL_APSTORE_DROPPED_MAX)
 * makes every key count as dropped until the next incarnation, across a compaction and a
 * reopen: at worst one renewal early, never a reissued dot. */
static void a_dropped_key_the_set_cannot_take_makes_every_key_count_as_dropped(void)
{
    if (!KVT_OOM) {
        fprintf(stderr, "     (skipped under ASan: the sanitizer owns malloc)\n");
        return;
    }
    keel_apval_t a = sibling(NULL, 1, "a");
    long failed = 1;
    int saw_all = 0;
    for (long n = 0; failed > 0 && n < 1000; n++) {
        char dir[256];
        KT_TMPDIR(dir, "apstore");
        keel_apstore_t *s;
        keel_errmsg_t msg;
        KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
        KT_EQ_INT(keel_apstore_merge(s, "own", 3, &a, NULL, &msg), 0);
        failures = 0;
        fail_in = n;
        int rc = keel_apstore_forget_own(s, "own", 3, keel_apstore_key_item(s, "own", 3), &msg);
        fail_in = -1;
        failed = failures;
        if (rc == 1) {
            KT_CHECK(keel_apstore_dropped_own(s, "own", 3));
            if (keel_apstore_dropped_count(s) == 0) { /* the set could not take it */
                saw_all = 1;
                KT_CHECK(keel_apstore_dropped_own(s, "other", 5));
                KT_EQ_INT(keel_apstore_compact(s, &msg), 0);
                keel_apstore_close(s);
                KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
                KT_CHECK(keel_apstore_dropped_own(s, "other", 5)); /* the snapshot kept it */
            } else {
                keel_apstore_close(s);
                KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
            }
            KT_CHECK(keel_apstore_dropped_own(s, "own", 3));
            KT_EQ_INT(keel_apstore_renew_incarnation(s, &msg), 0);
            KT_CHECK(!keel_apstore_dropped_own(s, "own", 3));
            KT_CHECK(!keel_apstore_dropped_own(s, "other", 5));
        }
        keel_apstore_close(s);
        KT_RMRF(dir);
    }
    KT_CHECK(saw_all);
    keel_apval_free(&a);
}

/* A replica's writes of one loop turn share one fdatasync (keel server's group commit): a
 * lazy hinted merge holds its hint at once, syncs nothing, and one sync makes both durable. */
static void lazy_hinted_merges_share_one_sync(void)
{
    char dir[256];
    KT_TMPDIR(dir, "apstore");
    keel_apstore_t *s;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    keel_apval_t a = sibling(NULL, 1, "a"), b = sibling(NULL, 2, "b");
    uint64_t syncs = keel_apstore_syncs(s);
    int changed = 0;
    KT_EQ_INT(keel_apstore_merge_hinted_lazy(s, "h", 1, &a, 7, &changed, &msg), 0);
    KT_EQ_INT(changed, 1);
    KT_CHECK(keel_apstore_hint(s, 7, "h", 1) != 0);
    KT_EQ_INT(keel_apstore_merge_lazy(s, "k", 1, &b, &changed, &msg), 0);
    KT_EQ_INT(keel_apstore_merge_hinted_lazy(s, "h", 1, &a, 0, &changed, &msg), KEEL_EINVAL);
    KT_EQ_U64(keel_apstore_syncs(s), syncs);
    KT_EQ_INT(keel_apstore_sync(s, &msg), 0);
    KT_EQ_U64(keel_apstore_syncs(s), syncs + 1);
    keel_apstore_close(s);
    KT_EQ_INT(keel_apstore_open(&s, dir, &msg), 0);
    KT_EQ_INT(keel_apstore_count(s), 2);
    KT_CHECK(keel_apstore_hint(s, 7, "h", 1) != 0);
    KT_EQ_INT(keel_apstore_key_hints(s, "h", 1), 1);
    keel_apstore_close(s);
    keel_apval_free(&a), keel_apval_free(&b);
    KT_RMRF(dir);
}

int main(void)
{
    KT_RUN(hints_are_durable_and_dropped_only_for_the_version_handed_off);
    KT_RUN(merged_states_survive_a_reopen);
    KT_RUN(a_torn_tail_is_dropped_and_what_was_synced_stays);
    KT_RUN(the_ring_moved_for_and_move_hints_survive_a_reopen);
    KT_RUN(a_lazy_merge_is_durable_after_the_next_sync_or_synced_merge);
    KT_RUN(after_a_failed_sync_nothing_is_acknowledged_as_stored);
    KT_RUN(a_key_is_forgotten_only_unchanged_and_unhinted_and_stays_forgotten);
    KT_RUN(a_key_dropped_holding_own_dots_is_remembered_until_a_new_incarnation);
    KT_RUN(a_new_incarnation_short_of_memory_leaves_no_stale_dropped_key);
    KT_RUN(a_dropped_key_the_set_cannot_take_makes_every_key_count_as_dropped);
    KT_RUN(lazy_hinted_merges_share_one_sync);
    return kt_done();
}
