/* balance.h - load balancers over a set of endpoints; each policy is a table of functions. */
#ifndef KEEL_CORE_BALANCE_H
#define KEEL_CORE_BALANCE_H

#include "base/err.h"
#include "base/rand.h"
#include "core/hashring.h"
#include "core/maglev.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One balancer holds the endpoint set of one upstream and picks an endpoint
 * per request. The balancer keeps the bookkeeping every policy shares (the
 * endpoint set, health and ejection, in-flight counts, the list of available
 * endpoints, the PRNG); a policy (keel_balance_policy_t, below) only picks.
 * Every policy skips endpoints that are unhealthy (active health checks) or
 * ejected (outlier detection), and keel_balance_pick() answers KEEL_EEMPTY
 * when no endpoint is available, before any policy is asked.
 *
 * Built-in policies (exported tables; name as in config files):
 *
 *   keel_balance_round_robin  "round_robin"  next available endpoint in order;
 *                 O(1) when all are up.
 *   keel_balance_weighted_rr  "weighted_rr"  nginx's smooth weighted round robin
 *                 (ngx_http_upstream_round_robin.c): each pick adds weight to
 *                 every endpoint's current, takes the largest current and
 *                 subtracts the total. Weights 5,1,1 give a a b a c a a: exact
 *                 proportions, spread out. O(n) a pick.
 *   keel_balance_least_conn   "least_conn"   fewest in-flight requests per unit
 *                 of weight (nginx least_conn); ties rotate. O(n) a pick.
 *   keel_balance_p2c          "p2c"          power of two choices (Mitzenmacher
 *                 2001; Envoy LEAST_REQUEST with choice_count 2): two distinct
 *                 random available endpoints, the one with fewer in-flight
 *                 requests per weight. O(1).
 *   keel_balance_random       "random"       uniform over available endpoints. O(1).
 *   keel_balance_hash_mod     "hash"         key_hash mod n over all endpoints
 *                 (nginx ip_hash); if that one is unavailable, rehash up to 20
 *                 times, then pick among the available ones. O(1).
 *   keel_balance_ring         "ring"         consistent hash ring (hashring.h),
 *                 ring_vnodes points per unit of weight; an unavailable owner
 *                 passes the key clockwise to the next available node.
 *                 O(log points). Weights must be <= ring_weight_max.
 *   keel_balance_maglev       "maglev"       Maglev table (maglev.h) rebuilt over
 *                 the available endpoints whenever availability changes. O(1)
 *                 lookup; a rebuild is O(M log M) with M = maglev_table_size.
 *                 Weights are ignored.
 *
 * Endpoint availability (every policy picks only AVAILABLE endpoints):
 *
 *   AVAILABLE <──set_state(healthy=1, ejected=0)──> UNAVAILABLE (unhealthy and/or ejected)
 *   new id in set_endpoints(): AVAILABLE; id dropped: gone; id kept: unchanged
 *
 * Priorities (Envoy's priority levels; what locality-aware routing is built on): each
 * endpoint has a priority, 0 the most preferred (spec.priority; 0 for all unless the caller
 * says otherwise). Only the most preferred priority that has an endpoint both healthy and
 * not ejected takes traffic: b->level. The others count as unavailable until every endpoint
 * of the levels before them is out, and take over at once then (no slow start: a failover
 * must not be throttled); an endpoint of a better level coming back takes traffic back.
 * keel_balance_pick_other() is the exception: when the failing endpoint is the only one of
 * its level, it gives the lightest usable endpoint of any level, so a retry leaves a zone
 * whose one instance just failed (outlier ejection then moves the level).
 *
 * In-flight counts (for least_conn and p2c) are kept by the caller calling
 * keel_balance_start() when a request is sent and keel_balance_done() when it
 * ends. keel_balance_set_endpoints() replaces the set; an endpoint whose id is
 * in both the old and new sets keeps its in-flight count, policy word (smooth
 * WRR state), health and ejection, and its ring points and maglev preferences
 * (they are functions of the id), so an update moves only the keys it must.
 *
 * Memory: all arrays are allocated at init from endpoints_max (and, by the
 * ring, points_max = endpoints_max * ring_vnodes * ring_weight_max; by
 * maglev, M); no call allocates afterwards. Randomness comes from the
 * balancer's own PRNG, seeded from cfg.seed and lent to the policy per pick.
 *
 * Slow start (cfg.slow_start, off while window_ms is 0; Envoy's
 * slow_start_config): an endpoint that becomes AVAILABLE (a new id in
 * set_endpoints(), or set_state() from UNAVAILABLE) ramps up over window_ms
 * instead of taking its full share at once, so a cold instance is not
 * flooded. Its ramp starts at the first keel_balance_pick() after that, with
 * that pick's now_ms (the core reads no clock; an endpoint that comes back
 * while no request flows starts its ramp when requests do). While it ramps,
 * it takes part in each pick with probability
 *
 *   f(t) = max(min_pct / 100, (t / window_ms) ^ (1000 / aggression))
 *
 * (t: ms since its ramp started; aggression in thousandths, 1000 = linear,
 * more = faster early): before the policy picks, every ramping endpoint is
 * drawn from the balancer's PRNG and sits the pick out (keel_balance_available()
 * is false for it, and it is left out of b->avail) unless the draw falls under
 * f(t). So it gets about f(t) of the share the policy would give it, and the
 * rest goes to the others, for every key-less policy (round_robin,
 * weighted_rr, least_conn, p2c, random). When every available endpoint would
 * sit out, none does. An endpoint that turns UNAVAILABLE leaves its ramp;
 * coming back restarts it. An endpoint that becomes available while no other
 * is (the first set, or the first back after all were out) does not ramp:
 * nobody could take the share it would be spared. Keyed policies (hash, ring, maglev:
 * policy->keyed) refuse slow start: it would move keys. Cost: O(available endpoints) a pick while
 * some endpoint ramps; none otherwise. Policies are not refreshed for a pick's resting endpoints.
 *
 * Defaults (keel_balance_config_default): round_robin, endpoints_max 1024,
 * ring_vnodes 160 (ketama's figure), ring_weight_max 1 (ring points are
 * reserved for weight <= this), maglev_table_size 65537, seed 1; slow start
 * off (window_ms 0), min_pct 10 (Envoy's min_weight_percent), aggression 1000.
 */

#define KEEL_BALANCE_ENDPOINTS_MAX 65536u
#define KEEL_BALANCE_WEIGHT_MAX 1000u
#define KEEL_BALANCE_HASH_TRIES 20u
#define KEEL_BALANCE_POLICY_NAME_BYTES_MAX 32u
#define KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS 3600000 /* one hour */
#define KEEL_BALANCE_SLOW_START_AGGRESSION_MIN 100u   /* thousandths: 0.1 */
#define KEEL_BALANCE_SLOW_START_AGGRESSION_MAX 10000u /* thousandths: 10 */
#define KEEL_BALANCE_PERMILLE 1000u
#define KEEL_BALANCE_PRIORITY_MAX 7u

typedef struct keel_balance keel_balance_t;
typedef struct keel_balance_policy keel_balance_policy_t;

/* Slow start (above). */
typedef struct keel_balance_slow_start {
    int64_t window_ms;   /* 0: off; <= KEEL_BALANCE_SLOW_START_WINDOW_MAX_MS */
    uint32_t min_pct;    /* 0..100: the share, in percent of its full one, at the ramp's start */
    uint32_t aggression; /* thousandths, KEEL_BALANCE_SLOW_START_AGGRESSION_MIN..MAX */
} keel_balance_slow_start_t;

typedef struct keel_balance_config {
    const keel_balance_policy_t *policy; /* borrowed; must outlive the balancer */
    void *policy_arg;                    /* handed to policy->init; borrowed; built-ins: NULL */
    uint32_t endpoints_max;
    uint32_t ring_vnodes;       /* ring only */
    uint32_t ring_weight_max;   /* ring only; <= KEEL_BALANCE_WEIGHT_MAX */
    uint32_t maglev_table_size; /* maglev only */
    uint64_t seed;
    keel_balance_slow_start_t slow_start;
} keel_balance_config_t;

/* What the caller supplies for each endpoint. */
typedef struct keel_balance_spec {
    uint64_t id;       /* stable identity, e.g. keel_balance_hash("10.0.0.7:8080") */
    uint32_t weight;   /* 1..KEEL_BALANCE_WEIGHT_MAX */
    uint32_t priority; /* 0 (most preferred) ..KEEL_BALANCE_PRIORITY_MAX (above) */
} keel_balance_spec_t;

typedef struct keel_balance_endpoint {
    uint64_t id;
    uint32_t weight;
    uint32_t inflight;   /* requests started and not done */
    int64_t policy_word; /* the policy's own per-endpoint state (smooth WRR: current weight) */
    uint32_t priority;
    bool healthy, ejected;
    bool resting;          /* sits out the pick in progress (slow start); false between picks */
    uint8_t ramp;          /* KEEL_BALANCE_RAMP_* */
    int64_t ramp_since_ms; /* KEEL_BALANCE_RAMP_ON: when its ramp started */
} keel_balance_endpoint_t;

/* An endpoint's slow start: none (full share), waiting for the first pick's clock, ramping. */
enum { KEEL_BALANCE_RAMP_NONE, KEEL_BALANCE_RAMP_PENDING, KEEL_BALANCE_RAMP_ON };

/* What a policy is given for one pick. */
typedef struct keel_balance_ctx {
    uint64_t key_hash; /* request affinity key (hash, ring, maglev); 0 when there is none */
    int64_t now_ms;    /* the caller's clock; no built-in reads it */
    keel_rand_t *rand; /* the balancer's PRNG; the only source of randomness */
} keel_balance_ctx_t;

/* How a request ended, for keel_balance_report(). */
typedef struct keel_balance_result {
    bool ok;             /* false: failed (5xx, reset, timeout) */
    uint32_t latency_ms; /* from send to response */
    int64_t now_ms;
} keel_balance_result_t;

/*
 * A policy: a table of functions plus the void *data its init returns (the
 * shape of h2o's h2o_balancer_callbacks_t). Add one by writing a const table
 * in its own file and putting it in keel_balance_config_t.policy; balance.c
 * never changes. Only name and pick are required; every other entry may be
 * NULL. The balancer calls them in this order:
 *
 *   validate(cfg)             from keel_balance_config_validate(), before init
 *   init(cfg, &data)          once, from keel_balance_init(); allocate here
 *   set_endpoints(specs, n)   after the core has checked specs (count, weights
 *                             1..KEEL_BALANCE_WEIGHT_MAX, unique ids) and
 *                             before they take effect: an error keeps the old
 *                             set; 0 commits it. May not allocate.
 *   refresh()                 after every committed set_endpoints and every
 *                             availability change; b->avail is up to date
 *   pick(ctx)                 only when b->avail_n > 0; returns the index of
 *                             an AVAILABLE endpoint (asserted)
 *   on_start / on_release     after the core has counted the request in / out
 *   on_result                 from keel_balance_report()
 *   free(data)                once, from keel_balance_free()
 *
 * A policy may read everything in keel_balance_t and may write only
 * ep[i].policy_word, which the core zeroes for a new id and keeps by id.
 */
struct keel_balance_policy {
    const char *name; /* for config files: [a-z0-9_], < KEEL_BALANCE_POLICY_NAME_BYTES_MAX */
    bool keyed;       /* picks by the request's key (hash, ring, maglev): no slow start */
    int (*validate)(const keel_balance_config_t *cfg, keel_errmsg_t *msg);
    int (*init)(const keel_balance_config_t *cfg, void **data, keel_errmsg_t *msg);
    void (*free)(void *data);
    int (*set_endpoints)(void *data, const keel_balance_t *b, const keel_balance_spec_t *specs,
                         uint32_t n, keel_errmsg_t *msg);
    void (*refresh)(void *data, const keel_balance_t *b);
    uint32_t (*pick)(void *data, keel_balance_t *b, const keel_balance_ctx_t *ctx);
    void (*on_start)(void *data, const keel_balance_t *b, uint32_t idx);
    void (*on_release)(void *data, const keel_balance_t *b, uint32_t idx);
    void (*on_result)(void *data, const keel_balance_t *b, uint32_t idx,
                      const keel_balance_result_t *r);
};

struct keel_balance {
    keel_balance_config_t cfg;
    const keel_balance_policy_t *policy; /* cfg.policy */
    void *data;                          /* the policy's, from its init */
    keel_balance_endpoint_t *ep;
    keel_balance_endpoint_t *scratch; /* for set_endpoints */
    uint32_t n;
    uint32_t *avail; /* indexes of available endpoints, in index order */
    uint32_t avail_n;
    uint32_t *avail_pick; /* slow start: the available endpoints that take part in a pick */
    uint32_t ramp_n;      /* endpoints whose ramp is PENDING or ON */
    uint32_t level;       /* the priority taking traffic (above) */
    keel_rand_t rand;
};

extern const keel_balance_policy_t keel_balance_round_robin;
extern const keel_balance_policy_t keel_balance_weighted_rr;
extern const keel_balance_policy_t keel_balance_least_conn;
extern const keel_balance_policy_t keel_balance_p2c;
extern const keel_balance_policy_t keel_balance_random;
extern const keel_balance_policy_t keel_balance_hash_mod;
extern const keel_balance_policy_t keel_balance_ring;
extern const keel_balance_policy_t keel_balance_maglev;

/* The ring / maglev table of a balancer running that policy, else NULL (for tests and benches). */
const keel_hashring_t *keel_balance_ring_of(const keel_balance_t *b);
const keel_maglev_t *keel_balance_maglev_of(const keel_balance_t *b);

/* The built-in policies above, in that order, NULL-terminated. */
extern const keel_balance_policy_t *const keel_balance_builtin[];

/*
 * Finds the policy called name (a config-file value) among extra[0..extra_n)
 * first, then the built-ins; extra lets a proxy offer its own policies by
 * name. KEEL_ENOTFOUND, with the known names in msg, when none matches.
 */
int keel_balance_policy_find(const char *name, const keel_balance_policy_t *const *extra,
                             uint32_t extra_n, const keel_balance_policy_t **out,
                             keel_errmsg_t *msg);

void keel_balance_config_default(keel_balance_config_t *cfg);
int keel_balance_config_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg);
int keel_balance_init(keel_balance_t *b, const keel_balance_config_t *cfg, keel_errmsg_t *msg);
void keel_balance_free(keel_balance_t *b);

/*
 * Replaces the endpoint set (order matters only for round robin / WRR and for
 * the indexes returned by pick). KEEL_EINVAL for a duplicate id, a zero or too
 * large weight; KEEL_ETOOBIG for more than endpoints_max endpoints or ring
 * points. On error the old set stays.
 */
int keel_balance_set_endpoints(keel_balance_t *b, const keel_balance_spec_t *specs, uint32_t n,
                               keel_errmsg_t *msg);
/* Marks endpoint idx healthy/unhealthy and ejected/not. */
void keel_balance_set_state(keel_balance_t *b, uint32_t idx, bool healthy, bool ejected);
/* Index of the endpoint with this id, or KEEL_ENOTFOUND. */
int keel_balance_find(const keel_balance_t *b, uint64_t id);

/*
 * Picks an endpoint into *idx; key_hash is the request's affinity key (used by
 * hash, ring, maglev), now_ms the caller's clock. 0 or KEEL_EEMPTY.
 */
int keel_balance_pick(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t *idx);
/*
 * A pick for a retry, away from avoid_1 - 1 (the endpoint whose attempt just failed; avoid_1
 * 0: none, a plain pick): the policy is asked again up to `repicks` times (Envoy's
 * previous_hosts predicate), and if it keeps choosing that endpoint - a load-aware choice
 * between two prefers the failing one, which holds no requests - the lightest other available
 * endpoint. A keyed policy (policy->keyed: hash, ring, maglev) keeps the key's endpoint. 0 or
 * KEEL_EEMPTY.
 */
int keel_balance_pick_other(keel_balance_t *b, uint64_t key_hash, int64_t now_ms, uint32_t avoid_1,
                            int repicks, uint32_t *idx);
/*
 * The same away from every endpoint of a set (avoid_1[0..avoid_n), each 1 + an index; 0 entries
 * name none): the endpoints a request already tried, so a third attempt over three endpoints of
 * which two failed goes to the third (Envoy's previous_hosts predicate keeps them all). The
 * policy is asked again up to `repicks` times while it chooses one of the set, then the lightest
 * available endpoint outside it, else the lightest usable one of another level. When every
 * usable endpoint is in the set, only the last one (avoid_1[avoid_n - 1], the one that just
 * failed) is avoided. A keyed policy keeps the key's endpoint. O(n * avoid_n) beside the picks.
 * 0 or KEEL_EEMPTY.
 */
int keel_balance_pick_avoiding(keel_balance_t *b, uint64_t key_hash, int64_t now_ms,
                               const uint32_t *avoid_1, uint32_t avoid_n, int repicks,
                               uint32_t *idx);
void keel_balance_start(keel_balance_t *b, uint32_t idx);
void keel_balance_done(keel_balance_t *b, uint32_t idx);
/* Tells the policy how a request to idx ended (for latency- or error-aware policies). */
void keel_balance_report(keel_balance_t *b, uint32_t idx, const keel_balance_result_t *r);

/* Healthy and not ejected, whatever its priority. */
static inline bool keel_balance_usable(const keel_balance_t *b, uint32_t idx)
{
    return b->ep[idx].healthy && !b->ep[idx].ejected;
}

static inline bool keel_balance_available(const keel_balance_t *b, uint32_t idx)
{
    return keel_balance_usable(b, idx) && !b->ep[idx].resting && b->ep[idx].priority == b->level;
}

/*
 * Slow start's f(t) in thousandths (KEEL_BALANCE_PERMILLE is the full share)
 * for an endpoint whose ramp started elapsed_ms ago (negative counts as 0):
 * KEEL_BALANCE_PERMILLE when ss->window_ms is 0 or elapsed_ms >= window_ms.
 */
uint32_t keel_balance_slow_start_permille(const keel_balance_slow_start_t *ss, int64_t elapsed_ms);
/* f(t) of endpoint idx at now_ms (KEEL_BALANCE_PERMILLE when it is not ramping). */
uint32_t keel_balance_ramp_permille(const keel_balance_t *b, uint32_t idx, int64_t now_ms);

/* a carries less load per unit of weight than x: a.inflight/a.w < x.inflight/x.w */
static inline bool keel_balance_lighter(const keel_balance_endpoint_t *a,
                                        const keel_balance_endpoint_t *x)
{
    return (uint64_t)a->inflight * x->weight < (uint64_t)x->inflight * a->weight;
}

/* A 64-bit hash of bytes (8-byte words through the splitmix64 finaliser); not cryptographic. */
uint64_t keel_balance_hash(const void *data, size_t n);

#endif
