/* slowlog.c - SLOWLOG: this node's commands that took longer than slowlog-log-slower-than. */
#include "server/server_int.h"

#include "base/num.h"
#include "proto/resp.h"
#include "runtime/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Redis's slowlog (src/slowlog.c), per node: nothing here is replicated, as in Redis,
 * where each replica keeps its own. An entry is id, Unix time in seconds, duration in
 * microseconds, the arguments (at most KEEL_SRV_SLOWLOG_ARGS_MAX, each cut at
 * KEEL_SRV_SLOWLOG_ARG_BYTES_MAX bytes, as Redis cuts them), the client's address and name.
 * The newest comes first; past slowlog-max-len the oldest are dropped when one is added.
 *
 * What is timed. Redis times the command's execution on its one thread. A keel command
 * that answers at once (a connection command, a refused data command) is timed the same
 * way, around its handler. A data command is timed from its handler to its reply: for a
 * write that is the Raft round (log append, replication, fsync, apply), for a read the
 * read index round and the read, which is what "this command was slow" means on a
 * replicated server. A blocking command (BLPOP, XREAD BLOCK, WAIT) is timed around its
 * handler only: like Redis, the time it waits is not its execution. EXEC is not logged
 * (Redis's SKIP_SLOWLOG), nor the commands it runs (Redis logs those one by one).
 */

#define KEEL_SRV_SLOWLOG_ARGS_MAX 32       /* Redis's SLOWLOG_ENTRY_MAX_ARGC */
#define KEEL_SRV_SLOWLOG_ARG_BYTES_MAX 128 /* Redis's SLOWLOG_ENTRY_MAX_STRING */
#define SLOWLOG_GET_DEFAULT 10

struct slowlog_entry {
    keel_list_t link; /* s->slowlog, newest first */
    uint64_t id;
    int64_t unix_s, duration_us;
    char addr[KEEL_RESP_ADDR_BYTES_MAX];
    char name[CLIENT_NAME_BYTES_MAX];
    size_t args_len;
    uint8_t args[]; /* the arguments as a RESP array, as SLOWLOG GET shows them */
};

void keel__srv_slowlog_init(server_t *s)
{
    keel_list_init(&s->slowlog);
    s->slowlog_slower_than_us = 10000; /* Redis's defaults */
    s->slowlog_len_max = 128;
    keel_buf_init(&s->slowlog_scratch, 0);
}

static void reset(server_t *s)
{
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &s->slowlog)
    {
        keel_list_remove(it);
        free(KEEL_LIST_ENTRY(it, slowlog_entry_t, link));
    }
    s->slowlog_len = 0;
}

void keel__srv_slowlog_free(server_t *s)
{
    reset(s);
    keel_buf_free(&s->slowlog_scratch);
}

/* HELLO's AUTH user and password are not kept, as Redis redacts them. */
static int redacted(const keel_resp_arg_t *argv, size_t argc, size_t i)
{
    if (argc == 0 || !keel__srv_arg_is(&argv[0], "hello"))
        return 0;
    return (i >= 3 && keel__srv_arg_is(&argv[i - 1], "auth")) ||
           (i >= 4 && keel__srv_arg_is(&argv[i - 2], "auth"));
}

int keel__srv_slowlog_args(keel_buf_t *b, size_t argc, const keel_resp_arg_t *argv)
{
    size_t shown = argc > KEEL_SRV_SLOWLOG_ARGS_MAX ? KEEL_SRV_SLOWLOG_ARGS_MAX : argc;
    int rc = keel_resp_write_array_header(b, shown);
    for (size_t i = 0; rc == 0 && i < shown; i++) {
        char cut[KEEL_SRV_SLOWLOG_ARG_BYTES_MAX + 48];
        if (shown < argc && i == shown - 1) {
            int n = snprintf(cut, sizeof(cut), "... (%zu more arguments)", argc - shown + 1);
            rc = keel_resp_write_bulk(b, cut, (size_t)n);
        } else if (redacted(argv, argc, i)) {
            rc = keel_resp_write_bulk_str(b, "(redacted)");
        } else if (argv[i].len > KEEL_SRV_SLOWLOG_ARG_BYTES_MAX) {
            memcpy(cut, argv[i].ptr, KEEL_SRV_SLOWLOG_ARG_BYTES_MAX);
            int n = snprintf(cut + KEEL_SRV_SLOWLOG_ARG_BYTES_MAX, 48, "... (%zu more bytes)",
                             argv[i].len - KEEL_SRV_SLOWLOG_ARG_BYTES_MAX);
            rc = keel_resp_write_bulk(b, cut, KEEL_SRV_SLOWLOG_ARG_BYTES_MAX + (size_t)n);
        } else {
            rc = keel_resp_write_bulk(b, argv[i].ptr, argv[i].len);
        }
    }
    return rc;
}

int keel__srv_slowlog_args_of(keel_buf_t *b, size_t argc, const uint8_t *const *argv,
                              const size_t *lens)
{
    keel_resp_arg_t a[KEEL_SRV_SLOWLOG_ARGS_MAX];
    size_t n = argc > KEEL_SRV_SLOWLOG_ARGS_MAX ? KEEL_SRV_SLOWLOG_ARGS_MAX : argc;
    for (size_t i = 0; i < n; i++)
        a[i] = (keel_resp_arg_t){.ptr = argv[i], .len = lens[i]};
    /* past the limit only the first ARGS_MAX - 1 are read, and the count */
    return keel__srv_slowlog_args(b, argc, a);
}

/* Adds an entry: args is a RESP array from keel__srv_slowlog_args; c may be NULL (the
 * connection is gone: no address, no name). Out of memory drops the entry. */
void keel__srv_slowlog_push(server_t *s, keel_resp_client_t *c, const uint8_t *args, size_t len,
                            keel_us_t duration_us)
{
    slowlog_entry_t *e = malloc(sizeof(*e) + len);
    if (e == NULL)
        return;
    e->id = s->slowlog_next_id++;
    e->unix_s = keel_clock_unix_ms() / 1000;
    e->duration_us = duration_us;
    e->addr[0] = e->name[0] = '\0';
    if (c != NULL) {
        snprintf(e->addr, sizeof(e->addr), "%s", keel_resp_client_addr(c));
        client_state_t *cs = keel_resp_client_data(c);
        if (cs != NULL)
            memcpy(e->name, cs->name, sizeof(e->name));
    }
    e->args_len = len;
    memcpy(e->args, args, len);
    keel_list_init(&e->link);
    keel_list_insert_head(&s->slowlog, &e->link);
    s->slowlog_len++;
    while (s->slowlog_len > s->slowlog_len_max) {
        keel_list_t *last = keel_list_last(&s->slowlog);
        keel_list_remove(last);
        free(KEEL_LIST_ENTRY(last, slowlog_entry_t, link));
        s->slowlog_len--;
    }
}

int keel__srv_slowlog_slow(const server_t *s, keel_us_t duration_us)
{
    return s->slowlog_slower_than_us >= 0 && duration_us >= s->slowlog_slower_than_us;
}

/* ---- the hooks around every command ------------------------------------------------- */

int keel__srv_slowlog_before(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    s->cmd_timing = 0; /* a command whose handler failed left no after_command call */
    int rc = keel__srv_before_command(c, cmd, argc, argv);
    if (rc == 0) {
        s->cmd_timing = 1;
        s->cmd_deferred = 0;
        s->cmd_start_us = keel_clock_now_us();
    }
    return rc;
}

void keel__srv_slowlog_after(keel_resp_client_t *c, const keel_resp_command_t *cmd, size_t argc,
                             const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    int timed = s->cmd_timing && !s->cmd_deferred;
    s->cmd_timing = 0;
    if (!timed || s->slowlog_slower_than_us < 0 || cmd->handler == keel__srv_cmd_exec)
        return;
    client_state_t *cs = keel_resp_client_data(c);
    if (cs != NULL && cs->in_multi && !(cmd->flags & KEEL_RESP_CMD_NOQUEUE))
        return; /* queued: runs (and is not logged) inside EXEC */
    keel_us_t d = keel_clock_now_us() - s->cmd_start_us;
    if (!keel__srv_slowlog_slow(s, d))
        return;
    keel_buf_reset(&s->slowlog_scratch);
    if (keel__srv_slowlog_args(&s->slowlog_scratch, argc, argv) == 0)
        keel__srv_slowlog_push(s, c, keel_buf_rptr(&s->slowlog_scratch),
                               keel_buf_unread(&s->slowlog_scratch), d);
}

/* ---- SLOWLOG ------------------------------------------------------------------------ */

static int entry_reply(keel_buf_t *out, const slowlog_entry_t *e)
{
    int rc = keel_resp_write_array_header(out, 6);
    if (rc == 0)
        rc = keel_resp_write_int(out, (int64_t)e->id);
    if (rc == 0)
        rc = keel_resp_write_int(out, e->unix_s);
    if (rc == 0)
        rc = keel_resp_write_int(out, e->duration_us);
    if (rc == 0)
        rc = keel_buf_append(out, e->args, e->args_len);
    if (rc == 0)
        rc = keel_resp_write_bulk_str(out, e->addr);
    return rc == 0 ? keel_resp_write_bulk_str(out, e->name) : rc;
}

static const char *const HELP[] = {
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
};

int keel__srv_cmd_slowlog(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    server_t *s = keel__srv_of(c);
    keel_buf_t *out = keel_resp_client_out(c);
    if (out == NULL)
        return KEEL_ENOMEM;
    const keel_resp_arg_t *sub = &argv[1];
    if (keel__srv_arg_is(sub, "help")) {
        if (argc != 2)
            return keel_resp_write_error(
                out, "ERR wrong number of arguments for 'slowlog|help' command");
        int rc = keel_resp_write_array_header(out, sizeof(HELP) / sizeof(HELP[0]));
        for (size_t i = 0; rc == 0 && i < sizeof(HELP) / sizeof(HELP[0]); i++)
            rc = keel_resp_write_simple(out, HELP[i]);
        return rc;
    }
    if (keel__srv_arg_is(sub, "len") || keel__srv_arg_is(sub, "reset")) {
        int len = keel__srv_arg_is(sub, "len");
        if (argc != 2)
            return keel_resp_write_errorf(out,
                                          "ERR wrong number of arguments for 'slowlog|%s' "
                                          "command",
                                          len ? "len" : "reset");
        if (len)
            return keel_resp_write_int(out, (int64_t)s->slowlog_len);
        reset(s);
        return keel_resp_write_simple(out, "OK");
    }
    if (keel__srv_arg_is(sub, "get") && argc <= 3) {
        int64_t count = SLOWLOG_GET_DEFAULT;
        if (argc == 3 && (keel_parse_i64(argv[2].ptr, argv[2].len, &count) != 0 || count < -1))
            return keel_resp_write_error(out, "ERR count should be greater than or equal to -1");
        size_t n = count == -1 || (uint64_t)count > s->slowlog_len ? s->slowlog_len : (size_t)count;
        int rc = keel_resp_write_array_header(out, n);
        keel_list_t *it;
        size_t i = 0;
        KEEL_LIST_FOREACH(it, &s->slowlog)
        {
            if (rc != 0 || i++ == n)
                break;
            rc = entry_reply(out, KEEL_LIST_ENTRY(it, slowlog_entry_t, link));
        }
        return rc;
    }
    if (keel__srv_arg_is(sub, "get"))
        return keel_resp_write_errorf(out,
                                      "ERR unknown subcommand or wrong number of arguments for "
                                      "'%.*s'. Try SLOWLOG HELP.",
                                      (int)sub->len, (const char *)sub->ptr);
    return keel_resp_write_errorf(out, "ERR unknown subcommand '%.*s'. Try SLOWLOG HELP.",
                                  (int)(sub->len > 64 ? 64 : sub->len), (const char *)sub->ptr);
}
