/* apstore.c - durable replica store of the AP keyspace (see apstore.h). */
#include "runtime/apstore_int.h"

#include "base/buf.h"
#include "base/bytes.h"
#include "base/hash.h"
#include "base/map.h"
#include "core/applace.h"
#include "runtime/clock.h"
#include "runtime/snapfile.h"
#include "runtime/wal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Bytes a record of payload n takes in the log (runtime/wal.h: header, type, padding to 8). */
static uint64_t wal_rec_bytes(size_t n)
{
    return (KEEL_WAL_RECORD_HEADER_BYTES + 1u + (uint64_t)n + 7u) & ~(uint64_t)7;
}

/* Every record goes through here, so log_bytes counts what a restart reads. */
int keel__aps_log_append(keel_apstore_t *s, uint8_t type, const void *p, size_t n)
{
    int rc = keel_wal_append(s->wal, type, p, n, NULL);
    if (rc == 0)
        s->log_bytes += wal_rec_bytes(n);
    return rc;
}

/* Puts the empty set `fresh` in place of the set of dropped keys (a new incarnation). */
static void dropped_swap(keel_apstore_t *s, keel_map_t *fresh)
{
    s->live_bytes -= SNAP_REC_BYTES(8) * s->dropped.count;
    keel_map_free(&s->dropped, NULL);
    s->dropped = *fresh;
    if (s->dropped_all)
        s->live_bytes -= SNAP_REC_BYTES(1);
    s->dropped_all = 0;
}

/* From now until the next incarnation every key counts as dropped: the set could not take one
 * more (full, or no memory). Costs at most one renewal, never a reissued dot. */
static void dropped_all_set(keel_apstore_t *s)
{
    if (!s->dropped_all)
        s->live_bytes += SNAP_REC_BYTES(1);
    s->dropped_all = 1;
}

/* Empties the set of dropped keys (replay of an incarnation record): 0, or KEEL_ENOMEM. */
static int dropped_clear(keel_apstore_t *s)
{
    if (s->dropped.count == 0 && !s->dropped_all)
        return 0;
    keel_map_t fresh;
    int rc = keel_map_init(&fresh, 64, KEEL_APSTORE_DROPPED_MAX, MAP_SEED_DROPPED);
    if (rc == 0)
        dropped_swap(s, &fresh);
    return rc;
}

/* Adds a dropped key's hash: 0 (added, or there), 1 (the set is full), KEEL_ENOMEM. */
static int dropped_add(keel_apstore_t *s, const uint8_t h[8])
{
    if (keel_map_get(&s->dropped, h, 8))
        return 0;
    if (s->dropped.count >= KEEL_APSTORE_DROPPED_MAX)
        return 1;
    if (keel_map_put(&s->dropped, h, 8, (void *)1, NULL) < 0)
        return KEEL_ENOMEM;
    s->live_bytes += SNAP_REC_BYTES(8);
    return 0;
}

static void dropped_key(const void *key, size_t key_len, uint8_t out[8])
{
    keel_put_u64(out, keel_hash64(key, key_len, 0x6b65656c64726f70ull));
}

static void entry_free(void *p)
{
    entry_t *e = p;
    keel_apval_free(&e->v);
    free(e);
}

/* Folds v into key's entry in memory; *out gets the entry. Nothing changes on error. */
static int fold(keel_apstore_t *s, const void *key, size_t key_len, const keel_apval_t *v,
                size_t rec_bytes, entry_t **out, int *changed)
{
    void **slot = keel_map_get(&s->map, key, key_len);
    entry_t *e = slot ? *slot : NULL;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return KEEL_ENOMEM;
        int rc = keel_apval_copy(&e->v, v);
        if (rc == 0)
            rc = keel_map_put(&s->map, key, key_len, e, NULL);
        if (rc < 0) {
            if (e->v.kind)
                keel_apval_free(&e->v);
            free(e);
            return rc;
        }
        *changed = 1;
    } else {
        keel_apval_t next;
        int rc = keel_apval_copy(&next, &e->v);
        if (rc == 0 && (rc = keel_apval_merge(&next, v)) < 0)
            keel_apval_free(&next);
        if (rc < 0)
            return rc;
        *changed = keel_apval_digest(&next) != keel_apval_digest(&e->v);
        keel_apval_free(&e->v);
        e->v = next;
    }
    uint64_t item = keel_merkle_item(key, key_len, keel_apval_digest(&e->v));
    keel_merkle_update(&s->tree, keel_applace_key_hash(key, key_len), e->item, item);
    if (s->observe && item != e->item)
        s->observe(s->observe_arg, key, key_len, e->item, item);
    e->item = item;
    s->live_bytes += SNAP_REC_BYTES(rec_bytes) - e->rec_bytes;
    e->rec_bytes = (uint32_t)SNAP_REC_BYTES(rec_bytes);
    *out = e;
    return 0;
}

/* The entry of the key a hint key (u64 home | key) names, or NULL. */
static entry_t *hint_entry(keel_apstore_t *s, const uint8_t *hk, size_t hk_len)
{
    void **slot = keel_map_get(&s->map, hk + 8, hk_len - 8);
    return slot ? *slot : NULL;
}

/* hk: u64 home | key. A fresh version either way. */
static int hint_set(keel_apstore_t *s, const uint8_t *hk, size_t hk_len)
{
    void **slot = keel_map_get(&s->hints, hk, hk_len);
    if (slot) {
        *(uint64_t *)*slot = ++s->hint_seq;
        return 0;
    }
    uint64_t *v = malloc(sizeof(*v));
    if (!v)
        return KEEL_ENOMEM;
    *v = ++s->hint_seq;
    int rc = keel_map_put(&s->hints, hk, hk_len, v, NULL);
    if (rc < 0) {
        free(v);
        return rc;
    }
    entry_t *e = hint_entry(s, hk, hk_len);
    if (e)
        e->hints++;
    s->live_bytes += SNAP_REC_BYTES(2 + hk_len);
    return 0;
}

static int hint_drop(keel_apstore_t *s, const uint8_t *hk, size_t hk_len)
{
    void *old;
    if (keel_map_del(&s->hints, hk, hk_len, &old) == 0) {
        free(old);
        entry_t *e = hint_entry(s, hk, hk_len);
        if (e && e->hints > 0)
            e->hints--;
        s->live_bytes -= SNAP_REC_BYTES(2 + hk_len);
    }
    return 0;
}

/* Removes key's entry if its Merkle item (a hash of its state) is still `item` and no hint names
 * it: 1 if removed, 0 if not. The trees and the observer see the key's item go to 0 (absent). */
static int forget(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item)
{
    void **slot = keel_map_get(&s->map, key, key_len);
    entry_t *e = slot ? *slot : NULL;
    if (!e || e->hints > 0 || e->item != item)
        return 0;
    keel_merkle_update(&s->tree, keel_applace_key_hash(key, key_len), e->item, 0);
    if (s->observe)
        s->observe(s->observe_arg, key, key_len, e->item, 0);
    void *old;
    int rc = keel_map_del(&s->map, key, key_len, &old);
    assert(rc == 0 && old == e);
    s->live_bytes -= e->rec_bytes;
    entry_free(e);
    return 1;
}

static size_t hint_key(uint8_t *hk, uint64_t home, const void *key, size_t key_len)
{
    keel_put_u64(hk, home);
    memcpy(hk + 8, key, key_len);
    return 8 + key_len;
}

/* The hint record: u64 home | u16 key_len | key. */
static int hint_record(keel_apstore_t *s, uint8_t type, uint64_t home, const void *key,
                       size_t key_len)
{
    uint8_t r[10 + KEEL_APSTORE_KEY_BYTES_MAX];
    keel_put_u64(r, home);
    keel_put_u16(r + 8, (uint16_t)key_len);
    memcpy(r + 10, key, key_len);
    return keel__aps_log_append(s, type, r, 10 + key_len);
}

static int replay(void *data, uint8_t type, const uint8_t *p, size_t n, uint64_t lsn)
{
    keel_apstore_t *s = data;
    s->bad_lsn = lsn + 1; /* cleared below once the record is read */
    if (type == REC_INCARNATION && n == 8) {
        s->incarnation = keel_get_u64(p);
        s->bad_lsn = 0;
        return dropped_clear(s); /* the old actor's dots are safe from the new one */
    }
    if (type == REC_DROPPED_OWN) {
        if (n == 1 && p[0] == DROPPED_ALL_MARK) {
            s->bad_lsn = 0;
            dropped_all_set(s);
            return 0;
        }
        if (n != 8)
            return KEEL_ECORRUPT;
        s->bad_lsn = 0;
        int rc = dropped_add(s, p);
        if (rc == 1) /* more than the set holds (a build with a larger bound): every key */
            dropped_all_set(s);
        return rc == 1 ? 0 : rc;
    }
    if (type == REC_MOVED_RING) {
        if (n < 1 || p[0] > KEEL_APSTORE_RING_IDS_MAX || n != 1 + 8u * p[0])
            return KEEL_ECORRUPT;
        s->ring_n = p[0];
        for (uint32_t i = 0; i < s->ring_n; i++)
            s->ring[i] = keel_get_u64(p + 1 + 8 * i);
        s->bad_lsn = 0;
        return 0;
    }
    if (type == REC_HINT || type == REC_HINT_DONE) {
        if (n < 10 || n > HINT_KEY_BYTES_MAX + 2 || keel_get_u16(p + 8) != n - 10 ||
            keel_get_u64(p) == 0)
            return KEEL_ECORRUPT;
        uint8_t hk[HINT_KEY_BYTES_MAX];
        memcpy(hk, p, 8);
        memcpy(hk + 8, p + 10, n - 10);
        s->bad_lsn = 0;
        return type == REC_HINT ? hint_set(s, hk, n - 2) : hint_drop(s, hk, n - 2);
    }
    if (type == REC_FORGET) { /* u16 key_len | key | u64 item */
        if (n < 10 || keel_get_u16(p) != n - 10 || n - 10 > KEEL_APSTORE_KEY_BYTES_MAX)
            return KEEL_ECORRUPT;
        s->bad_lsn = 0;
        (void)forget(s, p + 2, n - 10, keel_get_u64(p + n - 8)); /* as it did when logged */
        return 0;
    }
    if (type != REC_STATE || n < 2)
        return KEEL_ECORRUPT;
    size_t kl = keel_get_u16(p);
    if (kl > KEEL_APSTORE_KEY_BYTES_MAX || 2 + kl > n)
        return KEEL_ECORRUPT;
    keel_apval_t v;
    if (keel_apval_decode(p + 2 + kl, n - 2 - kl, &v, NULL) != 0)
        return KEEL_ECORRUPT; /* the CRC matched: a record we wrote and cannot read */
    s->bad_lsn = 0;
    entry_t *e;
    int changed;
    int rc = fold(s, p + 2, kl, &v, n, &e, &changed);
    keel_apval_free(&v);
    s->replayed++;
    return rc;
}

/* The log's records; those before the snapshot's LSN are in the snapshot already. */
static int replay_log(void *data, uint8_t type, const uint8_t *p, size_t n, uint64_t lsn)
{
    keel_apstore_t *s = data;
    if (lsn < s->snap_lsn)
        return 0;
    s->log_bytes += wal_rec_bytes(n);
    return replay(s, type, p, n, lsn);
}

/*
 * Sizes the (empty) maps for the snapshot's keys and hints before they are put. Needed, not an
 * optimisation: the snapshot lists them in the table order of the map it was written from (the
 * same hash seed), and putting keys in that order into a table that grows as it goes piles them
 * into long runs of linear probing (measured: 300,000 keys took 1.2 s to load instead of 0.3 s).
 */
static int presize(keel_apstore_t *s, const keel_snap_t *snap)
{
    size_t states = 0, hints = 0, dropped = 0, off = 0;
    while (off + SNAP_REC_HEAD_BYTES <= snap->data_bytes) {
        states += snap->data[off] == REC_STATE;
        hints += snap->data[off] == REC_HINT;
        dropped += snap->data[off] == REC_DROPPED_OWN;
        off += SNAP_REC_HEAD_BYTES + keel_get_u32(snap->data + off + 1);
    }
    assert(s->map.count == 0 && s->hints.count == 0);
    int rc = 0;
    if (states > 0) {
        keel_map_free(&s->map, entry_free);
        rc = keel_map_init(&s->map, states, KEEL_APSTORE_KEYS_MAX, MAP_SEED_KEYS);
    }
    if (rc == 0 && hints > 0) {
        keel_map_free(&s->hints, free);
        rc = keel_map_init(&s->hints, hints, KEEL_APSTORE_HINTS_MAX, MAP_SEED_HINTS);
    }
    if (rc == 0 && dropped > 0) {
        keel_map_free(&s->dropped, NULL);
        rc = keel_map_init(&s->dropped, dropped, KEEL_APSTORE_DROPPED_MAX, MAP_SEED_DROPPED);
    }
    return rc;
}

/* Applies the newest snapshot that verifies (none: 0, snap_lsn stays 0). A record that does not
 * decode in a file whose CRC matched is one we wrote and cannot read: KEEL_ECORRUPT. */
static int load_snapshot(keel_apstore_t *s, keel_errmsg_t *msg)
{
    keel_snap_t snap;
    int rc = keel_snap_load_latest(s->dir, &snap, msg);
    if (rc == KEEL_ENOTFOUND)
        return 0; /* the whole log is replayed; open checks that it is whole */
    if (rc != 0)
        return rc;
    rc = presize(s, &snap);
    size_t off = 0;
    while (rc == 0 && off < snap.data_bytes) {
        size_t left = snap.data_bytes - off;
        uint32_t n = left >= SNAP_REC_HEAD_BYTES ? keel_get_u32(snap.data + off + 1) : 0;
        if (left < SNAP_REC_HEAD_BYTES || n > left - SNAP_REC_HEAD_BYTES)
            rc = KEEL_ECORRUPT;
        else
            rc = replay(s, snap.data[off], snap.data + off + SNAP_REC_HEAD_BYTES, n, 0);
        if (rc != 0)
            keel_errf(msg, rc,
                      "apstore %s: snapshot at lsn %#llx: record at byte %zu does not "
                      "decode",
                      s->dir, (unsigned long long)snap.index, off);
        off += SNAP_REC_HEAD_BYTES + n;
    }
    s->bad_lsn = 0;
    s->snap_lsn = snap.index;
    s->log_bytes = KEEL_SNAP_HEADER_BYTES + snap.data_bytes;
    keel_snap_free(&snap);
    return rc;
}

/* Opens the log and replays it from the snapshot's LSN, which it must hold from there on. */
static int open_log(keel_apstore_t *s, keel_errmsg_t *msg)
{
    keel_wal_config_t cfg;
    keel_wal_config_default(&cfg);
    cfg.segment_bytes = 4u * 1024u * 1024u;
    cfg.record_bytes_max =
        2u * 1024u * 1024u + 4096u; /* a value of KEEL_AP_VALUE_BYTES_MAX and more */
    int rc = keel_wal_open(&s->wal, s->dir, &cfg, replay_log, s, msg);
    if (rc < 0) {
        if (s->bad_lsn)
            keel_errf(msg, rc, "apstore %s: record at lsn %#llx does not decode", s->dir,
                      (unsigned long long)(s->bad_lsn - 1));
        return rc;
    }
    uint64_t need_seq = s->snap_lsn ? s->snap_lsn >> 32 : 1;
    if (keel_wal_first_seq(s->wal) > need_seq) {
        rc = keel_errf(msg, KEEL_ECORRUPT,
                       "apstore %s: the log starts at segment %llu but the snapshot in use "
                       "(lsn %#llx, 0: none) needs it from segment %llu: newer snapshots "
                       "failed verification and the log they replaced is gone",
                       s->dir, (unsigned long long)keel_wal_first_seq(s->wal),
                       (unsigned long long)s->snap_lsn, (unsigned long long)need_seq);
        keel_wal_close(s->wal);
    }
    return rc;
}

int keel_apstore_open(keel_apstore_t **out, const char *dir, keel_errmsg_t *msg)
{
    keel_apstore_t *s = calloc(1, sizeof(*s));
    if (!s)
        return KEEL_ENOMEM;
    s->compact_log_bytes_min = KEEL_APSTORE_COMPACT_LOG_BYTES_MIN_DEFAULT;
    s->compact_ratio_pct = KEEL_APSTORE_COMPACT_RATIO_PCT_DEFAULT;
    int rc = KEEL_ENOMEM;
    if (!(s->dir = strdup(dir)))
        goto err_after_alloc;
    rc = keel_map_init(&s->map, 64, KEEL_APSTORE_KEYS_MAX, MAP_SEED_KEYS);
    if (rc < 0)
        goto err_after_dir;
    rc = keel_map_init(&s->hints, 16, KEEL_APSTORE_HINTS_MAX, MAP_SEED_HINTS);
    if (rc < 0)
        goto err_after_map;
    rc = keel_map_init(&s->dropped, 64, KEEL_APSTORE_DROPPED_MAX, MAP_SEED_DROPPED);
    if (rc < 0)
        goto err_after_hints;
    rc = keel_merkle_init(&s->tree, KEEL_APSTORE_MERKLE_DEPTH);
    if (rc < 0)
        goto err_after_dropped;
    rc = load_snapshot(s, msg);
    if (rc == 0)
        rc = open_log(s, msg);
    if (rc < 0)
        goto err_after_tree;
    if (s->incarnation == 0) { /* a new store: a new life */
        uint8_t b[8];
        s->incarnation = (uint64_t)keel_clock_unix_ms() | 1; /* wall clock: survives reboots */
        keel_put_u64(b, s->incarnation);
        rc = keel__aps_log_append(s, REC_INCARNATION, b, sizeof(b));
        if (rc == 0)
            rc = keel_wal_sync(s->wal, msg);
        if (rc != 0) {
            keel_wal_close(s->wal);
            goto err_after_tree;
        }
    }
    *out = s;
    return 0;
err_after_tree:
    keel_merkle_free(&s->tree);
err_after_dropped:
    keel_map_free(&s->dropped, NULL);
err_after_hints:
    keel_map_free(&s->hints, free);
err_after_map:
    keel_map_free(&s->map, entry_free);
err_after_dir:
    free(s->dir);
err_after_alloc:
    free(s);
    return rc;
}

void keel_apstore_close(keel_apstore_t *s)
{
    if (!s)
        return;
    if (keel_wal_pending_bytes(s->wal) > 0) /* handed-off hints, logged but not synced */
        (void)keel_wal_sync(s->wal, NULL);
    if (s->job) { /* its file, if written, is a valid snapshot the next open may load; the log
                     it would have released stays (replay skips what it covers) */
        keel__aps_job_join_free(s->job);
    }
    keel_wal_close(s->wal);
    keel_merkle_free(&s->tree);
    keel_map_free(&s->dropped, NULL);
    keel_map_free(&s->hints, free);
    keel_map_free(&s->map, entry_free);
    free(s->dir);
    free(s);
}

/* The log's sticky failure: once a write or sync failed, the memory may hold a state (merged
 * lazily) that never reached the disk, so nothing may be acknowledged as stored any more. */
int keel__aps_failed(keel_apstore_t *s, keel_errmsg_t *msg)
{
    uint64_t gen;
    return keel_wal_durable(s->wal, &gen, msg);
}

static int merge_common(keel_apstore_t *s, const void *key, size_t key_len, const keel_apval_t *v,
                        uint64_t home, int lazy, int *changed, keel_errmsg_t *msg)
{
    int frc = keel__aps_failed(s, msg);
    if (frc != 0)
        return frc;
    if (key_len > KEEL_APSTORE_KEY_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "key of %zu bytes (max %u)", key_len,
                         KEEL_APSTORE_KEY_BYTES_MAX);
    uint8_t hk[HINT_KEY_BYTES_MAX];
    size_t hk_len = home ? hint_key(hk, home, key, key_len) : 0;
    int new_hint = home && !keel_map_get(&s->hints, hk, hk_len);
    if (new_hint && s->hints.count >= KEEL_APSTORE_HINTS_MAX)
        return keel_errf(msg, KEEL_EFULL, "%u hints pending (max)", KEEL_APSTORE_HINTS_MAX);
    /* Merge a copy first: a refused merge (another kind, too many siblings) changes nothing. */
    void **slot = keel_map_get(&s->map, key, key_len);
    keel_apval_t next;
    int rc = slot ? keel_apval_copy(&next, &((entry_t *)*slot)->v) : keel_apval_copy(&next, v);
    if (rc == 0 && slot && (rc = keel_apval_merge(&next, v)) < 0)
        keel_apval_free(&next);
    if (rc < 0)
        return keel_errf(msg, rc, "merge refused: %s", keel_strerror(rc));
    int differs = !slot || keel_apval_digest(&next) != keel_apval_digest(&((entry_t *)*slot)->v);
    if (changed)
        *changed = differs;
    /* A state merged lazily and not synced yet must not be acknowledged as stored: a merge
     * that changes nothing still syncs what is pending. */
    int pending = !lazy && keel_wal_pending_bytes(s->wal) > 0;
    if (!differs && !home && !pending) {
        keel_apval_free(&next);
        return 0;
    }
    keel_buf_t rec;
    keel_buf_init(&rec, 0);
    if (differs) {
        uint8_t kl[2];
        keel_put_u16(kl, (uint16_t)key_len);
        rc = keel_buf_append(&rec, kl, 2);
        if (rc == 0)
            rc = keel_buf_append(&rec, key, key_len);
        if (rc == 0)
            rc = keel_apval_encode(&next, &rec);
        if (rc == 0)
            rc = keel__aps_log_append(s, REC_STATE, rec.data, rec.len);
    }
    if (rc == 0 && new_hint)
        rc = hint_record(s, REC_HINT, home, key, key_len);
    if (rc == 0 && (differs || new_hint || pending) && !lazy) {
        rc = keel_wal_sync(s->wal, msg); /* durable before anyone counts it */
        s->syncs++;
    }
    size_t rec_bytes = rec.len;
    keel_buf_free(&rec);
    if (rc == 0 && differs) {
        entry_t *e;
        int ch;
        rc = fold(s, key, key_len, &next, rec_bytes, &e, &ch); /* the state just logged */
        assert(rc != KEEL_ECONFLICT);
    }
    if (rc == 0 && home)
        rc = hint_set(s, hk, hk_len); /* a fresh version: hand the newer state off too */
    keel_apval_free(&next);
    return rc;
}

int keel_apstore_merge(keel_apstore_t *s, const void *key, size_t key_len, const keel_apval_t *v,
                       int *changed, keel_errmsg_t *msg)
{
    return merge_common(s, key, key_len, v, 0, 0, changed, msg);
}

int keel_apstore_merge_lazy(keel_apstore_t *s, const void *key, size_t key_len,
                            const keel_apval_t *v, int *changed, keel_errmsg_t *msg)
{
    return merge_common(s, key, key_len, v, 0, 1, changed, msg);
}

int keel_apstore_sync(keel_apstore_t *s, keel_errmsg_t *msg)
{
    if (keel_wal_pending_bytes(s->wal) == 0)
        return keel__aps_failed(s, msg); /* nothing pending is durable only if nothing failed */
    s->syncs++;
    return keel_wal_sync(s->wal, msg);
}

int keel_apstore_merge_hinted(keel_apstore_t *s, const void *key, size_t key_len,
                              const keel_apval_t *v, uint64_t home, int *changed,
                              keel_errmsg_t *msg)
{
    if (home == 0)
        return keel_errf(msg, KEEL_EINVAL, "hint for member 0");
    return merge_common(s, key, key_len, v, home, 0, changed, msg);
}

int keel_apstore_merge_hinted_lazy(keel_apstore_t *s, const void *key, size_t key_len,
                                   const keel_apval_t *v, uint64_t home, int *changed,
                                   keel_errmsg_t *msg)
{
    if (home == 0)
        return keel_errf(msg, KEEL_EINVAL, "hint for member 0");
    return merge_common(s, key, key_len, v, home, 1, changed, msg);
}

uint64_t keel_apstore_hint(const keel_apstore_t *s, uint64_t home, const void *key, size_t key_len)
{
    uint8_t hk[HINT_KEY_BYTES_MAX];
    if (key_len > KEEL_APSTORE_KEY_BYTES_MAX)
        return 0;
    void **slot = keel_map_get(&s->hints, hk, hint_key(hk, home, key, key_len));
    return slot ? *(uint64_t *)*slot : 0;
}

int keel_apstore_hint_done(keel_apstore_t *s, uint64_t home, const void *key, size_t key_len,
                           uint64_t version)
{
    if (keel_apstore_hint(s, home, key, key_len) != version || version == 0)
        return 0;
    int rc = hint_record(s, REC_HINT_DONE, home, key, key_len);
    if (rc != 0)
        return rc;
    uint8_t hk[HINT_KEY_BYTES_MAX];
    hint_drop(s, hk, hint_key(hk, home, key, key_len));
    return 1;
}

size_t keel_apstore_hints(const keel_apstore_t *s)
{
    return s->hints.count;
}

void keel_apstore_hints_each(const keel_apstore_t *s, size_t *pos, size_t max,
                             void (*fn)(void *arg, uint64_t home, const uint8_t *key, size_t len,
                                        uint64_t version),
                             void *arg)
{
    const uint8_t *k;
    size_t kl;
    void *v;
    for (size_t i = 0; i < max; i++) {
        if (!keel_map_next(&s->hints, pos, &k, &kl, &v)) {
            *pos = 0;
            return;
        }
        fn(arg, keel_get_u64(k), k + 8, kl - 8, *(uint64_t *)v);
    }
}

void keel_apstore_observe(keel_apstore_t *s, keel_apstore_observer_fn fn, void *arg)
{
    s->observe = fn;
    s->observe_arg = arg;
}

uint64_t keel_apstore_item(const void *key, size_t key_len, const keel_apval_t *v)
{
    return keel_merkle_item(key, key_len, keel_apval_digest(v));
}

const keel_apval_t *keel_apstore_get(const keel_apstore_t *s, const void *key, size_t key_len)
{
    void **slot = keel_map_get(&s->map, key, key_len);
    return slot ? &((entry_t *)*slot)->v : NULL;
}

size_t keel_apstore_count(const keel_apstore_t *s)
{
    return s->map.count;
}

const keel_merkle_t *keel_apstore_tree(const keel_apstore_t *s)
{
    return &s->tree;
}

uint64_t keel_apstore_replayed(const keel_apstore_t *s)
{
    return s->replayed;
}

uint64_t keel_apstore_syncs(const keel_apstore_t *s)
{
    return s->syncs;
}

void keel_apstore_each(const keel_apstore_t *s,
                       void (*fn)(void *arg, const uint8_t *key, size_t len, const keel_apval_t *v),
                       void *arg)
{
    size_t pos = 0, kl;
    const uint8_t *k;
    void *v;
    while (keel_map_next(&s->map, &pos, &k, &kl, &v))
        fn(arg, k, kl, &((entry_t *)v)->v);
}

uint64_t keel_apstore_incarnation(const keel_apstore_t *s)
{
    return s->incarnation;
}

int keel_apstore_renew_incarnation(keel_apstore_t *s, keel_errmsg_t *msg)
{
    int rc = keel__aps_failed(s, msg);
    if (rc != 0)
        return rc;
    /* The empty set first: once the incarnation is in force the old set must go with it. Kept,
     * its hashes would look logged under the new one: a drop of such a key would log no hash, and
     * a replay, which empties the set at the incarnation record, would not know the key. */
    keel_map_t fresh;
    if ((rc = keel_map_init(&fresh, 64, KEEL_APSTORE_DROPPED_MAX, MAP_SEED_DROPPED)) != 0)
        return keel_errf(msg, rc, "no memory for a new incarnation");
    uint64_t next = (uint64_t)keel_clock_unix_ms() | 1;
    if (next <= s->incarnation + 1) /* a clock behind the last one: still above it */
        next = s->incarnation + 2;
    uint8_t b[8];
    keel_put_u64(b, next);
    rc = keel__aps_log_append(s, REC_INCARNATION, b, sizeof(b));
    if (rc == 0) {
        s->syncs++;
        rc = keel_wal_sync(s->wal, msg);
    } else {
        keel_errf(msg, rc, "incarnation record not logged");
    }
    if (rc != 0) {
        keel_map_free(&fresh, NULL);
        return rc;
    }
    s->incarnation = next; /* only once durable: no dot goes out under an actor a crash undoes */
    dropped_swap(s, &fresh);
    return 0;
}

uint32_t keel_apstore_moved_ring(const keel_apstore_t *s, uint64_t *ids, uint32_t ids_max)
{
    uint32_t n = s->ring_n < ids_max ? s->ring_n : ids_max;
    memcpy(ids, s->ring, n * sizeof(ids[0]));
    return n;
}

int keel_apstore_set_moved_ring(keel_apstore_t *s, const uint64_t *ids, uint32_t n,
                                keel_errmsg_t *msg)
{
    if (n > KEEL_APSTORE_RING_IDS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "ring of %u members (max %u)", n,
                         KEEL_APSTORE_RING_IDS_MAX);
    uint8_t r[1 + 8 * KEEL_APSTORE_RING_IDS_MAX];
    r[0] = (uint8_t)n;
    for (uint32_t i = 0; i < n; i++)
        keel_put_u64(r + 1 + 8 * i, ids[i]);
    int rc = keel__aps_log_append(s, REC_MOVED_RING, r, 1 + 8 * n);
    if (rc == 0) {
        rc = keel_wal_sync(s->wal, msg); /* the hints the move queued are durable with it */
        s->syncs++;
    }
    if (rc == 0) {
        memcpy(s->ring, ids, n * sizeof(ids[0]));
        s->ring_n = n;
    }
    return rc;
}

int keel_apstore_hint_add(keel_apstore_t *s, uint64_t home, const void *key, size_t key_len)
{
    if (home == 0 || key_len > KEEL_APSTORE_KEY_BYTES_MAX)
        return KEEL_EINVAL;
    if (!keel_map_get(&s->map, key, key_len))
        return KEEL_ENOTFOUND;
    uint8_t hk[HINT_KEY_BYTES_MAX];
    size_t hk_len = hint_key(hk, home, key, key_len);
    int new_hint = !keel_map_get(&s->hints, hk, hk_len);
    if (new_hint && s->hints.count >= KEEL_APSTORE_MOVE_HINTS_MAX)
        return KEEL_EFULL;
    int rc = new_hint ? hint_record(s, REC_HINT, home, key, key_len) : 0;
    if (rc == 0)
        rc = hint_set(s, hk, hk_len);
    return rc == 0 ? new_hint : rc;
}

int keel_apstore_scan(const keel_apstore_t *s, size_t *pos, size_t max,
                      void (*fn)(void *arg, const uint8_t *key, size_t len), void *arg)
{
    const uint8_t *k;
    size_t kl;
    void *v;
    for (size_t i = 0; i < max; i++) {
        if (!keel_map_next(&s->map, pos, &k, &kl, &v))
            return 1;
        fn(arg, k, kl);
    }
    return *pos >= s->map.cap;
}

size_t keel_apstore_layout(const keel_apstore_t *s)
{
    return s->map.cap;
}

size_t keel_apstore_key_hints(const keel_apstore_t *s, const void *key, size_t key_len)
{
    void **slot = keel_map_get(&s->map, key, key_len);
    return slot ? ((entry_t *)*slot)->hints : 0;
}

static int forget_logged(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item, int own,
                         keel_errmsg_t *msg)
{
    int rc = keel__aps_failed(s, msg);
    if (rc != 0)
        return rc;
    if (key_len > KEEL_APSTORE_KEY_BYTES_MAX)
        return 0; /* never stored */
    void **slot = keel_map_get(&s->map, key, key_len);
    entry_t *e = slot ? *slot : NULL;
    if (!e || e->hints > 0 || e->item != item)
        return 0;
    if (own) { /* the key's hash first: the log never holds the forget without it */
        uint8_t h[8];
        dropped_key(key, key_len, h);
        if (!s->dropped_all && !keel_map_get(&s->dropped, h, 8)) {
            int full = s->dropped.count >= KEEL_APSTORE_DROPPED_MAX; /* then: every key */
            uint8_t all = DROPPED_ALL_MARK;
            if ((rc = keel__aps_log_append(s, REC_DROPPED_OWN, full ? &all : h, full ? 1 : 8)) != 0)
                return keel_errf(msg, rc, "dropped-key record not logged: %s", keel_strerror(rc));
            if (full || dropped_add(s, h) != 0)
                dropped_all_set(s); /* full, or no memory: replay adds it or counts every key */
        }
    }
    uint8_t r[2 + KEEL_APSTORE_KEY_BYTES_MAX + 8];
    keel_put_u16(r, (uint16_t)key_len);
    memcpy(r + 2, key, key_len);
    keel_put_u64(r + 2 + key_len, item);
    rc = keel__aps_log_append(s, REC_FORGET, r, 10 + key_len);
    if (rc != 0)
        return keel_errf(msg, rc, "forget record not logged: %s", keel_strerror(rc));
    rc = forget(s, key, key_len, item);
    assert(rc == 1);
    return 1;
}

int keel_apstore_forget(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item,
                        keel_errmsg_t *msg)
{
    return forget_logged(s, key, key_len, item, 0, msg);
}

int keel_apstore_forget_own(keel_apstore_t *s, const void *key, size_t key_len, uint64_t item,
                            keel_errmsg_t *msg)
{
    return forget_logged(s, key, key_len, item, 1, msg);
}

int keel_apstore_dropped_own(const keel_apstore_t *s, const void *key, size_t key_len)
{
    uint8_t h[8];
    dropped_key(key, key_len, h);
    return s->dropped_all || keel_map_get(&s->dropped, h, 8) != NULL;
}

size_t keel_apstore_dropped_count(const keel_apstore_t *s)
{
    return s->dropped.count;
}

uint64_t keel_apstore_key_item(const keel_apstore_t *s, const void *key, size_t key_len)
{
    void **slot = keel_map_get(&s->map, key, key_len);
    return slot ? ((entry_t *)*slot)->item : 0;
}
