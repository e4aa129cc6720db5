/* balance.h - load balancers over a set of endpoints: RR, smooth WRR, least-conn, P2C, random,
 * hash, ring, maglev. */
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
 * per request. Every policy skips endpoints that are unhealthy (active health
 * checks) or ejected (outlier detection), and every policy answers
 * KEEL_EEMPTY when no endpoint is available.
 *
 *   ROUND_ROBIN   next available endpoint in order; O(1) when all are up.
 *   WEIGHTED_RR   nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c):
 *                 each pick adds weight to every endpoint's current, takes the
 *                 largest current and subtracts the total. Weights 5,1,1 give
 *                 a a b a c a a: exact proportions, spread out. O(n) a pick.
 *   LEAST_CONN    fewest in-flight requests per unit of weight (nginx least_conn);
 *                 ties rotate. O(n) a pick.
 *   P2C           power of two choices (Mitzenmacher 2001; Envoy LEAST_REQUEST
 *                 with choice_count 2): two distinct random available endpoints,
 *                 the one with fewer in-flight requests per weight. O(1).
 *   RANDOM        uniform over available endpoints. O(1).
 *   HASH          key_hash mod n over all endpoints (nginx ip_hash); if that one
 *                 is unavailable, rehash up to 20 times, then pick among the
 *                 available ones. O(1).
 *   RING          consistent hash ring (hashring.h), ring_vnodes points per unit
 *                 of weight; an unavailable owner passes the key clockwise to
 *                 the next available node. O(log points).
 *   MAGLEV        Maglev table (maglev.h) rebuilt over the available endpoints
 *                 whenever availability changes. O(1) lookup; a rebuild is
 *                 O(M log M) with M = maglev_table_size. Weights are ignored.
 *
 * Endpoint availability (every policy picks only AVAILABLE endpoints):
 *
 *   AVAILABLE <──set_state(healthy=1, ejected=0)──> UNAVAILABLE (unhealthy and/or ejected)
 *   new id in set_endpoints(): AVAILABLE; id dropped: gone; id kept: unchanged
 *
 * In-flight counts (for LEAST_CONN and P2C) are kept by the caller calling
 * keel_balance_start() when a request is sent and keel_balance_done() when it
 * ends. keel_balance_set_endpoints() replaces the set; an endpoint whose id is
 * in both the old and new sets keeps its in-flight count, smooth-WRR state,
 * health and ejection, and its ring points and maglev preferences (they are
 * functions of the id), so an update moves only the keys it must.
 *
 * Memory: all arrays are allocated at init from endpoints_max (and ring
 * points_max = endpoints_max * ring_vnodes * ring_weight_max, maglev M); no
 * call allocates afterwards. Randomness comes from the balancer's own PRNG,
 * seeded from cfg.seed.
 *
 * Defaults (keel_balance_config_default): ROUND_ROBIN, endpoints_max 1024,
 * ring_vnodes 160 (ketama's figure), ring_weight_max 1 (ring points are
 * reserved for weight <= this), maglev_table_size 65537, seed 1.
 */

typedef enum keel_balance_policy {
    KEEL_BALANCE_ROUND_ROBIN,
    KEEL_BALANCE_WEIGHTED_RR,
    KEEL_BALANCE_LEAST_CONN,
    KEEL_BALANCE_P2C,
    KEEL_BALANCE_RANDOM,
    KEEL_BALANCE_HASH,
    KEEL_BALANCE_RING,
    KEEL_BALANCE_MAGLEV,
} keel_balance_policy_t;

#define KEEL_BALANCE_ENDPOINTS_MAX 65536u
#define KEEL_BALANCE_WEIGHT_MAX 1000u
#define KEEL_BALANCE_HASH_TRIES 20u

typedef struct keel_balance_config {
    keel_balance_policy_t policy;
    uint32_t endpoints_max;
    uint32_t ring_vnodes;
    uint32_t ring_weight_max;
    uint32_t maglev_table_size;
    uint64_t seed;
} keel_balance_config_t;

/* What the caller supplies for each endpoint. */
typedef struct keel_balance_spec {
    uint64_t id;     /* stable identity, e.g. keel_balance_hash("10.0.0.7:8080") */
    uint32_t weight; /* 1..KEEL_BALANCE_WEIGHT_MAX */
} keel_balance_spec_t;

typedef struct keel_balance_endpoint {
    uint64_t id;
    uint32_t weight;
    uint32_t inflight;   /* requests started and not done */
    int64_t wrr_current; /* smooth WRR state */
    bool healthy, ejected;
} keel_balance_endpoint_t;

typedef struct keel_balance {
    keel_balance_config_t cfg;
    keel_balance_endpoint_t *ep;
    keel_balance_endpoint_t *scratch; /* for set_endpoints */
    uint32_t n;
    uint32_t *avail; /* indexes of available endpoints */
    uint32_t avail_n;
    uint32_t cursor; /* round robin / least-conn tie rotation */
    keel_rand_t rand;
    keel_hashring_t ring;
    keel_maglev_t maglev;
    uint64_t *ids; /* scratch for ring/maglev builds */
    uint32_t *weights;
    uint8_t *include;
} keel_balance_t;

void keel_balance_config_default(keel_balance_config_t *cfg);
int keel_balance_config_validate(const keel_balance_config_t *cfg, keel_errmsg_t *msg);
int keel_balance_init(keel_balance_t *b, const keel_balance_config_t *cfg, keel_errmsg_t *msg);
void keel_balance_free(keel_balance_t *b);

/*
 * Replaces the endpoint set (order matters only for ROUND_ROBIN/WRR and for
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

/* Picks an endpoint into *idx; key_hash is used by HASH, RING and MAGLEV. 0 or KEEL_EEMPTY. */
int keel_balance_pick(keel_balance_t *b, uint64_t key_hash, uint32_t *idx);
void keel_balance_start(keel_balance_t *b, uint32_t idx);
void keel_balance_done(keel_balance_t *b, uint32_t idx);

static inline bool keel_balance_available(const keel_balance_t *b, uint32_t idx)
{
    return b->ep[idx].healthy && !b->ep[idx].ejected;
}

/* A 64-bit hash of bytes (8-byte words through the splitmix64 finaliser); not cryptographic. */
uint64_t keel_balance_hash(const void *data, size_t n);
const char *keel_balance_policy_name(keel_balance_policy_t p);

#endif
