/* fuzz_zset.c - libFuzzer target: the sorted-set commands' option parsers (ZADD, the ZRANGE
   family, ZUNION/ZINTER/ZDIFF and their STORE forms, ZMPOP, ZSCAN...) and their apply, with
   the set commands on the same keys (sets of integers inline, kv_set_inline.c). */
#include "base/buf.h"
#include "base/num.h"
#include "core/kv.h"
#include "core/kv_int.h"
#include "core/zset.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The input is a stream of commands: a byte picking the command, a byte giving the number
 * of arguments after the command name (0..15, low bits) and the key (one of three, bits
 * 4-5; none with bit 7, for numkeys commands), then each argument: a byte with the high
 * bit set picks a word from WORDS (options, bounds, numbers, keys), else its low 7 bits
 * are the length of literal bytes that follow. Properties, after every
 * command:
 *  - the syntax check before proposing (keel_kv_check) and apply agree: a command the
 *    check refuses replies with the same error when applied, and changes nothing;
 *  - apply and reads return 0 with a complete reply;
 *  - every sorted set is well formed: members in strictly increasing (score, member)
 *    order, no NaN, ranks and lookups agree with the order, never empty;
 *  - kv->bytes is exactly the keys' bytes plus their objects' memory;
 *  - keel_kv_bpop_parse accepts only commands keel_kv_check accepts (the server blocks only
 *    valid commands), and the served form it builds for each source passes keel_kv_check.
 * At the end the state survives a snapshot round trip: same replies, same memory (but where
 * a set is a table, whose layout a restore may choose otherwise).
 */

static const char *const CMDS[] = {
    "ZADD",
    "ZINCRBY",
    "ZREM",
    "ZCARD",
    "ZSCORE",
    "ZMSCORE",
    "ZCOUNT",
    "ZLEXCOUNT",
    "ZRANK",
    "ZREVRANK",
    "ZRANGE",
    "ZRANGESTORE",
    "ZRANGEBYSCORE",
    "ZREVRANGEBYSCORE",
    "ZRANGEBYLEX",
    "ZREVRANGEBYLEX",
    "ZREVRANGE",
    "ZPOPMIN",
    "ZPOPMAX",
    "ZMPOP",
    "ZRANDMEMBER",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYLEX",
    "ZUNION",
    "ZINTER",
    "ZDIFF",
    "ZUNIONSTORE",
    "ZINTERSTORE",
    "ZDIFFSTORE",
    "ZINTERCARD",
    "ZSCAN",
    "SET",
    "DEL",
    "COPY",
    "RENAME",
    "PEXPIRE",
    "OBJECT",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "KEEL.BPOP",
    /* sets on the same keys: small sets of integers rest inside their entries
       (kv_set_inline.c), and every form change must keep the replies and kv->bytes */
    "SADD",
    "SREM",
    "SPOP",
    "SMOVE",
    "SINTERSTORE",
    "SUNIONSTORE",
    "SDIFFSTORE",
    "SMEMBERS",
    "SISMEMBER",
    "SMISMEMBER",
    "SCARD",
    "SRANDMEMBER",
    "SINTER",
    "SORT",
};
static const char *const WORDS[] = {
    "NX",    "XX",         "GT",      "LT",        "CH",    "INCR", "BYSCORE",  "BYLEX", "REV",
    "LIMIT", "WITHSCORES", "WEIGHTS", "AGGREGATE", "SUM",   "MIN",  "MAX",      "COUNT", "MATCH",
    "(1",    "[a",         "(b",      "-",         "+",     "inf",  "-inf",     "nan",   "0",
    "1",     "-1",         "2.5",     "-0",        "1e308", "2",    "3",        "z",     "y",
    "x",     "a",          "b",       "c",         "(",     "[",    "ENCODING", "0x10",  "REPLACE",
    "-2",    "10",         "(inf",    "1e-320",    "aa",    "*",    "[c",
};
#define NCMDS (sizeof(CMDS) / sizeof(CMDS[0]))
#define NWORDS (sizeof(WORDS) / sizeof(WORDS[0]))
#define ARGS_MAX 18

static keel_kv_config_t small_config(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.key_bytes_max = 64;
    cfg.value_bytes_max = 256;
    cfg.keys_max = 64;
    cfg.argc_max = 32;
    return cfg;
}

static void check_set(keel__kv_entry_t *e)
{
    keel_zset_t *z = keel__kv_obj(e);
    assert(keel_zset_len(z) > 0);
    /* between commands a listpack-encoded set rests packed, and unpacking it changes
       neither its memory count nor (checked below) its contents' order */
    assert(keel_zset_is_packed(z) ==
           (keel_zset_is_listpack(z) && keel_zset_len(z) <= KEEL_ZSET_PACK_MEMBERS_MAX));
    size_t bytes = keel_zset_bytes(z);
    int rc = keel_zset_unpack(&z);
    assert(rc == 0 && keel_zset_bytes(z) == bytes);
    (void)rc;
    uint64_t i = 0;
    const keel_zset_node_t *prev = NULL;
    for (const keel_zset_node_t *x = keel_zset_first(z); x; prev = x, x = keel_zset_next(x), i++) {
        assert(!isnan(x->score));
        assert(keel_zset_prev(x) == prev);
        assert(prev == NULL || keel_zset_cmp(prev->score, keel_zset_member(prev), prev->len,
                                             x->score, keel_zset_member(x), x->len) < 0);
        assert(keel_zset_rank(z, x) == i && keel_zset_at(z, i) == x);
        assert(keel_zset_find(z, keel_zset_member(x), x->len) == x);
        /* a listpack-encoded set holds no -0, as Redis's listpack does not */
        assert(!keel_zset_is_listpack(z) || x->score != 0 || !signbit(x->score));
    }
    assert(i == keel_zset_len(z) && keel_zset_last(z) == prev);
    z = keel_zset_pack(z);
    assert(keel_zset_bytes(z) == bytes);
    keel__kv_set_obj(e, z);
}

static int sum_bytes(void *data, const keel__kv_entry_t *e)
{
    size_t *n = data;
    *n += e->key_len + e->val_len;
    if (e->type != KEEL__KV_TYPE_STRING && !keel__kv_inline(e)) {
        *n += keel__kv_type(e->type)->bytes(keel__kv_obj(e));
        if (e->type == KEEL__KV_TYPE_ZSET)
            check_set((keel__kv_entry_t *)e); /* the kv is the test's own */
    }
    return 0;
}

static int is_table(void *data, const keel__kv_entry_t *e)
{
    (void)data;
    return e->type == KEEL__KV_TYPE_SET && !keel__kv_inline(e);
}

/* Whether kv holds a set as a table (not inline). */
static int any_table(const keel_kv_t *kv)
{
    return keel__kv_each(kv, is_table, NULL) != 0;
}

static void check_state(const keel_kv_t *kv)
{
    size_t n = 0;
    keel__kv_each(kv, sum_bytes, &n);
    assert(n == kv->bytes);
}

static int run(keel_kv_t *kv, uint64_t *index, int argc, const uint8_t *const *argv,
               const size_t *lens, keel_buf_t *entry, keel_buf_t *reply, keel_buf_t *err)
{
    keel_buf_reset(err);
    int checked = keel_kv_check(argc, argv, lens, err);
    assert(checked == 0 || checked == KEEL_EINVAL);
    keel_kv_bpop_t bp;
    if (keel_kv_bpop_parse(argc, argv, lens, &bp)) {
        assert(checked == 0);
        assert(bp.first_key >= 1 && bp.nkeys >= 1 && bp.first_key + bp.nkeys <= (size_t)argc);
        for (size_t k = 0; k < bp.nkeys; k++) {
            const uint8_t *sargv[2 + KEEL_KV_BPOP_SERVED_ARGC_MAX];
            size_t slens[2 + KEEL_KV_BPOP_SERVED_ARGC_MAX];
            char num[KEEL_DEC_BYTES_MAX];
            sargv[0] = (const uint8_t *)"KEEL.BPOP";
            slens[0] = 9;
            sargv[1] = (const uint8_t *)"t";
            slens[1] = 1;
            size_t n = keel_kv_bpop_served(&bp, argc, argv, lens, bp.first_key + k, sargv + 2,
                                           slens + 2, num);
            keel_buf_t e2;
            keel_buf_init(&e2, 0);
            assert(keel_kv_check((int)n + 2, sargv, slens, &e2) == 0);
            keel_buf_free(&e2);
        }
    }
    keel_buf_reset(reply);
    unsigned flags = keel_kv_command_flags(argv[0], lens[0]);
    uint64_t rev = keel_kv_revision(kv);
    int rc;
    if (flags == KEEL_KV_READ) {
        rc = keel_kv_read(kv, argc, argv, lens, reply);
        assert(rc == 0 || rc == KEEL_ETOOBIG);
    } else {
        keel_buf_reset(entry);
        if (keel_kv_entry_encode(entry, 1000 + *index, argc, argv, lens) != 0)
            return -1;
        rc = keel_kv_apply(kv, ++*index, keel_buf_rptr(entry), keel_buf_unread(entry), reply);
        assert(rc == 0);
    }
    assert(keel_buf_unread(reply) > 0 || rc != 0);
    if (checked != 0) { /* refused before proposing: the same error, nothing changed */
        assert(keel_buf_unread(reply) == keel_buf_unread(err) &&
               memcmp(keel_buf_rptr(reply), keel_buf_rptr(err), keel_buf_unread(err)) == 0);
        assert(keel_kv_revision(kv) == rev);
    }
    check_state(kv);
    return 0;
}

static void same_replies(const keel_kv_t *a, const keel_kv_t *b)
{
    static const char *const reads[][6] = {
        {"ZRANGE", "z", "0", "-1", "WITHSCORES", NULL},
        {"ZRANGE", "y", "0", "-1", "WITHSCORES", NULL},
        {"ZRANGE", "x", "0", "-1", "WITHSCORES", NULL},
        {"ZSCAN", "z", "0", "COUNT", "100", NULL},
        {"OBJECT", "ENCODING", "z", NULL},
        {"OBJECT", "ENCODING", "y", NULL},
        {"SMEMBERS", "z", NULL},
        {"SMEMBERS", "x", NULL},
        {"OBJECT", "ENCODING", "x", NULL},
    };
    keel_buf_t ra, rb;
    keel_buf_init(&ra, 0);
    keel_buf_init(&rb, 0);
    for (size_t r = 0; r < sizeof(reads) / sizeof(reads[0]); r++) {
        const uint8_t *argv[6];
        size_t lens[6];
        int argc = 0;
        for (; reads[r][argc]; argc++) {
            argv[argc] = (const uint8_t *)reads[r][argc];
            lens[argc] = strlen(reads[r][argc]);
        }
        keel_buf_reset(&ra);
        keel_buf_reset(&rb);
        assert(keel_kv_read_at(a, 5000, argc, argv, lens, &ra) == 0);
        assert(keel_kv_read_at(b, 5000, argc, argv, lens, &rb) == 0);
        assert(keel_buf_unread(&ra) == keel_buf_unread(&rb) &&
               memcmp(keel_buf_rptr(&ra), keel_buf_rptr(&rb), keel_buf_unread(&ra)) == 0);
    }
    keel_buf_free(&ra);
    keel_buf_free(&rb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_kv_config_t cfg = small_config();
    keel_kv_t kv;
    if (keel_kv_init(&kv, &cfg) != 0)
        abort();
    keel_buf_t entry, reply, err;
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    keel_buf_init(&err, 0);
    uint64_t index = 0;
    size_t p = 0;
    static const char *const keys[] = {"z", "y", "x"};
    while (p + 2 <= size) {
        const uint8_t *argv[ARGS_MAX];
        size_t lens[ARGS_MAX];
        const char *name = CMDS[data[p] % NCMDS];
        int more = data[p + 1] & 15;
        const char *key = keys[((data[p + 1] >> 4) & 3) % 3];
        p += 2;
        argv[0] = (const uint8_t *)name;
        lens[0] = strlen(name);
        int argc = 1;
        if (!(data[p - 1] & 0x80)) {
            argv[1] = (const uint8_t *)key;
            lens[1] = 1;
            argc = 2;
        }
        for (int i = 0; i < more && p < size; i++) {
            uint8_t b = data[p++];
            if (b & 0x80) {
                const char *w = WORDS[(b & 0x7f) % NWORDS];
                argv[argc] = (const uint8_t *)w;
                lens[argc++] = strlen(w);
            } else {
                size_t n = b < size - p ? b : size - p;
                argv[argc] = data + p;
                lens[argc++] = n;
                p += n;
            }
        }
        if (run(&kv, &index, argc, argv, lens, &entry, &reply, &err) != 0)
            break;
    }
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    if (keel_kv_snapshot_encode(&kv, &snap) == 0) {
        keel_kv_t back;
        if (keel_kv_init(&back, &cfg) != 0)
            abort();
        assert(keel_kv_snapshot_decode(&back, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL) ==
               0);
        /* a set's table is counted as it is laid out, which a restore may choose otherwise
           (kv_coll.h: a big table built at once or grown item by item); an inline set is
           its entry's bytes, the same on both sides */
        assert(back.bytes == kv.bytes || any_table(&kv));
        check_state(&back);
        same_replies(&kv, &back);
        keel_kv_free(&back);
    }
    keel_buf_free(&snap);
    keel_buf_free(&entry);
    keel_buf_free(&reply);
    keel_buf_free(&err);
    keel_kv_free(&kv);
    return 0;
}
