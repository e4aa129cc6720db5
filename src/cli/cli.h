/* cli.h - the keel command's subcommand table and entry points. */
#ifndef KEEL_CLI_CLI_H
#define KEEL_CLI_CLI_H

#define KEEL_VERSION "0.1.0"

typedef struct keel_cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} keel_cli_cmd_t;

int keel_cli_server(int argc, char **argv);
int keel_cli_up(int argc, char **argv);
int keel_cli_down(int argc, char **argv);
int keel_cli_status(int argc, char **argv);
int keel_cli_bench(int argc, char **argv);
int keel_cli_watch(int argc, char **argv);
int keel_cli_proxy(int argc, char **argv);
int keel_cli_saga(int argc, char **argv);
int keel_cli_twopc(int argc, char **argv);

#endif
