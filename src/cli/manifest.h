/* manifest.h - `keel up --manifest FILE`: a keel cluster and the services around it, started
 * in order, each instance waited for until it is ready, all stopped by `keel down`. */
#ifndef KEEL_CLI_MANIFEST_H
#define KEEL_CLI_MANIFEST_H

#include "cli/cluster.h"

#include <stddef.h>

/*
 * The file (YAML):
 *
 *   cluster:                       # the keel servers, as `keel up` starts them
 *     nodes: 3                     # 1..9, default 3
 *     base_port: 7001              # default 7001 (client P+i, peer P+100+i, HTTP P+200+i)
 *     server_args: [--lease-reads, "1"]
 *   services:                      # started in this order, each instance waited for
 *     - name: inventory
 *       run: [keel-shop-inventory, --keel, "{keel}", --listen, "127.0.0.1:{port}"]
 *       instances: 2               # default 1
 *       port: 8100                 # instance i gets port 8100 + i ({port}); 0: none
 *       ready: /health/ready       # GET it until 200; "tcp": until the port accepts;
 *                                  # "none": up 300 ms is enough. Default: /health/ready with a
 *                                  # port, "none" without
 *       ready_timeout_ms: 15000
 *       env: {INVENTORY_RESERVATION_TTL_MS: "5000"}
 *
 * Placeholders in run and env: {keel} (the nodes' client addresses, comma separated),
 * {keel_http} (node 0's admin address), {port}, {i} (the instance, from 0), {name},
 * {dir} (the cluster directory), {bin} (the directory of the keel binary), {here} (the
 * manifest file's directory: for the config files beside it), {host} (the address the
 * instance listens on: 127.0.0.1, or its region's with `keel up --regions`, where instance
 * i runs in region i % R, inside the region's network namespace, with KEEL_ZONE set to
 * the namespace's name: the kit registers it and its callers prefer their own zone). A
 * program named
 * without a '/' is looked for beside the keel binary first, then on PATH.
 * Each instance logs to DIR/<name>-<i>.log; DIR/services.json records the processes.
 */
#define KEEL_MANIFEST_SERVICES_MAX 32
#define KEEL_MANIFEST_ARGS_MAX 64
#define KEEL_MANIFEST_ENV_MAX 32
#define KEEL_MANIFEST_INSTANCES_MAX 32
#define KEEL_MANIFEST_SERVER_ARGS_MAX 64
#define KEEL_MANIFEST_BYTES_MAX (1u << 20)

typedef struct keel_manifest_service {
    char name[64];
    char *run[KEEL_MANIFEST_ARGS_MAX];
    int run_n;
    char *env[KEEL_MANIFEST_ENV_MAX]; /* "NAME=value" */
    int env_n;
    int instances, port;
    char ready[256]; /* "/path", "tcp" or "none" */
    int ready_timeout_ms;
} keel_manifest_service_t;

typedef struct keel_manifest {
    int nodes, base_port;
    char *server_args[KEEL_MANIFEST_SERVER_ARGS_MAX];
    int server_args_n;
    keel_manifest_service_t svc[KEEL_MANIFEST_SERVICES_MAX];
    int n;
    char here[4096]; /* the manifest file's directory */
} keel_manifest_t;

/* 0, or -1 with "FILE:LINE: what" in err. */
int keel_manifest_load(const char *path, keel_manifest_t *m, char *err, size_t err_cap);
void keel_manifest_free(keel_manifest_t *m);

/* Starts every service instance in order, each waited for; records them in
 * DIR/services.json as they start. An instance recorded there and still running is kept
 * (so `keel up --manifest` on a DIR restarts just what is down, as it does for nodes).
 * 0, or -1 (said on stderr; what this call started is stopped again). */
int keel_manifest_start(const keel_manifest_t *m, const keel_cluster_t *cl);
/* Stops the processes in DIR/services.json, the last started first (SIGTERM, then SIGKILL
 * after wait_ms); returns how many were running; forgets them. */
int keel_manifest_stop(const char *dir, int wait_ms);
/* Prints the recorded processes and whether each runs; nothing if there is no record. */
void keel_manifest_print(const char *dir);

#endif
