/* commands.c - the command table and the connection commands (INFO, COMMAND, CLIENT, ...). */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"
#include "runtime/clock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- connection commands ----------------------------------------------------------- */

int keel__srv_cmd_select(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    if (argv[1].len == 1 && argv[1].ptr[0] == '0')
        return keel__srv_simple(c, "OK");
    return keel__srv_error(c, "ERR DB index is out of range");
}

int keel__srv_cmd_keel_reads(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    client_state_t *st = keel__srv_state(c);
    if (st == NULL)
        return KEEL_ENOMEM;
    if (keel__srv_arg_is(&argv[1], "stale"))
        st->stale_reads = 1;
    else if (keel__srv_arg_is(&argv[1], "linearizable"))
        st->stale_reads = 0;
    else
        return keel__srv_error(c, "ERR KEEL.READS takes 'stale' or 'linearizable'");
    return keel__srv_simple(c, "OK");
}

/* Redis 7's COMMAND entry: name, arity, flags, first key, last key, step, ACL categories,
 * tips, key specs, subcommands (the last four empty here; redis-py reads 6 or 10). */
static int command_entry(keel_buf_t *out, const keel_resp_command_t *row)
{
    static const struct {
        uint32_t flag;
        const char *name;
    } names[] = {{KEEL_RESP_CMD_WRITE, "write"},
                 {KEEL_RESP_CMD_READONLY, "readonly"},
                 {KEEL_RESP_CMD_ADMIN, "admin"},
                 {KEEL_RESP_CMD_FAST, "fast"},
                 {KEEL_RESP_CMD_NOMULTI, "no_multi"}};
    size_t nf = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        nf += (row->flags & names[i].flag) != 0;
    int rc = keel_resp_write_array_header(out, 10);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, row->name);
    if (rc == 0)
        rc = keel_resp_write_int(out, row->arity);
    if (rc == 0)
        rc = keel_resp_write_array_header(out, nf);
    for (size_t i = 0; rc == 0 && i < sizeof(names) / sizeof(names[0]); i++)
        if (row->flags & names[i].flag)
            rc = keel_resp_write_simple(out, names[i].name);
    if (rc == 0)
        rc = keel_resp_write_int(out, row->first_key);
    if (rc == 0)
        rc = keel_resp_write_int(out, row->last_key);
    if (rc == 0)
        rc = keel_resp_write_int(out, row->key_step);
    for (int i = 0; rc == 0 && i < 4; i++)
        rc = keel_resp_write_array_header(out, 0);
    return rc;
}

/* COMMAND DOCS's entry (RESP2: a flat map): name, then [summary, text] or []. */
static int docs_entry(keel_buf_t *out, const keel_resp_command_t *row)
{
    int rc = keel_resp_write_bulk_str(out, row->name);
    if (rc == 0)
        rc = keel_resp_write_array_header(out, row->summary ? 2 : 0);
    if (rc == 0 && row->summary)
        rc = keel_resp_write_bulk_str(out, "summary");
    if (rc == 0 && row->summary)
        rc = keel_resp_write_bulk_str(out, row->summary);
    return rc;
}

/* COMMAND GETKEYS cmd arg...: the key arguments, by the row's first/last/step. */
static int command_getkeys(server_t *s, size_t argc, const keel_resp_arg_t *argv, keel_buf_t *out)
{
    if (argc < 4)
        return keel_resp_write_error(out,
                                     "ERR wrong number of arguments for 'command|getkeys' command");
    const keel_resp_command_t *row = keel_resp_server_find(&s->resp, argv[2].ptr, argv[2].len);
    if (row == NULL)
        return keel_resp_write_error(out, "ERR Invalid command specified");
    size_t cargc = argc - 2;
    if ((row->arity > 0 && cargc != (size_t)row->arity) ||
        (row->arity < 0 && cargc < (size_t)-row->arity))
        return keel_resp_write_error(out, "ERR Invalid number of arguments specified for command");
    if (row->first_key <= 0 && row->numkeys_at <= 0)
        return keel_resp_write_error(out, "ERR The command has no key arguments");
    int last = row->last_key < 0 ? (int)cargc + row->last_key : row->last_key;
    int step = row->key_step > 0 ? row->key_step : 1;
    size_t nkeys = 0, counted = 0;
    for (int i = row->first_key; row->first_key > 0 && i <= last && (size_t)i < cargc; i += step)
        nkeys++;
    if (row->numkeys_at > 0) { /* Redis's movable keys: a count, then that many keys */
        size_t at = (size_t)row->numkeys_at;
        int64_t n;
        if (at >= cargc || keel_parse_i64(argv[2 + at].ptr, argv[2 + at].len, &n) != 0 || n <= 0 ||
            (uint64_t)n > cargc - at - 1)
            return keel_resp_write_error(out, "ERR Invalid arguments specified for command");
        counted = (size_t)n;
    }
    int rc = keel_resp_write_array_header(out, nkeys + counted);
    for (int i = row->first_key; rc == 0 && row->first_key > 0 && i <= last && (size_t)i < cargc;
         i += step)
        rc = keel_resp_write_bulk(out, argv[2 + i].ptr, argv[2 + i].len);
    for (size_t k = 0; rc == 0 && k < counted; k++)
        rc = keel_resp_write_bulk(out, argv[2 + row->numkeys_at + 1 + k].ptr,
                                  argv[2 + row->numkeys_at + 1 + k].len);
    return rc;
}

/* COMMAND [COUNT | LIST | INFO name... | DOCS [name...] | GETKEYS cmd arg...], from the
 * rows of the table. */
int keel__srv_cmd_command(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    size_t n = s->resp.cmds_len;
    if (argc == 2 && keel__srv_arg_is(&argv[1], "count"))
        return keel_resp_write_int(out, (int64_t)n);
    if (argc >= 2 && keel__srv_arg_is(&argv[1], "list")) {
        if (argc != 2) /* FILTERBY is not built */
            return keel_resp_write_error(out, "ERR syntax error");
        int rc = keel_resp_write_array_header(out, n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = keel_resp_write_bulk_str(out, s->resp.cmds[i].name);
        return rc;
    }
    if (argc >= 2 && keel__srv_arg_is(&argv[1], "getkeys"))
        return command_getkeys(s, argc, argv, out);
    int info = argc >= 2 && keel__srv_arg_is(&argv[1], "info");
    int docs = argc >= 2 && keel__srv_arg_is(&argv[1], "docs");
    if (argc > 1 && !info && !docs)
        return keel_resp_write_errorf(out, "ERR unknown subcommand '%.*s'. Try COMMAND HELP.",
                                      (int)(argv[1].len > 64 ? 64 : argv[1].len),
                                      (const char *)argv[1].ptr);
    if (argc <= 2 && !info) { /* every row */
        int rc = keel_resp_write_array_header(out, docs ? 2 * n : n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = docs ? docs_entry(out, &s->resp.cmds[i]) : command_entry(out, &s->resp.cmds[i]);
        return rc;
    }
    size_t found = 0; /* DOCS lists only the rows it knows; INFO answers nil for the rest */
    for (size_t i = 2; i < argc; i++)
        found += keel_resp_server_find(&s->resp, argv[i].ptr, argv[i].len) != NULL;
    int rc = keel_resp_write_array_header(out, info ? argc - 2 : 2 * found);
    for (size_t i = 2; rc == 0 && i < argc; i++) {
        const keel_resp_command_t *row = keel_resp_server_find(&s->resp, argv[i].ptr, argv[i].len);
        if (row != NULL)
            rc = info ? command_entry(out, row) : docs_entry(out, row);
        else if (info)
            rc = keel_resp_write_nil_array(out);
    }
    return rc;
}

int keel__srv_cmd_echo(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *out = keel_resp_client_out(c);
    return out ? keel_resp_write_bulk(out, argv[1].ptr, argv[1].len) : KEEL_ENOMEM;
}

int keel__srv_cmd_quit(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *out = keel_resp_client_out(c);
    keel_resp_client_close_after_reply(c);
    return out ? keel_resp_write_simple(out, "OK") : KEEL_ENOMEM;
}

/*
 * KEEL.CLUSTER (docs/membership.md):
 *   MEMBERS                     one array per member of the configuration in force on
 *                               this node: name, id, peer address, "voter" or "learner",
 *                               1 for the current leader, client address ("" if unknown)
 *   ADD name peer_addr client_addr   add a learner; the leader promotes it to voter once
 *                               it has caught up. Answers its id once the change commits.
 *   JOIN name peer_addr client_addr  ADD for `keel server --join`: asking again with the
 *                               same name and peer address is not an error; answers
 *                               [id, cluster id, [member...]]
 *   REMOVE name                 remove a voter or learner (the leader hands leadership
 *                               over first if it is the one removed)
 *   TRANSFER name               hand leadership to that member; must reach the leader
 *   UPDATE name client_addr     set a member's client address (each node publishes its
 *                               own this way on its own; the bootstrap directory has none)
 * ADD, JOIN, REMOVE and UPDATE go through the log like writes: any node takes them (a
 * follower forwards to the leader), one change at a time (a second waits for the first).
 */
static int members_reply(server_t *s, keel_buf_t *out, uint64_t leader)
{
    const keel_memberdir_t *d = keel_node_members(s->node);
    int rc = keel_resp_write_array_header(out, d->n);
    for (size_t i = 0; rc == 0 && i < d->n; i++) {
        const keel_node_member_t *m = &d->m[i];
        rc = keel_resp_write_array_header(out, 6);
        if (rc == 0)
            rc = keel_resp_write_bulk(out, m->name, strlen(m->name));
        if (rc == 0)
            rc = keel_resp_write_int(out, (int64_t)m->id);
        if (rc == 0)
            rc = keel_resp_write_bulk(out, m->peer_addr, strlen(m->peer_addr));
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, m->voter ? "voter" : "learner");
        if (rc == 0)
            rc = keel_resp_write_int(out, leader == m->id);
        if (rc == 0)
            rc = keel_resp_write_bulk(out, m->client_addr, strlen(m->client_addr));
    }
    return rc;
}

static int join_reply(keel_buf_t *out, const keel_node_conf_result_t *res)
{
    char cid[KEEL_DEC_BYTES_MAX];
    size_t cid_n = keel_fmt_u64(cid, res->cluster_id);
    int rc = keel_resp_write_array_header(out, 3);
    if (rc == 0)
        rc = keel_resp_write_int(out, (int64_t)res->id);
    if (rc == 0)
        rc = keel_resp_write_bulk(out, cid, cid_n);
    if (rc == 0)
        rc = keel_resp_write_array_header(out, res->dir.n);
    for (size_t i = 0; rc == 0 && i < res->dir.n; i++) {
        const keel_node_member_t *m = &res->dir.m[i];
        rc = keel_resp_write_array_header(out, 5);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, m->name);
        if (rc == 0)
            rc = keel_resp_write_int(out, (int64_t)m->id);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, m->peer_addr);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, m->client_addr);
        if (rc == 0)
            rc = keel_resp_write_bulk_str(out, m->voter ? "voter" : "learner");
    }
    return rc;
}

/*
 * A membership change's result (server/node.h), worded as keel server always answered:
 * +OK; the new member's id; JOIN's [id, cluster id, [[name, id, peer, client, role], ...]];
 * -ERR keel: why it was refused.
 */
int keel__srv_conf_reply(keel_buf_t *out, const uint8_t *p, size_t len)
{
    keel_node_conf_result_t *res = malloc(sizeof(*res));
    if (res == NULL)
        return keel_resp_write_error(out, KEEL_SRV_ERR_OOM);
    int rc = keel_node_conf_result_decode(p, len, res);
    if (rc != 0)
        rc = keel_resp_write_error(out, "ERR keel: bad membership result");
    else if (res->kind == KEEL_NODE_CONF_DONE)
        rc = keel_resp_write_simple(out, "OK");
    else if (res->kind == KEEL_NODE_CONF_ID)
        rc = keel_resp_write_int(out, (int64_t)res->id);
    else if (res->kind == KEEL_NODE_CONF_REFUSED)
        rc = keel_resp_write_errorf(out, "ERR keel: %s", res->error);
    else
        rc = join_reply(out, res);
    free(res);
    return rc;
}

static int copy_arg(char *dst, size_t cap, const uint8_t *a, size_t len)
{
    if (len >= cap || memchr(a, '\0', len))
        return KEEL_EINVAL;
    memcpy(dst, a, len);
    dst[len] = '\0';
    return 0;
}

/* KEEL.CLUSTER ADD|JOIN name peer client, REMOVE name, UPDATE name client as a typed change. */
int keel__srv_conf_parse(size_t argc, const uint8_t *const *argv, const size_t *lens,
                         keel_node_conf_change_t *c)
{
    static const struct {
        const char *word;
        keel_node_conf_op_t op;
        size_t argc;
    } ops[] = {{"add", KEEL_NODE_CONF_ADD, 5},
               {"join", KEEL_NODE_CONF_JOIN, 5},
               {"remove", KEEL_NODE_CONF_REMOVE, 3},
               {"update", KEEL_NODE_CONF_UPDATE, 4}};
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        keel_resp_arg_t w = {.ptr = argv[1], .len = lens[1]};
        if (argc != ops[i].argc || !keel__srv_arg_is(&w, ops[i].word))
            continue;
        c->op = ops[i].op;
        int rc = copy_arg(c->name, sizeof(c->name), argv[2], lens[2]);
        if (rc == 0 && argc == 5)
            rc = copy_arg(c->peer_addr, sizeof(c->peer_addr), argv[3], lens[3]);
        if (rc == 0 && argc >= 4)
            rc = copy_arg(c->client_addr, sizeof(c->client_addr), argv[argc - 1], lens[argc - 1]);
        return rc;
    }
    return KEEL_ENOTFOUND;
}

static int cluster_change(keel_resp_client_t *c, server_t *s, size_t argc,
                          const keel_resp_arg_t *argv)
{
    if (keel__srv_ensure_argv(s, argc) != 0)
        return keel__srv_oom(c);
    for (size_t i = 0; i < argc; i++) {
        s->argv[i] = argv[i].ptr;
        s->lens[i] = argv[i].len;
    }
    keel_node_conf_change_t chg;
    if (keel__srv_conf_parse(argc, s->argv, s->lens, &chg) != 0)
        return keel__srv_error(c, "ERR keel: name or address too long");
    client_state_t *cs = keel__srv_state(c);
    if (cs == NULL)
        return keel__srv_oom(c);
    return keel__srv_submit(c, s, cs, argc, RUN_CONF, NULL); /* NOMULTI: never in MULTI */
}

int keel__srv_cmd_cluster(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    /* a change defers its reply: the output is asked for only by the other branches (asked
       behind an open deferred reply, it queues a slot of its own) */
    if ((argc == 5 && (keel__srv_arg_is(&argv[1], "add") || keel__srv_arg_is(&argv[1], "join"))) ||
        (argc == 3 && keel__srv_arg_is(&argv[1], "remove")) ||
        (argc == 4 && keel__srv_arg_is(&argv[1], "update")))
        return cluster_change(c, s, argc, argv);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    keel_node_status_t st;
    keel_node_get_status(s->node, &st);
    if (argc == 2 && keel__srv_arg_is(&argv[1], "members"))
        return members_reply(s, out, st.leader);
    if (argc == 3 && keel__srv_arg_is(&argv[1], "transfer")) {
        const keel_memberdir_t *d = keel_node_members(s->node);
        uint64_t to = 0;
        for (size_t i = 0; i < d->n; i++)
            if (strlen(d->m[i].name) == argv[2].len &&
                memcmp(d->m[i].name, argv[2].ptr, argv[2].len) == 0)
                to = d->m[i].id;
        if (to == 0)
            return keel__srv_error(c, "ERR keel: no such member");
        if (to == st.leader)
            return keel__srv_simple(c, "OK"); /* already leads */
        int rc = keel_node_transfer(s->node, to);
        if (rc == KEEL_ENOTLEADER)
            return keel_resp_write_errorf(out, "ERR keel: not the leader; send it to %s",
                                          st.has_leader ? keel_node_member_name(s->node, st.leader)
                                                        : "the leader (none known yet)");
        if (rc != 0)
            return keel_resp_write_errorf(out, "ERR keel: transfer refused: %s", keel_strerror(rc));
        return keel__srv_simple(c, "OK");
    }
    return keel__srv_error(c, "ERR keel: KEEL.CLUSTER MEMBERS | ADD name peer_addr client_addr | "
                              "REMOVE name | TRANSFER name | UPDATE name client_addr");
}

/* ---- the table ------------------------------------------------------------------- */

#define FAST KEEL_RESP_CMD_FAST
#define SUBSCRIBED KEEL_RESP_CMD_SUBSCRIBED
#define NOQUEUE KEEL_RESP_CMD_NOQUEUE
#define NOMULTI KEEL_RESP_CMD_NOMULTI
/*
 * The connection commands: one row each (name, arity, flags, handler, key positions,
 * summary). The data commands' rows come from the state machine's table (core/kv) and
 * share one handler (conn.c's keel__srv_cmd_data). The flags decide the rules of
 * subscribed mode and MULTI (conn.c's keel__srv_before_command).
 */
static const keel_resp_command_t connection_commands[] = {
    {"ping", -1, FAST | SUBSCRIBED, keel__srv_cmd_ping, .summary = "Ping the server"},
    {"echo", 2, FAST, keel__srv_cmd_echo, .summary = "Return the message"},
    {"quit", -1, FAST | SUBSCRIBED | NOQUEUE, keel__srv_cmd_quit,
     .summary = "Close the connection"},
    {"select", 2, FAST, keel__srv_cmd_select, .summary = "Select database 0 (the only one)"},
    {"client", -2, FAST, keel__srv_cmd_client,
     .summary = "CLIENT SETNAME, GETNAME, ID, SETINFO, LIST, INFO, KILL, PAUSE, UNPAUSE, REPLY, "
                "TRACKING, CACHING, NO-EVICT, HELP"},
    {"hello", -1, FAST, keel__srv_cmd_hello, .summary = "Handshake: RESP2 or RESP3, SETNAME"},
    {"reset", 1, FAST | SUBSCRIBED | NOQUEUE, keel__srv_cmd_reset,
     .summary = "The connection as new: no MULTI, WATCH, subscriptions or name"},
    {"time", 1, FAST, keel__srv_cmd_time, .summary = "This node's clock: seconds, microseconds"},
    {"wait", 3, 0, keel__srv_cmd_wait,
     .summary = "How many other members hold the connection's last write (waits for a count)"},
    {"config", -2, KEEL_RESP_CMD_ADMIN, keel__srv_cmd_config,
     .summary = "CONFIG GET, SET (maxclients, timeout, slowlog-*) and RESETSTAT"},
    {"info", -1, 0, keel__srv_cmd_info, .summary = "Server, clients, stats and Raft sections"},
    {"slowlog", -2, KEEL_RESP_CMD_ADMIN, keel__srv_cmd_slowlog,
     .summary = "This node's slow commands: GET, LEN, RESET, HELP"},
    {"command", -1, 0, keel__srv_cmd_command,
     .summary = "The command table: COUNT, INFO, DOCS, LIST, GETKEYS"},
    {"keel.reads", 2, FAST, keel__srv_cmd_keel_reads,
     .summary = "This connection's reads: stale or linearizable"},
    {"multi", 1, FAST | NOQUEUE, keel__srv_cmd_multi, .summary = "Start a transaction"},
    {"exec", 1, KEEL_RESP_CMD_WRITE | NOQUEUE, keel__srv_cmd_exec,
     .summary = "Run the queued commands as one Raft entry"},
    {"discard", 1, FAST | NOQUEUE, keel__srv_cmd_discard, .summary = "Drop the queued commands"},
    {"watch", -2, FAST | NOQUEUE, keel__srv_cmd_watch, 1, -1, 1,
     .summary = "Make EXEC fail if one of the keys changes"},
    {"unwatch", 1, FAST, keel__srv_cmd_unwatch, .summary = "Forget the watched keys"},
    {"subscribe", -2, SUBSCRIBED, keel__srv_cmd_subscribe, .summary = "Listen to channels"},
    {"unsubscribe", -1, SUBSCRIBED, keel__srv_cmd_unsubscribe, .summary = "Stop listening"},
    {"psubscribe", -2, SUBSCRIBED, keel__srv_cmd_psubscribe,
     .summary = "Listen to channel patterns"},
    {"punsubscribe", -1, SUBSCRIBED, keel__srv_cmd_punsubscribe,
     .summary = "Stop listening to patterns"},
    {"publish", 3, FAST, keel__srv_cmd_publish,
     .summary = "Send a message to a channel's subscribers on every node"},
    {"keel.cluster", -2, KEEL_RESP_CMD_ADMIN | NOMULTI, keel__srv_cmd_cluster,
     .summary = "Membership: MEMBERS, ADD, JOIN, REMOVE, TRANSFER, UPDATE"},
    {"keel.watch", -2, NOMULTI, keel__srv_cmd_keel_watch,
     .summary = "A feed of every change under a prefix"},
    {"keel.ap.put", -3, NOMULTI, keel__srv_cmd_ap_put, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.PUT key value [CTX context] [W n|ONE|QUORUM|ALL]"},
    {"keel.ap.del", -2, NOMULTI, keel__srv_cmd_ap_del, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.DEL key CTX context [W n|ONE|QUORUM|ALL] (a tombstone)"},
    {"keel.ap.get", -2, NOMULTI, keel__srv_cmd_ap_get, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.GET key [R n|ONE|QUORUM|ALL]: replies, context, values"},
    {"keel.ap.incr", -3, NOMULTI, keel__srv_cmd_ap_incr, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.INCR key delta [W n|ONE|QUORUM|ALL] (a PN-counter)"},
    {"keel.ap.sadd", -3, NOMULTI, keel__srv_cmd_ap_sadd, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.SADD key member [W level] (an OR-set; SMEMBERS lists it)"},
    {"keel.ap.srem", -3, NOMULTI, keel__srv_cmd_ap_srem, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.SREM key member [W level] (removes what this node saw)"},
    {"keel.ap.smembers", -2, NOMULTI, keel__srv_cmd_ap_smembers, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.SMEMBERS key [R n|ONE|QUORUM|ALL]: replies, \"\", members "
                "(an OR-set)"},
    {"keel.ap.policy", 2, NOMULTI, keel__srv_cmd_ap_policy, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.POLICY key: the key's conflict policy, the --ap-policy "
                "prefix that chose it, this node's table digest"},
    {"keel.ap.where", 2, NOMULTI, keel__srv_cmd_ap_where, 1, 1, 1,
     .summary = "AP keyspace: KEEL.AP.WHERE key: the key's homes, then its fallbacks (names)"},
    {"keel.ap.status", 1, NOMULTI, keel__srv_cmd_ap_status,
     .summary = "AP keyspace: KEEL.AP.STATUS: leaving, drained, move_pending, hints_pending, keys "
                "(a removed node may be stopped once drained is 1)"},
    {"keel.reg", -2, NOMULTI, keel__srv_cmd_reg,
     .summary = "Service registry: REGISTER, DEREGISTER, PASS, WARN, FAIL, HEARTBEAT, SERVICES, "
                "INSTANCES, GET, INDEX, LIMITS, WAIT, FEED"},
};
#undef FAST
#undef SUBSCRIBED
#undef NOQUEUE
#undef NOMULTI

#define N_CONN_CMDS (sizeof(connection_commands) / sizeof(connection_commands[0]))

/* One row's statistics: Prometheus counters labelled with the command's name. */
static void stats_init(server_t *s, cmd_stats_t *st, const char *name)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "cmd=\"%s\"", name);
    st->name = name;
    st->calls = keel_metrics_counter(s->metrics, "keel_commands_total",
                                     "Commands received, by command.", labels);
    st->errors =
        keel_metrics_counter(s->metrics, "keel_command_errors_total",
                             "Commands refused or answered with an error, by command.", labels);
}

/*
 * The command table: the connection commands plus every command core/kv knows but the
 * internal ones (KEEL.EXPIRE.SWEEP and KEEL.LEASE.SWEEP are housekeeping the leader
 * proposes with its own clock; a client choosing now_ms could expire keys early). Each
 * row's data is its statistics, kept in s->stats.
 */
int keel__srv_commands_build(server_t *s, keel_resp_command_t **out, size_t *n_out)
{
    size_t nkv = keel_kv_commands_count(), n = N_CONN_CMDS + nkv;
    keel_resp_command_t *t = calloc(n, sizeof(*t));
    s->stats = calloc(n, sizeof(*s->stats));
    if (t == NULL || s->stats == NULL) {
        free(t);
        return KEEL_ENOMEM;
    }
    memcpy(t, connection_commands, sizeof(connection_commands));
    size_t j = N_CONN_CMDS;
    for (size_t i = 0; i < nkv; i++) {
        keel_kv_command_info_t info;
        keel_kv_command_info(i, &info);
        if (info.internal)
            continue;
        t[j++] = (keel_resp_command_t){
            .name = info.name,
            .arity = info.arity,
            .flags = (info.flags & KEEL_KV_WRITE) ? KEEL_RESP_CMD_WRITE : KEEL_RESP_CMD_READONLY,
            .handler = info.blocking == 2 ? keel__srv_cmd_lblock
                       : info.blocking    ? keel__srv_cmd_xblock
                                          : keel__srv_cmd_data,
            .first_key = info.first_key,
            .last_key = info.last_key,
            .key_step = info.key_step,
            .numkeys_at = info.numkeys_at,
            .summary = info.summary,
        };
    }
    for (size_t i = 0; i < j; i++) {
        stats_init(s, &s->stats[i], t[i].name);
        t[i].data = &s->stats[i];
        if (i < N_CONN_CMDS && keel__srv_resp3_wraps(t[i].name)) {
            s->stats[i].inner = t[i].handler; /* its reply as RESP3 after HELLO 3 */
            t[i].handler = keel__srv_cmd_resp3;
        }
    }
    s->stats_n = j;
    *out = t;
    *n_out = j;
    return 0;
}
