/* aggregate.h - the JSON merge of an aggregate route's parts: a pure function. */
#ifndef KEEL_PROXY_AGGREGATE_H
#define KEEL_PROXY_AGGREGATE_H

#include "proxy/config.h"

#include <stddef.h>

/*
 * An aggregate route (docs/proxy.md, "Aggregation") calls its parts at once and answers one
 * object with a field per part, in the config's order, then "partial" and "errors":
 *
 *   {"order": {...}, "payment": null, "reservation": {...}, "partial": true,
 *    "errors": [{"part": "payment", "error": "timeout", "status": 0}]}
 *
 * A part succeeds when it answered a 2xx whose body is one JSON value (any type) of at most
 * part_bytes_max bytes; anything else makes it null with an entry in "errors" (the upstream's
 * status, or 0 when none came). The answer's status: 200 while every required part succeeded;
 * else, of the first required part that failed, its own status when it answered a 4xx (an
 * order that does not exist stays a 404), 504 when it timed out, 502 otherwise. The body is
 * the merged object in every case.
 */
typedef enum keel_proxy_part_outcome {
    KEEL_PROXY_PART_OK,           /* a response came: status and body below */
    KEEL_PROXY_PART_TIMEOUT,      /* the part's timeout passed */
    KEEL_PROXY_PART_CONNECT,      /* no connection (refused, or no available host) */
    KEEL_PROXY_PART_RESET,        /* the connection broke before a whole response */
    KEEL_PROXY_PART_BAD_RESPONSE, /* not HTTP, or over the client's limits */
    KEEL_PROXY_PART_NO_HOST,      /* the cluster has no available host */
    KEEL_PROXY_PART_BAD_PATH,     /* the part's path could not be filled from the request */
} keel_proxy_part_outcome_t;

typedef struct keel_proxy_part_result {
    keel_proxy_part_outcome_t outcome;
    int status; /* PART_OK: the upstream's status */
    const char *body;
    size_t body_len;
} keel_proxy_part_result_t;

/* Merges res[0..agg->parts_count) into *out (malloc'd, NUL-terminated, *out_len without the
 * NUL; the caller frees it). Returns the status to answer, or 0 when out of memory. */
int keel_proxy_agg_merge(const keel_proxy_aggregate_t *agg, const keel_proxy_part_result_t *res,
                         char **out, size_t *out_len);

#endif
