/* twopc_cmd.c - `keel 2pc list [--state S]` and `keel 2pc show ID`: two-phase commit
 * decision logs in keel server (tx/twopc_view.h). */
#include "cli/cli.h"
#include "cli/view_args.h"

#include "tx/twopc_view.h"

#include <stdio.h>
#include <string.h>

static int usage(FILE *to, int rc)
{
    fprintf(
        to,
        "usage: keel 2pc list [--state STATE] (--addr host:port[,host:port...] | --cluster DIR)\n"
        "       keel 2pc show ID (--addr host:port[,host:port...] | --cluster DIR)\n"
        "Reads the two-phase commit decision logs in keel server (2pc:<id>:log, written by the\n"
        "coordinator, tx/twopc.h).\n"
        "  list   one line per transaction, \"ID STATE participants=A,B,...\", sorted by id,\n"
        "         then \"total N: STATE COUNT ...\"; a log that does not read back is listed\n"
        "         as \"ID damaged \\\"entry N: WHY\\\"\". --state keeps one state:\n"
        "           preparing    BEGIN logged, no decision (participants may be in doubt)\n"
        "           committing   COMMIT logged, being delivered\n"
        "           aborting     ABORT logged, being delivered\n"
        "           committed    COMMIT delivered to every participant (END)\n"
        "           aborted      ABORT delivered (END)\n"
        "  show   one line per record, \"SEQ TIME_MS TYPE ...\": begin with its participants and\n"
        "         input, commit, abort with why, end; then \"state STATE\"\n"
        "Exit status: 0; 1 when keel cannot be read, the transaction does not exist, or a\n"
        "record is damaged; 2 for bad arguments.\n");
    return rc;
}

static int state_parse(const char *name, int *state)
{
    keel_twopc_state_t st;
    if (keel_twopc_view_state_parse(name, &st) != 0)
        return -1;
    *state = (int)st;
    return 0;
}

int keel_cli_twopc(int argc, char **argv)
{
    keel_cli_view_args_t o;
    memset(&o, 0, sizeof(o));
    o.cmd = "2pc";
    o.state_parse = state_parse;
    o.states = "preparing, committing, aborting, committed, aborted";
    int p = keel_cli_view_args_parse(argc, argv, &o);
    if (p != 0)
        return usage(p > 0 ? stdout : stderr, p > 0 ? 0 : 2);
    keel_errmsg_t msg = {{0}};
    int rc = strcmp(o.verb, "list") == 0
                 ? keel_twopc_view_list(o.seeds, o.seeds_n, o.state, stdout, &msg)
                 : keel_twopc_view_show(o.seeds, o.seeds_n, o.id, stdout, &msg);
    if (rc != 0)
        fprintf(stderr, "keel 2pc: %s\n", msg.text);
    return rc == 0 ? 0 : rc == KEEL_EINVAL ? 2 : 1;
}
