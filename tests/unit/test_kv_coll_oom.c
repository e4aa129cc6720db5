/* test_kv_coll_oom.c - hash and set writes under allocation failure: each fails whole or
   succeeds whole (the pattern of test_kv_oom.c, for the typed values). */
#include "test_kv_util.h"
#include "test_oom.h"

#include <stdio.h>

static kvt_t t;

static const char *const KEYS[] = {"h", "h2", "s", "s2", "d", "str"};

/* The state as the commands see it: revision, count, and each key's type and content. */
static void describe(keel_kv_t *kv, char *out, size_t cap)
{
    kvt_t v;
    memcpy(&v.kv, kv, sizeof(*kv));
    keel_buf_init(&v.reply, 0);
    size_t n =
        (size_t)snprintf(out, cap, "rev %llu count %zu bytes %zu |",
                         (unsigned long long)keel_kv_revision(kv), keel_kv_count(kv), kv->bytes);
    char line[64];
    for (size_t i = 0; i < sizeof(KEYS) / sizeof(KEYS[0]) && n < cap; i++) {
        const char *ops[] = {"TYPE", "HGETALL", "SMEMBERS", "OBJECT ENCODING", "PTTL"};
        for (size_t k = 0; k < 5 && n < cap; k++) {
            snprintf(line, sizeof(line), "%s %s", ops[k], KEYS[i]);
            n += (size_t)snprintf(out + n, cap - n, " %s", kvt_read_at(&v, 1, line));
        }
    }
    keel_buf_free(&v.reply);
}

static int failed_attempts;

static void apply_under_failures(const char *line)
{
    static char before[1 << 16], after[1 << 16], want_state[1 << 16], want[1 << 12];
    const uint8_t *argv[KVT_ARGS_MAX];
    size_t lens[KVT_ARGS_MAX];
    int argc = kvt_split(line, argv, lens);
    keel_buf_reset(&t.entry);
    KT_EQ_INT(keel_kv_entry_encode(&t.entry, 1, argc, argv, lens), 0);
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    KT_EQ_INT(keel_kv_snapshot_encode(&t.kv, &snap), 0);
    /* what the write does with memory to spare: the reply and state every attempt must match */
    keel_kv_t ref;
    KT_EQ_INT(keel_kv_init(&ref, NULL), 0);
    KT_EQ_INT(keel_kv_snapshot_decode(&ref, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL), 0);
    describe(&ref, before, sizeof(before));
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    KT_EQ_INT(keel_kv_apply(&ref, t.index + 1, keel_buf_rptr(&t.entry), keel_buf_unread(&t.entry),
                            &reply),
              0);
    snprintf(want, sizeof(want), "%.*s", (int)keel_buf_unread(&reply),
             (const char *)keel_buf_rptr(&reply));
    describe(&ref, want_state, sizeof(want_state));
    keel_buf_free(&reply);
    keel_kv_free(&ref);
    for (long n = 0;; n++) {
        keel_kv_t copy;
        KT_EQ_INT(keel_kv_init(&copy, NULL), 0);
        KT_EQ_INT(
            keel_kv_snapshot_decode(&copy, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL), 0);
        keel_buf_init(&reply, 0);
        keel_buf_append(&reply, "x", 1); /* room for a short reply */
        keel_buf_consume(&reply, 1);
        long f0 = failures;
        fail_in = n;
        int rc = keel_kv_apply(&copy, t.index + 1, keel_buf_rptr(&t.entry),
                               keel_buf_unread(&t.entry), &reply);
        fail_in = -1;
        int injected = failures != f0;
        describe(&copy, after, sizeof(after));
        if (rc == 0) {
            if (keel_buf_unread(&reply) != strlen(want) ||
                memcmp(keel_buf_rptr(&reply), want, strlen(want)) != 0)
                KT_FAIL("%s (allocation %ld failing): %.*s", line, n, (int)keel_buf_unread(&reply),
                        (const char *)keel_buf_rptr(&reply));
            /* memory may differ by a table that could not grow (bytes are the real ones) */
            if (strcmp(strchr(after, '|'), strchr(want_state, '|')) != 0 ||
                strncmp(after, want_state, strcspn(want_state, "b")) != 0)
                KT_FAIL("%s (allocation %ld failing): state %s, want %s", line, n, after,
                        want_state);
        } else {
            KT_EQ_INT(rc, KEEL_ENOMEM);
            KT_CHECK(injected);
            KT_EQ_INT(keel_buf_unread(&reply), 0);
            KT_EQ_STR(after, before);
            failed_attempts++;
        }
        keel_buf_free(&reply);
        keel_kv_free(&copy);
        if (!injected)
            break;
        KT_CHECK(n < 2000);
    }
    keel_buf_free(&snap);
    kvt(&t, line);
}

static void failed_allocations_leave_hashes_and_sets_as_they_were(void)
{
    if (!KVT_OOM) {
        fprintf(stderr, "     (skipped under ASan: the sanitizer owns malloc)\n");
        return;
    }
    kvt_init(&t, NULL);
    static char line[512];
    const char *lines[] = {
        "HSET h a 1 b 2 c 3",
        "HSET h a 10 d 4",
        "HSETNX h e 5",
        "HMSET h2 x 1",
        "HSET h2 x 123456789012 y 2", /* a packed table grows in place or moves */
        "HSET h2 x 1",                /* and shrinks */
        "HSET h2 a 1 b 2 c 3 d 4 e 5 f 6 g 7 h 8 i 9 j 10 k 11 l 12 m 13 n 14 o 15", /* 17: big */
        "HINCRBY h n 5",
        "HINCRBYFLOAT h n 0.25",
        "HDEL h a b",
        "SADD s 1 2 3",
        "SADD s x y 1",
        "SREM s 1",
        "SPOP s",
        "SPOP s 2",
        "SMOVE s s2 2",
        "SMOVE s2 s 2",
        "SINTERSTORE d s s2",
        "SUNIONSTORE d s s2",
        "SDIFFSTORE d s s2",
        "SET str v",
        "SUNIONSTORE str s",
        "COPY h h3",
        "RENAME h2 s2",
        "PEXPIRE s 100000000",
        "SADD s z",
        "HDEL h c d e n",
        /* small sets of integers, inline in their entries (kv_set_inline.c): unpacked for a
           write, packed back after, the entry growing or moving with a wider member */
        "SADD i 1 2 3",
        "SADD i 70000",
        "SADD i 5000000000 -7",
        "SREM i 5000000000 70000",
        "SMOVE i i2 1",
        "SINTERSTORE i3 i i",
        "COPY i i4",
        "RENAME i4 i5",
        "SPOP i",
        "SADD i5 x",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        apply_under_failures(lines[i]);
    /* a table that grows through several resizes, then shrinks */
    for (int i = 0; i < 40; i++) {
        snprintf(line, sizeof(line), "SADD s2 m%d n%d o%d", i, i, i);
        apply_under_failures(line);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(line, sizeof(line), "SREM s2 m%d n%d o%d", i, i, i);
        apply_under_failures(line);
    }
    KT_CHECK(failed_attempts >= 40); /* the failure paths were really taken */
    kvt_free(&t);
}

int main(void)
{
    KT_RUN(failed_allocations_leave_hashes_and_sets_as_they_were);
    return kt_done();
}
