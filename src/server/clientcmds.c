/* clientcmds.c - the connection's own commands: CLIENT, HELLO, RESET, TIME and CONFIG. */
#include "server/server_int.h"

#include "base/glob.h"
#include "base/num.h"
#include "proto/resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

/* A subcommand's error as Redis words it: "unknown subcommand 'X'. Try CMD HELP." */
static int unknown_sub(keel_buf_t *out, const char *cmd, const keel_resp_arg_t *a)
{
    return keel_resp_write_errorf(out, "ERR unknown subcommand '%.*s'. Try %s HELP.",
                                  (int)(a->len > 64 ? 64 : a->len), (const char *)a->ptr, cmd);
}

static int wrong_args(keel_buf_t *out, const char *cmd_sub)
{
    return keel_resp_write_errorf(out, "ERR wrong number of arguments for '%s' command", cmd_sub);
}

/* A client name as Redis takes it: printable, no spaces. */
static int name_ok(const keel_resp_arg_t *a)
{
    if (a->len >= CLIENT_NAME_BYTES_MAX)
        return 0;
    for (size_t i = 0; i < a->len; i++)
        if (a->ptr[i] < '!' || a->ptr[i] > '~')
            return 0;
    return 1;
}

static void set_name(client_state_t *st, const keel_resp_arg_t *a)
{
    memcpy(st->name, a->ptr, a->len);
    st->name[a->len] = '\0';
}

/* ---- CLIENT ------------------------------------------------------------------------ */

/* One CLIENT LIST line, in Redis's field order for the fields keel has. */
static int client_line(keel_buf_t *b, keel_resp_client_t *c)
{
    server_t *s = keel__srv_of(c);
    client_state_t *st = keel_resp_client_data(c);
    keel_resp_client_info_t in;
    keel_resp_client_info(c, &in);
    size_t subs = 0, psubs = 0;
    const uint8_t *nm;
    size_t nl;
    while (keel_pubsub_nth(s->pubsub, c, 0, subs, &nm, &nl) == 0)
        subs++;
    while (keel_pubsub_nth(s->pubsub, c, 1, psubs, &nm, &nl) == 0)
        psubs++;
    long multi = st && st->in_multi ? (long)st->nqueued : -1;
    return keel_buf_printf(
        b,
        "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=0 sub=%zu "
        "psub=%zu ssub=0 multi=%ld qbuf=%zu qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 "
        "obl=0 oll=%zu omem=%zu tot-mem=0 events=r cmd=%s user=default redir=-1 resp=%d\n",
        (unsigned long long)keel_resp_client_id(c), in.addr, in.laddr, in.fd, st ? st->name : "",
        (long long)(in.age_ms / 1000), (long long)(in.idle_ms / 1000),
        subs + psubs > 0     ? "P"
        : st && st->in_multi ? "x"
                             : "N",
        subs, psubs, multi, in.qbuf, in.pending, in.out_bytes, in.last_cmd ? in.last_cmd : "NULL",
        st && st->resp3 ? 3 : 2);
}

/* CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id...] */
static int client_list(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                       keel_buf_t *out)
{
    server_t *s = keel__srv_of(c);
    int type = -1; /* -1 any, 0 normal, 1 pubsub, 2 none (master/replica) */
    size_t ids_at = 0;
    /* Redis 7.0 takes one filter: TYPE t, or ID id... */
    if (argc == 4 && keel__srv_arg_is(&argv[2], "type")) {
        const keel_resp_arg_t *t = &argv[3];
        if (keel__srv_arg_is(t, "normal"))
            type = 0;
        else if (keel__srv_arg_is(t, "pubsub"))
            type = 1;
        else if (keel__srv_arg_is(t, "master") || keel__srv_arg_is(t, "replica"))
            type = 2;
        else
            return keel_resp_write_errorf(out, "ERR Unknown client type '%.*s'",
                                          (int)(t->len > 64 ? 64 : t->len), (const char *)t->ptr);
    } else if (argc >= 4 && keel__srv_arg_is(&argv[2], "id")) {
        ids_at = 3;
        for (size_t i = 3; i < argc; i++) {
            int64_t id;
            if (keel_parse_i64(argv[i].ptr, argv[i].len, &id) != 0)
                return keel_resp_write_error(out, "ERR Invalid client ID");
        }
    } else if (argc != 2) {
        return keel_resp_write_error(out, "ERR syntax error");
    }
    keel_buf_t *b = &s->buf;
    keel_buf_reset(b);
    for (keel_resp_client_t *x = keel_resp_server_next_client(&s->resp, NULL); x != NULL;
         x = keel_resp_server_next_client(&s->resp, x)) {
        int pubsub = keel_pubsub_count(s->pubsub, x) > 0;
        if (type == 2 || (type == 0 && pubsub) || (type == 1 && !pubsub))
            continue;
        if (ids_at) {
            int want = 0;
            for (size_t i = ids_at; i < argc && !want; i++) {
                int64_t id;
                want = keel_parse_i64(argv[i].ptr, argv[i].len, &id) == 0 &&
                       (uint64_t)id == keel_resp_client_id(x);
            }
            if (!want)
                continue;
        }
        if (client_line(b, x) != 0)
            return KEEL_ENOMEM;
    }
    return keel_resp_write_bulk(out, keel_buf_rptr(b), keel_buf_unread(b));
}

/* CLIENT KILL addr | CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no] ... */
static int client_kill(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv,
                       keel_buf_t *out)
{
    server_t *s = keel__srv_of(c);
    const keel_resp_arg_t *addr = NULL, *laddr = NULL;
    int64_t id = 0;
    int skipme = 1, old_form = argc == 3;
    if (old_form) {
        addr = &argv[2];
        skipme = 0;
    } else if (argc % 2 != 0) {
        return keel_resp_write_error(out, "ERR syntax error");
    }
    for (size_t i = 2; !old_form && i + 1 < argc; i += 2) {
        const keel_resp_arg_t *v = &argv[i + 1];
        if (keel__srv_arg_is(&argv[i], "id")) {
            if (keel_parse_i64(v->ptr, v->len, &id) != 0 || id <= 0)
                return keel_resp_write_error(out, "ERR client-id should be greater than 0");
        } else if (keel__srv_arg_is(&argv[i], "addr")) {
            addr = v;
        } else if (keel__srv_arg_is(&argv[i], "laddr")) {
            laddr = v;
        } else if (keel__srv_arg_is(&argv[i], "skipme")) {
            if (keel__srv_arg_is(v, "yes"))
                skipme = 1;
            else if (keel__srv_arg_is(v, "no"))
                skipme = 0;
            else
                return keel_resp_write_error(out, "ERR syntax error");
        } else if (keel__srv_arg_is(&argv[i], "type") || keel__srv_arg_is(&argv[i], "user") ||
                   keel__srv_arg_is(&argv[i], "maxage")) {
            continue; /* accepted; every keel client is "normal" and "default" */
        } else {
            return keel_resp_write_error(out, "ERR syntax error");
        }
    }
    int64_t killed = 0;
    for (keel_resp_client_t *x = keel_resp_server_next_client(&s->resp, NULL); x != NULL;
         x = keel_resp_server_next_client(&s->resp, x)) {
        if (skipme && x == c)
            continue;
        if (id != 0 && keel_resp_client_id(x) != (uint64_t)id)
            continue;
        keel_resp_client_info_t in;
        keel_resp_client_info(x, &in);
        if (addr && (strlen(in.addr) != addr->len || memcmp(in.addr, addr->ptr, addr->len) != 0))
            continue;
        if (laddr &&
            (strlen(in.laddr) != laddr->len || memcmp(in.laddr, laddr->ptr, laddr->len) != 0))
            continue;
        keel_resp_client_kill(x);
        killed++;
    }
    if (old_form)
        return killed ? keel_resp_write_simple(out, "OK")
                      : keel_resp_write_error(out, "ERR No such client");
    return keel_resp_write_int(out, killed);
}

/* CLIENT REPLY ON|OFF|SKIP: the runtime drops the replies (runtime/resp_server.h). */
static int client_reply(keel_resp_client_t *c, const keel_resp_arg_t *mode, keel_buf_t *out)
{
    if (keel__srv_arg_is(mode, "on")) {
        keel_resp_client_reply(c, KEEL_RESP_REPLY_ON);
        return keel_resp_write_simple(keel_resp_client_out(c), "OK");
    }
    if (keel__srv_arg_is(mode, "off")) {
        keel_resp_client_reply(c, KEEL_RESP_REPLY_OFF);
        return 0;
    }
    if (keel__srv_arg_is(mode, "skip")) {
        keel_resp_client_reply(c, KEEL_RESP_REPLY_SKIP);
        return 0;
    }
    return keel_resp_write_error(out, "ERR syntax error");
}

/* CLIENT HELP: Redis's text for the subcommands keel has (UNBLOCK is not one: docs/server.md). */
static const char *const CLIENT_HELP[] = {
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are:",
    "    * ADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made from the specified address",
    "    * LADDR (<ip:port>|<unixsocket>:0)",
    "      Kill connections made to specified local address",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Kill connections by type.",
    "    * USER <username>",
    "      Kill connections authenticated by <username>.",
    "    * SKIPME (YES|NO)",
    "      Skip killing current connection (default: yes).",
    "LIST [options ...]",
    "    Return information about client connections. Options:",
    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
    "      Return clients of specified type.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "NO-EVICT (ON|OFF)",
    "    Protect current client connection from eviction.",
    "HELP",
    "    Prints this help.",
};

keel_resp_client_t *keel__srv_client_by_id(server_t *s, uint64_t id)
{
    for (keel_resp_client_t *x = keel_resp_server_next_client(&s->resp, NULL); x != NULL;
         x = keel_resp_server_next_client(&s->resp, x))
        if (keel_resp_client_id(x) == id)
            return x;
    return NULL;
}

int keel__srv_cmd_client(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *st = keel__srv_state(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (st == NULL || out == NULL)
        return KEEL_ENOMEM;
    const keel_resp_arg_t *sub = &argv[1];
    if (keel__srv_arg_is(sub, "setname") && argc == 3) {
        if (!name_ok(&argv[2]))
            return keel__srv_error(
                c, "ERR Client names cannot contain spaces, newlines or special characters.");
        set_name(st, &argv[2]);
        return keel__srv_simple(c, "OK");
    }
    if (keel__srv_arg_is(sub, "getname") && argc == 2)
        return st->name[0] ? keel_resp_write_bulk(out, st->name, strlen(st->name))
                           : keel_resp_write_nil(out);
    if (keel__srv_arg_is(sub, "id") && argc == 2)
        return keel_resp_write_int(out, (int64_t)keel_resp_client_id(c));
    if (keel__srv_arg_is(sub, "setinfo") && argc == 4)
        return keel__srv_simple(c, "OK");
    if (keel__srv_arg_is(sub, "list"))
        return client_list(c, argc, argv, out);
    if (keel__srv_arg_is(sub, "info")) {
        if (argc != 2)
            return wrong_args(out, "client|info");
        server_t *s = keel__srv_of(c);
        keel_buf_reset(&s->buf);
        if (client_line(&s->buf, c) != 0)
            return KEEL_ENOMEM;
        return keel_resp_write_bulk(out, keel_buf_rptr(&s->buf), keel_buf_unread(&s->buf));
    }
    if (keel__srv_arg_is(sub, "kill")) {
        if (argc < 3)
            return wrong_args(out, "client|kill");
        return client_kill(c, argc, argv, out);
    }
    if (keel__srv_arg_is(sub, "tracking")) {
        if (argc < 3)
            return wrong_args(out, "client|tracking");
        return keel__srv_client_tracking(c, argc, argv, out);
    }
    if (keel__srv_arg_is(sub, "caching")) {
        if (argc != 3)
            return wrong_args(out, "client|caching");
        return keel__srv_client_caching(c, argc, argv, out);
    }
    if (keel__srv_arg_is(sub, "getredir")) {
        if (argc != 2)
            return wrong_args(out, "client|getredir");
        return keel__srv_client_getredir(c, out);
    }
    if (keel__srv_arg_is(sub, "trackinginfo")) {
        if (argc != 2)
            return wrong_args(out, "client|trackinginfo");
        return keel__srv_client_trackinginfo(c, out);
    }
    if (keel__srv_arg_is(sub, "pause")) {
        if (argc < 3)
            return wrong_args(out, "client|pause");
        if (argc > 4)
            return keel_resp_write_errorf(out,
                                          "ERR unknown subcommand or wrong number of arguments "
                                          "for '%.*s'. Try CLIENT HELP.",
                                          (int)sub->len, (const char *)sub->ptr);
        return keel__srv_client_pause(c, argc, argv, out);
    }
    if (keel__srv_arg_is(sub, "unpause")) {
        if (argc != 2)
            return wrong_args(out, "client|unpause");
        return keel__srv_client_unpause(c, out);
    }
    if (keel__srv_arg_is(sub, "reply")) {
        if (argc != 3)
            return wrong_args(out, "client|reply");
        return client_reply(c, &argv[2], out);
    }
    if (keel__srv_arg_is(sub, "help")) {
        if (argc != 2)
            return wrong_args(out, "client|help");
        size_t n = sizeof(CLIENT_HELP) / sizeof(CLIENT_HELP[0]);
        int rc = keel_resp_write_array_header(out, n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = keel_resp_write_simple(out, CLIENT_HELP[i]);
        return rc;
    }
    if (keel__srv_arg_is(sub, "unblock")) /* docs/server.md says why */
        return keel_resp_write_error(
            out, "ERR keel: CLIENT UNBLOCK is not offered (a blocked pop may already be in the "
                 "Raft log); close the connection instead");
    if (keel__srv_arg_is(sub, "no-evict") || keel__srv_arg_is(sub, "no-touch")) {
        if (argc != 3)
            return wrong_args(out, keel__srv_arg_is(sub, "no-evict") ? "client|no-evict"
                                                                     : "client|no-touch");
        if (!keel__srv_arg_is(&argv[2], "on") && !keel__srv_arg_is(&argv[2], "off"))
            return keel_resp_write_error(out, "ERR syntax error");
        return keel__srv_simple(c, "OK"); /* keel evicts no client and keeps no LRU */
    }
    static const char *const fixed[] = {"setname", "getname", "id", "setinfo"};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (keel__srv_arg_is(sub, fixed[i]))
            return keel_resp_write_errorf(
                out, "ERR wrong number of arguments for 'client|%s' command", fixed[i]);
    return unknown_sub(out, "CLIENT", sub);
}

/* ---- HELLO, RESET, TIME ---------------------------------------------------------------- */

/*
 * HELLO [protover [AUTH user pass] [SETNAME name]]: protocol 2 or 3 (RESP3: the replies
 * from here on rendered by resp3.c; the answer itself is a map then). keel has no users:
 * the "default" user takes any password, as Redis's does with no password set.
 */
int keel__srv_cmd_hello(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *st = keel__srv_state(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (st == NULL || out == NULL)
        return KEEL_ENOMEM;
    int proto = st->resp3 ? 3 : 2;
    if (argc >= 2) {
        int64_t ver;
        if (keel_parse_i64(argv[1].ptr, argv[1].len, &ver) != 0)
            return keel_resp_write_error(out,
                                         "ERR Protocol version is not an integer or out of range");
        if (ver != 2 && ver != 3)
            return keel_resp_write_error(out, "NOPROTO unsupported protocol version");
        proto = (int)ver;
    }
    const keel_resp_arg_t *name = NULL;
    for (size_t i = 2; i < argc; i++) {
        if (keel__srv_arg_is(&argv[i], "auth") && i + 2 < argc) {
            if (!keel__srv_arg_is(&argv[i + 1], "default"))
                return keel_resp_write_error(
                    out, "WRONGPASS invalid username-password pair or user is disabled.");
            i += 2;
        } else if (keel__srv_arg_is(&argv[i], "setname") && i + 1 < argc) {
            name = &argv[++i];
            if (!name_ok(name))
                return keel__srv_error(
                    c, "ERR Client names cannot contain spaces, newlines or special characters.");
        } else {
            return keel_resp_write_errorf(out, "ERR Syntax error in HELLO option '%.*s'",
                                          (int)(argv[i].len > 64 ? 64 : argv[i].len),
                                          (const char *)argv[i].ptr);
        }
    }
    if (name)
        set_name(st, name);
    st->resp3 = proto == 3;
    /* every node takes writes (a follower forwards them): to a client, each is a master */
    keel_buf_t b;
    keel_buf_init(&b, 0);
    int rc = keel_resp_write_array_header(&b, 14);
    const char *kv[] = {"server", "redis", "version", "7.0.0"};
    for (size_t i = 0; rc == 0 && i < 4; i++)
        rc = keel_resp_write_bulk_str(&b, kv[i]);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(&b, "proto");
    if (rc == 0)
        rc = keel_resp_write_int(&b, proto);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(&b, "id");
    if (rc == 0)
        rc = keel_resp_write_int(&b, (int64_t)keel_resp_client_id(c));
    const char *kv2[] = {"mode", "standalone", "role", "master", "modules"};
    for (size_t i = 0; rc == 0 && i < 5; i++)
        rc = keel_resp_write_bulk_str(&b, kv2[i]);
    if (rc == 0)
        rc = keel_resp_write_array_header(&b, 0);
    if (rc == 0)
        rc =
            keel__srv_reply(st->resp3, KEEL_RESP3_MAP, out, keel_buf_rptr(&b), keel_buf_unread(&b));
    keel_buf_free(&b);
    return rc;
}

/* RESET: the connection as new (Redis 6.2's): out of MULTI, no WATCH, no subscriptions, no
 * name, linearizable reads. Replies +RESET. */
int keel__srv_cmd_reset(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    client_state_t *st = keel__srv_state(c);
    if (st == NULL)
        return KEEL_ENOMEM;
    keel__srv_multi_reset(st);
    keel__srv_watch_clear(st);
    keel_pubsub_drop(s->pubsub, c);
    st->name[0] = '\0';
    st->stale_reads = 0;
    st->resp3 = 0; /* as Redis: RESET goes back to RESP2 and turns tracking off */
    keel__srv_tracking_closed(s, st);
    return keel__srv_simple(c, "RESET");
}

int keel__srv_cmd_time(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    char sec[KEEL_DEC_BYTES_MAX], usec[KEEL_DEC_BYTES_MAX];
    size_t sn = keel_fmt_i64(sec, (int64_t)tv.tv_sec), un = keel_fmt_i64(usec, (int64_t)tv.tv_usec);
    int rc = keel_resp_write_array_header(out, 2);
    if (rc == 0)
        rc = keel_resp_write_bulk(out, sec, sn);
    return rc == 0 ? keel_resp_write_bulk(out, usec, un) : rc;
}

/* ---- CONFIG ------------------------------------------------------------------------ */

/*
 * The settings CONFIG shows, under Redis's names where the meaning is the same. Four can
 * change at run time (maxclients, timeout, slowlog-max-len, slowlog-log-slower-than); the rest are
 * fixed by how keel works (every write is in the fsynced Raft log: appendonly yes, appendfsync
 * always) or by its command line (docs/server.md).
 */
typedef struct setting {
    const char *name;
    int64_t (*get)(const server_t *s);
    const char *text; /* a fixed value, when get is NULL */
    int64_t min, max; /* settable when max > 0 */
    void (*set)(server_t *s, int64_t v);
} setting_t;

static int64_t get_maxclients(const server_t *s)
{
    return (int64_t)s->resp.cfg.clients_max;
}

static void set_maxclients(server_t *s, int64_t v)
{
    s->resp.cfg.clients_max = s->cfg.resp.clients_max = (size_t)v;
}

static int64_t get_timeout(const server_t *s)
{
    return (int64_t)(s->resp.cfg.idle_timeout_ms / 1000);
}

static void set_timeout(server_t *s, int64_t v)
{
    s->cfg.resp.idle_timeout_ms = (keel_ms_t)v * 1000;
    keel_resp_server_set_idle_timeout(&s->resp, (keel_ms_t)v * 1000);
}

static int64_t get_bulk_max(const server_t *s)
{
    return (int64_t)s->resp.cfg.resp.bulk_bytes_max;
}

static int64_t get_querybuf_max(const server_t *s)
{
    return (int64_t)s->resp.cfg.querybuf_bytes_max;
}

static int64_t get_port(const server_t *s)
{
    return keel_resp_server_port(&s->resp);
}

static int64_t get_slowlog_slower(const server_t *s)
{
    return s->slowlog_slower_than_us;
}

static void set_slowlog_slower(server_t *s, int64_t v)
{
    s->slowlog_slower_than_us = v;
}

static int64_t get_slowlog_len(const server_t *s)
{
    return (int64_t)s->slowlog_len_max;
}

static void set_slowlog_len(server_t *s, int64_t v)
{
    s->slowlog_len_max = (uint64_t)v; /* as Redis: the log is cut at its next entry */
}

static const setting_t SETTINGS[] = {
    {"maxclients", get_maxclients, NULL, 1, 4294967295, set_maxclients},
    {"timeout", get_timeout, NULL, 0, 2147483647, set_timeout},
    {"proto-max-bulk-len", get_bulk_max, NULL, 0, 0, NULL},
    {"client-query-buffer-limit", get_querybuf_max, NULL, 0, 0, NULL},
    {"port", get_port, NULL, 0, 0, NULL},
    {"databases", NULL, "1", 0, 0, NULL},
    {"appendonly", NULL, "yes", 0, 0, NULL},
    {"appendfsync", NULL, "always", 0, 0, NULL},
    {"save", NULL, "", 0, 0, NULL},
    {"maxmemory", NULL, "0", 0, 0, NULL},
    /* per node, as in Redis (slowlog.c) */
    {"slowlog-max-len", get_slowlog_len, NULL, 0, INT64_MAX, set_slowlog_len},
    {"slowlog-log-slower-than", get_slowlog_slower, NULL, -1, INT64_MAX, set_slowlog_slower},
};
#define N_SETTINGS (sizeof(SETTINGS) / sizeof(SETTINGS[0]))

static const setting_t *setting_find(const keel_resp_arg_t *a)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (keel__srv_arg_is(a, SETTINGS[i].name))
            return &SETTINGS[i];
    return NULL;
}

static int has_glob(const keel_resp_arg_t *a)
{
    for (size_t i = 0; i < a->len; i++)
        if (a->ptr[i] == '*' || a->ptr[i] == '?' || a->ptr[i] == '[')
            return 1;
    return 0;
}

/* CONFIG GET pattern...: name, value pairs; a name asked for exactly is echoed as written
 * (Redis does), a pattern's matches by their own names. */
static int config_get(server_t *s, size_t argc, const keel_resp_arg_t *argv, keel_buf_t *out)
{
    const keel_resp_arg_t *as[N_SETTINGS] = {0};
    int hit[N_SETTINGS] = {0};
    size_t n = 0;
    for (size_t i = 2; i < argc; i++) {
        char pat[128];
        size_t pl = argv[i].len < sizeof(pat) - 1 ? argv[i].len : sizeof(pat) - 1;
        for (size_t k = 0; k < pl; k++) /* names are lower case; patterns match any case */
            pat[k] = (char)(argv[i].ptr[k] >= 'A' && argv[i].ptr[k] <= 'Z' ? argv[i].ptr[k] + 32
                                                                           : argv[i].ptr[k]);
        for (size_t k = 0; k < N_SETTINGS; k++)
            if (!hit[k] &&
                keel_glob_match((const uint8_t *)pat, pl, (const uint8_t *)SETTINGS[k].name,
                                strlen(SETTINGS[k].name))) {
                hit[k] = 1;
                as[k] = has_glob(&argv[i]) ? NULL : &argv[i];
                n++;
            }
    }
    int rc = keel_resp_write_array_header(out, 2 * n);
    for (size_t k = 0; rc == 0 && k < N_SETTINGS; k++) {
        if (!hit[k])
            continue;
        rc = as[k] ? keel_resp_write_bulk(out, as[k]->ptr, as[k]->len)
                   : keel_resp_write_bulk_str(out, SETTINGS[k].name);
        if (rc == 0 && SETTINGS[k].get == NULL) {
            rc = keel_resp_write_bulk_str(out, SETTINGS[k].text);
        } else if (rc == 0) {
            char v[KEEL_DEC_BYTES_MAX];
            size_t vn = keel_fmt_i64(v, SETTINGS[k].get(s));
            rc = keel_resp_write_bulk(out, v, vn);
        }
    }
    return rc;
}

/* CONFIG SET name value [name value ...]: all checked before any is set, as Redis does. */
static int config_set(server_t *s, size_t argc, const keel_resp_arg_t *argv, keel_buf_t *out)
{
    if (argc < 4)
        return wrong_args(out, "config|set");
    if (argc % 2 != 0)
        return keel_resp_write_error(out, "ERR syntax error");
    for (size_t i = 2; i < argc; i += 2) {
        const setting_t *st = setting_find(&argv[i]);
        int nl = (int)(argv[i].len > 64 ? 64 : argv[i].len);
        const char *nm = (const char *)argv[i].ptr;
        if (st == NULL)
            return keel_resp_write_errorf(
                out, "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'", nl, nm);
        if (st->set == NULL)
            return keel_resp_write_errorf(out,
                                          "ERR CONFIG SET failed (possibly related to argument "
                                          "'%.*s') - can't set immutable config",
                                          nl, nm);
        int64_t v;
        if (keel_parse_i64(argv[i + 1].ptr, argv[i + 1].len, &v) != 0)
            return keel_resp_write_errorf(out,
                                          "ERR CONFIG SET failed (possibly related to argument "
                                          "'%.*s') - argument couldn't be parsed into an integer",
                                          nl, nm);
        if (v < st->min || v > st->max)
            return keel_resp_write_errorf(
                out,
                "ERR CONFIG SET failed (possibly related to argument '%.*s') - argument must be "
                "between %lld and %lld inclusive",
                nl, nm, (long long)st->min, (long long)st->max);
    }
    for (size_t i = 2; i < argc; i += 2) {
        int64_t v;
        keel_parse_i64(argv[i + 1].ptr, argv[i + 1].len, &v);
        setting_find(&argv[i])->set(s, v);
    }
    return keel_resp_write_simple(out, "OK");
}

int keel__srv_cmd_config(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    if (keel__srv_arg_is(&argv[1], "get"))
        return argc < 3 ? wrong_args(out, "config|get") : config_get(s, argc, argv, out);
    if (keel__srv_arg_is(&argv[1], "set"))
        return config_set(s, argc, argv, out);
    if (keel__srv_arg_is(&argv[1], "resetstat")) {
        if (argc != 2)
            return wrong_args(out, "config|resetstat");
        keel_resp_server_reset_stats(&s->resp);
        keel__srv_info_reset(s);
        return keel_resp_write_simple(out, "OK");
    }
    return unknown_sub(out, "CONFIG", &argv[1]);
}
