/* kv_set_inline.c - a small set of integers inside its key's entry, Redis's intset made part of
   the key (issue 19: memory per key within 1.5x of Redis's). */
#include "core/kv_coll.h"

#include "base/bytes.h"
#include "base/num.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * A set whose members are all integers (keel_parse_i64's canonical decimal text, which is
 * Redis's string2ll), at most KEEL__KS_INLINE_MAX of them, and that never held anything else
 * (its table's sticky `hashtable` flag clear) rests in its key entry's value area instead of a
 * table behind a pointer, little-endian:
 *
 *   [the table's hash seed: 8 bytes][width: 1 byte, 2, 4 or 8][the members as signed integers
 *    of that width, ascending]
 *
 * Five seven-digit members take 9 + 5 x 4 = 29 bytes, so the key is one 96-byte malloc chunk
 * where its entry (80) and a packed table (80) took two: 64 bytes a key less. An entry's value
 * is a pointer (8 bytes) or this (at least 11), so its length tells which (keel__kv_inline).
 *
 * The commands work on the table: keel__ks_table builds the packed table those members make
 * (keel__kc_packed_of: the same seed, so the same hash order, cursors and picks). A set the
 * command only reads keeps it beside the entry, and keel__kvc_run frees it after the command.
 * A set the command changes (or a read past KEEL__KS_RUN_TMP_MAX such tables) points its
 * entry at it, the memory count moving with the form; its key is noted (keel__ks_note), as
 * is a set a command made, stored, copied or left small, and keel__kvc_run packs the noted
 * sets back after the command (keel__ks_after). Nothing a
 * command answers depends on the form, so replicas may hold a set in different forms (one that
 * could not grow its entry for want of memory keeps the table). SISMEMBER, SMISMEMBER and SCARD
 * answer from the inline form itself (a binary search), and a snapshot writes the table's body,
 * so its format does not change.
 */

#define HEADER_BYTES KEEL__KS_INLINE_HEADER_BYTES

static size_t width_of(const keel__kv_entry_t *e)
{
    return keel__kv_cval(e)[8];
}

size_t keel__ks_inline_count(const keel__kv_entry_t *e)
{
    assert(keel__kv_inline(e));
    return (e->val_len - HEADER_BYTES) / width_of(e);
}

static int64_t member_at(const keel__kv_entry_t *e, size_t i)
{
    size_t w = width_of(e);
    const uint8_t *p = keel__kv_cval(e) + HEADER_BYTES + i * w;
    return w == 2   ? (int64_t)(int16_t)keel_get_u16(p)
           : w == 4 ? (int64_t)(int32_t)keel_get_u32(p)
                    : (int64_t)keel_get_u64(p);
}

int keel__ks_inline_has(const keel__kv_entry_t *e, const uint8_t *m, size_t n)
{
    int64_t v;
    if (keel_parse_i64(m, n, &v) != 0)
        return 0;
    size_t lo = 0, hi = keel__ks_inline_count(e);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t x = member_at(e, mid);
        if (x == v)
            return 1;
        if (x < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

size_t keel__ks_inline_of(const keel__kc_t *t, uint8_t *out)
{
    size_t n = keel__kc_count(t);
    if (t->hashtable || n == 0 || n > KEEL__KS_INLINE_MAX)
        return 0;
    int64_t v[KEEL__KS_INLINE_MAX];
    size_t i = 0, w = 2;
    for (const keel__kc_item_t *it = keel__kc_first(t); it; it = keel__kc_next(t, it), i++) {
        if (keel_parse_i64(keel__kc_f(it), keel__kc_fl(it), &v[i]) != 0)
            return 0; /* a set whose flag is clear holds integers only; checked anyway */
        if (v[i] < INT32_MIN || v[i] > INT32_MAX)
            w = 8;
        else if ((v[i] < INT16_MIN || v[i] > INT16_MAX) && w < 4)
            w = 4;
    }
    assert(i == n);
    qsort(v, n, sizeof(v[0]), cmp_i64);
    keel_put_u64(out, t->seed);
    out[8] = (uint8_t)w;
    for (i = 0; i < n; i++) {
        uint8_t *p = out + HEADER_BYTES + i * w;
        if (w == 2)
            keel_put_u16(p, (uint16_t)v[i]);
        else if (w == 4)
            keel_put_u32(p, (uint32_t)v[i]);
        else
            keel_put_u64(p, (uint64_t)v[i]);
    }
    return HEADER_BYTES + n * w;
}

keel__kc_t *keel__ks_inline_table(const keel__kv_entry_t *e)
{
    size_t n = keel__ks_inline_count(e);
    assert(n >= 1 && n <= KEEL__KS_INLINE_MAX);
    char text[KEEL__KS_INLINE_MAX][KEEL_DEC_BYTES_MAX];
    const uint8_t *m[KEEL__KS_INLINE_MAX];
    size_t l[KEEL__KS_INLINE_MAX];
    for (size_t i = 0; i < n; i++) {
        l[i] = keel_fmt_i64(text[i], member_at(e, i));
        m[i] = (const uint8_t *)text[i];
    }
    return keel__kc_packed_of(keel_get_u64(keel__kv_cval(e)), m, l, n);
}

int keel__ks_table(const call_t *c, const keel__kv_entry_t *ce, int write, keel__kc_t **t)
{
    assert(ce->type == KEEL__KV_TYPE_SET);
    if (!keel__kv_inline(ce)) {
        *t = keel__kv_obj(ce);
        return 0;
    }
    keel__kc_t *n = keel__ks_inline_table(ce);
    if (n == NULL)
        return KEEL_ENOMEM;
    *t = n;
    if (!write && c->ks && c->ks->n < KEEL__KS_RUN_TMP_MAX) {
        c->ks->tmp[c->ks->n++] = n; /* only read: the entry stays as it is */
        return 0;
    }
    /* the entry owns its value's form, a read's too: the form changes, not the value */
    keel__kv_entry_t *e = (keel__kv_entry_t *)(uintptr_t)ce;
    keel_kv_t *kv = (keel_kv_t *)(uintptr_t)c->kv;
    kv->bytes = kv->bytes + sizeof(void *) + keel__kc_bytes(n) - e->val_len;
    e->val_len = sizeof(void *); /* the entry keeps its room (val_cap) for the way back */
    keel__kv_set_obj(e, n);
    if (!write && c->ks)
        c->ks->all = 1; /* a read past the room: its key is some argv */
    return 0;
}

void keel__ks_note(const call_t *c, const uint8_t *key, size_t len)
{
    keel__ks_run_t *ks = c->ks;
    if (ks == NULL || ks->all)
        return;
    for (unsigned i = 0; i < ks->nkeys; i++)
        if (ks->len[i] == len && memcmp(ks->key[i], key, len) == 0)
            return;
    if (ks->nkeys == KEEL__KS_RUN_KEYS_MAX) {
        ks->all = 1;
        return;
    }
    ks->key[ks->nkeys] = key;
    ks->len[ks->nkeys++] = len;
}

int keel__ks_pack(keel_kv_t *kv, keel__kv_entry_t **link)
{
    keel__kv_entry_t *e = *link;
    if (e->type != KEEL__KV_TYPE_SET || keel__kv_inline(e))
        return 0;
    keel__kc_t *t = keel__kv_obj(e);
    uint8_t v[KEEL__KS_INLINE_BYTES_MAX];
    size_t n = keel__ks_inline_of(t, v);
    if (n == 0 || keel__kv_reserve_value(kv, link, n, 0) != 0)
        return 0; /* not a small set of integers, or no room: it keeps its table */
    e = *link;
    memcpy(keel__kv_val(e), v, n);
    e->val_len = (uint32_t)n;
    kv->bytes = kv->bytes + n - sizeof(void *) - keel__kc_bytes(t);
    keel__kc_free(t);
    return 1;
}

static void pack_key(keel_kv_t *kv, const uint8_t *key, size_t len)
{
    keel__kv_entry_t **link = NULL;
    if (keel__kv_find(kv, key, len, keel__kv_hash(kv, key, len), &link))
        keel__ks_pack(kv, link);
}

void keel__ks_after(const call_t *c)
{
    keel__ks_run_t *ks = c->ks;
    for (unsigned i = 0; i < ks->n; i++)
        keel__kc_free(ks->tmp[i]);
    ks->n = 0;
    keel_kv_t *kv = (keel_kv_t *)(uintptr_t)c->kv;
    if (ks->all)
        for (size_t i = 1; i < c->argc; i++)
            pack_key(kv, c->argv[i], c->lens[i]);
    else
        for (unsigned i = 0; i < ks->nkeys; i++)
            pack_key(kv, ks->key[i], ks->len[i]);
    ks->nkeys = 0;
    ks->all = 0;
}
