/* test_kv_list.c - the list type: commands against a model, node edges, replicas and
   snapshots agree, memory is returned, WATCH versions, and the blocking pops' core pieces. */
#include "base/num.h"
#include "base/rand.h"
#include "core/kv_int.h"
#include "ktest.h"
#include "test_kv_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kvt_t a, b;

#define WRONGTYPE "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"

/* ---- a model: an array of elements -------------------------------------------------- */

typedef struct elem {
    uint8_t *p;
    size_t n;
} elem_t;

typedef struct model {
    elem_t *e;
    size_t n, cap;
} model_t;

static void m_insert(model_t *m, size_t at, const uint8_t *p, size_t n)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->e = realloc(m->e, m->cap * sizeof(*m->e));
    }
    memmove(m->e + at + 1, m->e + at, (m->n - at) * sizeof(*m->e));
    m->e[at].p = malloc(n ? n : 1);
    memcpy(m->e[at].p, p, n);
    m->e[at].n = n;
    m->n++;
}

static void m_remove(model_t *m, size_t at)
{
    free(m->e[at].p);
    memmove(m->e + at, m->e + at + 1, (m->n - at - 1) * sizeof(*m->e));
    m->n--;
}

static void m_free(model_t *m)
{
    while (m->n)
        m_remove(m, m->n - 1);
    free(m->e);
    memset(m, 0, sizeof(*m));
}

static int m_eq(const model_t *m, size_t i, const uint8_t *p, size_t n)
{
    return m->e[i].n == n && memcmp(m->e[i].p, p, n) == 0;
}

/* The expected LRANGE k 0 -1 of the model. */
static void m_range(const model_t *m, keel_buf_t *out)
{
    keel_buf_reset(out);
    if (m->n == 0) {
        keel_buf_append(out, "*0\r\n", 4);
        return;
    }
    char h[32];
    int k = snprintf(h, sizeof(h), "*%zu\r\n", m->n);
    keel_buf_append(out, h, (size_t)k);
    for (size_t i = 0; i < m->n; i++) {
        k = snprintf(h, sizeof(h), "$%zu\r\n", m->e[i].n);
        keel_buf_append(out, h, (size_t)k);
        keel_buf_append(out, m->e[i].p, m->e[i].n);
        keel_buf_append(out, "\r\n", 2);
    }
}

/* Element i of a small alphabet of values: short ones that repeat (LREM, LINSERT find them)
 * and long ones past a node's 8 KiB. */
static size_t value(keel_rand_t *r, uint8_t *buf)
{
    uint64_t kind = keel_rand_below(r, 10);
    size_t n;
    if (kind < 6)
        n = (size_t)keel_rand_below(r, 3);
    else if (kind < 9)
        n = 100 + (size_t)keel_rand_below(r, 900);
    else
        n = 8000 + (size_t)keel_rand_below(r, 3000);
    uint8_t c = (uint8_t)('a' + keel_rand_below(r, 3));
    memset(buf, c, n);
    return n;
}

static const char *run(kvt_t *t, int argc, const uint8_t **argv, const size_t *lens)
{
    return kvt_argv(t, argc, argv, lens);
}

static void commands_agree_with_a_model_over_random_edits(void)
{
    keel_rand_t r;
    uint64_t seed = 0x11571157;
    KT_SEED(seed);
    keel_rand_seed(&r, seed);
    kvt_init(&a, NULL);
    model_t m = {0};
    size_t longest = 0;
    keel_buf_t want, got_all;
    keel_buf_init(&want, 0);
    keel_buf_init(&got_all, 0);
    static uint8_t v1[16384], v2[16384];
    char n1[32], n2[32];
    const uint8_t *argv[8];
    size_t lens[8];
    for (int step = 0; step < 20000; step++) {
        size_t l1 = value(&r, v1), l2 = value(&r, v2);
        int op = (int)keel_rand_below(&r, 16);
        if (op >= 11) /* pushes twice as often: the list grows over the walk */
            op %= 2;
        if (op == 7 && keel_rand_below(&r, 4) != 0) /* LTRIM keeps most of it */
            op = 9;
        argv[1] = (const uint8_t *)"k";
        lens[1] = 1;
        int64_t i1 = (int64_t)keel_rand_below(&r, m.n + 6) - 3;
        int64_t i2 = (int64_t)keel_rand_below(&r, m.n + 6) - 3;
        snprintf(n1, sizeof(n1), "%lld", (long long)i1);
        snprintf(n2, sizeof(n2), "%lld", (long long)i2);
        switch (op) {
        case 0:
        case 1: { /* LPUSH / RPUSH one or two */
            int left = op == 0;
            argv[0] = (const uint8_t *)(left ? "LPUSH" : "RPUSH");
            lens[0] = 5;
            argv[2] = v1;
            lens[2] = l1;
            argv[3] = v2;
            lens[3] = l2;
            int two = (int)keel_rand_below(&r, 2);
            run(&a, 3 + two, argv, lens);
            m_insert(&m, left ? 0 : m.n, v1, l1);
            if (two)
                m_insert(&m, left ? 0 : m.n, v2, l2);
            break;
        }
        case 2:
        case 3: { /* LPOP / RPOP with a count */
            int left = op == 2;
            argv[0] = (const uint8_t *)(left ? "LPOP" : "RPOP");
            lens[0] = 4;
            size_t cnt = (size_t)keel_rand_below(&r, 4);
            snprintf(n1, sizeof(n1), "%zu", cnt);
            argv[2] = (const uint8_t *)n1;
            lens[2] = strlen(n1);
            run(&a, 3, argv, lens);
            for (size_t k = 0; k < cnt && m.n; k++)
                m_remove(&m, left ? 0 : m.n - 1);
            break;
        }
        case 4: { /* LSET */
            argv[0] = (const uint8_t *)"LSET";
            lens[0] = 4;
            argv[2] = (const uint8_t *)n1;
            lens[2] = strlen(n1);
            argv[3] = v1;
            lens[3] = l1;
            run(&a, 4, argv, lens);
            int64_t at = i1 < 0 ? i1 + (int64_t)m.n : i1;
            if (at >= 0 && (size_t)at < m.n) {
                m_remove(&m, (size_t)at);
                m_insert(&m, (size_t)at, v1, l1);
            }
            break;
        }
        case 5: { /* LINSERT */
            int after = (int)keel_rand_below(&r, 2);
            argv[0] = (const uint8_t *)"LINSERT";
            lens[0] = 7;
            argv[2] = (const uint8_t *)(after ? "AFTER" : "BEFORE");
            lens[2] = strlen((const char *)argv[2]);
            argv[3] = v1;
            lens[3] = l1;
            argv[4] = v2;
            lens[4] = l2;
            run(&a, 5, argv, lens);
            for (size_t k = 0; k < m.n; k++)
                if (m_eq(&m, k, v1, l1)) {
                    m_insert(&m, k + (size_t)after, v2, l2);
                    break;
                }
            break;
        }
        case 6: { /* LREM */
            int64_t cnt = (int64_t)keel_rand_below(&r, 7) - 3;
            snprintf(n1, sizeof(n1), "%lld", (long long)cnt);
            argv[0] = (const uint8_t *)"LREM";
            lens[0] = 4;
            argv[2] = (const uint8_t *)n1;
            lens[2] = strlen(n1);
            argv[3] = v1;
            lens[3] = l1;
            const char *got = run(&a, 4, argv, lens);
            size_t removed = 0, limit = cnt == 0 ? SIZE_MAX : (size_t)(cnt < 0 ? -cnt : cnt);
            if (cnt >= 0) {
                for (size_t k = 0; k < m.n && removed < limit;)
                    if (m_eq(&m, k, v1, l1)) {
                        m_remove(&m, k);
                        removed++;
                    } else {
                        k++;
                    }
            } else {
                for (size_t k = m.n; k > 0 && removed < limit; k--)
                    if (m_eq(&m, k - 1, v1, l1)) {
                        m_remove(&m, k - 1);
                        removed++;
                    }
            }
            char w[32];
            snprintf(w, sizeof(w), ":%zu\r\n", removed);
            KT_EQ_STR(got, w);
            break;
        }
        case 7: { /* LTRIM */
            argv[0] = (const uint8_t *)"LTRIM";
            lens[0] = 5;
            argv[2] = (const uint8_t *)n1;
            lens[2] = strlen(n1);
            argv[3] = (const uint8_t *)n2;
            lens[3] = strlen(n2);
            run(&a, 4, argv, lens);
            int64_t s = i1 < 0 ? i1 + (int64_t)m.n : i1, e = i2 < 0 ? i2 + (int64_t)m.n : i2;
            if (s < 0)
                s = 0;
            if (s > e || s >= (int64_t)m.n) {
                while (m.n)
                    m_remove(&m, m.n - 1);
            } else {
                if (e >= (int64_t)m.n)
                    e = (int64_t)m.n - 1;
                while ((int64_t)m.n > e + 1)
                    m_remove(&m, m.n - 1);
                for (int64_t k = 0; k < s; k++)
                    m_remove(&m, 0);
            }
            break;
        }
        case 8: { /* LMOVE k k: a rotation */
            int from = (int)keel_rand_below(&r, 2), to = (int)keel_rand_below(&r, 2);
            argv[0] = (const uint8_t *)"LMOVE";
            lens[0] = 5;
            argv[2] = (const uint8_t *)"k";
            lens[2] = 1;
            argv[3] = (const uint8_t *)(from ? "LEFT" : "RIGHT");
            lens[3] = strlen((const char *)argv[3]);
            argv[4] = (const uint8_t *)(to ? "LEFT" : "RIGHT");
            lens[4] = strlen((const char *)argv[4]);
            run(&a, 5, argv, lens);
            if (m.n) {
                size_t at = from ? 0 : m.n - 1;
                elem_t e = m.e[at];
                uint8_t *copy = malloc(e.n ? e.n : 1);
                memcpy(copy, e.p, e.n);
                m_remove(&m, at);
                m_insert(&m, to ? 0 : m.n, copy, e.n);
                free(copy);
            }
            break;
        }
        default: { /* LINDEX against the model */
            argv[0] = (const uint8_t *)"LINDEX";
            lens[0] = 6;
            argv[2] = (const uint8_t *)n1;
            lens[2] = strlen(n1);
            const char *got = run(&a, 3, argv, lens);
            int64_t at = i1 < 0 ? i1 + (int64_t)m.n : i1;
            if (at < 0 || (size_t)at >= m.n) {
                KT_EQ_STR(got, m.n ? "$-1\r\n" : "$-1\r\n");
            } else {
                char h[32];
                snprintf(h, sizeof(h), "$%zu\r\n", m.e[at].n);
                KT_CHECK(strncmp(got, h, strlen(h)) == 0);
                KT_CHECK(memcmp(got + strlen(h), m.e[at].p, m.e[at].n) == 0);
            }
            break;
        }
        }
        m_range(&m, &want);
        const uint8_t *rargv[4] = {(const uint8_t *)"LRANGE", (const uint8_t *)"k",
                                   (const uint8_t *)"0", (const uint8_t *)"-1"};
        size_t rlens[4] = {6, 1, 1, 2};
        keel_buf_reset(&got_all);
        KT_EQ_INT(keel_kv_read(&a.kv, 4, rargv, rlens, &got_all), 0);
        if (keel_buf_unread(&got_all) != keel_buf_unread(&want) ||
            memcmp(keel_buf_rptr(&got_all), keel_buf_rptr(&want), keel_buf_unread(&want)) != 0)
            KT_FAIL("step %d (op %d): LRANGE differs from the model", step, op);
        char llen[32];
        snprintf(llen, sizeof(llen), ":%zu\r\n", m.n);
        KT_EQ_STR(kvt(&a, "LLEN k"), llen);
        KT_EQ_INT(keel_kv_count(&a.kv), m.n ? 1 : 0); /* an empty list is no key */
        if (m.n > longest)
            longest = m.n;
    }
    KT_CHECK(longest > 40); /* the walk reached lists of several nodes */
    m_free(&m);
    keel_buf_free(&want);
    keel_buf_free(&got_all);
    kvt_free(&a);
}

static void types_versions_and_the_change_history(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt(&a, "SET s v"), "+OK\r\n");
    KT_EQ_STR(kvt(&a, "LPUSH s x"), WRONGTYPE);
    KT_EQ_STR(kvt(&a, "RPUSH l a b c"), ":3\r\n");
    KT_EQ_STR(kvt(&a, "GET l"), WRONGTYPE);
    KT_EQ_STR(kvt(&a, "INCR l"), WRONGTYPE);
    KT_EQ_STR(kvt(&a, "XADD l 1-1 f v"), WRONGTYPE);
    KT_EQ_STR(kvt(&a, "TYPE l"), "+list\r\n");
    KT_EQ_STR(kvt(&a, "OBJECT ENCODING l"), "$9\r\nquicklist\r\n");
    KT_EQ_STR(kvt(&a, "SCAN 0 TYPE list"), "*2\r\n$1\r\n0\r\n*1\r\n$1\r\nl\r\n");
    /* a change is a new version; a command that changes nothing leaves the revision */
    uint64_t v1 = keel_kv_version_at(&a.kv, 0, "l", 1), rev = keel_kv_revision(&a.kv);
    KT_EQ_STR(kvt(&a, "LREM l 0 zz"), ":0\r\n");
    KT_EQ_STR(kvt(&a, "LPUSHX nope x"), ":0\r\n");
    KT_EQ_STR(kvt(&a, "LINSERT l BEFORE zz x"), ":-1\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev);
    KT_EQ_U64(keel_kv_version_at(&a.kv, 0, "l", 1), v1);
    KT_EQ_STR(kvt(&a, "LSET l 1 B"), "+OK\r\n");
    uint64_t v2 = keel_kv_version_at(&a.kv, 0, "l", 1);
    KT_CHECK(v2 > v1);
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 1);
    /* LTRIM of an existing list is a change even when it keeps everything (Redis: WATCH
       sees the key modified) */
    KT_EQ_STR(kvt(&a, "LTRIM l 0 -1"), "+OK\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 2);
    /* LMOVE changes both keys in one revision */
    KT_EQ_STR(kvt(&a, "LMOVE l m LEFT LEFT"), "$1\r\na\r\n");
    KT_EQ_U64(keel_kv_revision(&a.kv), rev + 3);
    KT_EQ_U64(keel_kv_version_at(&a.kv, 0, "m", 1), rev + 3);
    KT_EQ_U64(keel_kv_version_at(&a.kv, 0, "l", 1), rev + 3);
    /* popping the last element deletes the key */
    KT_EQ_STR(kvt(&a, "RPOP m"), "$1\r\na\r\n");
    KT_EQ_U64(keel_kv_version_at(&a.kv, 0, "m", 1), 0);
    KT_EQ_STR(kvt(&a, "EXISTS m"), ":0\r\n");
    /* SET over a list replaces it (ASan sees the list freed) */
    KT_EQ_STR(kvt(&a, "SET l str"), "+OK\r\n");
    KT_EQ_STR(kvt(&a, "TYPE l"), "+string\r\n");
    /* an expired list is absent to reads and writes */
    KT_EQ_STR(kvt_at(&a, 1000, "RPUSH e 1 2"), ":2\r\n");
    KT_EQ_STR(kvt_at(&a, 1000, "PEXPIREAT e 2000"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 2000, "LLEN e"), ":0\r\n");
    KT_EQ_STR(kvt_at(&a, 2000, "LPUSHX e x"), ":0\r\n");
    KT_EQ_STR(kvt_at(&a, 2000, "RPUSH e 3"), ":1\r\n");
    KT_EQ_STR(kvt_read_at(&a, 2000, "LRANGE e 0 -1"), "*1\r\n$1\r\n3\r\n");
    KT_EQ_STR(kvt_read_at(&a, 2000, "PTTL e"), ":-1\r\n");
    kvt_free(&a);
}

static void limits_are_named_errors(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.value_bytes_max = 20;
    cfg.keys_max = 2;
    kvt_init(&a, &cfg);
    KT_EQ_STR(kvt(&a, "RPUSH l aaaaaaaaaaaaaaaaaaaaa"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt(&a, "RPUSH l ab aaaaaaaaaaaaaaaaaaaaa"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt(&a, "EXISTS l"), ":0\r\n");
    KT_EQ_STR(kvt(&a, "RPUSH l bbbbbbbbbbbbbbbbbbbb"), ":1\r\n");
    KT_EQ_STR(kvt(&a, "LSET l 0 aaaaaaaaaaaaaaaaaaaaa"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt(&a, "LINSERT l AFTER bbbbbbbbbbbbbbbbbbbb aaaaaaaaaaaaaaaaaaaaa"),
              "-ERR string exceeds maximum allowed size\r\n");
    KT_EQ_STR(kvt(&a, "RPUSH m x"), ":1\r\n");
    KT_EQ_STR(kvt(&a, "RPUSH n x"),
              "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    KT_EQ_STR(kvt(&a, "LMOVE l n LEFT LEFT"),
              "-OOM command not allowed when the number of keys would exceed 'keys_max'\r\n");
    KT_EQ_STR(kvt(&a, "LLEN l"), ":1\r\n");
    kvt_free(&a);
}

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

static const char *dump(kvt_t *t)
{
    static char out[1 << 16];
    size_t n = 0;
    const char *cmds[] = {"LRANGE l1 0 -1", "LRANGE l2 0 -1", "LLEN big", "LINDEX big 77",
                          "LINDEX big -3",  "PTTL l2",        "TYPE l3"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s|", kvt_read_at(t, 5000, cmds[i]));
    return out;
}

static void replicas_agree_snapshots_carry_lists_and_memory_is_returned(void)
{
    kvt_init(&a, NULL);
    kvt_init(&b, NULL);
    size_t base = a.kv.bytes;
    static char line[2048], want[1 << 16];
    for (int i = 0; i < 3000; i++) {
        if (i % 3 == 0)
            snprintf(line, sizeof(line), "LPUSH big %d", i);
        else if (i % 3 == 1)
            snprintf(line, sizeof(line), "RPUSH big x%0*d", 1 + i % 500, i);
        else
            snprintf(line, sizeof(line), "LPUSH l%d v%d", i % 4, i);
        kvt_at(&a, 1000, line);
        kvt_at(&b, 1000, line);
    }
    const char *more[] = {"LREM big 0 0",
                          "LTRIM big 5 -5",
                          "LINSERT big AFTER 3 ins",
                          "LSET big 10 set",
                          "PEXPIREAT l2 90000",
                          "LMOVE l1 l3 LEFT RIGHT",
                          "LMPOP 2 l0 l1 RIGHT COUNT 3"};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        kvt_at(&a, 2000, more[i]);
        kvt_at(&b, 2000, more[i]);
    }
    snprintf(want, sizeof(want), "%s", dump(&a));
    KT_EQ_STR(dump(&b), want);
    KT_EQ_U64(a.kv.bytes, b.kv.bytes);
    /* the accounting holds the list's memory: more than its elements' bytes */
    KT_CHECK(a.kv.bytes > base + 3000 * 4);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_write(&a.kv, sink, &snap), 0);
    kvt_free(&b);
    kvt_init(&b, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&b.kv, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m), 0);
    KT_EQ_STR(dump(&b), want);
    KT_EQ_U64(keel_kv_revision(&b.kv), keel_kv_revision(&a.kv));
    KT_EQ_U64(keel_kv_count(&b.kv), keel_kv_count(&a.kv));
    /* COPY is a deep copy (through the snapshot body): the copy changes alone */
    KT_EQ_STR(kvt_at(&a, 3000, "COPY big big2"), ":1\r\n");
    KT_EQ_STR(kvt_at(&a, 3000, "RPUSH big2 tail"), kvt_read_at(&a, 3000, "LLEN big2"));
    char len1[32];
    snprintf(len1, sizeof(len1), "%s", kvt_read_at(&a, 3000, "LLEN big"));
    KT_CHECK(strcmp(len1, kvt_read_at(&a, 3000, "LLEN big2")) != 0);
    /* deleting everything gives every byte back */
    KT_EQ_STR(kvt_at(&a, 3000, "FLUSHALL"), "+OK\r\n");
    KT_EQ_U64(a.kv.bytes, base);
    keel_buf_free(&snap);
    kvt_free(&a);
    kvt_free(&b);
}

static void a_bad_list_body_is_refused(void)
{
    const keel__kv_type_t *t = keel__kv_type(KEEL__KV_TYPE_LIST);
    void *obj = NULL;
    uint8_t body[32] = {0};
    KT_EQ_INT(t->snap_load(body, 4, &obj), KEEL_EPROTO); /* shorter than its count */
    KT_EQ_INT(t->snap_load(body, 8, &obj), KEEL_EPROTO); /* an empty list is no key */
    body[0] = 2;                                         /* two elements */
    body[8] = 1;                                         /* of 1 byte */
    body[12] = 'x';
    KT_EQ_INT(t->snap_load(body, 13, &obj), KEEL_EPROTO); /* the second is missing */
    body[13] = 0;
    body[17] = 'y';
    body[13] = 1;
    KT_EQ_INT(t->snap_load(body, 18, &obj), 0);
    KT_EQ_U64(t->bytes(obj) > 0, 1);
    t->free(obj);
    KT_EQ_INT(t->snap_load(body, 19, &obj), KEEL_EPROTO); /* a trailing byte */
    body[8] = 200;                                        /* a length past the end */
    KT_EQ_INT(t->snap_load(body, 18, &obj), KEEL_EPROTO);
}

static void blocking_pops_serve_without_waiting_and_keel_bpop_wraps_them(void)
{
    kvt_init(&a, NULL);
    KT_EQ_STR(kvt(&a, "BLPOP q 0"), "*-1\r\n"); /* as inside MULTI: nil at once */
    KT_EQ_STR(kvt(&a, "BLMOVE q d LEFT LEFT 0"), "$-1\r\n");
    KT_EQ_STR(kvt(&a, "RPUSH q a b c"), ":3\r\n");
    KT_EQ_STR(kvt(&a, "KEEL.BPOP tok BLPOP q 0"), "*2\r\n$1\r\nq\r\n$1\r\na\r\n");
    KT_EQ_STR(kvt(&a, "KEEL.BPOP tok"), "+OK\r\n"); /* a fence does nothing */
    KT_EQ_STR(kvt(&a, "KEEL.BPOP tok LPOP q"), "-ERR KEEL.BPOP runs a blocking pop only\r\n");
    KT_EQ_STR(kvt(&a, "KEEL.BPOP tok BLMPOP 0 1 q RIGHT COUNT 5"),
              "*2\r\n$1\r\nq\r\n*2\r\n$1\r\nc\r\n$1\r\nb\r\n");
    KT_EQ_STR(kvt(&a, "KEEL.BPOP tok BLPOP q 0"), "*-1\r\n");
    /* what the server asks of the core */
    const uint8_t *argv[8];
    size_t lens[8];
    int argc = kvt_split("BLMPOP 1.5 2 x y RIGHT COUNT 3", argv, lens);
    keel_kv_bpop_t bp;
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(bp.kind, KEEL_KV_BPOP_MPOP);
    KT_EQ_U64(bp.first_key, 3);
    KT_EQ_U64(bp.nkeys, 2);
    KT_EQ_U64(bp.count, 3);
    KT_EQ_INT(bp.timeout_ms, 1500);
    KT_EQ_INT(bp.left, 0);
    const uint8_t *out[KEEL_KV_BPOP_SERVED_ARGC_MAX];
    size_t olens[KEEL_KV_BPOP_SERVED_ARGC_MAX];
    char num[KEEL_DEC_BYTES_MAX];
    size_t n = keel_kv_bpop_served(&bp, argc, argv, lens, 4, out, olens, num);
    char joined[128] = "";
    for (size_t i = 0; i < n; i++) {
        strncat(joined, (const char *)out[i], olens[i]);
        strcat(joined, " ");
    }
    KT_EQ_STR(joined, "BLMPOP 0 1 y RIGHT COUNT 3 ");
    argc = kvt_split("BLPOP x y 0", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 1);
    KT_EQ_INT(bp.timeout_ms, 0);
    argc = kvt_split("BLPOP x -1", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("BLMOVE x y UP LEFT 1", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    argc = kvt_split("LPOP x", argv, lens);
    KT_EQ_INT(keel_kv_bpop_parse(argc, argv, lens, &bp), 0);
    KT_EQ_STR(kvt(&a, "RPUSH x 1 2"), ":2\r\n");
    KT_EQ_STR(kvt(&a, "SET s v"), "+OK\r\n");
    argc = kvt_split("BRPOP x 0", argv, lens);
    keel_kv_bpop_parse(argc, argv, lens, &bp);
    KT_EQ_INT(keel_kv_bpop_avail(&a.kv, 0, &bp, (const uint8_t *)"x", 1), 2);
    KT_EQ_INT(keel_kv_bpop_avail(&a.kv, 0, &bp, (const uint8_t *)"none", 4), 0);
    KT_EQ_INT(keel_kv_bpop_avail(&a.kv, 0, &bp, (const uint8_t *)"s", 1), -1);
    kvt_free(&a);
}

int main(void)
{
    KT_RUN(commands_agree_with_a_model_over_random_edits);
    KT_RUN(types_versions_and_the_change_history);
    KT_RUN(limits_are_named_errors);
    KT_RUN(replicas_agree_snapshots_carry_lists_and_memory_is_returned);
    KT_RUN(a_bad_list_body_is_refused);
    KT_RUN(blocking_pops_serve_without_waiting_and_keel_bpop_wraps_them);
    return kt_done();
}
