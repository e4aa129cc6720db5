/* registry_int.h - what registry.c, registry_feed.c and registry_snap.c share (internal). */
#ifndef KEEL_CORE_REGISTRY_INT_H
#define KEEL_CORE_REGISTRY_INT_H

#include "core/registry.h"

int keel__reg_str_set(keel_reg_str_t *s, const uint8_t *p, size_t n);
void keel__reg_str_free(keel_reg_str_t *s);
/* Byte order, then length: the order of names and ids everywhere. */
int keel__reg_bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn);

/* The definition part of an instance (no health), built whole before anything links it. */
keel_reg_instance_t *keel__reg_inst_new(const keel_reg_spec_t *sp);
void keel__reg_inst_free(keel_reg_instance_t *in);
/* The instance with that id, lapsed or not, or NULL. */
keel_reg_instance_t *keel__reg_find_any(const keel_reg_t *reg, const uint8_t *id, size_t n);

/* The limits a registration must pass, judged by the spec alone. 0 or an error with text. */
int keel__reg_check_spec(const keel_reg_config_t *c, const keel_reg_spec_t *sp, keel_errmsg_t *msg);
/* The counts a new instance must pass in service s (ignoring one instance leaving). */
int keel__reg_check_room(const keel_reg_t *reg, const keel_reg_spec_t *sp,
                         const keel_reg_service_t *s, const keel_reg_instance_t *leaving,
                         keel_errmsg_t *msg);
/* Links a new instance into service s (a new service at svc_at when s is NULL). */
int keel__reg_link_new(keel_reg_t *reg, keel_reg_service_t *s, size_t svc_at,
                       keel_reg_instance_t *in, const keel_reg_spec_t *sp, uint64_t index);
/* Recomputes the instance's deadline from its TTL and critical timeout; fixes the heap. */
void keel__reg_inst_deadline(keel_reg_t *reg, keel_reg_instance_t *in, int linked);

/* ---- the change history (registry_feed.c) ---- */

/* An empty history; changes at index >= first will be held. */
void keel__reg_hist_init(keel_reg_t *reg, uint64_t first);
void keel__reg_hist_free(keel_reg_t *reg);
/* Records a change of the linked instance in (its service's name taken from in->svc). A
 * copy that cannot be made (no memory) drops the history up to this index instead. */
void keel__reg_hist_record(keel_reg_t *reg, keel_reg_event_op_t op, const keel_reg_instance_t *in,
                           uint64_t index);

#endif
