/* kv_sm.h - the strings/KV store (core/kv) behind the state-machine interface. */
#ifndef KEEL_SM_KV_SM_H
#define KEEL_SM_KV_SM_H

#include "core/kv.h"
#include "sm/sm.h"

/* Keys (or leases) one housekeeping entry deletes at most: bounds the entry and its apply. */
#define KEEL_KV_SM_SWEEP_KEYS_MAX 1000u

/* The module's data: the store and its limits (a snapshot load builds a fresh store). */
typedef struct keel_kv_sm {
    keel_kv_t kv; /* the state: read it directly for feeds and WATCH (loop thread only) */
    keel_kv_config_t cfg;
    /* The registry's limits this node's flags ask for (reg_limits_set: some --reg-* flag was
       given). As leader, the node proposes them (KEEL.REG.LIMITS) while they differ from the
       replicated ones: every replica must judge registrations by the same limits. */
    keel_reg_config_t reg_limits;
    int reg_limits_set;
} keel_kv_sm_t;

extern const keel_sm_ops_t keel_kv_sm_ops;

int keel_kv_sm_init(keel_kv_sm_t *k, const keel_kv_config_t *cfg);
void keel_kv_sm_free(keel_kv_sm_t *k);
/* The registry limits to propose as leader (NULL: none, keep the replicated ones). */
void keel_kv_sm_set_reg_limits(keel_kv_sm_t *k, const keel_reg_config_t *limits);
/* The table and k, for the node engine (k stays the caller's). */
keel_sm_t keel_kv_sm(keel_kv_sm_t *k);

/* The largest entry a client command can make under cfg: a value at the limit, its key
 * and the encoding around them. */
uint64_t keel_kv_sm_entry_bytes_max(const keel_kv_config_t *cfg);

#endif
