/* kv_stream_list.c - the stream keys of a key table, the first ones by name: what the
   server's /metrics reports per stream and per group (a bounded number of label sets). */
#include "core/kv_stream_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Bytewise order of names, a prefix before the longer name (Redis's and SCAN's order of
 * binary keys). */
static int name_cmp(const keel_kv_stream_ref_t *a, const keel_kv_stream_ref_t *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c != 0)
        return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static int name_cmp_q(const void *a, const void *b)
{
    return name_cmp(a, b);
}

/* out[0..n) is a max-heap by name: its root is the last of the names kept so far. */
static void sift_down(keel_kv_stream_ref_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && name_cmp(&h[l], &h[m]) > 0)
            m = l;
        if (r < n && name_cmp(&h[r], &h[m]) > 0)
            m = r;
        if (m == i)
            return;
        keel_kv_stream_ref_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void sift_up(keel_kv_stream_ref_t *h, size_t i)
{
    while (i > 0 && name_cmp(&h[(i - 1) / 2], &h[i]) < 0) {
        keel_kv_stream_ref_t t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

/*
 * A bounded max-heap keeps the first `cap` names seen in one walk of both tables (the
 * second exists while rehashing), O(keys + streams x log cap); sorted at the end.
 */
size_t keel_kv_streams_first(const keel_kv_t *kv, uint64_t now_ms, size_t key_bytes_max,
                             keel_kv_stream_ref_t *out, size_t cap, size_t *total)
{
    size_t n = 0, all = 0;
    for (int t = 0; t < 2; t++) {
        const keel__kv_table_t *tb = &kv->t[t];
        for (size_t b = 0; tb->buckets && b <= tb->mask; b++) {
            for (const keel__kv_entry_t *e = tb->buckets[b]; e; e = e->next) {
                if (e->type != KEEL__KV_TYPE_STREAM || !keel__kv_alive(kv, e, now_ms))
                    continue;
                all++;
                if (e->key_len > key_bytes_max || cap == 0)
                    continue;
                keel_kv_stream_ref_t r = {e->data, e->key_len, keel__kv_obj(e)};
                if (n < cap) {
                    out[n] = r;
                    sift_up(out, n++);
                } else if (name_cmp(&r, &out[0]) < 0) {
                    out[0] = r;
                    sift_down(out, n, 0);
                }
            }
        }
    }
    assert(n <= cap && n <= all);
    qsort(out, n, sizeof(*out), name_cmp_q);
    *total = all;
    return n;
}
