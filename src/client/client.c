/* client.c - the RESP client on the event loop: pipelining, seed list, leader following, feeds. */
#include "client/client.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Requests live in one array allocated at init (requests_max slots) and move between
 * four singly linked queues: free, unsent (FIFO, written at the next flush), inflight
 * (FIFO, written and waiting for their replies in order) and held (resent after a
 * -TRYAGAIN backoff). A request timed out while in flight stays in the inflight queue,
 * marked `expired`, holding its place so that the replies that follow still pair up.
 */
enum { WHERE_FREE, WHERE_UNSENT, WHERE_INFLIGHT, WHERE_HELD };

#define DEFAULT_REQUESTS_MAX 1024u
#define DEFAULT_REQUEST_BYTES_MAX (64u * 1024u * 1024u)
#define DEFAULT_REPLY_BYTES_MAX (64u * 1024u * 1024u)

keel_client_config_t keel_client_config_default(void)
{
    keel_client_config_t c;
    memset(&c, 0, sizeof(c));
    c.connect_timeout_ms = 3000;
    c.request_timeout_ms = 10000;
    keel_retry_config_default(&c.backoff);
    c.backoff.backoff_base_ms = 50;
    c.backoff.backoff_cap_ms = 2000;
    c.backoff.jitter = KEEL_RETRY_JITTER_EQUAL;
    c.follow_leader_ms = 1000;
    c.requests_max = DEFAULT_REQUESTS_MAX;
    c.inflight_max = DEFAULT_REQUESTS_MAX;
    c.request_bytes_max = DEFAULT_REQUEST_BYTES_MAX;
    c.reply_bytes_max = DEFAULT_REPLY_BYTES_MAX;
    c.read_bytes = KEEL_CLIENT_READ_BYTES_DEFAULT;
    c.retry_tryagain = true;
    c.seed = 1;
    return c;
}

int keel_client_config_seeds(keel_client_config_t *cfg, char *text, const char *who,
                             keel_errmsg_t *msg)
{
    cfg->seeds_n = 0;
    for (char *p = text, *tok; (tok = strsep(&p, ",")) != NULL;) {
        if (*tok == '\0')
            continue;
        if (cfg->seeds_n == KEEL_CLIENT_SEEDS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "%s: more than %u addresses", who,
                             KEEL_CLIENT_SEEDS_MAX);
        cfg->seeds[cfg->seeds_n++] = tok;
    }
    if (cfg->seeds_n == 0)
        return keel_errf(msg, KEEL_EINVAL, "%s: no address", who);
    return 0;
}

int keel_client_config_validate(const keel_client_config_t *c, keel_errmsg_t *msg)
{
    if (c->seeds_n < 1 || c->seeds_n > KEEL_CLIENT_SEEDS_MAX || c->first_seed >= c->seeds_n)
        return keel_errf(msg, KEEL_EINVAL, "seeds_n must be 1..%d and first_seed below it",
                         KEEL_CLIENT_SEEDS_MAX);
    for (size_t i = 0; i < c->seeds_n; i++) {
        struct sockaddr_storage ss;
        if (c->seeds[i] == NULL || strlen(c->seeds[i]) >= KEEL_CLIENT_ADDR_BYTES_MAX ||
            keel_tcp_parse_addr(c->seeds[i], &ss, msg) != 0)
            return keel_errf(msg, KEEL_EINVAL, "bad seed address '%s'",
                             c->seeds[i] ? c->seeds[i] : "(null)");
    }
    if (c->connect_timeout_ms <= 0 || c->request_timeout_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "connect_timeout_ms > 0, request_timeout_ms >= 0");
    if (c->requests_max < 1 || c->requests_max > KEEL_CLIENT_REQUESTS_LIMIT ||
        c->inflight_max < 1 || c->inflight_max > c->requests_max)
        return keel_errf(msg, KEEL_EINVAL, "requests_max 1..%u, inflight_max 1..requests_max",
                         KEEL_CLIENT_REQUESTS_LIMIT);
    if (c->request_bytes_max < 16 || c->reply_bytes_max < 16 || c->read_bytes < 16)
        return keel_errf(msg, KEEL_EINVAL, "byte limits must be at least 16");
    return keel_retry_config_validate(&c->backoff, msg);
}

/* ---- queues ------------------------------------------------------------------------------ */

static void q_init(keel_client__queue_t *q)
{
    q->head = q->tail = -1;
    q->n = 0;
}

static void q_push(keel_client_t *cl, keel_client__queue_t *q, int32_t i, int where)
{
    cl->reqs[i].next = -1;
    cl->reqs[i].where = (uint8_t)where;
    if (q->tail < 0)
        q->head = i;
    else
        cl->reqs[q->tail].next = i;
    q->tail = i;
    q->n++;
}

static void q_push_front(keel_client_t *cl, keel_client__queue_t *q, int32_t i, int where)
{
    cl->reqs[i].where = (uint8_t)where;
    cl->reqs[i].next = q->head;
    q->head = i;
    if (q->tail < 0)
        q->tail = i;
    q->n++;
}

static int32_t q_pop(keel_client_t *cl, keel_client__queue_t *q)
{
    int32_t i = q->head;
    if (i < 0)
        return -1;
    q->head = cl->reqs[i].next;
    if (q->head < 0)
        q->tail = -1;
    q->n--;
    return i;
}

static void slot_free(keel_client_t *cl, int32_t i)
{
    keel_client__req_t *r = &cl->reqs[i];
    keel_buf_reset(&r->cmd);
    r->fn = NULL;
    r->ctx = NULL;
    q_push(cl, &cl->free, i, WHERE_FREE);
}

/* Frees slot i, then runs its callback (which may queue new requests into that slot). */
static void finish(keel_client_t *cl, int32_t i, int status, const keel_resp_value_t *v)
{
    keel_client_reply_fn fn = cl->reqs[i].fn;
    void *ctx = cl->reqs[i].ctx;
    bool expired = cl->reqs[i].expired;
    slot_free(cl, i);
    if (!expired)
        fn(cl, ctx, status, v);
}

/* Fails every request of q (detached first: callbacks may queue new ones). */
static void fail_queue(keel_client_t *cl, keel_client__queue_t *q, int status)
{
    keel_client__queue_t dead = *q;
    q_init(q);
    int32_t i;
    while ((i = q_pop(cl, &dead)) >= 0)
        finish(cl, i, status, NULL);
}

/* ---- connection -------------------------------------------------------------------------- */

static void connect_next(keel_client_t *cl);
static void on_handle_closed(keel_client_t *cl);
static void kick(keel_client_t *cl);
static void arm_wake(keel_client_t *cl, keel_ms_t at_ms);

static void emit(keel_client_t *cl, int event, int err)
{
    if (cl->cfg.on_event && !cl->closing)
        cl->cfg.on_event(cl, event, err, cl->cfg.data);
}

static void on_retry_timer(keel_timer_t *t, void *data)
{
    connect_next(data);
}

/* The connector is closed: connect again, at once after a redirect, else after a backoff. */
static void on_cc_closed(keel_connector_t *cc)
{
    keel_client_t *cl = cc->data;
    cl->cc_open = cl->cc_closing = false;
    if (cl->closing) {
        on_handle_closed(cl);
        return;
    }
    cl->handles_open--;
    keel_ms_t delay_ms = 0;
    if (!cl->moving) {
        delay_ms = keel_retry_backoff_ms(&cl->cfg.backoff, cl->failures, &cl->rand);
        cl->failures++;
        if (!cl->redirected)
            cl->seed_at = (cl->seed_at + 1) % cl->cfg.seeds_n;
    }
    cl->moving = false;
    keel_timer_start(&cl->retry, delay_ms, 0, on_retry_timer, cl);
}

static void drop_link(keel_client_t *cl)
{
    cl->connected = false;
    if (cl->cc_open && !cl->cc_closing) {
        cl->cc_closing = true;
        keel_connector_close(&cl->cc, on_cc_closed);
    }
}

/* The link broke (or we gave up on it): what was written has an unknown outcome. */
static void lose(keel_client_t *cl, int err, bool report)
{
    if (!cl->connected)
        return;
    drop_link(cl);
    cl->stats.losses += report;
    fail_queue(cl, &cl->inflight, KEEL_ECONNRESET);
    if (cl->cfg.session_bound) {
        fail_queue(cl, &cl->unsent, KEEL_ECONNRESET);
        fail_queue(cl, &cl->held, KEEL_ECONNRESET);
    }
    if (report)
        emit(cl, KEEL_CLIENT_LOST, err);
}

static void on_failed(keel_connector_t *cc, int err, keel_ms_t delay_ms, void *data)
{
    keel_client_t *cl = data;
    cl->stats.connect_failures++;
    if (cl->redirected) /* a redirect or a move to the leader that failed: no more for a while */
        cl->follow_next_ms = keel_loop_now_ms(cl->loop) + KEEL_CLIENT_FOLLOW_PAUSE_MS;
    drop_link(cl);
    if (cl->cfg.session_bound) {
        fail_queue(cl, &cl->unsent, KEEL_ECONNRESET);
        fail_queue(cl, &cl->held, KEEL_ECONNRESET);
    }
    emit(cl, KEEL_CLIENT_CONNECT_ERR, err);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    keel_client_t *cl = ((keel_connector_t *)h->data)->data;
    if (keel_buf_reserve(&cl->in, cl->cfg.read_bytes) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: the reply is too big */
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&cl->in), (unsigned)(cl->in.cap - cl->in.len));
}

static void handle_reply(keel_client_t *cl, const keel_resp_value_t *v);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel_client_t *cl = ((keel_connector_t *)s->data)->data;
    if (nread < 0) {
        lose(cl, nread == UV_ENOBUFS ? KEEL_ETOOBIG : keel_uv_err((int)nread), true);
        return;
    }
    keel_buf_commit(&cl->in, (size_t)nread);
    keel_resp_config_t rcfg = keel_resp_config_default();
    if (cl->cfg.reply_bytes_max < rcfg.bulk_bytes_max)
        rcfg.bulk_bytes_max = cl->cfg.reply_bytes_max;
    while (cl->connected && !cl->closing) {
        keel_resp_value_t *v;
        size_t used;
        int rc = keel_resp_parse_reply(&rcfg, keel_buf_rptr(&cl->in), keel_buf_unread(&cl->in), &v,
                                       &used, NULL);
        if (rc == KEEL_EAGAIN)
            break;
        if (rc != 0) {
            lose(cl, rc, true);
            return;
        }
        handle_reply(cl, v);
        keel_resp_value_free(v);
        keel_buf_consume(&cl->in, used);
    }
}

static void on_connected(keel_connector_t *cc, void *data)
{
    keel_client_t *cl = data;
    cl->connected = true;
    cl->failures = 0;
    cl->stats.connects++;
    keel_buf_reset(&cl->in);
    cl->feed_due = cl->feed_cmd.len > 0 || cl->watching;
    uv_read_start(keel_connector_stream(cc), on_alloc, on_read);
    emit(cl, KEEL_CLIENT_UP, 0);
    kick(cl);
}

static void connect_next(keel_client_t *cl)
{
    assert(!cl->cc_open && !cl->closing);
    cl->redirected = cl->move_to[0] != '\0';
    snprintf(cl->addr, sizeof(cl->addr), "%s",
             cl->redirected ? cl->move_to : cl->seeds[cl->seed_at]);
    cl->move_to[0] = '\0';
    keel_connector_config_t ccfg = keel_connector_config_default();
    ccfg.connect_timeout_ms = cl->cfg.connect_timeout_ms;
    ccfg.seed = keel_rand_u64(&cl->rand);
    keel_connector_callbacks_t cb = {on_connected, on_failed};
    int rc = keel_connector_init(&cl->cc, cl->loop, cl->addr, &ccfg, &cb, cl, NULL);
    if (rc != 0) { /* a redirect to an address we cannot parse: back to the seeds */
        cl->stats.connect_failures++;
        emit(cl, KEEL_CLIENT_CONNECT_ERR, rc);
        cl->redirected = false;
        keel_timer_start(&cl->retry,
                         keel_retry_backoff_ms(&cl->cfg.backoff, cl->failures++, &cl->rand), 0,
                         on_retry_timer, cl);
        return;
    }
    cl->cc_open = true;
    cl->handles_open++;
    keel_connector_start(&cl->cc);
}

/* ---- writing ----------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    keel_client_t *cl = req->data;
    cl->writing = false;
    keel_buf_reset(&cl->wbuf);
    if (cl->closing || !cl->connected)
        return;
    if (status != 0)
        lose(cl, keel_uv_err(status), true);
    else
        kick(cl);
}

/* Appends the feed's start command (KEEL.WATCH with FROM the revision reached). */
static int feed_start_cmd(keel_client_t *cl, keel_buf_t *out)
{
    if (!cl->watching)
        return keel_buf_append(out, keel_buf_rptr(&cl->feed_cmd), keel_buf_unread(&cl->feed_cmd));
    char from[24];
    int from_len = snprintf(from, sizeof(from), "%" PRId64, cl->watch_rev);
    keel_resp_arg_t a[4] = {{(const uint8_t *)"KEEL.WATCH", 10},
                            {keel_buf_rptr(&cl->watch_prefix), keel_buf_unread(&cl->watch_prefix)},
                            {(const uint8_t *)"FROM", 4},
                            {(const uint8_t *)from, (size_t)from_len}};
    return keel_resp_write_command(out, cl->watch_rev >= 0 ? 4 : 2, a);
}

/* Gathers the unsent requests (up to inflight_max) into one write. */
static void on_flush(uv_prepare_t *p)
{
    keel_client_t *cl = p->data;
    uv_prepare_stop(p);
    cl->flush_on = false;
    if (!cl->connected || cl->writing || cl->closing || cl->move_to[0] != '\0')
        return;
    if (cl->feed_due && feed_start_cmd(cl, &cl->wbuf) != 0) {
        lose(cl, KEEL_ENOMEM, true);
        return;
    }
    cl->feed_due = false;
    while (cl->unsent.n > 0 && cl->inflight.n < cl->cfg.inflight_max) {
        int32_t i = q_pop(cl, &cl->unsent);
        keel_client__req_t *r = &cl->reqs[i];
        if (keel_buf_append(&cl->wbuf, keel_buf_rptr(&r->cmd), keel_buf_unread(&r->cmd)) != 0) {
            q_push_front(cl, &cl->unsent, i, WHERE_UNSENT);
            break; /* the batch is full: the rest goes with the next write */
        }
        q_push(cl, &cl->inflight, i, WHERE_INFLIGHT);
    }
    if (keel_buf_unread(&cl->wbuf) == 0)
        return;
    uv_buf_t ub =
        uv_buf_init((char *)keel_buf_rptr(&cl->wbuf), (unsigned)keel_buf_unread(&cl->wbuf));
    cl->wreq.data = cl;
    int rc = uv_write(&cl->wreq, keel_connector_stream(&cl->cc), &ub, 1, on_write);
    if (rc != 0) {
        keel_buf_reset(&cl->wbuf);
        lose(cl, keel_uv_err(rc), true);
        return;
    }
    cl->writing = true;
}

/* Schedules a write at the end of this loop iteration, so a burst goes out as one. */
static void kick(keel_client_t *cl)
{
    if (cl->flush_on || cl->closing)
        return;
    cl->flush_on = true;
    uv_prepare_start(&cl->flush, on_flush);
}

/* ---- replies ----------------------------------------------------------------------------- */

static bool err_is(const keel_resp_value_t *v, const char *word)
{
    size_t n = strlen(word);
    return v->type == KEEL_RESP_ERROR && v->str.len >= n && memcmp(v->str.ptr, word, n) == 0 &&
           (v->str.len == n || v->str.ptr[n] == ' ');
}

/* The address a -MOVED <slot> <addr> or -REDIRECT <addr> names, into out; false if none. */
static bool redirect_target(const keel_resp_value_t *v, char *out, size_t cap)
{
    bool moved = err_is(v, "MOVED");
    if (!moved && !err_is(v, "REDIRECT"))
        return false;
    const char *p = (const char *)v->str.ptr, *end = p + v->str.len;
    int words = moved ? 2 : 1; /* words before the address */
    for (; p < end && words > 0; p++)
        if (*p == ' ')
            words--;
    const char *a = p;
    while (p < end && *p != ' ')
        p++;
    size_t n = (size_t)(p - a);
    struct sockaddr_storage ss;
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, a, n);
    out[n] = '\0';
    return keel_tcp_parse_addr(out, &ss, NULL) == 0;
}

static void feed_push(keel_client_t *cl, const keel_resp_value_t *v)
{
    if (cl->watching && v->type == KEEL_RESP_ARRAY && v->elems_len == 3 &&
        v->elems[0].type == KEEL_RESP_BULK) {
        const keel_resp_value_t *rev = &v->elems[v->elems[0].str.len == 8 ? 2 : 1];
        if (rev->type == KEEL_RESP_INT)
            cl->watch_rev = rev->integer; /* "watching" ... :R, or "watch" :rev ... */
    }
    cl->cfg.on_push(cl, v, cl->cfg.data);
    if (v->type == KEEL_RESP_ERROR && cl->watching && !cl->closing)
        keel_client_move(cl); /* -COMPACTED, -LAGGED: resume elsewhere */
}

/* Resends after -TRYAGAIN or a redirect, if the request may: true if it was kept. */
static bool resend(keel_client_t *cl, int32_t i, const keel_resp_value_t *v)
{
    keel_client__req_t *r = &cl->reqs[i];
    keel_ms_t now = keel_loop_now_ms(cl->loop);
    if (err_is(v, "TRYAGAIN") && cl->cfg.retry_tryagain) {
        keel_ms_t at = now + keel_retry_backoff_ms(&cl->cfg.backoff, r->tryagains, &cl->rand);
        if (at >= r->deadline_ms)
            return false;
        r->tryagains++;
        r->resend_ms = at;
        cl->stats.tryagain_resends++;
        q_push(cl, &cl->held, i, WHERE_HELD);
        arm_wake(cl, at);
        return true;
    }
    char to[KEEL_CLIENT_ADDR_BYTES_MAX];
    if (r->redirects >= KEEL_CLIENT_REDIRECTS_MAX || !redirect_target(v, to, sizeof(to)))
        return false;
    r->redirects++;
    cl->stats.redirects++;
    snprintf(cl->move_to, sizeof(cl->move_to), "%s", to);
    q_push_front(cl, &cl->unsent, i, WHERE_UNSENT);
    return true;
}

static void handle_reply(keel_client_t *cl, const keel_resp_value_t *v)
{
    if (cl->cfg.on_push) {
        feed_push(cl, v);
        return;
    }
    int32_t i = q_pop(cl, &cl->inflight);
    if (i < 0) {
        lose(cl, KEEL_EPROTO, true); /* a reply nobody asked for */
        return;
    }
    cl->stats.replies++;
    if (cl->reqs[i].expired || v->type != KEEL_RESP_ERROR || !resend(cl, i, v))
        finish(cl, i, 0, v);
    if (cl->move_to[0] != '\0' && cl->inflight.n == 0 && cl->connected && !cl->closing) {
        cl->moving = true; /* every earlier reply is in: follow the redirect */
        drop_link(cl);
    }
}

/* ---- deadlines --------------------------------------------------------------------------- */

static void on_wake(keel_timer_t *t, void *data);

static void arm_wake(keel_client_t *cl, keel_ms_t at_ms)
{
    if (at_ms >= cl->wake_at_ms || cl->closing)
        return;
    cl->wake_at_ms = at_ms;
    keel_ms_t now = keel_loop_now_ms(cl->loop);
    keel_timer_start(&cl->wake, at_ms > now ? at_ms - now : 0, 0, on_wake, cl);
}

/* Splits q into the requests whose deadline passed (appended to dead) and the rest. */
static void split_expired(keel_client_t *cl, keel_client__queue_t *q, keel_client__queue_t *dead,
                          keel_ms_t now, keel_ms_t *next)
{
    keel_client__queue_t keep;
    q_init(&keep);
    int where = q == &cl->unsent ? WHERE_UNSENT : WHERE_HELD;
    int32_t i;
    while ((i = q_pop(cl, q)) >= 0) {
        keel_client__req_t *r = &cl->reqs[i];
        if (r->deadline_ms <= now) {
            q_push(cl, dead, i, WHERE_FREE);
            continue;
        }
        *next = keel_ms_min(*next, r->deadline_ms);
        q_push(cl, &keep, i, where);
    }
    *q = keep;
}

/* Held requests whose backoff is over go back to the end of the unsent queue. */
static void release_held(keel_client_t *cl, keel_ms_t now, keel_ms_t *next)
{
    keel_client__queue_t keep;
    q_init(&keep);
    int32_t i;
    while ((i = q_pop(cl, &cl->held)) >= 0) {
        keel_client__req_t *r = &cl->reqs[i];
        if (r->resend_ms <= now) {
            q_push(cl, &cl->unsent, i, WHERE_UNSENT);
            continue;
        }
        *next = keel_ms_min(*next, r->resend_ms);
        q_push(cl, &keep, i, WHERE_HELD);
    }
    cl->held = keep;
}

static void on_wake(keel_timer_t *t, void *data)
{
    keel_client_t *cl = data;
    keel_ms_t now = keel_loop_now_ms(cl->loop), next = KEEL_MS_NEVER;
    cl->wake_at_ms = KEEL_MS_NEVER;
    keel_client__queue_t dead;
    q_init(&dead);
    split_expired(cl, &cl->held, &dead, now, &next);
    release_held(cl, now, &next);
    split_expired(cl, &cl->unsent, &dead, now, &next);
    for (int32_t i = cl->inflight.head; i >= 0; i = cl->reqs[i].next) {
        keel_client__req_t *r = &cl->reqs[i];
        if (r->expired || r->deadline_ms > now) {
            next = r->expired ? next : keel_ms_min(next, r->deadline_ms);
            continue;
        }
        r->expired = true; /* its reply, if it comes, is dropped */
        cl->stats.timeouts++;
        r->fn(cl, r->ctx, KEEL_ETIMEDOUT, NULL);
        if (cl->closing || r->where != WHERE_INFLIGHT) {
            next = now; /* the callback closed or moved the client: look again at once */
            break;
        }
    }
    cl->stats.timeouts += dead.n;
    fail_queue(cl, &dead, KEEL_ETIMEDOUT);
    if (cl->unsent.n > 0)
        kick(cl);
    if (next != KEEL_MS_NEVER)
        arm_wake(cl, next);
}

/* ---- public API -------------------------------------------------------------------------- */

int keel_client_init(keel_client_t *cl, keel_loop_t *loop, const keel_client_config_t *cfg,
                     keel_errmsg_t *msg)
{
    memset(cl, 0, sizeof(*cl));
    int rc = keel_client_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    cl->reqs = calloc(cfg->requests_max, sizeof(*cl->reqs));
    if (cl->reqs == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "no memory for %u request slots", cfg->requests_max);
    cl->loop = loop;
    cl->cfg = *cfg;
    for (size_t i = 0; i < cfg->seeds_n; i++) {
        snprintf(cl->seeds[i], sizeof(cl->seeds[i]), "%s", cfg->seeds[i]);
        cl->cfg.seeds[i] = cl->seeds[i];
    }
    cl->seed_at = cfg->first_seed;
    keel_rand_seed(&cl->rand, cfg->seed);
    q_init(&cl->free), q_init(&cl->unsent), q_init(&cl->inflight), q_init(&cl->held);
    for (uint32_t i = 0; i < cfg->requests_max; i++) {
        keel_buf_init(&cl->reqs[i].cmd, cfg->request_bytes_max);
        q_push(cl, &cl->free, (int32_t)i, WHERE_FREE);
    }
    keel_buf_init(&cl->in, cfg->reply_bytes_max + cfg->read_bytes);
    keel_buf_init(&cl->wbuf, 0);
    keel_buf_init(&cl->feed_cmd, 0);
    keel_buf_init(&cl->watch_prefix, 0);
    cl->watch_rev = -1;
    cl->wake_at_ms = KEEL_MS_NEVER;
    keel_timer_init(loop, &cl->wake);
    keel_timer_init(loop, &cl->retry);
    uv_prepare_init(&loop->uv, &cl->flush);
    cl->flush.data = cl;
    cl->handles_open = 3;
    connect_next(cl);
    return 0;
}

/* KEEL.CLUSTER MEMBERS: *n of *6 [name id role peer is_leader client]. Moves to the leader's
 * client address when it is not the node in use. */
static void on_members(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    (void)ctx;
    cl->follow_asking = false;
    if (status != 0 || v->type != KEEL_RESP_ARRAY || cl->closing || cl->move_to[0] != '\0')
        return;
    for (size_t k = 0; k < v->elems_len; k++) {
        const keel_resp_value_t *m = &v->elems[k];
        if (m->type != KEEL_RESP_ARRAY || m->elems_len != 6 || m->elems[4].type != KEEL_RESP_INT ||
            m->elems[4].integer == 0 || m->elems[5].type != KEEL_RESP_BULK)
            continue;
        const keel_resp_value_t *a = &m->elems[5];
        if (a->str.len == 0 || a->str.len >= sizeof(cl->move_to) ||
            (a->str.len == strlen(cl->addr) && memcmp(a->str.ptr, cl->addr, a->str.len) == 0))
            return; /* on the leader already */
        memcpy(cl->move_to, a->str.ptr, a->str.len);
        cl->move_to[a->str.len] = '\0';
        cl->stats.leader_moves++;
        return; /* handle_reply moves once every reply before this one is in */
    }
}

static void follow_leader(keel_client_t *cl)
{
    keel_ms_t now = keel_loop_now_ms(cl->loop);
    if (cl->cfg.follow_leader_ms <= 0 || cl->cfg.on_push || cl->cfg.session_bound ||
        cl->follow_asking || !cl->connected || cl->move_to[0] != '\0' || now < cl->follow_next_ms)
        return;
    cl->follow_next_ms = now + cl->cfg.follow_leader_ms;
    const char *argv[] = {"KEEL.CLUSTER", "MEMBERS"};
    cl->follow_asking = true; /* set first: the call below comes back here */
    if (keel_client_command_timeout(cl, 2, argv, NULL, cl->cfg.follow_leader_ms, on_members,
                                    NULL) != 0)
        cl->follow_asking = false;
}

int keel_client_command_timeout(keel_client_t *cl, size_t argc, const char *const *argv,
                                const size_t *lens, keel_ms_t timeout_ms, keel_client_reply_fn fn,
                                void *ctx)
{
    follow_leader(cl);
    assert(fn != NULL && argc >= 1);
    if (cl->closing)
        return KEEL_ECLOSED;
    if (cl->cfg.on_push)
        return KEEL_EINVAL;
    if (argc > KEEL_RESP_ARRAY_LEN_MAX)
        return KEEL_ETOOBIG;
    if (cl->free.n == 0)
        return KEEL_EFULL;
    int32_t i = q_pop(cl, &cl->free);
    keel_client__req_t *r = &cl->reqs[i];
    int rc = keel_buf_printf(&r->cmd, "*%zu\r\n", argc);
    for (size_t k = 0; k < argc && rc == 0; k++) {
        size_t n = lens ? lens[k] : strlen(argv[k]);
        rc = keel_buf_printf(&r->cmd, "$%zu\r\n", n);
        rc = rc ? rc : keel_buf_append(&r->cmd, argv[k], n);
        rc = rc ? rc : keel_buf_append(&r->cmd, "\r\n", 2);
    }
    if (rc != 0) {
        keel_buf_reset(&r->cmd);
        q_push_front(cl, &cl->free, i, WHERE_FREE);
        return rc;
    }
    r->fn = fn;
    r->ctx = ctx;
    r->deadline_ms = timeout_ms > 0 ? keel_loop_now_ms(cl->loop) + timeout_ms : KEEL_MS_NEVER;
    r->tryagains = r->redirects = 0;
    r->expired = false;
    q_push(cl, &cl->unsent, i, WHERE_UNSENT);
    arm_wake(cl, r->deadline_ms);
    kick(cl);
    return 0;
}

int keel_client_command(keel_client_t *cl, size_t argc, const char *const *argv, const size_t *lens,
                        keel_client_reply_fn fn, void *ctx)
{
    return keel_client_command_timeout(cl, argc, argv, lens, cl->cfg.request_timeout_ms, fn, ctx);
}

int keel_client_subscribe(keel_client_t *cl, size_t argc, const char *const *channels)
{
    if (cl->cfg.on_push == NULL || cl->watching || argc < 1 || argc >= KEEL_CLIENT_FEED_ARGS_MAX)
        return KEEL_EINVAL;
    keel_resp_arg_t a[KEEL_CLIENT_FEED_ARGS_MAX];
    a[0] = (keel_resp_arg_t){(const uint8_t *)"SUBSCRIBE", 9};
    for (size_t i = 0; i < argc; i++)
        a[i + 1] = (keel_resp_arg_t){(const uint8_t *)channels[i], strlen(channels[i])};
    keel_buf_reset(&cl->feed_cmd);
    int rc = keel_resp_write_command(&cl->feed_cmd, argc + 1, a);
    if (rc == 0 && cl->connected) {
        cl->feed_due = true;
        kick(cl);
    }
    return rc;
}

int keel_client_watch(keel_client_t *cl, const char *prefix, int64_t from)
{
    if (cl->cfg.on_push == NULL || cl->watching || cl->feed_cmd.len > 0 || from < -1)
        return KEEL_EINVAL;
    int rc = keel_buf_append_str(&cl->watch_prefix, prefix);
    if (rc != 0)
        return rc;
    cl->watching = true;
    cl->watch_rev = from;
    if (cl->connected) {
        cl->feed_due = true;
        kick(cl);
    }
    return 0;
}

int64_t keel_client_watch_revision(const keel_client_t *cl)
{
    return cl->watch_rev;
}

void keel_client_move(keel_client_t *cl)
{
    if (!cl->connected || cl->closing)
        return;
    lose(cl, 0, false); /* on_cc_closed advances to the next seed after a backoff */
}

bool keel_client_connected(const keel_client_t *cl)
{
    return cl->connected;
}

const char *keel_client_addr(const keel_client_t *cl)
{
    return cl->addr;
}

uint32_t keel_client_pending(const keel_client_t *cl)
{
    return cl->unsent.n + cl->inflight.n + cl->held.n;
}

const keel_client_stats_t *keel_client_stats(const keel_client_t *cl)
{
    return &cl->stats;
}

static void release_memory(keel_client_t *cl)
{
    for (uint32_t i = 0; i < cl->cfg.requests_max; i++)
        keel_buf_free(&cl->reqs[i].cmd);
    free(cl->reqs);
    cl->reqs = NULL;
    keel_buf_free(&cl->in);
    keel_buf_free(&cl->wbuf);
    keel_buf_free(&cl->feed_cmd);
    keel_buf_free(&cl->watch_prefix);
}

static void on_handle_closed(keel_client_t *cl)
{
    assert(cl->handles_open > 0);
    if (--cl->handles_open > 0)
        return;
    release_memory(cl);
    if (cl->closed)
        cl->closed(cl);
}

static void on_timer_closed(keel_timer_t *t)
{
    on_handle_closed(t->data);
}

static void on_prepare_closed(uv_handle_t *h)
{
    on_handle_closed(h->data);
}

void keel_client_close(keel_client_t *cl, void (*closed)(keel_client_t *cl))
{
    if (cl->closing)
        return;
    cl->closing = true;
    cl->closed = closed;
    cl->connected = false;
    fail_queue(cl, &cl->inflight, KEEL_ECANCELED);
    fail_queue(cl, &cl->unsent, KEEL_ECANCELED);
    fail_queue(cl, &cl->held, KEEL_ECANCELED);
    cl->wake.data = cl;
    cl->retry.data = cl;
    keel_timer_close(&cl->wake, on_timer_closed);
    keel_timer_close(&cl->retry, on_timer_closed);
    uv_close((uv_handle_t *)&cl->flush, on_prepare_closed);
    if (cl->cc_open && !cl->cc_closing) {
        cl->cc_closing = true;
        keel_connector_close(&cl->cc, on_cc_closed);
    }
}
