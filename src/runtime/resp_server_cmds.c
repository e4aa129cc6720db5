/* resp_server_cmds.c - RESP server: built-in commands, the command table, dispatch. */
#include "runtime/resp_server_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The dropped replies' buffer (CLIENT REPLY OFF) keeps its memory up to this much. */
#define SINK_KEEP_BYTES (64u * 1024u)

/* ---- built-in commands ----------------------------------------------------------- */

static int cmd_ping(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    if (argc > 2)
        return keel_resp_client_errorf(c, "ERR wrong number of arguments for 'ping' command");
    keel_buf_t *o = keel_resp_client_out(c);
    if (o == NULL)
        return KEEL_ENOMEM;
    return argc == 2 ? keel_resp_write_bulk(o, argv[1].ptr, argv[1].len)
                     : keel_resp_write_simple(o, "PONG");
}

static int cmd_echo(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *o = keel_resp_client_out(c);
    return o ? keel_resp_write_bulk(o, argv[1].ptr, argv[1].len) : KEEL_ENOMEM;
}

static int cmd_quit(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    keel_buf_t *o = keel_resp_client_out(c);
    keel_resp_client_close_after_reply(c);
    return o ? keel_resp_write_simple(o, "OK") : KEEL_ENOMEM;
}

static const keel_resp_command_t builtins[] = {
    {"ping", -1, KEEL_RESP_CMD_FAST | KEEL_RESP_CMD_SUBSCRIBED, cmd_ping,
     .summary = "Ping the server"},
    {"echo", 2, KEEL_RESP_CMD_FAST, cmd_echo, .summary = "Return the message"},
    {"quit", -1, KEEL_RESP_CMD_FAST | KEEL_RESP_CMD_SUBSCRIBED | KEEL_RESP_CMD_NOQUEUE, cmd_quit,
     .summary = "Close the connection"},
};

/* ---- command table ---------------------------------------------------------------- */

static int cmd_cmp(const void *a, const void *b)
{
    return strcasecmp(((const keel_resp_command_t *)a)->name,
                      ((const keel_resp_command_t *)b)->name);
}

static int check_command(const keel_resp_command_t *k, keel_errmsg_t *msg)
{
    size_t n = k->name ? strlen(k->name) : 0;
    if (n == 0 || n > KEEL_RESP_CMD_NAME_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: command name empty or over %d bytes",
                         KEEL_RESP_CMD_NAME_BYTES_MAX);
    if (k->arity == 0 || k->handler == NULL)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: command %s: arity 0 or no handler",
                         k->name);
    return 0;
}

static int find_in(const keel_resp_command_t *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(t[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The user's table plus the built-ins it does not replace, sorted for binary search. */
int keel__resp_build_table(keel_resp_server_t *s, const keel_resp_command_t *cmds, size_t n,
                           keel_errmsg_t *msg)
{
    size_t nb = sizeof(builtins) / sizeof(builtins[0]);
    if (n > KEEL_RESP_COMMANDS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: %zu commands, limit %d", n,
                         KEEL_RESP_COMMANDS_MAX);
    for (size_t i = 0; i < n; i++) {
        int rc = check_command(&cmds[i], msg);
        if (rc != 0)
            return rc;
        if (find_in(cmds, i, cmds[i].name) >= 0)
            return keel_errf(msg, KEEL_EINVAL, "resp_server: command %s listed twice",
                             cmds[i].name);
    }
    s->cmds = malloc((n + nb) * sizeof(*s->cmds));
    if (s->cmds == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "resp_server: out of memory");
    memcpy(s->cmds, cmds, n * sizeof(*cmds));
    s->cmds_len = n;
    for (size_t i = 0; i < nb; i++)
        if (find_in(cmds, n, builtins[i].name) < 0)
            s->cmds[s->cmds_len++] = builtins[i];
    qsort(s->cmds, s->cmds_len, sizeof(*s->cmds), cmd_cmp);
    return 0;
}

/* Case-insensitive compare of a sent name (not NUL-terminated) with a table name. */
static int name_cmp(const keel_resp_arg_t *a, const char *name)
{
    size_t i = 0;
    for (; i < a->len && name[i] != '\0'; i++) {
        int x = a->ptr[i] >= 'a' && a->ptr[i] <= 'z' ? a->ptr[i] - 32 : a->ptr[i];
        int y = name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : (unsigned char)name[i];
        if (x != y)
            return x - y;
    }
    return i < a->len ? 1 : name[i] != '\0' ? -1 : 0;
}

static const keel_resp_command_t *lookup(const keel_resp_server_t *s, const keel_resp_arg_t *a)
{
    if (a->len > KEEL_RESP_CMD_NAME_BYTES_MAX)
        return NULL;
    size_t lo = 0, hi = s->cmds_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(a, s->cmds[mid].name);
        if (c == 0)
            return &s->cmds[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const keel_resp_command_t *keel_resp_server_find(const keel_resp_server_t *s, const uint8_t *name,
                                                 size_t len)
{
    keel_resp_arg_t a = {.ptr = name, .len = len};
    return lookup(s, &a);
}

/* ---- dispatch --------------------------------------------------------------------- */

/* The arguments the unknown-command error can show: 128 bytes, so at most this many. */
#define UNKNOWN_ARGS_SHOWN_MAX 64

static int unknown_command(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    const uint8_t *av[UNKNOWN_ARGS_SHOWN_MAX];
    size_t lens[UNKNOWN_ARGS_SHOWN_MAX];
    size_t n = argc < UNKNOWN_ARGS_SHOWN_MAX ? argc : UNKNOWN_ARGS_SHOWN_MAX;
    for (size_t i = 0; i < n; i++) {
        av[i] = argv[i].ptr;
        lens[i] = argv[i].len;
    }
    keel_buf_t *o = keel_resp_client_out(c);
    return o ? keel_resp_write_unknown_command(o, n, av, lens) : KEEL_ENOMEM;
}

/* After each command: CLIENT REPLY SKIP's skip moves on to the next command. */
static int dispatched(keel_resp_client_t *c, int rc)
{
    c->muting = false;
    c->reply_skip = c->reply_skip_next;
    c->reply_skip_next = false;
    keel_buf_t *sink = &c->server->sink;
    if (sink->cap > SINK_KEEP_BYTES)
        keel_buf_free(sink);
    else
        keel_buf_reset(sink);
    return rc;
}

/* 0: run (or answered); KEEL_RESP_HOLD: held, not consumed; < 0: close the client. */
int keel__resp_dispatch(keel_resp_client_t *c, const keel_resp_cmd_t *cmd)
{
    const keel_resp_command_t *k = lookup(c->server, &cmd->argv[0]);
    c->muting = c->reply_off || c->reply_skip;
    if (k == NULL) {
        c->server->commands_total++;
        int rc = unknown_command(c, cmd->argc, cmd->argv);
        if (c->server->cfg.command_refused)
            c->server->cfg.command_refused(c, NULL);
        return dispatched(c, rc);
    }
    if ((k->arity > 0 && cmd->argc != (size_t)k->arity) ||
        (k->arity < 0 && cmd->argc < (size_t)-k->arity)) {
        char lower[KEEL_RESP_CMD_NAME_BYTES_MAX + 1];
        size_t i = 0;
        for (; k->name[i] != '\0'; i++)
            lower[i] =
                (char)(k->name[i] >= 'A' && k->name[i] <= 'Z' ? k->name[i] + 32 : k->name[i]);
        lower[i] = '\0';
        c->server->commands_total++;
        int rc =
            keel_resp_client_errorf(c, "ERR wrong number of arguments for '%s' command", lower);
        if (c->server->cfg.command_refused)
            c->server->cfg.command_refused(c, k);
        return dispatched(c, rc);
    }
    c->cmd = k;
    c->last_cmd = k->name;
    int rc = 0;
    if (c->server->cfg.before_command)
        rc = c->server->cfg.before_command(c, k, cmd->argc, cmd->argv);
    if (rc == KEEL_RESP_HOLD) { /* runs again, from the start, once resumed */
        c->cmd = NULL;
        c->muting = false;
        c->held = true;
        return KEEL_RESP_HOLD;
    }
    c->server->commands_total++;
    if (rc == 0) {
        rc = k->handler(c, cmd->argc, cmd->argv);
        if (rc >= 0 && c->server->cfg.after_command)
            c->server->cfg.after_command(c, k, cmd->argc, cmd->argv);
    }
    c->cmd = NULL;
    return dispatched(c, rc < 0 ? rc : 0);
}
