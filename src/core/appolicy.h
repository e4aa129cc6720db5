/* appolicy.h - the conflict policy of each key of the AP keyspace: a table of key prefixes. */
#ifndef KEEL_CORE_APPOLICY_H
#define KEEL_CORE_APPOLICY_H

#include "base/err.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Which kind of value (core/apval) a key of the AP keyspace holds, fixed per key prefix by
 * the operator (docs/ap.md, "Conflict policy per key prefix"):
 *
 *   siblings    KEEL_APVAL_SIBLINGS: concurrent writes are all kept (the default; nothing
 *               acknowledged is lost)
 *   lww         KEEL_APVAL_LWW: last writer wins, one value; a concurrent write is dropped
 *               (the lossy choice, only when named)
 *   pn-counter  KEEL_APVAL_PNCOUNTER: KEEL.AP.INCR only
 *   or-set      KEEL_APVAL_ORSET: KEEL.AP.SADD / SREM only
 *
 * The table's text: rules "PREFIX=POLICY" separated by ','; a prefix holds no ',' and no
 * control bytes, and may be empty (then it matches every key); the policy is split at the
 * last '='. The longest prefix that matches the key wins; a key no prefix matches has no
 * configured policy (keel_appolicy_kind returns KEEL_APVAL_SIBLINGS and *configured = 0).
 * A prefix given twice is refused, as is anything past the limits below.
 */
#define KEEL_APPOLICY_PREFIXES_MAX 64u
#define KEEL_APPOLICY_PREFIX_BYTES_MAX 128u
/* the longest table text: every rule at its longest, "=pn-counter" and a ',' each */
#define KEEL_APPOLICY_TEXT_BYTES_MAX                                                               \
    (KEEL_APPOLICY_PREFIXES_MAX * (KEEL_APPOLICY_PREFIX_BYTES_MAX + 12u))

typedef struct keel_appolicy_rule {
    uint8_t prefix[KEEL_APPOLICY_PREFIX_BYTES_MAX];
    uint32_t len;
    uint8_t kind; /* keel_apval_kind_t */
} keel_appolicy_rule_t;

typedef struct keel_appolicy {
    keel_appolicy_rule_t rule[KEEL_APPOLICY_PREFIXES_MAX];
    uint32_t n;
} keel_appolicy_t;

/* An empty table: every key has the default (siblings, not configured). */
void keel_appolicy_init(keel_appolicy_t *p);
/*
 * Parses the table's text (len bytes, not NUL-terminated). On failure p is empty and msg
 * says which rule and why (KEEL_EINVAL: syntax or an unknown policy, KEEL_ETOOBIG: a limit,
 * KEEL_EEXISTS: a prefix given twice).
 */
int keel_appolicy_parse(keel_appolicy_t *p, const char *text, size_t len, keel_errmsg_t *msg);
/* The policy name ("siblings", "lww", "pn-counter", "or-set") as a kind; 0 if unknown. */
uint8_t keel_appolicy_kind_of_name(const char *name, size_t len);
/* The name of a kind as the table writes it ("?" for none). */
const char *keel_appolicy_name(uint8_t kind);
/*
 * The key's kind: the rule with the longest matching prefix; *rule (if non-NULL) is its
 * index, or -1 when no rule matches (then KEEL_APVAL_SIBLINGS, the default, and the key's
 * first write picks its kind as before the table existed).
 */
uint8_t keel_appolicy_kind(const keel_appolicy_t *p, const void *key, size_t len, int *rule);
/* Equal tables (the same rules, whatever their order), equal digests. */
uint64_t keel_appolicy_digest(const keel_appolicy_t *p);

#endif
