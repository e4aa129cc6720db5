/* registry_feed.c - the registry's change history: what KEEL.REG FEED streams (pure). */
#include "core/registry_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/*
 * A ring of events, oldest at hist_head (registry.h, "change history"). Each event owns one
 * block holding a copy of the instance: the struct, its tag and metadata arrays, then every
 * string's bytes (NUL-terminated), so a copy is one malloc and one free, and the history's
 * bytes are the blocks' sizes. Events are appended in index order (every change is applied
 * in log order), so "the first change after index i" is a binary search.
 */
#define RING_SLOTS_MIN 64u

static const char *const OP_NAMES[] = {"register", "update", "status", "deregister", "expire"};

const char *keel_reg_event_op_name(keel_reg_event_op_t op)
{
    assert(op >= KEEL_REG_EV_REGISTER && op <= KEEL_REG_EV_EXPIRE);
    return OP_NAMES[op];
}

void keel__reg_hist_init(keel_reg_t *reg, uint64_t first)
{
    reg->hist = NULL;
    reg->hist_head = reg->hist_len = reg->hist_cap = reg->hist_bytes = 0;
    reg->hist_first = first;
}

static keel_reg_event_t *slot(const keel_reg_t *reg, size_t pos)
{
    assert(pos < reg->hist_len);
    return &reg->hist[(reg->hist_head + pos) & (reg->hist_cap - 1)];
}

static void pop_oldest(keel_reg_t *reg)
{
    keel_reg_event_t *e = slot(reg, 0);
    reg->hist_bytes -= e->bytes;
    free(e->inst);
    e->inst = NULL;
    reg->hist_head = (reg->hist_head + 1) & (reg->hist_cap - 1);
    reg->hist_len--;
}

/* Makes hist_first at least first and drops every event older (whole indexes). */
static void drop_before(keel_reg_t *reg, uint64_t first)
{
    if (first > reg->hist_first)
        reg->hist_first = first;
    while (reg->hist_len > 0 && slot(reg, 0)->index < reg->hist_first)
        pop_oldest(reg);
}

void keel__reg_hist_free(keel_reg_t *reg)
{
    while (reg->hist_len > 0)
        pop_oldest(reg);
    free(reg->hist);
    assert(reg->hist_bytes == 0);
    keel__reg_hist_init(reg, reg->hist_first);
}

static int grow(keel_reg_t *reg)
{
    size_t cap = reg->hist_cap ? reg->hist_cap * 2 : RING_SLOTS_MIN;
    keel_reg_event_t *r = malloc(cap * sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    for (size_t i = 0; i < reg->hist_len; i++)
        r[i] = *slot(reg, i);
    free(reg->hist);
    reg->hist = r;
    reg->hist_cap = cap;
    reg->hist_head = 0;
    return 0;
}

/* Copies s into the block at *at (bytes and a NUL), pointing d at it. */
static void put_str(keel_reg_str_t *d, const keel_reg_str_t *s, uint8_t **at)
{
    d->p = *at;
    d->n = s->n;
    if (s->n)
        memcpy(*at, s->p, s->n);
    (*at)[s->n] = '\0';
    *at += s->n + 1;
}

/* A copy of in (service name first in the block) in one allocation of *bytes, or NULL. */
static keel_reg_instance_t *clone(const keel_reg_instance_t *in, keel_reg_str_t *service,
                                  size_t *bytes)
{
    size_t n = sizeof(*in) + (in->tags_n + in->meta_n) * sizeof(keel_reg_str_t);
    size_t strs = in->svc->name.n + in->id.n + in->address.n + in->version.n + in->output.n + 5;
    for (size_t i = 0; i < in->tags_n; i++)
        strs += in->tags[i].n + 1;
    for (size_t i = 0; i < in->meta_n; i++)
        strs += in->meta[i].n + 1;
    keel_reg_instance_t *c = malloc(n + strs);
    if (c == NULL)
        return NULL;
    *c = *in;
    c->svc = NULL;
    c->heap_pos = 0;
    c->tags = (keel_reg_str_t *)(c + 1);
    c->meta = c->tags + in->tags_n;
    uint8_t *at = (uint8_t *)c + n;
    put_str(service, &in->svc->name, &at);
    put_str(&c->id, &in->id, &at);
    put_str(&c->address, &in->address, &at);
    put_str(&c->version, &in->version, &at);
    put_str(&c->output, &in->output, &at);
    for (size_t i = 0; i < in->tags_n; i++)
        put_str(&c->tags[i], &in->tags[i], &at);
    for (size_t i = 0; i < in->meta_n; i++)
        put_str(&c->meta[i], &in->meta[i], &at);
    assert(at == (uint8_t *)c + n + strs);
    *bytes = n + strs;
    return c;
}

void keel__reg_hist_record(keel_reg_t *reg, keel_reg_event_op_t op, const keel_reg_instance_t *in,
                           uint64_t index)
{
    assert(reg->hist_len == 0 || slot(reg, reg->hist_len - 1)->index <= index);
    if (index < reg->hist_first)
        return; /* an earlier change of this index was given up: the rest goes too */
    keel_reg_event_t e = {.index = index, .op = op};
    e.inst = clone(in, &e.service, &e.bytes);
    while (reg->hist_len > 0 && (reg->hist_len >= KEEL_REG_HISTORY_EVENTS_MAX ||
                                 reg->hist_bytes + e.bytes > KEEL_REG_HISTORY_BYTES_MAX))
        drop_before(reg, slot(reg, 0)->index + 1);
    if (e.inst == NULL || index < reg->hist_first || e.bytes > KEEL_REG_HISTORY_BYTES_MAX ||
        (reg->hist_len == reg->hist_cap && grow(reg) != 0)) {
        /* the change is made and must not fail: the history gives this index up instead */
        free(e.inst);
        drop_before(reg, index + 1);
        return;
    }
    reg->hist[(reg->hist_head + reg->hist_len) & (reg->hist_cap - 1)] = e;
    reg->hist_len++;
    reg->hist_bytes += e.bytes;
}

uint64_t keel_reg_history_oldest(const keel_reg_t *reg)
{
    return reg->hist_first;
}

size_t keel_reg_history_len(const keel_reg_t *reg)
{
    return reg->hist_len;
}

int keel_reg_history_seek(const keel_reg_t *reg, uint64_t after, size_t *pos)
{
    if (after + 1 < reg->hist_first)
        return KEEL_ERANGE;
    size_t lo = 0, hi = reg->hist_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (slot(reg, mid)->index <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return 0;
}

const keel_reg_event_t *keel_reg_history_at(const keel_reg_t *reg, size_t pos)
{
    return slot(reg, pos);
}
