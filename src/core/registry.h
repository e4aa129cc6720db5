/* registry.h - the service registry: instances with TTLs, health with flap damping (pure). */
#ifndef KEEL_CORE_REGISTRY_H
#define KEEL_CORE_REGISTRY_H

#include "base/err.h"
#include "base/map.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The registry keel server replicates (docs/registry.md). An instance is a service name,
 * an instance id (unique in the whole registry, as Consul's agent service ids), an
 * address, a port, tags, metadata, weights, a version string and a health status
 * (passing, warning, critical) with the last check output.
 *
 * It is a pure core like core/kv: every change is a function of the entry that makes it
 * (the leader's clock `now_ms` and the Raft index `index` travel in the entry), so every
 * replica derives the same registry from the log. Nothing here reads a clock.
 *
 * Lifetimes. An instance registered with ttl_ms > 0 must be heard from (a heartbeat or a
 * check report) within ttl_ms, or it lapses. An instance whose status has been critical
 * for deregister_critical_after_ms (when > 0) lapses too. A lapsed instance is absent to
 * every read and write at once (a heartbeat cannot bring it back: it must register again);
 * it is removed from the state by keel_reg_sweep, which the leader proposes once its clock
 * passes keel_reg_next_deadline_ms (as expiry in core/kv). Deadlines are kept in the
 * replicated state rather than in core/kv's leases because an instance has two of them
 * (its TTL and the critical timeout) and removing an instance must move its service's
 * index: a lease sweep knows nothing of services.
 *
 * Flap damping. A report the other way from the current status (worse or better) counts;
 * the status changes only after failures_before_critical consecutive worse reports (or
 * success_before_passing consecutive better ones), to the last reported status. A report
 * equal to the status, or one the other way round, starts the count again. Each change of
 * status is a flip, counted per instance.
 *
 * Indexes. Every change to a service (an instance registered, changed, removed, or its
 * status flipped) sets the service's modify index to the Raft index of the entry; the
 * registry's index is the largest of them, removals included. Heartbeats and check
 * outputs alone change no index (they would wake every blocked watcher each TTL).
 */

/* Hard ceilings; the config may only lower them. */
#define KEEL_REG_NAME_BYTES_CEILING 512u     /* service name, instance id, version */
#define KEEL_REG_ADDRESS_BYTES_CEILING 1024u /* host name or address */
#define KEEL_REG_TAGS_CEILING 256u
#define KEEL_REG_META_BYTES_CEILING (64u * 1024u)
#define KEEL_REG_META_PAIRS_CEILING 512u
#define KEEL_REG_OUTPUT_BYTES_CEILING (64u * 1024u)
#define KEEL_REG_THRESHOLD_CEILING 1000u
#define KEEL_REG_WEIGHT_MAX 65535u
#define KEEL_REG_PORT_MAX 65535u
#define KEEL_REG_SERVICES_CEILING (1u << 20)
#define KEEL_REG_INSTANCES_CEILING (1u << 24)
/* keel_reg_next_deadline_ms when nothing has a deadline. */
#define KEEL_REG_NO_DEADLINE UINT64_MAX

typedef struct keel_reg_config {
    size_t services_max;              /* default 1024 */
    size_t instances_per_service_max; /* default 1024 */
    size_t instances_max;             /* in the whole registry, default 65536 */
    size_t tags_max;                  /* per instance, default 64 */
    size_t tag_bytes_max;             /* default 256 */
    size_t meta_bytes_max;            /* keys + values of one instance, default 4096 */
    size_t meta_pairs_max;            /* metadata keys of one instance, default 64 */
    size_t name_bytes_max;            /* service, id, version; default 256 */
    size_t address_bytes_max;         /* default 256 */
    size_t output_bytes_max;          /* check output kept (longer is cut), default 4096 */
    uint64_t ttl_ms_max;              /* TTL and deregister_critical_after, default 24 h */
    uint32_t threshold_max;           /* damping counts, default 100 */
} keel_reg_config_t;

keel_reg_config_t keel_reg_config_default(void);
/* Every limit at its ceiling (what a snapshot's instances are loaded under, see below). */
keel_reg_config_t keel_reg_config_ceiling(void);
int keel_reg_config_validate(const keel_reg_config_t *cfg, keel_errmsg_t *msg);
int keel_reg_config_equal(const keel_reg_config_t *a, const keel_reg_config_t *b);

/*
 * The limits as named fields, in one table: the order of KEEL.REG LIMITS' answer, of the
 * KEEL.REG.LIMITS entry's pairs and of the snapshot's limits block; the names are those of
 * keel server's --reg-NAME flags (with '-' for '_'). KEEL_REG_LIMITS_COUNT of them.
 */
#define KEEL_REG_LIMITS_COUNT 12u
const char *keel_reg_limit_name(size_t i);
uint64_t keel_reg_limit_get(const keel_reg_config_t *cfg, size_t i);
void keel_reg_limit_set(keel_reg_config_t *cfg, size_t i, uint64_t v);
/* The index of the limit called name (len bytes, '_' or '-' alike), or -1. */
int keel_reg_limit_find(const uint8_t *name, size_t len);

typedef enum keel_reg_status {
    KEEL_REG_PASSING = 0,
    KEEL_REG_WARNING = 1,
    KEEL_REG_CRITICAL = 2,
} keel_reg_status_t;

/* "passing", "warning", "critical". */
const char *keel_reg_status_name(keel_reg_status_t s);
/* 0 and *out for one of those names (any case), else KEEL_EINVAL. */
int keel_reg_status_parse(const uint8_t *p, size_t n, keel_reg_status_t *out);

/* An owned byte string (NUL-terminated for convenience; may contain NULs). */
typedef struct keel_reg_str {
    uint8_t *p;
    size_t n;
} keel_reg_str_t;

typedef struct keel_reg_service keel_reg_service_t;

/* One instance. Read-only to callers; valid until the next change to the registry. */
typedef struct keel_reg_instance {
    keel_reg_service_t *svc;
    keel_reg_str_t id, address, version, output;
    keel_reg_str_t *tags; /* tags_n */
    size_t tags_n;
    keel_reg_str_t *meta; /* meta_n pairs: key, value, key, value, ... */
    size_t meta_n;
    uint32_t port;
    uint32_t weight_passing, weight_warning;
    keel_reg_status_t status;
    int pending_dir;        /* +1 worse, -1 better, 0 none */
    uint32_t pending_count; /* consecutive reports that way */
    uint32_t success_before_passing, failures_before_critical;
    uint64_t flips;
    uint64_t ttl_ms, ttl_deadline_ms;    /* 0: no TTL */
    uint64_t dca_ms, critical_since_ms;  /* deregister_critical_after; 0: never / not */
    uint64_t create_index, modify_index; /* Raft indexes */
    uint64_t deadline_ms;                /* the earlier lapse, KEEL_REG_NO_DEADLINE */
    size_t heap_pos;                     /* in reg->heap while deadline_ms is set */
} keel_reg_instance_t;

/* A service: its instances sorted by id. Exists while it has instances. */
struct keel_reg_service {
    keel_reg_str_t name;
    keel_reg_instance_t **inst; /* owned array; the instances are the registry's */
    size_t n, cap;
    uint64_t create_index, modify_index;
};

/*
 * The change history the registry's feed (KEEL.REG FEED) reads: a ring of the newest
 * changes, each with a copy of the instance as the change left it (as it was, for a
 * removal), oldest first. Every change that moves an index is recorded (register, update,
 * status flip, deregister, expire); heartbeats and outputs alone are not. Bounded by
 * KEEL_REG_HISTORY_EVENTS_MAX events and KEEL_REG_HISTORY_BYTES_MAX bytes of copies; the
 * oldest index is dropped whole. Every change at an index >= hist_first is held. Not in
 * snapshots: a loaded registry's history starts after its index (nothing of the registry
 * changed between that index and the snapshot's).
 */
#define KEEL_REG_HISTORY_EVENTS_MAX 8192u
#define KEEL_REG_HISTORY_BYTES_MAX (16u * 1024u * 1024u)

typedef enum keel_reg_event_op {
    KEEL_REG_EV_REGISTER = 0,   /* a new instance (or one moved in from another service) */
    KEEL_REG_EV_UPDATE = 1,     /* its definition changed by a registration */
    KEEL_REG_EV_STATUS = 2,     /* its status flipped (after damping) */
    KEEL_REG_EV_DEREGISTER = 3, /* deregistered (or moved out to another service) */
    KEEL_REG_EV_EXPIRE = 4,     /* lapsed (TTL or critical timeout) and removed */
} keel_reg_event_op_t;

/* "register", "update", "status", "deregister", "expire". */
const char *keel_reg_event_op_name(keel_reg_event_op_t op);

typedef struct keel_reg_event {
    uint64_t index; /* the Raft index of the change */
    keel_reg_event_op_t op;
    keel_reg_str_t service;    /* points into inst's block */
    keel_reg_instance_t *inst; /* a copy in one block (svc NULL), owned by the history */
    size_t bytes;              /* the block's size */
} keel_reg_event_t;

typedef struct keel_reg {
    keel_reg_config_t cfg;
    keel_reg_service_t **svc; /* owned, sorted by name */
    size_t svc_n, svc_cap;
    keel_map_t by_id;           /* id -> keel_reg_instance_t* */
    keel_reg_instance_t **heap; /* owned: instances with a deadline, earliest first */
    size_t heap_n, heap_cap;
    size_t instances;
    uint64_t index; /* the registry's modify index */
    /* the change history (ring; hist_cap a power of two or 0) */
    keel_reg_event_t *hist;
    size_t hist_head, hist_len, hist_cap, hist_bytes;
    uint64_t hist_first;
} keel_reg_t;

/* cfg NULL: the defaults. 0, KEEL_EINVAL (bad cfg) or KEEL_ENOMEM. */
int keel_reg_init(keel_reg_t *reg, const keel_reg_config_t *cfg);
void keel_reg_free(keel_reg_t *reg);

/*
 * Replaces the limits (KEEL.REG.LIMITS). Only new requests are judged by them: what is
 * registered stays, even past a lowered limit. 0, or KEEL_EINVAL with text in msg.
 */
int keel_reg_set_config(keel_reg_t *reg, const keel_reg_config_t *cfg, keel_errmsg_t *msg);

/* What a registration says; every pointer is borrowed for the call. */
typedef struct keel_reg_spec {
    const uint8_t *service, *id, *address, *version;
    size_t service_len, id_len, address_len, version_len;
    uint32_t port;
    const uint8_t *const *tags; /* tags_n strings */
    const size_t *tag_lens;
    size_t tags_n;
    const uint8_t *const *meta; /* meta_n pairs: key, value, ... */
    const size_t *meta_lens;
    size_t meta_n;
    uint32_t weight_passing, weight_warning; /* 0: 1 */
    int status;                              /* a keel_reg_status_t, or -1: keep / passing */
    uint64_t ttl_ms;                         /* 0: none */
    uint64_t dca_ms;                         /* deregister_critical_after; 0: never */
    uint32_t success_before_passing, failures_before_critical; /* 0: 1 */
} keel_reg_spec_t;

/*
 * Registers, or replaces the definition of the live instance with that id (moving it to
 * another service if the service differs). A replaced instance keeps its health, flips
 * and create index unless spec->status is given; its TTL starts again. The indexes move
 * only if something other than the deadline changed; a status the spec changes is a flip. A
 * lapsed instance with that id is removed first, as a sweep would. 0; KEEL_EINVAL (a field
 * malformed, duplicate metadata key), KEEL_ETOOBIG (a size limit) or KEEL_EFULL (a count
 * limit), each with text in msg and nothing else changed; KEEL_ENOMEM (likewise).
 */
int keel_reg_register(keel_reg_t *reg, const keel_reg_spec_t *spec, uint64_t now_ms, uint64_t index,
                      keel_errmsg_t *msg);
/* Removes the live instance id: 0, or KEEL_ENOTFOUND. */
int keel_reg_deregister(keel_reg_t *reg, const uint8_t *id, size_t id_len, uint64_t now_ms,
                        uint64_t index);
/* Renews the live instance's TTL: 0, or KEEL_ENOTFOUND. */
int keel_reg_heartbeat(keel_reg_t *reg, const uint8_t *id, size_t id_len, uint64_t now_ms);
/*
 * A check result for the live instance: renews its TTL, keeps the output (cut to
 * output_bytes_max), and moves its status as flap damping allows. 0 and *now (the status
 * after the report; may be NULL), or KEEL_ENOTFOUND.
 */
int keel_reg_report(keel_reg_t *reg, const uint8_t *id, size_t id_len, keel_reg_status_t st,
                    const uint8_t *output, size_t output_len, uint64_t now_ms, uint64_t index,
                    keel_reg_status_t *now);
/* Removes at most max instances that lapsed at or before now_ms; returns how many. */
size_t keel_reg_sweep(keel_reg_t *reg, uint64_t now_ms, size_t max, uint64_t index);
/* The earliest lapse of any instance, or KEEL_REG_NO_DEADLINE. O(1). */
uint64_t keel_reg_next_deadline_ms(const keel_reg_t *reg);

/* ---- reads (judged at now_ms: a lapsed instance is absent) ----------------------- */

int keel_reg_alive(const keel_reg_instance_t *in, uint64_t now_ms);
/* The live instance with that id, or NULL. */
const keel_reg_instance_t *keel_reg_find(const keel_reg_t *reg, const uint8_t *id, size_t id_len,
                                         uint64_t now_ms);
/* The service of that name (live instances or not), or NULL. */
const keel_reg_service_t *keel_reg_service(const keel_reg_t *reg, const uint8_t *name,
                                           size_t name_len);
/* The index a blocking query on that service waits on: the service's modify index, or the
 * registry's index when there is no such service (any change may create it). */
uint64_t keel_reg_service_index(const keel_reg_t *reg, const uint8_t *name, size_t name_len);
/* The instance has every one of the tags (tags_n may be 0). */
int keel_reg_has_tag(const keel_reg_instance_t *in, const uint8_t *tag, size_t tag_len);
/* Live instances of a service (for a listing: a service whose instances all lapsed has 0). */
size_t keel_reg_service_live(const keel_reg_service_t *s, uint64_t now_ms);

/* ---- change history ------------------------------------------------------------- */

/* The oldest index whose changes are all held (changes after oldest - 1 can be read). */
uint64_t keel_reg_history_oldest(const keel_reg_t *reg);
size_t keel_reg_history_len(const keel_reg_t *reg);
/* The position of the first held change with an index > after (or the length): 0, or
 * KEEL_ERANGE when changes after `after` are no longer all held. */
int keel_reg_history_seek(const keel_reg_t *reg, uint64_t after, size_t *pos);
const keel_reg_event_t *keel_reg_history_at(const keel_reg_t *reg, size_t pos);

/* ---- snapshot section ------------------------------------------------------------- */

/*
 * The registry's section of a keel server snapshot (core/kv's tagged sections, sealed by
 * the snapshot's CRC). Little-endian; keel_reg_snapshot_write writes the limits block,
 * keel_reg_snapshot_load reads it when `limits` (section 2; section 1 has none, defaults):
 *   [u32 KEEL_REG_LIMITS_COUNT | that many u64, in keel_reg_limit_name order]
 *   u64 index | u64 instances | u32 services |
 *   services x (str name | u64 create_index | u64 modify_index | u32 n | n x instance)
 *   instance: str id | str address | str version | u32 port | u32 weight_passing |
 *     u32 weight_warning | u32 tags_n | tags_n x str | u32 meta_n | meta_n x str |
 *     u8 status | u8 pending (0 none, 1 worse, 2 better) | u32 pending_count |
 *     u32 success_before_passing | u32 failures_before_critical | u64 flips |
 *     u64 ttl_ms | u64 ttl_deadline_ms | u64 dca_ms | u64 critical_since_ms |
 *     u64 create_index | u64 modify_index | str output
 *   str: u32 len | bytes
 * Services in name order and instances in id order (so the bytes agree between nodes).
 */
typedef int (*keel_reg_sink_fn)(void *data, const uint8_t *p, size_t n);
/* Bytes keel_reg_snapshot_write will produce. */
uint64_t keel_reg_snapshot_bytes(const keel_reg_t *reg);
int keel_reg_snapshot_write(const keel_reg_t *reg, keel_reg_sink_fn sink, void *data);
/*
 * Loads a section into reg_new (freshly initialized): every field checked (lengths inside
 * the data and within reg_new's limits, statuses, indexes <= the section's index, names
 * strictly ordered, ids unique, counts exact, no trailing bytes). The instances are judged
 * by the ceilings, not by the limits in force (a limit lowered by KEEL.REG.LIMITS leaves
 * what was registered before it); the limits read are then put in force. 0, or
 * KEEL_EPROTO / KEEL_ETOOBIG / KEEL_EFULL / KEEL_ENOMEM with text in msg; reg_new is then
 * empty again.
 */
int keel_reg_snapshot_load(keel_reg_t *reg_new, const uint8_t *p, size_t len, int limits,
                           keel_errmsg_t *msg);

#endif
