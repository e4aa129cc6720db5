/* proxy_cfg_test.h - what the proxy's config tests share: one parse into a file-wide config
 * and its errors, and the checks on those errors. Included by one test file each (its own
 * static copies). */
#ifndef KEEL_TESTS_PROXY_CFG_TEST_H
#define KEEL_TESTS_PROXY_CFG_TEST_H

#include "base/err.h"
#include "proxy/config.h"

#include <stdio.h>
#include <string.h>

static keel_proxy_config_t cfg;
static keel_proxy_errors_t errs;

static int parse(const char *text)
{
    return keel_proxy_config_parse(text, strlen(text), &cfg, &errs);
}

/* Whether some error is on `line` and contains `needle`. */
static int has_error(int line, const char *needle)
{
    for (uint32_t i = 0; i < errs.count; i++)
        if (errs.e[i].line == line && strstr(errs.e[i].text, needle) != NULL)
            return 1;
    return 0;
}

static void dump_errors(void)
{
    for (uint32_t i = 0; i < errs.count; i++)
        fprintf(stderr, "  line %d: %s\n", errs.e[i].line, errs.e[i].text);
}

#endif
