/* test_kv_oom.c - KV under allocation failure: every failing apply or load changes nothing. */
#include "base/crc32c.h"
#include "test_kv_util.h"
#include "test_oom.h"

#include <stdio.h>

static long history_given_up; /* applies that kept their change but not its history */

static kvt_t t;

enum { KEYS = 40 };

/* Content of the keyspace k0..k39 plus the counters, as one comparable string. */
static void describe(const keel_kv_t *kv, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(
        out, cap, "rev %llu count %zu applied %llu leases %llu/%zu fence %llu/%zu next %llu |",
        (unsigned long long)keel_kv_revision(kv), keel_kv_count(kv),
        (unsigned long long)keel_kv_applied_index(kv), (unsigned long long)kv->lease_id_last,
        kv->leases ? kv->leases->count : 0, (unsigned long long)kv->fence_last,
        kv->locks ? kv->locks->count : 0, (unsigned long long)keel_kv_next_deadline_ms(kv));
    for (int i = 0; i < KEYS && n < cap; i++) {
        char key[16];
        int kl = snprintf(key, sizeof(key), "k%d", i);
        keel_kv_value_t v;
        if (keel_kv_get(kv, key, (size_t)kl, &v) != 0)
            continue;
        n += (size_t)snprintf(out + n, cap - n, " %s=%.*s@%llu/%llu~%llu", key, (int)v.len,
                              (const char *)v.value, (unsigned long long)v.version,
                              (unsigned long long)v.create_revision,
                              (unsigned long long)v.expire_ms);
    }
    /* the lists' elements and versions (a typed key's value above is empty) */
    static const char *const lists[] = {"la", "lb", "lc"};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]) && n < cap; i++) {
        const uint8_t *argv[4] = {(const uint8_t *)"LRANGE", (const uint8_t *)lists[i],
                                  (const uint8_t *)"0", (const uint8_t *)"-1"};
        size_t lens[4] = {6, 2, 1, 2};
        keel_buf_t b;
        keel_buf_init(&b, 0);
        if (keel_kv_read(kv, 4, argv, lens, &b) == 0)
            n += (size_t)snprintf(out + n, cap - n, " %s=%.*s@%llu", lists[i],
                                  (int)keel_buf_unread(&b), (const char *)keel_buf_rptr(&b),
                                  (unsigned long long)keel_kv_version_at(kv, 0, lists[i], 2));
        keel_buf_free(&b);
    }
    /* every other key too (the typed ones: their objects' bodies), and the memory count:
       the snapshot's bytes, as the copy was restored from one snapshot each time */
    keel_buf_t b;
    keel_buf_init(&b, 0);
    long saved = fail_in;
    fail_in = -1;
    if (keel_kv_snapshot_encode(kv, &b) == 0 && n < cap)
        snprintf(out + n, cap - n, " | snapshot %zu bytes crc %08x | bytes %zu",
                 keel_buf_unread(&b), keel_crc32c(0, keel_buf_rptr(&b), keel_buf_unread(&b)),
                 kv->bytes);
    fail_in = saved;
    keel_buf_free(&b);
}

/*
 * For N = 0, 1, ...: restores a copy of the current state from a snapshot,
 * applies `line` to the copy with the Nth allocation failing, and checks that
 * the result is either KEEL_ENOMEM with state and reply untouched, or success
 * with the expected reply (a failure the code tolerates, such as a bigger
 * table it could not get). Stops at the first N past the last allocation,
 * then applies `line` to the real state.
 */
/*
 * The change history after an apply that succeeded: it holds every change of the new
 * revision or none of them (a failed history allocation gives the revision up and moves
 * the oldest revision past it); never a part. *held counts the changes held.
 */
static int history_whole(const keel_kv_t *kv, uint64_t rev_before, size_t *held)
{
    uint64_t rev = keel_kv_revision(kv);
    *held = keel_kv_history_len(kv);
    if (rev == rev_before)
        return *held == 0 && keel_kv_history_oldest(kv) == rev + 1;
    if (*held == 0)
        return keel_kv_history_oldest(kv) == rev + 1;
    keel_kv_change_t first, last;
    keel_kv_history_at(kv, 0, &first);
    keel_kv_history_at(kv, *held - 1, &last);
    return keel_kv_history_oldest(kv) == rev_before + 1 && first.revision == rev_before + 1 &&
           last.revision == rev;
}

static void apply_under_failures(const char *line, const char *want, int *failed_attempts)
{
    size_t held_whole = 0, held_partial = 0; /* changes held without / with an injected failure */
    static char before[1 << 14], after[1 << 14];
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&t.entry);
    KT_EQ_INT(keel_kv_entry_encode(&t.entry, 1, argc, argv, lens), 0);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    for (long n = 0;; n++) {
        keel_kv_t copy;
        KT_EQ_INT(keel_kv_init(&copy, NULL), 0);
        KT_EQ_INT(
            keel_kv_snapshot_decode(&copy, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL), 0);
        describe(&copy, before, sizeof(before));
        keel_buf_t reply; /* fresh each time, so its growth allocates too */
        keel_buf_init(&reply, 0);
        keel_buf_append(&reply, "x", 1);
        long f0 = failures;
        fail_in = n;
        int rc = keel_kv_apply(&copy, t.index + 1, keel_buf_rptr(&t.entry),
                               keel_buf_unread(&t.entry), &reply);
        fail_in = -1;
        int injected = failures != f0;
        if (rc == 0) {
            size_t held;
            KT_CHECK(history_whole(&copy, keel_kv_revision(&t.kv), &held));
            if (!injected)
                held_whole = held;
            else if (held != 0)
                held_partial = held;
            else if (keel_kv_revision(&copy) != keel_kv_revision(&t.kv))
                history_given_up++;
            if (keel_buf_unread(&reply) != 1 + strlen(want))
                KT_FAIL("%s (allocation %ld failing): %.*s", line, n, (int)keel_buf_unread(&reply),
                        (const char *)keel_buf_rptr(&reply));
            if (memcmp(keel_buf_rptr(&reply) + 1, want, strlen(want)) != 0)
                KT_FAIL("%s: %.*s", line, (int)keel_buf_unread(&reply),
                        (const char *)keel_buf_rptr(&reply));
        } else {
            KT_EQ_INT(rc, KEEL_ENOMEM);
            KT_CHECK(injected);
            KT_EQ_INT(keel_buf_unread(&reply), 1);
            describe(&copy, after, sizeof(after));
            KT_EQ_STR(after, before);
            (*failed_attempts)++;
        }
        keel_buf_free(&reply);
        keel_kv_free(&copy);
        if (!injected)
            break;
        KT_CHECK(n < 1000);
    }
    keel_buf_free(&snap);
    /* a failure elsewhere (a bigger table) leaves the history whole: all of it or nothing */
    KT_CHECK(held_partial == 0 || held_partial == held_whole);
    KT_EQ_STR(kvt(&t, line), want);
}

static void failed_allocations_leave_the_state_as_it_was(void)
{
    if (!KVT_OOM) {
        fprintf(stderr, "     (skipped under ASan: the sanitizer owns malloc)\n");
        return;
    }
    kvt_free(&t);
    kvt_init(&t, NULL);
    int failed = 0;
    char line[512], want[64];
    /* new keys, growing the table through several resizes */
    for (int i = 0; i < KEYS; i += 4) {
        snprintf(line, sizeof(line), "MSET k%d a k%d bb k%d ccc k%d dddd", i, i + 1, i + 2, i + 3);
        apply_under_failures(line, "+OK\r\n", &failed);
    }
    apply_under_failures("SET k0 a-much-longer-value-than-before-so-it-must-grow", "+OK\r\n",
                         &failed);
    apply_under_failures("SET k0 short", "+OK\r\n", &failed);
    apply_under_failures("SET k0 q GET", "$5\r\nshort\r\n", &failed);
    for (int i = 0; i < 20; i++) {
        snprintf(want, sizeof(want), ":%d\r\n", 2 + (i + 1) * 7);
        apply_under_failures("APPEND k1 1234567", want, &failed);
    }
    apply_under_failures("DEL k1", ":1\r\n", &failed);
    apply_under_failures("INCR k1", ":1\r\n", &failed);
    apply_under_failures("INCRBY k1 123456789012", ":123456789013\r\n", &failed);
    apply_under_failures("GETSET k2 x", "$3\r\nccc\r\n", &failed);
    apply_under_failures("MGET k2 k3", "*2\r\n$1\r\nx\r\n$4\r\ndddd\r\n", &failed);
    /* deadlines: the index grows past its first 16 slots */
    for (int i = 4; i < 24; i++) {
        snprintf(line, sizeof(line), "SET k%d v%d PX %d", i, i, 100000000 + i);
        apply_under_failures(line, "+OK\r\n", &failed);
    }
    apply_under_failures("PEXPIRE k2 100000000", ":1\r\n", &failed);
    apply_under_failures("APPEND k4 a-value-long-enough-to-move-the-entry", ":39\r\n", &failed);
    apply_under_failures("PERSIST k5", ":1\r\n", &failed);
    snprintf(want, sizeof(want), ":%llu\r\n", (unsigned long long)keel_kv_revision(&t.kv) + 1);
    apply_under_failures("KEEL.CAS fresh 0 new", want, &failed);
    apply_under_failures("SET fresh w PX 100000000", "+OK\r\n", &failed);
    /* leases and locks: the first of each creates its sub-table */
    apply_under_failures("KEEL.LEASE GRANT 100000000", ":1\r\n", &failed);
    apply_under_failures("KEEL.SET k38 leased LEASE 1", "+OK\r\n", &failed);
    apply_under_failures("KEEL.SET newkey leased LEASE 1", "+OK\r\n", &failed);
    apply_under_failures("KEEL.LEASE GRANT 100000000", ":2\r\n", &failed);
    apply_under_failures("KEEL.LOCK L 100000000", ":1\r\n", &failed);
    apply_under_failures("KEEL.LOCK M 100000000", ":2\r\n", &failed);
    apply_under_failures("KEEL.FENCED L 1 SET fenced v", "+OK\r\n", &failed);
    apply_under_failures("KEEL.LEASE REVOKE 1", ":2\r\n", &failed);
    /* issue 19's strings and keyspace writes */
    apply_under_failures("SETEX sx 100000 v", "+OK\r\n", &failed);
    apply_under_failures("SETRANGE sx 40 tail", ":44\r\n", &failed);
    apply_under_failures("SETRANGE sr 3 abc", ":6\r\n", &failed);
    apply_under_failures("GETEX k0 PX 200000000", "$1\r\nq\r\n", &failed);
    apply_under_failures("INCRBYFLOAT fl 1.5", "$3\r\n1.5\r\n", &failed);
    apply_under_failures("INCRBYFLOAT fl 100", "$5\r\n101.5\r\n", &failed);
    apply_under_failures("MSETNX m1 a m2 b", ":1\r\n", &failed);
    apply_under_failures("SETNX m4 d", ":1\r\n", &failed);
    apply_under_failures("RENAME m1 m3", "+OK\r\n", &failed);
    apply_under_failures("COPY k0 k0c", ":1\r\n", &failed);
    apply_under_failures("RENAME k0c m2", "+OK\r\n", &failed);
    apply_under_failures("GETDEL m2", "$1\r\nq\r\n", &failed);
    apply_under_failures("XADD st 1-1 f v", "$3\r\n1-1\r\n", &failed);
    apply_under_failures("COPY st st2", ":1\r\n", &failed);
    apply_under_failures("RENAME st2 st3", "+OK\r\n", &failed);
    apply_under_failures("COPY st3 m3 REPLACE", ":1\r\n", &failed);
    apply_under_failures("SETBIT bb 100 1", ":0\r\n", &failed);
    apply_under_failures("SETBIT bb 300 1", ":0\r\n", &failed);
    apply_under_failures("BITOP OR bo bb sx", ":44\r\n", &failed);
    apply_under_failures("BITOP NOT bo bb", ":38\r\n", &failed);
    apply_under_failures("BITOP AND bo nope", ":0\r\n", &failed);
    apply_under_failures("BITFIELD bf SET u8 40 7", "*1\r\n:0\r\n", &failed);
    apply_under_failures("BITFIELD bf INCRBY u8 40 1", "*1\r\n:8\r\n", &failed);
    apply_under_failures("BITFIELD bf SET i16 #40 -1", "*1\r\n:0\r\n", &failed);
    /* lists (kv_list.c): creation, node growth, edits inside, moves, pops, a deep copy */
    apply_under_failures("RPUSH la a b c d e", ":5\r\n", &failed);
    apply_under_failures("LPUSH la z", ":6\r\n", &failed);
    char big[9 + 300 + 1] = "RPUSH la "; /* a 300-byte element: a new list node */
    memset(big + 9, 'x', 300);
    big[309] = '\0';
    apply_under_failures(big, ":7\r\n", &failed);
    apply_under_failures("LINSERT la BEFORE c ins", ":8\r\n", &failed);
    apply_under_failures("LSET la 0 Z", "+OK\r\n", &failed);
    apply_under_failures("LREM la 1 b", ":1\r\n", &failed);
    apply_under_failures("LTRIM la 0 5", "+OK\r\n", &failed);
    /* SORT (kv_sort.c): a stored list, its sort vector and pattern keys under failures */
    apply_under_failures("SORT la ALPHA STORE ls", ":6\r\n", &failed);
    apply_under_failures("SORT la BY nosort GET # GET k*->f STORE lz", ":12\r\n", &failed);
    apply_under_failures("LMOVE la lb LEFT RIGHT", "$1\r\nZ\r\n", &failed);
    apply_under_failures("RPOPLPUSH la lb", "$1\r\ne\r\n", &failed);
    apply_under_failures("LMPOP 2 nope la RIGHT COUNT 2",
                         "*2\r\n$2\r\nla\r\n*2\r\n$1\r\nd\r\n$1\r\nc\r\n", &failed);
    apply_under_failures("COPY la lc", ":1\r\n", &failed);
    apply_under_failures("LPOP lb 2", "*2\r\n$1\r\ne\r\n$1\r\nZ\r\n", &failed);
    apply_under_failures("KEEL.BPOP t BLPOP la 0", "*2\r\n$2\r\nla\r\n$1\r\na\r\n", &failed);
    apply_under_failures("LMOVE lc lc LEFT RIGHT", "$1\r\na\r\n", &failed);
    /* sorted sets: new keys, growing sets, stores built whole, pops and removals */
    apply_under_failures("ZADD zz 1 a 2 b 3 c", ":3\r\n", &failed);
    for (int i = 0; i < 20; i++) {
        snprintf(line, sizeof(line), "ZADD zz %d m%d %d n%d", i, i, -i, i);
        apply_under_failures(line, ":2\r\n", &failed);
    }
    apply_under_failures("ZADD zz 4 d 0.5 a", ":1\r\n", &failed);
    apply_under_failures("ZINCRBY zz 1 b", "$1\r\n3\r\n", &failed);
    apply_under_failures("ZUNIONSTORE zu 2 zz zz WEIGHTS 1 2", ":44\r\n", &failed);
    apply_under_failures("ZRANGESTORE zr zz 0 1", ":2\r\n", &failed);
    apply_under_failures("ZPOPMAX zz", "*2\r\n$3\r\nm19\r\n$2\r\n19\r\n", &failed);
    apply_under_failures("ZREM zr n19 n18", ":2\r\n", &failed);
    apply_under_failures("COPY zu zc", ":1\r\n", &failed);
    apply_under_failures("ZREMRANGEBYRANK zc 0 -1", ":44\r\n", &failed);
    /* deleting most keys shrinks the table */
    for (int i = 2; i < KEYS - 2; i++) {
        snprintf(line, sizeof(line), "DEL k%d", i);
        apply_under_failures(line, ":1\r\n", &failed);
    }
    KT_CHECK(failed >= 40); /* the failure paths were really taken */
    KT_CHECK(history_given_up >= 40);
    fprintf(stderr,
            "     %d failed attempts, each left state and reply untouched; %ld applies gave up "
            "their revision's history instead of failing\n",
            failed, history_given_up);
}

static void a_failed_snapshot_load_leaves_the_target_empty(void)
{
    if (!KVT_OOM) {
        fprintf(stderr, "     (skipped under ASan: the sanitizer owns malloc)\n");
        return;
    }
    kvt_free(&t);
    kvt_init(&t, NULL);
    char line[64];
    for (int i = 0; i < 300; i++) {
        snprintf(line, sizeof(line), "SET k%d value%d%s", i, i, i % 2 ? " PX 100000" : "");
        kvt(&t, line);
    }
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    int failed = 0;
    for (long n = 0;; n++) {
        keel_kv_t fresh;
        KT_EQ_INT(keel_kv_init(&fresh, NULL), 0);
        keel_errmsg_t m;
        long f0 = failures;
        fail_in = n;
        int rc = keel_kv_snapshot_decode(&fresh, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m);
        fail_in = -1;
        if (rc == 0) {
            KT_EQ_INT(keel_kv_count(&fresh), 300);
            keel_kv_free(&fresh);
            if (failures == f0)
                break;
            continue;
        }
        KT_EQ_INT(rc, KEEL_ENOMEM);
        KT_EQ_INT(keel_kv_count(&fresh), 0);
        KT_EQ_U64(keel_kv_revision(&fresh), 0);
        KT_EQ_U64(keel_kv_applied_index(&fresh), 0);
        keel_kv_free(&fresh);
        failed++;
        KT_CHECK(n < 1000);
    }
    KT_CHECK(failed >= 300); /* one allocation per key at least */
    /* and a failing writer allocation fails the encode cleanly */
    keel_buf_t out;
    keel_buf_init(&out, 0);
    fail_in = 0;
    int rc = keel_kv_snapshot_encode(&t.kv, &out);
    fail_in = -1;
    KT_EQ_INT(rc, KEEL_ENOMEM);
    KT_EQ_INT(keel_buf_unread(&out), 0);
    keel_buf_free(&out);
    keel_buf_free(&snap);
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(failed_allocations_leave_the_state_as_it_was);
    KT_RUN(a_failed_snapshot_load_leaves_the_target_empty);
    kvt_free(&t);
    return kt_done();
}
