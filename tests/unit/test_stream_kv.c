/* test_stream_kv.c - streams in the typed keyspace: types, stamps, snapshots, replicas agree. */
#include "ktest.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <string.h>

static kvt_t a, b;

#define WRONGTYPE "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"

static void a_key_holds_one_type_and_set_replaces_a_stream(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt_at(&a, 1000, "XADD s 1-1 f v"), "$3\r\n1-1\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "SET k v"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "XADD k 1-1 f v"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "INCR s"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "APPEND s x"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "GETSET s x"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "GET s"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "MGET s k"), "*2\r\n$-1\r\n$1\r\nv\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE s"), "+stream\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE k"), "+string\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE none"), "+none\r\n");
    uint64_t rev = keel_kv_revision(&a.kv);
    KT_EQ_STR(kvt_at(&a, 1000, "SET s plain"), "+OK\r\n"); /* frees the stream (ASan checks) */
    KT_EQ_STR(kvt_read_at(&a, 1000, "GET s"), "$5\r\nplain\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 1);
    /* every stream change is a new version of its key (WATCH sees it) */
    KT_EQ_STR(kvt_at(&a, 1000, "XADD t 1-1 f v"), "$3\r\n1-1\r\n");
    uint64_t v1 = keel_kv_version_at(&a.kv, 1000, "t", 1);
    KT_EQ_STR(kvt_at(&a, 1000, "XGROUP CREATE t g 0"), "+OK\r\n");
    uint64_t v2 = keel_kv_version_at(&a.kv, 1000, "t", 1);
    KT_CHECK(v2 > v1);
    KT_EQ_STR(kvt_at(&a, 1000, "DEL t s k"), ":3\r\n");
    KT_EQ_INT(keel_kv_count(&a.kv), 0);
    kvt_free(&a);
}

static void star_ids_and_delivery_times_are_the_entry_stamps(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt_at(&a, 5000, "XADD s * f v"), "$6\r\n5000-0\r\n");
    KT_EQ_STR(kvt_at(&a, 5000, "XADD s * f v"), "$6\r\n5000-1\r\n");
    /* a leader whose clock is behind: the state's clock and the last id keep order */
    KT_EQ_STR(kvt_at(&a, 4000, "XADD s * f v"), "$6\r\n5000-2\r\n");
    KT_EQ_STR(kvt_at(&a, 7000, "XGROUP CREATE s g 0"), "+OK\r\n");
    kvt_at(&a, 7000, "XREADGROUP GROUP g c COUNT 1 STREAMS s >");
    KT_EQ_STR(kvt_read_at(&a, 7250, "XPENDING s g - + 10"),
              "*1\r\n*4\r\n$6\r\n5000-0\r\n$1\r\nc\r\n:250\r\n:1\r\n");
    kvt_free(&a);
}

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static const char *dump(kvt_t *t)
{
    static char out[1 << 15];
    size_t n = 0;
    const char *cmds[] = {
        "XRANGE s - +", "XINFO STREAM s FULL", "XPENDING s g - + 100", "XINFO GROUPS s", "TTL s",
        "GET k"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s|", kvt_read_at(t, 90000, cmds[i]));
    return out;
}

static void replicas_that_apply_the_same_entries_agree_and_snapshots_carry_streams(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char line[256], want[1 << 15];
    for (int i = 0; i < 400; i++) {
        snprintf(line, sizeof(line), "XADD s * f%d %d n x", i % 3, i);
        kvt_at(&a, 10000 + (uint64_t)i / 3, line);
        kvt_at(&b, 10000 + (uint64_t)i / 3, line);
        if (i % 50 == 0) {
            if (i == 0) {
                kvt_at(&a, 10000, "XGROUP CREATE s g 0");
                kvt_at(&b, 10000, "XGROUP CREATE s g 0");
            }
            snprintf(line, sizeof(line), "XREADGROUP GROUP g c%d COUNT 7 STREAMS s >", i % 4);
            kvt_at(&a, 20000 + (uint64_t)i, line);
            kvt_at(&b, 20000 + (uint64_t)i, line);
        }
    }
    const char *more[] = {"XDEL s 10000-5", "XTRIM s MAXLEN ~ 300", "EXPIRE s 100000",
                          "SET k v",        "XACK s g 10000-1",     "XCLAIM s g z 0 10000-2"};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        kvt_at(&a, 30000, more[i]);
        kvt_at(&b, 30000, more[i]);
    }
    snprintf(want, sizeof(want), "%s", dump(&a));
    KT_EQ_STR(dump(&b), want);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
    kvt_free(&b);
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    KT_EQ_STR(dump(&b), want);
    KT_EQ_U64(keel_kv_revision(&b.kv), keel_kv_revision(&a.kv));
    /* a broken stream body is refused whole: flip a byte inside it and fix the CRC */
    keel_buf_t bad;
    keel_buf_init(&bad, 0);
    keel_buf_append(&bad, keel_buf_rptr(&snap), keel_buf_unread(&snap));
    size_t len = keel_buf_unread(&bad);
    uint8_t *p = bad.data + bad.rpos;
    p[len - 4 - 30] ^= 0xff; /* in the last group's PEL */
    kvt_free(&b);
    kvt_init(&b, NULL);
    int rc = keel_kv_snapshot_decode(&b.kv, p, len, &m);
    KT_EQ_INT(rc, KEEL_ECORRUPT); /* the CRC catches it first */
    keel_buf_free(&bad);
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

static void nacked_entries_come_back_after_their_delay_and_dead_letter_at_the_limit(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "XADD s 1-1 f v");
    kvt_at(&a, 1000, "XADD s 2-1 f w");
    kvt_at(&a, 1000, "XGROUP CREATE s g 0");
    kvt_at(&a, 1000, "XREADGROUP GROUP g c1 STREAMS s >");
    KT_EQ_STR(kvt_at(&a, 1100, "KEEL.XNACK s g 1-1 9-9 DELAY 500"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 1599, "XREADGROUP GROUP g c2 STREAMS s >"), "*-1\r\n"); /* not before */
    KT_EQ_STR(kvt_at(&a, 1600, "XREADGROUP GROUP g c2 STREAMS s >"),
              "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1600, "XPENDING s g - + 10"),
              "*2\r\n*4\r\n$3\r\n1-1\r\n$2\r\nc2\r\n:0\r\n:2\r\n"
              "*4\r\n$3\r\n2-1\r\n$2\r\nc1\r\n:600\r\n:1\r\n");
    KT_EQ_STR(kvt_at(&a, 1600, "KEEL.XDEADLETTER s g MAXDELIVERIES 2 STREAM dlq"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&a, 1600, "KEEL.XDEADLETTER s g MAXDELIVERIES 2 STREAM s"),
              "-ERR keel: a stream cannot be its own dead-letter stream\r\n");
    KT_EQ_STR(kvt_at(&a, 1700, "KEEL.XNACK s g 1-1 ERROR boom"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1700, "XPENDING s g - + 10"),
              "*1\r\n*4\r\n$3\r\n2-1\r\n$2\r\nc1\r\n:700\r\n:1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1700, "XRANGE dlq - +"),
              "*1\r\n*2\r\n$6\r\n1700-0\r\n*12\r\n$1\r\nf\r\n$1\r\nv\r\n"
              "$11\r\nkeel-stream\r\n$1\r\ns\r\n$10\r\nkeel-group\r\n$1\r\ng\r\n"
              "$7\r\nkeel-id\r\n$3\r\n1-1\r\n$15\r\nkeel-deliveries\r\n$1\r\n2\r\n"
              "$10\r\nkeel-error\r\n$4\r\nboom\r\n");
    /* without DELAY: a backoff within [0, 1000] ms for a first delivery */
    KT_EQ_STR(kvt_at(&a, 2000, "KEEL.XNACK s g 2-1"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 3001, "XREADGROUP GROUP g c3 COUNT 5 STREAMS s >"),
              "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$1\r\nf\r\n$1\r\nw\r\n");
    /* a claim of an entry at its limit dead-letters it instead */
    KT_EQ_STR(kvt_at(&a, 4000, "XAUTOCLAIM s g c4 0 0"),
              "*3\r\n$3\r\n0-0\r\n*0\r\n*1\r\n$3\r\n2-1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 4000, "XLEN dlq"), ":2\r\n");
    KT_EQ_STR(kvt_read_at(&a, 4000, "XPENDING s g"), "*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n");
    KT_EQ_STR(kvt_at(&a, 4000, "KEEL.XNACK s nog 1-1"),
              "-NOGROUP No such key 's' or consumer group 'nog'\r\n");
    KT_EQ_STR(kvt_at(&a, 4000, "KEEL.XNACK s g DELAY 5"), "-ERR syntax error\r\n");
    KT_EQ_STR(kvt_at(&a, 4000, "KEEL.XNACK s g 1-1 DELAY -5"),
              "-ERR keel: DELAY must be an integer >= 0 (ms)\r\n");
    KT_EQ_STR(kvt_at(&a, 4000, "KEEL.XDEADLETTER s g OFF"), "+OK\r\n");
    /* DELAY 0: due at once, in the same millisecond */
    kvt_at(&a, 5000, "XADD t 1-1 f v");
    kvt_at(&a, 5000, "XGROUP CREATE t g 0");
    kvt_at(&a, 5000, "XREADGROUP GROUP g c STREAMS t >");
    KT_EQ_STR(kvt_at(&a, 5000, "KEEL.XNACK t g 1-1 DELAY 0"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 5000, "XREADGROUP GROUP g d STREAMS t >"),
              "*1\r\n*2\r\n$1\r\nt\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    kvt_free(&a);
}

int main(void)
{
    KT_RUN(a_key_holds_one_type_and_set_replaces_a_stream);
    KT_RUN(star_ids_and_delivery_times_are_the_entry_stamps);
    KT_RUN(replicas_that_apply_the_same_entries_agree_and_snapshots_carry_streams);
    KT_RUN(nacked_entries_come_back_after_their_delay_and_dead_letter_at_the_limit);
    return kt_done();
}
