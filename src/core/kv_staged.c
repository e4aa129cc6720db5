/* kv_staged.c - a large SET value replicated in pieces: KEEL.STAGE, KEEL.STAGE.SET,
   KEEL.STAGE.DROP (the server sends them; no client does). */
#include "core/kv_cmd_int.h"

#include "base/bytes.h"
#include "base/num.h"

#include <stdlib.h>
#include <string.h>

/*
 * One Raft entry holding a 63 MiB value costs every node a turn of its loop as long as the
 * value takes to copy, several times over (encode, log, WAL, peer frames, apply), and a
 * leader that spends a second in one turn sends no heartbeat meanwhile. So the server
 * (server/staged.c) sends a large SET as pieces of KEEL_KV_STAGE_PIECE_BYTES, each an
 * entry of its own, then one entry that sets the key:
 *
 *   KEEL.STAGE id key total offset bytes   writes bytes at offset of staged value `id`
 *                                          (made, zeroed, by its first piece); idempotent
 *   KEEL.STAGE.SET key id [SET options]    SET key <the staged value> [options], then the
 *                                          staged value is gone (whatever SET answered)
 *   KEEL.STAGE.DROP id                     forgets a staged value (a SET that gave up)
 *
 * The staged values are state like any other: every node builds them from the same
 * entries, snapshots carry them (kv_snap.c's section 3), and the SET sees exactly the value
 * the client sent or refuses (a piece missing). A piece may apply twice (the server sends
 * it again after an unknown outcome): it writes the same bytes at the same place.
 *
 * Leftovers. A server that loses its client or its leader mid-way sends KEEL.STAGE.DROP;
 * one that crashes cannot. So a staged value untouched for KEEL_KV_STAGE_IDLE_MS of entry
 * time (the leader's clock stamped on the entries, the same on every node) is dropped by
 * the next KEEL.STAGE* entry or by the leader's KEEL.EXPIRE.SWEEP, which its deadline
 * brings (keel_kv_next_deadline_ms counts it), and at most KEEL_KV_STAGES_MAX exist at once: past
 * it a new one is refused (its SET answers the error), never an old one evicted.
 */

struct keel__kv_staged {
    uint64_t id;
    uint64_t total;
    uint64_t touched_ms; /* entry time of its last piece */
    /* the key's entry to be, built in place: its key written, its value area (total bytes)
       filled piece by piece (calloc: pages appear as pieces land); SET takes the block as the
       key's entry, so the value is never copied again */
    keel__kv_entry_t *block;
    uint8_t *have;    /* a bit per piece */
    uint32_t missing; /* pieces not written yet */
};

static uint8_t *value_of(const keel__kv_staged_t *s)
{
    return keel__kv_val(s->block);
}

/* A new block for key and a value of total bytes; NULL on ENOMEM. */
static keel__kv_entry_t *block_new(const uint8_t *key, size_t key_len, uint64_t total)
{
    void *b = calloc(1, KEEL__KV_ENTRY_HEADER_BYTES + key_len + (size_t)total);
    if (b == NULL)
        return NULL;
    keel__kv_entry_t *e = keel__kv_entry_init(b, key_len, (size_t)total);
    memcpy(e->data, key, key_len);
    return e;
}

static int key_is(const keel__kv_staged_t *s, const uint8_t *key, size_t len)
{
    return s->block->key_len == len && memcmp(keel__kv_key(s->block), key, len) == 0;
}

static uint32_t pieces_of(uint64_t total)
{
    return (uint32_t)((total + KEEL_KV_STAGE_PIECE_BYTES - 1) / KEEL_KV_STAGE_PIECE_BYTES);
}

static void staged_free(keel__kv_staged_t *s)
{
    free(s->block);
    free(s->have);
    memset(s, 0, sizeof(*s));
}

/* Removes slot i (order is not kept: nothing depends on it). */
static void remove_at(keel_kv_t *kv, size_t i)
{
    staged_free(&kv->staged[i]);
    kv->staged[i] = kv->staged[--kv->staged_n];
    memset(&kv->staged[kv->staged_n], 0, sizeof(kv->staged[0]));
}

void keel__kv_staged_free(keel_kv_t *kv)
{
    while (kv->staged_n > 0)
        remove_at(kv, kv->staged_n - 1);
    free(kv->staged);
    kv->staged = NULL;
}

static int idle(const keel__kv_staged_t *s, uint64_t now)
{
    return now > s->touched_ms && now - s->touched_ms > KEEL_KV_STAGE_IDLE_MS;
}

/* Drops what was left idle (entry time). A change of the state like any other: a command
   sweeps once nothing can fail any more (KEEL_ENOMEM must leave the state as it was). */
static void sweep(keel_kv_t *kv, uint64_t now)
{
    keel__kv_staged_sweep(kv, now);
}

uint64_t keel__kv_staged_next_deadline(const keel_kv_t *kv)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < kv->staged_n; i++) {
        uint64_t t = kv->staged[i].touched_ms + KEEL_KV_STAGE_IDLE_MS + 1;
        if (t < next)
            next = t;
    }
    return next;
}

void keel__kv_staged_sweep(keel_kv_t *kv, uint64_t now)
{
    for (size_t i = 0; i < kv->staged_n;) {
        if (idle(&kv->staged[i], now))
            remove_at(kv, i);
        else
            i++;
    }
}

static keel__kv_staged_t *find(keel_kv_t *kv, uint64_t id)
{
    for (size_t i = 0; i < kv->staged_n; i++)
        if (kv->staged[i].id == id)
            return &kv->staged[i];
    return NULL;
}

/* The staged value `id` as the sweep at `now` leaves it: NULL if absent or idle. */
static keel__kv_staged_t *find_live(keel_kv_t *kv, uint64_t id, uint64_t now)
{
    keel__kv_staged_t *s = find(kv, id);
    return s != NULL && !idle(s, now) ? s : NULL;
}

size_t keel_kv_staged_count(const keel_kv_t *kv)
{
    return kv->staged_n;
}

uint64_t keel_kv_staged_bytes(const keel_kv_t *kv)
{
    uint64_t n = 0;
    for (size_t i = 0; i < kv->staged_n; i++)
        n += kv->staged[i].total;
    return n;
}

static int parse_u64(const call_t *c, size_t i, uint64_t *v)
{
    int64_t t;
    if (keel_parse_i64(c->argv[i], c->lens[i], &t) != 0 || t < 0)
        return r_err(c->reply, ERR_NOT_INT);
    *v = (uint64_t)t;
    return 0;
}

/* KEEL.STAGE id key total offset bytes: the arguments alone. */
int keel__kvc_stage_syntax(const call_t *c)
{
    uint64_t id = 0, total = 0, off = 0; /* set by parse_u64 once the syntax check passed */
    int rc;
    if ((rc = parse_u64(c, 1, &id)) != 0 || (rc = parse_u64(c, 3, &total)) != 0 ||
        (rc = parse_u64(c, 4, &off)) != 0)
        return rc;
    if (total == 0 || off % KEEL_KV_STAGE_PIECE_BYTES != 0 || off >= total)
        return r_err(c->reply, "ERR keel: a staged piece's offset is not a piece's start");
    uint64_t want =
        total - off < KEEL_KV_STAGE_PIECE_BYTES ? total - off : KEEL_KV_STAGE_PIECE_BYTES;
    if (c->lens[5] != want)
        return r_err(c->reply, "ERR keel: a staged piece has the wrong length");
    return 0;
}

int keel__kvc_cmd_stage(const call_t *c)
{
    int rc = keel__kvc_stage_syntax(c);
    if (rc != 0)
        return rc;
    keel_kv_t *kv = c->w;
    uint64_t id = 0, total = 0, off = 0; /* set by parse_u64 once the syntax check passed */
    parse_u64(c, 1, &id);
    parse_u64(c, 3, &total);
    parse_u64(c, 4, &off);
    if ((rc = keel__kvc_check_sizes(c, c->lens[2], (size_t)total)) != 0)
        return rc;
    keel__kv_staged_t n = {0};
    if (find_live(kv, id, c->now) == NULL) { /* a new value: its memory before any change */
        if (kv->staged == NULL &&
            (kv->staged = calloc(KEEL_KV_STAGES_MAX, sizeof(*kv->staged))) == NULL)
            return KEEL_ENOMEM;
        n = (keel__kv_staged_t){.id = id, .total = total, .missing = pieces_of(total)};
        n.block = block_new(c->argv[2], c->lens[2], total);
        n.have = calloc(1, (n.missing + 7) / 8);
        if (n.block == NULL || n.have == NULL) {
            staged_free(&n);
            return KEEL_ENOMEM;
        }
    }
    sweep(kv, c->now);
    keel__kv_staged_t *s = find(kv, id);
    if (s == NULL) {
        if (kv->staged_n >= KEEL_KV_STAGES_MAX) {
            staged_free(&n);
            return r_err(c->reply, "ERR keel: too many large values being written at once; "
                                   "retry");
        }
        s = &kv->staged[kv->staged_n++];
        *s = n;
    } else if (s->total != total || !key_is(s, c->argv[2], c->lens[2])) {
        return r_err(c->reply, "ERR keel: a staged piece does not match its value");
    }
    uint32_t piece = (uint32_t)(off / KEEL_KV_STAGE_PIECE_BYTES);
    memcpy(value_of(s) + off, c->argv[5], c->lens[5]);
    if (!(s->have[piece / 8] & (1u << (piece % 8)))) {
        s->have[piece / 8] |= (uint8_t)(1u << (piece % 8));
        s->missing--;
    }
    if (c->now > s->touched_ms)
        s->touched_ms = c->now;
    r_ok(c->reply);
    return 0;
}

/* KEEL.STAGE.SET key id [SET options] */
int keel__kvc_stage_set_syntax(const call_t *c)
{
    uint64_t id;
    return parse_u64(c, 2, &id);
}

int keel__kvc_cmd_stage_set(const call_t *c)
{
    uint64_t id;
    int rc = parse_u64(c, 2, &id);
    if (rc != 0)
        return rc;
    keel_kv_t *kv = c->w;
    keel__kv_staged_t *s = find_live(kv, id, c->now);
    if (s == NULL || s->missing > 0 || !key_is(s, c->argv[1], c->lens[1])) {
        sweep(kv, c->now);
        if ((s = find(kv, id)) != NULL)
            remove_at(kv, (size_t)(s - kv->staged));
        return r_err(c->reply, "ERR keel: the large value's pieces did not all arrive (the "
                               "leader changed or the server restarted); retry the SET");
    }
    /* SET key <value> options...: the same arguments with the staged value in place */
    size_t argc = c->argc;
    const uint8_t **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    if (argv == NULL || lens == NULL) {
        free(argv);
        free(lens);
        return KEEL_ENOMEM;
    }
    argv[0] = (const uint8_t *)"SET";
    lens[0] = 3;
    argv[1] = c->argv[1];
    lens[1] = c->lens[1];
    argv[2] = value_of(s);
    lens[2] = (size_t)s->total;
    for (size_t i = 3; i < argc; i++) {
        argv[i] = c->argv[i];
        lens[i] = c->lens[i];
    }
    call_t in = *c;
    in.argv = argv;
    in.lens = lens;
    kv->adopt = s->block; /* SET takes it as the key's entry instead of copying the value */
    rc = keel__kvc_cmd_set(&in);
    if (kv->adopt == NULL)
        s->block = NULL; /* the key's now */
    kv->adopt = NULL;
    free(argv);
    free(lens);
    if (rc == KEEL_ENOMEM && s->block != NULL)
        return rc; /* nothing changed (not even the sweep): the staged value stays */
    remove_at(kv, (size_t)(s - kv->staged));
    sweep(kv, c->now);
    return rc;
}

/* KEEL.STAGE.DROP id */
int keel__kvc_stage_drop_syntax(const call_t *c)
{
    uint64_t id;
    return parse_u64(c, 1, &id);
}

int keel__kvc_cmd_stage_drop(const call_t *c)
{
    uint64_t id;
    int rc = parse_u64(c, 1, &id);
    if (rc != 0)
        return rc;
    keel_kv_t *kv = c->w;
    sweep(kv, c->now);
    keel__kv_staged_t *s = find(kv, id);
    if (s != NULL)
        remove_at(kv, (size_t)(s - kv->staged));
    r_int(c->reply, s != NULL);
    return 0;
}

/* ---- snapshots: section 3 of kv_snap.c ---------------------------------------------
 * u32 count | count x (u64 id | u64 total | u64 touched_ms | u32 key_len | key |
 * have bitmap (pieces / 8 rounded up) | total bytes). */

uint64_t keel__kv_staged_snap_bytes(const keel_kv_t *kv)
{
    uint64_t n = 4;
    for (size_t i = 0; i < kv->staged_n; i++) {
        const keel__kv_staged_t *s = &kv->staged[i];
        n += 28 + s->block->key_len + (pieces_of(s->total) + 7) / 8 + s->total;
    }
    return n;
}

int keel__kv_staged_snap_write(const keel_kv_t *kv, keel_kv_sink_fn sink, void *data)
{
    uint8_t h[28];
    keel_put_u32(h, (uint32_t)kv->staged_n);
    int rc = sink(data, h, 4);
    for (size_t i = 0; rc == 0 && i < kv->staged_n; i++) {
        const keel__kv_staged_t *s = &kv->staged[i];
        keel_put_u64(h, s->id);
        keel_put_u64(h + 8, s->total);
        keel_put_u64(h + 16, s->touched_ms);
        keel_put_u32(h + 24, s->block->key_len);
        if ((rc = sink(data, h, sizeof(h))) == 0 &&
            (rc = sink(data, keel__kv_key(s->block), s->block->key_len)) == 0 &&
            (rc = sink(data, s->have, (pieces_of(s->total) + 7) / 8)) == 0)
            rc = sink(data, value_of(s), (size_t)s->total);
    }
    return rc;
}

int keel__kv_staged_snap_load(keel_kv_t *kv, const uint8_t *p, size_t len, keel_errmsg_t *msg)
{
    if (len < 4)
        return keel_errf(msg, KEEL_EPROTO, "staged values: section truncated");
    uint32_t n = keel_get_u32(p);
    size_t pos = 4;
    /* none is never written (the section is left out), and ids are unique: anything else
       would decode to a state that encodes differently */
    if (n == 0 || n > KEEL_KV_STAGES_MAX)
        return keel_errf(msg, KEEL_EPROTO, "staged values: %u (1 to %u)", n, KEEL_KV_STAGES_MAX);
    if ((kv->staged = calloc(KEEL_KV_STAGES_MAX, sizeof(*kv->staged))) == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "out of memory for staged values");
    for (uint32_t i = 0; i < n; i++) {
        if (len - pos < 28)
            return keel_errf(msg, KEEL_EPROTO, "staged value %u truncated", i);
        keel__kv_staged_t s = {.id = keel_get_u64(p + pos),
                               .total = keel_get_u64(p + pos + 8),
                               .touched_ms = keel_get_u64(p + pos + 16)};
        uint32_t key_len = keel_get_u32(p + pos + 24);
        pos += 28;
        if (find(kv, s.id) != NULL)
            return keel_errf(msg, KEEL_EPROTO, "staged value %u: id twice", i);
        if (s.total == 0 || s.total > kv->cfg.value_bytes_max || key_len > kv->cfg.key_bytes_max)
            return keel_errf(msg, KEEL_EPROTO, "staged value %u: sizes out of range", i);
        uint32_t pieces = pieces_of(s.total);
        size_t have_bytes = (pieces + 7) / 8;
        if (len - pos < (uint64_t)key_len + have_bytes + s.total)
            return keel_errf(msg, KEEL_EPROTO, "staged value %u truncated", i);
        s.block = block_new(p + pos, key_len, s.total);
        s.have = malloc(have_bytes);
        if (s.block == NULL || s.have == NULL) {
            staged_free(&s);
            return keel_errf(msg, KEEL_ENOMEM, "out of memory for staged values");
        }
        pos += key_len;
        memcpy(s.have, p + pos, have_bytes);
        pos += have_bytes;
        memcpy(value_of(&s), p + pos, (size_t)s.total);
        pos += (size_t)s.total;
        s.missing = pieces;
        for (uint32_t k = 0; k < pieces; k++)
            s.missing -= (s.have[k / 8] >> (k % 8)) & 1u;
        kv->staged[kv->staged_n++] = s;
    }
    if (pos != len)
        return keel_errf(msg, KEEL_EPROTO, "staged values: %zu bytes left over", len - pos);
    return 0;
}
