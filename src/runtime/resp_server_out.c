/* resp_server_out.c - RESP server: replies, deferred reply slots, writes, CLIENT REPLY. */
#include "runtime/resp_server_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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
size_t keel__resp_output_bytes(const keel_resp_client_t *c)
{
    size_t n = keel_buf_unread(&c->out) + keel_buf_unread(&c->wbuf) + c->qbytes;
    if (c->qtail != NULL && c->qtail->done)
        n += keel_buf_unread(&c->qtail->out) - c->qtail->counted;
    return n;
}

/* Redis client-output-buffer-limit: a client that lets replies pile up is dropped. */
bool keel__resp_enforce_output_limit(keel_resp_client_t *c)
{
    if (c->closing || keel__resp_output_bytes(c) <= c->server->cfg.reply_bytes_max)
        return false;
    c->server->output_limit_closes_total++;
    keel__resp_close_client(c);
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
        keel__resp_close_client(c);
        return;
    }
    if (keel_buf_unread(&c->out) > 0 || c->close_after_reply)
        keel__resp_mark_pending(c);
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
void keel__resp_flush(keel_resp_client_t *c)
{
    if (c->writing || c->closing)
        return;
    int sent_all = 0;
    if (keel_buf_unread(&c->out) > 0) {
        uv_buf_t d =
            uv_buf_init((char *)keel_buf_rptr(&c->out), (unsigned)keel_buf_unread(&c->out));
        int n = uv_try_write((uv_stream_t *)&c->tcp, &d, 1);
        if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
            keel__resp_close_client(c);
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
            keel__resp_close_client(c);
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
        keel__resp_close_client(c);
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
        int rc = keel_buf_append(&c->out, keel__resp_unread_ptr(&d->out), keel_buf_unread(&d->out));
        if (rc != 0)
            return rc;
        settle(c, d);
        c->qbytes -= d->counted;
        c->qhead = d->next;
        if (c->qhead == NULL)
            c->qtail = NULL;
        keel__resp_free_slot(c->server, d);
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
        keel__resp_free_slot(NULL, d);
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
        keel__resp_close_client(c);
        return;
    }
    if (keel__resp_enforce_output_limit(c))
        return;
    if (c->input_blocked && !c->barrier_open &&
        c->deferred_open < c->server->cfg.pending_replies_max) {
        c->input_blocked = false;
        c->resume_input = true;
        if (!c->stop_input && c->read_stopped) {
            c->read_stopped = false;
            keel__resp_start_reading(c);
        }
    }
    keel__resp_mark_pending(c);
}

void keel_resp_client_resume(keel_resp_client_t *c)
{
    if (!c->held || c->closing)
        return;
    c->held = false;
    c->resume_input = true;
    if (!c->stop_input && c->read_stopped && !c->input_blocked) {
        c->read_stopped = false;
        keel__resp_start_reading(c);
    }
    keel__resp_mark_pending(c);
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
    return keel__resp_output_bytes(c);
}
