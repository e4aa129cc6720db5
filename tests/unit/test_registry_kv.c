/* test_registry_kv.c - the registry's commands in core/kv and its section of kv snapshots. */
#include "base/crc32c.h"
#include "core/registry.h"
#include "test_kv_util.h"

#include <stdio.h>

/* kvt proposes entry i at time 1000 + i (test_kv_util.h). */

static void register_then_read_the_instance_back(void)
{
    static kvt_t t;
    kvt_init(&t, NULL);
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE REGISTER orders o1 10.0.0.1 8080 TTL 5000 TAGS 2 a b "
                      "META 1 zone z1 WEIGHTS 10 2 VERSION v2"),
              ":1\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE REGISTER orders o2 10.0.0.2 8080"), ":2\r\n");
    const char *got = kvt(&t, "KEEL.REG.READ GET o1");
    KT_CHECK(strstr(got, "$7\r\naddress\r\n$8\r\n10.0.0.1\r\n") != NULL);
    KT_CHECK(strstr(got, "$4\r\ntags\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n") != NULL);
    KT_CHECK(strstr(got, "$14\r\nweight_passing\r\n:10\r\n") != NULL);
    KT_CHECK(strstr(got, "$6\r\nstatus\r\n$7\r\npassing\r\n") != NULL);
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ GET nope"), "$-1\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ INDEX orders"), ":2\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ SERVICES"),
              "*2\r\n:2\r\n*1\r\n*3\r\n$6\r\norders\r\n:2\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE FAIL o2 down"), "$8\r\ncritical\r\n");
    /* INSTANCES ... PASSING leaves o2 out; TAG b keeps o1 only */
    got = kvt(&t, "KEEL.REG.READ INSTANCES orders PASSING");
    KT_CHECK(strncmp(got, "*2\r\n:3\r\n*1\r\n", 12) == 0);
    KT_CHECK(strstr(got, "o1") != NULL && strstr(got, "o2") == NULL);
    got = kvt(&t, "KEEL.REG.READ INSTANCES orders TAG b");
    KT_CHECK(strncmp(got, "*2\r\n:3\r\n*1\r\n", 12) == 0);
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ INSTANCES nothing"), "*2\r\n:3\r\n*0\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE HEARTBEAT o1"), "+OK\r\n");
    KT_CHECK(strncmp(kvt(&t, "KEEL.REG.WRITE HEARTBEAT zz"), "-NOTFOUND registry:", 19) == 0);
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE DEREGISTER o2"), ":1\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE DEREGISTER o2"), ":0\r\n");
    kvt_free(&t);
}

static void syntax_and_limits_are_errors_that_change_nothing(void)
{
    static kvt_t t;
    kvt_init(&t, NULL);
    keel_buf_t err;
    keel_buf_init(&err, 0);
    const char *bad[] = {
        "KEEL.REG.WRITE REGISTER orders o1 h",             /* no port */
        "KEEL.REG.WRITE REGISTER orders o1 h 80 TTL x",    /* not a number */
        "KEEL.REG.WRITE REGISTER orders o1 h 80 TAGS 3 a", /* fewer tags than said */
        "KEEL.REG.WRITE REGISTER orders o1 h 80 STATUS sick",
        "KEEL.REG.WRITE REGISTER orders o1 h 80 BOGUS 1",
        "KEEL.REG.WRITE SERVICES", /* a read sent as a write */
        "KEEL.REG.READ REGISTER orders o1 h 80",
        "KEEL.REG.WRITE PASS",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const uint8_t *argv[KVT_ARGS_MAX];
        size_t lens[KVT_ARGS_MAX];
        int argc = kvt_split(bad[i], argv, lens);
        keel_buf_reset(&err);
        if (keel_kv_check(argc, argv, lens, &err) != KEEL_EINVAL)
            KT_FAIL("accepted: %s", bad[i]);
    }
    KT_CHECK(strncmp(kvt(&t, "KEEL.REG.WRITE REGISTER orders o1 h 70000"), "-ERR registry: port",
                     19) == 0);
    char line[4096];
    int n = snprintf(line, sizeof(line), "KEEL.REG.WRITE REGISTER orders o1 h 80 TAGS 65");
    for (int i = 0; i < 65; i++)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " t%d", i);
    /* 65 tags is over tags_max (64): more than test_kv_util splits, so build argv by hand */
    const uint8_t *argv[80];
    size_t lens[80];
    int argc = 0;
    for (char *p = line, *s; p; p = s ? s + 1 : NULL) {
        s = strchr(p, ' ');
        argv[argc] = (const uint8_t *)p;
        lens[argc++] = s ? (size_t)(s - p) : strlen(p);
    }
    KT_CHECK(
        strncmp(kvt_argv(&t, argc, argv, lens), "-LIMIT registry: 65 tags over tags_max", 38) == 0);
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ INDEX"), ":0\r\n");
    keel_buf_free(&err);
    kvt_free(&t);
}

static void the_sweep_removes_what_lapsed_by_the_leaders_clock(void)
{
    static kvt_t t;
    kvt_init(&t, NULL);
    KT_EQ_STR(kvt_at(&t, 5000, "KEEL.REG.WRITE REGISTER s a h 1 TTL 100"), ":1\r\n");
    KT_EQ_U64(keel_kv_next_registry_deadline_ms(&t.kv), 5100);
    /* lapsed to a reader at 5100 already, though still in the state */
    KT_EQ_STR(kvt_read_at(&t, 5100, "KEEL.REG.READ GET a"), "$-1\r\n");
    KT_CHECK(strcmp(kvt_read_at(&t, 5099, "KEEL.REG.READ GET a"), "$-1\r\n") != 0);
    /* a sweep judges by the earlier of its argument and its entry's stamp */
    KT_EQ_STR(kvt_at(&t, 5099, "KEEL.REG.SWEEP 6000 10"), ":0\r\n");
    KT_EQ_STR(kvt_at(&t, 6000, "KEEL.REG.SWEEP 5099 10"), ":0\r\n");
    KT_EQ_STR(kvt_at(&t, 6000, "KEEL.REG.SWEEP 5100 10"), ":1\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.READ INDEX s"), ":4\r\n"); /* the sweep's index */
    KT_EQ_U64(keel_kv_next_registry_deadline_ms(&t.kv), KEEL_KV_NO_DEADLINE);
    kvt_free(&t);
}

static int corrupt_and_load(const keel_buf_t *snap, size_t at, size_t len)
{
    uint8_t *p = malloc(len);
    memcpy(p, keel_buf_rptr(snap), len);
    if (at < len)
        p[at] ^= 0x40;
    static kvt_t c;
    kvt_init(&c, NULL);
    keel_errmsg_t m;
    int rc = keel_kv_snapshot_decode(&c.kv, p, len, &m);
    if (rc != 0 && (c.kv.reg != NULL || keel_kv_count(&c.kv) != 0))
        rc = 999; /* a refused snapshot must leave nothing behind */
    kvt_free(&c);
    free(p);
    return rc;
}

static void the_registry_rides_in_the_snapshot_sealed_by_its_crc(void)
{
    static kvt_t t, u;
    kvt_init(&t, NULL);
    KT_EQ_STR(kvt(&t, "SET k v"), "+OK\r\n");
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    KT_EQ_INT(keel_buf_rptr(&snap)[7], 5); /* no registry: no section (count 0) */
    size_t v3 = keel_buf_unread(&snap);
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE REGISTER orders o1 10.0.0.1 80 TTL 5000 TAGS 1 x"), ":2\r\n");
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE WARN o1 slow"), "$7\r\nwarning\r\n");
    keel_buf_reset(&snap);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    KT_EQ_INT(keel_buf_rptr(&snap)[7], 5);
    size_t n = keel_buf_unread(&snap);
    KT_CHECK(n > v3 + 16);
    kvt_init(&u, NULL);
    keel_errmsg_t m;
    KT_EQ_INT(keel_kv_snapshot_decode(&u.kv, keel_buf_rptr(&snap), n, &m), 0);
    u.index = t.index;
    KT_CHECK(strstr(kvt(&u, "KEEL.REG.READ GET o1"), "$4\r\nslow\r\n") != NULL);
    KT_EQ_STR(kvt(&u, "KEEL.REG.READ INDEX orders"), ":3\r\n");
    KT_EQ_U64(keel_kv_next_registry_deadline_ms(&u.kv), keel_kv_next_registry_deadline_ms(&t.kv));
    /* a flipped byte anywhere in the registry section, or a torn tail: the CRC says so */
    for (size_t at = v3 - 4; at < n - 4; at++)
        if (corrupt_and_load(&snap, at, n) != KEEL_ECORRUPT)
            KT_FAIL("byte %zu of %zu flipped was not caught by the crc", at, n);
    for (size_t cut = v3 - 4; cut < n; cut++)
        if (corrupt_and_load(&snap, n, cut) != KEEL_ECORRUPT)
            KT_FAIL("a snapshot torn at %zu of %zu bytes was not refused as corrupt", cut, n);
    /* a section that is wrong under a valid CRC is a protocol error, not a crash */
    uint8_t *p = snap.data + snap.rpos;
    p[v3 - 4 + 4] = 9; /* the section's tag */
    uint32_t crc = keel_crc32c(0, p, n - 4);
    for (int k = 0; k < 4; k++)
        p[n - 4 + k] = (uint8_t)(crc >> (8 * k));
    KT_EQ_INT(corrupt_and_load(&snap, n, n), KEEL_EPROTO);
    keel_buf_free(&snap);
    kvt_free(&t);
    kvt_free(&u);
}

#define STARTS(p, lit) (strncmp((p), (lit), strlen(lit)) == 0)

static void limits_are_replicated_entries_and_judge_later_registrations(void)
{
    static kvt_t t;
    kvt_init(&t, NULL);
    KT_CHECK(strstr(kvt(&t, "KEEL.REG.READ LIMITS"), "$12\r\nservices_max\r\n:1024\r\n") != NULL);
    KT_EQ_STR(kvt(&t, "KEEL.REG.LIMITS services-max 1 tags_max 0"), "+OK\r\n");
    const char *got = kvt(&t, "KEEL.REG.READ LIMITS");
    KT_CHECK(STARTS(got, "*24\r\n$12\r\nservices_max\r\n:1\r\n"));
    KT_CHECK(strstr(got, "$8\r\ntags_max\r\n:0\r\n") != NULL);
    KT_EQ_STR(kvt(&t, "KEEL.REG.WRITE REGISTER a a1 h 80"), ":2\r\n");
    KT_CHECK(STARTS(kvt(&t, "KEEL.REG.WRITE REGISTER b b1 h 80"),
                    "-LIMIT registry: the registry holds services_max 1 services"));
    KT_CHECK(STARTS(kvt(&t, "KEEL.REG.WRITE REGISTER a a2 h 80 TAGS 1 x"),
                    "-LIMIT registry: 1 tags over tags_max 0"));
    /* out of range or unknown: refused, nothing changed */
    KT_CHECK(STARTS(kvt(&t, "KEEL.REG.LIMITS tags_max 100000"), "-ERR registry:"));
    KT_CHECK(STARTS(kvt(&t, "KEEL.REG.LIMITS nope 1"), "-ERR registry: unknown limit"));
    KT_CHECK(strstr(kvt(&t, "KEEL.REG.READ LIMITS"), "$8\r\ntags_max\r\n:0\r\n") != NULL);
    kvt_free(&t);
}

static void the_feed_pushes_render_the_state_and_each_change(void)
{
    static kvt_t t;
    kvt_init(&t, NULL);
    kvt(&t, "KEEL.REG.WRITE REGISTER web w1 h 80");
    kvt(&t, "KEEL.REG.WRITE REGISTER api a1 h 81");
    kvt(&t, "KEEL.REG.WRITE DEREGISTER a1");
    keel_buf_t b;
    keel_buf_init(&b, 0);
    KT_EQ_INT(keel_kv_reg_feed_state(&t.kv, 1000, (const uint8_t *)"web", 3, &b), 0);
    KT_CHECK(
        STARTS((const char *)keel_buf_rptr(&b), "*3\r\n$8\r\nregstate\r\n:3\r\n*1\r\n*34\r\n"));
    keel_buf_reset(&b);
    const keel_reg_t *reg = t.kv.reg;
    KT_EQ_INT(keel_reg_history_len(reg), 3);
    KT_EQ_INT(keel_kv_reg_feed_event(keel_reg_history_at(reg, 2), &b), 0);
    const char *p = (const char *)keel_buf_rptr(&b);
    KT_CHECK(STARTS(p, "*4\r\n$9\r\nregchange\r\n:3\r\n$10\r\nderegister\r\n*34\r\n"));
    KT_CHECK(strstr(p, "$7\r\nservice\r\n$3\r\napi\r\n") != NULL);
    keel_buf_free(&b);
    kvt_free(&t);
}

int main(void)
{
    KT_RUN(register_then_read_the_instance_back);
    KT_RUN(syntax_and_limits_are_errors_that_change_nothing);
    KT_RUN(the_sweep_removes_what_lapsed_by_the_leaders_clock);
    KT_RUN(the_registry_rides_in_the_snapshot_sealed_by_its_crc);
    KT_RUN(limits_are_replicated_entries_and_judge_later_registrations);
    KT_RUN(the_feed_pushes_render_the_state_and_each_change);
    return kt_done();
}
