/* resp_server.c - RESP server on libuv: clients, pipelining, command table, deferred replies. */
#include "runtime/resp_server.h"

#include "runtime/tcp.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bytes asked of the input buffer per read; also the size above which idle buffers are freed. */
#define READ_CHUNK_BYTES (16u * 1024u)
#define IDLE_BUF_KEEP_BYTES (256u * 1024u)
/* The dropped replies' buffer (CLIENT REPLY OFF) keeps its memory up to this much. */
#define SINK_KEEP_BYTES (64u * 1024u)
/*
 * Finished deferred slots kept for reuse, and the reply buffer size a kept slot may
 * keep. A pipelined client takes a slot per command: malloc and free of the slot and
 * of its buffer were four calls per command, in sizes above glibc's fast bins.
 */
#define SLOT_POOL_SLOTS_MAX 4096u
#define SLOT_POOL_BUF_KEEP_BYTES (4u * 1024u)

struct keel_resp_deferred {
    keel_resp_deferred_t *next;
    keel_resp_client_t *client; /* NULL once the client is gone: an orphan */
    bool done;
    bool barrier; /* no later command of the client runs before this one is done */
    bool muted;   /* made while the client's replies were off (CLIENT REPLY): dropped */
    keel_buf_t out;
    size_t counted; /* of out's bytes, those in the client's qbytes */
};

struct keel_resp_client {
    uv_tcp_t tcp; /* first: the handle's data points back here too */
    keel_resp_server_t *server;
    keel_list_t link;  /* server->clients */
    keel_list_t plink; /* server->pending, while in it */
    bool closing, writing, rejected;
    bool close_after_reply; /* QUIT, EOF, protocol error, rejection */
    bool stop_input;        /* no more commands will be parsed */
    bool input_blocked;     /* paused: too many deferred replies outstanding */
    bool read_stopped;      /* input_blocked with the socket not read either */
    bool resume_input;      /* parse buffered input on the next loop turn */
    bool barrier_open;      /* a barrier slot is not done: input waits for it */
    bool held;              /* before_command held a command: input waits for resume */
    /* CLIENT REPLY: replies off; skip the next command's; skip this one's; the command
       being run has its reply dropped (decided when it is dispatched) */
    bool reply_off, reply_skip_next, reply_skip, muting;
    uint64_t id;
    void *data;
    keel_ms_t last_input_ms, created_ms;
    const char *last_cmd; /* the last command's name (CLIENT LIST's cmd=), a table row's */
    keel_resp_parser_t parser;
    keel_buf_t in;   /* unparsed input */
    keel_buf_t out;  /* replies ready to send */
    keel_buf_t wbuf; /* bytes of the write in flight */
    uv_write_t wreq;
    keel_resp_deferred_t *qhead, *qtail; /* replies queued behind a deferred one */
    size_t deferred_open;                /* slots in the queue not done yet */
    size_t qbytes; /* bytes of the done slots in the queue (their `counted`): the output
                      limit is checked after every reply, and walking a long pipeline's
                      queue each time made a pipeline's cost grow with its square */
    const keel_resp_command_t *cmd; /* the row being run */
    keel_buf_t *out_override;       /* keel_resp_client_set_out */
};

/* ---- config --------------------------------------------------------------------- */

keel_resp_server_config_t keel_resp_server_config_default(void)
{
    keel_resp_server_config_t c = {
        .listen = "127.0.0.1:6379",
        .backlog = 511,
        .clients_max = 10000,
        .reply_bytes_max = 64u * 1024u * 1024u,
        .pending_replies_max = 1024,
        .idle_timeout_ms = 0,
        .resp = keel_resp_config_default(),
    };
    c.resp.bulk_bytes_max = 16u * 1024u * 1024u;
    c.querybuf_bytes_max = 32u * 1024u * 1024u + 1024u;
    return c;
}

int keel_resp_server_config_validate(const keel_resp_server_config_t *cfg, keel_errmsg_t *msg)
{
    int rc = keel_resp_config_validate(&cfg->resp, msg);
    if (rc != 0)
        return rc;
    if (cfg->listen == NULL || cfg->listen[0] == '\0')
        return keel_errf(msg, KEEL_EINVAL, "resp_server: listen address missing");
    if (cfg->backlog < 1 || cfg->backlog > 65535)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: backlog %d not in 1..65535", cfg->backlog);
    if (cfg->clients_max < 1 || cfg->clients_max > 1000000)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: clients_max %zu not in 1..1000000",
                         cfg->clients_max);
    if (cfg->querybuf_bytes_max < cfg->resp.bulk_bytes_max + 1024 ||
        cfg->querybuf_bytes_max < cfg->resp.inline_bytes_max)
        return keel_errf(msg, KEEL_EINVAL,
                         "resp_server: querybuf_bytes_max %zu below bulk_bytes_max + 1 KiB "
                         "or inline_bytes_max",
                         cfg->querybuf_bytes_max);
    if (cfg->querybuf_bytes_max > KEEL_RESP_SERVER_BUF_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: querybuf_bytes_max %zu above 1 GiB",
                         cfg->querybuf_bytes_max);
    if (cfg->reply_bytes_max < 1024 || cfg->reply_bytes_max > KEEL_RESP_SERVER_BUF_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: reply_bytes_max %zu not in 1 KiB..1 GiB",
                         cfg->reply_bytes_max);
    if (cfg->pending_replies_max < 1 || cfg->pending_replies_max > 1000000)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: pending_replies_max %zu not in 1..1000000",
                         cfg->pending_replies_max);
    if (cfg->idle_timeout_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "resp_server: idle_timeout_ms negative");
    return 0;
}

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
static int build_table(keel_resp_server_t *s, const keel_resp_command_t *cmds, size_t n,
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

/* ---- client lists ----------------------------------------------------------------- */

static void mark_pending(keel_resp_client_t *c)
{
    keel_resp_server_t *s = c->server;
    if (keel_list_linked(&c->plink) || c->closing)
        return;
    keel_list_insert_head(&s->pending, &c->plink);
}

static void pending_remove(keel_resp_client_t *c)
{
    keel_list_remove(&c->plink); /* a no-op when c is not pending */
}

/* ---- closing ---------------------------------------------------------------------- */

static void slot_destroy(keel_resp_deferred_t *d)
{
    keel_buf_free(&d->out);
    free(d);
}

static void server_handle_closed(keel_resp_server_t *s)
{
    assert(s->handles_open > 0);
    if (--s->handles_open == 0 && s->closing) {
        free(s->cmds);
        s->cmds = NULL;
        while (s->slot_pool != NULL) {
            keel_resp_deferred_t *d = s->slot_pool;
            s->slot_pool = d->next;
            slot_destroy(d);
        }
        s->slot_pool_len = 0;
        keel_buf_free(&s->sink);
        if (s->closed)
            s->closed(s);
    }
}

/* A finished slot of a live server's client goes back to the pool (orphans: s NULL). */
static void free_slot(keel_resp_server_t *s, keel_resp_deferred_t *d)
{
    if (s == NULL || s->closing || s->slot_pool_len >= SLOT_POOL_SLOTS_MAX) {
        slot_destroy(d);
        return;
    }
    if (d->out.cap > SLOT_POOL_BUF_KEEP_BYTES)
        keel_buf_free(&d->out);
    else
        keel_buf_reset(&d->out);
    d->next = s->slot_pool;
    s->slot_pool = d;
    s->slot_pool_len++;
}

static void on_client_closed(uv_handle_t *h)
{
    keel_resp_client_t *c = h->data;
    keel_resp_server_t *s = c->server;
    assert(!keel_list_linked(&c->plink)); /* close_client took it off */
    keel_list_remove(&c->link);
    keel_resp_parser_free(&c->parser);
    keel_buf_free(&c->in);
    keel_buf_free(&c->out);
    keel_buf_free(&c->wbuf);
    free(c);
    server_handle_closed(s);
}

/* Closes now. Done slots are freed; open ones become orphans their owners free. */
static void close_client(keel_resp_client_t *c)
{
    if (c->closing)
        return;
    keel_resp_server_t *s = c->server;
    pending_remove(c);
    c->closing = true;
    for (keel_resp_deferred_t *d = c->qhead, *next; d != NULL; d = next) {
        next = d->next;
        d->next = NULL;
        if (d->done)
            free_slot(s, d);
        else
            d->client = NULL;
    }
    c->qhead = c->qtail = NULL;
    c->deferred_open = 0;
    c->qbytes = 0;
    if (!c->rejected)
        s->clients_len--;
    if (s->cfg.client_closed)
        s->cfg.client_closed(c);
    uv_close((uv_handle_t *)&c->tcp, on_client_closed);
}

static void start_reading(keel_resp_client_t *c);

/* keel_buf_rptr() of a buffer that never allocated is NULL + 0, which clang's UBSan flags. */
static const uint8_t *unread_ptr(const keel_buf_t *b)
{
    return b->data ? keel_buf_rptr(b) : (const uint8_t *)"";
}

/* ---- output ----------------------------------------------------------------------- */

/* A done slot's bytes into the client's count. Only two kinds of slot take bytes: one not
 * done yet (its owner writes, then says done) and the done tail (keel_resp_client_out), so
 * settling a slot when it is done and when another is queued behind it counts them all. */
static void settle(keel_resp_client_t *c, keel_resp_deferred_t *d)
{
    size_t n = keel_buf_unread(&d->out);
    assert(d->done && n >= d->counted);
    c->qbytes += n - d->counted;
    d->counted = n;
}

/* Replies waiting to leave: ready, in flight, and queued done (replies still being made
 * count once they are done). */
static size_t output_bytes(const keel_resp_client_t *c)
{
    size_t n = keel_buf_unread(&c->out) + keel_buf_unread(&c->wbuf) + c->qbytes;
    if (c->qtail != NULL && c->qtail->done)
        n += keel_buf_unread(&c->qtail->out) - c->qtail->counted;
    return n;
}

/* Redis client-output-buffer-limit: a client that lets replies pile up is dropped. */
static bool enforce_output_limit(keel_resp_client_t *c)
{
    if (c->closing || output_bytes(c) <= c->server->cfg.reply_bytes_max)
        return false;
    c->server->output_limit_closes_total++;
    close_client(c);
    return true;
}

static void on_write(uv_write_t *req, int status)
{
    keel_resp_client_t *c = req->data;
    c->writing = false;
    keel_buf_reset(&c->wbuf);
    if (c->wbuf.cap > IDLE_BUF_KEEP_BYTES)
        keel_buf_free(&c->wbuf);
    if (c->closing)
        return;
    if (status < 0) {
        close_client(c);
        return;
    }
    if (keel_buf_unread(&c->out) > 0 || c->close_after_reply)
        mark_pending(c);
    if (c->server->cfg.client_drained)
        c->server->cfg.client_drained(c);
}

/*
 * Sends everything ready, unless a write is already in flight. First one direct write(2)
 * (uv_try_write): a reply that fits the socket buffer, the common case, leaves at once
 * with no write request, no callback and no poll change (libuv's uv_write re-arms epoll
 * with an epoll_ctl after each completed write: one syscall per reply saved). What does
 * not fit goes through one uv_write.
 */
static void flush(keel_resp_client_t *c)
{
    if (c->writing || c->closing)
        return;
    int sent_all = 0;
    if (keel_buf_unread(&c->out) > 0) {
        uv_buf_t d =
            uv_buf_init((char *)keel_buf_rptr(&c->out), (unsigned)keel_buf_unread(&c->out));
        int n = uv_try_write((uv_stream_t *)&c->tcp, &d, 1);
        if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
            close_client(c);
            return;
        }
        if (n > 0)
            keel_buf_consume(&c->out, (size_t)n);
        sent_all = keel_buf_unread(&c->out) == 0;
        if (sent_all && c->out.cap > IDLE_BUF_KEEP_BYTES)
            keel_buf_free(&c->out);
    }
    if (keel_buf_unread(&c->out) == 0) {
        if (c->close_after_reply && c->qhead == NULL)
            close_client(c);
        else if (sent_all && c->server->cfg.client_drained)
            c->server->cfg.client_drained(c); /* as after a completed uv_write */
        return;
    }
    keel_buf_t t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    uv_buf_t b = uv_buf_init((char *)keel_buf_rptr(&c->wbuf), (unsigned)keel_buf_unread(&c->wbuf));
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc != 0) {
        close_client(c);
        return;
    }
    c->writing = true;
}

keel_buf_t *keel_resp_client_out(keel_resp_client_t *c)
{
    if (c->out_override != NULL)
        return c->out_override;
    if (c->muting) /* CLIENT REPLY OFF or SKIP: written, and dropped after the command */
        return &c->server->sink;
    if (c->qhead == NULL)
        return &c->out;
    if (c->qtail->done)
        return &c->qtail->out;
    /* behind an open deferred reply: queue a slot that is complete from the start */
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    if (d == NULL)
        return NULL;
    d->done = true;
    c->deferred_open--;
    return &d->out;
}

int keel_resp_client_errorf(keel_resp_client_t *c, const char *fmt, ...)
{
    keel_buf_t *o = keel_resp_client_out(c);
    if (o == NULL)
        return KEEL_ENOMEM;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    return keel_resp_write_error(o, text);
}

keel_resp_deferred_t *keel_resp_client_defer(keel_resp_client_t *c)
{
    assert(!c->closing);
    keel_resp_server_t *s = c->server;
    keel_resp_deferred_t *d = s->slot_pool;
    if (d != NULL) {
        s->slot_pool = d->next;
        s->slot_pool_len--;
        assert(keel_buf_unread(&d->out) == 0 && d->out.bytes_max == s->cfg.reply_bytes_max);
        d->next = NULL;
        d->done = d->barrier = false;
        d->counted = 0;
    } else {
        d = calloc(1, sizeof(*d));
        if (d == NULL)
            return NULL;
        keel_buf_init(&d->out, s->cfg.reply_bytes_max);
    }
    d->client = c;
    d->muted = c->muting;
    if (c->qtail && c->qtail->done)
        settle(c, c->qtail); /* it takes no more bytes */
    if (c->qtail)
        c->qtail->next = d;
    else
        c->qhead = d;
    c->qtail = d;
    c->deferred_open++;
    return d;
}

keel_resp_deferred_t *keel_resp_client_defer_barrier(keel_resp_client_t *c)
{
    assert(!c->barrier_open);
    keel_resp_deferred_t *d = keel_resp_client_defer(c);
    if (d != NULL)
        d->barrier = c->barrier_open = true;
    return d;
}

/* Moves the completed replies at the head of the queue into the output, in order. */
static int drain_queue(keel_resp_client_t *c)
{
    while (c->qhead != NULL && c->qhead->done) {
        keel_resp_deferred_t *d = c->qhead;
        int rc = keel_buf_append(&c->out, unread_ptr(&d->out), keel_buf_unread(&d->out));
        if (rc != 0)
            return rc;
        settle(c, d);
        c->qbytes -= d->counted;
        c->qhead = d->next;
        if (c->qhead == NULL)
            c->qtail = NULL;
        free_slot(c->server, d);
    }
    return 0;
}

keel_buf_t *keel_resp_deferred_out(keel_resp_deferred_t *d)
{
    return &d->out;
}

bool keel_resp_deferred_orphaned(const keel_resp_deferred_t *d)
{
    return d->client == NULL;
}

void keel_resp_deferred_done(keel_resp_deferred_t *d, int rc)
{
    assert(!d->done);
    keel_resp_client_t *c = d->client;
    if (c == NULL) {
        free_slot(NULL, d);
        return;
    }
    d->done = true;
    if (d->muted)
        keel_buf_reset(&d->out);
    settle(c, d);
    assert(c->deferred_open > 0);
    c->deferred_open--;
    if (d->barrier)
        c->barrier_open = false;
    if (rc == 0)
        rc = drain_queue(c);
    if (rc != 0) {
        if (rc == KEEL_ETOOBIG)
            c->server->output_limit_closes_total++;
        close_client(c);
        return;
    }
    if (enforce_output_limit(c))
        return;
    if (c->input_blocked && !c->barrier_open &&
        c->deferred_open < c->server->cfg.pending_replies_max) {
        c->input_blocked = false;
        c->resume_input = true;
        if (!c->stop_input && c->read_stopped) {
            c->read_stopped = false;
            start_reading(c);
        }
    }
    mark_pending(c);
}

void keel_resp_client_resume(keel_resp_client_t *c)
{
    if (!c->held || c->closing)
        return;
    c->held = false;
    c->resume_input = true;
    if (!c->stop_input && c->read_stopped && !c->input_blocked) {
        c->read_stopped = false;
        start_reading(c);
    }
    mark_pending(c);
}

bool keel_resp_client_held(const keel_resp_client_t *c)
{
    return c->held;
}

void keel_resp_client_reply(keel_resp_client_t *c, keel_resp_reply_mode_t mode)
{
    switch (mode) {
    case KEEL_RESP_REPLY_ON: /* this command's reply is sent (CLIENT REPLY ON's +OK) */
        c->reply_off = c->reply_skip_next = false;
        c->muting = false;
        break;
    case KEEL_RESP_REPLY_OFF:
        c->reply_off = true;
        c->muting = true;
        break;
    case KEEL_RESP_REPLY_SKIP: /* this command's reply and the next one's */
        if (!c->reply_off)
            c->reply_skip_next = true;
        c->muting = true;
        break;
    case KEEL_RESP_REPLY_PUSHING:
        c->muting = false;
        break;
    }
}

const keel_resp_command_t *keel_resp_client_command(const keel_resp_client_t *c)
{
    return c->cmd;
}

keel_buf_t *keel_resp_client_out_set(const keel_resp_client_t *c)
{
    return c->out_override;
}

void keel_resp_client_set_out(keel_resp_client_t *c, keel_buf_t *out)
{
    c->out_override = out;
}

void keel_resp_client_close_after_reply(keel_resp_client_t *c)
{
    c->close_after_reply = true;
    c->stop_input = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

size_t keel_resp_client_output_bytes(const keel_resp_client_t *c)
{
    return output_bytes(c);
}

/* "ip:port" of a sockaddr (v4 or v6), or "?" */
static void addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[64] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
    }
    snprintf(out, n, "%s:%d", ip, port);
}

void keel_resp_client_info(const keel_resp_client_t *c, keel_resp_client_info_t *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len);
    addr_text(&ss, out->addr, sizeof(out->addr));
    len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len);
    addr_text(&ss, out->laddr, sizeof(out->laddr));
    uv_os_fd_t fd = -1;
    out->fd = uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 ? (int)fd : -1;
    keel_ms_t now = (keel_ms_t)uv_now(c->tcp.loop);
    out->age_ms = now - c->created_ms;
    out->idle_ms = now - c->last_input_ms;
    out->qbuf = keel_buf_unread(&c->in);
    out->out_bytes = output_bytes(c);
    out->pending = c->deferred_open;
    out->last_cmd = c->last_cmd;
}

keel_resp_client_t *keel_resp_server_next_client(const keel_resp_server_t *s,
                                                 const keel_resp_client_t *after)
{
    const keel_list_t *l = after ? after->link.next : s->clients.next;
    for (; l != &s->clients; l = l->next) {
        keel_resp_client_t *c = KEEL_LIST_ENTRY(l, keel_resp_client_t, link);
        if (!c->closing && !c->rejected)
            return c;
    }
    return NULL;
}

void keel_resp_client_kill(keel_resp_client_t *c)
{
    keel_resp_client_close_after_reply(c);
    mark_pending(c);
}

void keel_resp_server_reset_stats(keel_resp_server_t *s)
{
    s->connections_total = s->rejected_total = s->commands_total = 0;
    s->protocol_errors_total = s->output_limit_closes_total = s->idle_closes_total = 0;
}

uint64_t keel_resp_client_id(const keel_resp_client_t *c)
{
    return c->id;
}

keel_resp_server_t *keel_resp_client_server(const keel_resp_client_t *c)
{
    return c->server;
}

void *keel_resp_client_data(const keel_resp_client_t *c)
{
    return c->data;
}

void keel_resp_client_set_data(keel_resp_client_t *c, void *data)
{
    c->data = data;
}

void *keel_resp_server_data(const keel_resp_server_t *s)
{
    return s->data;
}

/* ---- input ------------------------------------------------------------------------ */

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
static int dispatch(keel_resp_client_t *c, const keel_resp_cmd_t *cmd)
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

static void protocol_error(keel_resp_client_t *c, const keel_errmsg_t *msg)
{
    c->server->protocol_errors_total++;
    /* msg is "Protocol error: ..." as Redis words it; the reply is "-ERR Protocol error: ..." */
    if (keel_resp_client_errorf(c, "ERR %s", msg->text) != 0) {
        close_client(c);
        return;
    }
    keel_resp_client_close_after_reply(c);
}

/* Runs every complete command in the input, in order, until one must wait. */
static void process_input(keel_resp_client_t *c)
{
    keel_resp_server_t *s = c->server;
    while (!c->closing && !c->stop_input && !c->held) {
        if (c->deferred_open >= s->cfg.pending_replies_max || c->barrier_open) {
            /* Too many deferred replies stop the reading (backpressure). A client that only
             * waits behind a barrier (a blocked read) is still read, so that its departure
             * is seen at once (on_read: EOF closes it, and its wait becomes an orphan its
             * owner drops, as Redis frees a blocked client that disconnects); what it sends
             * meanwhile waits in `in`, within the query buffer limit. */
            c->input_blocked = true;
            if (c->deferred_open >= s->cfg.pending_replies_max && !c->read_stopped) {
                c->read_stopped = true;
                uv_read_stop((uv_stream_t *)&c->tcp);
            }
            break;
        }
        keel_resp_cmd_t cmd;
        size_t used;
        keel_errmsg_t msg;
        int rc = keel_resp_parse_request(&c->parser, unread_ptr(&c->in), keel_buf_unread(&c->in),
                                         &cmd, &used, &msg);
        if (rc == 0) {
            rc = dispatch(c, &cmd);
            if (rc == KEEL_RESP_HOLD) { /* parsed again when resumed */
                keel_resp_parser_reset(&c->parser);
                break;
            }
            keel_buf_consume(&c->in, used); /* after: argv pointed into it */
            if (rc != 0) {
                if (rc == KEEL_ETOOBIG)
                    s->output_limit_closes_total++;
                close_client(c);
            }
            continue;
        }
        keel_buf_consume(&c->in, used);
        if (rc != KEEL_EAGAIN)
            protocol_error(c, &msg);
        break;
    }
    if (c->closing)
        return;
    if (keel_buf_unread(&c->in) == 0 && c->in.cap > IDLE_BUF_KEEP_BYTES)
        keel_buf_free(&c->in);
    if (!enforce_output_limit(c))
        mark_pending(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    keel_resp_client_t *c = h->data;
    size_t room = c->in.bytes_max - keel_buf_unread(&c->in);
    size_t want = room < READ_CHUNK_BYTES ? room : READ_CHUNK_BYTES;
    if (want == 0 || keel_buf_reserve(&c->in, want) != 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS: query buffer limit */
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)want);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    keel_resp_client_t *c = stream->data;
    if (c->closing)
        return;
    if (nread > 0) {
        keel_buf_commit(&c->in, (size_t)nread);
        c->last_input_ms = (keel_ms_t)uv_now(stream->loop);
        process_input(c);
    } else if (nread == UV_EOF && c->held) {
        close_client(c); /* it left while paused: what it sent is dropped, as Redis does */
        return;
    } else if (nread == UV_EOF && c->barrier_open) {
        if (keel_buf_unread(&c->in) == 0) {
            close_client(c); /* it left while waiting (a blocked read): nobody waits for it */
            return;
        }
        /* a half-close behind a pipeline: the commands after the wait are answered once it
         * ends; reading again then sees this EOF again and closes as below */
        c->read_stopped = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    } else if (nread == UV_EOF) {
        /* the client is done sending: answer what it sent, then close */
        keel_resp_client_close_after_reply(c);
        mark_pending(c);
    } else if (nread < 0) {
        close_client(c);
    }
}

static void start_reading(keel_resp_client_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        close_client(c);
}

/* ---- loop turn, idle timer, accept -------------------------------------------------- */

/* Once per loop turn, before the loop blocks: resume paused input, then write. */
static void on_prepare(uv_prepare_t *h)
{
    keel_resp_server_t *s = h->data;
    keel_list_t *it;
    while ((it = keel_list_first(&s->pending)) != NULL) {
        keel_resp_client_t *c = KEEL_LIST_ENTRY(it, keel_resp_client_t, plink);
        pending_remove(c);
        if (c->resume_input) {
            c->resume_input = false;
            process_input(c);
            pending_remove(c);
        }
        flush(c);
    }
}

static void on_idle_timer(uv_timer_t *t)
{
    keel_resp_server_t *s = t->data;
    keel_ms_t now = (keel_ms_t)uv_now(t->loop);
    keel_list_t *it;
    KEEL_LIST_FOREACH(it, &s->clients)
    {
        keel_resp_client_t *c = KEEL_LIST_ENTRY(it, keel_resp_client_t, link);
        /* a client waiting for a deferred reply or a write is not idle */
        if (c->closing || c->qhead != NULL || c->writing || c->held)
            continue;
        if (now - c->last_input_ms >= s->cfg.idle_timeout_ms) {
            s->idle_closes_total++;
            close_client(c);
        }
    }
}

void keel_resp_server_set_idle_timeout(keel_resp_server_t *s, keel_ms_t ms)
{
    assert(ms >= 0);
    s->cfg.idle_timeout_ms = ms;
    uv_timer_stop(&s->idle_timer);
    if (ms > 0) { /* checked four times per timeout, between 10 ms and 1 s apart */
        keel_ms_t every_ms = ms / 4;
        every_ms = every_ms < 10 ? 10 : every_ms > 1000 ? 1000 : every_ms;
        uv_timer_start(&s->idle_timer, on_idle_timer, (uint64_t)every_ms, (uint64_t)every_ms);
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    keel_resp_server_t *s = listener->data;
    if (status < 0 || s->closing)
        return;
    keel_resp_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    if (uv_tcp_init(listener->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    c->wreq.data = c;
    c->server = s;
    keel_list_init(&c->link);
    keel_list_init(&c->plink);
    c->id = ++s->next_client_id;
    c->last_input_ms = c->created_ms = (keel_ms_t)uv_now(listener->loop);
    keel_resp_parser_init(&c->parser, &s->cfg.resp);
    keel_buf_init(&c->in, s->cfg.querybuf_bytes_max);
    keel_buf_init(&c->out, s->cfg.reply_bytes_max);
    keel_buf_init(&c->wbuf, s->cfg.reply_bytes_max);
    keel_list_insert_head(&s->clients, &c->link);
    s->handles_open++;
    c->rejected = s->clients_len >= s->cfg.clients_max;
    if (!c->rejected)
        s->clients_len++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        close_client(c);
        return;
    }
    s->connections_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->rejected) {
        s->rejected_total++;
        keel_resp_write_error(&c->out, "ERR max number of clients reached");
        keel_resp_client_close_after_reply(c);
        mark_pending(c);
        return;
    }
    start_reading(c);
}

/* ---- server lifecycle ----------------------------------------------------------------- */

int keel_resp_server_init(keel_resp_server_t *s, keel_loop_t *loop,
                          const keel_resp_server_config_t *cfg, const keel_resp_command_t *cmds,
                          size_t cmds_len, void *data, keel_errmsg_t *msg)
{
    memset(s, 0, sizeof(*s));
    keel_list_init(&s->clients);
    keel_list_init(&s->pending);
    keel_buf_init(&s->sink, 0);
    s->cfg = cfg ? *cfg : keel_resp_server_config_default();
    int rc = keel_resp_server_config_validate(&s->cfg, msg);
    if (rc != 0)
        return rc;
    rc = build_table(s, cmds, cmds_len, msg);
    if (rc != 0)
        return rc;
    s->loop = loop;
    s->data = data;
    uv_prepare_init(&loop->uv, &s->flusher);
    s->flusher.data = s;
    uv_prepare_start(&s->flusher, on_prepare);
    uv_unref((uv_handle_t *)&s->flusher);
    uv_timer_init(&loop->uv, &s->idle_timer);
    s->idle_timer.data = s;
    uv_unref((uv_handle_t *)&s->idle_timer);
    keel_resp_server_set_idle_timeout(s, s->cfg.idle_timeout_ms);
    s->handles_open = 2;
    return 0;
}

int keel_resp_server_listen(keel_resp_server_t *s, keel_errmsg_t *msg)
{
    assert(!s->listening && !s->closing);
    int rc =
        keel_tcp_listen(s->loop, &s->listener, s->cfg.listen, s->cfg.backlog, on_connection, msg);
    if (rc != 0)
        return rc;
    s->listener.data = s;
    s->listening = true;
    s->handles_open++;
    return 0;
}

int keel_resp_server_port(const keel_resp_server_t *s)
{
    return s->listening ? keel_tcp_local_port(&s->listener) : KEEL_EINVAL;
}

static void on_server_handle_closed(uv_handle_t *h)
{
    server_handle_closed(h->data);
}

void keel_resp_server_close(keel_resp_server_t *s, void (*closed)(keel_resp_server_t *s))
{
    assert(!s->closing);
    s->closing = true;
    s->closed = closed;
    if (s->listening)
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->flusher, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->idle_timer, on_server_handle_closed);
    keel_list_t *it;
    KEEL_LIST_FOREACH(it, &s->clients) /* close_client unlinks nothing: on_client_closed does */
    close_client(KEEL_LIST_ENTRY(it, keel_resp_client_t, link));
}
