/* resp_server.c - RESP server on libuv: config, clients' lifecycle, input, the loop turn. */
#include "runtime/resp_server_int.h"

#include "runtime/tcp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes asked of the input buffer per read. */
#define READ_CHUNK_BYTES (16u * 1024u)
/*
 * Finished deferred slots kept for reuse, and the reply buffer size a kept slot may
 * keep. A pipelined client takes a slot per command: malloc and free of the slot and
 * of its buffer were four calls per command, in sizes above glibc's fast bins.
 */
#define SLOT_POOL_SLOTS_MAX 4096u
#define SLOT_POOL_BUF_KEEP_BYTES (4u * 1024u)

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

/* ---- client lists ----------------------------------------------------------------- */

void keel__resp_mark_pending(keel_resp_client_t *c)
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
void keel__resp_free_slot(keel_resp_server_t *s, keel_resp_deferred_t *d)
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
    free(c->peer);
    free(c);
    server_handle_closed(s);
}

/* Closes now. Done slots are freed; open ones become orphans their owners free. */
void keel__resp_close_client(keel_resp_client_t *c)
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
            keel__resp_free_slot(s, d);
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
    out->out_bytes = keel__resp_output_bytes(c);
    out->pending = c->deferred_open;
    out->last_cmd = c->last_cmd;
}

const char *keel_resp_client_addr(keel_resp_client_t *c)
{
    if (c->peer == NULL && (c->peer = malloc(KEEL_RESP_ADDR_BYTES_MAX)) != NULL) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len);
        addr_text(&ss, c->peer, KEEL_RESP_ADDR_BYTES_MAX);
    }
    return c->peer != NULL ? c->peer : "";
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
    keel__resp_mark_pending(c);
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

int keel_resp_client_take_input(keel_resp_client_t *c, keel_buf_t *out)
{
    assert(!c->input_taken && c->cmd_used <= keel_buf_unread(&c->in));
    keel_buf_t rest;
    keel_buf_init(&rest, c->in.bytes_max);
    size_t after = keel_buf_unread(&c->in) - c->cmd_used;
    if (after > 0 && keel_buf_append(&rest, keel_buf_rptr(&c->in) + c->cmd_used, after) != 0) {
        keel_buf_free(&rest);
        return KEEL_ENOMEM;
    }
    *out = c->in;
    out->len = out->rpos + c->cmd_used;
    c->in = rest;
    c->input_taken = true;
    return 0;
}

void keel_resp_client_untake_input(keel_resp_client_t *c, keel_buf_t *taken)
{
    assert(c->input_taken && taken->len == taken->rpos + c->cmd_used);
    /* what followed the command is still in place after it: nothing was read meanwhile */
    assert(taken->len + keel_buf_unread(&c->in) <= taken->cap);
    taken->len += keel_buf_unread(&c->in);
    keel_buf_free(&c->in);
    c->in = *taken;
    *taken = (keel_buf_t){0};
    c->input_taken = false;
}

static void protocol_error(keel_resp_client_t *c, const keel_errmsg_t *msg)
{
    c->server->protocol_errors_total++;
    /* msg is "Protocol error: ..." as Redis words it; the reply is "-ERR Protocol error: ..." */
    if (keel_resp_client_errorf(c, "ERR %s", msg->text) != 0) {
        keel__resp_close_client(c);
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
        int rc = keel_resp_parse_request(&c->parser, keel__resp_unread_ptr(&c->in),
                                         keel_buf_unread(&c->in), &cmd, &used, &msg);
        if (rc == 0) {
            c->cmd_used = used;
            c->input_taken = false;
            rc = keel__resp_dispatch(c, &cmd);
            if (rc == KEEL_RESP_HOLD) { /* parsed again when resumed */
                keel_resp_parser_reset(&c->parser);
                break;
            }
            if (c->input_taken) /* `in` holds only what followed the command */
                c->input_taken = false;
            else
                keel_buf_consume(&c->in, used); /* after: argv pointed into it */
            if (rc != 0) {
                if (rc == KEEL_ETOOBIG)
                    s->output_limit_closes_total++;
                keel__resp_close_client(c);
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
    if (!keel__resp_enforce_output_limit(c))
        keel__resp_mark_pending(c);
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
        keel__resp_close_client(
            c); /* it left while paused: what it sent is dropped, as Redis does */
        return;
    } else if (nread == UV_EOF && c->barrier_open) {
        if (keel_buf_unread(&c->in) == 0) {
            keel__resp_close_client(
                c); /* it left while waiting (a blocked read): nobody waits for it */
            return;
        }
        /* a half-close behind a pipeline: the commands after the wait are answered once it
         * ends; reading again then sees this EOF again and closes as below */
        c->read_stopped = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    } else if (nread == UV_EOF) {
        /* the client is done sending: answer what it sent, then close */
        keel_resp_client_close_after_reply(c);
        keel__resp_mark_pending(c);
    } else if (nread < 0) {
        keel__resp_close_client(c);
    }
}

void keel__resp_start_reading(keel_resp_client_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        keel__resp_close_client(c);
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
        keel__resp_flush(c);
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
            keel__resp_close_client(c);
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
        keel__resp_close_client(c);
        return;
    }
    s->connections_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->rejected) {
        s->rejected_total++;
        keel_resp_write_error(&c->out, "ERR max number of clients reached");
        keel_resp_client_close_after_reply(c);
        keel__resp_mark_pending(c);
        return;
    }
    keel__resp_start_reading(c);
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
    rc = keel__resp_build_table(s, cmds, cmds_len, msg);
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
    keel__resp_close_client(KEEL_LIST_ENTRY(it, keel_resp_client_t, link));
}
