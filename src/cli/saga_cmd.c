/* saga_cmd.c - `keel saga list [--state S]` and `keel saga show ID`: orchestrated sagas' logs
 * in keel server (tx/saga_view.h); `keel saga list --choreo STREAM`: choreographed sagas'
 * states beside their stream (tx/choreo_view.h). */
#include "cli/cli.h"
#include "cli/cluster.h"

#include "client/client.h"
#include "tx/choreo_view.h"
#include "tx/saga_view.h"

#include <stdio.h>
#include <string.h>

static int usage(FILE *to, int rc)
{
    fprintf(
        to,
        "usage: keel saga list [--state STATE] (--addr host:port[,host:port...] | --cluster DIR)\n"
        "       keel saga list --choreo STREAM [--state running|needs_attention] (--addr ...)\n"
        "       keel saga show ID (--addr host:port[,host:port...] | --cluster DIR)\n"
        "Reads the sagas' logs in keel server (saga:<id>:log, written by the orchestrator).\n"
        "  list   one line per saga, \"ID STATE records=N\", sorted by id, then\n"
        "         \"total N: STATE COUNT ...\"; --state keeps one state: new, running,\n"
        "         compensating, done, compensated, needs_attention\n"
        "  list --choreo STREAM   choreographed sagas on STREAM that a deadline watcher\n"
        "         holds as running (\"ID running deadline_ms=MS\") or that need attention\n"
        "         (\"ID needs_attention \\\"WHY\\\"\"), sorted by id; ended sagas are not kept\n"
        "  show   one line per record, \"SEQ TIME_MS TYPE STEP DATA\", then \"state STATE\"\n"
        "Exit status: 0; 1 when keel cannot be read or the saga does not exist; 2 for bad\n"
        "arguments.\n");
    return rc;
}

typedef struct saga_opts {
    char addrs_text[KEEL_CLIENT_SEEDS_MAX * 64];
    const char *seeds[KEEL_CLIENT_SEEDS_MAX];
    size_t seeds_n;
    const char *dir, *verb, *id, *choreo;
    int state; /* -1: every state */
    keel_cluster_t cl;
} saga_opts_t;

static int parse(int argc, char **argv, saga_opts_t *o)
{
    const char *addr = NULL;
    o->state = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return 1;
        if (strcmp(a, "--addr") == 0 || strcmp(a, "--cluster") == 0 || strcmp(a, "--state") == 0 ||
            strcmp(a, "--choreo") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "keel saga: %s needs a value\n", a);
                return -1;
            }
            const char *v = argv[++i];
            if (a[2] == 'a')
                addr = v;
            else if (strcmp(a, "--choreo") == 0)
                o->choreo = v;
            else if (a[2] == 'c')
                o->dir = v;
            else {
                keel_saga_state_t st;
                if (keel_saga_state_parse(v, &st) != 0) {
                    fprintf(stderr,
                            "keel saga: --state '%s': expected one of new, running, "
                            "compensating, done, compensated, needs_attention\n",
                            v);
                    return -1;
                }
                o->state = (int)st;
            }
        } else if (strncmp(a, "--", 2) == 0) {
            fprintf(stderr, "keel saga: unknown option %s\n", a);
            return -1;
        } else if (o->verb == NULL)
            o->verb = a;
        else if (o->id == NULL)
            o->id = a;
        else {
            fprintf(stderr, "keel saga: unexpected argument %s\n", a);
            return -1;
        }
    }
    if (o->verb == NULL || (addr == NULL) == (o->dir == NULL))
        return -1;
    if (strcmp(o->verb, "list") == 0
            ? o->id != NULL
            : strcmp(o->verb, "show") != 0 || o->id == NULL || o->state >= 0 || o->choreo)
        return -1;
    if (addr) {
        if (strlen(addr) >= sizeof(o->addrs_text)) {
            fprintf(stderr, "keel saga: --addr too long\n");
            return -1;
        }
        snprintf(o->addrs_text, sizeof(o->addrs_text), "%s", addr);
        for (char *p = o->addrs_text, *tok; (tok = strsep(&p, ",")) != NULL;) {
            if (*tok == '\0')
                continue;
            if (o->seeds_n == KEEL_CLIENT_SEEDS_MAX) {
                fprintf(stderr, "keel saga: more than %d addresses\n", KEEL_CLIENT_SEEDS_MAX);
                return -1;
            }
            o->seeds[o->seeds_n++] = tok;
        }
    } else {
        char err[256];
        if (keel_cluster_load(o->dir, &o->cl, err, sizeof(err)) != 0) {
            fprintf(stderr, "keel saga: %s\n", err);
            return -1;
        }
        for (size_t i = 0; i < o->cl.n && o->seeds_n < KEEL_CLIENT_SEEDS_MAX; i++)
            o->seeds[o->seeds_n++] = o->cl.nodes[i].client;
    }
    return o->seeds_n > 0 ? 0 : -1;
}

int keel_cli_saga(int argc, char **argv)
{
    saga_opts_t o;
    memset(&o, 0, sizeof(o));
    int p = parse(argc, argv, &o);
    if (p != 0)
        return usage(p > 0 ? stdout : stderr, p > 0 ? 0 : 2);
    keel_errmsg_t msg = {{0}};
    int rc = o.choreo ? keel_choreo_view_list(o.seeds, o.seeds_n, o.choreo, o.state, stdout, &msg)
             : strcmp(o.verb, "list") == 0
                 ? keel_saga_view_list(o.seeds, o.seeds_n, o.state, stdout, &msg)
                 : keel_saga_view_show(o.seeds, o.seeds_n, o.id, stdout, &msg);
    if (rc != 0)
        fprintf(stderr, "keel saga: %s\n", msg.text);
    return rc == 0 ? 0 : rc == KEEL_EINVAL ? 2 : 1;
}
