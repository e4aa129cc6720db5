/* appolicy.c - the conflict policy table of the AP keyspace (see appolicy.h). */
#include "core/appolicy.h"

#include "base/hash.h"
#include "core/apval.h"

#include <string.h>

static const struct {
    const char *name;
    uint8_t kind;
} names[] = {
    {"siblings", KEEL_APVAL_SIBLINGS},
    {"lww", KEEL_APVAL_LWW},
    {"pn-counter", KEEL_APVAL_PNCOUNTER},
    {"or-set", KEEL_APVAL_ORSET},
};

void keel_appolicy_init(keel_appolicy_t *p)
{
    p->n = 0;
}

uint8_t keel_appolicy_kind_of_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0)
            return names[i].kind;
    return 0;
}

const char *keel_appolicy_name(uint8_t kind)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].kind == kind)
            return names[i].name;
    return "?";
}

/* One rule "PREFIX=POLICY" (s, n) into p->rule[p->n]. */
static int parse_rule(keel_appolicy_t *p, const char *s, size_t n, keel_errmsg_t *msg)
{
    size_t eq = n;
    while (eq > 0 && s[eq - 1] != '=')
        eq--;
    if (eq == 0)
        return keel_errf(msg, KEEL_EINVAL, "rule %u: '%.*s' is not PREFIX=POLICY", p->n + 1,
                         (int)(n > 64 ? 64 : n), s);
    size_t plen = eq - 1;
    if (plen > KEEL_APPOLICY_PREFIX_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "rule %u: prefix of %zu bytes (max %u)", p->n + 1, plen,
                         KEEL_APPOLICY_PREFIX_BYTES_MAX);
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return keel_errf(msg, KEEL_EINVAL, "rule %u: control byte in the prefix", p->n + 1);
    uint8_t kind = keel_appolicy_kind_of_name(s + eq, n - eq);
    if (kind == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "rule %u: policy '%.*s' is not siblings, lww, pn-counter or or-set",
                         p->n + 1, (int)(n - eq > 32 ? 32 : n - eq), s + eq);
    for (uint32_t i = 0; i < p->n; i++)
        if (p->rule[i].len == plen && memcmp(p->rule[i].prefix, s, plen) == 0)
            return keel_errf(msg, KEEL_EEXISTS, "rule %u: prefix '%.*s' given twice", p->n + 1,
                             (int)plen, s);
    if (p->n == KEEL_APPOLICY_PREFIXES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "more than %u prefixes", KEEL_APPOLICY_PREFIXES_MAX);
    keel_appolicy_rule_t *r = &p->rule[p->n++];
    memcpy(r->prefix, s, plen);
    r->len = (uint32_t)plen;
    r->kind = kind;
    return 0;
}

int keel_appolicy_parse(keel_appolicy_t *p, const char *text, size_t len, keel_errmsg_t *msg)
{
    keel_appolicy_init(p);
    if (len > KEEL_APPOLICY_TEXT_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "policy table of %zu bytes (max %u)", len,
                         KEEL_APPOLICY_TEXT_BYTES_MAX);
    if (len == 0)
        return 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != ',')
            continue;
        int rc = parse_rule(p, text + start, i - start, msg);
        if (rc != 0) {
            keel_appolicy_init(p);
            return rc;
        }
        start = i + 1;
    }
    return 0;
}

uint8_t keel_appolicy_kind(const keel_appolicy_t *p, const void *key, size_t len, int *rule)
{
    int best = -1;
    for (uint32_t i = 0; i < p->n; i++) {
        const keel_appolicy_rule_t *r = &p->rule[i];
        if (r->len <= len && (best < 0 || r->len > p->rule[best].len) &&
            (r->len == 0 || memcmp(r->prefix, key, r->len) == 0))
            best = (int)i;
    }
    if (rule)
        *rule = best;
    return best < 0 ? KEEL_APVAL_SIBLINGS : p->rule[best].kind;
}

uint64_t keel_appolicy_digest(const keel_appolicy_t *p)
{
    /* the sum of each rule's hash: the order the rules were given in does not matter */
    uint64_t h = p->n;
    for (uint32_t i = 0; i < p->n; i++) {
        uint8_t b[KEEL_APPOLICY_PREFIX_BYTES_MAX + 1];
        memcpy(b, p->rule[i].prefix, p->rule[i].len);
        b[p->rule[i].len] = p->rule[i].kind;
        h += keel_hash64(b, p->rule[i].len + 1u, 0x6170706f6cull);
    }
    return h;
}
