/* test_kv_cmds.c - the command table: sorted by name, so that the lookup (a binary search)
   finds every command in any case and nothing else. */
#include "core/kv_cmd_int.h"
#include "ktest.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void upper_of(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in[i] && i + 1 < cap; i++)
        out[i] = (char)toupper((unsigned char)in[i]);
    out[i] = '\0';
}

static void the_table_is_sorted_and_every_name_is_found_in_any_case(void)
{
    char prev[32] = "", up[32], mixed[64];
    size_t n = keel_kv_commands_count();
    KT_CHECK(n > 100);
    for (size_t i = 0; i < n; i++) {
        keel_kv_command_info_t c;
        keel_kv_command_info(i, &c);
        upper_of(c.name, up, sizeof(up));
        if (i > 0 && strcmp(prev, up) >= 0)
            KT_FAIL("the table is not sorted at %zu: %s then %s", i, prev, up);
        snprintf(prev, sizeof(prev), "%s", up);
        size_t len = strlen(up);
        for (size_t k = 0; k < len; k++)
            mixed[k] = k % 2 ? (char)tolower((unsigned char)up[k]) : up[k];
        const char *forms[] = {up, c.name, mixed};
        for (size_t f = 0; f < 3; f++) {
            const cmd_t *x = keel__kvc_find_cmd((const uint8_t *)forms[f], len);
            if (x == NULL || strcmp(x->lname, c.name) != 0)
                KT_FAIL("%.*s not found as itself", (int)len, forms[f]);
        }
        /* a prefix or an extension of a name is another name or none */
        const cmd_t *p = keel__kvc_find_cmd((const uint8_t *)up, len - 1);
        KT_CHECK(len == 1 || p == NULL || strlen(p->name) == len - 1);
        snprintf(mixed, sizeof(mixed), "%sX", up);
        const cmd_t *e = keel__kvc_find_cmd((const uint8_t *)mixed, len + 1);
        KT_CHECK(e == NULL || strcmp(e->name, mixed) == 0);
    }
}

static void unknown_names_are_not_found(void)
{
    const char *none[] = {
        "",  "A", "ZZZZ", "SE", "SETT", "KEEL.", "GET ", "G\xc3\xa9T", "KEEL.XRETAIN.SWEEPX",
        "@", "~"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
        KT_CHECK(keel__kvc_find_cmd((const uint8_t *)none[i], strlen(none[i])) == NULL);
    KT_CHECK(keel__kvc_find_cmd((const uint8_t *)"GET\0", 4) == NULL);
    KT_CHECK(keel__kvc_find_cmd((const uint8_t *)"get", 3) != NULL);
}

int main(void)
{
    KT_RUN(the_table_is_sorted_and_every_name_is_found_in_any_case);
    KT_RUN(unknown_names_are_not_found);
    return kt_done();
}
