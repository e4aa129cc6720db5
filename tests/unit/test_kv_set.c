/* test_kv_set.c - the set type: commands, random picks that every replica makes alike,
   stores over other types, memory, snapshots. */
#include "test_kv_util.h"

#include <stdio.h>

#define WRONGTYPE "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"

static kvt_t a, b;

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static void members_are_added_tested_and_removed_and_an_empty_set_is_no_key(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt_at(&a, 1000, "SADD s 1 2 2 3"), ":3\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "OBJECT ENCODING s"), "$6\r\nintset\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SADD s x 3"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "OBJECT ENCODING s"), "$9\r\nhashtable\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SMISMEMBER s 1 9 x"), "*3\r\n:1\r\n:0\r\n:1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SCARD s"), ":4\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE s"), "+set\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SCAN 0 TYPE set"), "*2\r\n$1\r\n0\r\n*1\r\n$1\r\ns\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SREM s 1 2 3 x 9"), ":4\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "EXISTS s"), ":0\r\n");
    KT_EQ_U64(a.kv.bytes, 0);
    KT_EQ_STR(kvt_at(&a, 1000, "SET k v"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SADD k m"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "SPOP k"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "SINTER k"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "SUNION nope k"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "SINTERCARD 2 nope k"), WRONGTYPE);
    kvt_free(&a);
}

static void stores_replace_any_type_and_an_empty_result_deletes(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "SADD a 1 2 3 4");
    kvt_at(&a, 1000, "SADD b 3 4 5");
    kvt_at(&a, 1000, "SET d v");
    kvt_at(&a, 1000, "PEXPIRE d 5000");
    KT_EQ_STR(kvt_at(&a, 1000, "SINTERSTORE d a b"), ":2\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "PTTL d"), ":-1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SINTERCARD 2 a b LIMIT 1"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SUNIONSTORE d a b"), ":5\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SDIFFSTORE a a b"), ":2\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SCARD a"), ":2\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SDIFFSTORE d b b"), ":0\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "EXISTS d"), ":0\r\n");
    /* SMOVE: the last member leaves its key, the destination is made */
    KT_EQ_STR(kvt_at(&a, 1000, "SREM a 1"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SMOVE a c 2"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "EXISTS a"), ":0\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SMEMBERS c"), "*1\r\n$1\r\n2\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "DEL b c"), ":2\r\n");
    KT_EQ_U64(a.kv.bytes, 0);
    kvt_free(&a);
}

static const char *dump(kvt_t *t)
{
    static char out[1 << 16];
    size_t n = 0;
    const char *cmds[] = {"SMEMBERS s", "SSCAN s 0 COUNT 5", "SRANDMEMBER s 7", "SRANDMEMBER s -7",
                          "SMEMBERS t"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s|", kvt_read_at(t, 5000, cmds[i]));
    return out;
}

/*
 * SPOP is a write: every replica must remove the same members. Two replicas apply the same
 * entries, one of them restored from a snapshot half-way (its table built in another order
 * and size); their pops, and everything after, agree.
 */
static void spop_removes_the_same_members_on_every_replica_and_after_a_snapshot(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char line[256], want[1 << 16], got[1 << 16];
    for (int i = 0; i < 500; i++) {
        snprintf(line, sizeof(line), "SADD s m%d n%d", i, i * 7);
        kvt_at(&a, 1000 + (uint64_t)i, line);
        kvt_at(&b, 1000 + (uint64_t)i, line);
    }
    for (int i = 0; i < 400; i++) { /* a shrink in a's table that b will never have had */
        snprintf(line, sizeof(line), "SREM s n%d", i * 7);
        kvt_at(&a, 2000, line);
        kvt_at(&b, 2000, line);
    }
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
    kvt_free(&b);
    kvt_init(&b, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL),
              0);
    b.index = a.index;
    for (int i = 0; i < 30; i++) {
        snprintf(line, sizeof(line), i % 3 ? "SPOP s %d" : "SPOP s", i % 5 + 1);
        snprintf(want, sizeof(want), "%s", kvt_at(&a, 3000 + (uint64_t)i, line));
        snprintf(got, sizeof(got), "%s", kvt_at(&b, 3000 + (uint64_t)i, line));
        KT_EQ_STR(got, want);
        kvt_at(&a, 3000, "SUNIONSTORE t s");
        kvt_at(&b, 3000, "SUNIONSTORE t s");
    }
    snprintf(want, sizeof(want), "%s", dump(&a));
    KT_EQ_STR(dump(&b), want);
    KT_EQ_U64(b.kv.bytes, a.kv.bytes);
    /* pops at another time choose others: the choice comes from the entry */
    KT_CHECK(strcmp(kvt_at(&a, 9000, "SPOP s 3"), kvt_at(&b, 9001, "SPOP s 3")) != 0);
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

/*
 * A small set is packed in one block, a big one chained (kv_coll.h); a set that was big and
 * shrank stays chained. Neither layout shows: a set shrunk to five members and a fresh one of
 * the same five answer alike, cursor for cursor and pick for pick, and pop the same members.
 */
static void a_shrunk_set_and_a_fresh_one_answer_alike_whatever_their_layout(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char line[512], want[1 << 16];
    size_t n = (size_t)snprintf(line, sizeof(line), "SADD s");
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " m%d", i);
    kvt_at(&a, 1000, line); /* revision 1 on both: the same table seed */
    kvt_at(&b, 1000, "SADD s m0 m8 m16");
    n = (size_t)snprintf(line, sizeof(line), "SREM s");
    for (int i = 0; i < 40; i++)
        if (i % 8 != 0)
            n += (size_t)snprintf(line + n, sizeof(line) - n, " m%d", i);
    kvt_at(&a, 1000, line);
    kvt_at(&b, 1000, "SADD s m24 m32");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SCARD s"), ":5\r\n");
    snprintf(want, sizeof(want), "%s", dump(&a));
    KT_EQ_STR(dump(&b), want);
    const char *cmds[] = {"SSCAN s 0 COUNT 1", "SRANDMEMBER s 2", "SPOP s",
                          "SSCAN s 0 COUNT 2", "SPOP s 2",        "SMEMBERS s"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        snprintf(want, sizeof(want), "%s", kvt_at(&a, 4000 + i, cmds[i]));
        KT_EQ_STR(kvt_at(&b, 4000 + i, cmds[i]), want);
    }
    kvt_free(&a);
    kvt_free(&b);
}

static void random_members_are_members_distinct_when_asked(void)
{
    kvt_init(&a, NULL);
    static char line[4096];
    size_t n = (size_t)snprintf(line, sizeof(line), "SADD s");
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " %d", i);
    kvt_at(&a, 1000, line);
    for (uint64_t t = 0; t < 50; t++) {
        /* few of many (random picks), and a third or more (a shuffle) */
        const char *r = kvt_read_at(&a, t, t % 2 ? "SRANDMEMBER s 20" : "SRANDMEMBER s 21");
        int seen[60] = {0}, count = 0;
        for (const char *p = strchr(r, '\n') + 1; *p; p = strchr(strchr(p, '\n') + 1, '\n') + 1) {
            int v = atoi(strchr(p, '\n') + 1);
            KT_CHECK(v >= 0 && v < 60 && !seen[v]);
            seen[v] = 1;
            count++;
        }
        KT_EQ_INT(count, t % 2 ? 20 : 21);
    }
    kvt_free(&a);
}

static void limits_are_named_errors(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "SADD s a");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SRANDMEMBER s -1048577"),
              "-ERR keel: a negative count asks for at most 1048576 picks\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "SRANDMEMBER s -3"), "*3\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "HRANDFIELD s -1048577"), WRONGTYPE);
    kvt_free(&a);
}

int main(void)
{
    KT_RUN(members_are_added_tested_and_removed_and_an_empty_set_is_no_key);
    KT_RUN(stores_replace_any_type_and_an_empty_result_deletes);
    KT_RUN(spop_removes_the_same_members_on_every_replica_and_after_a_snapshot);
    KT_RUN(a_shrunk_set_and_a_fresh_one_answer_alike_whatever_their_layout);
    KT_RUN(random_members_are_members_distinct_when_asked);
    KT_RUN(limits_are_named_errors);
    return kt_done();
}
