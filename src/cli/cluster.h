/* cluster.h - the local cluster file (DIR/cluster.json) and talking to its nodes' admin HTTP. */
#ifndef KEEL_CLI_CLUSTER_H
#define KEEL_CLI_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KEEL_CLUSTER_NODES_MAX 9
#define KEEL_CLUSTER_PATH_BYTES 1024
#define KEEL_CLUSTER_REGIONS_MAX 8
#define KEEL_CLUSTER_NETNS_BYTES 64

/*
 * A region: a network namespace (`ip netns add NAME`) and the address the processes placed
 * in it listen on (keel-netdelay joins the regions, tools/netdelay/main.c). Node i and
 * instance i of every service go to region i % regions_n. Without regions everything runs
 * here, on 127.0.0.1.
 */
typedef struct keel_cluster_region {
    char netns[KEEL_CLUSTER_NETNS_BYTES];
    char host[64];
} keel_cluster_region_t;

typedef struct keel_cluster_node {
    char name[32];
    char client[64], peer[64], http[64];
    char data_dir[KEEL_CLUSTER_PATH_BYTES];
    char netns[KEEL_CLUSTER_NETNS_BYTES]; /* "" : this namespace */
    pid_t pid;
} keel_cluster_node_t;

typedef struct keel_cluster {
    char dir[KEEL_CLUSTER_PATH_BYTES];
    char initial_cluster[KEEL_CLUSTER_NODES_MAX * 100];
    keel_cluster_node_t nodes[KEEL_CLUSTER_NODES_MAX];
    size_t n;
    keel_cluster_region_t regions[KEEL_CLUSTER_REGIONS_MAX];
    size_t regions_n;
} keel_cluster_t;

/*
 * A new cluster layout in dir (created): n nodes, ports from base (see up.c), placed in the
 * regions of `regions` ("NETNS=HOST,NETNS=HOST,...", NULL or "" for none).
 */
int keel_cluster_create(const char *dir, int n, int base_port, const char *regions,
                        keel_cluster_t *cl, char *err, size_t err_cap);
/* The region of node or instance i, or NULL when the cluster has none. */
const keel_cluster_region_t *keel_cluster_place(const keel_cluster_t *cl, int i);
/* Moves the calling thread into the network namespace NAME ("" or NULL: stays). 0 or -1. */
int keel_cluster_enter_netns(const char *name);
int keel_cluster_load(const char *dir_or_file, keel_cluster_t *cl, char *err, size_t err_cap);
int keel_cluster_save(const keel_cluster_t *cl, char *err, size_t err_cap);

typedef struct keel_cluster_status {
    char role[16], leader[32];
    uint64_t term, commit, applied, keys;
    int healthy; /* the node's own verdict, as /health gives it */
} keel_cluster_status_t;

/* GET /status on the node's admin port (timeout 1 s). 0 or -1. */
int keel_cluster_node_status(const keel_cluster_node_t *n, keel_cluster_status_t *s);
/* Index of the node that reports itself leader, or -1. */
int keel_cluster_find_leader(const keel_cluster_t *cl);
/* SIGTERM every recorded pid, SIGKILL after wait_ms; returns how many were running. */
int keel_cluster_stop(keel_cluster_t *cl, int wait_ms);
/*
 * True if pid runs `keel server --data-dir data_dir` (guards against a recycled pid,
 * also one now running another cluster's node: that one must not be signalled).
 */
int keel_cluster_pid_is_node(pid_t pid, const char *data_dir);
/*
 * 1 if a keel server could listen on addr now (bound with SO_REUSEADDR, as libuv binds,
 * so a port held only by TIME_WAIT connections counts as free), 0 if another socket
 * holds it (EADDRINUSE), -1 if addr does not parse or bind fails for another reason.
 */
int keel_cluster_port_free(const char *addr);
/* keel_cluster_port_free as seen from the network namespace netns ("" or NULL: this one). */
int keel_cluster_port_free_in(const char *netns, const char *addr);
/* GET path on addr (HTTP/1.0, 1 s timeouts): the status, the body in out; -1 if none. */
int keel_cluster_http_get(const char *addr, const char *path, char *out, size_t cap);
/* Splits "host:port". 0 or -1. */
int keel_cluster_split_addr(const char *addr, char *host, size_t host_cap, int *port);

#endif
