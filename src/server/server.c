/* server.c - keel server process: the node, the RESP front end and the admin HTTP listener. */
#include "server/server_int.h"

#include "base/hash.h"
#include "base/log.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel_server_config_default(keel_server_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->name, sizeof(cfg->name), "n1");
    snprintf(cfg->listen_client, sizeof(cfg->listen_client), "127.0.0.1:7001");
    snprintf(cfg->listen_http, sizeof(cfg->listen_http), "127.0.0.1:7201");
    keel_node_config_default(&cfg->node);
    cfg->kv = keel_kv_config_default();
    cfg->reg = keel_reg_config_default();
    snprintf(cfg->node.data_dir, sizeof(cfg->node.data_dir), "keel-data/n1");
    cfg->resp = keel_resp_server_config_default();
    /* Redis allows 512 MiB; 16 MiB keeps one entry within a 17 MiB WAL segment */
    cfg->kv.value_bytes_max = 16u * 1024u * 1024u;
    cfg->ap_antientropy_ms = KEEL_AP_ANTIENTROPY_MS_DEFAULT;
    cfg->ap_compact_log_bytes_min = KEEL_APSTORE_COMPACT_LOG_BYTES_MIN_DEFAULT;
    cfg->ap_compact_ratio_pct = KEEL_APSTORE_COMPACT_RATIO_PCT_DEFAULT;
}

int keel_server_set_cluster(keel_server_config_t *cfg, const char *initial_cluster,
                            keel_errmsg_t *msg)
{
    keel_node_config_t *nc = &cfg->node;
    nc->members_n = 0;
    nc->id = 0;
    const char *p = initial_cluster;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq == NULL || eq == p || (size_t)(eq - p) >= KEEL_NODE_NAME_BYTES ||
            len - (size_t)(eq - p) - 1 >= KEEL_NODE_ADDR_BYTES || len - (size_t)(eq - p) < 2)
            return keel_errf(msg, KEEL_EINVAL,
                             "--initial-cluster: bad member '%.*s' "
                             "(want name=host:port)",
                             (int)len, p);
        if (nc->members_n == KEEL_RAFT_VOTERS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "--initial-cluster: more than %d members",
                             KEEL_RAFT_VOTERS_MAX);
        keel_node_member_t *m = &nc->members[nc->members_n++];
        m->id = nc->members_n;
        snprintf(m->name, sizeof(m->name), "%.*s", (int)(eq - p), p);
        snprintf(m->peer_addr, sizeof(m->peer_addr), "%.*s", (int)(len - (size_t)(eq - p) - 1),
                 eq + 1);
        for (size_t i = 0; i + 1 < nc->members_n; i++)
            if (strcmp(nc->members[i].name, m->name) == 0)
                return keel_errf(msg, KEEL_EINVAL, "--initial-cluster: '%s' named twice", m->name);
        if (strcmp(m->name, cfg->name) == 0) {
            nc->id = m->id;
            if (nc->listen_peer[0] == '\0') /* unless --listen-peer said otherwise */
                snprintf(nc->listen_peer, sizeof(nc->listen_peer), "%s", m->peer_addr);
        }
        p += len + (end ? 1 : 0);
    }
    if (nc->id == 0)
        return keel_errf(msg, KEEL_EINVAL, "--initial-cluster does not name this node ('%s')",
                         cfg->name);
    nc->cluster_id = keel_hash64(initial_cluster, strlen(initial_cluster), 0x6b65656c);
    nc->raft.seed = nc->cluster_id ^ (nc->id * 0x9e3779b97f4a7c15ULL);
    return 0;
}

/* The node applied entries: watchers and blocked stream reads look again. */
static void on_applied(void *data)
{
    keel__srv_feed_on_applied(data);
    keel__srv_tracking_on_applied(data);
    keel__srv_wait_on_applied(data);
    keel__srv_xblock_on_applied(data);
    keel__srv_lblock_on_applied(data);
}

static void on_shutdown(void *data)
{
    server_t *s = data;
    if (s->ready) /* a start that failed says why, not "shutting down" first */
        keel_log_info("shutting down", KF_STR("node", s->cfg.name));
    if (s->resp_inited)
        keel_resp_server_close(&s->resp, NULL);
    if (s->http_inited)
        keel_http_server_shutdown(&s->http, NULL, NULL);
    keel__srv_xblock_close(s);
    keel__srv_wait_close(s);
    keel__srv_lblock_close(s);
    keel__srv_pause_close(s);
    keel__srv_ap_stop(s);
    if (s->node)
        keel_node_stop(s->node, NULL, NULL);
    s->node = NULL;
}

static int start_front_ends(server_t *s, keel_errmsg_t *msg)
{
    keel_resp_command_t *cmds;
    size_t n;
    int rc = keel__srv_commands_build(s, &cmds, &n);
    if (rc != 0)
        return rc;
    s->cfg.resp.listen = s->cfg.listen_client;
    s->cfg.resp.client_closed = keel__srv_client_closed;
    s->cfg.resp.before_command = keel__srv_slowlog_before;
    s->cfg.resp.after_command = keel__srv_slowlog_after;
    s->cfg.resp.client_drained = keel__srv_feed_drained;
    s->cfg.resp.command_refused = keel__srv_command_refused;
    rc = keel_resp_server_init(&s->resp, &s->loop, &s->cfg.resp, cmds, n, s, msg);
    free(cmds);
    if (rc != 0)
        return rc;
    s->resp_inited = 1;
    rc = keel_resp_server_listen(&s->resp, msg);
    if (rc != 0)
        return rc;
    return keel__srv_admin_start(s, msg);
}

/*
 * The sizes that must agree (docs/server.md, "Limits"). A client's command is read whole
 * into its query buffer, and the whole command becomes one Raft entry, one WAL record and
 * one peer frame (a follower forwards it, the leader replicates it). So:
 *   - a value or key at its limit can be sent: proto-max-bulk-len is at least both;
 *   - the query buffer holds one command with one argument at that size and 64 KiB more
 *     (client-query-buffer-limit; past it the connection is closed, as Redis does);
 *   - the entry limit covers the largest command the query buffer can hold, so a command
 *     whose every value is within the limit is never refused for its total size (an MSET
 *     of several large values): no hidden per-entry limit. The WAL record and peer frame
 *     limits follow from the entry's (node.c checks them).
 * The defaults: 16 MiB values, a 16 MiB + 64 KiB query buffer, entries of 16 MiB + 128 KiB,
 * which fit a 17 MiB WAL segment.
 */
#define QUERYBUF_SLACK_BYTES (64u * 1024u)

static int size_limits(keel_server_config_t *c, keel_errmsg_t *msg)
{
    size_t arg = c->resp.resp.bulk_bytes_max;
    if (c->kv.value_bytes_max > arg)
        arg = c->kv.value_bytes_max;
    if (c->kv.key_bytes_max > arg)
        arg = c->kv.key_bytes_max;
    c->resp.resp.bulk_bytes_max = arg;
    c->resp.querybuf_bytes_max = arg + QUERYBUF_SLACK_BYTES;
    uint64_t entry = keel_kv_sm_entry_bytes_max(&c->kv);
    /* the entry encoding takes 4 bytes per argument where RESP takes at least 6, and 13 for
       the header: a command read from the buffer encodes to fewer bytes plus this margin */
    uint64_t from_query = (uint64_t)c->resp.querybuf_bytes_max + QUERYBUF_SLACK_BYTES;
    c->node.command_bytes_max = entry > from_query ? entry : from_query;
    /* An entry travels whole in one peer frame (64 MiB) and is built in the node's buffers
       (64 MiB each, KEEL_BUF_BYTES_MAX_DEFAULT): a larger one is refused at start, by name,
       rather than by a failed append later. A value comes back whole in one reply. */
    uint64_t frame = c->node.command_bytes_max + QUERYBUF_SLACK_BYTES;
    if (frame > c->node.peer_frame_bytes_max || frame > KEEL_BUF_BYTES_MAX_DEFAULT)
        return keel_errf(msg, KEEL_EINVAL,
                         "--value-bytes-max %zu / --key-bytes-max %zu: a command of that size "
                         "(%llu bytes) does not fit one 64 MiB peer frame; values up to 63 MiB",
                         c->kv.value_bytes_max, c->kv.key_bytes_max,
                         (unsigned long long)c->node.command_bytes_max);
    if (c->resp.reply_bytes_max < arg + QUERYBUF_SLACK_BYTES)
        c->resp.reply_bytes_max = arg + QUERYBUF_SLACK_BYTES;
    return 0;
}

/* The server's parts before anything listens: metrics, pub/sub, the data, the loop. */
static int server_init(server_t *s, const keel_server_config_t *cfg, keel_errmsg_t *msg)
{
    s->cfg = *cfg;
    s->started_ms = keel_clock_now_ms();
    keel_list_init(&s->watchers);
    keel__srv_slowlog_init(s);
    keel_buf_init(&s->buf, 0);
    keel_buf_init(&s->stale, 0);
    s->metrics = keel_metrics_new();
    s->cfg.node.metrics = s->metrics;
    s->cfg.node.on_publish = keel__srv_on_peer_publish;
    s->cfg.node.on_publish_data = s;
    s->cfg.node.on_ap = keel__srv_on_peer_ap;
    s->cfg.node.on_ap_data = s;
    s->cfg.node.on_applied = on_applied;
    s->cfg.node.on_applied_data = s;
    s->cfg.node.on_pass = keel__srv_ap_on_pass;
    s->cfg.node.on_pass_data = s;
    if (s->cfg.node.client_addr[0] == '\0')
        snprintf(s->cfg.node.client_addr, sizeof(s->cfg.node.client_addr), "%s",
                 s->cfg.listen_client);
    s->pubsub = keel_pubsub_new();
    int rc = s->metrics && s->pubsub ? keel_kv_config_validate(&s->cfg.kv, msg) : KEEL_ENOMEM;
    if (rc == 0 && s->cfg.reg_limits_set)
        rc = keel_reg_config_validate(&s->cfg.reg, msg);
    if (rc == 0)
        rc = keel_kv_sm_init(&s->kv, &s->cfg.kv);
    s->kv_inited = rc == 0;
    if (rc == 0)
        keel_kv_sm_set_reg_limits(&s->kv, s->cfg.reg_limits_set ? &s->cfg.reg : NULL);
    s->cfg.node.sm = keel__srv_lblock_sm(s);
    if (rc == 0)
        rc = size_limits(&s->cfg, msg);
    if (rc == 0)
        rc = keel_loop_init(&s->loop);
    if (rc == 0)
        rc = keel__srv_wait_init(s);
    if (rc == 0)
        rc = keel__srv_pause_init(s);
    if (rc == 0)
        rc = keel__srv_xblock_init(s);
    return rc == 0 ? keel__srv_lblock_init(s) : rc;
}

static void server_free(server_t *s)
{
    free(s->stats);
    keel__srv_reg_http_free(s);
    if (s->kv_inited)
        keel_kv_sm_free(&s->kv);
    keel_metrics_free(s->metrics);
    keel_pubsub_free(s->pubsub);
    keel__srv_tracking_free(s);
    keel_buf_free(&s->buf);
    keel_buf_free(&s->stale);
    keel__srv_slowlog_free(s);
    while (s->pr_pool != NULL) {
        pending_reply_t *pr = s->pr_pool;
        s->pr_pool = pr->next;
        keel_buf_free(&pr->slow_args);
        free(pr);
    }
    free(s->argv);
    free(s->lens);
    free(s);
}

int keel_server_run(const keel_server_config_t *cfg, keel_errmsg_t *msg)
{
    server_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return KEEL_ENOMEM;
    int rc = server_init(s, cfg, msg);
    if (rc != 0) {
        server_free(s);
        return rc;
    }
    keel_loop_handle_signals(&s->loop);
    keel_loop_on_shutdown(&s->loop, on_shutdown, s);
    rc = keel_node_start(&s->node, &s->loop, &s->cfg.node, msg);
    if (rc == 0)
        rc = keel__srv_ap_start(s, msg);
    if (rc == 0)
        rc = start_front_ends(s, msg);
    if (rc == 0) {
        s->ready = 1;
        keel_log_info("keel server ready", KF_STR("node", s->cfg.name),
                      KF_STR("client", s->cfg.listen_client),
                      KF_STR("peer", s->cfg.node.listen_peer), KF_STR("http", s->cfg.listen_http));
        rc = keel_loop_run(&s->loop);
    } else {
        keel_loop_shutdown(&s->loop);
        keel_loop_run(&s->loop);
    }
    keel_loop_close(&s->loop);
    server_free(s);
    return rc;
}
