/* server.h - keel server: a node (Raft + KV) behind RESP for clients and HTTP for operators. */
#ifndef KEEL_SERVER_SERVER_H
#define KEEL_SERVER_SERVER_H

#include "runtime/resp_server.h"
#include "core/appolicy.h"
#include "core/kv.h"
#include "server/node.h"

/*
 * One process = one node. Clients speak RESP2 on listen_client (any Redis
 * client works); operators and health checkers use HTTP on listen_http:
 *   GET /health   200 when the node knows a leader and has applied all it knows
 *                 committed, else 503; JSON body with the reason
 *   GET /status   JSON: role, term, leader, indexes, revision, keys, members, WAL bytes
 *   GET /metrics  Prometheus text exposition
 * Data commands come from core/kv's table; connection commands (SELECT,
 * CLIENT, INFO, COMMAND, KEEL.READS) live here.
 */
#define KEEL_AP_ANTIENTROPY_MS_DEFAULT 500u

typedef struct keel_server_config {
    char name[KEEL_NODE_NAME_BYTES];
    char listen_client[KEEL_NODE_ADDR_BYTES];
    char listen_http[KEEL_NODE_ADDR_BYTES];
    keel_node_config_t node; /* node.sm and node.command_bytes_max are filled from kv */
    keel_kv_config_t kv;     /* the strings/KV store's limits (core/kv) */
    keel_reg_config_t reg;   /* the registry's limits this node proposes as leader ... */
    int reg_limits_set;      /* ... when set (some --reg-* flag given; docs/registry.md) */
    keel_resp_server_config_t resp;
    /* the AP keyspace's conflict policy per key prefix (core/appolicy's text; "" : none) */
    char ap_policy[KEEL_APPOLICY_TEXT_BYTES_MAX + 1];
    /* the AP keyspace's anti-entropy: a tree to the next peer every this many ms (0: off) */
    uint32_t ap_antientropy_ms; /* KEEL_AP_ANTIENTROPY_MS_DEFAULT */
    /* the AP replica store's compaction (runtime/apstore.h): due once the log a restart reads
       passes ap_compact_ratio_pct percent of the live state's bytes and ap_compact_log_bytes_min */
    uint64_t ap_compact_log_bytes_min; /* KEEL_APSTORE_COMPACT_LOG_BYTES_MIN_DEFAULT */
    uint32_t ap_compact_ratio_pct;     /* KEEL_APSTORE_COMPACT_RATIO_PCT_DEFAULT */
} keel_server_config_t;

void keel_server_config_default(keel_server_config_t *cfg);

/*
 * Parses "--initial-cluster n1=127.0.0.1:7101,n2=..." into cfg->node.members and
 * sets cfg->node.id from cfg->name, the cluster id from the whole string, and
 * listen_peer from this node's entry unless it is already set.
 */
int keel_server_set_cluster(keel_server_config_t *cfg, const char *initial_cluster,
                            keel_errmsg_t *msg);

/* Runs until SIGTERM/SIGINT; returns 0 after a clean stop. */
int keel_server_run(const keel_server_config_t *cfg, keel_errmsg_t *msg);

#endif
