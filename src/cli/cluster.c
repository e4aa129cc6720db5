/* cluster.c - cluster.json, admin-HTTP status queries, stopping recorded processes. */
#define _GNU_SOURCE /* setns */
#include "cli/cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STATUS_TIMEOUT_MS 1000

static int fail(char *err, size_t cap, const char *fmt, const char *arg)
{
    snprintf(err, cap, fmt, arg);
    return -1;
}

/* "NETNS=HOST,..." into cl->regions. 0 or -1 (said in err). */
static int parse_regions(const char *spec, keel_cluster_t *cl, char *err, size_t err_cap)
{
    for (const char *p = spec; p && *p;) {
        size_t len = strcspn(p, ","), eq = strcspn(p, "=");
        struct in_addr probe;
        keel_cluster_region_t *r = &cl->regions[cl->regions_n];
        if (cl->regions_n == KEEL_CLUSTER_REGIONS_MAX || eq >= len || eq == 0 ||
            eq >= sizeof(r->netns) || len - eq - 1 >= sizeof(r->host))
            return fail(err, err_cap, "regions '%s': expected NETNS=HOST,... (at most 8)", spec);
        snprintf(r->netns, sizeof(r->netns), "%.*s", (int)eq, p);
        snprintf(r->host, sizeof(r->host), "%.*s", (int)(len - eq - 1), p + eq + 1);
        if (inet_pton(AF_INET, r->host, &probe) != 1)
            return fail(err, err_cap, "regions: '%s' is not an IPv4 address", r->host);
        cl->regions_n++;
        p += len + (p[len] == ',');
    }
    return 0;
}

const keel_cluster_region_t *keel_cluster_place(const keel_cluster_t *cl, int i)
{
    return cl->regions_n > 0 ? &cl->regions[(size_t)i % cl->regions_n] : NULL;
}

int keel_cluster_enter_netns(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    char path[KEEL_CLUSTER_NETNS_BYTES + 32];
    snprintf(path, sizeof(path), "/var/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = setns(fd, CLONE_NEWNET);
    close(fd);
    return rc;
}

int keel_cluster_create(const char *dir, int n, int base, const char *regions, keel_cluster_t *cl,
                        char *err, size_t err_cap)
{
    memset(cl, 0, sizeof(*cl));
    if (parse_regions(regions, cl, err, err_cap) != 0)
        return -1;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return fail(err, err_cap, "cannot create %s", dir);
    if (realpath(dir, cl->dir) == NULL)
        return fail(err, err_cap, "cannot resolve %s", dir);
    cl->n = (size_t)n;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        keel_cluster_node_t *nd = &cl->nodes[i];
        const keel_cluster_region_t *r = keel_cluster_place(cl, i);
        const char *host = r ? r->host : "127.0.0.1";
        snprintf(nd->name, sizeof(nd->name), "n%d", i + 1);
        snprintf(nd->netns, sizeof(nd->netns), "%s", r ? r->netns : "");
        /* host: an IPv4 address (parse_regions checked it), so "%.40s" never cuts */
        snprintf(nd->client, sizeof(nd->client), "%.40s:%d", host, base + i);
        snprintf(nd->peer, sizeof(nd->peer), "%.40s:%d", host, base + 100 + i);
        snprintf(nd->http, sizeof(nd->http), "%.40s:%d", host, base + 200 + i);
        /* not "%s" of nd->name: GCC 12 -O0 sees two fields of *cl and fails -Werror=restrict */
        snprintf(nd->data_dir, sizeof(nd->data_dir), "%.900s/n%d", cl->dir, i + 1);
        off += (size_t)snprintf(cl->initial_cluster + off, sizeof(cl->initial_cluster) - off,
                                "%s%s=%s", i ? "," : "", nd->name, nd->peer);
    }
    return 0;
}

static void copy_str(char *dst, size_t cap, json_t *j)
{
    const char *s = json_string_value(j);
    snprintf(dst, cap, "%s", s ? s : "");
}

int keel_cluster_load(const char *path, keel_cluster_t *cl, char *err, size_t err_cap)
{
    memset(cl, 0, sizeof(*cl));
    char file[KEEL_CLUSTER_PATH_BYTES + 32];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(file, sizeof(file), "%.1000s/cluster.json", path);
    else
        snprintf(file, sizeof(file), "%.1000s", path);
    json_error_t je;
    json_t *root = json_load_file(file, 0, &je);
    if (root == NULL)
        return fail(err, err_cap, "cannot read %s", file);
    copy_str(cl->dir, sizeof(cl->dir), json_object_get(root, "dir"));
    copy_str(cl->initial_cluster, sizeof(cl->initial_cluster),
             json_object_get(root, "initial_cluster"));
    json_t *nodes = json_object_get(root, "nodes");
    size_t i;
    json_t *v;
    json_array_foreach(nodes, i, v)
    {
        if (i >= KEEL_CLUSTER_NODES_MAX)
            break;
        keel_cluster_node_t *nd = &cl->nodes[cl->n++];
        copy_str(nd->name, sizeof(nd->name), json_object_get(v, "name"));
        copy_str(nd->client, sizeof(nd->client), json_object_get(v, "client"));
        copy_str(nd->peer, sizeof(nd->peer), json_object_get(v, "peer"));
        copy_str(nd->http, sizeof(nd->http), json_object_get(v, "http"));
        copy_str(nd->data_dir, sizeof(nd->data_dir), json_object_get(v, "data_dir"));
        copy_str(nd->netns, sizeof(nd->netns), json_object_get(v, "netns"));
        nd->pid = (pid_t)json_integer_value(json_object_get(v, "pid"));
    }
    json_array_foreach(json_object_get(root, "regions"), i, v)
    {
        if (cl->regions_n == KEEL_CLUSTER_REGIONS_MAX)
            break;
        keel_cluster_region_t *r = &cl->regions[cl->regions_n++];
        copy_str(r->netns, sizeof(r->netns), json_object_get(v, "netns"));
        copy_str(r->host, sizeof(r->host), json_object_get(v, "host"));
    }
    json_decref(root);
    if (cl->n == 0 || cl->initial_cluster[0] == '\0')
        return fail(err, err_cap, "%s describes no nodes", file);
    return 0;
}

int keel_cluster_save(const keel_cluster_t *cl, char *err, size_t err_cap)
{
    json_t *nodes = json_array();
    for (size_t i = 0; i < cl->n; i++) {
        const keel_cluster_node_t *nd = &cl->nodes[i];
        json_array_append_new(nodes,
                              json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i}", "name", nd->name, "client",
                                        nd->client, "peer", nd->peer, "http", nd->http, "data_dir",
                                        nd->data_dir, "netns", nd->netns, "pid", (int)nd->pid));
    }
    json_t *regions = json_array();
    for (size_t i = 0; i < cl->regions_n; i++)
        json_array_append_new(regions, json_pack("{s:s,s:s}", "netns", cl->regions[i].netns, "host",
                                                 cl->regions[i].host));
    json_t *root = json_pack("{s:s,s:s,s:o,s:o}", "dir", cl->dir, "initial_cluster",
                             cl->initial_cluster, "nodes", nodes, "regions", regions);
    char file[KEEL_CLUSTER_PATH_BYTES + 32], tmp[KEEL_CLUSTER_PATH_BYTES + 40];
    snprintf(file, sizeof(file), "%.1000s/cluster.json", cl->dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    int rc = root ? json_dump_file(root, tmp, JSON_INDENT(2)) : -1;
    json_decref(root);
    if (rc != 0 || rename(tmp, file) != 0)
        return fail(err, err_cap, "cannot write %s", file);
    return 0;
}

int keel_cluster_split_addr(const char *addr, char *host, size_t host_cap, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= host_cap)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

/* A TCP socket and the IPv4 address of "host:port"; the socket, or -1. */
static int socket_for(const char *addr, struct sockaddr_in *sa)
{
    char host[64];
    int port;
    if (keel_cluster_split_addr(addr, host, sizeof(host), &port) != 0)
        return -1;
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return -1;
    return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

int keel_cluster_port_free(const char *addr)
{
    struct sockaddr_in sa;
    int fd = socket_for(addr, &sa);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 1 : errno == EADDRINUSE ? 0 : -1;
    close(fd);
    return rc;
}

int keel_cluster_port_free_in(const char *netns, const char *addr)
{
    if (netns == NULL || netns[0] == '\0')
        return keel_cluster_port_free(addr);
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0 || keel_cluster_enter_netns(netns) != 0) {
        if (home >= 0)
            close(home);
        return -1;
    }
    int rc = keel_cluster_port_free(addr);
    if (setns(home, CLONE_NEWNET) != 0) {
        fprintf(stderr, "keel: cannot return to its network namespace: %s\n", strerror(errno));
        exit(1);
    }
    close(home);
    return rc;
}

/* A blocking HTTP/1.0 GET with a deadline; body into out (NUL-terminated). */
int keel_cluster_http_get(const char *addr, const char *path, char *out, size_t cap)
{
    struct sockaddr_in sa;
    int fd = socket_for(addr, &sa);
    if (fd < 0)
        return -1;
    struct timeval tv = {STATUS_TIMEOUT_MS / 1000, (STATUS_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || write(fd, req, (size_t)n) != n)
        goto fail;
    for (;;) {
        ssize_t k = read(fd, out + got, cap - 1 - got);
        if (k < 0)
            goto fail;
        if (k == 0 || got + (size_t)k >= cap - 1) {
            got += k > 0 ? (size_t)k : 0;
            break;
        }
        got += (size_t)k;
    }
    close(fd);
    out[got] = '\0';
    char *body = strstr(out, "\r\n\r\n");
    if (body == NULL)
        return -1;
    int status = atoi(out + 9);
    memmove(out, body + 4, strlen(body + 4) + 1);
    return status;
fail:
    close(fd);
    return -1;
}

int keel_cluster_node_status(const keel_cluster_node_t *n, keel_cluster_status_t *s)
{
    char body[8192];
    memset(s, 0, sizeof(*s));
    if (keel_cluster_http_get(n->http, "/status", body, sizeof(body)) != 200)
        return -1;
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    if (j == NULL)
        return -1;
    copy_str(s->role, sizeof(s->role), json_object_get(j, "role"));
    copy_str(s->leader, sizeof(s->leader), json_object_get(j, "leader"));
    s->term = (uint64_t)json_integer_value(json_object_get(j, "term"));
    s->commit = (uint64_t)json_integer_value(json_object_get(j, "commit_index"));
    s->applied = (uint64_t)json_integer_value(json_object_get(j, "applied_index"));
    s->keys = (uint64_t)json_integer_value(json_object_get(j, "keys"));
    s->healthy = json_is_true(json_object_get(j, "healthy"));
    json_decref(j);
    return 0;
}

int keel_cluster_find_leader(const keel_cluster_t *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        keel_cluster_status_t s;
        if (keel_cluster_node_status(&cl->nodes[i], &s) == 0 && strcmp(s.role, "leader") == 0)
            return (int)i;
    }
    return -1;
}

int keel_cluster_pid_is_node(pid_t pid, const char *data_dir)
{
    char path[64], cmd[4096];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t n = fread(cmd, 1, sizeof(cmd) - 1, f);
    fclose(f);
    cmd[n] = '\0';
    /* argv is NUL-separated: "keel\0server\0...\0--data-dir\0DIR\0..." */
    if (n == 0 || strlen(cmd) + 1 >= n || strcmp(cmd + strlen(cmd) + 1, "server") != 0)
        return 0;
    for (size_t i = 0; i < n; i += strlen(cmd + i) + 1)
        if (strcmp(cmd + i, "--data-dir") == 0 && i + 11 < n)
            return strcmp(cmd + i + 11, data_dir) == 0;
    return 0;
}

static int alive(const keel_cluster_node_t *nd)
{
    int st;
    if (nd->pid <= 0)
        return 0;
    if (waitpid(nd->pid, &st, WNOHANG) == nd->pid)
        return 0; /* our child, now reaped */
    return kill(nd->pid, 0) == 0 && keel_cluster_pid_is_node(nd->pid, nd->data_dir);
}

int keel_cluster_stop(keel_cluster_t *cl, int wait_ms)
{
    int running = 0;
    for (size_t i = 0; i < cl->n; i++)
        if (alive(&cl->nodes[i])) {
            kill(cl->nodes[i].pid, SIGTERM);
            running++;
        }
    for (int waited = 0; waited < wait_ms; waited += 50) {
        int left = 0;
        for (size_t i = 0; i < cl->n; i++)
            left += alive(&cl->nodes[i]);
        if (left == 0)
            return running;
        usleep(50 * 1000);
    }
    for (size_t i = 0; i < cl->n; i++)
        if (alive(&cl->nodes[i]))
            kill(cl->nodes[i].pid, SIGKILL);
    return running;
}
