/* kv_sm.c - the strings/KV store (core/kv) behind the state-machine interface. */
#include "sm/kv_sm.h"

#include "base/bytes.h"
#include "base/num.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t keel_kv_sm_entry_bytes_max(const keel_kv_config_t *cfg)
{
    return (uint64_t)cfg->value_bytes_max + cfg->key_bytes_max + 64 * 1024;
}

static int kv_encode(void *sm, uint64_t now_ms, int argc, const uint8_t *const *argv,
                     const size_t *lens, keel_buf_t *out)
{
    (void)sm;
    return keel_kv_entry_encode(out, now_ms, argc, argv, lens);
}

/* The entry's time: bytes 1..8 after the version byte (core/kv's entry format). */
static void kv_stamp(void *sm, uint8_t *entry, size_t len, uint64_t now_ms)
{
    if (len >= KEEL_KV_ENTRY_HEADER_BYTES && entry[0] == KEEL_KV_ENTRY_VERSION)
        keel_put_u64(entry + 1, now_ms);
}

static int kv_apply(void *sm, uint64_t index, const uint8_t *entry, size_t len, keel_buf_t *reply)
{
    return keel_kv_apply(&((keel_kv_sm_t *)sm)->kv, index, entry, len, reply);
}

static void kv_advance(void *sm, uint64_t index)
{
    keel_kv_advance(&((keel_kv_sm_t *)sm)->kv, index);
}

static uint64_t kv_applied_index(const void *sm)
{
    return keel_kv_applied_index(&((const keel_kv_sm_t *)sm)->kv);
}

static void kv_prefetch(void *sm, const uint8_t *entry, size_t len, int stage)
{
    keel_kv_prefetch(&((keel_kv_sm_t *)sm)->kv, entry, len, stage);
}

static int kv_read(void *sm, uint64_t now_ms, const uint8_t *entry, size_t len, keel_buf_t *reply)
{
    return keel_kv_read_entry(&((keel_kv_sm_t *)sm)->kv, now_ms, entry, len, reply);
}

static int kv_is_read(const void *sm, const uint8_t *entry, size_t len)
{
    (void)sm;
    return keel_kv_entry_is_read(entry, len);
}

static uint64_t kv_time_ms(const void *sm)
{
    return ((const keel_kv_sm_t *)sm)->kv.time_ms;
}

static uint64_t kv_state_bytes(const void *sm)
{
    return ((const keel_kv_sm_t *)sm)->kv.bytes;
}

static int kv_snapshot_write(const void *sm, keel_sm_sink_fn sink, void *sink_data)
{
    return keel_kv_snapshot_write(&((const keel_kv_sm_t *)sm)->kv, sink, sink_data);
}

static int kv_snapshot_load(void *sm, const uint8_t *p, size_t len, keel_errmsg_t *msg)
{
    keel_kv_sm_t *k = sm;
    keel_kv_t fresh;
    int rc = keel_kv_init(&fresh, &k->cfg);
    if (rc != 0)
        return rc;
    rc = keel_kv_snapshot_decode(&fresh, p, len, msg);
    if (rc != 0) {
        keel_kv_free(&fresh);
        return rc;
    }
    keel_kv_free(&k->kv);
    k->kv = fresh;
    return 0;
}

/* This node's --reg-* limits differ from the replicated ones: the leader proposes them. */
static int reg_limits_due(const keel_kv_sm_t *k)
{
    if (!k->reg_limits_set)
        return 0;
    keel_reg_config_t now = keel_kv_reg_limits(&k->kv);
    return !keel_reg_config_equal(&now, &k->reg_limits);
}

/* KEEL.REG.LIMITS with every limit, in keel_reg_limit_name order. */
static int reg_limits_encode(const keel_kv_sm_t *k, uint64_t now_ms, keel_buf_t *out)
{
    static const char cmd[] = "KEEL.REG.LIMITS";
    const uint8_t *argv[1 + 2 * KEEL_REG_LIMITS_COUNT];
    size_t lens[1 + 2 * KEEL_REG_LIMITS_COUNT];
    char vals[KEEL_REG_LIMITS_COUNT][KEEL_DEC_BYTES_MAX];
    argv[0] = (const uint8_t *)cmd;
    lens[0] = sizeof(cmd) - 1;
    for (size_t i = 0; i < KEEL_REG_LIMITS_COUNT; i++) {
        const char *name = keel_reg_limit_name(i);
        argv[1 + 2 * i] = (const uint8_t *)name;
        lens[1 + 2 * i] = strlen(name);
        lens[2 + 2 * i] = keel_fmt_u64(vals[i], keel_reg_limit_get(&k->reg_limits, i));
        argv[2 + 2 * i] = (const uint8_t *)vals[i];
    }
    return keel_kv_entry_encode(out, now_ms, 1 + 2 * KEEL_REG_LIMITS_COUNT, argv, lens);
}

void keel_kv_sm_set_reg_limits(keel_kv_sm_t *k, const keel_reg_config_t *limits)
{
    k->reg_limits_set = limits != NULL;
    k->reg_limits = limits ? *limits : keel_reg_config_default();
}

static uint64_t kv_next_deadline_ms(const void *sm)
{
    if (reg_limits_due(sm))
        return 0;
    const keel_kv_t *kv = &((const keel_kv_sm_t *)sm)->kv;
    uint64_t keys = keel_kv_next_deadline_ms(kv), leases = keel_kv_next_lease_deadline_ms(kv);
    uint64_t reg = keel_kv_next_registry_deadline_ms(kv);
    uint64_t retention = keel_kv_next_retention_ms(kv);
    uint64_t first = keys < leases ? keys : leases;
    first = reg < first ? reg : first;
    return first < retention ? first : retention;
}

/*
 * Expiry is decided by the leader and replicated as ordinary deletions: once its clock
 * passes the earliest key (or lease) deadline, it proposes a sweep of at most
 * KEEL_KV_SM_SWEEP_KEYS_MAX. A new leader inherits the deadlines and sweeps only when its
 * own clock passes them.
 */
static int kv_housekeeping(void *sm, uint64_t now_ms, keel_buf_t *out)
{
    if (reg_limits_due(sm)) /* first: a new leader's limits before anything it judges */
        return reg_limits_encode(sm, now_ms, out);
    const keel_kv_t *kv = &((keel_kv_sm_t *)sm)->kv;
    const char *what = NULL;
    if (keel_kv_next_deadline_ms(kv) <= now_ms)
        what = "KEEL.EXPIRE.SWEEP";
    else if (keel_kv_next_lease_deadline_ms(kv) <= now_ms)
        what = "KEEL.LEASE.SWEEP";
    else if (keel_kv_next_registry_deadline_ms(kv) <= now_ms)
        what = "KEEL.REG.SWEEP"; /* lapsed registry instances (core/kv_registry.c) */
    else if (keel_kv_next_retention_ms(kv) <= now_ms) /* streams' retention by age */
        return keel_kv_retention_sweep_encode(kv, now_ms, out);
    if (what == NULL)
        return 0;
    char now_s[KEEL_DEC_BYTES_MAX], max_s[KEEL_DEC_BYTES_MAX];
    size_t now_n = keel_fmt_u64(now_s, now_ms),
           max_n = keel_fmt_u64(max_s, KEEL_KV_SM_SWEEP_KEYS_MAX);
    const uint8_t *argv[3] = {(const uint8_t *)what, (const uint8_t *)now_s,
                              (const uint8_t *)max_s};
    size_t lens[3] = {strlen(what), now_n, max_n};
    return keel_kv_entry_encode(out, now_ms, 3, argv, lens);
}

const keel_sm_ops_t keel_kv_sm_ops = {
    .name = "kv",
    .encode = kv_encode,
    .stamp = kv_stamp,
    .apply = kv_apply,
    .advance = kv_advance,
    .applied_index = kv_applied_index,
    .prefetch = kv_prefetch,
    .read = kv_read,
    .is_read = kv_is_read,
    .time_ms = kv_time_ms,
    .state_bytes = kv_state_bytes,
    .snapshot_write = kv_snapshot_write,
    .snapshot_load = kv_snapshot_load,
    .next_deadline_ms = kv_next_deadline_ms,
    .housekeeping = kv_housekeeping,
};

int keel_kv_sm_init(keel_kv_sm_t *k, const keel_kv_config_t *cfg)
{
    memset(k, 0, sizeof(*k));
    k->cfg = *cfg;
    k->reg_limits = keel_reg_config_default();
    return keel_kv_init(&k->kv, cfg);
}

void keel_kv_sm_free(keel_kv_sm_t *k)
{
    keel_kv_free(&k->kv);
    memset(k, 0, sizeof(*k));
}

keel_sm_t keel_kv_sm(keel_kv_sm_t *k)
{
    return (keel_sm_t){&keel_kv_sm_ops, k};
}
