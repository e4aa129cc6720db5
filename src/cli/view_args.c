/* view_args.c - the arguments of the log view commands (view_args.h). */
#include "cli/view_args.h"

#include <stdio.h>
#include <string.h>

static int seeds_from(keel_cli_view_args_t *a, const char *addr, const char *dir)
{
    if (addr) {
        if (strlen(addr) >= sizeof(a->addrs_text)) {
            fprintf(stderr, "keel %s: --addr too long\n", a->cmd);
            return -1;
        }
        snprintf(a->addrs_text, sizeof(a->addrs_text), "%s", addr);
        for (char *p = a->addrs_text, *tok; (tok = strsep(&p, ",")) != NULL;) {
            if (*tok == '\0')
                continue;
            if (a->seeds_n == KEEL_CLIENT_SEEDS_MAX) {
                fprintf(stderr, "keel %s: more than %d addresses\n", a->cmd, KEEL_CLIENT_SEEDS_MAX);
                return -1;
            }
            a->seeds[a->seeds_n++] = tok;
        }
    } else {
        char err[256];
        if (keel_cluster_load(dir, &a->cl, err, sizeof(err)) != 0) {
            fprintf(stderr, "keel %s: %s\n", a->cmd, err);
            return -1;
        }
        for (size_t i = 0; i < a->cl.n && a->seeds_n < KEEL_CLIENT_SEEDS_MAX; i++)
            a->seeds[a->seeds_n++] = a->cl.nodes[i].client;
    }
    return a->seeds_n > 0 ? 0 : -1;
}

int keel_cli_view_args_parse(int argc, char **argv, keel_cli_view_args_t *a)
{
    const char *addr = NULL, *dir = NULL;
    a->state = -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0)
            return 1;
        bool extra = a->extra && strcmp(o, a->extra) == 0;
        if (strcmp(o, "--addr") == 0 || strcmp(o, "--cluster") == 0 || strcmp(o, "--state") == 0 ||
            extra) {
            if (i + 1 >= argc) {
                fprintf(stderr, "keel %s: %s needs a value\n", a->cmd, o);
                return -1;
            }
            const char *v = argv[++i];
            if (extra)
                a->extra_value = v;
            else if (strcmp(o, "--addr") == 0)
                addr = v;
            else if (strcmp(o, "--cluster") == 0)
                dir = v;
            else if (a->state_parse(v, &a->state) != 0) {
                fprintf(stderr, "keel %s: --state '%s': expected one of %s\n", a->cmd, v,
                        a->states);
                return -1;
            }
        } else if (strncmp(o, "--", 2) == 0) {
            fprintf(stderr, "keel %s: unknown option %s\n", a->cmd, o);
            return -1;
        } else if (a->verb == NULL)
            a->verb = o;
        else if (a->id == NULL)
            a->id = o;
        else {
            fprintf(stderr, "keel %s: unexpected argument %s\n", a->cmd, o);
            return -1;
        }
    }
    if (a->verb == NULL || (addr == NULL) == (dir == NULL))
        return -1;
    if (strcmp(a->verb, "list") == 0
            ? a->id != NULL
            : strcmp(a->verb, "show") != 0 || a->id == NULL || a->state >= 0 || a->extra_value)
        return -1;
    return seeds_from(a, addr, dir);
}
