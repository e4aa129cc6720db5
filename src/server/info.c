/* info.c - INFO: Redis's sections and field names where the meaning is the same, plus Raft. */
#include "server/server_int.h"

#include "proto/resp.h"
#include "runtime/clock.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

/*
 * Sections as Redis 7.0 names them. `INFO` and `INFO default` give the default ones,
 * `INFO all` adds commandstats, `INFO everything` is the same (keel has no modules); a
 * section may be named alone or with others. Fields keep Redis's names where keel's
 * number means the same thing; where it does not, the field is keel's own (keel_*) or
 * absent (docs/server.md lists them), never a made-up number.
 */
enum { SEC_DEFAULT = 1, SEC_ALL = 2 };

static unsigned long long counter_value(const keel_counter_t *c)
{
    return c ? (unsigned long long)__atomic_load_n(&c->value, __ATOMIC_RELAXED) : 0;
}

typedef struct section {
    const char *name;
    unsigned in; /* SEC_DEFAULT: in INFO; SEC_ALL: only in INFO all / everything */
    void (*write)(server_t *s, keel_buf_t *b);
} section_t;

static void human(char *out, size_t cap, unsigned long long n)
{
    static const char *const units[] = {"B", "K", "M", "G", "T"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, cap, u == 0 ? "%.0f%s" : "%.2f%s", v, units[u]);
}

static void sec_server(server_t *s, keel_buf_t *b)
{
    struct utsname un;
    if (uname(&un) != 0)
        memset(&un, 0, sizeof(un));
    char exe[512] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    long long up = (long long)((keel_clock_now_ms() - s->started_ms) / 1000);
    keel_buf_printf(b,
                    "# Server\r\nredis_version:7.0.0\r\nkeel_version:%s\r\n"
                    "redis_mode:keel-raft\r\nos:%s %s %s\r\narch_bits:%d\r\n"
                    "multiplexing_api:epoll\r\ngcc_version:%d.%d.%d\r\nprocess_id:%d\r\n"
                    "node_name:%s\r\ntcp_port:%d\r\nserver_time_usec:%llu\r\n"
                    "uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\nexecutable:%s\r\n"
                    "config_file:\r\n",
                    SERVER_VERSION, un.sysname, un.release, un.machine, (int)(sizeof(void *) * 8),
#ifdef __GNUC__
                    __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__,
#else
                    0, 0, 0,
#endif
                    (int)getpid(), s->cfg.name, keel_resp_server_port(&s->resp),
                    (unsigned long long)keel_clock_unix_ms() * 1000ull, up, up / 86400, exe);
}

static size_t trackers(server_t *s)
{
    size_t n = 0;
    for (keel_resp_client_t *x = keel_resp_server_next_client(&s->resp, NULL); x != NULL;
         x = keel_resp_server_next_client(&s->resp, x)) {
        client_state_t *cs = keel_resp_client_data(x);
        n += cs != NULL && cs->tracker != NULL;
    }
    return n;
}

static void sec_clients(server_t *s, keel_buf_t *b)
{
    keel_buf_printf(b,
                    "# Clients\r\nconnected_clients:%zu\r\nmaxclients:%zu\r\n"
                    "blocked_clients:%zu\r\ntracking_clients:%zu\r\n",
                    s->resp.clients_len, s->cfg.resp.clients_max, s->xq.n + s->lq.n, trackers(s));
}

/*
 * used_memory: the bytes glibc's malloc has handed out and not taken back (mallinfo2), the
 * nearest thing to Redis's allocator count (keel does not wrap malloc; the allocator is
 * libc's). used_memory_rss from /proc/self/statm. keel_state_bytes: keel's own count of
 * the data (keys, values, typed objects: what a snapshot costs). keel_staged_values and
 * keel_staged_bytes: large SET values arriving in pieces (core/kv_staged.c), not in the count.
 */
static void sec_memory(server_t *s, keel_buf_t *b)
{
    unsigned long long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    rss *= (unsigned long long)sysconf(_SC_PAGESIZE);
    struct mallinfo2 mi = mallinfo2();
    unsigned long long used = (unsigned long long)mi.uordblks + (unsigned long long)mi.hblkhd;
    char uh[32], rh[32];
    human(uh, sizeof(uh), used);
    human(rh, sizeof(rh), rss);
    keel_buf_printf(b,
                    "# Memory\r\nused_memory:%llu\r\nused_memory_human:%s\r\n"
                    "used_memory_rss:%llu\r\nused_memory_rss_human:%s\r\nmaxmemory:0\r\n"
                    "maxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\nmem_allocator:libc\r\n"
                    "keel_state_bytes:%llu\r\nkeel_staged_values:%zu\r\n"
                    "keel_staged_bytes:%llu\r\n",
                    used, uh, rss, rh, (unsigned long long)s->kv.kv.bytes,
                    keel_kv_staged_count(&s->kv.kv),
                    (unsigned long long)keel_kv_staged_bytes(&s->kv.kv));
}

/* Persistence is the WAL (every write fsynced before its answer: Redis's AOF with
 * appendfsync always) and Raft snapshots (Redis's RDB: a point-in-time image). */
static void sec_persistence(server_t *s, keel_buf_t *b)
{
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    keel_buf_printf(
        b,
        "# Persistence\r\nloading:0\r\nasync_loading:0\r\n"
        "rdb_changes_since_last_save:%llu\r\naof_enabled:1\r\n"
        "aof_rewrite_in_progress:0\r\nkeel_wal_disk_bytes:%llu\r\n"
        "keel_snapshot_index:%llu\r\nkeel_snapshot_disk_bytes:%llu\r\n",
        (unsigned long long)(st.applied > st.snapshot_index ? st.applied - st.snapshot_index : 0),
        (unsigned long long)st.wal_disk_bytes, (unsigned long long)st.snapshot_index,
        (unsigned long long)st.snapshot_disk_bytes);
}

void keel__srv_info_reset(server_t *s)
{
    for (size_t i = 0; i < s->stats_n; i++) {
        s->stats[i].calls_base = counter_value(s->stats[i].calls);
        s->stats[i].errors_base = counter_value(s->stats[i].errors);
    }
}

static unsigned long long calls(const cmd_stats_t *st)
{
    return counter_value(st->calls) - st->calls_base;
}

static unsigned long long failed(const cmd_stats_t *st)
{
    return counter_value(st->errors) - st->errors_base;
}

static void sec_stats(server_t *s, keel_buf_t *b)
{
    unsigned long long errors = 0;
    for (size_t i = 0; i < s->stats_n; i++)
        errors += failed(&s->stats[i]);
    keel_buf_printf(b,
                    "# Stats\r\ntotal_connections_received:%llu\r\n"
                    "total_commands_processed:%llu\r\nrejected_connections:%llu\r\n"
                    "total_error_replies:%llu\r\nprotocol_errors:%llu\r\n",
                    (unsigned long long)s->resp.connections_total,
                    (unsigned long long)s->resp.commands_total,
                    (unsigned long long)s->resp.rejected_total, errors,
                    (unsigned long long)s->resp.protocol_errors_total);
}

/* Every node takes writes (a follower forwards them), so to a client each is a master;
 * the replication that happens is Raft's: its role and log offsets follow. */
static void sec_replication(server_t *s, keel_buf_t *b)
{
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    keel_buf_printf(b,
                    "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
                    "master_failover_state:no-failover\r\nmaster_repl_offset:%llu\r\n"
                    "keel_raft_role:%s\r\nkeel_raft_voters:%zu\r\n",
                    (unsigned long long)st.applied, keel_raft_role_name(st.role),
                    keel_node_members(s->node)->n);
}

static void sec_cpu(server_t *s, keel_buf_t *b)
{
    (void)s;
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
#define SECS(tv) ((double)(tv).tv_sec + (double)(tv).tv_usec / 1e6)
    keel_buf_printf(b,
                    "# CPU\r\nused_cpu_sys:%.6f\r\nused_cpu_user:%.6f\r\n"
                    "used_cpu_sys_children:%.6f\r\nused_cpu_user_children:%.6f\r\n",
                    SECS(self.ru_stime), SECS(self.ru_utime), SECS(kids.ru_stime),
                    SECS(kids.ru_utime));
#undef SECS
}

/* calls and failed_calls (refused or answered with an error); Redis's usec fields are
 * absent: a write's time is mostly the log's, not the command's. */
static void sec_commandstats(server_t *s, keel_buf_t *b)
{
    keel_buf_append_str(b, "# Commandstats\r\n");
    for (size_t i = 0; i < s->stats_n; i++) {
        unsigned long long n = calls(&s->stats[i]);
        if (n == 0)
            continue;
        char name[64];
        snprintf(name, sizeof(name), "%s", s->stats[i].name);
        for (char *p = name; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        keel_buf_printf(b, "cmdstat_%s:calls=%llu,failed_calls=%llu\r\n", name, n,
                        failed(&s->stats[i]));
    }
}

static void sec_keyspace(server_t *s, keel_buf_t *b)
{
    keel_buf_append_str(b, "# Keyspace\r\n");
    size_t keys = keel_kv_count(&s->kv.kv);
    if (keys > 0)
        keel_buf_printf(b, "db0:keys=%zu,expires=%zu,avg_ttl=0\r\n", keys, s->kv.kv.heap_len);
}

static void sec_raft(server_t *s, keel_buf_t *b)
{
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    const keel_memberdir_t *d = keel_node_members(s->node);
    keel_buf_printf(b,
                    "# Raft\r\nraft_role:%s\r\nterm:%llu\r\nleader:%s\r\ncommit_index:%llu\r\n"
                    "applied_index:%llu\r\nlast_index:%llu\r\nrevision:%llu\r\n"
                    "leader_changes:%llu\r\nmembers:",
                    keel_raft_role_name(st.role), (unsigned long long)st.term,
                    st.has_leader ? keel_node_member_name(s->node, st.leader) : "",
                    (unsigned long long)st.commit, (unsigned long long)st.applied,
                    (unsigned long long)st.last_index,
                    (unsigned long long)keel_kv_revision(&s->kv.kv),
                    (unsigned long long)st.leader_changes);
    for (size_t i = 0; i < d->n; i++)
        keel_buf_printf(b, "%s%s=%s", i ? "," : "", d->m[i].name, d->m[i].peer_addr);
    keel_buf_append_str(b, "\r\n");
}

static const section_t SECTIONS[] = {
    {"server", SEC_DEFAULT, sec_server},     {"clients", SEC_DEFAULT, sec_clients},
    {"memory", SEC_DEFAULT, sec_memory},     {"persistence", SEC_DEFAULT, sec_persistence},
    {"stats", SEC_DEFAULT, sec_stats},       {"replication", SEC_DEFAULT, sec_replication},
    {"cpu", SEC_DEFAULT, sec_cpu},           {"commandstats", SEC_ALL, sec_commandstats},
    {"keyspace", SEC_DEFAULT, sec_keyspace}, {"raft", SEC_DEFAULT, sec_raft},
};
#define N_SECTIONS (sizeof(SECTIONS) / sizeof(SECTIONS[0]))

int keel__srv_cmd_info(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    unsigned want = argc == 1 ? SEC_DEFAULT : 0;
    int named[N_SECTIONS] = {0};
    for (size_t i = 1; i < argc; i++) {
        if (keel__srv_arg_is(&argv[i], "default"))
            want |= SEC_DEFAULT;
        else if (keel__srv_arg_is(&argv[i], "all") || keel__srv_arg_is(&argv[i], "everything"))
            want |= SEC_DEFAULT | SEC_ALL;
        for (size_t k = 0; k < N_SECTIONS; k++)
            if (keel__srv_arg_is(&argv[i], SECTIONS[k].name))
                named[k] = 1; /* a section named twice is shown once, as Redis does */
    }
    keel_buf_t *b = &s->buf;
    keel_buf_reset(b);
    for (size_t k = 0; k < N_SECTIONS; k++) {
        if (!named[k] && !(SECTIONS[k].in & want))
            continue;
        if (keel_buf_unread(b) > 0)
            keel_buf_append_str(b, "\r\n");
        SECTIONS[k].write(s, b);
    }
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_resp_write_bulk(out, keel_buf_rptr(b), keel_buf_unread(b)) : KEEL_ENOMEM;
}
