/* test_kv_expire.c - KV state machine: KEEL.CAS, deadlines from entry time, TTL replies, sweeps. */
#include "base/rand.h"
#include "test_kv_util.h"

#include <stdio.h>

static kvt_t t;

static void fresh(void)
{
    kvt_free(&t);
    kvt_init(&t, NULL);
}

#define AT(ms, line, want) KT_EQ_STR(kvt_at(&t, ms, line), want)
#define READ(ms, line, want) KT_EQ_STR(kvt_read_at(&t, ms, line), want)

static uint64_t expire_of(kvt_t *x, const char *key)
{
    keel_kv_value_t v;
    if (keel_kv_get(&x->kv, key, strlen(key), &v) != 0)
        return UINT64_MAX;
    return v.expire_ms;
}

/* ---- KEEL.CAS ------------------------------------------------------------------ */

static void cas_creates_at_version_zero_and_replies_conflict_with_both_versions(void)
{
    fresh();
    AT(1000, "KEEL.CAS k 5 v", "-CONFLICT expected version 5, current 0\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
    AT(1000, "KEEL.CAS k 0 v1", ":1\r\n");
    AT(1000, "KEEL.CAS k 0 v2", "-CONFLICT expected version 0, current 1\r\n");
    AT(1000, "SET other x", "+OK\r\n");
    AT(1000, "KEEL.CAS k 1 v2", ":3\r\n");
    AT(1000, "KEEL.CAS k 1 v3", "-CONFLICT expected version 1, current 3\r\n");
    READ(1000, "KEEL.GETV k", "*2\r\n$2\r\nv2\r\n:3\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 3);
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&t.kv, "k", 1, &v), 0);
    KT_EQ_U64(v.create_revision, 1);
    AT(1000, "KEEL.CAS k x v", "-ERR value is not an integer or out of range\r\n");
    AT(1000, "KEEL.CAS k 3", "-ERR wrong number of arguments for 'keel.cas' command\r\n");
    /* a CAS drops the deadline, as SET does */
    AT(1000, "PEXPIRE k 500", ":1\r\n");
    AT(1000, "KEEL.CAS k 3 v4", "-CONFLICT expected version 3, current 4\r\n");
    AT(1000, "KEEL.CAS k 4 v4", ":5\r\n");
    READ(1000, "PTTL k", ":-1\r\n");
    /* an expired key is absent: version 0 matches it and a new key is created */
    AT(2000, "SET e 1 PX 10", "+OK\r\n");
    AT(2009, "KEEL.CAS e 7 z", "-CONFLICT expected version 7, current 6\r\n");
    AT(2010, "KEEL.CAS e 6 z", "-CONFLICT expected version 6, current 0\r\n");
    AT(2010, "KEEL.CAS e 0 z", ":7\r\n");
    KT_EQ_INT(keel_kv_get(&t.kv, "e", 1, &v), 0);
    KT_EQ_U64(v.create_revision, 7);
    KT_EQ_U64(v.expire_ms, 0);
    /* limits: a value over value_bytes_max is refused whole */
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.value_bytes_max = 20;
    kvt_free(&t);
    kvt_init(&t, &cfg);
    AT(1, "KEEL.CAS k 0 123456789012345678901", "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), 0);
}

/* ---- deadlines -------------------------------------------------------------------- */

static void set_deadlines_come_from_the_entry_time_on_every_node(void)
{
    static kvt_t a, b;
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    const char *lines[] = {"SET ex v EX 10",     "SET px v PX 1500",   "SET exat v EXAT 5000",
                           "SET pxat v PXAT 77", "SET plain v",        "SET keep v PX 100",
                           "SET keep w KEEPTTL", "SET keep2 v PX 100", "SET keep2 w",
                           "GETSET px2 q",       "SET px2 v PX 3 GET", "SET px2 w GET"};
    /* b applies the same entries later (a slow follower): same deadlines */
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        kvt_at(&a, 1000000, lines[i]);
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        kvt_at(&b, 1000000, lines[i]);
    KT_EQ_U64(expire_of(&a, "ex"), 1010000);
    KT_EQ_U64(expire_of(&a, "px"), 1001500);
    KT_EQ_U64(expire_of(&a, "exat"), 5000000);
    KT_EQ_U64(expire_of(&a, "pxat"), 77);
    KT_EQ_U64(expire_of(&a, "plain"), 0);
    KT_EQ_U64(expire_of(&a, "keep"), 1000100);
    KT_EQ_U64(expire_of(&a, "keep2"), 0);
    KT_EQ_U64(expire_of(&a, "px2"), 0);
    const char *keys[] = {"ex", "px", "exat", "pxat", "plain", "keep", "keep2", "px2"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        KT_EQ_U64(expire_of(&a, keys[i]), expire_of(&b, keys[i]));
    KT_EQ_U64(keel_kv_next_deadline_ms(&a.kv), 77);
    kvt_free(&a);
    kvt_free(&b);
}

static void ttl_and_pttl_reply_like_redis(void)
{
    fresh();
    AT(1000, "SET k v PX 1500", "+OK\r\n");
    AT(1000, "SET p v", "+OK\r\n");
    READ(1000, "TTL nope", ":-2\r\n");
    READ(1000, "PTTL nope", ":-2\r\n");
    READ(1000, "TTL p", ":-1\r\n");
    READ(1000, "PTTL p", ":-1\r\n");
    READ(1000, "PTTL k", ":1500\r\n");
    READ(1000, "TTL k", ":2\r\n"); /* (1500 + 500) / 1000, Redis's rounding */
    READ(1001, "TTL k", ":1\r\n");
    READ(2499, "PTTL k", ":1\r\n");
    READ(2499, "TTL k", ":0\r\n");
    READ(2500, "PTTL k", ":-2\r\n");
    READ(2500, "TTL k", ":-2\r\n");
    /* keel_kv_read uses the state's own clock: the newest applied entry's time */
    KT_EQ_STR(kvt(&t, "PTTL k"), ":1500\r\n");
    kvt_at(&t, 2400, "SET x y");
    KT_EQ_STR(kvt(&t, "PTTL k"), ":100\r\n");
}

static void an_expired_key_is_absent_to_every_read(void)
{
    fresh();
    AT(1000, "SET k hello PX 100", "+OK\r\n");
    AT(1000, "SET live v", "+OK\r\n");
    const char *reads[][3] = {
        /* line, before the deadline, at the deadline */
        {"GET k", "$5\r\nhello\r\n", "$-1\r\n"},
        {"EXISTS k live k", ":3\r\n", ":1\r\n"},
        {"MGET k live", "*2\r\n$5\r\nhello\r\n$1\r\nv\r\n", "*2\r\n$-1\r\n$1\r\nv\r\n"},
        {"STRLEN k", ":5\r\n", ":0\r\n"},
        {"KEEL.GETV k", "*2\r\n$5\r\nhello\r\n:1\r\n", "*-1\r\n"},
        {"SCAN 0 COUNT 100", "*2\r\n$1\r\n0\r\n*2\r\n", "*2\r\n$1\r\n0\r\n*1\r\n$4\r\nlive\r\n"},
        {"TTL k", ":0\r\n", ":-2\r\n"},
    };
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        const char *before = kvt_read_at(&t, 1099, reads[i][0]);
        if (strncmp(before, reads[i][1], strlen(reads[i][1])) != 0)
            KT_FAIL("%s at 1099: %s", reads[i][0], before);
        READ(1100, reads[i][0], reads[i][2]);
        READ(5000, reads[i][0], reads[i][2]);
    }
    /* not swept yet: still stored, counted by DBSIZE (as Redis counts unreclaimed keys) */
    KT_EQ_INT(keel_kv_count(&t.kv), 2);
}

static void writes_treat_an_expired_key_as_absent(void)
{
    fresh();
    AT(1000, "SET n 41 PX 10", "+OK\r\n");
    AT(1000, "SET a xy PX 10", "+OK\r\n");
    AT(1000, "SET s old PX 10", "+OK\r\n");
    AT(1000, "SET d old PX 10", "+OK\r\n");
    AT(1000, "SET x old PX 10", "+OK\r\n");
    uint64_t rev = keel_kv_revision(&t.kv);
    AT(1010, "INCR n", ":1\r\n");
    AT(1010, "APPEND a z", ":1\r\n");
    AT(1010, "SET s new NX GET", "$-1\r\n");
    AT(1010, "SET x new XX", "$-1\r\n");
    AT(1010, "PERSIST x", ":0\r\n");
    AT(1010, "EXPIRE x 100", ":0\r\n");
    READ(1010, "MGET n a s", "*3\r\n$1\r\n1\r\n$1\r\nz\r\n$3\r\nnew\r\n");
    READ(1010, "PTTL n", ":-1\r\n");
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&t.kv, "s", 1, &v), 0);
    KT_EQ_U64(v.create_revision, v.version); /* a new key, not the old one's history */
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 3);
    /* DEL does not count an expired key, but removes it: a change */
    AT(1010, "DEL d", ":0\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 4);
    KT_EQ_INT(keel_kv_get(&t.kv, "d", 1, &v), KEEL_ENOTFOUND);
    AT(1010, "DEL d", ":0\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 4);
    /* MSET over an expired key creates it anew */
    AT(1010, "MSET x 1 y 2", "+OK\r\n");
    KT_EQ_INT(keel_kv_get(&t.kv, "x", 1, &v), 0);
    KT_EQ_U64(v.create_revision, rev + 5);
    KT_EQ_U64(v.expire_ms, 0);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
}

static void the_state_clock_never_runs_backwards(void)
{
    fresh();
    AT(5000, "SET k v PX 100", "+OK\r\n");
    AT(5100, "SET other v", "+OK\r\n");
    /* a new leader whose clock is behind proposes at 4000: k stays expired */
    AT(4000, "GET k", "$-1\r\n");
    READ(4000, "GET k", "$-1\r\n"); /* nor to a reader whose clock is behind */
    READ(4000, "PTTL other", ":-1\r\n");
    AT(4000, "SET r v PX 50", "+OK\r\n");
    KT_EQ_U64(expire_of(&t, "r"), 5150); /* from the state's clock, 5100 */
    READ(5149, "GET r", "$1\r\nv\r\n");
}

static void expire_family_follows_redis_rules(void)
{
    fresh();
    AT(1000, "EXPIRE nope 10", ":0\r\n");
    AT(1000, "SET k v", "+OK\r\n");
    uint64_t rev = keel_kv_revision(&t.kv);
    AT(1000, "EXPIRE k 10 XX", ":0\r\n");
    AT(1000, "EXPIRE k 10 GT", ":0\r\n"); /* no deadline counts as infinite */
    AT(1000, "EXPIRE k 10 NX", ":1\r\n");
    KT_EQ_U64(expire_of(&t, "k"), 11000);
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    READ(1000, "KEEL.GETV k", "*2\r\n$1\r\nv\r\n:2\r\n"); /* a deadline change is a change */
    AT(1000, "EXPIRE k 20 NX", ":0\r\n");
    AT(1000, "PEXPIRE k 5000 GT", ":0\r\n");
    AT(1000, "PEXPIRE k 20000 GT", ":1\r\n");
    KT_EQ_U64(expire_of(&t, "k"), 21000);
    AT(1000, "PEXPIRE k 30000 LT", ":0\r\n");
    AT(1000, "PEXPIREAT k 15000 LT", ":1\r\n");
    AT(1000, "EXPIREAT k 16 XX", ":1\r\n");
    KT_EQ_U64(expire_of(&t, "k"), 16000);
    READ(1000, "TTL k", ":15\r\n");
    AT(1000, "PERSIST k", ":1\r\n");
    AT(1000, "PERSIST k", ":0\r\n");
    READ(1000, "TTL k", ":-1\r\n");
    AT(1000, "PERSIST nope", ":0\r\n");
    AT(1000, "PEXPIRE k 100 LT", ":1\r\n"); /* LT against no deadline succeeds */
    AT(1000, "EXPIRE k 1 XX GT", ":1\r\n");
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), 2000);
    /* a deadline not after now deletes the key at once, and replies 1 */
    rev = keel_kv_revision(&t.kv);
    AT(1000, "PEXPIRE k 0", ":1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 0);
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    AT(1000, "SET k v", "+OK\r\n");
    AT(1000, "EXPIREAT k 1", ":1\r\n");
    AT(1000, "SET k v", "+OK\r\n");
    AT(1000, "EXPIRE k -5", ":1\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 0);
    /* errors: texts name the command */
    AT(1000, "SET k v", "+OK\r\n");
    AT(1000, "EXPIRE k 9223372036854775807", "-ERR invalid expire time in 'expire' command\r\n");
    AT(1000, "PEXPIRE k 9223372036854775807", "-ERR invalid expire time in 'pexpire' command\r\n");
    AT(1000, "EXPIREAT k 9223372036854775807",
       "-ERR invalid expire time in 'expireat' command\r\n");
    AT(1000, "PEXPIREAT k 9223372036854775807", ":1\r\n");
    AT(1000, "EXPIRE k", "-ERR wrong number of arguments for 'expire' command\r\n");
    AT(1000, "EXPIRE k 1 nx xx",
       "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n");
    AT(1000, "EXPIRE k 1 gt lt", "-ERR GT and LT options at the same time are not compatible\r\n");
    AT(1000, "EXPIRE k 1 bogus", "-ERR Unsupported option bogus\r\n");
    AT(1000, "EXPIRE k 1.5", "-ERR value is not an integer or out of range\r\n");
    AT(1000, "TTL k v", "-ERR wrong number of arguments for 'ttl' command\r\n");
}

static void ttl_survives_incr_and_append_but_not_set(void)
{
    fresh();
    AT(1000, "SET n 1 PX 500", "+OK\r\n");
    AT(1000, "INCRBY n 10", ":11\r\n");
    KT_EQ_U64(expire_of(&t, "n"), 1500);
    AT(1000, "SET a x PX 700", "+OK\r\n");
    char line[600] = "APPEND a ";
    memset(line + 9, 'y', 500); /* forces the entry to move (realloc) */
    line[509] = '\0';
    AT(1000, line, ":501\r\n");
    AT(1000, line, ":1001\r\n");
    KT_EQ_U64(expire_of(&t, "a"), 1700);
    /* the moved entry is still the one the index holds: a sweep finds it */
    AT(1700, "KEEL.EXPIRE.SWEEP 1700 10", ":2\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 0);
    AT(1000, "SET s v PX 5", "+OK\r\n");
    AT(1000, "SET s w", "+OK\r\n");
    KT_EQ_U64(expire_of(&t, "s"), 0);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
}

static void sweep_deletes_due_keys_earliest_first_up_to_the_limit(void)
{
    fresh();
    AT(1000, "SET c v PXAT 1300", "+OK\r\n");
    AT(1000, "SET b v PXAT 1200", "+OK\r\n");
    AT(1000, "SET a v PXAT 1200", "+OK\r\n");
    AT(1000, "SET z v PXAT 9000", "+OK\r\n");
    AT(1000, "SET p v", "+OK\r\n");
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), 1200);
    uint64_t rev = keel_kv_revision(&t.kv);
    AT(2000, "KEEL.EXPIRE.SWEEP 1199 10", ":0\r\n");
    KT_EQ_U64(keel_kv_revision(&t.kv), rev);
    /* ties broken by key bytes: a before b */
    AT(2000, "KEEL.EXPIRE.SWEEP 2000 1", ":1\r\n");
    KT_EQ_U64(expire_of(&t, "a"), UINT64_MAX);
    KT_EQ_U64(expire_of(&t, "b"), 1200);
    KT_EQ_U64(keel_kv_revision(&t.kv), rev + 1);
    AT(2000, "KEEL.EXPIRE.SWEEP 2000 10", ":2\r\n");
    KT_EQ_INT(keel_kv_count(&t.kv), 2);
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), 9000);
    /* now_ms beyond the entry's own time is capped by it */
    AT(3000, "KEEL.EXPIRE.SWEEP 100000 10", ":0\r\n");
    AT(9000, "KEEL.EXPIRE.SWEEP 100000 0", ":0\r\n");
    AT(9000, "KEEL.EXPIRE.SWEEP 100000 10", ":1\r\n");
    KT_EQ_U64(keel_kv_next_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
    AT(9000, "KEEL.EXPIRE.SWEEP x 10", "-ERR value is not an integer or out of range\r\n");
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"keel.expire.sweep", 17), KEEL_KV_WRITE);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"ttl", 3), KEEL_KV_READ);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"pttl", 4), KEEL_KV_READ);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"persist", 7), KEEL_KV_WRITE);
    KT_EQ_INT(keel_kv_command_flags((const uint8_t *)"keel.cas", 8), KEEL_KV_WRITE);
}

/*
 * A random run against a model of deadlines: after every command the
 * earliest deadline matches, and every sweep removes exactly the model's
 * (deadline, key)-smallest due keys. A second state restored from a snapshot
 * midway (a different heap shape and table order) must reply byte for byte
 * the same to everything after, sweeps included.
 */
#define MODEL_KEYS 40
static void random_deadlines_agree_with_a_model_and_survive_snapshots(void)
{
    keel_rand_t r;
    uint64_t seed = 0x6578706972ull;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    static kvt_t a, b;
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    uint64_t model[MODEL_KEYS]; /* 0: absent; else deadline or UINT64_MAX-1 for none */
    memset(model, 0, sizeof(model));
    uint64_t now = 1000;
    int restored = 0;
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    for (int step = 0; step < 20000; step++) {
        now += keel_rand_below(&r, 20);
        char line[128];
        int k = (int)keel_rand_below(&r, MODEL_KEYS);
        uint64_t ttl = 1 + keel_rand_below(&r, 400);
        switch (keel_rand_below(&r, 8)) {
        case 0:
        case 1:
            snprintf(line, sizeof(line), "SET k%02d v PX %llu", k, (unsigned long long)ttl);
            model[k] = now + ttl;
            break;
        case 2:
            snprintf(line, sizeof(line), "SET k%02d v", k);
            model[k] = UINT64_MAX - 1;
            break;
        case 3:
            snprintf(line, sizeof(line), "PEXPIRE k%02d %llu", k, (unsigned long long)ttl);
            if (model[k] > now)
                model[k] = now + ttl;
            break;
        case 4:
            snprintf(line, sizeof(line), "PERSIST k%02d", k);
            if (model[k] > now)
                model[k] = UINT64_MAX - 1;
            break;
        case 5:
            snprintf(line, sizeof(line), "DEL k%02d", k);
            model[k] = 0;
            break;
        case 6:
            snprintf(line, sizeof(line), "INCR k%02d", k);
            if (model[k] <= now)
                model[k] = UINT64_MAX - 1;
            break;
        default: {
            int max = (int)keel_rand_below(&r, 6);
            snprintf(line, sizeof(line), "KEEL.EXPIRE.SWEEP %llu %d", (unsigned long long)now, max);
            for (int n = 0; n < max; n++) {
                int best = -1;
                for (int i = 0; i < MODEL_KEYS; i++)
                    if (model[i] && model[i] <= now && (best < 0 || model[i] < model[best]))
                        best = i; /* i ascending: equal deadlines keep the smaller key */
                if (best < 0)
                    break;
                model[best] = 0;
            }
        }
        }
        const char *ra = kvt_at(&a, now, line);
        if (restored) {
            char copy[256];
            snprintf(copy, sizeof(copy), "%.255s", ra);
            if (strcmp(copy, kvt_at(&b, now, line)) != 0)
                KT_FAIL("step %d: %s: %s vs %s", step, line, copy, b.text);
        }
        uint64_t want = KEEL_KV_NO_DEADLINE;
        for (int i = 0; i < MODEL_KEYS; i++) {
            char key[8];
            snprintf(key, sizeof(key), "k%02d", i);
            uint64_t got = expire_of(&a, key);
            uint64_t exp = model[i] == 0 ? UINT64_MAX : model[i] == UINT64_MAX - 1 ? 0 : model[i];
            if (got != exp)
                KT_FAIL("step %d after %s: %s deadline %llu, model %llu", step, line, key,
                        (unsigned long long)got, (unsigned long long)exp);
            if (model[i] && model[i] != UINT64_MAX - 1 && model[i] < want)
                want = model[i];
        }
        KT_EQ_U64(keel_kv_next_deadline_ms(&a.kv), want);
        if (step == 7000) {
            keel_buf_reset(&snap);
            KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &snap), 0);
            keel_errmsg_t m;
            KT_EQ_INT(
                keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m),
                0);
            b.index = a.index;
            KT_EQ_U64(keel_kv_next_deadline_ms(&b.kv), want);
            restored = 1;
        }
    }
    KT_EQ_U64(keel_kv_revision(&a.kv), keel_kv_revision(&b.kv));
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

int main(void)
{
    kvt_init(&t, NULL);
    KT_RUN(cas_creates_at_version_zero_and_replies_conflict_with_both_versions);
    KT_RUN(set_deadlines_come_from_the_entry_time_on_every_node);
    KT_RUN(ttl_and_pttl_reply_like_redis);
    KT_RUN(an_expired_key_is_absent_to_every_read);
    KT_RUN(writes_treat_an_expired_key_as_absent);
    KT_RUN(the_state_clock_never_runs_backwards);
    KT_RUN(expire_family_follows_redis_rules);
    KT_RUN(ttl_survives_incr_and_append_but_not_set);
    KT_RUN(sweep_deletes_due_keys_earliest_first_up_to_the_limit);
    KT_RUN(random_deadlines_agree_with_a_model_and_survive_snapshots);
    kvt_free(&t);
    return kt_done();
}
