/* reg_json.h - Consul's service registration JSON as a KEEL.REG REGISTER command (no I/O). */
#ifndef KEEL_PROTO_REG_JSON_H
#define KEEL_PROTO_REG_JSON_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The body of Consul's PUT /v1/agent/service/register
 * (https://developer.hashicorp.com/consul/api-docs/agent/service#register-service):
 *
 *   {"Name": "orders", "ID": "orders-1", "Address": "10.0.0.7", "Port": 8080,
 *    "Tags": ["v2"], "Meta": {"zone": "a"}, "Weights": {"Passing": 10, "Warning": 1},
 *    "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "90m", "Status": "passing",
 *              "SuccessBeforePassing": 2, "FailuresBeforeCritical": 3},
 *    "Version": "1.4.2"}
 *
 * Name is required; ID defaults to Name (as Consul). Version is keel's (Consul has none).
 * With a Check the instance starts critical unless Check.Status says otherwise (Consul's
 * rule for TTL checks); without one it starts passing and lives until deregistered.
 * Field names match case-insensitively, as Consul's decoder does; unknown fields are
 * ignored. Durations are Go's ("1.5s", "1m30s", "250ms"), rounded up to a millisecond.
 *
 * The result is the argv of KEEL.REG.WRITE REGISTER ... (core/kv_registry.c), pointing
 * into the parse (valid until keel_reg_json_free). Counts are bounded while parsing, so
 * argc is at most KEEL_REG_JSON_ARGC_MAX whatever the body holds.
 */
#define KEEL_REG_JSON_TAGS_MAX 256u       /* core/registry's KEEL_REG_TAGS_CEILING */
#define KEEL_REG_JSON_META_PAIRS_MAX 512u /* KEEL_REG_META_PAIRS_CEILING */
#define KEEL_REG_JSON_ARGC_MAX (32u + KEEL_REG_JSON_TAGS_MAX + 2u * KEEL_REG_JSON_META_PAIRS_MAX)
#define KEEL_REG_JSON_NUMS 12u /* port, counts, weights, durations, damping */
#define KEEL_REG_JSON_NUM_BYTES 24u

typedef struct keel_reg_json {
    size_t argc;
    const uint8_t **argv; /* owned array; the strings point into root or nums */
    size_t *lens;         /* owned */
    void *root;           /* the parsed document (json_t *), owned */
    char nums[KEEL_REG_JSON_NUMS][KEEL_REG_JSON_NUM_BYTES];
} keel_reg_json_t;

/* 0 and *out (free it with keel_reg_json_free), or KEEL_EINVAL with text in msg (nothing to
 * free), or KEEL_ENOMEM. */
int keel_reg_json_parse(const uint8_t *body, size_t len, keel_reg_json_t *out, keel_errmsg_t *msg);
void keel_reg_json_free(keel_reg_json_t *out);

/* A Go duration ("10s", "1m30s", "1.5h", "0") in milliseconds, rounded up; 0 or KEEL_EINVAL
 * (malformed, negative, or over a day times 365). */
int keel_reg_duration_ms(const char *s, size_t n, uint64_t *ms);

#endif
