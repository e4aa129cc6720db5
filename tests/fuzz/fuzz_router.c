/* fuzz_router.c - libFuzzer target: route patterns and request paths through proto/router. */
#include "proto/router.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: lines. Each line "METHOD pattern" adds a route (whatever the router says of it);
 * the last line is "METHOD path" to match. A match's parameters must lie inside the path,
 * and its route must be one that was added with that method or "*".
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    keel_router_t r;
    keel_router_init(&r);
    char *line = text, *last = NULL;
    int tags[KEEL_ROUTER_ROUTES_MAX];
    for (char *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        char *sp = strchr(line, ' ');
        if (sp == NULL)
            continue;
        *sp = '\0';
        keel_errmsg_t m;
        (void)keel_router_add(&r, line, sp + 1, &tags[r.n % KEEL_ROUTER_ROUTES_MAX], &m);
    }
    last = line;
    char *sp = strchr(last, ' ');
    if (sp != NULL) {
        const char *path = sp + 1;
        size_t plen = strlen(path);
        keel_route_match_t mt;
        if (keel_router_match(&r, last, (size_t)(sp - last), path, plen, &mt) == 0) {
            if (mt.route >= r.n || mt.n > KEEL_ROUTER_PARAMS_MAX)
                __builtin_trap();
            for (size_t i = 0; i < mt.n; i++)
                if (mt.params[i].value < path ||
                    mt.params[i].value + mt.params[i].value_len > path + plen)
                    __builtin_trap();
        }
    }
    keel_router_free(&r);
    free(text);
    return 0;
}
