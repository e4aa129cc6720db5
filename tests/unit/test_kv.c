/* test_kv.c - KV state machine: exact RESP replies per command, revisions, limits, entries. */
#include "base/rand.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <time.h>

static kvt_t t;

#define EXPECT(line, want) KT_EQ_STR(kvt(&t, line), want)

static void fresh(void)
{
    kvt_free(&t);
    kvt_init(&t, NULL);
}

/* Every expected reply below was read from redis-server 7.0.15 with the same commands. */
static void set_and_get_reply_like_redis(void)
{
    fresh();
    EXPECT("SET k v", "+OK\r\n");
    EXPECT("GET k", "$1\r\nv\r\n");
    EXPECT("get k", "$1\r\nv\r\n");
    EXPECT("GeT k", "$1\r\nv\r\n");
    EXPECT("GET nope", "$-1\r\n");
    EXPECT("SET k hello", "+OK\r\n");
    EXPECT("GET k", "$5\r\nhello\r\n");
    const uint8_t *argv[] = {(const uint8_t *)"SET", (const uint8_t *)"", (const uint8_t *)""};
    size_t lens[] = {3, 0, 0};
    KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "+OK\r\n");
    const uint8_t *get[] = {(const uint8_t *)"GET", (const uint8_t *)""};
    size_t get_lens[] = {3, 0};
    KT_EQ_STR(kvt_argv(&t, 2, get, get_lens), "$0\r\n\r\n");
    /* binary-safe: NUL and CRLF inside keys and values */
    const uint8_t *bin[] = {(const uint8_t *)"SET", (const uint8_t *)"a\0b",
                            (const uint8_t *)"\r\n\0"};
    size_t blens[] = {3, 3, 3};
    KT_EQ_STR(kvt_argv(&t, 3, bin, blens), "+OK\r\n");
    const uint8_t *bget[] = {(const uint8_t *)"GET", (const uint8_t *)"a\0b"};
    const char *r = kvt_argv(&t, 2, bget, blens);
    KT_EQ_MEM(r, "$3\r\n\r\n\0\r\n", 9);
}

static void set_nx_xx_get_options_behave_like_redis(void)
{
    fresh();
    EXPECT("SET k v NX", "+OK\r\n");
    EXPECT("SET k w NX", "$-1\r\n");
    EXPECT("GET k", "$1\r\nv\r\n");
    EXPECT("SET k w XX", "+OK\r\n");
    EXPECT("SET k2 w XX", "$-1\r\n");
    EXPECT("EXISTS k2", ":0\r\n");
    EXPECT("SET k v GET NX", "$1\r\nw\r\n");
    EXPECT("GET k", "$1\r\nw\r\n");
    EXPECT("SET k v3 GET", "$1\r\nw\r\n");
    EXPECT("SET k2 v3 GET XX", "$-1\r\n");
    EXPECT("SET k3 v GET", "$-1\r\n");
    EXPECT("GET k3", "$1\r\nv\r\n");
    EXPECT("SET k v nx nx", "$-1\r\n");
    EXPECT("SET k v get get", "$2\r\nv3\r\n");
    EXPECT("SET k v NX XX", "-ERR syntax error\r\n");
    EXPECT("SET k v XX NX", "-ERR syntax error\r\n");
    EXPECT("SET k v foo", "-ERR syntax error\r\n");
    EXPECT("GETSET k q", "$1\r\nv\r\n");
    EXPECT("GETSET nope2 q", "$-1\r\n");
    EXPECT("GET nope2", "$1\r\nq\r\n");
}

static void set_expiry_options_are_validated_like_redis(void)
{
    fresh();
    EXPECT("SET k v EX", "-ERR syntax error\r\n");
    EXPECT("SET k v EX abc", "-ERR value is not an integer or out of range\r\n");
    EXPECT("SET k v EX 0", "-ERR invalid expire time in 'set' command\r\n");
    EXPECT("SET k v EX -5", "-ERR invalid expire time in 'set' command\r\n");
    EXPECT("SET k v PX 10 KEEPTTL", "-ERR syntax error\r\n");
    EXPECT("SET k v EX 10 PX 20", "-ERR syntax error\r\n");
    EXPECT("SET k v EX 9223372036854775807", "-ERR invalid expire time in 'set' command\r\n");
    /* relative: now + ms overflows int64 */
    EXPECT("SET k v PX 9223372036854775807", "-ERR invalid expire time in 'set' command\r\n");
    EXPECT("DBSIZE", ":0\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
    EXPECT("SET k v EX 10", "+OK\r\n");
    EXPECT("SET k v ex 10 ex 20", "+OK\r\n");
    EXPECT("SET k v PX 10", "+OK\r\n");
    EXPECT("SET k v EXAT 10", "+OK\r\n");
    EXPECT("SET k v PXAT 10", "+OK\r\n");
    EXPECT("SET k v KEEPTTL", "+OK\r\n");
}

static void unknown_commands_and_wrong_arity_reply_like_redis(void)
{
    fresh();
    EXPECT("FOO a b", "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n");
    EXPECT("foo", "-ERR unknown command 'foo', with args beginning with: \r\n");
    char line[400], want[400];
    memset(line, 0, sizeof(line));
    memcpy(line, "foo ", 4);
    memset(line + 4, 'x', 200);
    snprintf(want, sizeof(want),
             "-ERR unknown command 'foo', with args beginning with: '%.128s' \r\n", line + 4);
    EXPECT(line, want);
    EXPECT("SET k", "-ERR wrong number of arguments for 'set' command\r\n");
    EXPECT("GET", "-ERR wrong number of arguments for 'get' command\r\n");
    EXPECT("get a b", "-ERR wrong number of arguments for 'get' command\r\n");
    EXPECT("INCR", "-ERR wrong number of arguments for 'incr' command\r\n");
    EXPECT("DEL", "-ERR wrong number of arguments for 'del' command\r\n");
    EXPECT("EXISTS", "-ERR wrong number of arguments for 'exists' command\r\n");
    EXPECT("DBSIZE x", "-ERR wrong number of arguments for 'dbsize' command\r\n");
    EXPECT("MSET a", "-ERR wrong number of arguments for 'mset' command\r\n");
    EXPECT("MSET a 1 b", "-ERR wrong number of arguments for 'mset' command\r\n");
    EXPECT("GETSET a", "-ERR wrong number of arguments for 'getset' command\r\n");
    EXPECT("keel.getv", "-ERR wrong number of arguments for 'keel.getv' command\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index); /* errors still advance the index */
}

static void incr_family_parses_like_redis_and_refuses_overflow(void)
{
    fresh();
    EXPECT("INCR n", ":1\r\n");
    EXPECT("INCRBY n 41", ":42\r\n");
    EXPECT("DECR n", ":41\r\n");
    EXPECT("DECRBY n 50", ":-9\r\n");
    EXPECT("GET n", "$2\r\n-9\r\n");
    EXPECT("DECR fresh", ":-1\r\n");
    EXPECT("SET n 9223372036854775807", "+OK\r\n");
    EXPECT("INCR n", "-ERR increment or decrement would overflow\r\n");
    EXPECT("DECRBY n -9223372036854775808", "-ERR decrement would overflow\r\n");
    EXPECT("INCRBY n -9223372036854775808", ":-1\r\n");
    EXPECT("INCRBY n -9223372036854775807", ":-9223372036854775808\r\n");
    EXPECT("DECR n", "-ERR increment or decrement would overflow\r\n");
    EXPECT("GET n", "$20\r\n-9223372036854775808\r\n");
    EXPECT("INCRBY n 1x", "-ERR value is not an integer or out of range\r\n");
    EXPECT("INCRBY n +1", "-ERR value is not an integer or out of range\r\n");
    EXPECT("INCRBY n -0", "-ERR value is not an integer or out of range\r\n");
    EXPECT("INCRBY n 01", "-ERR value is not an integer or out of range\r\n");
    EXPECT("INCRBY n 9223372036854775808", "-ERR value is not an integer or out of range\r\n");
    EXPECT("DECRBY n x", "-ERR value is not an integer or out of range\r\n");
    EXPECT("SET z -0", "+OK\r\n");
    EXPECT("INCR z", "-ERR value is not an integer or out of range\r\n");
    EXPECT("SET z 00", "+OK\r\n");
    EXPECT("INCR z", "-ERR value is not an integer or out of range\r\n");
    EXPECT("SET z 0", "+OK\r\n");
    EXPECT("INCRBY z 0", ":0\r\n");
    EXPECT("SET z abc", "+OK\r\n");
    EXPECT("INCR z", "-ERR value is not an integer or out of range\r\n");
    EXPECT("GET z", "$3\r\nabc\r\n");
}

static void append_strlen_exists_del_mget_reply_like_redis(void)
{
    fresh();
    const uint8_t *app[] = {(const uint8_t *)"APPEND", (const uint8_t *)"newk",
                            (const uint8_t *)""};
    size_t app_lens[] = {6, 4, 0};
    KT_EQ_STR(kvt_argv(&t, 3, app, app_lens), ":0\r\n"); /* creates an empty string */
    EXPECT("EXISTS newk", ":1\r\n");
    EXPECT("APPEND k 1", ":1\r\n");
    EXPECT("APPEND k xyz", ":4\r\n");
    EXPECT("STRLEN k", ":4\r\n");
    EXPECT("STRLEN nope", ":0\r\n");
    EXPECT("EXISTS k k nope", ":2\r\n");
    EXPECT("MGET k nope newk", "*3\r\n$4\r\n1xyz\r\n$-1\r\n$0\r\n\r\n");
    EXPECT("MSET a 1 a 2", "+OK\r\n");
    EXPECT("GET a", "$1\r\n2\r\n");
    EXPECT("DBSIZE", ":3\r\n");
    EXPECT("DEL a a zz", ":1\r\n");
    EXPECT("DEL a", ":0\r\n");
    EXPECT("DEL k newk", ":2\r\n");
    EXPECT("DBSIZE", ":0\r\n");
    /* APPEND grows in place over many calls */
    char want[64];
    for (int i = 1; i <= 1000; i++) {
        snprintf(want, sizeof(want), ":%d\r\n", i * 3);
        EXPECT("APPEND big abc", want);
    }
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&t.kv, "big", 3, &v), 0);
    KT_EQ_INT(v.len, 3000);
    for (size_t i = 0; i < v.len; i++)
        KT_CHECK(v.value[i] == "abc"[i % 3]);
}

static void keel_getv_returns_value_and_version(void)
{
    fresh();
    EXPECT("KEEL.GETV k", "*-1\r\n");
    EXPECT("SET k v", "+OK\r\n");
    EXPECT("SET j w", "+OK\r\n");
    EXPECT("keel.getv k", "*2\r\n$1\r\nv\r\n:1\r\n");
    EXPECT("KEEL.GETV j", "*2\r\n$1\r\nw\r\n:2\r\n");
}

static void keel_mgetv_returns_each_keys_value_and_version(void)
{
    fresh();
    EXPECT("KEEL.MGETV k", "*1\r\n*-1\r\n");
    EXPECT("SET k v", "+OK\r\n");
    EXPECT("SET j ww", "+OK\r\n");
    EXPECT("keel.mgetv k nope j k", "*4\r\n*2\r\n$1\r\nv\r\n:1\r\n*-1\r\n*2\r\n$2\r\nww\r\n:2\r\n"
                                    "*2\r\n$1\r\nv\r\n:1\r\n");
    EXPECT("SADD s m", ":1\r\n");
    EXPECT("KEEL.MGETV k s",
           "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    EXPECT("KEEL.MGETV", "-ERR wrong number of arguments for 'keel.mgetv' command\r\n");
}

static void revision_counts_changes_and_keys_carry_mod_and_create_revisions(void)
{
    fresh();
    keel_kv_value_t v;
    EXPECT("SET a 1", "+OK\r\n");
    EXPECT("SET b 1", "+OK\r\n");
    EXPECT("SET a 2", "+OK\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 3);
    KT_EQ_INT(keel_kv_get(&t.kv, "a", 1, &v), 0);
    KT_EQ_U64(v.version, 3);
    KT_EQ_U64(v.create_revision, 1);
    EXPECT("MSET a 3 c 3 c 4", "+OK\r\n"); /* one change for all keys */
    KT_EQ_U64(keel_kv_revision(&t.kv), 4);
    KT_EQ_INT(keel_kv_get(&t.kv, "a", 1, &v), 0);
    KT_EQ_U64(v.version, 4);
    KT_EQ_U64(v.create_revision, 1);
    KT_EQ_INT(keel_kv_get(&t.kv, "c", 1, &v), 0);
    KT_EQ_U64(v.version, 4);
    KT_EQ_U64(v.create_revision, 4);
    KT_EQ_MEM(v.value, "4", 1);
    /* no change, no revision: failed NX/XX, deleting nothing, errors, reads */
    EXPECT("SET a x NX", "$-1\r\n");
    EXPECT("SET zz x XX", "$-1\r\n");
    EXPECT("DEL zz yy", ":0\r\n");
    EXPECT("INCR a", ":4\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 5);
    EXPECT("SET b x", "+OK\r\n");
    EXPECT("INCR b", "-ERR value is not an integer or out of range\r\n");
    EXPECT("GET a", "$1\r\n4\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 6);
    EXPECT("DEL a b zz", ":2\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 7);
    EXPECT("SET a new", "+OK\r\n"); /* re-created: a new create_revision */
    KT_EQ_INT(keel_kv_get(&t.kv, "a", 1, &v), 0);
    KT_EQ_U64(v.create_revision, 8);
    EXPECT("APPEND a !", ":4\r\n");
    KT_EQ_INT(keel_kv_get(&t.kv, "a", 1, &v), 0);
    KT_EQ_U64(v.version, 9);
    KT_EQ_U64(v.create_revision, 8);
    EXPECT("SET a same", "+OK\r\n"); /* a SET is a change even if the value is equal */
    EXPECT("SET a same", "+OK\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 11);
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index);
}

static void limits_refuse_commands_without_changing_state(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.key_bytes_max = 4;
    cfg.value_bytes_max = 24;
    cfg.keys_max = 3;
    cfg.argc_max = 9;
    kvt_free(&t);
    kvt_init(&t, &cfg);
    EXPECT("SET abcde v", "-ERR key exceeds maximum allowed size\r\n");
    EXPECT("SET abcd 0123456789012345678901234", "-ERR string exceeds maximum allowed size\r\n");
    EXPECT("SET abcd 012345678901234567890123", "+OK\r\n");
    EXPECT("APPEND abcd x", "-ERR string exceeds maximum allowed size\r\n");
    EXPECT("INCR abcde", "-ERR key exceeds maximum allowed size\r\n");
    EXPECT("MSET a 1 abcde 2", "-ERR key exceeds maximum allowed size\r\n");
    EXPECT("MSET a 1 b 2 c 3",
           "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    EXPECT("MSET a 1 b 2 abcd 3", "+OK\r\n");
    EXPECT("SET c 1",
           "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    EXPECT("INCR c",
           "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    EXPECT("APPEND c x",
           "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    EXPECT("SET a 2", "+OK\r\n"); /* overwriting needs no room */
    EXPECT("DEL b", ":1\r\n");
    EXPECT("SET c 1", "+OK\r\n");
    EXPECT("MGET a b c d e f g h i", "-ERR too many arguments (argc_max)\r\n");
    EXPECT("DBSIZE", ":3\r\n");
    keel_errmsg_t m;
    cfg = keel_kv_config_default();
    KT_EQ_INT(keel_kv_config_validate(&cfg, &m), 0);
    cfg.value_bytes_max = (size_t)KEEL_KV_VALUE_BYTES_MAX + 1;
    KT_EQ_INT(keel_kv_config_validate(&cfg, &m), KEEL_EINVAL);
    cfg = keel_kv_config_default();
    cfg.keys_max = 0;
    KT_EQ_INT(keel_kv_config_validate(&cfg, &m), KEEL_EINVAL);
    cfg = keel_kv_config_default();
    cfg.argc_max = 3;
    KT_EQ_INT(keel_kv_config_validate(&cfg, &m), KEEL_EINVAL);
    keel_kv_t bad;
    KT_EQ_INT(keel_kv_init(&bad, &cfg), KEEL_EINVAL);
}

static void command_flags_and_check_judge_before_proposing(void)
{
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"set", 3), KEEL_KV_WRITE);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"MSET", 4), KEEL_KV_WRITE);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"Get", 3), KEEL_KV_READ);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"scan", 4), KEEL_KV_READ);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"keel.getv", 9), KEEL_KV_READ);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"SETX", 4), 0);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"SE", 2), 0);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"", 0), 0);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"PING", 4), 0);
    struct {
        const char *line;
        const char *err; /* NULL: accepted */
    } cases[] = {
        {"SET k v", NULL},
        {"SET k v NX GET", NULL},
        {"SET k v EX 5", NULL},
        {"SET k v KEEPTTL EX 5", "-ERR syntax error\r\n"},
        {"EXPIRE k 5 NX", NULL},
        {"EXPIRE k x", "-ERR value is not an integer or out of range\r\n"},
        {"PEXPIRE k 5 NX XX",
         "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"},
        {"EXPIREAT k 5 GT LT", "-ERR GT and LT options at the same time are not compatible\r\n"},
        {"PEXPIREAT k 5 FOO", "-ERR Unsupported option FOO\r\n"},
        {"KEEL.CAS k 0 v", NULL},
        {"KEEL.CAS k -1 v", "-ERR value is not an integer or out of range\r\n"},
        {"KEEL.CAS k 1", "-ERR wrong number of arguments for 'keel.cas' command\r\n"},
        {"KEEL.EXPIRE.SWEEP 100 10", NULL},
        {"KEEL.EXPIRE.SWEEP 100 -1", "-ERR value is not an integer or out of range\r\n"},
        {"TTL k", NULL},
        {"SET k v BOGUS", "-ERR syntax error\r\n"},
        {"SET k", "-ERR wrong number of arguments for 'set' command\r\n"},
        {"INCRBY k x", "-ERR value is not an integer or out of range\r\n"},
        {"DECRBY k -9223372036854775808", "-ERR decrement would overflow\r\n"},
        {"MSET a 1 b", "-ERR wrong number of arguments for 'mset' command\r\n"},
        {"SCAN 0 COUNT 0", "-ERR syntax error\r\n"},
        {"SCAN x", "-ERR invalid cursor\r\n"},
        {"SCAN 0 MATCH a* COUNT 5", NULL},
        {"NOPE x", "-ERR unknown command 'NOPE', with args beginning with: 'x' \r\n"},
    };
    keel_buf_t err;
    keel_buf_init(&err, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *argv[KVT_ARGS_MAX];
        size_t lens[KVT_ARGS_MAX];
        int argc = kvt_split(cases[i].line, argv, lens);
        keel_buf_reset(&err);
        int rc = keel_kv_check(argc, argv, lens, &err);
        if (cases[i].err == NULL) {
            KT_EQ_INT(rc, 0);
            KT_EQ_INT(keel_buf_unread(&err), 0);
        } else {
            KT_EQ_INT(rc, KEEL_EINVAL);
            KT_EQ_INT(keel_buf_unread(&err), strlen(cases[i].err));
            KT_EQ_MEM(keel_buf_rptr(&err), cases[i].err, strlen(cases[i].err));
        }
    }
    keel_buf_free(&err);
}

static void command_table_is_exposed_for_the_server_registry(void)
{
    size_t n = keel_kv_commands_count();
    KT_CHECK(n >= 16);
    int seen_set = 0, seen_scan = 0;
    for (size_t i = 0; i < n; i++) {
        keel_kv_command_info_t info;
        keel_kv_command_info(i, &info);
        KT_EQ_INT(keel_kv_command_flags((const uint8_t *)info.name, strlen(info.name)), info.flags);
        if (strcmp(info.name, "set") == 0) {
            seen_set = 1;
            KT_EQ_INT(info.arity, -3);
            KT_EQ_INT(info.flags, KEEL_KV_WRITE);
        }
        if (strcmp(info.name, "scan") == 0) {
            seen_scan = 1;
            KT_EQ_INT(info.arity, -2);
            KT_EQ_INT(info.flags, KEEL_KV_READ);
        }
    }
    KT_CHECK(seen_set && seen_scan);
}

/* Applies `line` with `reply` as the reply buffer; returns apply's result. */
static int apply_into(const char *line, keel_buf_t *reply)
{
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&t.entry);
    if (keel_kv_entry_encode(&t.entry, 1, argc, argv, lens) != 0)
        return -999;
    return keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                         reply);
}

static void a_full_reply_buffer_never_changes_what_apply_does(void)
{
    fresh();
    static uint8_t big[5000];
    memset(big, 'b', sizeof(big));
    const uint8_t *argv[] = {(const uint8_t *)"SET", (const uint8_t *)"k", big};
    size_t lens[] = {3, 1, sizeof(big)};
    KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "+OK\r\n");
    static const char too_big[] = "-ERR reply does not fit the reply buffer\r\n";
    keel_buf_t small;
    keel_buf_init(&small, 100);
    keel_buf_append(&small, "pre", 3);
    /* the old value does not fit: the SET happens anyway, the reply says why it is missing */
    KT_EQ_INT(apply_into("SET k v GET", &small), 0);
    KT_EQ_INT(keel_buf_unread(&small), 3 + strlen(too_big));
    KT_EQ_MEM(keel_buf_rptr(&small), "pre", 3);
    KT_EQ_MEM(keel_buf_rptr(&small) + 3, too_big, strlen(too_big));
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index);
    EXPECT("GET k", "$1\r\nv\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 2);
    /* no room at all: still applied, reply untouched */
    keel_buf_t full;
    keel_buf_init(&full, 8);
    keel_buf_append(&full, "12345678", 8);
    KT_EQ_INT(apply_into("SET k w", &full), 0);
    KT_EQ_INT(apply_into("DEL k", &full), 0);
    KT_EQ_INT(apply_into("NOSUCH cmd", &full), 0);
    KT_EQ_INT(keel_buf_unread(&full), 8);
    KT_EQ_U64(keel_kv_revision(&t.kv), 4);
    EXPECT("EXISTS k", ":0\r\n");
    /* reads change nothing, so their reply failure is returned and the partial reply dropped */
    KT_EQ_STR(kvt_argv(&t, 3, argv, lens), "+OK\r\n");
    const uint8_t *mget[] = {(const uint8_t *)"MGET", (const uint8_t *)"x", (const uint8_t *)"k"};
    size_t mget_lens[] = {4, 1, 1};
    keel_buf_reset(&small);
    keel_buf_append(&small, "pre", 3);
    KT_EQ_INT(keel_kv_read(&t.kv, 3, mget, mget_lens, &small), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&small), 3);
    const uint8_t *bad[] = {(const uint8_t *)"SET", (const uint8_t *)"k"};
    KT_EQ_INT(keel_kv_check(2, bad, lens, &full), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&full), 8);
    keel_buf_free(&small);
    keel_buf_free(&full);
}

static void read_refuses_writes_and_apply_runs_logged_reads(void)
{
    fresh();
    EXPECT("SET k v", "+OK\r\n");
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split("SET k w", argv, lens);
    keel_buf_reset(&t.reply);
    KT_EQ_INT(keel_kv_read(&t.kv, argc, argv, lens, &t.reply), KEEL_EINVAL);
    KT_EQ_INT(keel_buf_unread(&t.reply), 0);
    /* a read proposed through the log (a "log read") is answered at apply time */
    argc = kvt_split("GET k", argv, lens);
    keel_buf_reset(&t.entry);
    keel_buf_reset(&t.reply);
    KT_EQ_INT(keel_kv_entry_encode(&t.entry, 5, argc, argv, lens), 0);
    KT_EQ_INT(keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                            &t.reply),
              0);
    KT_EQ_MEM(keel_buf_rptr(&t.reply), "$1\r\nv\r\n", 7);
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index);
    keel_kv_advance(&t.kv, t.index + 5);
    t.index += 5;
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index);
    KT_EQ_U64(keel_kv_revision(&t.kv), 1);
}

static void entries_round_trip_and_every_truncation_is_refused(void)
{
    keel_rand_t r;
    uint64_t seed = 0x5eed0001;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    keel_buf_t e;
    keel_buf_init(&e, 0);
    uint8_t pool[4096];
    for (size_t i = 0; i < sizeof(pool); i++)
        pool[i] = (uint8_t)keel_rand_u64(&r);
    for (int round = 0; round < 200; round++) {
        int argc = 1 + (int)keel_rand_below(&r, 8);
        const uint8_t *argv[8];
        size_t lens[8];
        for (int i = 0; i < argc; i++) {
            lens[i] = keel_rand_below(&r, 40);
            argv[i] = pool + keel_rand_below(&r, sizeof(pool) - 40);
        }
        uint64_t time_ms = keel_rand_u64(&r);
        keel_buf_reset(&e);
        KT_EQ_INT(keel_kv_entry_encode(&e, time_ms, argc, argv, lens), 0);
        const uint8_t *dargv[8];
        size_t dlens[8], dargc;
        uint64_t dtime;
        size_t n = keel_buf_unread(&e);
        KT_EQ_INT(keel_kv_entry_decode(keel_buf_rptr(&e), n, &dtime, 8, dargv, dlens, &dargc), 0);
        KT_EQ_U64(dtime, time_ms);
        KT_EQ_INT(dargc, argc);
        for (int i = 0; i < argc; i++) {
            KT_EQ_INT(dlens[i], lens[i]);
            KT_EQ_MEM(dargv[i], argv[i], lens[i]);
        }
        if (argc > 1)
            KT_EQ_INT(keel_kv_entry_decode(keel_buf_rptr(&e), n, &dtime, 1, dargv, dlens, &dargc),
                      KEEL_ETOOBIG);
        for (size_t cut = 0; cut < n; cut++)
            KT_EQ_INT(keel_kv_entry_decode(keel_buf_rptr(&e), cut, &dtime, 8, dargv, dlens, &dargc),
                      KEEL_EPROTO);
    }
    /* header-level malformations */
    const uint8_t *one[] = {(const uint8_t *)"GET", (const uint8_t *)"k"};
    size_t one_lens[] = {3, 1};
    keel_buf_reset(&e);
    KT_EQ_INT(keel_kv_entry_encode(&e, 1, 2, one, one_lens), 0);
    uint8_t copy[64];
    size_t n = keel_buf_unread(&e);
    const uint8_t *dargv[4];
    size_t dlens[4], dargc;
    uint64_t dtime;
    memcpy(copy, keel_buf_rptr(&e), n);
    copy[0] = 2; /* unknown version */
    KT_EQ_INT(keel_kv_entry_decode(copy, n, &dtime, 4, dargv, dlens, &dargc), KEEL_EPROTO);
    memcpy(copy, keel_buf_rptr(&e), n);
    copy[9] = 0; /* argc 0 */
    KT_EQ_INT(keel_kv_entry_decode(copy, n, &dtime, 4, dargv, dlens, &dargc), KEEL_EPROTO);
    memcpy(copy, keel_buf_rptr(&e), n);
    copy[12] = 0x80; /* argc huge */
    KT_EQ_INT(keel_kv_entry_decode(copy, n, &dtime, 4, dargv, dlens, &dargc), KEEL_EPROTO);
    memcpy(copy, keel_buf_rptr(&e), n);
    copy[n] = 'x'; /* trailing byte */
    KT_EQ_INT(keel_kv_entry_decode(copy, n + 1, &dtime, 4, dargv, dlens, &dargc), KEEL_EPROTO);
    memcpy(copy, keel_buf_rptr(&e), n);
    copy[16] = 0xff; /* first length past the end */
    KT_EQ_INT(keel_kv_entry_decode(copy, n, &dtime, 4, dargv, dlens, &dargc), KEEL_EPROTO);
    KT_EQ_INT(keel_kv_entry_encode(&e, 1, 0, one, one_lens), KEEL_EINVAL);
    keel_buf_free(&e);
}

static void malformed_entries_fail_apply_and_change_nothing(void)
{
    fresh();
    EXPECT("SET k v", "+OK\r\n");
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split("SET k w", argv, lens);
    keel_buf_reset(&t.entry);
    KT_EQ_INT(keel_kv_entry_encode(&t.entry, 1, argc, argv, lens), 0);
    keel_buf_reset(&t.reply);
    keel_buf_append(&t.reply, "prev", 4);
    for (size_t cut = 0; cut < keel_buf_unread(&t.entry); cut++) {
        KT_EQ_INT(keel_kv_apply(&t.kv, t.index + 1, keel_buf_rptr(&t.entry), cut, &t.reply),
                  KEEL_EPROTO);
        KT_EQ_INT(keel_buf_unread(&t.reply), 4);
    }
    KT_EQ_U64(keel_kv_applied_index(&t.kv), t.index);
    KT_EQ_U64(keel_kv_revision(&t.kv), 1);
    EXPECT("GET k", "$1\r\nv\r\n");
}

/*
 * A random differential run against a tiny model (an array of keys) of the
 * write commands' effects on values, versions and the revision.
 */
typedef struct model_key {
    char key[4];
    char val[64];
    int present;
    uint64_t version, create;
} model_key_t;

/* Redis's strict integer syntax, for the model's small values. */
static int model_int(const char *s, long long *v)
{
    size_t n = strlen(s), i = s[0] == '-';
    if (strcmp(s, "0") == 0) {
        *v = 0;
        return 1;
    }
    if (n == i || n > 18 || s[i] < '1' || s[i] > '9')
        return 0;
    for (size_t k = i; k < n; k++)
        if (s[k] < '0' || s[k] > '9')
            return 0;
    *v = strtoll(s, NULL, 10);
    return 1;
}

static void random_commands_agree_with_a_simple_model(void)
{
    fresh();
    keel_rand_t r;
    uint64_t seed = (uint64_t)time(NULL);
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    model_key_t m[8];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 8; i++)
        snprintf(m[i].key, sizeof(m[i].key), "k%d", i);
    uint64_t rev = 0;
    char line[256], want[256];
    for (int step = 0; step < 20000; step++) {
        int k = (int)keel_rand_below(&r, 8), op = (int)keel_rand_below(&r, 5);
        model_key_t *x = &m[k];
        long long n = (long long)keel_rand_range(&r, -5, 5);
        if (op == 0) {
            snprintf(line, sizeof(line), "SET %s v%lld", x->key, n);
            snprintf(x->val, sizeof(x->val), "v%lld", n);
            rev++;
            x->create = x->present ? x->create : rev;
            x->present = 1, x->version = rev;
            EXPECT(line, "+OK\r\n");
        } else if (op == 1) {
            snprintf(line, sizeof(line), "DEL %s", x->key);
            snprintf(want, sizeof(want), ":%d\r\n", x->present);
            rev += x->present;
            x->present = 0;
            EXPECT(line, want);
        } else if (op == 2) {
            snprintf(line, sizeof(line), "INCRBY %s %lld", x->key, n);
            long long v = 0;
            if (x->present && !model_int(x->val, &v)) {
                EXPECT(line, "-ERR value is not an integer or out of range\r\n");
                continue;
            }
            snprintf(x->val, sizeof(x->val), "%lld", v + n);
            rev++;
            x->create = x->present ? x->create : rev;
            x->present = 1, x->version = rev;
            snprintf(want, sizeof(want), ":%lld\r\n", v + n);
            EXPECT(line, want);
        } else if (op == 3) {
            if (x->present && strlen(x->val) > 50) {
                snprintf(line, sizeof(line), "SET %s r", x->key);
                snprintf(x->val, sizeof(x->val), "r");
                x->version = ++rev;
                EXPECT(line, "+OK\r\n");
            }
            long long a = n < 0 ? -n : n;
            snprintf(line, sizeof(line), "APPEND %s %lld", x->key, a);
            if (!x->present)
                x->val[0] = '\0';
            size_t l = strlen(x->val);
            snprintf(x->val + l, sizeof(x->val) - l, "%lld", a);
            rev++;
            x->create = x->present ? x->create : rev;
            x->present = 1, x->version = rev;
            snprintf(want, sizeof(want), ":%zu\r\n", strlen(x->val));
            EXPECT(line, want);
        } else {
            int j = (int)keel_rand_below(&r, 8);
            snprintf(line, sizeof(line), "MSET %s a%d %s b%d", x->key, k, m[j].key, j);
            rev++;
            snprintf(x->val, sizeof(x->val), "a%d", k);
            x->create = x->present ? x->create : rev;
            x->present = 1, x->version = rev;
            snprintf(m[j].val, sizeof(m[j].val), "b%d", j);
            m[j].create = m[j].present ? m[j].create : rev;
            m[j].present = 1, m[j].version = rev;
            EXPECT(line, "+OK\r\n");
        }
        KT_EQ_U64(keel_kv_revision(&t.kv), rev);
    }
    for (int i = 0; i < 8; i++) {
        keel_kv_value_t v;
        int rc = keel_kv_get(&t.kv, m[i].key, strlen(m[i].key), &v);
        KT_EQ_INT(rc, m[i].present ? 0 : KEEL_ENOTFOUND);
        if (!m[i].present)
            continue;
        KT_EQ_INT(v.len, strlen(m[i].val));
        KT_EQ_MEM(v.value, m[i].val, v.len);
        KT_EQ_U64(v.version, m[i].version);
        KT_EQ_U64(v.create_revision, m[i].create);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Printed, not asserted: SET with 16-byte keys and 100-byte values, each
 * entry encoded into a hot buffer and applied (what a node does per committed
 * entry, minus Raft), then GET through keel_kv_read. Small key sets stay in
 * cache; large ones pay a cache miss or two per lookup.
 */
static void bench_keys(int keys, int ops)
{
    fresh();
    char(*names)[17] = malloc(sizeof(*names) * (size_t)keys);
    for (int i = 0; i < keys; i++)
        snprintf(names[i], sizeof(names[i]), "key:%012d", i);
    uint8_t val[100];
    memset(val, 'v', sizeof(val));
    keel_buf_t entry, reply;
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    double t0 = now_s();
    for (int i = 0; i < ops; i++) {
        const uint8_t *argv[] = {(const uint8_t *)"SET",
                                 (const uint8_t *)names[((uint64_t)i * 2654435761u) % keys], val};
        size_t lens[] = {3, 16, 100};
        keel_buf_reset(&entry);
        keel_buf_reset(&reply);
        int rc = keel_kv_entry_encode(&entry, 1, 3, argv, lens);
        rc |=
            keel_kv_apply(&t.kv, ++t.index, keel_buf_rptr(&entry), keel_buf_unread(&entry), &reply);
        if (rc != 0)
            KT_FAIL("apply %d", rc);
    }
    double t1 = now_s();
    for (int i = 0; i < ops; i++) {
        const uint8_t *argv[] = {(const uint8_t *)"GET",
                                 (const uint8_t *)names[((uint64_t)i * 2654435761u) % keys]};
        size_t lens[] = {3, 16};
        keel_buf_reset(&reply);
        if (keel_kv_read(&t.kv, 2, argv, lens, &reply) != 0 || keel_buf_unread(&reply) != 108)
            KT_FAIL("read");
    }
    double t2 = now_s();
    KT_EQ_INT(keel_kv_count(&t.kv), keys);
    fprintf(stderr,
            "     %7d keys: encode+apply SET %4.0f ns/op, read GET %4.0f ns/op (CPU time)\n", keys,
            (t1 - t0) / ops * 1e9, (t2 - t1) / ops * 1e9);
    keel_buf_free(&reply);
    keel_buf_free(&entry);
    free(names);
}

static void measure_apply_and_read_throughput(void)
{
    bench_keys(10000, 1000000);
    bench_keys(200000, 1000000);
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(set_and_get_reply_like_redis);
    KT_RUN(set_nx_xx_get_options_behave_like_redis);
    KT_RUN(set_expiry_options_are_validated_like_redis);
    KT_RUN(unknown_commands_and_wrong_arity_reply_like_redis);
    KT_RUN(incr_family_parses_like_redis_and_refuses_overflow);
    KT_RUN(append_strlen_exists_del_mget_reply_like_redis);
    KT_RUN(keel_getv_returns_value_and_version);
    KT_RUN(keel_mgetv_returns_each_keys_value_and_version);
    KT_RUN(revision_counts_changes_and_keys_carry_mod_and_create_revisions);
    KT_RUN(limits_refuse_commands_without_changing_state);
    KT_RUN(command_flags_and_check_judge_before_proposing);
    KT_RUN(command_table_is_exposed_for_the_server_registry);
    KT_RUN(a_full_reply_buffer_never_changes_what_apply_does);
    KT_RUN(read_refuses_writes_and_apply_runs_logged_reads);
    KT_RUN(entries_round_trip_and_every_truncation_is_refused);
    KT_RUN(malformed_entries_fail_apply_and_change_nothing);
    KT_RUN(random_commands_agree_with_a_simple_model);
    KT_RUN(measure_apply_and_read_throughput);
    kvt_free(&t);
    return kt_done();
}
