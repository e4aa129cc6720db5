/* fuzz_kv.c - libFuzzer target: KV command entries (decode + apply + reads) and snapshot decode. */
#include "base/buf.h"
#include "core/kv.h"
#include "core/kv_int.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Byte 0 picks the mode.
 *   even: the rest is a stream of (u16 length | entry bytes) records; each
 *         entry is applied at the next index. Properties: apply returns 0 or
 *         KEEL_EPROTO; a refused entry changes nothing (revision, count,
 *         applied index, reply); an accepted one advances the index and
 *         writes a complete reply. Then a SCAN walk terminates and sees every
 *         key, and the state survives a snapshot round trip. After every
 *         entry the deadline index is a valid heap holding exactly the keys
 *         with a deadline (issue 6: TTLs, KEEL.EXPIRE.SWEEP, KEEL.CAS), and the
 *         change history holds whole revisions, in order, every revision from
 *         its oldest to the current one, within its limits; at the end, if it
 *         still reaches back to revision 1, replaying it onto an empty state
 *         gives the final keys and values exactly (KEEL.WATCH).
 *   odd:  the rest is a snapshot. Properties: decode never crashes; a refused
 *         one leaves the target empty; an accepted one re-encodes to the same
 *         number of bytes (older versions: wider records and the version-3 sections) and decodes
 *         again to the same counts.
 * Small limits (keys 64, values 256 bytes) keep each input cheap.
 */
static keel_kv_config_t small_config(void)
{
    keel_kv_config_t cfg = keel_kv_config_default();
    cfg.key_bytes_max = 64;
    cfg.value_bytes_max = 256;
    cfg.keys_max = 64;
    cfg.argc_max = 32;
    cfg.history_changes_max = 200; /* long inputs also drop old revisions */
    return cfg;
}

static int count_deadline(void *data, const keel__kv_entry_t *e)
{
    size_t *n = data;
    *n += keel__kv_expire(e) != 0;
    return 0;
}

/* Every leased key is on its lease's list, and every list member carries the lease's id and
   points back at its entry. */
static int check_leased(void *data, const keel__kv_entry_t *e)
{
    const keel_kv_t *kv = data;
    const keel__kv_xrec_t *r = e->x;
    assert(r == NULL || (r->e == e && !r->head));
    if (r == NULL || r->lease_id == 0) {
        assert(r == NULL || !keel_list_linked(&r->link));
        return 0;
    }
    const keel__kv_entry_t *l = keel__kv_lease_find(kv, r->lease_id, NULL);
    assert(l != NULL && l->x != NULL && l->x->head && l->x->lease_id == 0 && l->x->e == l);
    assert(keel_list_linked(&r->link));
    const keel_list_t *x = r->link.next;
    size_t steps = 0;
    while (x != &l->x->link) {
        const keel__kv_xrec_t *m = KEEL_LIST_ENTRY(x, keel__kv_xrec_t, link);
        assert(m->lease_id == r->lease_id && m->e->x == m && ++steps <= kv->count);
        x = x->next;
    }
    return 0;
}

static void check_heap_of(const keel_kv_t *kv);

/* Heap order, back-pointers, and exactly the keys with a deadline in it; same for sub-tables. */
static void check_heap(const keel_kv_t *kv)
{
    check_heap_of(kv);
    if (kv->leases)
        check_heap_of(kv->leases);
    if (kv->locks)
        check_heap_of(kv->locks);
    keel__kv_each(kv, check_leased, (void *)kv);
}

static void check_heap_of(const keel_kv_t *kv)
{
    size_t with = 0;
    keel__kv_each(kv, count_deadline, &with);
    assert(with == kv->heap_len && kv->heap_len <= kv->heap_cap);
    for (size_t i = 0; i < kv->heap_len; i++) {
        const keel__kv_entry_t *e = kv->heap[i];
        assert(e->x != NULL && e->x->e == e && e->x->heap_pos == i && e->x->expire_ms != 0);
        assert(keel__kv_find(kv, keel__kv_key(e), e->key_len,
                             keel__kv_hash(kv, keel__kv_key(e), e->key_len), NULL) == e);
        if (i > 0)
            assert(keel__kv_expire(kv->heap[(i - 1) / 2]) <= keel__kv_expire(e));
    }
}

/* Whole revisions, in order, no revision missing, within the limits. */
static void check_history(const keel_kv_t *kv)
{
    uint64_t oldest = keel_kv_history_oldest(kv), prev = oldest - 1;
    size_t n = keel_kv_history_len(kv), bytes = 0;
    assert(n <= kv->cfg.history_changes_max &&
           keel_kv_history_bytes(kv) <= kv->cfg.history_bytes_max);
    for (size_t i = 0; i < n; i++) {
        keel_kv_change_t c;
        keel_kv_history_at(kv, i, &c);
        assert(c.revision == prev + 1 || (i > 0 && c.revision == prev));
        assert((c.op == KEEL_KV_CHANGE_PUT) == (c.value != NULL));
        prev = c.revision;
        bytes += c.key_len + c.value_len;
    }
    assert(bytes <= keel_kv_history_bytes(kv));
    assert(n == 0 ? oldest == keel_kv_revision(kv) + 1 : prev == keel_kv_revision(kv));
}

/* Replays the whole history (from revision 1) into a fresh state: same keys, same values. */
static int same_in(void *data, const keel__kv_entry_t *e)
{
    keel_kv_value_t v;
    int rc = keel_kv_get(data, keel__kv_key(e), e->key_len, &v);
    if (e->type != KEEL__KV_TYPE_STRING) { /* a typed key's change carries no value */
        assert(rc == 0);
        return 0;
    }
    assert(rc == 0 && v.len == e->val_len && memcmp(v.value, keel__kv_cval(e), v.len) == 0);
    return 0;
}

static void replay_history(const keel_kv_t *kv)
{
    if (keel_kv_history_oldest(kv) != 1)
        return;
    keel_kv_config_t cfg = small_config();
    keel_kv_t r;
    int rc = keel_kv_init(&r, &cfg);
    assert(rc == 0);
    keel_buf_t entry, reply;
    keel_buf_init(&entry, 0);
    keel_buf_init(&reply, 0);
    for (size_t i = 0; i < keel_kv_history_len(kv); i++) {
        keel_kv_change_t c;
        keel_kv_history_at(kv, i, &c);
        const uint8_t *argv[] = {c.value ? (const uint8_t *)"SET" : (const uint8_t *)"DEL", c.key,
                                 c.value ? c.value : (const uint8_t *)""};
        size_t lens[] = {3, c.key_len, c.value_len};
        keel_buf_reset(&entry);
        keel_buf_reset(&reply);
        rc = keel_kv_entry_encode(&entry, 0, c.value ? 3 : 2, argv, lens);
        rc |= keel_kv_apply(&r, i + 1, keel_buf_rptr(&entry), keel_buf_unread(&entry), &reply);
        assert(rc == 0 && keel_buf_unread(&reply) > 0 && keel_buf_rptr(&reply)[0] != '-');
    }
    assert(keel_kv_count(&r) == keel_kv_count(kv));
    keel__kv_each(kv, same_in, &r);
    keel_buf_free(&entry);
    keel_buf_free(&reply);
    keel_kv_free(&r);
}

static void round_trip(const keel_kv_t *kv)
{
    keel_kv_config_t cfg = small_config();
    keel_buf_t snap;
    keel_buf_init(&snap, 0);
    int rc = keel_kv_snapshot_encode(kv, &snap);
    assert(rc == 0);
    keel_kv_t copy;
    rc = keel_kv_init(&copy, &cfg);
    assert(rc == 0);
    rc = keel_kv_snapshot_decode(&copy, keel_buf_rptr(&snap), keel_buf_unread(&snap), NULL);
    assert(rc == 0);
    assert(keel_kv_count(&copy) == keel_kv_count(kv));
    assert(keel_kv_revision(&copy) == keel_kv_revision(kv));
    assert(keel_kv_applied_index(&copy) == keel_kv_applied_index(kv));
    assert(keel_kv_next_deadline_ms(&copy) == keel_kv_next_deadline_ms(kv));
    check_heap(&copy);
    keel_kv_free(&copy);
    keel_buf_free(&snap);
}

static void scan_all(const keel_kv_t *kv)
{
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    uint64_t cursor = 0;
    int calls = 0;
    do {
        char cur[24];
        size_t n = 0;
        uint64_t v = cursor;
        do {
            cur[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        for (size_t i = 0; i < n / 2; i++) {
            char x = cur[i];
            cur[i] = cur[n - 1 - i];
            cur[n - 1 - i] = x;
        }
        const uint8_t *argv[] = {(const uint8_t *)"SCAN", (const uint8_t *)cur,
                                 (const uint8_t *)"COUNT", (const uint8_t *)"3"};
        size_t lens[] = {4, n, 5, 1};
        keel_buf_reset(&reply);
        int rc = keel_kv_read(kv, 4, argv, lens, &reply);
        assert(rc == 0);
        /* "*2\r\n$<n>\r\n<cursor>\r\n..." */
        const uint8_t *p = keel_buf_rptr(&reply), *end = p + keel_buf_unread(&reply);
        assert(end - p > 5 && memcmp(p, "*2\r\n$", 5) == 0);
        p = memchr(p + 5, '\n', (size_t)(end - p - 5));
        assert(p != NULL);
        for (cursor = 0, p++; p < end && *p >= '0' && *p <= '9'; p++)
            cursor = cursor * 10 + (uint64_t)(*p - '0');
        assert(p < end && *p == '\r');
        assert(++calls < 10000);
    } while (cursor != 0);
    keel_buf_free(&reply);
}

static void entries(const uint8_t *d, size_t n)
{
    keel_kv_config_t cfg = small_config();
    keel_kv_t kv;
    int rc = keel_kv_init(&kv, &cfg);
    assert(rc == 0);
    keel_buf_t reply;
    keel_buf_init(&reply, 0);
    uint64_t index = 0;
    while (n >= 2) {
        size_t len = (size_t)d[0] | (size_t)d[1] << 8;
        d += 2, n -= 2;
        if (len > n)
            len = n;
        uint64_t rev = keel_kv_revision(&kv), applied = keel_kv_applied_index(&kv);
        size_t count = keel_kv_count(&kv);
        keel_buf_reset(&reply);
        rc = keel_kv_apply(&kv, ++index, d, len, &reply);
        if (rc == 0) {
            assert(keel_kv_applied_index(&kv) == index);
            assert(keel_buf_unread(&reply) >= 3);
            const uint8_t *r = keel_buf_rptr(&reply);
            assert(r[keel_buf_unread(&reply) - 2] == '\r' &&
                   r[keel_buf_unread(&reply) - 1] == '\n');
            assert(keel_kv_count(&kv) <= cfg.keys_max);
        } else {
            assert(rc == KEEL_EPROTO);
            assert(keel_buf_unread(&reply) == 0);
            assert(keel_kv_revision(&kv) == rev && keel_kv_count(&kv) == count);
            assert(keel_kv_applied_index(&kv) == applied);
        }
        check_heap(&kv);
        check_history(&kv);
        d += len, n -= len;
    }
    replay_history(&kv);
    scan_all(&kv);
    round_trip(&kv);
    keel_buf_free(&reply);
    keel_kv_free(&kv);
}

static void snapshot(const uint8_t *d, size_t n)
{
    keel_kv_config_t cfg = small_config();
    keel_kv_t kv;
    int rc = keel_kv_init(&kv, &cfg);
    assert(rc == 0);
    keel_errmsg_t msg;
    rc = keel_kv_snapshot_decode(&kv, d, n, &msg);
    if (rc != 0) {
        assert(keel_kv_count(&kv) == 0 && keel_kv_revision(&kv) == 0);
    } else {
        keel_buf_t again;
        keel_buf_init(&again, 0);
        rc = keel_kv_snapshot_encode(&kv, &again);
        /* older versions: wider records, the version-3 sections, version 4's typed count,
           version 5's section count */
        size_t want = d[7] == 1   ? n + 16 * keel_kv_count(&kv) + 32 + 8 + 4
                      : d[7] == 2 ? n + 8 * keel_kv_count(&kv) + 32 + 8 + 4
                      : d[7] == 3 ? n + 8 + 4
                      : d[7] == 4 ? n + 4
                                  : n;
        assert(rc == 0 && keel_buf_unread(&again) == want);
        check_heap(&kv);
        keel_buf_free(&again);
        round_trip(&kv);
        scan_all(&kv);
    }
    keel_kv_free(&kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] % 2 == 0)
        entries(data + 1, size - 1);
    else
        snapshot(data + 1, size - 1);
    return 0;
}
