/* server_cmd.c - `keel server`: flags (and the same keys in a YAML file) -> keel_server_run. */
#include "cli/cli.h"

#include "base/log.h"
#include "runtime/logsink.h"
#include "server/server.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    {"log-level", OPT_STR, SPECIAL, 0, "debug|info|warn|error (default: $KEEL_LOG or info)"},
    {"config", OPT_STR, SPECIAL, 0, "YAML file with any of these keys (flags win)"},
    {"tick-ms", OPT_MS, OFF(node.raft.tick_ms), SZ(node.raft.tick_ms),
     "Raft tick in ms (default 50: heartbeat 2 ticks, election 20-40 ticks)"},
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
    {"wal-segment-bytes", OPT_BYTES, OFF(node.wal.segment_bytes), SZ(node.wal.segment_bytes),
     "preallocated size of each WAL segment (default 64 MiB)"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

typedef struct special {
    char cluster[4096];
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
                    : strcmp(o->name, "log-level") == 0     ? sp->log_level
                                                            : sp->config;
        size_t cap = strcmp(o->name, "initial-cluster") == 0 ? sizeof(sp->cluster)
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
    if (sp.cluster[0] == '\0') /* a single-node cluster */
        snprintf(sp.cluster, sizeof(sp.cluster), "%s=%s", cfg.name,
                 cfg.node.listen_peer[0] ? cfg.node.listen_peer : "127.0.0.1:7101");
    keel_errmsg_t msg = {{0}};
    int rc = keel_server_set_cluster(&cfg, sp.cluster, &msg);
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
