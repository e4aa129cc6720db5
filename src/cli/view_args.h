/* view_args.h - the arguments of the commands that read logs in keel server for people
 * (`keel saga list|show`, `keel 2pc list|show`): a verb, an id, --state, and where keel is. */
#ifndef KEEL_CLI_VIEW_ARGS_H
#define KEEL_CLI_VIEW_ARGS_H

#include "cli/cluster.h"
#include "client/client.h"

#define KEEL_CLI_ADDR_BYTES_MAX 64u /* one host:port of --addr */

/*
 *   keel CMD list [--state STATE] [EXTRA VALUE] (--addr host:port[,host:port...] | --cluster DIR)
 *   keel CMD show ID (--addr ... | --cluster DIR)
 * --cluster DIR takes the client addresses of the nodes in DIR/cluster.json.
 */
typedef struct keel_cli_view_args {
    /* in */
    const char *cmd;                                  /* "saga", "2pc": for messages */
    int (*state_parse)(const char *name, int *state); /* 0, or nonzero for an unknown name */
    const char *states;                               /* the names, for the message */
    const char *extra;                                /* one more option with a value, or NULL */
    /* out */
    const char *verb, *id, *extra_value;
    int state; /* -1: every state */
    const char *seeds[KEEL_CLIENT_SEEDS_MAX];
    size_t seeds_n;
    char addrs_text[KEEL_CLIENT_SEEDS_MAX * KEEL_CLI_ADDR_BYTES_MAX];
    keel_cluster_t cl;
} keel_cli_view_args_t;

/* 0; 1 when help was asked for; -1 for bad arguments (what is wrong said on stderr, unless
 * it is only a missing piece, which the usage shows). */
int keel_cli_view_args_parse(int argc, char **argv, keel_cli_view_args_t *a);

#endif
