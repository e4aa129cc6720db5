/* test_kv_hash.c - the hash type: commands, types, versions and history, memory, snapshots. */
#include "test_kv_util.h"

#include <stdio.h>

#define WRONGTYPE "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"

static kvt_t a, b;

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static void fields_are_set_read_and_deleted_and_an_empty_hash_is_no_key(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt_at(&a, 1000, "HSET h f1 v1 f2 v2 f1 v3"), ":2\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "HGET h f1"), "$2\r\nv3\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "HLEN h"), ":2\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE h"), "+hash\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "OBJECT ENCODING h"), "$8\r\nlistpack\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HSETNX h f1 x"), ":0\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HINCRBY h n 41"), ":41\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HINCRBY h n 1"), ":42\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HINCRBYFLOAT h n 0.5"), "$4\r\n42.5\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HINCRBY h n 1"), "-ERR hash value is not an integer\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HDEL h f1 f2 n nope"), ":3\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "EXISTS h"), ":0\r\n");
    KT_EQ_INT(keel_kv_count(&a.kv), 0);
    KT_EQ_U64(a.kv.bytes, 0);
    /* another type's key refuses every hash command and keeps its value */
    KT_EQ_STR(kvt_at(&a, 1000, "SET s v"), "+OK\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HSET s f v"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "HINCRBY s f 1"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "HGETALL s"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "HSCAN s 0"), WRONGTYPE);
    KT_EQ_STR(kvt_read_at(&a, 1000, "GET s"), "$1\r\nv\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HSET h f v"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "GET h"), WRONGTYPE);
    KT_EQ_STR(kvt_at(&a, 1000, "SET h plain"), "+OK\r\n"); /* frees the hash (ASan checks) */
    KT_EQ_STR(kvt_read_at(&a, 1000, "TYPE h"), "+string\r\n");
    kvt_free(&a);
}

static void a_hash_expires_keeps_its_deadline_through_changes_and_versions_move(void)
{
    kvt_init(&a, NULL);
    kvt_at(&a, 1000, "HSET h f v");
    KT_EQ_STR(kvt_at(&a, 1000, "PEXPIRE h 500"), ":1\r\n");
    uint64_t rev = keel_kv_revision(&a.kv);
    KT_EQ_STR(kvt_at(&a, 1100, "HSET h g w"), ":1\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 1);
    KT_EQ_STR(kvt_read_at(&a, 1100, "PTTL h"), ":400\r\n");
    /* a write that changes nothing moves no revision */
    KT_EQ_STR(kvt_at(&a, 1100, "HDEL h nope"), ":0\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 1);
    /* the history saw each change: a put of h per write (typed keys carry no value) */
    keel_kv_change_t ch;
    keel_kv_history_at(&a.kv, keel_kv_history_len(&a.kv) - 1, &ch);
    KT_EQ_U64(ch.revision, rev + 1);
    KT_EQ_INT(ch.op, KEEL_KV_CHANGE_PUT);
    KT_EQ_MEM(ch.key, "h", 1);
    /* past the deadline it is absent to reads and writes, and a new hash takes its place */
    KT_EQ_STR(kvt_read_at(&a, 1500, "HGET h f"), "$-1\r\n");
    KT_EQ_STR(kvt_at(&a, 1500, "HSET h x y"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1500, "HGETALL h"), "*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1500, "PTTL h"), ":-1\r\n");
    /* the last field's deletion is the key's deletion */
    KT_EQ_STR(kvt_at(&a, 1500, "HDEL h x"), ":1\r\n");
    keel_kv_history_at(&a.kv, keel_kv_history_len(&a.kv) - 1, &ch);
    KT_EQ_INT(ch.op, KEEL_KV_CHANGE_DEL);
    kvt_free(&a);
}

static void memory_is_counted_up_and_down_to_nothing(void)
{
    kvt_init(&a, NULL);
    static char line[256];
    for (int i = 0; i < 2000; i++) {
        snprintf(line, sizeof(line), "HSET h field%d value%d", i, i);
        kvt_at(&a, 1000, line);
    }
    KT_CHECK(a.kv.bytes > 2000 * (sizeof(void *) + 16 + 14));
    KT_EQ_STR(kvt_read_at(&a, 1000, "OBJECT ENCODING h"), "$9\r\nhashtable\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "COPY h h2"), ":1\r\n");
    for (int i = 0; i < 2000; i += 2) {
        snprintf(line, sizeof(line), "HDEL h field%d field%d", i, i + 1);
        KT_EQ_STR(kvt_at(&a, 1000, line), ":2\r\n");
    }
    KT_EQ_STR(kvt_read_at(&a, 1000, "HLEN h2"), ":2000\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "DEL h2"), ":1\r\n");
    KT_EQ_U64(a.kv.bytes, 0);
    kvt_free(&a);
}

static const char *dump(kvt_t *t)
{
    static char out[1 << 16];
    size_t n = 0;
    const char *cmds[] = {"HGETALL h", "HGETALL g",         "HSCAN h 0 COUNT 3",
                          "PTTL h",    "OBJECT ENCODING g", "HRANDFIELD h 5 WITHVALUES"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s|", kvt_read_at(t, 5000, cmds[i]));
    return out;
}

static void replicas_agree_and_a_snapshot_carries_hashes_whole(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char line[256], want[1 << 16];
    for (int i = 0; i < 300; i++) {
        snprintf(line, sizeof(line), "HSET h f%d %d g%d x", i, i, i % 7);
        kvt_at(&a, 1000, line);
        kvt_at(&b, 1000, line);
        if (i % 3 == 0) {
            snprintf(line, sizeof(line), "HDEL h f%d", i / 2);
            kvt_at(&a, 1000, line);
            kvt_at(&b, 1000, line);
        }
    }
    const char *more[] = {"HSET g a 1", "HINCRBYFLOAT g b 2.5", "PEXPIRE h 100000"};
    for (size_t i = 0; i < 3; i++) {
        kvt_at(&a, 1000, more[i]);
        kvt_at(&b, 1000, more[i]);
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
    KT_EQ_U64(b.kv.bytes, a.kv.bytes);
    KT_EQ_U64(keel_kv_revision(&b.kv), keel_kv_revision(&a.kv));
    /* a snapshot of the restored replica is the same bytes: the table is its contents' */
    keel_buf_t again;
    keel_buf_init(&again, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&b.kv, sink, &again), 0);
    KT_EQ_U64(keel_buf_unread(&again), keel_buf_unread(&snap));
    KT_EQ_MEM(keel_buf_rptr(&again), keel_buf_rptr(&snap), keel_buf_unread(&snap));
    /* a flipped byte anywhere is refused (the CRC) and a truncated one too */
    keel_kv_t bad;
    for (size_t off = 0; off < keel_buf_unread(&snap); off += 97) {
        snap.data[snap.rpos + off] ^= 0x40;
        KT_EQ_INT(keel_kv_init(&bad, NULL), 0);
        KT_CHECK(keel_kv_snapshot_decode(&bad, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m) !=
                 0);
        keel_kv_free(&bad);
        snap.data[snap.rpos + off] ^= 0x40;
    }
    KT_EQ_INT(keel_kv_init(&bad, NULL), 0);
    KT_CHECK(keel_kv_snapshot_decode(&bad, keel_buf_rptr(&snap), keel_buf_unread(&snap) - 5, &m) !=
             0);
    keel_kv_free(&bad);
    keel_buf_free(&again);
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

typedef struct scan_seen {
    int count[3000];
} scan_seen_t;

/* HSCAN returns every field present for the whole scan exactly once, while the hash grows
   and shrinks between calls (its table resizes). */
static void a_scan_sees_every_stable_field_once_across_resizes(void)
{
    kvt_init(&a, NULL);
    static char line[256];
    static scan_seen_t s;
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < 1000; i++) {
        snprintf(line, sizeof(line), "HSET h s%d 1", i);
        kvt_at(&a, 1000, line);
    }
    char cursor[32] = "0";
    int calls = 0, grow = 0;
    do {
        snprintf(line, sizeof(line), "HSCAN h %s COUNT 17", cursor);
        const char *r = kvt_read_at(&a, 1000, line);
        /* *2 $n cursor *m ($k field $1 1)... */
        const char *p = strchr(r + 4, '\n') + 1;
        size_t cl = strcspn(p, "\r");
        memcpy(cursor, p, cl);
        cursor[cl] = '\0';
        p = strchr(p, '\n') + 1;
        int m = atoi(p + 1);
        p = strchr(p, '\n') + 1;
        for (int i = 0; i < m; i += 2) {
            p = strchr(p, '\n') + 1;
            if (p[0] == 's')
                s.count[atoi(p + 1)]++;
            p = strchr(p, '\n') + 1;
            p = strchr(p, '\n') + 1;
            p = strchr(p, '\n') + 1;
        }
        /* churn: add 60 temporary fields, then take them away, every other call */
        for (int k = 0; k < 60; k++) {
            snprintf(line, sizeof(line), grow % 2 ? "HDEL h t%d" : "HSET h t%d 1", k);
            kvt_at(&a, 1000, line);
        }
        if (calls % 5 == 4)
            for (int k = 0; k < 400; k++) {
                snprintf(line, sizeof(line), grow % 2 ? "HDEL h u%d" : "HSET h u%d 1", k);
                kvt_at(&a, 1000, line);
            }
        grow++;
        calls++;
    } while (strcmp(cursor, "0") != 0 && calls < 10000);
    for (int i = 0; i < 1000; i++)
        if (s.count[i] != 1)
            KT_FAIL("field s%d seen %d times", i, s.count[i]);
    kvt_free(&a);
}

/*
 * Random HSET / HSETNX / HDEL / HINCRBY on one key against a model, crossing the packed
 * table's bounds both ways (16 fields, 128 bytes an item) and rewriting values at the same,
 * a shorter and a longer size: a packed table moves in memory as it grows and shrinks, and
 * every field must read back, the memory count must come back to 0, and a replica and a
 * snapshot-restored copy must hold the same table (in the same order).
 */
#define MODEL_FIELDS 24

static void a_hash_answers_as_a_model_through_random_writes_in_either_layout(void)
{
    uint64_t seed = 0x6b65656c68617368u, x = seed;
    KT_SEED(seed);
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    static char model[MODEL_FIELDS][160], line[1024], want[1 << 16];
    memset(model, 0, sizeof(model));
    for (int step = 0; step < 3000; step++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        int op = (int)(x >> 60) % 4, f = (int)((x >> 40) % MODEL_FIELDS);
        int vlen = 1 + (int)((x >> 20) % (step % 500 < 250 ? 12 : 150));
        size_t n;
        if (op == 0 || op == 1) { /* HSET of one to three pairs, or HSETNX */
            int pairs = op == 1 ? 1 : 1 + (int)((x >> 8) % 3);
            n = (size_t)snprintf(line, sizeof(line), "%s h", op == 1 ? "HSETNX" : "HSET");
            for (int k = 0; k < pairs; k++) {
                int g = (f + k * 7) % MODEL_FIELDS;
                char v[160];
                int m = snprintf(v, sizeof(v), "%d", step * 3 + k);
                while (m < vlen)
                    v[m++] = 'v';
                v[m] = '\0';
                n += (size_t)snprintf(line + n, sizeof(line) - n, " f%d %s", g, v);
                if (op == 0 || model[g][0] == '\0')
                    snprintf(model[g], sizeof(model[g]), "%s", v);
            }
        } else if (op == 2) {
            snprintf(line, sizeof(line), "HDEL h f%d f%d", f, (f + 5) % MODEL_FIELDS);
            model[f][0] = model[(f + 5) % MODEL_FIELDS][0] = '\0';
        } else {
            if (model[f][0] != '\0' && (model[f][0] < '0' || model[f][0] > '9' ||
                                        strspn(model[f], "0123456789") != strlen(model[f])))
                snprintf(line, sizeof(line), "HDEL h f%d", f), model[f][0] = '\0';
            else {
                long long v = model[f][0] ? atoll(model[f]) : 0;
                snprintf(line, sizeof(line), "HINCRBY h f%d 97", f);
                snprintf(model[f], sizeof(model[f]), "%lld", v + 97);
            }
        }
        snprintf(want, sizeof(want), "%s", kvt_at(&a, 1000, line));
        KT_EQ_STR(kvt_at(&b, 1000, line), want);
        int count = 0;
        for (int g = 0; g < MODEL_FIELDS; g++) {
            char get[32];
            snprintf(get, sizeof(get), "HGET h f%d", g);
            if (model[g][0] == '\0') {
                KT_EQ_STR(kvt_read_at(&a, 1000, get), "$-1\r\n");
                continue;
            }
            count++;
            snprintf(want, sizeof(want), "$%zu\r\n%s\r\n", strlen(model[g]), model[g]);
            if (strcmp(kvt_read_at(&a, 1000, get), want) != 0)
                KT_FAIL("step %d (%s): %s is %s, want %s", step, line, get, a.text, want);
        }
        snprintf(want, sizeof(want), ":%d\r\n", count);
        KT_EQ_STR(kvt_read_at(&a, 1000, "HLEN h"), want);
        if (step % 100 == 99) {
            snprintf(want, sizeof(want), "%s", kvt_read_at(&a, 1000, "HGETALL h"));
            KT_EQ_STR(kvt_read_at(&b, 1000, "HGETALL h"), want);
            KT_EQ_U64(b.kv.bytes, a.kv.bytes);
        }
    }
    /* a copy restored from a snapshot holds the same table, counted the same */
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
    kvt_free(&b);
    kvt_init(&b, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL),
              0);
    snprintf(want, sizeof(want), "%s", kvt_read_at(&a, 1000, "HGETALL h"));
    KT_EQ_STR(kvt_read_at(&b, 1000, "HGETALL h"), want);
    keel_buf_free(&snap);
    kvt_at(&a, 1000, "DEL h");
    KT_EQ_U64(a.kv.bytes, 0);
    b.index = a.index;
    kvt_at(&b, 1000, "DEL h"); /* restored packed or chained as its size says: its own count */
    KT_EQ_U64(b.kv.bytes, 0);
    kvt_free(&a);
    kvt_free(&b);
}

static void limits_are_named_errors(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.value_bytes_max = 20;
    kvt_init(&a, &cfg);
    KT_EQ_STR(kvt_at(&a, 1000, "HSET h f 123456789012345678901"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HSET h 123456789012345678901 v"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt_read_at(&a, 1000, "EXISTS h"), ":0\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "HSET h f 12345678901234567890"), ":1\r\n");
    kvt_free(&a);
}

/* A delete of a field that is not there changes nothing, not even by moving a resize along:
   HDEL and SREM answer 0 and count no memory change (the move that ends a resize frees the
   old bucket array, which would leave the keyspace's count too high for good). */
static void deleting_absent_fields_leaves_the_memory_count_exact(void)
{
    static const char *const adds[] = {"HSET h f%d v", "SADD s m%d"};
    static const char *const dels[] = {"HDEL h nope%d", "SREM s nope%d"};
    static const char *const drop[] = {"DEL h", "DEL s"};
    for (int k = 0; k < 2; k++) {
        kvt_init(&a, NULL);
        char line[64];
        for (int i = 0; i < 33; i++) { /* past 32: the table doubles, and moves */
            snprintf(line, sizeof(line), adds[k], i);
            KT_EQ_STR(kvt_at(&a, 1000, line), ":1\r\n");
        }
        for (int i = 0; i < 4; i++) {
            snprintf(line, sizeof(line), dels[k], i);
            KT_EQ_STR(kvt_at(&a, 1000, line), ":0\r\n");
        }
        KT_EQ_STR(kvt_at(&a, 1000, drop[k]), ":1\r\n");
        KT_EQ_U64(a.kv.bytes, 0);
        kvt_free(&a);
    }
}

int main(void)
{
    KT_RUN(fields_are_set_read_and_deleted_and_an_empty_hash_is_no_key);
    KT_RUN(a_hash_expires_keeps_its_deadline_through_changes_and_versions_move);
    KT_RUN(memory_is_counted_up_and_down_to_nothing);
    KT_RUN(replicas_agree_and_a_snapshot_carries_hashes_whole);
    KT_RUN(a_scan_sees_every_stable_field_once_across_resizes);
    KT_RUN(a_hash_answers_as_a_model_through_random_writes_in_either_layout);
    KT_RUN(limits_are_named_errors);
    KT_RUN(deleting_absent_fields_leaves_the_memory_count_exact);
    return kt_done();
}
