/* fuzz_appolicy.c - libFuzzer target: the AP keyspace's conflict policy table (core/appolicy). */
#include "core/appolicy.h"
#include "core/apval.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: the table's text as an operator gives it to --ap-policy (then, after a NUL byte, a
 * key to look up). Properties: parsing never reads past its input; a refused table leaves
 * no rule and says why; an accepted one holds at most the limits, every rule's prefix
 * within the named length and its kind a known one; the kind found for the key is the
 * kind of the longest rule that is a prefix of it (checked against a plain scan), and
 * every rule's own prefix looks up to a rule at least as long.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static keel_appolicy_t p;
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *key = nul ? nul + 1 : data;
    size_t klen = nul ? size - tlen - 1 : 0;
    char *text = malloc(tlen ? tlen : 1); /* exactly tlen bytes: ASan sees any overread */
    if (text == NULL)
        return 0;
    memcpy(text, data, tlen);
    keel_errmsg_t msg = {{0}};
    int rc = keel_appolicy_parse(&p, text, tlen, &msg);
    free(text);
    if (rc != 0) {
        if (p.n != 0 || msg.text[0] == '\0')
            abort();
        return 0;
    }
    if (p.n > KEEL_APPOLICY_PREFIXES_MAX)
        abort();
    size_t best = 0;
    int found = -1;
    for (uint32_t i = 0; i < p.n; i++) {
        const keel_appolicy_rule_t *r = &p.rule[i];
        if (r->len > KEEL_APPOLICY_PREFIX_BYTES_MAX || r->kind < KEEL_APVAL_SIBLINGS ||
            r->kind > KEEL_APVAL_LWW)
            abort();
        int own;
        (void)keel_appolicy_kind(&p, r->prefix, r->len, &own);
        if (own < 0 || p.rule[own].len < r->len)
            abort();
        if (r->len <= klen && memcmp(r->prefix, key, r->len) == 0 && (found < 0 || r->len > best))
            best = r->len, found = (int)i;
    }
    int rule;
    uint8_t kind = keel_appolicy_kind(&p, key, klen, &rule);
    if (rule != found || kind != (found < 0 ? KEEL_APVAL_SIBLINGS : p.rule[found].kind))
        abort();
    return 0;
}
