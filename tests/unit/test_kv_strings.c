/* test_kv_strings.c - issue 19's strings and keyspace commands: replies, expiry, history,
   revisions, limits, leases and snapshots. */
#include "test_kv_util.h"

#include "base/rand.h"

#include <stdio.h>

/*
 * Expected replies were read from redis-server 7.0.15 with the same commands (the system
 * test test_redis_diff.py compares them with a running one, byte for byte). Entries are
 * applied at explicit times (AT) where deadlines matter; OK applies at 1000 + index.
 */
#define AT(ms, line, want) KT_EQ_STR(kvt_at(&t, ms, line), want)
#define OK(line, want) KT_EQ_STR(kvt(&t, line), want)
#define READ(ms, line, want) KT_EQ_STR(kvt_read_at(&t, ms, line), want)

static kvt_t t;
static char text[1 << 16];

static void fresh(const keel_kv_config_t *cfg)
{
    kvt_free(&t);
    kvt_init(&t, cfg);
}

/* The changes after revision `after` as "rev:put:key=value" / "rev:del:key". */
static const char *changes_after(uint64_t after)
{
    size_t pos, n = 0;
    if (keel_kv_history_seek(&t.kv, after, &pos) != 0)
        return "(compacted)";
    text[0] = '\0';
    for (; pos < keel_kv_history_len(&t.kv) && n < sizeof(text); pos++) {
        keel_kv_change_t c;
        keel_kv_history_at(&t.kv, pos, &c);
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%llu:%s:%.*s", n ? " " : "",
                              (unsigned long long)c.revision,
                              c.op == KEEL_KV_CHANGE_PUT ? "put" : "del", (int)c.key_len,
                              (const char *)c.key);
        if (c.op == KEEL_KV_CHANGE_PUT && c.value && n < sizeof(text))
            n += (size_t)snprintf(text + n, sizeof(text) - n, "=%.*s", (int)c.value_len,
                                  (const char *)c.value);
    }
    return text;
}

static keel_kv_value_t get(const char *key)
{
    keel_kv_value_t v;
    memset(&v, 0, sizeof(v));
    if (keel_kv_get(&t.kv, key, strlen(key), &v) != 0)
        v.version = 0;
    return v;
}

static void setnx_setex_and_psetex_reply_like_redis(void)
{
    fresh(NULL);
    OK("SETNX a 1", ":1\r\n");
    OK("SETNX a 2", ":0\r\n");
    OK("GET a", "$1\r\n1\r\n");
    OK("SETNX a", "-ERR wrong number of arguments for 'setnx' command\r\n");
    OK("SETEX a 0 v", "-ERR invalid expire time in 'setex' command\r\n");
    OK("SETEX a x v", "-ERR value is not an integer or out of range\r\n");
    OK("PSETEX a -1 v", "-ERR invalid expire time in 'psetex' command\r\n");
    OK("SETEX a 9223372036854776 v", "-ERR invalid expire time in 'setex' command\r\n");
    OK("PSETEX a 9223372036854775807 v", "-ERR invalid expire time in 'psetex' command\r\n");
    OK("SETEX a", "-ERR wrong number of arguments for 'setex' command\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 1);
    /* the syntax is refused before proposing, the relative overflow only at apply */
    keel_buf_t err;
    keel_buf_init(&err, 0);
    const uint8_t *argv[] = {(const uint8_t *)"SETEX", (const uint8_t *)"a", (const uint8_t *)"0",
                             (const uint8_t *)"v"};
    size_t lens[] = {5, 1, 1, 1};
    KT_EQ_INT(keel_kv_check(4, argv, lens, &err), KEEL_EINVAL);
    argv[2] = (const uint8_t *)"9223372036854775";
    lens[2] = 16;
    KT_EQ_INT(keel_kv_check(4, argv, lens, &err), 0);
    keel_buf_free(&err);
    AT(5000, "SETEX a 10 v", "+OK\r\n");
    KT_EQ_U64(get("a").expire_ms, 15000);
    AT(6000, "PSETEX b 250 w", "+OK\r\n");
    KT_EQ_U64(get("b").expire_ms, 6250);
    AT(6000, "SETEX a 9223372036854775 v",
       "-ERR invalid expire time in 'setex' command\r\n"); /* 6000 + that * 1000 overflows */
    READ(6249, "GET b", "$1\r\nw\r\n");
    READ(6250, "GET b", "$-1\r\n");
    AT(7000, "SETNX b again", ":1\r\n"); /* expired: absent to SETNX, a new key */
    KT_EQ_U64(get("b").expire_ms, 0);
    KT_EQ_U64(get("b").create_revision, keel_kv_revision(&t.kv));
}

static void getdel_and_getex_reply_like_redis(void)
{
    fresh(NULL);
    OK("SET a v", "+OK\r\n");
    OK("GETDEL a", "$1\r\nv\r\n");
    OK("GETDEL a", "$-1\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("GETDEL s", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    OK("GETEX s", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    OK("SET a v", "+OK\r\n");
    OK("GETEX a", "$1\r\nv\r\n");
    OK("GETEX a PERSIST EX 10", "-ERR syntax error\r\n");
    OK("GETEX a EX 10 PERSIST", "-ERR syntax error\r\n");
    OK("GETEX a EX", "-ERR syntax error\r\n");
    OK("GETEX a NX", "-ERR syntax error\r\n");
    OK("GETEX a KEEPTTL", "-ERR syntax error\r\n");
    OK("GETEX nope EX abc", "$-1\r\n"); /* the time is judged only on a string */
    OK("GETEX a EX abc", "-ERR value is not an integer or out of range\r\n");
    OK("GETEX a EX 0", "-ERR invalid expire time in 'getex' command\r\n");
    OK("GETEX a PX -1", "-ERR invalid expire time in 'getex' command\r\n");
    OK("GETEX a EX 9223372036854775807", "-ERR invalid expire time in 'getex' command\r\n");
    AT(10000, "GETEX a EX 5 ex 7", "$1\r\nv\r\n"); /* the last one counts */
    KT_EQ_U64(get("a").expire_ms, 17000);
    AT(10000, "GETEX a PX 300", "$1\r\nv\r\n");
    KT_EQ_U64(get("a").expire_ms, 10300);
    AT(10000, "GETEX a PXAT 20000", "$1\r\nv\r\n");
    READ(10000, "PEXPIRETIME a", ":20000\r\n");
    AT(10000, "GETEX a EXAT 30", "$1\r\nv\r\n");
    READ(10000, "EXPIRETIME a", ":30\r\n");
    AT(10000, "GETEX a persist PERSIST", "$1\r\nv\r\n");
    READ(10000, "PEXPIRETIME a", ":-1\r\n");
    AT(10000, "GETEX a EXAT 10", "$1\r\nv\r\n"); /* not after now: the key goes */
    READ(10000, "EXISTS a", ":0\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 1);
    AT(10000, "SET b w PX 100", "+OK\r\n");
    AT(10100, "GETEX b", "$-1\r\n");
    AT(10100, "GETDEL b", "$-1\r\n"); /* expired: absent, left for the sweep */
    KT_EQ_INT(keel_kv_count(&t.kv), 2);
}

static void getrange_and_setrange_reply_like_redis(void)
{
    fresh(NULL);
    OK("SET a Hello,world", "+OK\r\n");
    OK("GETRANGE a 0 4", "$5\r\nHello\r\n");
    OK("GETRANGE a -5 -1", "$5\r\nworld\r\n");
    OK("GETRANGE a 0 -1", "$11\r\nHello,world\r\n");
    OK("GETRANGE a 5 3", "$0\r\n\r\n");
    OK("GETRANGE a -1 -5", "$0\r\n\r\n");
    OK("GETRANGE a -100 100", "$11\r\nHello,world\r\n");
    OK("GETRANGE a 100 200", "$0\r\n\r\n");
    OK("GETRANGE a 3 -100", "$0\r\n\r\n");
    OK("GETRANGE a -9223372036854775808 9223372036854775807", "$11\r\nHello,world\r\n");
    OK("SUBSTR a 0 1", "$2\r\nHe\r\n");
    OK("GETRANGE a x 1", "-ERR value is not an integer or out of range\r\n");
    OK("GETRANGE nope 0 1", "$0\r\n\r\n");
    OK("SETRANGE a -1 x", "-ERR offset is out of range\r\n");
    OK("SETRANGE a x y", "-ERR value is not an integer or out of range\r\n");
    OK("SETRANGE a 6 World", ":11\r\n");
    OK("GET a", "$11\r\nHello,World\r\n");
    OK("SETRANGE a 13 !", ":14\r\n");
    KT_EQ_MEM(kvt(&t, "GET a"), "$14\r\nHello,World\0\0!\r\n", 21);
    OK("SETRANGE b 2 x", ":3\r\n");
    KT_EQ_MEM(kvt(&t, "GET b"), "$3\r\n\0\0x\r\n", 10);
    uint64_t rev = keel_kv_revision(&t.kv);
    const uint8_t *argv[] = {(const uint8_t *)"SETRANGE", (const uint8_t *)"c",
                             (const uint8_t *)"5", (const uint8_t *)""};
    size_t lens[] = {8, 1, 1, 0};
    KT_EQ_STR(kvt_argv(&t, 4, argv, lens), ":0\r\n"); /* no key made, no change */
    argv[1] = (const uint8_t *)"a";
    KT_EQ_STR(kvt_argv(&t, 4, argv, lens), ":14\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev);
    OK("EXISTS c", ":0\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("SETRANGE s 0 x", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    OK("GETRANGE s 0 1", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    /* a deadline stays; an expired key is absent (a new key, zero-padded) */
    AT(100000, "SET d abc PX 100", "+OK\r\n");
    AT(100050, "SETRANGE d 1 X", ":3\r\n");
    KT_EQ_U64(get("d").expire_ms, 100100);
    AT(100100, "SETRANGE d 1 Y", ":2\r\n");
    KT_EQ_U64(get("d").expire_ms, 0);
    KT_EQ_U64(get("d").create_revision, keel_kv_revision(&t.kv));
}

static void setrange_and_incrbyfloat_respect_the_limits(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.value_bytes_max = 24;
    cfg.keys_max = 2;
    fresh(&cfg);
    OK("SETRANGE a 23 x", ":24\r\n");
    OK("SETRANGE a 24 x", "-ERR string exceeds maximum allowed size\r\n");
    OK("SETRANGE a 9223372036854775807 x", "-ERR string exceeds maximum allowed size\r\n");
    OK("SETRANGE b 24 x", "-ERR string exceeds maximum allowed size\r\n");
    OK("INCRBYFLOAT b 1.5", "$3\r\n1.5\r\n");
    OK("INCRBYFLOAT c 1.5",
       "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("SETRANGE c 1 x",
       "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("COPY a c", "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("MSETNX c 1",
       "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("SETNX c 1", "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("SETEX c 10 1",
       "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    OK("INCRBYFLOAT b 1e25", "-ERR string exceeds maximum allowed size\r\n"); /* 26 bytes */
    OK("RENAME a c", "+OK\r\n"); /* a rename makes no key */
    OK("COPY c b REPLACE", ":1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 2);
    cfg = keel_kv_config_default();
    cfg.key_bytes_max = 3;
    fresh(&cfg);
    OK("SET a 1", "+OK\r\n");
    OK("RENAME a abcd", "-ERR key exceeds maximum allowed size\r\n");
    OK("COPY a abcd", "-ERR key exceeds maximum allowed size\r\n");
    OK("RENAME a abc", "+OK\r\n");
}

static void incrbyfloat_formats_like_redis(void)
{
    fresh(NULL);
    OK("INCRBYFLOAT f 1.5", "$3\r\n1.5\r\n");
    OK("INCRBYFLOAT f 0.1", "$3\r\n1.6\r\n");
    OK("INCRBYFLOAT f -1.6", "$1\r\n0\r\n");
    OK("INCRBYFLOAT g 0.1", "$3\r\n0.1\r\n");
    OK("INCRBYFLOAT g 0.2", "$3\r\n0.3\r\n");
    OK("INCRBYFLOAT g -0.3", "$1\r\n0\r\n");
    OK("INCRBYFLOAT h 3.0e3", "$4\r\n3000\r\n");
    OK("INCRBYFLOAT h -1e-30", "$4\r\n3000\r\n");
    OK("INCRBYFLOAT h 0x10", "$4\r\n3016\r\n");
    OK("INCRBYFLOAT h inf", "-ERR increment would produce NaN or Infinity\r\n");
    OK("INCRBYFLOAT h nan", "-ERR value is not a valid float\r\n");
    OK("INCRBYFLOAT h abc", "-ERR value is not a valid float\r\n");
    OK("INCRBYFLOAT h 1e99999", "-ERR value is not a valid float\r\n");
    OK("INCRBYFLOAT h 1,5", "-ERR value is not a valid float\r\n");
    const uint8_t *argv[] = {(const uint8_t *)"INCRBYFLOAT", (const uint8_t *)"h",
                             (const uint8_t *)" 1"};
    size_t lens[] = {11, 1, 2};
    KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "-ERR value is not a valid float\r\n");
    argv[2] = (const uint8_t *)"";
    lens[2] = 0;
    KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "-ERR value is not a valid float\r\n");
    OK("SET i 9223372036854775807", "+OK\r\n");
    OK("INCRBYFLOAT i 1", "$19\r\n9223372036854775808\r\n");
    OK("SET j 1.23456789012345678901234", "+OK\r\n");
    OK("INCRBYFLOAT j 0", "$19\r\n1.23456789012345679\r\n");
    OK("INCRBYFLOAT k 123456789.123456789", "$27\r\n123456789.12345678899873747\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("INCRBYFLOAT s abc",
       "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    AT(100000, "SET d 1 PX 100", "+OK\r\n"); /* keeps the deadline, like INCR */
    AT(100000, "INCRBYFLOAT d 1", "$1\r\n2\r\n");
    KT_EQ_U64(get("d").expire_ms, 100100);
}

static void msetnx_sets_all_or_nothing(void)
{
    fresh(NULL);
    OK("MSETNX a 1 b 2", ":1\r\n");
    OK("MSETNX b 3 c 4", ":0\r\n");
    OK("MGET a b c", "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n");
    OK("MSETNX c 5 c 6", ":1\r\n");
    OK("GET c", "$1\r\n6\r\n");
    OK("MSETNX a", "-ERR wrong number of arguments for 'msetnx' command\r\n");
    OK("MSETNX a 1 b", "-ERR wrong number of arguments for 'msetnx' command\r\n");
    AT(100000, "SET e 1 PX 10", "+OK\r\n");
    AT(100010, "MSETNX e 2", ":1\r\n"); /* expired counts as absent */
    KT_EQ_U64(get("e").expire_ms, 0);
}

static void rename_and_copy_move_values_deadlines_and_types(void)
{
    fresh(NULL);
    OK("RENAME a b", "-ERR no such key\r\n");
    OK("RENAMENX a b", "-ERR no such key\r\n");
    OK("SET a 1", "+OK\r\n");
    OK("RENAME a a", "+OK\r\n");
    OK("RENAMENX a a", ":0\r\n");
    AT(100000, "PEXPIRE a 5000", ":1\r\n");
    AT(100000, "RENAME a b", "+OK\r\n");
    KT_EQ_U64(get("b").expire_ms, 105000);
    KT_EQ_U64(get("a").version, 0);
    OK("SET c 3", "+OK\r\n");
    OK("RENAMENX b c", ":0\r\n");
    OK("RENAMENX b d", ":1\r\n");
    OK("COPY d e", ":1\r\n");
    KT_EQ_U64(get("e").expire_ms, 105000);
    OK("COPY d e", ":0\r\n");
    OK("COPY d c REPLACE", ":1\r\n");
    OK("GET c", "$1\r\n1\r\n");
    OK("COPY d d", "-ERR source and destination objects are the same\r\n");
    OK("COPY d x DB 1", "-ERR DB index is out of range\r\n");
    OK("COPY d x DB x", "-ERR value is not an integer or out of range\r\n");
    OK("COPY d x BOGUS", "-ERR syntax error\r\n");
    OK("COPY nope x", ":0\r\n");
    AT(105000, "RENAME d f", "-ERR no such key\r\n"); /* expired */
    AT(105000, "COPY d f", ":0\r\n");
    /* a stream moves by its object, copies by value: the copy is independent */
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("XADD s 2-1 g w", "$3\r\n2-1\r\n");
    OK("COPY s s2", ":1\r\n");
    OK("XADD s2 3-1 h x", "$3\r\n3-1\r\n");
    OK("XLEN s", ":2\r\n");
    OK("XLEN s2", ":3\r\n");
    size_t bytes = t.kv.bytes;
    OK("RENAME s2 s3", "+OK\r\n");
    KT_EQ_U64(t.kv.bytes, bytes); /* same key length: the object is counted once */
    OK("TYPE s3", "+stream\r\n");
    OK("XRANGE s3 - +",
       "*3\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$1\r\ng\r\n$"
       "1\r\nw\r\n*2\r\n$3\r\n3-1\r\n*2\r\n$1\r\nh\r\n$1\r\nx\r\n");
    OK("SET c 3", "+OK\r\n");
    OK("RENAME c s3", "+OK\r\n");
    OK("TYPE s3", "+string\r\n");
    OK("COPY s c", ":1\r\n");
    OK("DEL s s3 c", ":3\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 2); /* d and e, expired, not swept yet */
}

static void new_writes_record_their_changes_at_one_revision(void)
{
    fresh(NULL);
    OK("SETNX a 1", ":1\r\n");                /* 1 */
    OK("SETNX a 2", ":0\r\n");                /* nothing */
    OK("SETEX b 100 x", "+OK\r\n");           /* 2 */
    OK("GETEX b", "$1\r\nx\r\n");             /* nothing */
    OK("GETEX b PERSIST", "$1\r\nx\r\n");     /* 3 */
    OK("GETEX b PERSIST", "$1\r\nx\r\n");     /* nothing: no deadline */
    OK("SETRANGE a 1 yz", ":3\r\n");          /* 4 */
    OK("INCRBYFLOAT n 2.5", "$3\r\n2.5\r\n"); /* 5 */
    OK("MSETNX c 1 d 2", ":1\r\n");           /* 6: two puts */
    OK("MSETNX c 1 e 2", ":0\r\n");           /* nothing */
    OK("RENAME c e", "+OK\r\n");              /* 7: put e, del c */
    OK("RENAMENX e d", ":0\r\n");             /* nothing */
    OK("COPY e d REPLACE", ":1\r\n");         /* 8 */
    OK("GETDEL e", "$1\r\n1\r\n");            /* 9 */
    OK("UNLINK d nope", ":1\r\n");            /* 10 */
    OK("GETEX b EXAT 1", "$1\r\nx\r\n");      /* 11: deleted */
    OK("TOUCH a n", ":2\r\n");                /* a read */
    KT_EQ_U64(keel_kv_revision(&t.kv), 11);
    KT_EQ_STR(changes_after(0), "1:put:a=1 2:put:b=x 3:put:b=x 4:put:a=1yz 5:put:n=2.5 6:put:c=1 "
                                "6:put:d=2 7:put:e=1 7:del:c 8:put:d=1 9:del:e 10:del:d 11:del:b");
    OK("GET a", "$3\r\n1yz\r\n");
}

static void keys_randomkey_and_expiretime_see_only_live_keys(void)
{
    fresh(NULL);
    OK("RANDOMKEY", "$-1\r\n");
    OK("KEYS *", "*0\r\n");
    AT(1000, "MSET hello 1 hallo 2 world 3", "+OK\r\n");
    AT(1000, "PEXPIRE world 100", ":1\r\n");
    READ(1000, "KEYS w*", "*1\r\n$5\r\nworld\r\n");
    READ(1100, "KEYS w*", "*0\r\n");
    READ(1000, "KEYS h[ae]llo", "*2\r\n$5\r\nhallo\r\n$5\r\nhello\r\n");
    READ(1000, "PEXPIRETIME world", ":1100\r\n");
    READ(1000, "EXPIRETIME world", ":1\r\n");
    READ(1000, "EXPIRETIME hello", ":-1\r\n");
    READ(1100, "EXPIRETIME world", ":-2\r\n");
    AT(1000, "PEXPIREAT hello 1499", ":1\r\n");
    READ(1000, "EXPIRETIME hello", ":1\r\n");
    AT(1000, "PEXPIREAT hello 1500", ":1\r\n");
    READ(1000, "EXPIRETIME hello", ":2\r\n");
    /* RANDOMKEY: only live keys, every one of them over enough clocks */
    fresh(NULL);
    char line[64];
    for (int i = 0; i < 50; i++) {
        snprintf(line, sizeof(line), "SET k%d v", i);
        OK(line, "+OK\r\n");
    }
    for (int i = 0; i < 50; i += 2) {
        snprintf(line, sizeof(line), "PEXPIREAT k%d 5000", i);
        OK(line, ":1\r\n");
    }
    int seen[50] = {0};
    for (uint64_t now = 5000; now < 25000; now++) {
        const char *r = kvt_read_at(&t, now, "RANDOMKEY");
        int k = -1;
        KT_CHECK(sscanf(r, "$%*d\r\nk%d\r\n", &k) == 1 && k >= 0 && k < 50);
        KT_CHECK(k % 2 == 1);
        seen[k] = 1;
    }
    for (int i = 1; i < 50; i += 2)
        KT_CHECK(seen[i]);
    for (int i = 1; i < 50; i += 2) {
        snprintf(line, sizeof(line), "PEXPIREAT k%d 5000", i);
        OK(line, ":1\r\n");
    }
    READ(5000, "RANDOMKEY", "$-1\r\n");
    READ(4999, "RANDOMKEY", kvt_read_at(&t, 4999, "RANDOMKEY")); /* same clock, same key */
}

static void object_answers_sensibly(void)
{
    fresh(NULL);
    OK("SET i 12345", "+OK\r\n");
    OK("SET e short", "+OK\r\n");
    OK("SET r 123456789012345678901234567890123456789012345", "+OK\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("OBJECT ENCODING i", "$3\r\nint\r\n");
    OK("OBJECT ENCODING e", "$6\r\nembstr\r\n");
    OK("OBJECT ENCODING r", "$3\r\nraw\r\n");
    OK("OBJECT ENCODING s", "$6\r\nstream\r\n");
    OK("OBJECT encoding nope", "$-1\r\n");
    OK("OBJECT IDLETIME e", ":0\r\n");
    OK("OBJECT REFCOUNT e", ":1\r\n");
    OK("OBJECT REFCOUNT i", ":1\r\n");
    OK("SET z 9999", "+OK\r\n");
    OK("OBJECT REFCOUNT z", ":2147483647\r\n"); /* Redis's shared integers 0..9999 */
    OK("OBJECT FREQ nope", "$-1\r\n");
    KT_CHECK(
        strncmp(kvt(&t, "OBJECT FREQ e"), "-ERR An LFU maxmemory policy is not selected", 44) == 0);
    OK("OBJECT", "-ERR wrong number of arguments for 'object' command\r\n");
    OK("OBJECT ENCODING", "-ERR wrong number of arguments for 'object|encoding' command\r\n");
    OK("OBJECT HELP x", "-ERR wrong number of arguments for 'object|help' command\r\n");
    OK("OBJECT BOGUS x", "-ERR unknown subcommand 'BOGUS'. Try OBJECT HELP.\r\n");
    KT_CHECK(strncmp(kvt(&t, "OBJECT HELP"), "*11\r\n+OBJECT <subcommand>", 25) == 0);
}

static void leases_follow_a_renamed_or_copied_key(void)
{
    fresh(NULL);
    OK("KEEL.LEASE GRANT 100000", ":1\r\n");
    OK("KEEL.SET a v LEASE 1", "+OK\r\n");
    OK("RENAME a b", "+OK\r\n");
    OK("COPY b c", ":1\r\n");
    OK("EXISTS a b c", ":2\r\n");
    OK("KEEL.LEASE REVOKE 1", ":2\r\n");
    OK("EXISTS b c", ":0\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 0);
}

/* The state after every new command survives a snapshot: the restored one answers alike. */
static void a_snapshot_holds_what_the_new_commands_made(void)
{
    fresh(NULL);
    const char *setup[] = {
        "SETEX a 100 v",  "PSETEX b 100000 w", "SETRANGE c 3 xyz",    "INCRBYFLOAT d 0.5",
        "MSETNX e 1 f 2", "XADD s 1-1 f v",    "COPY s s2",           "RENAME s2 s3",
        "RENAME e e2",    "COPY a a2",         "GETEX b PXAT 999999", "GETDEL f",
    };
    for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++)
        KT_CHECK(kvt(&t, setup[i])[0] != '-');
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    kvt_t b;
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    b.index = t.index;
    const char *probe[] = {"GET a",           "PEXPIRETIME a",   "PEXPIRETIME a2", "GET b",
                           "PEXPIRETIME b",   "GETRANGE c 0 -1", "GET d",          "GET e2",
                           "EXISTS e f",      "XRANGE s3 - +",   "TYPE s",         "KEYS *",
                           "INCRBYFLOAT d 1", "RENAME s3 s4",    "XLEN s4",        "DBSIZE"};
    for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
        char *want = strdup(kvt(&t, probe[i])); /* kvt's answer lives until its next call */
        const char *got = kvt(&b, probe[i]);
        KT_CHECK(want != NULL);
        if (strcmp(probe[i], "KEYS *") == 0)
            KT_EQ_U64(strlen(got), strlen(want)); /* table order may differ */
        else
            KT_EQ_STR(got, want);
        free(want);
    }
    kvt_free(&b);
    keel_buf_free(&snap);
}

static void bit_commands_reply_like_redis_and_record_real_changes(void)
{
    fresh(NULL);
    uint64_t rev = keel_kv_revision(&t.kv);
    OK("SETBIT b 7 1", ":0\r\n");
    KT_EQ_MEM(kvt(&t, "GET b"), "$1\r\n\x01\r\n", 8);
    OK("SETBIT b 7 1", ":1\r\n"); /* no change: no revision */
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    OK("SETBIT b 0 1", ":0\r\n");
    OK("SETBIT b 23 1", ":0\r\n");
    KT_EQ_MEM(kvt(&t, "GET b"), "$3\r\n\x81\x00\x01\r\n", 9);
    OK("GETBIT b 0", ":1\r\n");
    OK("GETBIT b 1", ":0\r\n");
    OK("GETBIT b 1000", ":0\r\n");
    OK("GETBIT nope 0", ":0\r\n");
    OK("SETBIT c 9 0", ":0\r\n"); /* an absent key is made even to clear a bit */
    KT_EQ_MEM(kvt(&t, "GET c"), "$2\r\n\x00\x00\r\n", 8);
    OK("SETBIT b -1 1", "-ERR bit offset is not an integer or out of range\r\n");
    OK("SETBIT b 4294967296 1", "-ERR bit offset is not an integer or out of range\r\n");
    OK("SETBIT b 1 2", "-ERR bit is not an integer or out of range\r\n");
    OK("SETBIT b 4294967295 1", "-ERR string exceeds maximum allowed size\r\n"); /* 512 MiB */
    OK("BITCOUNT b", ":3\r\n");
    OK("BITCOUNT b 1 -1", ":1\r\n");
    OK("BITCOUNT b 1 16 BIT", ":1\r\n");
    OK("BITCOUNT b 0 7 bit", ":2\r\n");
    OK("BITCOUNT b 0", "-ERR syntax error\r\n");
    OK("BITCOUNT nope x y", ":0\r\n"); /* Redis 7.0: the key first */
    OK("BITPOS b 1", ":0\r\n");
    OK("BITPOS b 1 1", ":23\r\n");
    OK("BITPOS b 0", ":1\r\n");
    OK("SET f \xff", "+OK\r\n");
    OK("SETBIT g 7 1", ":0\r\n");
    OK("BITOP NOT g g", ":1\r\n");
    OK("BITPOS g 0", ":7\r\n");
    OK("BITPOS g 0 0 6 BIT", ":-1\r\n");
    OK("BITPOS g 1 0 6 BIT", ":0\r\n");
    OK("BITPOS nope 0", ":0\r\n");
    OK("BITPOS nope 1", ":-1\r\n");
    OK("BITPOS b 2", "-ERR The bit argument must be 1 or 0.\r\n");
    OK("SETBIT h 0 1", ":0\r\n");
    OK("SETBIT h 7 1", ":0\r\n"); /* h = 0x81: with no end, a clear bit past it counts */
    OK("BITOP NOT h h", ":1\r\n");
    OK("BITOP NOT h h", ":1\r\n");
    OK("BITPOS h 0 0 0", ":1\r\n");
    OK("SETBIT a 7 1", ":0\r\n");
    OK("BITOP OR d a b", ":3\r\n");
    KT_EQ_MEM(kvt(&t, "GET d"), "$3\r\n\x81\x00\x01\r\n", 9);
    OK("BITOP AND d a b", ":3\r\n");
    KT_EQ_MEM(kvt(&t, "GET d"), "$3\r\n\x01\x00\x00\r\n", 9);
    OK("BITOP NOT d a b", "-ERR BITOP NOT must be called with a single source key.\r\n");
    OK("BITOP NAND d a", "-ERR syntax error\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("BITOP AND d a s", "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    OK("BITOP OR s a", ":1\r\n"); /* the destination's type does not matter */
    OK("TYPE s", "+string\r\n");
    rev = keel_kv_revision(&t.kv);
    OK("BITOP AND d nope1 nope2", ":0\r\n"); /* empty: d goes */
    OK("EXISTS d", ":0\r\n");
    char want[64];
    snprintf(want, sizeof(want), "%llu:del:d", (unsigned long long)rev + 1);
    KT_EQ_STR(changes_after(rev), want);
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    OK("BITOP AND d nope1 nope2", ":0\r\n"); /* nothing left to delete: no change */
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
}

static void lcs_replies_like_redis_and_bounds_its_table(void)
{
    fresh(NULL);
    OK("MSET k1 ohmytext k2 mynewtext x ABCBDAB y BDCABA", "+OK\r\n");
    OK("LCS k1 k2", "$6\r\nmytext\r\n");
    OK("LCS k1 k2 LEN", ":6\r\n");
    OK("LCS k1 k2 IDX",
       "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n*2\r\n*2\r\n:"
       "2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n");
    OK("LCS k1 k2 IDX MINMATCHLEN 4 WITHMATCHLEN",
       "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$"
       "3\r\nlen\r\n:6\r\n");
    OK("LCS x y", "$4\r\nBDAB\r\n"); /* the walk's tie rule picks this one of the LCSs */
    OK("LCS nope nope2", "$0\r\n\r\n");
    OK("LCS k1 k2 IDX LEN",
       "-ERR If you want both the length and indexes, please just use IDX.\r\n");
    OK("LCS k1 k2 MINMATCHLEN", "-ERR syntax error\r\n");
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("LCS s k1", "-ERR The specified keys must contain string values\r\n");
    OK("SETRANGE a 5000 x", ":5001\r\n");
    OK("SETRANGE b 5000 y", ":5001\r\n");
    OK("LCS a b LEN",
       "-ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len\r\n");
    OK("LCS a k1 LEN", ":1\r\n"); /* 5001 x 9 cells: fine; only the "x" is common */
}

static void bitfield_reads_writes_and_overflows_like_redis(void)
{
    fresh(NULL);
    OK("BITFIELD k", "*0\r\n");
    OK("BITFIELD k GET u8 0", "*1\r\n:0\r\n");
    OK("EXISTS k", ":0\r\n"); /* GETs alone make no key */
    OK("BITFIELD k GET u64 0", "-ERR Invalid bitfield type. Use something like i16 u8. Note that "
                               "u64 is not supported but i64 is.\r\n");
    OK("BITFIELD k GET I8 0", "-ERR Invalid bitfield type. Use something like i16 u8. Note that "
                              "u64 is not supported but i64 is.\r\n");
    OK("BITFIELD k GET u8 #-1", "-ERR bit offset is not an integer or out of range\r\n");
    OK("BITFIELD k GET u8 4294967296", "-ERR bit offset is not an integer or out of range\r\n");
    OK("BITFIELD k GET u8 #9223372036854775807",
       "-ERR bit offset is not an integer or out of range\r\n"); /* n x 8 would overflow */
    OK("BITFIELD k OVERFLOW bogus", "-ERR Invalid OVERFLOW type specified\r\n");
    OK("BITFIELD k SET u8 0", "-ERR syntax error\r\n");
    OK("BITFIELD k SET u8 0 x", "-ERR value is not an integer or out of range\r\n");
    OK("BITFIELD k SET u8 4294967288 1", "-ERR string exceeds maximum allowed size\r\n");
    OK("BITFIELD_RO k GET u8 0 SET u8 0 1",
       "-ERR BITFIELD_RO only supports the GET subcommand\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
    OK("BITFIELD k SET u8 0 255 GET u4 0 GET i4 4 INCRBY u4 0 1 GET u8 0",
       "*5\r\n:0\r\n:15\r\n:-1\r\n:0\r\n:15\r\n");
    OK("BITFIELD k OVERFLOW SAT INCRBY u4 0 100 INCRBY i4 4 -100 OVERFLOW FAIL INCRBY u4 0 1 GET "
       "u8 0",
       "*4\r\n:15\r\n:-8\r\n$-1\r\n:248\r\n");
    OK("BITFIELD k SET i64 8 -9223372036854775808 INCRBY i64 8 -1 OVERFLOW SAT INCRBY i64 8 -1",
       "*3\r\n:0\r\n:9223372036854775807\r\n:9223372036854775806\r\n");
    OK("BITFIELD k OVERFLOW SAT SET i2 72 -9223372036854775807 SET i2 74 -9223372036854775806",
       "*2\r\n:0\r\n:0\r\n");
    OK("BITFIELD_RO k GET i2 72 GET i2 74", "*2\r\n:1\r\n:-2\r\n"); /* Redis's quirk */
    OK("BITFIELD k SET u8 #1 7 SET u8 #1 7 GET u8 8", "*3\r\n:127\r\n:7\r\n:7\r\n");
    uint64_t rev = keel_kv_revision(&t.kv);
    OK("BITFIELD k SET u8 #1 7", "*1\r\n:7\r\n"); /* the same bytes: no change */
    OK("BITFIELD k OVERFLOW FAIL INCRBY u2 0 100", "*1\r\n$-1\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev);
    OK("BITFIELD n OVERFLOW FAIL INCRBY u2 100 10", "*1\r\n$-1\r\n"); /* the key is made */
    OK("STRLEN n", ":13\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    char want[64];
    snprintf(want, sizeof(want), "%llu:put:n=", (unsigned long long)rev + 1);
    KT_CHECK(strncmp(changes_after(rev), want, strlen(want)) == 0);
    AT(100000, "PEXPIRE k 5000", ":1\r\n");
    AT(100000, "BITFIELD k SET u8 200 1", "*1\r\n:0\r\n"); /* grows, keeps the deadline */
    KT_EQ_U64(get("k").expire_ms, 105000);
    OK("XADD s 1-1 f v", "$3\r\n1-1\r\n");
    OK("BITFIELD s GET u8 0",
       "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    OK("BITFIELD s SET u8 0 1",
       "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(setnx_setex_and_psetex_reply_like_redis);
    KT_RUN(getdel_and_getex_reply_like_redis);
    KT_RUN(getrange_and_setrange_reply_like_redis);
    KT_RUN(setrange_and_incrbyfloat_respect_the_limits);
    KT_RUN(incrbyfloat_formats_like_redis);
    KT_RUN(msetnx_sets_all_or_nothing);
    KT_RUN(rename_and_copy_move_values_deadlines_and_types);
    KT_RUN(new_writes_record_their_changes_at_one_revision);
    KT_RUN(keys_randomkey_and_expiretime_see_only_live_keys);
    KT_RUN(object_answers_sensibly);
    KT_RUN(leases_follow_a_renamed_or_copied_key);
    KT_RUN(a_snapshot_holds_what_the_new_commands_made);
    KT_RUN(bit_commands_reply_like_redis_and_record_real_changes);
    KT_RUN(lcs_replies_like_redis_and_bounds_its_table);
    KT_RUN(bitfield_reads_writes_and_overflows_like_redis);
    kvt_free(&t);
    return kt_done();
}
