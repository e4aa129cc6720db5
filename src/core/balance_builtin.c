/* balance_builtin.c - the list of built-in balancer policies and lookup by name (config files). */
#include "core/balance.h"

#include <stdio.h>
#include <string.h>

/* Adding a built-in: write its table in its own file and list it here. */
const keel_balance_policy_t *const keel_balance_builtin[] = {
    &keel_balance_round_robin, &keel_balance_weighted_rr, &keel_balance_least_conn,
    &keel_balance_p2c,         &keel_balance_random,      &keel_balance_hash_mod,
    &keel_balance_ring,        &keel_balance_maglev,      NULL,
};

int keel_balance_policy_find(const char *name, const keel_balance_policy_t *const *extra,
                             uint32_t extra_n, const keel_balance_policy_t **out,
                             keel_errmsg_t *msg)
{
    for (uint32_t i = 0; i < extra_n; i++)
        if (strcmp(extra[i]->name, name) == 0)
            return *out = extra[i], 0;
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p; p++)
        if (strcmp((*p)->name, name) == 0)
            return *out = *p, 0;
    char known[512];
    size_t used = 0;
    for (uint32_t i = 0; i < extra_n && used < sizeof(known); i++)
        used += (size_t)snprintf(known + used, sizeof(known) - used, "%s, ", extra[i]->name);
    for (const keel_balance_policy_t *const *p = keel_balance_builtin; *p && used < sizeof(known);
         p++)
        used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", (*p)->name,
                                 p[1] ? ", " : "");
    return keel_errf(msg, KEEL_ENOTFOUND, "unknown balancer policy \"%.*s\" (known: %s)",
                     (int)KEEL_BALANCE_POLICY_NAME_BYTES_MAX, name, known);
}
