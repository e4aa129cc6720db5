/* server_cmd.c - `keel server`: flags (and the same keys in a YAML file) -> keel_server_run. */
#include "cli/cli.h"
#include "cli/member.h"

#include "base/log.h"
#include "runtime/logsink.h"
#include "server/server.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/*
 * Every option is one row: its flag name (also its YAML key), what it sets,
 * and its help line. Flags override the file: the file is read first.
 */
typedef enum { OPT_STR, OPT_U64, OPT_MS, OPT_BYTES } opt_kind_t;

typedef struct opt {
    const char *name;
    opt_kind_t kind;
    size_t offset; /* into keel_server_config_t; SIZE_MAX for special options */
    size_t size;   /* string capacity, or integer width */
    const char *help;
} opt_t;

#define OFF(f) offsetof(keel_server_config_t, f)
#define SZ(f) sizeof(((keel_server_config_t *)0)->f)
#define SPECIAL SIZE_MAX

static const opt_t opts[] = {
    {"name", OPT_STR, OFF(name), SZ(name), "this node's name; must appear in --initial-cluster"},
    {"data-dir", OPT_STR, OFF(node.data_dir), SZ(node.data_dir),
     "directory for the WAL (created if missing)"},
    {"listen-client", OPT_STR, OFF(listen_client), SZ(listen_client),
     "RESP address for clients (default 127.0.0.1:7001)"},
    {"listen-http", OPT_STR, OFF(listen_http), SZ(listen_http),
     "HTTP admin address: /health /status /metrics (default 127.0.0.1:7201)"},
    {"listen-peer", OPT_STR, OFF(node.listen_peer), SZ(node.listen_peer),
     "peer address (default: this node's address in --initial-cluster)"},
    {"initial-cluster", OPT_STR, SPECIAL, 0,
     "all members: name=host:port,... (peer addresses; ids follow this order)"},
    {"join", OPT_STR, SPECIAL, 0,
     "client address (host:port) of any member: ask to be added (first start only; needs "
     "--listen-peer)"},
    {"log-level", OPT_STR, SPECIAL, 0, "debug|info|warn|error (default: $KEEL_LOG or info)"},
    {"config", OPT_STR, SPECIAL, 0, "YAML file with any of these keys (flags win)"},
    {"tick-ms", OPT_MS, OFF(node.raft.tick_ms), SZ(node.raft.tick_ms),
     "Raft tick in ms (default 50: heartbeat 2 ticks, election 20-40 ticks)"},
    {"lease-reads", OPT_U64, OFF(node.raft.lease_reads), SZ(node.raft.lease_reads),
     "1: the leader answers linearizable reads under a lease, without a heartbeat round; "
     "CLOCK DEPENDENT (docs/raft.md). Default 0: ReadIndex"},
    {"request-timeout-ms", OPT_MS, OFF(node.request_timeout_ms), SZ(node.request_timeout_ms),
     "a request with no outcome after this gets -TIMEOUT (default 5000)"},
    {"value-bytes-max", OPT_BYTES, OFF(node.kv.value_bytes_max), SZ(node.kv.value_bytes_max),
     "largest value accepted (default 1048576)"},
    {"key-bytes-max", OPT_BYTES, OFF(node.kv.key_bytes_max), SZ(node.kv.key_bytes_max),
     "largest key accepted (default 65536)"},
    {"clients-max", OPT_U64, OFF(resp.clients_max), SZ(resp.clients_max),
     "connected clients (default 10000)"},
    {"reply-bytes-max", OPT_BYTES, OFF(resp.reply_bytes_max), SZ(resp.reply_bytes_max),
     "output buffered per client before it is disconnected (default 64 MiB)"},
    {"pipeline-max", OPT_U64, OFF(resp.pending_replies_max), SZ(resp.pending_replies_max),
     "outstanding replies per client before reading pauses (default 1024)"},
    {"history-changes-max", OPT_U64, OFF(node.kv.history_changes_max),
     SZ(node.kv.history_changes_max), "changes kept for KEEL.WATCH ... FROM (default 100000)"},
    {"history-bytes-max", OPT_BYTES, OFF(node.kv.history_bytes_max), SZ(node.kv.history_bytes_max),
     "bytes of keys and values kept for KEEL.WATCH (default 64 MiB)"},
    {"snapshot-entries", OPT_U64, OFF(node.snapshot_entries), SZ(node.snapshot_entries),
     "snapshot the state machine every this many applied entries (default 100000)"},
    {"snapshot-log-bytes-min", OPT_BYTES, OFF(node.snapshot_log_bytes_min),
     SZ(node.snapshot_log_bytes_min),
     "... and not before the log since the last snapshot holds this much (default 64 MiB)"},
    {"wal-segment-bytes", OPT_BYTES, OFF(node.wal.segment_bytes), SZ(node.wal.segment_bytes),
     "preallocated size of each WAL segment (default 64 MiB)"},
    {"wal-zero-ahead-bytes", OPT_BYTES, OFF(node.wal.zero_ahead_bytes),
     SZ(node.wal.zero_ahead_bytes),
     "zeros written ahead of the WAL data, so fdatasync skips extent conversion (default 1M; "
     "0: off)"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

typedef struct special {
    char cluster[4096];
    char join[KEEL_NODE_ADDR_BYTES];
    char log_level[16];
    char config[1024];
} special_t;

static void usage(void)
{
    printf("usage: keel server [options]\n\n"
           "Runs one node of a Raft-replicated key-value server that speaks RESP.\n\n");
    for (size_t i = 0; i < N_OPTS; i++)
        printf("  --%-20s %s\n", opts[i].name, opts[i].help);
    printf("\nexample (one node):\n  keel server --name n1 --data-dir /tmp/n1 "
           "--initial-cluster n1=127.0.0.1:7101\n");
}

static int parse_u64(const char *v, int bytes, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || v[0] == '-')
        return -1;
    uint64_t mul = 1;
    if (bytes && (*end == 'k' || *end == 'K'))
        mul = 1024, end++;
    else if (bytes && (*end == 'm' || *end == 'M'))
        mul = 1024 * 1024, end++;
    else if (bytes && (*end == 'g' || *end == 'G'))
        mul = 1024ull * 1024 * 1024, end++;
    if (*end != '\0' || x > UINT64_MAX / mul)
        return -1;
    *out = x * mul;
    return 0;
}

static int set_opt(keel_server_config_t *cfg, special_t *sp, const opt_t *o, const char *v)
{
    if (o->offset == SPECIAL) {
        char *dst = strcmp(o->name, "initial-cluster") == 0 ? sp->cluster
                    : strcmp(o->name, "join") == 0          ? sp->join
                    : strcmp(o->name, "log-level") == 0     ? sp->log_level
                                                            : sp->config;
        size_t cap = strcmp(o->name, "initial-cluster") == 0 ? sizeof(sp->cluster)
                     : strcmp(o->name, "join") == 0          ? sizeof(sp->join)
                     : strcmp(o->name, "log-level") == 0     ? sizeof(sp->log_level)
                                                             : sizeof(sp->config);
        if (strlen(v) >= cap)
            return -1;
        snprintf(dst, cap, "%s", v);
        return 0;
    }
    char *field = (char *)cfg + o->offset;
    if (o->kind == OPT_STR) {
        if (strlen(v) >= o->size)
            return -1;
        snprintf(field, o->size, "%s", v);
        return 0;
    }
    uint64_t x;
    if (parse_u64(v, o->kind == OPT_BYTES, &x) != 0)
        return -1;
    if (o->size == 8)
        memcpy(field, &x, 8);
    else if (o->size == 4 && x <= UINT32_MAX) {
        uint32_t y = (uint32_t)x;
        memcpy(field, &y, 4);
    } else
        return -1;
    return 0;
}

static const opt_t *find_opt(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/* A flat YAML mapping of option names to scalars. */
static int load_yaml(const char *path, keel_server_config_t *cfg, special_t *sp)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "keel server: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    char key[64] = "";
    int depth = 0, rc = 0, done = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            fprintf(stderr, "keel server: %s:%zu: %s\n", path, p.problem_mark.line + 1,
                    p.problem ? p.problem : "YAML error");
            rc = -1;
            break;
        }
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT) {
            if (++depth > 1) {
                fprintf(stderr, "keel server: %s: only a flat mapping of options\n", path);
                rc = -1;
            }
        } else if (ev.type == YAML_SCALAR_EVENT) {
            const char *v = (const char *)ev.data.scalar.value;
            if (key[0] == '\0') {
                snprintf(key, sizeof(key), "%s", v);
            } else {
                const opt_t *o = find_opt(key);
                if (o == NULL || strcmp(key, "config") == 0 || set_opt(cfg, sp, o, v) != 0) {
                    fprintf(stderr, "keel server: %s: bad option '%s: %s'\n", path, key, v);
                    rc = -1;
                }
                key[0] = '\0';
            }
        } else if (ev.type == YAML_STREAM_END_EVENT) {
            done = 1;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

static int parse_args(int argc, char **argv, keel_server_config_t *cfg, special_t *sp)
{
    /* the config file first, so that flags override it */
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && load_yaml(argv[i + 1], cfg, sp) != 0)
            return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        const char *eq = strchr(a, '=');
        char name[64];
        const char *val;
        if (strncmp(a, "--", 2) != 0)
            goto bad;
        if (eq) {
            snprintf(name, sizeof(name), "%.*s", (int)(eq - a - 2), a + 2);
            val = eq + 1;
        } else {
            snprintf(name, sizeof(name), "%s", a + 2);
            if (i + 1 >= argc)
                goto bad;
            val = argv[++i];
        }
        const opt_t *o = find_opt(name);
        if (o == NULL || set_opt(cfg, sp, o, val) != 0)
            goto bad;
        continue;
    bad:
        fprintf(stderr, "keel server: bad option '%s' (see keel server --help)\n", a);
        return -1;
    }
    return 0;
}

/*
 * --join: a node's identity (its id, the cluster id, the members it was told about) is
 * kept in DATA_DIR/member.conf, written once the leader has added it. A restart finds
 * the file and does not join again; its configuration comes back from its WAL and
 * snapshot. Format, one item per line:
 *   keel-member 1 | id N | cluster_id N | member NAME ID PEER CLIENT ("-" if unknown)
 */
#define MEMBER_FILE "member.conf"

static int mkdirs(const char *path)
{
    char p[KEEL_NODE_PATH_BYTES];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int save_identity(const char *path, const keel_cli_join_t *j)
{
    char tmp[KEEL_NODE_PATH_BYTES + 32];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "keel-member 1\nid %llu\ncluster_id %llu\n", (unsigned long long)j->id,
            (unsigned long long)j->cluster_id);
    for (size_t i = 0; i < j->members_n; i++) {
        const keel_node_member_t *m = &j->members[i];
        fprintf(f, "member %s %llu %s %s\n", m->name, (unsigned long long)m->id, m->peer_addr,
                m->client_addr[0] ? m->client_addr : "-");
    }
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static int load_identity(const char *path, keel_cli_join_t *j)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    memset(j, 0, sizeof(*j));
    char line[512];
    int version = 0, bad = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long a, b;
        keel_node_member_t m = {0};
        if (sscanf(line, "keel-member %d", &version) == 1)
            continue;
        if (sscanf(line, "id %llu", &a) == 1)
            j->id = a;
        else if (sscanf(line, "cluster_id %llu", &b) == 1)
            j->cluster_id = b;
        else if (sscanf(line, "member %63s %llu %127s %127s", m.name, &a, m.peer_addr,
                        m.client_addr) == 4 &&
                 j->members_n < KEEL_RAFT_MEMBERS_MAX) {
            m.id = a;
            if (strcmp(m.client_addr, "-") == 0)
                m.client_addr[0] = '\0';
            j->members[j->members_n++] = m;
        } else
            bad = 1;
    }
    fclose(f);
    return version == 1 && !bad && j->id != 0 && j->members_n > 0 ? 0 : -1;
}

static int setup_join(keel_server_config_t *cfg, const char *join_addr, keel_errmsg_t *msg)
{
    keel_node_config_t *nc = &cfg->node;
    char path[KEEL_NODE_PATH_BYTES + 16], wal[KEEL_NODE_PATH_BYTES + 8];
    snprintf(path, sizeof(path), "%s/" MEMBER_FILE, nc->data_dir);
    snprintf(wal, sizeof(wal), "%s/wal", nc->data_dir);
    keel_cli_join_t j;
    struct stat stt;
    if (stat(path, &stt) == 0) {
        if (load_identity(path, &j) != 0)
            return keel_errf(msg, KEEL_ECORRUPT, "%s does not parse", path);
        keel_log_info("joined earlier; not joining again", KF_INT("id", j.id));
    } else {
        if (stat(wal, &stt) == 0)
            return keel_errf(msg, KEEL_EINVAL,
                             "%s holds a WAL but no " MEMBER_FILE
                             ": it was not started with --join; use its original flags",
                             nc->data_dir);
        if (nc->listen_peer[0] == '\0')
            return keel_errf(msg, KEEL_EINVAL,
                             "--join needs --listen-peer (the address members "
                             "connect to)");
        char err[256] = "";
        if (keel_cli_join(join_addr, cfg->name, nc->listen_peer, cfg->listen_client, &j, err,
                          sizeof(err)) != 0)
            return keel_errf(msg, KEEL_EINVAL, "--join %s: %s", join_addr, err);
        if (mkdirs(nc->data_dir) != 0 || save_identity(path, &j) != 0)
            return keel_errf(msg, KEEL_EIO, "cannot write %s: %s", path, strerror(errno));
        keel_log_info("joined the cluster as a learner", KF_INT("id", j.id),
                      KF_STR("via", join_addr));
    }
    int self = 0;
    for (size_t i = 0; i < j.members_n; i++)
        self |= j.members[i].id == j.id;
    if (!self)
        return keel_errf(msg, KEEL_EINVAL, "%s: this node (id %llu) is not among its members", path,
                         (unsigned long long)j.id);
    nc->id = j.id;
    nc->cluster_id = j.cluster_id;
    nc->join = 1;
    nc->members_n = j.members_n;
    memcpy(nc->members, j.members, j.members_n * sizeof(j.members[0]));
    nc->raft.seed = nc->cluster_id ^ (nc->id * 0x9e3779b97f4a7c15ULL);
    return 0;
}

int keel_cli_server(int argc, char **argv)
{
    keel_server_config_t cfg;
    keel_server_config_default(&cfg);
    special_t sp;
    memset(&sp, 0, sizeof(sp));
    if (parse_args(argc, argv, &cfg, &sp) != 0)
        return 2;
    if (keel_logsink_init_stderr(sp.log_level[0] ? sp.log_level : NULL) != 0)
        fprintf(stderr, "keel server: unknown log level; using info\n");
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    if (sp.join[0] && sp.cluster[0])
        rc = keel_errf(&msg, KEEL_EINVAL, "use --initial-cluster or --join, not both");
    else if (sp.join[0])
        rc = setup_join(&cfg, sp.join, &msg);
    else {
        if (sp.cluster[0] == '\0') /* a single-node cluster */
            snprintf(sp.cluster, sizeof(sp.cluster), "%s=%s", cfg.name,
                     cfg.node.listen_peer[0] ? cfg.node.listen_peer : "127.0.0.1:7101");
        rc = keel_server_set_cluster(&cfg, sp.cluster, &msg);
    }
    if (rc == 0)
        rc = keel_server_run(&cfg, &msg);
    if (rc != 0) {
        keel_log_error("keel server failed",
                       KF_STR("error", msg.text[0] ? msg.text : keel_strerror(rc)));
        fprintf(stderr, "keel server: %s\n", msg.text[0] ? msg.text : keel_strerror(rc));
        return 1;
    }
    return 0;
}
