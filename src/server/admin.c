/* admin.c - the admin HTTP listener (/health, /status, /metrics) and the server's gauges. */
#include "server/server_int.h"

#include "core/stream.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Healthy: the node knows a leader and is not behind on applying what it knows to be
 * committed. "Behind" allows a small lag: a commit index often arrives in the same loop
 * turn as a health check and is applied at the end of that turn, so requiring
 * applied == commit would make a healthy follower under writes flap.
 */
#define HEALTH_APPLY_LAG_ENTRIES_MAX 1024

static int node_healthy(const keel_node_status_t *st)
{
    return st->has_leader && st->commit - st->applied <= HEALTH_APPLY_LAG_ENTRIES_MAX;
}

static void http_health(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    char body[256];
    int ok = node_healthy(&st);
    if (ok)
        snprintf(body, sizeof(body), "{\"status\":\"ok\",\"leader\":\"%s\",\"role\":\"%s\"}",
                 keel_node_member_name(s->node, st.leader), keel_raft_role_name(st.role));
    else
        snprintf(body, sizeof(body), "{\"status\":\"unavailable\",\"reason\":\"%s\"}",
                 !st.has_leader ? "no leader known" : "applying committed entries");
    keel_http_respond_body(req, ok ? 200 : 503, "application/json", body, strlen(body));
}

static void http_status(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    const keel_memberdir_t *d = keel_node_members(s->node);
    json_t *members = json_array();
    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(members,
                              json_pack("{s:s,s:I,s:s,s:s,s:s}", "name", d->m[i].name, "id",
                                        (json_int_t)d->m[i].id, "peer_addr", d->m[i].peer_addr,
                                        "client_addr", d->m[i].client_addr, "role",
                                        d->m[i].voter ? "voter" : "learner"));
    json_t *j = json_pack(
        "{s:s,s:I,s:s,s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "name", s->cfg.name,
        "id", (json_int_t)st.id, "role", keel_raft_role_name(st.role), "term", (json_int_t)st.term,
        "leader",
        st.has_leader ? json_string(keel_node_member_name(s->node, st.leader)) : json_null(),
        "commit_index", (json_int_t)st.commit, "applied_index", (json_int_t)st.applied,
        "last_index", (json_int_t)st.last_index, "revision",
        (json_int_t)keel_kv_revision(&s->kv.kv), "keys", (json_int_t)keel_kv_count(&s->kv.kv),
        "leader_changes", (json_int_t)st.leader_changes, "wal_bytes", (json_int_t)st.wal_disk_bytes,
        "snapshot_index", (json_int_t)st.snapshot_index, "snapshot_bytes",
        (json_int_t)st.snapshot_disk_bytes, "requests_pending", (json_int_t)st.requests_pending,
        "members", members);
    if (j)
        json_object_set_new(j, "healthy", json_boolean(node_healthy(&st)));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        keel_http_respond_body(req, 200, "application/json", text, strlen(text));
    else
        keel_http_respond_error(req, 500, "cannot render status");
    free(text);
    json_decref(j);
}

/* ---- per-stream and per-group metrics ------------------------------------------------ */

/*
 * /metrics reports, beside the node-wide counts, each stream's length and bytes and each of
 * its groups' lag, pending entries and consumers, read from this node's applied state at
 * the scrape. Label sets are bounded: the first STREAMS_REPORTED_MAX stream keys by name
 * (names of at most STREAM_LABEL_BYTES_MAX bytes; longer ones are counted, not reported),
 * and GROUPS_REPORTED_MAX groups over all of them (each stream's groups in name order).
 * keel_streams and keel_stream_metrics_streams tell a reader when streams were left out.
 * A scrape walks the whole key table once (keel_kv_streams_first): with millions of keys
 * that is milliseconds on the loop, once per scrape.
 */
#define STREAMS_REPORTED_MAX 1000u
#define STREAM_LABEL_BYTES_MAX 256u
#define GROUPS_REPORTED_MAX 1000u

/*
 * A key or group name as a Prometheus label value (text format 0.0.4: \\, \" and \n are the
 * escapes, the value is UTF-8): printable ASCII as is, every other byte, and a backslash,
 * as the text \xHH (written \\xHH), so binary names stay distinct and valid.
 */
static int label_value(keel_buf_t *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t c = p[i];
        if (c == '"') {
            rc = keel_buf_append(b, "\\\"", 2);
        } else if (c >= 0x20 && c < 0x7f && c != '\\') {
            rc = keel_buf_append(b, &c, 1);
        } else {
            char e[6] = {'\\', '\\', 'x', hex[c >> 4], hex[c & 15], 0};
            rc = keel_buf_append(b, e, 5);
        }
    }
    return rc;
}

static int family(keel_buf_t *b, const char *name, const char *help)
{
    return keel_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

/* name{stream="..."[,group="..."]} value */
static int series(keel_buf_t *b, const char *name, const keel_kv_stream_ref_t *r,
                  const keel_stream_group_t *g, int64_t v)
{
    int rc = keel_buf_printf(b, "%s{stream=\"", name);
    rc = rc ? rc : label_value(b, r->key, r->key_len);
    if (rc == 0 && g) {
        size_t gl;
        const uint8_t *gn = keel_stream_group_name(g, &gl);
        rc = keel_buf_append_str(b, "\",group=\"");
        rc = rc ? rc : label_value(b, gn, gl);
    }
    return rc ? rc : keel_buf_printf(b, "\"} %lld\n", (long long)v);
}

enum { G_LAG, G_PENDING, G_CONSUMERS, G_FAMILIES };

/* One group family's series, groups counted against GROUPS_REPORTED_MAX in order. */
static int group_family(keel_buf_t *b, int which, const keel_kv_stream_ref_t *refs, size_t n)
{
    static const char *const names[G_FAMILIES][2] = {
        {"keel_stream_group_lag", "Entries of the stream the group has not read yet (XINFO "
                                  "GROUPS lag; absent when Redis's rules cannot know it)."},
        {"keel_stream_group_pending", "Entries delivered to the group and not acknowledged "
                                      "(its PEL; KEEL.XNACKed ones included)."},
        {"keel_stream_group_consumers", "Consumers of the group."},
    };
    int rc = family(b, names[which][0], names[which][1]);
    size_t groups = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const keel_stream_t *st = refs[i].stream;
        for (size_t k = 0; k < keel_stream_groups_count(st) && rc == 0; k++) {
            if (groups++ >= GROUPS_REPORTED_MAX)
                return 0;
            const keel_stream_group_t *g = keel_stream_group_at(st, k);
            int64_t v = 0;
            if (which == G_LAG && !keel_stream_group_lag(st, g, &v))
                continue;
            if (which == G_PENDING)
                v = (int64_t)keel_stream_pel_count(g);
            else if (which == G_CONSUMERS)
                v = (int64_t)keel_stream_consumers_count(g);
            rc = series(b, names[which][0], &refs[i], g, v);
        }
    }
    return rc;
}

static int render_streams(server_t *s, keel_buf_t *b)
{
    keel_kv_stream_ref_t *refs = malloc(STREAMS_REPORTED_MAX * sizeof(*refs));
    if (refs == NULL)
        return KEEL_ENOMEM;
    size_t total,
        n = keel_kv_streams_first(&s->kv.kv, keel_node_read_now_ms(s->node), STREAM_LABEL_BYTES_MAX,
                                  refs, STREAMS_REPORTED_MAX, &total);
    int rc = family(b, "keel_streams", "Stream keys on this node (its applied state).");
    rc = rc ? rc : keel_buf_printf(b, "keel_streams %zu\n", total);
    rc = rc ? rc
            : family(b, "keel_stream_metrics_streams",
                     "Streams reported below: the first 1000 by name (names up to 256 bytes).");
    rc = rc ? rc : keel_buf_printf(b, "keel_stream_metrics_streams %zu\n", n);
    rc = rc ? rc : family(b, "keel_stream_length", "Entries in the stream (XLEN).");
    for (size_t i = 0; i < n && rc == 0; i++) {
        keel_stream_info_t in;
        keel_stream_get_info(refs[i].stream, &in);
        rc = series(b, "keel_stream_length", &refs[i], NULL, (int64_t)in.length);
    }
    rc = rc ? rc
            : family(b, "keel_stream_bytes",
                     "Memory of the stream: its entries' blocks, groups and PELs.");
    for (size_t i = 0; i < n && rc == 0; i++) {
        keel_stream_info_t in;
        keel_stream_get_info(refs[i].stream, &in);
        rc = series(b, "keel_stream_bytes", &refs[i], NULL, (int64_t)in.bytes);
    }
    for (int f = 0; f < G_FAMILIES && rc == 0; f++)
        rc = group_family(b, f, refs, n);
    free(refs);
    return rc;
}

static void http_metrics(keel_http_req_t *req, void *data)
{
    server_t *s = data;
    keel_buf_reset(&s->buf);
    if (keel_metrics_render(s->metrics, &s->buf) != 0 || render_streams(s, &s->buf) != 0) {
        keel_http_respond_error(req, 500, "cannot render metrics");
        return;
    }
    keel_http_respond_body(req, 200, "text/plain; version=0.0.4", keel_buf_rptr(&s->buf),
                           keel_buf_unread(&s->buf));
}

static double gauge_role(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.role;
}

static double gauge_term(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.term;
}

static double gauge_commit(void *data)
{
    keel_node_status_t st;
    keel_node_get_status(((server_t *)data)->node, &st);
    return (double)st.commit;
}

static double gauge_clients(void *data)
{
    return (double)((server_t *)data)->resp.clients_len;
}

static double gauge_watchers(void *data)
{
    return (double)((server_t *)data)->watchers_n;
}

static double gauge_xblocked(void *data)
{
    return (double)((server_t *)data)->xq.n;
}

static double gauge_redeliveries(void *data)
{
    return (double)((server_t *)data)->kv.kv.stream_redeliveries;
}

static double gauge_dead_letters(void *data)
{
    return (double)((server_t *)data)->kv.kv.stream_dead_letters;
}

static void register_gauges(server_t *s)
{
    keel_metrics_gauge_fn(s->metrics, "keel_stream_blocked_reads",
                          "XREAD / XREADGROUP waiting with BLOCK on this node.", NULL,
                          gauge_xblocked, s);
    keel_metrics_gauge_fn(s->metrics, "keel_stream_redeliveries",
                          "Entries returned by KEEL.XNACK and delivered again, as applied "
                          "here since start or the last snapshot load.",
                          NULL, gauge_redeliveries, s);
    keel_metrics_gauge_fn(s->metrics, "keel_stream_dead_letters",
                          "Entries moved to a dead-letter stream, as applied here since start or "
                          "the last snapshot load.",
                          NULL, gauge_dead_letters, s);
    keel_metrics_gauge_fn(s->metrics, "keel_watchers", "Connections streaming KEEL.WATCH.", NULL,
                          gauge_watchers, s);
    s->m_watch_lagged =
        keel_metrics_counter(s->metrics, "keel_watch_lagged_total",
                             "Watchers closed because this node's change history no longer "
                             "reached back to their position.",
                             NULL);
    s->m_regfeed_lagged =
        keel_metrics_counter(s->metrics, "keel_registry_feed_lagged_total",
                             "KEEL.REG FEED feeds ended with LAGGED (client output over its "
                             "bound, or position gone from the registry's history).",
                             NULL);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_role",
                          "0 follower, 1 pre-candidate, 2 candidate, 3 leader.", NULL, gauge_role,
                          s);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_term", "Current Raft term.", NULL, gauge_term, s);
    keel_metrics_gauge_fn(s->metrics, "keel_raft_commit_index", "Highest committed index.", NULL,
                          gauge_commit, s);
    keel_metrics_gauge_fn(s->metrics, "keel_connected_clients", "Open RESP connections.", NULL,
                          gauge_clients, s);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

/* The admin listener on cfg.listen_http, and the server's gauges. */
int keel__srv_admin_start(server_t *s, keel_errmsg_t *msg)
{
    keel_http_route_t routes[3 + KEEL_SRV_REG_ROUTES] = {
        {HTTP_GET, "/health", http_health, s},
        {HTTP_GET, "/status", http_status, s},
        {HTTP_GET, "/metrics", http_metrics, s},
    };
    size_t nroutes = 3 + keel__srv_reg_routes(s, routes + 3); /* the registry (/v1/...) */
    keel_http_server_config_t hc = keel_http_server_config_default();
    hc.metrics = s->metrics;                         /* the admin server's own request metrics */
    hc.connections_max += KEEL_SRV_REG_WATCHERS_MAX; /* blocked registry queries hold one each */
    int rc = keel__srv_reg_http_start(s);
    if (rc != 0)
        return keel_errf(msg, rc, "registry HTTP API: %s", keel_strerror(rc));
    rc = keel_http_server_init(&s->http, &s->loop, &hc, routes, nroutes, msg);
    if (rc != 0)
        return rc;
    s->http_inited = 1;
    rc = keel_http_server_listen(&s->http, s->cfg.listen_http, msg);
    if (rc == 0)
        register_gauges(s);
    return rc;
}
