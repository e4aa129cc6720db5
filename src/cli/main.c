/* main.c - the keel command: dispatches `keel <command> [args]` through one table. */
#include "cli/cli.h"
#include "cli/member.h"

#include <stdio.h>
#include <string.h>

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

/* Subcommands, as data (STYLE.md rule 10). Later issues add rows here. */
static const keel_cli_cmd_t commands[] = {
    {"version", "print the keel version", cmd_version},
    {"help", "list the commands", cmd_help},
    {"server", "run a keel server node (Raft-replicated KV over RESP)", keel_cli_server},
    {"up", "start a local cluster of keel servers (writes DIR/cluster.json)", keel_cli_up},
    {"down", "stop a cluster started with `keel up --detach`", keel_cli_down},
    {"status", "show each node's role, term and indexes", keel_cli_status},
    {"member", "list, add, remove members or transfer leadership", keel_cli_member},
    {"watch", "print a KEEL.WATCH change feed, resuming on another node with FROM", keel_cli_watch},
    {"proxy", "run keel proxy, the HTTP/1.1 gateway (--config FILE) or check a config (--check)",
     keel_cli_proxy},
    {"saga", "list orchestrated sagas by state, or show one's log (`keel saga list|show`)",
     keel_cli_saga},
    {"2pc", "list two-phase commit transactions by state, or show one's decision log",
     keel_cli_twopc},
    {"bench", "load generators: `keel bench kv` (RESP GET/SET, latency, history)", keel_cli_bench},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* True if the command's arguments ask for help (`keel <command> --help`). */
static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        printf("usage: keel version\n\nPrints the keel version (also `keel --version`).\n");
        return 0;
    }
    printf("keel %s\n", KEEL_VERSION);
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    printf("usage: keel <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        printf("  %-12s %s\n", commands[i].name, commands[i].summary);
    printf("\n`keel <command> --help` describes a command's options.\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        cmd_help(0, NULL);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        name = "help";
    if (strcmp(name, "--version") == 0)
        name = "version";
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "keel: unknown command '%s' (try `keel help`)\n", argv[1]);
    return 2;
}
