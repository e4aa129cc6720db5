/* up.c - `keel up`, `keel down`, `keel status`: a local cluster of real processes on loopback. */
#include "cli/cli.h"

#include "cli/cluster.h"
#include "cli/manifest.h"
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
/* --leader NAME: how long `keel up` waits for NAME to lead once asked */
#define UP_LEADER_WAIT_MS 10000
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
           "               [--manifest FILE] [--regions NETNS=HOST,...] [--leader NAME]\n"
           "               [-- keel server flags...]\n\n"
           "Starts N (default 3) keel server processes on 127.0.0.1, waits for a leader,\n"
           "prints the nodes and writes DIR/cluster.json. Node i (from 0) listens for\n"
           "clients on P+i, peers on P+100+i and HTTP on P+200+i (P defaults to 7001).\n"
           "Without --detach it stays in the foreground; Ctrl-C stops every node.\n"
           "On a DIR that already holds a cluster.json, the same cluster restarts from\n"
           "its data (same names, ports and members); nodes still running are kept.\n"
           "Flags after -- go to every keel server (e.g. -- --lease-reads 1); they are\n"
           "not recorded: give them again when restarting the cluster.\n"
           "With --manifest FILE, the cluster's shape comes from the file, and its services\n"
           "are started after it, in order, each instance waited for until it is ready\n"
           "(src/cli/manifest.h describes the file); `keel down` stops them first.\n"
           "With --regions, node i and instance i of every service run in region i %% R:\n"
           "inside network namespace NETNS, listening on HOST (made by keel-netdelay,\n"
           "which joins the regions with a delay; docs/shop.md). `keel up` reaches them\n"
           "through the operator's link, so start keel-netdelay with --operator.\n"
           "With --leader NAME, leadership is handed to node NAME once the cluster is up\n"
           "(KEEL.CLUSTER TRANSFER), and keel up waits until it leads: the region whose\n"
           "clients should pay no round trip to the leader. It is asked again whenever\n"
           "keel up runs; nothing moves it back by itself after a failure.\n");
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
    if (keel_cluster_enter_netns(nd->netns) != 0) {
        fprintf(stderr, "keel up: node %s: cannot enter network namespace %s: %s\n", nd->name,
                nd->netns, strerror(errno));
        _exit(127);
    }
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

#define NODE_ADDRS 3
static const char *const addr_flags[NODE_ADDRS] = {"--listen-client", "--listen-peer",
                                                   "--listen-http"};

/* The node's k-th address with the keel server flag that sets it. */
static const char *node_addr(const keel_cluster_node_t *nd, int k, const char **flag)
{
    *flag = addr_flags[k];
    return k == 0 ? nd->client : k == 1 ? nd->peer : nd->http;
}

/*
 * Says which of the node's ports another process holds; 1 if one does. Run before a
 * node starts (nothing is started if one is taken) and after one exits early.
 */
static int report_taken_ports(const keel_cluster_node_t *nd)
{
    int taken = 0;
    for (int k = 0; k < NODE_ADDRS; k++) {
        const char *flag, *addr = node_addr(nd, k, &flag);
        if (keel_cluster_port_free_in(nd->netns, addr) == 0) {
            fprintf(stderr, "keel up: %s (node %s's %s) is already in use by another process\n",
                    addr, nd->name, flag);
            taken = 1;
        }
    }
    return taken;
}

/* The last non-empty line of DIR/NAME.log, where a node that exited said why. */
static void last_log_line(const keel_cluster_t *cl, const keel_cluster_node_t *nd, char *out,
                          size_t cap)
{
    char path[KEEL_CLUSTER_PATH_BYTES + sizeof(nd->name) + 8];
    snprintf(path, sizeof(path), "%s/%s.log", cl->dir, nd->name);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[1024];
    while (fgets(line, sizeof(line), f))
        if (line[0] != '\n') {
            size_t n = strcspn(line, "\n");
            n = n < cap - 1 ? n : cap - 1;
            memcpy(out, line, n);
            out[n] = '\0';
        }
    fclose(f);
}

/* The pid that answers on the node's client port (INFO server's process_id), or -1. */
static pid_t answering_pid(const keel_cluster_node_t *nd)
{
    const char *argv[] = {"INFO", "server"};
    keel_client_reply_t r;
    char err[256];
    if (keel_cli_call(nd->client, 2, argv, &r, err, sizeof(err)) != 0)
        return -1;
    pid_t pid = -1;
    const keel_resp_value_t *v = r.v;
    if (v->type == KEEL_RESP_BULK) {
        char text[1024];
        snprintf(text, sizeof(text), "%.*s", (int)v->str.len, (const char *)v->str.ptr);
        const char *p = strstr(text, "process_id:");
        if (p != NULL)
            pid = (pid_t)atoi(p + strlen("process_id:"));
    }
    keel_client_reply_free(&r);
    return pid;
}

/*
 * 1 while node i's process runs: a node this `keel up` started must still be its child
 * (waitpid reaps it otherwise, and it is reported); a node kept from before must still
 * be a keel server on the node's data directory.
 */
static int node_running(const keel_cluster_t *cl, size_t i, int ours)
{
    const keel_cluster_node_t *nd = &cl->nodes[i];
    if (!ours)
        return kill(nd->pid, 0) == 0 && keel_cluster_pid_is_node(nd->pid, nd->data_dir);
    int st = 0;
    pid_t r = waitpid(nd->pid, &st, WNOHANG);
    if (r == 0)
        return 1;
    char line[512];
    last_log_line(cl, nd, line, sizeof(line));
    fprintf(
        stderr, "keel up: node %s (pid %d) exited early (%s %d); last line of %s/%s.log:\n  %s\n",
        nd->name, (int)nd->pid, r > 0 && WIFSIGNALED(st) ? "signal" : "status",
        r > 0 ? (WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)) : -1, cl->dir, nd->name, line);
    report_taken_ports(nd);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Up means every node is running, answers on its own ports (its client port answers
 * with its own pid: a server binds all three ports before it answers anything, so
 * another cluster answering on these ports is never taken for this one) and knows the
 * leader. Bounded by timeout_ms, plus one status query's own timeout.
 */
static int wait_until_up(const keel_cluster_t *cl, const int *ours, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    char why[KEEL_CLUSTER_NODES_MAX][160];
    for (;;) {
        size_t ready = 0;
        for (size_t i = 0; i < cl->n; i++) {
            const keel_cluster_node_t *nd = &cl->nodes[i];
            keel_cluster_status_t s;
            pid_t answers;
            if (!node_running(cl, i, ours[i]))
                return -1;
            if (keel_cluster_node_status(nd, &s) != 0)
                snprintf(why[i], sizeof(why[i]), "no answer on %s (HTTP)", nd->http);
            else if (!s.healthy || s.leader[0] == '\0')
                snprintf(why[i], sizeof(why[i]), "no leader known");
            else if ((answers = answering_pid(nd)) != nd->pid)
                snprintf(why[i], sizeof(why[i]), "%s answers as pid %d, not pid %d", nd->client,
                         (int)answers, (int)nd->pid);
            else if (node_running(cl, i, ours[i]) && snprintf(why[i], sizeof(why[i]), "up") > 0)
                ready++;
            else
                return -1;
        }
        if (ready == cl->n)
            return 0;
        if (now_ms() >= deadline)
            break;
        usleep(100 * 1000);
    }
    fprintf(stderr, "keel up: the cluster is not up after %d ms (UP_WAIT_MS):\n", timeout_ms);
    for (size_t i = 0; i < cl->n; i++)
        fprintf(stderr, "  %s (pid %d): %s\n", cl->nodes[i].name, (int)cl->nodes[i].pid, why[i]);
    return -1;
}

/*
 * Hands leadership to the node named `name` and waits until it leads (a node that is not
 * caught up refuses a transfer: asked again every 200 ms). 0, or -1 said on stderr.
 */
static int prefer_leader(const keel_cluster_t *cl, const char *name)
{
    int target = -1;
    for (size_t i = 0; i < cl->n; i++)
        if (strcmp(cl->nodes[i].name, name) == 0)
            target = (int)i;
    if (target < 0) {
        fprintf(stderr, "keel up: --leader %s: the cluster has no node of that name\n", name);
        return -1;
    }
    int64_t deadline = now_ms() + UP_LEADER_WAIT_MS;
    char why[256] = "no leader known";
    for (;;) {
        int leader = keel_cluster_find_leader(cl);
        if (leader == target)
            return 0;
        if (leader >= 0) {
            const char *argv[] = {"KEEL.CLUSTER", "TRANSFER", name};
            keel_client_reply_t r;
            if (keel_cli_call(cl->nodes[leader].client, 3, argv, &r, why, sizeof(why)) == 0) {
                if (r.v->type == KEEL_RESP_ERROR)
                    snprintf(why, sizeof(why), "%.*s", (int)r.v->str.len,
                             (const char *)r.v->str.ptr);
                keel_client_reply_free(&r);
            }
        }
        if (now_ms() >= deadline)
            break;
        usleep(200 * 1000);
    }
    fprintf(stderr, "keel up: %s does not lead after %d ms (UP_LEADER_WAIT_MS): %s\n", name,
            UP_LEADER_WAIT_MS, why);
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

/* Parses `keel up` flags; 0, or the exit status (0 after --help, 2 after a usage error). */
typedef struct up_args {
    int nodes, base, detach;
    const char *dir, *log_level, *manifest, *regions, *leader;
    char *const *extra; /* keel server flags after `--` */
    int extra_n;
} up_args_t;

static int parse_up(int argc, char **argv, up_args_t *a, int *code)
{
    *a = (up_args_t){.nodes = 3, .base = 7001};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        char *end = NULL;
        if (strcmp(f, "--") == 0) {
            a->extra = argv + i + 1;
            a->extra_n = argc - i - 1;
            break;
        }
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            usage_up();
            *code = 0;
            return -1;
        }
        if (strcmp(f, "--detach") == 0) {
            a->detach = 1;
            continue;
        }
        int takes = strcmp(f, "--nodes") == 0 || strcmp(f, "--dir") == 0 ||
                    strcmp(f, "--base-port") == 0 || strcmp(f, "--log-level") == 0 ||
                    strcmp(f, "--manifest") == 0 || strcmp(f, "--regions") == 0 ||
                    strcmp(f, "--leader") == 0;
        if (!takes) {
            fprintf(stderr, "keel up: unknown option '%s' (see keel up --help)\n", f);
            goto usage_error;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "keel up: %s needs a value\n", f);
            goto usage_error;
        }
        const char *v = argv[++i];
        long x = strtol(v, &end, 10);
        if (strcmp(f, "--dir") == 0)
            a->dir = v;
        else if (strcmp(f, "--log-level") == 0)
            a->log_level = v;
        else if (strcmp(f, "--manifest") == 0)
            a->manifest = v;
        else if (strcmp(f, "--regions") == 0)
            a->regions = v;
        else if (strcmp(f, "--leader") == 0)
            a->leader = v;
        else if (strcmp(f, "--nodes") == 0 && *end == '\0' && x >= 1 && x <= KEEL_CLUSTER_NODES_MAX)
            a->nodes = (int)x;
        else if (strcmp(f, "--base-port") == 0 && *end == '\0' && x >= 1 && x <= 65535 - 200 - 9)
            a->base = (int)x;
        else {
            fprintf(stderr, "keel up: %s '%s': expected an integer in %s\n", f, v,
                    strcmp(f, "--nodes") == 0 ? "1..9" : "1..65326");
            goto usage_error;
        }
    }
    if (a->extra_n > UP_SERVER_ARGS_MAX) {
        fprintf(stderr, "keel up: at most %d server flags after --\n", UP_SERVER_ARGS_MAX);
        goto usage_error;
    }
    if (a->dir == NULL) {
        fprintf(stderr, "keel up: --dir DIR is required (see keel up --help)\n");
        goto usage_error;
    }
    return 0;
usage_error:
    *code = 2;
    return -1;
}

int keel_cli_up(int argc, char **argv)
{
    up_args_t a;
    int code;
    if (parse_up(argc, argv, &a, &code) != 0)
        return code;
    static keel_manifest_t man;
    char err[512];
    if (a.manifest != NULL) {
        if (keel_manifest_load(a.manifest, &man, err, sizeof(err)) != 0) {
            fprintf(stderr, "keel up: %s\n", err);
            return 2;
        }
        a.nodes = man.nodes;
        a.base = man.base_port;
        if (a.extra_n == 0) {
            a.extra = man.server_args;
            a.extra_n = man.server_args_n;
        }
    }
    keel_cluster_t cl;
    if (keel_cluster_load(a.dir, &cl, err, sizeof(err)) == 0) {
        printf("restarting the cluster recorded in %s/cluster.json%s\n", a.dir,
               cl.regions_n ? ", in its regions" : "");
    } else if (keel_cluster_create(a.dir, a.nodes, a.base, a.regions, &cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel up: %s\n", err);
        return 1;
    }
    /* Nodes still running are kept: `keel up` brings the whole cluster up, so after a
     * crash it restarts just the nodes that are down. The ports of the others must be
     * free: nothing is started if one is taken. */
    int ours[KEEL_CLUSTER_NODES_MAX] = {0}, started = 0, taken = 0;
    for (size_t i = 0; i < cl.n; i++) {
        ours[i] = !(cl.nodes[i].pid > 0 && kill(cl.nodes[i].pid, 0) == 0 &&
                    keel_cluster_pid_is_node(cl.nodes[i].pid, cl.nodes[i].data_dir));
        if (ours[i])
            taken |= report_taken_ports(&cl.nodes[i]);
    }
    if (taken) {
        fprintf(stderr,
                "keel up: nothing started; stop what holds the port%s or choose another "
                "--base-port (with a new --dir)\n",
                cl.n > 1 ? "s" : "");
        return 1;
    }
    for (size_t i = 0; i < cl.n; i++)
        if (ours[i]) {
            cl.nodes[i].pid = spawn_node(&cl, i, a.log_level, a.extra, a.extra_n);
            started++;
        }
    if (started < (int)cl.n)
        printf("%d node(s) were running; started %d\n", (int)cl.n - started, started);
    if (keel_cluster_save(&cl, err, sizeof(err)) != 0)
        fprintf(stderr, "keel up: %s\n", err);
    if (wait_until_up(&cl, ours, UP_WAIT_MS) != 0) {
        /* Stop what this run started (the nodes kept from before stay), and record no
         * pid for it: `keel status` must not show a dead process as a node. */
        keel_cluster_t mine = cl;
        for (size_t i = 0; i < cl.n; i++) {
            if (!ours[i])
                mine.nodes[i].pid = 0;
            else
                cl.nodes[i].pid = 0;
        }
        keel_cluster_stop(&mine, 5000);
        if (keel_cluster_save(&cl, err, sizeof(err)) != 0)
            fprintf(stderr, "keel up: %s\n", err);
        fprintf(stderr, "keel up: stopped the %d node(s) it started; logs in %s\n", started,
                cl.dir);
        return 1;
    }
    if (a.leader != NULL && prefer_leader(&cl, a.leader) == 0)
        printf("%s leads\n", a.leader);
    print_table(&cl);
    if (a.manifest != NULL && keel_manifest_start(&man, &cl) != 0) {
        for (size_t i = 0; i < cl.n; i++)
            if (!ours[i])
                cl.nodes[i].pid = 0; /* nodes kept from before stay */
        keel_cluster_stop(&cl, 10000);
        fprintf(stderr, "keel up: stopped what it started; logs in %s\n", cl.dir);
        return 1;
    }
    if (a.detach)
        return 0;
    printf("%s is up; Ctrl-C stops it\n", a.manifest ? "everything" : "cluster");
    fflush(stdout);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    while (!got_signal) {
        pause();
    }
    printf("\nstopping...\n");
    keel_manifest_stop(cl.dir, 10000);
    keel_cluster_stop(&cl, 10000);
    return 0;
}

/*
 * `keel down` and `keel status` take one option, --dir DIR. Returns DIR; NULL when the
 * caller should return *code (0 after --help, 2 after a usage error).
 */
static const char *dir_only(int argc, char **argv, const char *usage, int *code)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("%s", usage);
            *code = 0;
            return NULL;
        }
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--dir") == 0) {
            fprintf(stderr, "keel %s: --dir needs a value (DIR)\n", argv[0]);
            *code = 2;
            return NULL;
        }
        fprintf(stderr, "keel %s: unexpected argument '%s'\n%s", argv[0], argv[i], usage);
        *code = 2;
        return NULL;
    }
    if (dir == NULL) {
        fprintf(stderr, "keel %s: --dir DIR is required\n%s", argv[0], usage);
        *code = 2;
    }
    return dir;
}

/* dir_only, then the cluster recorded in DIR: 0, or the exit code to return. */
static int cluster_arg(int argc, char **argv, const char *usage, keel_cluster_t *cl)
{
    int code;
    const char *dir = dir_only(argc, argv, usage, &code);
    if (dir == NULL)
        return code == 0 ? -1 : code; /* -1: --help was answered */
    char err[256];
    if (keel_cluster_load(dir, cl, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel %s: %s\n", argv[0], err);
        return 1;
    }
    return 0;
}

int keel_cli_down(int argc, char **argv)
{
    keel_cluster_t cl;
    int rc = cluster_arg(argc, argv,
                         "usage: keel down --dir DIR\n\n"
                         "Stops the services recorded in DIR/services.json (keel up --manifest),\n"
                         "last started first, then the nodes of the cluster recorded in\n"
                         "DIR/cluster.json (started with `keel up --detach`): SIGTERM, then\n"
                         "SIGKILL after 10 s. Its data is kept.\n",
                         &cl);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    int services = keel_manifest_stop(cl.dir, 10000);
    if (services > 0)
        printf("stopped %d service process(es)\n", services);
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
    keel_cluster_t cl;
    int rc = cluster_arg(argc, argv,
                         "usage: keel status --dir DIR\n\n"
                         "Shows each node of the cluster recorded in DIR/cluster.json: role, "
                         "term,\nleader, indexes, keys and health (admin HTTP), then the members "
                         "as the\nfirst node that answers sees them (KEEL.CLUSTER MEMBERS over "
                         "RESP).\nExits 1 if a node does not answer.\n",
                         &cl);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
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
    keel_manifest_print(cl.dir);
    return down ? 1 : 0;
}
