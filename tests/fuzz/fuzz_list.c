/* fuzz_list.c - libFuzzer target: the list commands' arguments (LPOS options, LMPOP and
   BLMPOP's numkeys/COUNT, timeouts, LINSERT, LTRIM/LRANGE indexes) and the blocking-pop
   core the server relies on. */
#include "base/buf.h"
#include "base/num.h"
#include "core/kv.h"
#include "core/kv_int.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The input is lines of space-separated words, each a command applied at the next index to
 * a state that starts with two lists (l: 12 short elements, m: 3) and a string s. Each
 * command runs through the path a server takes: keel_kv_check, then, if it passes, apply.
 * Properties:
 *   - a command keel_kv_check refuses is refused by apply with the same error, changing
 *     nothing (revision, count, bytes);
 *   - keel_kv_bpop_parse accepts only commands keel_kv_check accepts (the server blocks
 *     only valid commands), and every served form it builds passes keel_kv_check, for each
 *     source key;
 *   - after every command each list's LLEN equals its LRANGE 0 -1 length, no key is an
 *     empty list, and the byte accounting returns to its start once every key is deleted;
 *   - the state survives a snapshot round trip with the same lists.
 * Small limits keep each input cheap.
 */
#define WORDS_MAX 24

static keel_kv_config_t small_config(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.key_bytes_max = 64;
    cfg.value_bytes_max = 300;
    cfg.keys_max = 64;
    cfg.argc_max = 32;
    return cfg;
}

static uint64_t idx;

static int apply(keel_kv_t *kv, int argc, const uint8_t *const *argv, const size_t *lens,
                 keel_buf_t *reply)
{
    keel_buf_t e;
    keel_buf_init(&e, 0);
    int rc = keel_kv_entry_encode(&e, 1000 + idx, argc, argv, lens);
    if (rc == 0) {
        keel_buf_reset(reply);
        rc = keel_kv_apply(kv, ++idx, keel_buf_rptr(&e), keel_buf_unread(&e), reply);
        assert(rc == 0);
    }
    keel_buf_free(&e);
    return rc;
}

static void line(keel_kv_t *kv, const char *text, keel_buf_t *reply)
{
    const uint8_t *argv[WORDS_MAX];
    size_t lens[WORDS_MAX];
    int argc = 0;
    const char *p = text;
    while (*p && argc < WORDS_MAX) {
        const char *sp = strchr(p, ' ');
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        argv[argc] = (const uint8_t *)p;
        lens[argc++] = n;
        p += n + (sp != NULL);
    }
    apply(kv, argc, argv, lens, reply);
}

static int check_lists(void *data, const keel__kv_entry_t *e)
{
    keel_kv_t *kv = data;
    if (e->type != KEEL__KV_TYPE_LIST)
        return 0;
    const uint8_t *key = keel__kv_key(e);
    const uint8_t *argv[4] = {(const uint8_t *)"LRANGE", key, (const uint8_t *)"0",
                              (const uint8_t *)"-1"};
    size_t lens[4] = {6, e->key_len, 1, 2};
    keel_buf_t b;
    keel_buf_init(&b, 0);
    int rc = keel_kv_read(kv, 4, argv, lens, &b);
    assert(rc == 0);
    const uint8_t *r = keel_buf_rptr(&b);
    assert(keel_buf_unread(&b) > 1 && r[0] == '*');
    int64_t n = 0;
    size_t k = 1;
    while (r[k] != '\r')
        n = n * 10 + (r[k++] - '0');
    assert(n > 0); /* an empty list is no key */
    argv[0] = (const uint8_t *)"LLEN";
    lens[0] = 4;
    keel_buf_reset(&b);
    rc = keel_kv_read(kv, 2, argv, lens, &b);
    assert(rc == 0);
    char want[32];
    int wn = snprintf(want, sizeof(want), ":%lld\r\n", (long long)n);
    assert(keel_buf_unread(&b) == (size_t)wn && memcmp(keel_buf_rptr(&b), want, (size_t)wn) == 0);
    keel_buf_free(&b);
    return 0;
}

static int sink(void *data, const uint8_t *p, size_t n)
{
    return keel_buf_append(data, p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    keel_kv_config_t cfg = small_config();
    keel_kv_t kv;
    if (keel_kv_init(&kv, &cfg) != 0)
        return 0;
    idx = 0;
    size_t empty_bytes = kv.bytes;
    keel_buf_t reply, err;
    keel_buf_init(&reply, 0);
    keel_buf_init(&err, 0);
    line(&kv, "RPUSH l a b c a 1 2 3 c c b a x", &reply);
    line(&kv, "LPUSH m q r s", &reply);
    line(&kv, "SET s v", &reply);
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        const uint8_t *argv[WORDS_MAX];
        size_t lens[WORDS_MAX];
        int argc = 0;
        size_t w = start;
        for (size_t j = start; j <= i && argc < WORDS_MAX; j++) {
            if (j == i || data[j] == ' ') {
                argv[argc] = data + w;
                lens[argc++] = j - w;
                w = j + 1;
            }
        }
        start = i + 1;
        if (argc == 0 || lens[0] == 0)
            continue;
        keel_buf_reset(&err);
        int ok = keel_kv_check(argc, argv, lens, &err) == 0;
        keel_kv_bpop_t bp;
        if (keel_kv_bpop_parse(argc, argv, lens, &bp)) {
            assert(ok);
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
        uint64_t rev = keel_kv_revision(&kv);
        size_t count = keel_kv_count(&kv), bytes = kv.bytes;
        if (apply(&kv, argc, argv, lens, &reply) != 0)
            continue;
        if (!ok) { /* the same refusal, nothing changed */
            assert(keel_buf_unread(&reply) == keel_buf_unread(&err) &&
                   memcmp(keel_buf_rptr(&reply), keel_buf_rptr(&err), keel_buf_unread(&err)) == 0);
            assert(keel_kv_revision(&kv) == rev && keel_kv_count(&kv) == count &&
                   kv.bytes == bytes);
        }
        keel__kv_each(&kv, check_lists, &kv);
    }
    /* a snapshot round trip keeps every list */
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    int rc = keel_kv_snapshot_write(&kv, sink, &snap);
    assert(rc == 0);
    keel_kv_t copy;
    if (keel_kv_init(&copy, &cfg) == 0) {
        keel_errmsg_t m;
        rc = keel_kv_snapshot_decode(&copy, keel_buf_rptr(&snap), keel_buf_unread(&snap), &m);
        assert(rc == 0 &&
               keel_kv_count(&copy) == keel_kv_count(&kv)); /* bytes: node layout differs */
        keel__kv_each(&copy, check_lists, &copy);
        keel_kv_free(&copy);
    }
    keel_buf_free(&snap);
    line(&kv, "FLUSHALL", &reply);
    assert(kv.bytes == empty_bytes && keel_kv_count(&kv) == 0);
    keel_buf_free(&reply);
    keel_buf_free(&err);
    keel_kv_free(&kv);
    return 0;
}
