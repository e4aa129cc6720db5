/* test_kv_snap.c - KV snapshots: exact round trips, corruption and truncation refused. */
#include "base/crc32c.h"
#include "base/rand.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <time.h>

enum { KEYSPACE = 3000 };

static void random_writes(kvt_t *t, keel_rand_t *r, int n)
{
    char line[160];
    for (int i = 0; i < n; i++) {
        int k = (int)keel_rand_below(r, KEYSPACE), op = (int)keel_rand_below(r, 9);
        switch (op) {
        case 0:
        case 1:
            snprintf(line, sizeof(line), "SET k%d v%llu", k, (unsigned long long)keel_rand_u64(r));
            break;
        case 2:
            snprintf(line, sizeof(line), "DEL k%d k%d", k, (k * 7) % KEYSPACE);
            break;
        case 3:
            snprintf(line, sizeof(line), "INCR n%d", k % 50);
            break;
        case 4:
            snprintf(line, sizeof(line), "APPEND k%d x", k);
            break;
        case 5:
            snprintf(line, sizeof(line), "MSET k%d a k%d b", k, (k + 1) % KEYSPACE);
            break;
        case 6:
            snprintf(line, sizeof(line), "SET k%d v PX %d", k, 1 + (int)keel_rand_below(r, 3000));
            break;
        case 7:
            snprintf(line, sizeof(line), "PEXPIRE n%d %d", k % 50,
                     1 + (int)keel_rand_below(r, 3000));
            break;
        default: /* entry times are 1000 + index: the sweep is capped by them */
            snprintf(line, sizeof(line), "KEEL.EXPIRE.SWEEP 99999999 %d", k % 4);
            break;
        }
        kvt(t, line);
    }
}

/* Same keys, values, versions, create revisions, revision, count, applied index. */
static void expect_same_state(const keel_kv_t *a, const keel_kv_t *b)
{
    KT_EQ_INT(keel_kv_count(a), keel_kv_count(b));
    KT_EQ_U64(keel_kv_revision(a), keel_kv_revision(b));
    KT_EQ_U64(keel_kv_applied_index(a), keel_kv_applied_index(b));
    KT_EQ_U64(a->time_ms, b->time_ms);
    size_t found = 0;
    char key[32];
    for (int i = 0; i < KEYSPACE; i++) {
        for (int kind = 0; kind < 2; kind++) {
            int n = snprintf(key, sizeof(key), kind ? "k%d" : "n%d", i);
            keel_kv_value_t va, vb;
            int ra = keel_kv_get(a, key, (size_t)n, &va), rb = keel_kv_get(b, key, (size_t)n, &vb);
            KT_EQ_INT(ra, rb);
            if (ra != 0)
                continue;
            found++;
            KT_EQ_INT(va.len, vb.len);
            KT_EQ_MEM(va.value, vb.value, va.len);
            KT_EQ_U64(va.version, vb.version);
            KT_EQ_U64(va.create_revision, vb.create_revision);
            KT_EQ_U64(va.expire_ms, vb.expire_ms);
        }
    }
    KT_EQ_INT(found, keel_kv_count(a));
    KT_EQ_U64(keel_kv_next_deadline_ms(a), keel_kv_next_deadline_ms(b));
}

static void snapshots_round_trip_exactly_and_replay_identically(void)
{
    uint64_t seed = (uint64_t)time(NULL);
    KT_SEED(seed);
    keel_rand_t r;
    keel_rand_seed(&r, seed);
    static kvt_t a, b, c;
    keel_buf_t snap, snap2;
    keel_buf_init(&snap, 0);
    keel_buf_init(&snap2, 0);
    for (int round = 0; round < 6; round++) {
        kvt_init(&a, NULL);
        kvt_init(&b, NULL);
        kvt_init(&c, NULL);
        random_writes(&a, &r, 200 + (int)keel_rand_below(&r, 6000));
        keel_buf_reset(&snap);
        KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &snap), 0);
        keel_errmsg_t m;
        KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m),
                  0);
        expect_same_state(&a.kv, &b.kv);
        /* encode(decode(s)) decodes to the same state again, at the same size */
        keel_buf_reset(&snap2);
        KT_EQ_INT(keel_kv_snapshot_encode(&b.kv, &snap2), 0);
        KT_EQ_INT(keel_buf_unread(&snap2), keel_buf_unread(&snap));
        KT_EQ_INT(
            keel_kv_snapshot_decode(&c.kv, keel_buf_rptr(&snap2), keel_buf_unread(&snap2), &m), 0);
        expect_same_state(&a.kv, &c.kv);
        /* the restored machine answers the next commands byte for byte like the original */
        b.index = a.index;
        keel_rand_t ra = r, rb = r;
        for (int i = 0; i < 300; i++) {
            random_writes(&a, &ra, 1);
            char ta[sizeof(a.text)];
            strcpy(ta, a.text);
            random_writes(&b, &rb, 1);
            KT_EQ_STR(b.text, ta);
        }
        r = ra;
        expect_same_state(&a.kv, &b.kv);
        kvt_free(&a);
        kvt_free(&b);
        kvt_free(&c);
    }
    keel_buf_free(&snap);
    keel_buf_free(&snap2);
}

static void big_values_and_empty_state_round_trip(void)
{
    static kvt_t a, b;
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &snap), 0);
    KT_EQ_INT(keel_buf_unread(&snap), 88); /* header, counters, empty sections, CRC */
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    KT_EQ_INT(keel_kv_count(&b.kv), 0);
    kvt_free(&b);
    kvt_init(&b, NULL);
    static uint8_t big[300000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 31);
    const uint8_t *argv[] = {(const uint8_t *)"SET", (const uint8_t *)"big", big};
    size_t lens[] = {3, 3, 100000};
    KT_EQ_STR(kvt_argv(&a, 3, argv, lens), "+OK\r\n");
    kvt(&a, "SET small x");
    keel_kv_advance(&a.kv, 77);
    keel_buf_reset(&snap);
    KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &snap), 0);
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&b.kv, "big", 3, &v), 0);
    KT_EQ_INT(v.len, 100000);
    KT_EQ_MEM(v.value, big, 100000);
    KT_EQ_U64(keel_kv_applied_index(&b.kv), 77);
    /* a bounded output buffer: ETOOBIG and the buffer as it was */
    keel_buf_t small;
    keel_buf_init(&small, 50000);
    keel_buf_append(&small, "keep", 4);
    KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &small), KEEL_ETOOBIG);
    KT_EQ_INT(keel_buf_unread(&small), 4);
    keel_buf_free(&small);
    /* decoding needs a fresh target */
    KT_EQ_INT(keel_kv_snapshot_decode(&a.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m),
              KEEL_EINVAL);
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

static void every_flipped_byte_and_every_truncation_is_refused(void)
{
    static kvt_t a, b;
    kvt_init(&a, NULL);
    kvt(&a, "MSET alpha 1 beta 22 gamma 333");
    kvt(&a, "SET alpha one");
    kvt(&a, "INCR counter");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&a.kv, &snap), 0);
    size_t n = keel_buf_unread(&snap);
    uint8_t *copy = malloc(n);
    keel_errmsg_t m;
    int refused = 0;
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(copy, keel_buf_rptr(&snap), n);
            copy[i] ^= (uint8_t)(1u << bit);
            kvt_init(&b, NULL);
            int rc = keel_kv_snapshot_decode(&b.kv, copy, n, &m);
            if (rc != KEEL_ECORRUPT)
                KT_FAIL("flip of byte %zu bit %d: %d", i, bit, rc);
            KT_EQ_INT(keel_kv_count(&b.kv), 0);
            KT_EQ_U64(keel_kv_revision(&b.kv), 0);
            refused++;
            kvt_free(&b);
        }
    }
    KT_EQ_INT(refused, (int)n * 3);
    for (size_t cut = 0; cut < n; cut++) {
        kvt_init(&b, NULL);
        KT_CHECK(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), cut, &m) != 0);
        KT_EQ_INT(keel_kv_count(&b.kv), 0);
        kvt_free(&b);
    }
    free(copy);
    keel_buf_free(&snap);
    kvt_free(&a);
}

/* Writes a snapshot by hand with a correct CRC, to reach the checks behind it. */
typedef struct rec {
    const char *key, *val;
    uint64_t version, create;
} rec_t;

static size_t craft(uint8_t *out, uint64_t revision, uint64_t count, const rec_t *recs, size_t n,
                    const char *trailing)
{
    size_t p = 0;
    memcpy(out, "KEELKVS\1", 8);
    p = 8;
    uint64_t hdr[4] = {9, revision, 0, count};
    for (int i = 0; i < 4; i++, p += 8)
        for (int k = 0; k < 8; k++)
            out[p + k] = (uint8_t)(hdr[i] >> (8 * k));
    for (size_t i = 0; i < n; i++) {
        uint64_t f[4] = {strlen(recs[i].key), strlen(recs[i].val), recs[i].version, recs[i].create};
        for (int j = 0; j < 4; j++) {
            int w = j < 2 ? 4 : 8;
            for (int k = 0; k < w; k++)
                out[p + k] = (uint8_t)(f[j] >> (8 * k));
            p += (size_t)w;
        }
        memcpy(out + p, recs[i].key, f[0]);
        p += f[0];
        memcpy(out + p, recs[i].val, f[1]);
        p += f[1];
    }
    memcpy(out + p, trailing, strlen(trailing));
    p += strlen(trailing);
    uint32_t crc = keel_crc32c(0, out, p);
    for (int k = 0; k < 4; k++)
        out[p + k] = (uint8_t)(crc >> (8 * k));
    return p + 4;
}

static void sealed_but_inconsistent_snapshots_are_refused(void)
{
    static kvt_t b;
    uint8_t buf[1024];
    keel_errmsg_t m;
    rec_t ok[] = {{"a", "1", 2, 1}, {"b", "2", 3, 3}};
    struct {
        const char *what;
        uint64_t revision, count;
        rec_t recs[2];
        size_t n;
        const char *trailing;
        int want;
    } cases[] = {
        {"valid", 3, 2, {ok[0], ok[1]}, 2, "", 0},
        {"duplicate key", 3, 2, {ok[0], {"a", "9", 3, 3}}, 2, "", KEEL_EPROTO},
        {"version above revision", 2, 2, {ok[0], ok[1]}, 2, "", KEEL_EPROTO},
        {"create above version", 3, 1, {{"a", "1", 2, 3}}, 1, "", KEEL_EPROTO},
        {"create revision 0", 3, 1, {{"a", "1", 2, 0}}, 1, "", KEEL_EPROTO},
        {"count too small", 3, 1, {ok[0], ok[1]}, 2, "", KEEL_EPROTO},
        {"count too big", 3, 3, {ok[0], ok[1]}, 2, "", KEEL_EPROTO},
        {"count absurd", 3, UINT64_MAX, {ok[0], ok[1]}, 2, "", KEEL_ETOOBIG},
        {"trailing bytes", 3, 2, {ok[0], ok[1]}, 2, "xyz", KEEL_EPROTO},
        {"key over key_bytes_max", 3, 1, {{"toolong", "1", 1, 1}}, 1, "", KEEL_ETOOBIG},
    };
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.key_bytes_max = 4;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = craft(buf, cases[i].revision, cases[i].count, cases[i].recs, cases[i].n,
                         cases[i].trailing);
        kvt_init(&b, &cfg);
        int rc = keel_kv_snapshot_decode(&b.kv, buf, n, &m);
        if (rc != cases[i].want)
            KT_FAIL("%s: %d, want %d", cases[i].what, rc, cases[i].want);
        KT_EQ_INT(keel_kv_count(&b.kv), rc == 0 ? 2 : 0);
        if (rc == 0)
            KT_EQ_U64(keel_kv_applied_index(&b.kv), 9);
        kvt_free(&b);
    }
    /* a foreign magic with a valid CRC */
    size_t n = craft(buf, 3, 2, ok, 2, "");
    buf[0] = 'X';
    uint32_t crc = keel_crc32c(0, buf, n - 4);
    for (int k = 0; k < 4; k++)
        buf[n - 4 + k] = (uint8_t)(crc >> (8 * k));
    kvt_init(&b, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, buf, n, &m), KEEL_EPROTO);
    kvt_free(&b);
}

/* Snapshots written before deadlines existed (version 1) still load, without deadlines. */
static void a_version_1_snapshot_loads_and_is_rewritten_as_version_5(void)
{
    static kvt_t b;
    uint8_t buf[256];
    keel_errmsg_t m;
    rec_t recs[] = {{"a", "1", 2, 1}, {"b", "2", 3, 3}};
    size_t n = craft(buf, 3, 2, recs, 2, "");
    KT_EQ_INT(buf[7], 1);
    kvt_init(&b, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, buf, n, &m), 0);
    keel_kv_value_t v;
    KT_EQ_INT(keel_kv_get(&b.kv, "b", 1, &v), 0);
    KT_EQ_MEM(v.value, "2", 1);
    KT_EQ_U64(v.version, 3);
    KT_EQ_U64(v.expire_ms, 0);
    KT_EQ_U64(keel_kv_next_deadline_ms(&b.kv), KEEL_KV_NO_DEADLINE);
    /* a deadline set afterwards is in the version-5 snapshot */
    b.index = 9;
    KT_EQ_STR(kvt(&b, "PEXPIRE a 50"), ":1\r\n");
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&b.kv, &out), 0);
    KT_EQ_INT(keel_buf_rptr(&out)[7], 5);
    /* wider records; counters, sections; the typed section's count; the tagged sections'
       count */
    KT_EQ_INT(keel_buf_unread(&out), n + 2 * 16 + 32 + 8 + 4);
    static kvt_t c;
    kvt_init(&c, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&c.kv, keel_buf_rptr(&out), keel_buf_unread(&out), &m), 0);
    KT_EQ_INT(keel_kv_get(&c.kv, "a", 1, &v), 0);
    KT_EQ_U64(v.expire_ms, 1009 + 50); /* kvt proposes at 1000 + index */
    KT_EQ_U64(keel_kv_next_deadline_ms(&c.kv), 1059);
    /* a version this code does not know is refused */
    uint8_t *w = out.data + out.rpos;
    w[7] = 6;
    uint32_t crc = keel_crc32c(0, w, keel_buf_unread(&out) - 4);
    for (int k = 0; k < 4; k++)
        w[keel_buf_unread(&out) - 4 + k] = (uint8_t)(crc >> (8 * k));
    kvt_free(&c);
    kvt_init(&c, NULL);
    KT_EQ_INT(keel_kv_snapshot_decode(&c.kv, keel_buf_rptr(&out), keel_buf_unread(&out), &m),
              KEEL_EPROTO);
    keel_buf_free(&out);
    kvt_free(&b);
    kvt_free(&c);
}

static int failing_sink(void *data, const uint8_t *p, size_t n)
{
    size_t *left = data;
    if (n > *left)
        return KEEL_EIO;
    *left -= n;
    return 0;
}

static void a_failing_sink_stops_the_snapshot_with_its_error(void)
{
    static kvt_t a;
    kvt_init(&a, NULL);
    char line[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(line, sizeof(line), "SET key%d value%d", i, i);
        kvt(&a, line);
    }
    size_t left = 20000;
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, failing_sink, &left), KEEL_EIO);
    left = SIZE_MAX;
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, failing_sink, &left), 0);
    kvt_free(&a);
}

int main(void)
{
    KT_RUN(snapshots_round_trip_exactly_and_replay_identically);
    KT_RUN(big_values_and_empty_state_round_trip);
    KT_RUN(every_flipped_byte_and_every_truncation_is_refused);
    KT_RUN(sealed_but_inconsistent_snapshots_are_refused);
    KT_RUN(a_version_1_snapshot_loads_and_is_rewritten_as_version_5);
    KT_RUN(a_failing_sink_stops_the_snapshot_with_its_error);
    return kt_done();
}
