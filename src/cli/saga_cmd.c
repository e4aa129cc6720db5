/* saga_cmd.c - `keel saga list [--state S]` and `keel saga show ID`: orchestrated sagas' logs
 * in keel server (tx/saga_view.h); `keel saga list --choreo STREAM`: choreographed sagas'
 * states beside their stream (tx/choreo_view.h). */
#include "cli/cli.h"
#include "cli/view_args.h"

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

static int state_parse(const char *name, int *state)
{
    keel_saga_state_t st;
    if (keel_saga_state_parse(name, &st) != 0)
        return -1;
    *state = (int)st;
    return 0;
}

int keel_cli_saga(int argc, char **argv)
{
    keel_cli_view_args_t o;
    memset(&o, 0, sizeof(o));
    o.cmd = "saga";
    o.state_parse = state_parse;
    o.states = "new, running, compensating, done, compensated, needs_attention";
    o.extra = "--choreo";
    int p = keel_cli_view_args_parse(argc, argv, &o);
    if (p != 0)
        return usage(p > 0 ? stdout : stderr, p > 0 ? 0 : 2);
    keel_errmsg_t msg = {{0}};
    int rc = o.extra_value
                 ? keel_choreo_view_list(o.seeds, o.seeds_n, o.extra_value, o.state, stdout, &msg)
             : strcmp(o.verb, "list") == 0
                 ? keel_saga_view_list(o.seeds, o.seeds_n, o.state, stdout, &msg)
                 : keel_saga_view_show(o.seeds, o.seeds_n, o.id, stdout, &msg);
    if (rc != 0)
        fprintf(stderr, "keel saga: %s\n", msg.text);
    return rc == 0 ? 0 : rc == KEEL_EINVAL ? 2 : 1;
}
