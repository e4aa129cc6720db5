/* server_cmd.c - `keel server`: flags (and the same keys in a YAML file) -> keel_server_run. */
#include "cli/cli.h"
#include "cli/member.h"

#include "base/log.h"
#include "core/kv.h"
#include "runtime/apstore.h"
#include "runtime/logsink.h"
#include "runtime/tcp.h"
#include "runtime/wal.h"
#include "server/server.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/*
 * Every option is one row: its flag name (also its YAML key), where its value goes, the
 * value's name and allowed range (checked here, before anything starts, so a bad value
 * is reported against the flag that carried it), and its help line. The default shown
 * by --help is read from keel_server_config_default, or given as text where the value
 * is computed at start. Flags override the file: the file is read first.
 */
typedef enum {
    OPT_STR,      /* any text that fits */
    OPT_NAME,     /* letters, digits, '-', '_', '.' (also a member name in --initial-cluster) */
    OPT_ADDR,     /* IPv4 or IPv6 host:port, as keel_tcp_parse_addr reads it */
    OPT_INT,      /* decimal integer in [min, max] */
    OPT_BYTES,    /* decimal integer, optional suffix k, m or g (KiB, MiB, GiB), in [min, max] */
    OPT_LEVEL,    /* a log level name */
    OPT_APPOLICY, /* the AP keyspace's policy table (core/appolicy); a repeated flag adds rules */
} opt_kind_t;

typedef enum { IN_CFG, IN_SPECIAL } opt_where_t;

typedef struct opt {
    const char *name;
    opt_kind_t kind;
    opt_where_t where;
    size_t offset;     /* into keel_server_config_t or special_t */
    size_t size;       /* string capacity, or integer width (4 or 8) */
    const char *value; /* the value's name in --help */
    uint64_t min, max; /* integer kinds: the allowed range */
    const char *dflt;  /* the default as text; NULL: read it from keel_server_config_default */
    const char *help;
} opt_t;

typedef struct special {
    char cluster[4096];
    char join[KEEL_NODE_ADDR_BYTES];
    char log_level[16];
    char config[1024];
} special_t;

#define OFF(f) offsetof(keel_server_config_t, f), sizeof(((keel_server_config_t *)0)->f)
#define SP(f) offsetof(special_t, f), sizeof(((special_t *)0)->f)
#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * 1024 * 1024)
#define NO_RANGE 0, 0

static const opt_t opts[] = {
    {"name", OPT_NAME, IN_CFG, OFF(name), "NAME", NO_RANGE, NULL,
     "this node's name; must appear in --initial-cluster"},
    {"data-dir", OPT_STR, IN_CFG, OFF(node.data_dir), "DIR", NO_RANGE, NULL,
     "WAL and snapshots (created if missing); relative to the current directory; logged at "
     "start; without it keel-data/NAME, NAME being --name"},
    {"listen-client", OPT_ADDR, IN_CFG, OFF(listen_client), "HOST:PORT", NO_RANGE, NULL,
     "RESP address for clients"},
    {"listen-http", OPT_ADDR, IN_CFG, OFF(listen_http), "HOST:PORT", NO_RANGE, NULL,
     "HTTP admin address: /health /status /metrics"},
    {"listen-peer", OPT_ADDR, IN_CFG, OFF(node.listen_peer), "HOST:PORT", NO_RANGE,
     "this node's address in --initial-cluster", "peer address"},
    {"initial-cluster", OPT_STR, IN_SPECIAL, SP(cluster), "NAME=HOST:PORT,...", NO_RANGE,
     "NAME=127.0.0.1:7101 (one node)",
     "all members with their peer addresses; ids follow this order"},
    {"join", OPT_ADDR, IN_SPECIAL, SP(join), "HOST:PORT", NO_RANGE, "none",
     "client address of any member: ask to be added (first start only; needs --listen-peer)"},
    {"log-level", OPT_LEVEL, IN_SPECIAL, SP(log_level), "debug|info|warn|error", NO_RANGE,
     "$KEEL_LOG, else info", "least severe message logged (to stderr)"},
    {"config", OPT_STR, IN_SPECIAL, SP(config), "FILE", NO_RANGE, "none",
     "YAML file with any of these options as keys (flags win)"},
    {"tick-ms", OPT_INT, IN_CFG, OFF(node.raft.tick_ms), "MS", 1, 60000, NULL,
     "Raft tick (heartbeat every 2 ticks, election after 20-40 ticks)"},
    {"lease-reads", OPT_INT, IN_CFG, OFF(node.raft.lease_reads), "0|1", 0, 1, NULL,
     "1: the leader answers linearizable reads under a lease, without a heartbeat round; "
     "CLOCK DEPENDENT (docs/raft.md). 0: ReadIndex"},
    {"preferred-leader", OPT_NAME, IN_CFG, OFF(node.preferred_leader), "NAME", NO_RANGE, "none",
     "member that should lead whenever it can: the leader hands leadership to it once it has "
     "been a connected, answering, caught-up voter for 3 s (give every node the same; "
     "docs/membership.md)"},
    {"request-timeout-ms", OPT_INT, IN_CFG, OFF(node.request_timeout_ms), "MS", 1, 3600000, NULL,
     "a request with no outcome after this gets -TIMEOUT"},
    {"value-bytes-max", OPT_BYTES, IN_CFG, OFF(kv.value_bytes_max), "BYTES", 20,
     KEEL_KV_VALUE_BYTES_MAX, NULL, "largest value accepted"},
    {"key-bytes-max", OPT_BYTES, IN_CFG, OFF(kv.key_bytes_max), "BYTES", 1, KEEL_KV_KEY_BYTES_MAX,
     NULL, "largest key accepted"},
    {"clients-max", OPT_INT, IN_CFG, OFF(resp.clients_max), "N", 1, 1000000, NULL,
     "connected clients"},
    {"reply-bytes-max", OPT_BYTES, IN_CFG, OFF(resp.reply_bytes_max), "BYTES", KIB, GIB, NULL,
     "output buffered per client before it is disconnected"},
    {"pipeline-max", OPT_INT, IN_CFG, OFF(resp.pending_replies_max), "N", 1, 1000000, NULL,
     "outstanding replies per client before reading pauses"},
    {"history-changes-max", OPT_INT, IN_CFG, OFF(kv.history_changes_max), "N", 1,
     KEEL_KV_HISTORY_CHANGES_MAX, NULL, "changes kept for KEEL.WATCH ... FROM"},
    {"history-bytes-max", OPT_BYTES, IN_CFG, OFF(kv.history_bytes_max), "BYTES", KIB,
     KEEL_KV_HISTORY_BYTES_MAX, NULL, "bytes of keys and values kept for KEEL.WATCH"},
    {"snapshot-entries", OPT_INT, IN_CFG, OFF(node.snapshot_entries), "N", 1, UINT64_MAX, NULL,
     "snapshot the state machine every this many applied entries"},
    {"snapshot-log-bytes-min", OPT_BYTES, IN_CFG, OFF(node.snapshot_log_bytes_min), "BYTES", 0,
     1024 * GIB, NULL, "... and not before the log since the last snapshot holds this much"},
    {"wal-segment-bytes", OPT_BYTES, IN_CFG, OFF(node.wal.segment_bytes), "BYTES",
     KEEL_WAL_SEGMENT_BYTES_MIN, UINT32_MAX, NULL, "preallocated size of each WAL segment"},
    {"ap-policy", OPT_APPOLICY, IN_CFG, OFF(ap_policy), "PREFIX=POLICY,...", NO_RANGE, "none",
     "AP keyspace conflict policy per key prefix (docs/ap.md): POLICY is siblings, lww (last "
     "writer wins: LOSES concurrent writes), pn-counter or or-set; the longest matching prefix "
     "wins, other keys keep siblings; repeat the flag or separate rules with ','; give every "
     "node the same table (KEEL.AP.POLICY shows its digest)"},
    {"ap-antientropy-ms", OPT_INT, IN_CFG, OFF(ap_antientropy_ms), "MS", 0, 3600000, NULL,
     "AP keyspace: send a Merkle tree to the next peer every this many ms (0: no anti-entropy; "
     "only for tests that must see what handoff and key moves deliver alone)"},
    {"ap-compact-log-bytes-min", OPT_BYTES, IN_CFG, OFF(ap_compact_log_bytes_min), "BYTES", 0,
     1024 * GIB, NULL,
     "AP keyspace: compact the replica store's log (a snapshot of the live state) only once a "
     "restart would read this much ..."},
    {"ap-compact-ratio-pct", OPT_INT, IN_CFG, OFF(ap_compact_ratio_pct), "PCT",
     KEEL_APSTORE_COMPACT_RATIO_PCT_MIN, 100000, NULL,
     "... and this many percent of the bytes a snapshot of the live state takes"},
    {"wal-zero-ahead-bytes", OPT_BYTES, IN_CFG, OFF(node.wal.zero_ahead_bytes), "BYTES", 0, GIB,
     NULL, "zeros written ahead of the WAL data, so fdatasync skips extent conversion (0: off)"},
    /* the registry's limits (docs/registry.md, "Limits"): the leader proposes its own to
       every replica (KEEL.REG.LIMITS) when any of these is given and they differ */
    {"reg-services-max", OPT_INT, IN_CFG, OFF(reg.services_max), "N", 1, KEEL_REG_SERVICES_CEILING,
     NULL, "registry: services (any --reg-* flag makes the leader put all of them in force)"},
    {"reg-instances-per-service-max", OPT_INT, IN_CFG, OFF(reg.instances_per_service_max), "N", 1,
     KEEL_REG_INSTANCES_CEILING, NULL, "registry: instances of one service"},
    {"reg-instances-max", OPT_INT, IN_CFG, OFF(reg.instances_max), "N", 1,
     KEEL_REG_INSTANCES_CEILING, NULL, "registry: instances in all"},
    {"reg-tags-max", OPT_INT, IN_CFG, OFF(reg.tags_max), "N", 0, KEEL_REG_TAGS_CEILING, NULL,
     "registry: tags of one instance"},
    {"reg-tag-bytes-max", OPT_BYTES, IN_CFG, OFF(reg.tag_bytes_max), "BYTES", 0,
     KEEL_REG_NAME_BYTES_CEILING, NULL, "registry: one tag"},
    {"reg-meta-bytes-max", OPT_BYTES, IN_CFG, OFF(reg.meta_bytes_max), "BYTES", 0,
     KEEL_REG_META_BYTES_CEILING, NULL, "registry: metadata keys and values of one instance"},
    {"reg-meta-pairs-max", OPT_INT, IN_CFG, OFF(reg.meta_pairs_max), "N", 0,
     KEEL_REG_META_PAIRS_CEILING, NULL, "registry: metadata keys of one instance"},
    {"reg-name-bytes-max", OPT_BYTES, IN_CFG, OFF(reg.name_bytes_max), "BYTES", 1,
     KEEL_REG_NAME_BYTES_CEILING, NULL, "registry: a service name, instance id or version"},
    {"reg-address-bytes-max", OPT_BYTES, IN_CFG, OFF(reg.address_bytes_max), "BYTES", 0,
     KEEL_REG_ADDRESS_BYTES_CEILING, NULL, "registry: an instance's address"},
    {"reg-output-bytes-max", OPT_BYTES, IN_CFG, OFF(reg.output_bytes_max), "BYTES", 0,
     KEEL_REG_OUTPUT_BYTES_CEILING, NULL, "registry: check output kept (longer is cut)"},
    {"reg-ttl-ms-max", OPT_INT, IN_CFG, OFF(reg.ttl_ms_max), "MS", 1, INT64_MAX / 4, NULL,
     "registry: largest TTL and deregister-critical-after"},
    {"reg-threshold-max", OPT_INT, IN_CFG, OFF(reg.threshold_max), "N", 1,
     KEEL_REG_THRESHOLD_CEILING, NULL,
     "registry: largest flap-damping count (success_before_passing, failures_before_critical)"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* "64m" for 64 MiB, "1k", else the plain number: sizes as a user would type them. */
static void fmt_bytes(uint64_t x, char *out, size_t cap)
{
    if (x != 0 && x % GIB == 0)
        snprintf(out, cap, "%llug", (unsigned long long)(x / GIB));
    else if (x != 0 && x % MIB == 0)
        snprintf(out, cap, "%llum", (unsigned long long)(x / MIB));
    else if (x != 0 && x % KIB == 0)
        snprintf(out, cap, "%lluk", (unsigned long long)(x / KIB));
    else
        snprintf(out, cap, "%llu", (unsigned long long)x);
}

static uint64_t get_int(const keel_server_config_t *cfg, const opt_t *o)
{
    const char *field = (const char *)cfg + o->offset;
    if (o->size == 4) {
        uint32_t y;
        memcpy(&y, field, 4);
        return y;
    }
    assert(o->size == 8);
    uint64_t x;
    memcpy(&x, field, 8);
    return x;
}

static void fmt_default(const keel_server_config_t *dcfg, const opt_t *o, char *out, size_t cap)
{
    if (o->dflt != NULL)
        snprintf(out, cap, "%s", o->dflt);
    else if (o->kind == OPT_INT)
        snprintf(out, cap, "%llu", (unsigned long long)get_int(dcfg, o));
    else if (o->kind == OPT_BYTES)
        fmt_bytes(get_int(dcfg, o), out, cap);
    else
        snprintf(out, cap, "%s", (const char *)dcfg + o->offset);
}

/* What a value of o may be, for --help and error messages: "an integer in 1..60000". */
static void fmt_allowed(const opt_t *o, char *out, size_t cap)
{
    char lo[32], hi[32];
    switch (o->kind) {
    case OPT_STR:
        snprintf(out, cap, "at most %zu bytes", o->size - 1);
        break;
    case OPT_NAME:
        snprintf(out, cap, "1 to %zu letters, digits, '-', '_' or '.'", o->size - 1);
        break;
    case OPT_ADDR:
        snprintf(out, cap, "HOST:PORT with a numeric IPv4 or IPv6 host, e.g. 127.0.0.1:7001");
        break;
    case OPT_LEVEL:
        snprintf(out, cap, "one of debug, info, warn, error");
        break;
    case OPT_APPOLICY:
        snprintf(out, cap,
                 "PREFIX=POLICY rules separated by ',' (at most %u prefixes of %u bytes; POLICY: "
                 "siblings, lww, pn-counter, or-set)",
                 KEEL_APPOLICY_PREFIXES_MAX, KEEL_APPOLICY_PREFIX_BYTES_MAX);
        break;
    case OPT_INT:
        if (o->max == UINT64_MAX)
            snprintf(out, cap, "an integer >= %llu", (unsigned long long)o->min);
        else
            snprintf(out, cap, "an integer in %llu..%llu", (unsigned long long)o->min,
                     (unsigned long long)o->max);
        break;
    case OPT_BYTES:
        fmt_bytes(o->min, lo, sizeof(lo));
        fmt_bytes(o->max, hi, sizeof(hi));
        snprintf(out, cap, "a size in %s..%s (bytes; suffix k, m or g for KiB, MiB, GiB)", lo, hi);
        break;
    }
}

static void usage(void)
{
    keel_server_config_t dcfg;
    keel_server_config_default(&dcfg);
    printf("usage: keel server [--option VALUE | --option=VALUE]...\n\n"
           "Runs one node of a Raft-replicated key-value server that speaks RESP.\n"
           "Every option takes a value; the same names are keys in a --config YAML file.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        char dflt[256], allowed[160];
        fmt_default(&dcfg, o, dflt, sizeof(dflt));
        printf("  --%s %s\n      %s\n", o->name, o->value, o->help);
        if (o->kind == OPT_INT || o->kind == OPT_BYTES) {
            fmt_allowed(o, allowed, sizeof(allowed));
            printf("      %s; default %s\n", allowed, dflt);
        } else {
            printf("      default: %s\n", dflt);
        }
    }
    printf("\nexample (one node):\n  keel server --name n1 --data-dir /tmp/n1 "
           "--initial-cluster n1=127.0.0.1:7101\n");
}

static int parse_u64(const char *v, int bytes, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno != 0 || end == v || v[0] < '0' || v[0] > '9')
        return -1;
    uint64_t mul = 1;
    if (bytes && (*end == 'k' || *end == 'K'))
        mul = KIB, end++;
    else if (bytes && (*end == 'm' || *end == 'M'))
        mul = MIB, end++;
    else if (bytes && (*end == 'g' || *end == 'G'))
        mul = GIB, end++;
    if (*end != '\0' || x > UINT64_MAX / mul)
        return -1;
    *out = x * mul;
    return 0;
}

static int valid_name(const char *v)
{
    if (v[0] == '\0')
        return 0;
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return 0;
    return 1;
}

/* Checks v against o and stores it; -1 if it is not allowed (the caller says why). */
static int set_opt(keel_server_config_t *cfg, special_t *sp, const opt_t *o, const char *v)
{
    if (strncmp(o->name, "reg-", 4) == 0)
        cfg->reg_limits_set = 1; /* this node asks for its limits (server.h) */
    char *field = (o->where == IN_CFG ? (char *)cfg : (char *)sp) + o->offset;
    if (o->kind == OPT_INT || o->kind == OPT_BYTES) {
        uint64_t x;
        if (parse_u64(v, o->kind == OPT_BYTES, &x) != 0 || x < o->min || x > o->max)
            return -1;
        assert(o->size == 8 || (o->size == 4 && o->max <= INT32_MAX));
        if (o->size == 4) {
            uint32_t y = (uint32_t)x;
            memcpy(field, &y, 4);
        } else {
            memcpy(field, &x, 8);
        }
        return 0;
    }
    if (strlen(v) >= o->size)
        return -1;
    if (o->kind == OPT_NAME && !valid_name(v))
        return -1;
    if (o->kind == OPT_ADDR) {
        struct sockaddr_storage ss;
        keel_errmsg_t msg = {{0}};
        if (keel_tcp_parse_addr(v, &ss, &msg) != 0)
            return -1;
    }
    if (o->kind == OPT_LEVEL) {
        keel_log_level_t level;
        if (keel_log_level_parse(v, &level) != 0)
            return -1;
    }
    if (o->kind == OPT_APPOLICY) {
        static keel_appolicy_t table; /* 9 KiB: not on the stack */
        keel_errmsg_t msg = {{0}};
        if (keel_appolicy_parse(&table, v, strlen(v), &msg) != 0) {
            fprintf(stderr, "keel server: --ap-policy: %s\n", msg.text);
            return -1;
        }
    }
    snprintf(field, o->size, "%s", v);
    return 0;
}

static const opt_t *find_opt(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/* One line on stderr: where the value came from (a flag, or FILE:LINE: key), it, what is allowed.
 */
static void bad_value(const char *where, const opt_t *o, const char *v)
{
    char allowed[160];
    fmt_allowed(o, allowed, sizeof(allowed));
    fprintf(stderr, "keel server: %s '%s': expected %s\n", where, v, allowed);
}

/* A flat YAML mapping of option names to scalars; errors name the file, line and key. */
static int load_yaml(const char *path, keel_server_config_t *cfg, special_t *sp)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "keel server: --config: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    char key[64] = "";
    int depth = 0, rc = 0, done = 0, have_key = 0;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            fprintf(stderr, "keel server: %s:%zu: %s\n", path, p.problem_mark.line + 1,
                    p.problem ? p.problem : "YAML error");
            rc = -1;
            break;
        }
        size_t line = ev.start_mark.line + 1;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT) {
            if (++depth > 1) {
                fprintf(stderr, "keel server: %s:%zu: %s: only a flat mapping of options\n", path,
                        line, have_key ? key : "(top)");
                rc = -1;
            }
        } else if (ev.type == YAML_SCALAR_EVENT) {
            const char *v = (const char *)ev.data.scalar.value;
            if (!have_key) {
                snprintf(key, sizeof(key), "%s", v);
                have_key = 1;
            } else {
                const opt_t *o = find_opt(key);
                char where[1200];
                snprintf(where, sizeof(where), "%s:%zu: %s", path, line, key);
                if (o == NULL || strcmp(key, "config") == 0) {
                    fprintf(stderr,
                            "keel server: %s:%zu: unknown key '%s' (see keel server --help)\n",
                            path, line, key);
                    rc = -1;
                } else if (set_opt(cfg, sp, o, v) != 0) {
                    bad_value(where, o, v);
                    rc = -1;
                }
                have_key = 0;
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

/*
 * The flag at argv[*i] as its option and value ("--name V" or "--name=V"); advances *i
 * past what it used. 0, or -1 after one line on stderr.
 */
static int next_flag(int argc, char **argv, int *i, const opt_t **o, const char **val)
{
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0) {
        fprintf(stderr,
                "keel server: unexpected argument '%s' (options start with --; see keel "
                "server --help)\n",
                a);
        return -1;
    }
    const char *eq = strchr(a, '=');
    char name[64];
    snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
    *o = find_opt(name);
    if (*o == NULL) {
        fprintf(stderr, "keel server: unknown option '--%s' (see keel server --help)\n", name);
        return -1;
    }
    if (eq) {
        *val = eq + 1;
    } else if (*i + 1 < argc) {
        *val = argv[++*i];
    } else {
        fprintf(stderr, "keel server: --%s needs a value (%s)\n", name, (*o)->value);
        return -1;
    }
    ++*i;
    return 0;
}

/* Flags over the --config file over the defaults. 0; -1 after one line on stderr. */
static int parse_args(int argc, char **argv, keel_server_config_t *cfg, special_t *sp)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            exit(0);
        }
    /* two passes: the config file first, so that flags override it */
    int policy_flags = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 1; i < argc;) {
            const opt_t *o;
            const char *val;
            if (next_flag(argc, argv, &i, &o, &val) != 0)
                return -1;
            if ((strcmp(o->name, "config") == 0) != (pass == 0))
                continue;
            char where[80];
            snprintf(where, sizeof(where), "--%s", o->name);
            static char joined[KEEL_APPOLICY_TEXT_BYTES_MAX + 2];
            if (o->kind == OPT_APPOLICY && policy_flags++ > 0) {
                /* a repeated flag adds its rules to the earlier flags' (not to the file's) */
                int n = snprintf(joined, sizeof(joined), "%s,%s", cfg->ap_policy, val);
                if (n < 0 || (size_t)n >= sizeof(joined)) {
                    fprintf(stderr, "keel server: --ap-policy: more than %u bytes of rules\n",
                            KEEL_APPOLICY_TEXT_BYTES_MAX);
                    return -1;
                }
                val = joined;
            }
            if (set_opt(cfg, sp, o, val) != 0) {
                bad_value(where, o, val);
                return -1;
            }
            if (pass == 0 && load_yaml(sp->config, cfg, sp) != 0)
                return -1;
        }
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

/*
 * Logs the data directory in use as an absolute path, and whether it is the default: a
 * node started without --data-dir writes under the current directory, which is easy to
 * miss (and two nodes started there share it).
 */
static void log_data_dir(const keel_node_config_t *nc, int from_default)
{
    char cwd[KEEL_NODE_PATH_BYTES], abs[2 * KEEL_NODE_PATH_BYTES + 2];
    if (nc->data_dir[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL)
        snprintf(abs, sizeof(abs), "%s/%s", cwd, nc->data_dir);
    else
        snprintf(abs, sizeof(abs), "%s", nc->data_dir);
    keel_log_info("data directory", KF_STR("path", abs),
                  KF_STR("from", from_default ? "default (no --data-dir)" : "--data-dir"));
}

int keel_cli_server(int argc, char **argv)
{
    keel_server_config_t cfg, dcfg;
    keel_server_config_default(&cfg);
    keel_server_config_default(&dcfg);
    special_t sp;
    memset(&sp, 0, sizeof(sp));
    if (parse_args(argc, argv, &cfg, &sp) != 0)
        return 2;
    if (keel_logsink_init_stderr(sp.log_level[0] ? sp.log_level : NULL) != 0)
        fprintf(stderr, "keel server: $KEEL_LOG is not one of debug, info, warn, error; using "
                        "info\n");
    /* Checks across options, still before anything starts: a usage error, exit status 2. */
    keel_errmsg_t msg = {{0}};
    int rc = 0;
    if (sp.join[0] && sp.cluster[0])
        rc = keel_errf(&msg, KEEL_EINVAL, "use --initial-cluster or --join, not both");
    else if (sp.join[0] == '\0') {
        if (sp.cluster[0] == '\0') /* a single-node cluster */
            snprintf(sp.cluster, sizeof(sp.cluster), "%s=%s", cfg.name,
                     cfg.node.listen_peer[0] ? cfg.node.listen_peer : "127.0.0.1:7101");
        rc = keel_server_set_cluster(&cfg, sp.cluster, &msg);
    }
    if (rc != 0) {
        fprintf(stderr, "keel server: %s\n", msg.text[0] ? msg.text : keel_strerror(rc));
        return 2;
    }
    int default_dir = strcmp(cfg.node.data_dir, dcfg.node.data_dir) == 0;
    if (default_dir) /* keel-data/NAME: two nodes started with their own names never share one */
        snprintf(cfg.node.data_dir, sizeof(cfg.node.data_dir), "keel-data/%s", cfg.name);
    log_data_dir(&cfg.node, default_dir);
    if (sp.join[0])
        rc = setup_join(&cfg, sp.join, &msg);
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
