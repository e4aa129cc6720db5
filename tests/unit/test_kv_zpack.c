/* test_kv_zpack.c - the packed form of small sorted sets (zset_pack.c): every command answers
   the same on a set that rests packed as on one that rests unpacked, across the conversions. */
#include "base/bytes.h"
#include "base/num.h"
#include "base/rand.h"
#include "core/kv_int.h"
#include "core/zset.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static int unpack_one(void *data, const keel__kv_entry_t *e)
{
    (void)data;
    if (e->type == KEEL__KV_TYPE_ZSET) {
        keel_zset_t *z = keel__kv_obj(e);
        KT_EQ_INT(keel_zset_unpack(&z), 0);
        keel__kv_set_obj((keel__kv_entry_t *)e, z); /* the test's own kv */
    }
    return 0;
}

/* Every sorted set of kv rebuilt in its node form (as if it had never been packed). */
static void unpack_all(kvt_t *t)
{
    keel__kv_each(&t->kv, unpack_one, NULL);
}

typedef struct rest {
    size_t sets, packed;
} rest_t;

static int check_rest(void *data, const keel__kv_entry_t *e)
{
    rest_t *r = data;
    if (e->type != KEEL__KV_TYPE_ZSET)
        return 0;
    const keel_zset_t *z = keel__kv_obj(e);
    r->sets++;
    r->packed += keel_zset_is_packed(z);
    /* between commands: packed exactly when Redis would hold it as a listpack and it is small */
    KT_EQ_INT(keel_zset_is_packed(z),
              keel_zset_is_listpack(z) && keel_zset_len(z) <= KEEL_ZSET_PACK_MEMBERS_MAX);
    return 0;
}

static rest_t expect_at_rest(kvt_t *t)
{
    rest_t r = {0, 0};
    keel__kv_each(&t->kv, check_rest, &r);
    return r;
}

static int buf_sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static void snapshot(kvt_t *t, keel_buf_t *out)
{
    keel_buf_reset(out);
    KT_EQ_INT(keel_kv_snapshot_encode(&t->kv, out), 0);
}

/* ---- the randomized comparison ------------------------------------------------------------ */

#define KEYS_N 3
#define MEMBERS_N 150 /* past zset-max-listpack-entries (128) */

static void random_member(keel_rand_t *r, char *out, size_t cap)
{
    /* mostly short members; one in 40 longer than zset-max-listpack-value (64) */
    size_t n = keel_rand_below(r, 40) == 0 ? 65 + keel_rand_below(r, 8) : 1 + keel_rand_below(r, 3);
    unsigned id = (unsigned)keel_rand_below(r, MEMBERS_N);
    int k = snprintf(out, cap, "m%u", id);
    for (size_t i = (size_t)k; i < n && i + 1 < cap; i++)
        out[i] = 'x';
    out[n < cap ? n : cap - 1] = '\0';
}

static void random_score(keel_rand_t *r, char *out, size_t cap)
{
    static const char *odd[] = {
        "-0",  "0",     "inf",    "-inf", "1.5",        "-2.25",       "127",    "-128",
        "128", "32767", "-32769", "1e9",  "2147483648", "-2147483649", "1e-300", "3.000000000001"};
    if (keel_rand_below(r, 4) == 0)
        snprintf(out, cap, "%s", odd[keel_rand_below(r, sizeof(odd) / sizeof(odd[0]))]);
    else
        snprintf(out, cap, "%d", (int)keel_rand_range(r, -20, 20));
}

/* One random command line on keys z0..z2 (and plain set s0 as a set-algebra input). */
static void random_command(keel_rand_t *r, char *line, size_t cap)
{
    char m[80], m2[80], s[32], s2[32];
    random_member(r, m, sizeof(m));
    random_member(r, m2, sizeof(m2));
    random_score(r, s, sizeof(s));
    random_score(r, s2, sizeof(s2));
    unsigned k = (unsigned)keel_rand_below(r, KEYS_N), k2 = (unsigned)keel_rand_below(r, KEYS_N);
    int lo = (int)keel_rand_range(r, -5, 5), hi = (int)keel_rand_range(r, -3, 12);
    switch (keel_rand_below(r, 34)) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 7:
        snprintf(line, cap, "ZADD z%u %s %s %s %s", k, s, m, s2, m2);
        break;
    case 8:
        snprintf(line, cap, "ZADD z%u GT CH %s %s", k, s, m);
        break;
    case 9:
        snprintf(line, cap, "ZINCRBY z%u %s %s", k, s, m);
        break;
    case 10:
    case 11:
        snprintf(line, cap, "ZREM z%u %s %s", k, m, m2);
        break;
    case 12:
        snprintf(line, cap, "ZPOPMIN z%u %d", k, (int)keel_rand_below(r, 3));
        break;
    case 13:
        snprintf(line, cap, "ZMPOP 2 z%u z%u MAX COUNT 2", k, k2);
        break;
    case 14:
        snprintf(line, cap, "ZRANGE z%u %d %d WITHSCORES", k, lo, hi);
        break;
    case 15:
        snprintf(line, cap, "ZRANGE z%u (%d %d BYSCORE REV LIMIT 1 3 WITHSCORES", k, hi, lo);
        break;
    case 16:
        snprintf(line, cap, "ZRANGE z%u [m1 (m5 BYLEX", k);
        break;
    case 17:
        snprintf(line, cap, "ZRANGESTORE z%u z%u %d %d BYSCORE", k2, k, lo, hi);
        break;
    case 18:
        snprintf(line, cap, "ZUNIONSTORE z%u 2 z%u s0 WEIGHTS 2 1 AGGREGATE MAX", k2, k);
        break;
    case 19:
        snprintf(line, cap, "ZINTER 2 z%u z%u WITHSCORES", k, k2);
        break;
    case 20:
        snprintf(line, cap, "ZDIFFSTORE z%u 2 z%u z%u", k2, k, (k + 1) % KEYS_N);
        break;
    case 21:
        snprintf(line, cap, "ZRANDMEMBER z%u -5 WITHSCORES", k);
        break;
    case 22:
        snprintf(line, cap, "ZSCAN z%u 0 COUNT 5", k);
        break;
    case 23:
        snprintf(line, cap, "ZREMRANGEBYSCORE z%u %d %d", k, lo, lo + 2);
        break;
    case 24:
        snprintf(line, cap, "ZREMRANGEBYLEX z%u [m1 [m2", k);
        break;
    case 25:
        snprintf(line, cap, "ZREMRANGEBYRANK z%u 0 0", k);
        break;
    case 26:
        snprintf(line, cap, "ZCOUNT z%u %d +inf", k, lo);
        break;
    case 27:
        snprintf(line, cap, "ZLEXCOUNT z%u - +", k);
        break;
    case 28:
        snprintf(line, cap, "ZRANK z%u %s", k, m);
        break;
    case 29:
        snprintf(line, cap, "ZMSCORE z%u %s %s", k, m, m2);
        break;
    case 30:
        snprintf(line, cap, "OBJECT ENCODING z%u", k);
        break;
    case 31:
        snprintf(line, cap, "ZUNION 3 z0 z1 z2 WITHSCORES");
        break;
    case 32:
        snprintf(line, cap, "BZPOPMAX z%u z%u 0", k, k2);
        break;
    default:
        snprintf(line, cap, "ZREVRANGEBYSCORE z%u +inf -inf WITHSCORES LIMIT 0 4", k);
        break;
    }
}

/*
 * Two keyspaces take the same random commands: in `packed` the sets rest packed between
 * commands (the server's way); in `plain` every set is unpacked before each command, so the
 * commands run on sets that were never packed. Replies, memory counts and snapshots must be
 * equal byte for byte, while the sets cross 128 members and 64-byte members (into the skiplist
 * encoding) and empty out (and come back packed).
 */
static void a_packed_set_answers_as_an_unpacked_one_on_random_commands(void)
{
    for (uint64_t seed = 1; seed <= 12; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        kvt_t *packed = malloc(sizeof(*packed)), *plain = malloc(sizeof(*plain));
        KT_CHECK(packed && plain);
        kvt_init(packed, NULL);
        kvt_init(plain, NULL);
        kvt(packed, "SADD s0 m1 m2 m3 m40");
        kvt(plain, "SADD s0 m1 m2 m3 m40");
        static char want[sizeof(packed->text)];
        char line[256];
        size_t seen_packed = 0, seen_big = 0;
        for (int op = 0; op < 2500; op++) {
            random_command(&r, line, sizeof(line));
            unpack_all(plain);
            const char *got = kvt(packed, line);
            memcpy(want, got, strlen(got) + 1);
            got = kvt(plain, line);
            if (strcmp(got, want) != 0)
                fprintf(stderr, "op %d: %s\n", op, line);
            KT_EQ_STR(got, want);
            KT_EQ_U64(plain->kv.bytes, packed->kv.bytes);
            rest_t rs = expect_at_rest(packed);
            seen_packed += rs.packed;
            seen_big += rs.sets - rs.packed;
        }
        KT_CHECK(seen_packed > 0 && seen_big > 0); /* both forms were exercised */
        keel_buf_t a, b;
        keel_buf_init(&a, 0);
        keel_buf_init(&b, 0);
        unpack_all(plain);
        snapshot(packed, &a);
        snapshot(plain, &b);
        KT_EQ_U64(keel_buf_unread(&a), keel_buf_unread(&b));
        KT_EQ_MEM(keel_buf_rptr(&a), keel_buf_rptr(&b), keel_buf_unread(&a));
        keel_buf_free(&a);
        keel_buf_free(&b);
        kvt_free(packed);
        kvt_free(plain);
        free(packed);
        free(plain);
    }
}

/* ---- the conversions, one by one ------------------------------------------------------- */

static void a_small_set_rests_packed_and_converts_past_either_limit(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    char line[128];
    /* up to KEEL_ZSET_PACK_MEMBERS_MAX members a listpack rests packed; past it, unpacked */
    for (int i = 0; i < 128; i++) {
        snprintf(line, sizeof(line), "ZADD z %d m%03d", i, i);
        kvt(t, line);
        KT_EQ_U64(expect_at_rest(t).packed, (size_t)(i + 1) <= KEEL_ZSET_PACK_MEMBERS_MAX);
    }
    /* 128 members: still a listpack (what Redis says), resting unpacked */
    KT_EQ_STR(kvt(t, "OBJECT ENCODING z"), "$8\r\nlistpack\r\n");
    rest_t rs = expect_at_rest(t);
    KT_EQ_U64(rs.packed, 0);
    size_t bytes = t->kv.bytes;
    /* the 129th: skiplist, unpacked, more memory */
    KT_EQ_STR(kvt(t, "ZADD z 500 m500"), ":1\r\n");
    KT_EQ_STR(kvt(t, "OBJECT ENCODING z"), "$8\r\nskiplist\r\n");
    rs = expect_at_rest(t);
    KT_EQ_U64(rs.packed, 0);
    KT_CHECK(t->kv.bytes > bytes);
    /* and never back, as Redis: removing members keeps the skiplist */
    for (int i = 0; i < 120; i++) {
        snprintf(line, sizeof(line), "ZREM z m%03d", i);
        KT_EQ_STR(kvt(t, line), ":1\r\n");
    }
    KT_EQ_STR(kvt(t, "OBJECT ENCODING z"), "$8\r\nskiplist\r\n");
    KT_EQ_STR(kvt(t, "ZRANGE z 0 1 WITHSCORES"),
              "*4\r\n$4\r\nm120\r\n$3\r\n120\r\n$4\r\nm121\r\n$3\r\n121\r\n");
    /* a member of 65 bytes converts a small set too */
    KT_EQ_STR(kvt(t, "ZADD y 1 a 2 b"), ":2\r\n");
    KT_EQ_U64(expect_at_rest(t).packed, 1);
    char big[66];
    memset(big, 'q', 65);
    big[65] = '\0';
    snprintf(line, sizeof(line), "ZADD y 3 %s", big);
    KT_EQ_STR(kvt(t, line), ":1\r\n");
    KT_EQ_STR(kvt(t, "OBJECT ENCODING y"), "$8\r\nskiplist\r\n");
    KT_EQ_U64(expect_at_rest(t).packed, 0);
    /* a store of a small result makes a packed listpack again (Redis writes a fresh set) */
    KT_EQ_STR(kvt(t, "ZRANGESTORE x z 0 2"), ":3\r\n");
    KT_EQ_STR(kvt(t, "OBJECT ENCODING x"), "$8\r\nlistpack\r\n");
    KT_EQ_U64(expect_at_rest(t).packed, 1);
    KT_EQ_STR(kvt(t, "DEL x y z"), ":3\r\n");
    KT_EQ_U64(t->kv.bytes, 0);
    kvt_free(t);
    free(t);
}

/* Scores of every stored width (1, 2, 4 bytes, a double), -0, infinities: exact both ways. */
static void every_score_width_round_trips_through_the_block(void)
{
    kvt_t *t = malloc(sizeof(*t));
    kvt_init(t, NULL);
    KT_EQ_STR(kvt(t, "ZADD z -128 a 127 b -32768 c 32767 d -2147483648 e 2147483647 f "
                     "2147483648 g 0.5 h inf i -inf j 1e-310 k"),
              ":11\r\n");
    KT_EQ_U64(expect_at_rest(t).packed, 1);
    KT_EQ_STR(kvt(t, "ZMSCORE z a b c d e f g h i j k"),
              "*11\r\n$4\r\n-128\r\n$3\r\n127\r\n$6\r\n-32768\r\n$5\r\n32767\r\n"
              "$11\r\n-2147483648\r\n$10\r\n2147483647\r\n$10\r\n2147483648\r\n$3\r\n0.5\r\n"
              "$3\r\ninf\r\n$4\r\n-inf\r\n$23\r\n9.9999999999999694e-311\r\n");
    KT_EQ_STR(kvt(t, "ZRANGE z 0 0"), "*1\r\n$1\r\nj\r\n");
    kvt_free(t);
    free(t);
}

/* A snapshot of packed sets loads packed; one body from before the packed form (a bucket
   count of its table) still loads, and is written back with the canonical count. */
static void snapshots_carry_the_packed_form(void)
{
    kvt_t *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    kvt_init(a, NULL);
    kvt_init(b, NULL);
    kvt(a, "ZADD z 1 a 2 b 3 c");
    keel_buf_t s1, s2;
    keel_buf_init(&s1, 0);
    keel_buf_init(&s2, 0);
    snapshot(a, &s1);
    KT_EQ_INT(keel_kv_snapshot_decode(&b->kv, keel_buf_rptr(&s1), keel_buf_unread(&s1), NULL), 0);
    KT_EQ_U64(expect_at_rest(b).packed, 1);
    KT_EQ_U64(b->kv.bytes, a->kv.bytes);
    snapshot(b, &s2);
    KT_EQ_U64(keel_buf_unread(&s2), keel_buf_unread(&s1));
    KT_EQ_MEM(keel_buf_rptr(&s2), keel_buf_rptr(&s1), keel_buf_unread(&s1));
    /* the old form: encoding 1, 3 members, a table of 8 buckets */
    static const uint8_t body[] = {1,    3,    0, 0, 0, 0,   0,   0,   0, 8, 0, 0, 0,    0,
                                   0,    0,    0, 1, 0, 0,   0,   'a', 0, 0, 0, 0, 0,    0,
                                   0xf0, 0x3f, 1, 0, 0, 0,   'b', 0,   0, 0, 0, 0, 0,    0,
                                   0x40, 1,    0, 0, 0, 'c', 0,   0,   0, 0, 0, 0, 0x08, 0x40};
    keel_zset_t *z = NULL;
    KT_EQ_INT(keel_zset_decode(body, sizeof(body), &z), 0);
    KT_CHECK(keel_zset_is_packed(z) && keel_zset_len(z) == 3);
    keel_buf_reset(&s1);
    KT_EQ_INT(keel_zset_encode(z, buf_sink, &s1), 0);
    KT_EQ_U64(keel_buf_unread(&s1), sizeof(body));
    KT_EQ_INT(keel_get_u64(keel_buf_rptr(&s1) + 9) == 4, 1); /* 4 buckets: 3 members */
    KT_EQ_MEM(keel_buf_rptr(&s1) + 17, body + 17, sizeof(body) - 17);
    keel_zset_free(z);
    keel_buf_free(&s1);
    keel_buf_free(&s2);
    kvt_free(a);
    kvt_free(b);
    free(a);
    free(b);
}

int main(void)
{
    KT_RUN(a_packed_set_answers_as_an_unpacked_one_on_random_commands);
    KT_RUN(a_small_set_rests_packed_and_converts_past_either_limit);
    KT_RUN(every_score_width_round_trips_through_the_block);
    KT_RUN(snapshots_carry_the_packed_form);
    return kt_done();
}
