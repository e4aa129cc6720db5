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

/* A NACK, then a claim: the claimer holds the entry, '>' does not hand it out again when the
 * NACK's delay passes (it did: two consumers then held one entry; found by the streams
 * nemesis's checker). A NACK after the claim returns it as usual. */
static void a_claim_takes_a_nacked_entry_out_of_the_groups_hands(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "XADD s 1-1 f v");
    kvt_at(&a, 1000, "XGROUP CREATE s g 0");
    kvt_at(&a, 1000, "XREADGROUP GROUP g c1 STREAMS s >");
    KT_EQ_STR(kvt_at(&a, 1100, "KEEL.XNACK s g 1-1 DELAY 500"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 1200, "XCLAIM s g c2 0 1-1 JUSTID"), "*1\r\n$3\r\n1-1\r\n");
    KT_EQ_STR(kvt_at(&a, 2000, "XREADGROUP GROUP g c3 STREAMS s >"), "*-1\r\n");
    KT_EQ_STR(kvt_at(&a, 2100, "KEEL.XNACK s g 1-1 DELAY 100"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 2150, "XAUTOCLAIM s g c4 0 0 JUSTID"),
              "*3\r\n$3\r\n0-0\r\n*1\r\n$3\r\n1-1\r\n*0\r\n");
    KT_EQ_STR(kvt_at(&a, 3000, "XREADGROUP GROUP g c3 STREAMS s >"), "*-1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 3000, "XPENDING s g - + 10"),
              "*1\r\n*4\r\n$3\r\n1-1\r\n$2\r\nc4\r\n:850\r\n:1\r\n");
    KT_EQ_STR(kvt_at(&a, 3000, "KEEL.XNACK s g 1-1 DELAY 0"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 3000, "XREADGROUP GROUP g c3 STREAMS s >"),
              "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    kvt_free(&a);
}

/* The metrics' stream list: stream keys only, the first `cap` by name (a prefix first),
 * sorted, expired ones left out, every one counted; against a sorted model, 300 names. */
static void the_first_streams_by_name_are_listed_from_the_whole_key_table(void)
{
    kvt_init(&a, NULL);
    char line[96];
    for (int i = 0; i < 300; i++) { /* names in a scrambled order, with prefixes of others */
        int k = (i * 7919) % 300;
        snprintf(line, sizeof(line), "XADD %s%d 1-1 f v", k % 2 ? "b" : "a", k / 3);
        kvt_at(&a, 1000, line);
        snprintf(line, sizeof(line), "SET a%d-string v", k);
        kvt_at(&a, 1000, line);
    }
    kvt_at(&a, 1000, "XADD a 1-1 f v");
    kvt_at(&a, 1000, "XADD gone 1-1 f v");
    kvt_at(&a, 1000, "PEXPIRE gone 10");
    keel_kv_stream_ref_t out[8];
    size_t total = 0, n = keel_kv_streams_first(&a.kv, 2000, 256, out, 8, &total);
    KT_EQ_INT(n, 8);
    KT_EQ_INT(total, 201); /* a0..a99 (b), b0..b99 (b), a: "gone" expired */
    const char *want[8] = {"a", "a0", "a1", "a10", "a11", "a12", "a13", "a14"};
    for (size_t i = 0; i < 8; i++)
        KT_CHECK(out[i].key_len == strlen(want[i]) &&
                 memcmp(out[i].key, want[i], out[i].key_len) == 0);
    n = keel_kv_streams_first(&a.kv, 2000, 1, out, 8, &total); /* names over 1 byte: counted */
    KT_EQ_INT(n, 1);
    KT_EQ_INT(total, 201);
    kvt_free(&a);
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void priority_reads_fill_count_from_the_first_streams_and_the_guard_turns(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "XADD hi 1-1 f h1");
    kvt_at(&a, 1000, "XADD hi 2-1 f h2");
    for (int i = 1; i <= 5; i++) {
        char line[64];
        snprintf(line, sizeof(line), "XADD lo %d-1 f l%d", i, i);
        kvt_at(&a, 1000, line);
    }
    kvt_at(&a, 1000, "XGROUP CREATE hi g 0");
    kvt_at(&a, 1000, "XGROUP CREATE lo g 0");
    /* COUNT 3: both of hi's, then one of lo's */
    const char *r =
        kvt_at(&a, 1000, "XREADGROUP GROUP g c COUNT 3 KEEL.PRIORITY STREAMS hi lo > >");
    KT_CHECK(starts(r, "*2\r\n*2\r\n$2\r\nhi\r\n*2\r\n"));
    KT_CHECK(strstr(r, "$2\r\nlo\r\n*1\r\n") != NULL);
    /* no COUNT: only the first stream with work, all of it */
    r = kvt_at(&a, 1000, "XREADGROUP GROUP g c KEEL.PRIORITY STREAMS hi lo > >");
    KT_CHECK(starts(r, "*1\r\n*2\r\n$2\r\nlo\r\n*4\r\n"));
    KT_EQ_STR(kvt_at(&a, 1000, "XREADGROUP GROUP g c KEEL.PRIORITY STREAMS hi lo > >"), "*-1\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "XREADGROUP GROUP g c KEEL.PRIORITY STREAMS hi lo > 0"),
              "-ERR keel: KEEL.PRIORITY reads new entries only: use '>' for every stream\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "XREADGROUP GROUP g c KEEL.STARVE 0 STREAMS hi >"),
              "-ERR keel: KEEL.STARVE must be an integer >= 1\r\n");
    /* the guard: c has made 2 priority reads; with STARVE 2 the 4th serves lo first */
    kvt_at(&a, 2000, "XADD hi 3-1 f h3");
    kvt_at(&a, 2000, "XADD hi 4-1 f h4");
    kvt_at(&a, 2000, "XADD lo 6-1 f l6");
    kvt_at(&a, 2000, "XADD lo 7-1 f l7");
    r = kvt_at(&a, 2000, "XREADGROUP GROUP g c COUNT 1 KEEL.STARVE 2 STREAMS hi lo > >");
    KT_CHECK(strstr(r, "$2\r\nhi\r\n") != NULL && strstr(r, "$2\r\nlo\r\n") == NULL);
    r = kvt_at(&a, 2000, "XREADGROUP GROUP g c COUNT 1 KEEL.STARVE 2 STREAMS hi lo > >");
    KT_CHECK(strstr(r, "$2\r\nlo\r\n") != NULL && strstr(r, "$2\r\nhi\r\n") == NULL);
    r = kvt_at(&a, 2000, "XREADGROUP GROUP g c COUNT 1 KEEL.STARVE 2 STREAMS hi lo > >");
    KT_CHECK(strstr(r, "$2\r\nhi\r\n") != NULL);
    kvt_free(&a);
}

/* Applies the retention sweep the leader would propose at now_ms; returns its reply. */
static const char *sweep_at(kvt_t *t, uint64_t now_ms)
{
    keel_buf_reset(&t->entry);
    keel_buf_reset(&t->reply);
    if (keel_kv_retention_sweep_encode(&t->kv, now_ms, &t->entry) != 0)
        return "(encode failed)";
    if (keel_buf_unread(&t->entry) == 0)
        return "(nothing due)";
    if (keel_kv_apply(&t->kv, ++t->index, keel_buf_rptr(&t->entry), keel_buf_unread(&t->entry),
                      &t->reply) != 0)
        return "(apply failed)";
    memcpy(t->text, keel_buf_rptr(&t->reply), keel_buf_unread(&t->reply));
    t->text[keel_buf_unread(&t->reply)] = '\0';
    return t->text;
}

static void retention_by_age_is_swept_by_the_leader_and_survives_a_snapshot(void)
{
    kvt_init(&a, NULL);
    KT_EQ_U64(keel_kv_next_retention_ms(&a.kv), KEEL_KV_NO_DEADLINE);
    KT_EQ_STR(kvt_at(&a, 1000, "KEEL.XRETAIN s MAXAGE 500"), "-ERR no such key\r\n");
    kvt_at(&a, 1000, "XADD s 1000-0 f v");
    kvt_at(&a, 1200, "XADD s 1200-0 f v");
    kvt_at(&a, 1400, "XADD s 1400-0 f v");
    KT_EQ_STR(kvt_at(&a, 1400, "KEEL.XRETAIN s MAXAGE 500"), "+OK\r\n");
    KT_EQ_U64(keel_kv_next_retention_ms(&a.kv), 1500); /* the oldest entry's 1000 + 500 */
    KT_EQ_STR(sweep_at(&a, 1499), "(nothing due)");
    KT_EQ_STR(sweep_at(&a, 1700), ":2\r\n"); /* 1000 and 1200 are 500 ms old at 1700 */
    KT_EQ_STR(kvt_read_at(&a, 1700, "XLEN s"), ":1\r\n");
    KT_EQ_U64(keel_kv_next_retention_ms(&a.kv), 1900);
    /* a snapshot carries the setting; the loader rebuilds the index */
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    KT_EQ_U64(keel_kv_next_retention_ms(&b.kv), 1900);
    b.index = a.index;
    KT_EQ_STR(sweep_at(&b, 2000), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&b, 2000, "EXISTS s"), ":1\r\n"); /* an empty stream stays */
    KT_EQ_U64(keel_kv_next_retention_ms(&b.kv), KEEL_KV_NO_DEADLINE);
    /* a deleted stream's row goes at its sweep; OFF stops it */
    KT_EQ_STR(kvt_at(&a, 1700, "DEL s"), ":1\r\n");
    KT_EQ_STR(sweep_at(&a, 1900), ":0\r\n");
    KT_EQ_U64(keel_kv_next_retention_ms(&a.kv), KEEL_KV_NO_DEADLINE);
    kvt_at(&a, 2000, "XADD t 2000-0 f v");
    KT_EQ_STR(kvt_at(&a, 2000, "KEEL.XRETAIN t MAXAGE 10"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&a, 2000, "KEEL.XRETAIN t OFF"), "+OK\r\n");
    KT_EQ_U64(keel_kv_next_retention_ms(&a.kv), KEEL_KV_NO_DEADLINE);
    KT_EQ_STR(kvt_at(&a, 2000, "KEEL.XRETAIN t MAXAGE 0"),
              "-ERR keel: MAXAGE must be an integer >= 1 (ms)\r\n");
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

int main(void)
{
    KT_RUN(a_key_holds_one_type_and_set_replaces_a_stream);
    KT_RUN(star_ids_and_delivery_times_are_the_entry_stamps);
    KT_RUN(replicas_that_apply_the_same_entries_agree_and_snapshots_carry_streams);
    KT_RUN(nacked_entries_come_back_after_their_delay_and_dead_letter_at_the_limit);
    KT_RUN(a_claim_takes_a_nacked_entry_out_of_the_groups_hands);
    KT_RUN(the_first_streams_by_name_are_listed_from_the_whole_key_table);
    KT_RUN(priority_reads_fill_count_from_the_first_streams_and_the_guard_turns);
    KT_RUN(retention_by_age_is_swept_by_the_leader_and_survives_a_snapshot);
    return kt_done();
}
