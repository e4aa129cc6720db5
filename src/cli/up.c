/* up.c - `keel up`, `keel down`, `keel status`: a local cluster of real processes on loopback. */
#include "cli/cli.h"

#include "cli/cluster.h"
#include "cli/member.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Port layout for --base-port P (default 7001), node i counted from 0:
 *   client (RESP) P + i      peer P + 100 + i      HTTP P + 200 + i
 * DIR/cluster.json records names, addresses, data directories and pids;
 * `keel up` on a DIR that has one restarts that cluster from its data.
 */
#define UP_WAIT_MS 15000
/* keel server flags given after `--`, passed to every node as they are. */
#define UP_SERVER_ARGS_MAX 64

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static void usage_up(void)
{
    printf("usage: keel up [--nodes N] --dir DIR [--base-port P] [--detach] [--log-level L]\n"
           "               [-- keel server flags...]\n\n"
           "Starts N (default 3) keel server processes on 127.0.0.1, waits for a leader,\n"
           "prints the nodes and writes DIR/cluster.json. Node i (from 0) listens for\n"
           "clients on P+i, peers on P+100+i and HTTP on P+200+i (P defaults to 7001).\n"
           "Without --detach it stays in the foreground; Ctrl-C stops every node.\n"
           "On a DIR that already holds a cluster.json, the same cluster restarts from\n"
           "its data (same names, ports and members); nodes still running are kept.\n"
           "Flags after -- go to every keel server (e.g. -- --lease-reads 1); they are\n"
           "not recorded: give them again when restarting the cluster.\n");
}

static pid_t spawn_node(const keel_cluster_t *cl, size_t i, const char *log_level,
                        char *const *extra, int extra_n)
{
    const keel_cluster_node_t *nd = &cl->nodes[i];
    char log_path[KEEL_CLUSTER_PATH_BYTES + sizeof(nd->name) + 8]; /* dir/name.log */
    snprintf(log_path, sizeof(log_path), "%s/%s.log", cl->dir, nd->name);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    setsid(); /* a Ctrl-C in the terminal reaches `keel up`, which stops the nodes in order */
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    char *fixed[] = {"keel",
                     "server",
                     "--name",
                     (char *)nd->name,
                     "--data-dir",
                     (char *)nd->data_dir,
                     "--listen-client",
                     (char *)nd->client,
                     "--listen-http",
                     (char *)nd->http,
                     "--initial-cluster",
                     (char *)cl->initial_cluster,
                     "--log-level",
                     (char *)(log_level ? log_level : "info")};
    char *args[sizeof(fixed) / sizeof(fixed[0]) + UP_SERVER_ARGS_MAX + 1];
    size_t n = 0;
    for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
        args[n++] = fixed[k];
    for (int k = 0; k < extra_n; k++)
        args[n++] = extra[k];
    args[n] = NULL;
    execv("/proc/self/exe", args);
    fprintf(stderr, "keel up: exec failed: %s\n", strerror(errno));
    _exit(127);
}

static int wait_for_leader(keel_cluster_t *cl, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        for (size_t i = 0; i < cl->n; i++) {
            int st = 0;
            if (cl->nodes[i].pid > 0 && waitpid(cl->nodes[i].pid, &st, WNOHANG) > 0) {
                fprintf(stderr, "keel up: node %s exited early; see %s/%s.log\n", cl->nodes[i].name,
                        cl->dir, cl->nodes[i].name);
                cl->nodes[i].pid = 0;
                return -1;
            }
        }
        /* Up means every node answers and knows the leader (a restarted node too). */
        keel_cluster_status_t s;
        size_t ready = 0;
        for (size_t i = 0; i < cl->n; i++)
            ready += keel_cluster_node_status(&cl->nodes[i], &s) == 0 && s.leader[0] && s.healthy;
        if (ready == cl->n)
            return 0;
        usleep(100 * 1000);
    }
    fprintf(stderr, "keel up: not every node knows a leader after %d ms\n", timeout_ms);
    return -1;
}

static void print_table(const keel_cluster_t *cl)
{
    printf("%-6s %-22s %-22s %-22s %s\n", "NAME", "CLIENT (RESP)", "PEER", "HTTP", "PID");
    for (size_t i = 0; i < cl->n; i++) {
        const keel_cluster_node_t *n = &cl->nodes[i];
        printf("%-6s %-22s %-22s %-22s %d\n", n->name, n->client, n->peer, n->http, (int)n->pid);
    }
    printf("cluster file: %s/cluster.json\n", cl->dir);
    fflush(stdout);
}

int keel_cli_up(int argc, char **argv)
{
    int nodes = 3, base = 7001, detach = 0;
    const char *dir = NULL, *log_level = NULL;
    char *const *extra = NULL;
    int extra_n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            extra = argv + i + 1;
            extra_n = argc - i - 1;
            break;
        }
        if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
            nodes = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--base-port") == 0 && i + 1 < argc)
            base = atoi(argv[++i]);
        else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc)
            log_level = argv[++i];
        else if (strcmp(argv[i], "--detach") == 0)
            detach = 1;
        else {
            usage_up();
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    if (extra_n > UP_SERVER_ARGS_MAX) {
        fprintf(stderr, "keel up: at most %d server flags after --\n", UP_SERVER_ARGS_MAX);
        return 2;
    }
    if (dir == NULL || nodes < 1 || nodes > KEEL_CLUSTER_NODES_MAX || base < 1 ||
        base + 200 + nodes > 65535) {
        usage_up();
        return 2;
    }
    keel_cluster_t cl;
    char err[256];
    if (keel_cluster_load(dir, &cl, err, sizeof(err)) == 0) {
        printf("restarting the cluster recorded in %s/cluster.json\n", dir);
    } else if (keel_cluster_create(dir, nodes, base, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel up: %s\n", err);
        return 1;
    }
    /* Nodes still running are kept: `keel up` brings the whole cluster up, so after a
     * crash it restarts just the nodes that are down. */
    int started = 0;
    for (size_t i = 0; i < cl.n; i++) {
        if (cl.nodes[i].pid > 0 && kill(cl.nodes[i].pid, 0) == 0 &&
            keel_cluster_pid_is_node(cl.nodes[i].pid, cl.nodes[i].data_dir))
            continue;
        cl.nodes[i].pid = spawn_node(&cl, i, log_level, extra, extra_n);
        started++;
    }
    if (started < (int)cl.n)
        printf("%d node(s) were running; started %d\n", (int)cl.n - started, started);
    if (keel_cluster_save(&cl, err, sizeof(err)) != 0)
        fprintf(stderr, "keel up: %s\n", err);
    int ok = wait_for_leader(&cl, UP_WAIT_MS) == 0;
    print_table(&cl);
    if (!ok) {
        keel_cluster_stop(&cl, 5000);
        return 1;
    }
    if (detach)
        return 0;
    printf("cluster is up; Ctrl-C stops it\n");
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    while (!got_signal) {
        pause();
    }
    printf("\nstopping...\n");
    keel_cluster_stop(&cl, 10000);
    return 0;
}

int keel_cli_down(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
    if (dir == NULL) {
        fprintf(stderr, "usage: keel down --dir DIR\n");
        return 2;
    }
    keel_cluster_t cl;
    char err[256];
    if (keel_cluster_load(dir, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel down: %s\n", err);
        return 1;
    }
    int stopped = keel_cluster_stop(&cl, 10000);
    printf("stopped %d node(s)\n", stopped);
    return 0;
}

/*
 * The configuration as the first node that answers sees it: members added at run time
 * (keel member add, keel server --join) are not in cluster.json but show here.
 */
static void print_members(const keel_cluster_t *cl)
{
    const char *argv[] = {"KEEL.CLUSTER", "MEMBERS"};
    for (size_t i = 0; i < cl->n; i++) {
        keel_client_reply_t r;
        char err[256];
        if (keel_cli_call(cl->nodes[i].client, 2, argv, &r, err, sizeof(err)) != 0)
            continue;
        const keel_resp_value_t *v = r.v;
        if (v->type == KEEL_RESP_ARRAY) {
            printf("\nmembers (as %s sees them):\n", cl->nodes[i].name);
            for (size_t k = 0; k < v->elems_len; k++) {
                const keel_resp_value_t *m = &v->elems[k];
                if (m->type != KEEL_RESP_ARRAY || m->elems_len != 6)
                    continue;
                int known = 0;
                for (size_t j = 0; j < cl->n; j++)
                    known |=
                        strlen(cl->nodes[j].name) == m->elems[0].str.len &&
                        memcmp(cl->nodes[j].name, m->elems[0].str.ptr, m->elems[0].str.len) == 0;
                printf("  %-8.*s %-8.*s client %-22.*s%s\n", (int)m->elems[0].str.len,
                       (const char *)m->elems[0].str.ptr, (int)m->elems[3].str.len,
                       (const char *)m->elems[3].str.ptr, (int)m->elems[5].str.len,
                       (const char *)m->elems[5].str.ptr, known ? "" : "  (added at run time)");
            }
        }
        keel_client_reply_free(&r);
        return;
    }
}

int keel_cli_status(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: keel status --dir DIR\n"
                   "Each node's role, term and indexes (admin HTTP), then the members as the\n"
                   "first node that answers sees them (KEEL.CLUSTER MEMBERS over RESP).\n");
            return 0;
        }
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: keel status --dir DIR\n");
        return 2;
    }
    keel_cluster_t cl;
    char err[256];
    if (keel_cluster_load(dir, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel status: %s\n", err);
        return 1;
    }
    printf("%-6s %-8s %-12s %-6s %-8s %-10s %-10s %-10s %s\n", "NAME", "PID", "ROLE", "TERM",
           "LEADER", "COMMIT", "APPLIED", "KEYS", "HEALTH");
    int down = 0;
    for (size_t i = 0; i < cl.n; i++) {
        keel_cluster_status_t s;
        if (keel_cluster_node_status(&cl.nodes[i], &s) != 0) {
            printf("%-6s %-8d %-12s\n", cl.nodes[i].name, (int)cl.nodes[i].pid, "unreachable");
            down++;
            continue;
        }
        printf("%-6s %-8d %-12s %-6llu %-8s %-10llu %-10llu %-10llu %s\n", cl.nodes[i].name,
               (int)cl.nodes[i].pid, s.role, (unsigned long long)s.term, s.leader,
               (unsigned long long)s.commit, (unsigned long long)s.applied,
               (unsigned long long)s.keys, s.healthy ? "ok" : "unavailable");
    }
    print_members(&cl);
    return down ? 1 : 0;
}
