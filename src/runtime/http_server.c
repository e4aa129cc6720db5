/* http_server.c - HTTP/1.1 server on libuv: route table, keep-alive, pipelining, timeouts, drain.
 */
#include "runtime/http_server.h"

#include "base/json.h"
#include "base/log.h"
#include "base/metrics.h"
#include "runtime/clock.h"
#include "runtime/tcp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bytes reserved in the input buffer for each read. */
#define READ_CHUNK_BYTES (16u * 1024u)

enum deadline_kind { DL_NONE, DL_IDLE, DL_READ, DL_WRITE, DL_LINGER };

struct keel_http_conn {
    uv_tcp_t tcp; /* first: the handle's address is the connection's */
    keel_http_server_t *srv;
    keel_list_t link; /* srv->conns */
    keel_http_parser_t parser;
    keel_http_msg_t msg;
    keel_http_req_t req;
    keel_buf_t in;   /* received, not yet parsed */
    keel_buf_t out;  /* responses not yet handed to libuv */
    keel_buf_t wbuf; /* bytes of the uv_write in flight */
    uv_write_t wreq;
    uv_shutdown_t sreq;
    keel_ms_t deadline_ms;
    keel_ms_t request_start_ms;
    uint64_t request_start_ns; /* for the duration histogram, only with metrics */
    int deadline_kind;
    bool reading;
    bool writing;           /* uv_write in flight (wbuf) */
    bool req_pending;       /* a handler holds req */
    bool processing;        /* inside process(): respond() must not recurse */
    bool close_after_write; /* last response said Connection: close */
    bool lingering;         /* half-closed, discarding input until EOF or linger_ms */
    bool peer_eof;
    bool continue_sent;
    bool closing; /* uv_close called */
    bool closed;  /* handle closed; memory kept only while req_pending */
    void (*gone_fn)(keel_http_req_t *req, void *data);
    void *gone_data;
    void (*answer_fn)(keel_http_req_t *req, int status, void *data);
    void *answer_data;
    keel_http_respond_fn respond_fn;
    void *respond_data;
    const char *extra_name; /* keel_http_req_set_response_field; NULL: none */
    char extra_value[KEEL_HTTP_EXTRA_VALUE_BYTES_MAX + 1];
};

keel_http_server_config_t keel_http_server_config_default(void)
{
    keel_http_server_config_t cfg = {
        .limits = keel_http_limits_default(),
        .read_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .write_timeout_ms = 10000,
        .drain_timeout_ms = 10000,
        .linger_ms = 1000,
        .connections_max = 10000,
        .input_bytes_max = 64 * 1024,
        .output_bytes_max = 1024 * 1024,
        .backlog = 511,
    };
    return cfg;
}

int keel_http_server_config_validate(const keel_http_server_config_t *cfg, keel_errmsg_t *msg)
{
    int rc = keel_http_limits_validate(&cfg->limits, msg);
    if (rc != 0)
        return rc;
    if (cfg->read_timeout_ms <= 0 || cfg->idle_timeout_ms <= 0 || cfg->write_timeout_ms <= 0 ||
        cfg->drain_timeout_ms <= 0 || cfg->linger_ms < 0)
        return keel_errf(msg, KEEL_EINVAL, "timeouts must be > 0");
    if (cfg->connections_max < 1)
        return keel_errf(msg, KEEL_EINVAL, "connections_max must be >= 1");
    if (cfg->input_bytes_max < 1024 || cfg->output_bytes_max < 1024)
        return keel_errf(msg, KEEL_EINVAL, "input/output_bytes_max must be >= 1024");
    if (cfg->backlog < 1)
        return keel_errf(msg, KEEL_EINVAL, "backlog must be >= 1");
    return 0;
}

/* ---- connection lifecycle ------------------------------------------------------------------ */

static void process(keel_http_conn_t *c);
static void flush(keel_http_conn_t *c);
static void read_start(keel_http_conn_t *c);
static void maybe_finish_shutdown(keel_http_server_t *srv);

static keel_ms_t now_ms(keel_http_conn_t *c)
{
    return keel_loop_now_ms(c->srv->loop);
}

static void conn_free(keel_http_conn_t *c)
{
    keel_http_msg_free(&c->msg);
    keel_buf_free(&c->in);
    keel_buf_free(&c->out);
    keel_buf_free(&c->wbuf);
    free(c);
}

static void on_conn_closed(uv_handle_t *h)
{
    keel_http_conn_t *c = (keel_http_conn_t *)h;
    keel_http_server_t *srv = c->srv;
    keel_list_remove(&c->link);
    srv->conns_count--;
    c->closed = true;
    if (!c->req_pending) { /* else freed when the handler answers */
        conn_free(c);
    } else if (c->gone_fn != NULL) {
        void (*fn)(keel_http_req_t *, void *) = c->gone_fn;
        c->gone_fn = NULL;
        fn(&c->req, c->gone_data); /* may answer, which frees c */
    }
    maybe_finish_shutdown(srv);
}

static void conn_close(keel_http_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    keel_http_conn_t *c = req->data;
    if (status != 0)
        conn_close(c);
}

/* After a Connection: close response: FIN, then read and drop until EOF or linger_ms. */
static void begin_linger(keel_http_conn_t *c)
{
    if (c->lingering || c->closing)
        return;
    if (c->peer_eof || c->srv->cfg.linger_ms == 0) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown_done) != 0) {
        conn_close(c);
        return;
    }
    c->deadline_kind = DL_LINGER;
    c->deadline_ms = now_ms(c) + c->srv->cfg.linger_ms;
}

/* Buffers that grew past this for one big request or response are released once the
 * connection is idle, so a keep-alive connection holds a few KiB, not its largest message. */
#define IDLE_BUF_BYTES_MAX (64u * 1024u)

static void trim_idle(keel_http_conn_t *c)
{
    if (c->in.cap > IDLE_BUF_BYTES_MAX && keel_buf_unread(&c->in) == 0)
        keel_buf_free(&c->in);
    if (c->out.cap > IDLE_BUF_BYTES_MAX && keel_buf_unread(&c->out) == 0)
        keel_buf_free(&c->out);
    if (c->wbuf.cap > IDLE_BUF_BYTES_MAX && !c->writing)
        keel_buf_free(&c->wbuf);
    if (c->msg.body_buf.cap > IDLE_BUF_BYTES_MAX) {
        keel_buf_free(&c->msg.body_buf);
        c->msg.body = (const uint8_t *)"";
        c->msg.body_len = 0;
    }
}

/* Sets the deadline that applies to the connection's current state. */
static void update_deadline(keel_http_conn_t *c)
{
    const keel_http_server_config_t *cfg = &c->srv->cfg;
    if (c->lingering || c->closing)
        return;
    if (c->writing) {
        if (c->deadline_kind != DL_WRITE) {
            c->deadline_kind = DL_WRITE;
            c->deadline_ms = now_ms(c) + cfg->write_timeout_ms;
        }
    } else if (c->req_pending) {
        c->deadline_kind = DL_NONE; /* the handler owns the request's time */
    } else if (keel_http_parser_mid_message(&c->parser) || keel_buf_unread(&c->in) > 0) {
        c->deadline_kind = DL_READ;
        c->deadline_ms = c->request_start_ms + cfg->read_timeout_ms;
    } else {
        c->deadline_kind = DL_IDLE;
        c->deadline_ms = now_ms(c) + cfg->idle_timeout_ms;
        trim_idle(c);
    }
}

/* ---- output ------------------------------------------------------------------------------ */

static void refresh_date(keel_http_server_t *srv)
{
    time_t t = (time_t)(keel_clock_unix_ms() / 1000);
    if ((int64_t)t == srv->date_unix_s)
        return;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(srv->date_line, sizeof(srv->date_line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    srv->date_unix_s = (int64_t)t;
}

static void after_output(keel_http_conn_t *c)
{
    if (c->close_after_write && !c->writing && keel_buf_unread(&c->out) == 0 && !c->req_pending)
        begin_linger(c);
}

static void on_write_done(uv_write_t *req, int status)
{
    keel_http_conn_t *c = req->data;
    c->writing = false;
    keel_buf_reset(&c->wbuf);
    if (c->closing)
        return;
    if (status != 0) {
        conn_close(c);
        return;
    }
    c->deadline_kind = DL_NONE;
    if (keel_buf_unread(&c->out) > 0)
        flush(c);
    process(c); /* output drained: parse input held back, restart reading */
}

/* Sends out: uv_try_write first (usually all of it), the rest with one uv_write. */
static void flush(keel_http_conn_t *c)
{
    if (c->writing || c->closing || keel_buf_unread(&c->out) == 0) {
        after_output(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)keel_buf_rptr(&c->out), (unsigned)keel_buf_unread(&c->out));
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n > 0)
        keel_buf_consume(&c->out, (size_t)n);
    if (keel_buf_unread(&c->out) > 0) {
        keel_buf_t tmp = c->wbuf; /* swap: out keeps collecting while wbuf is written */
        c->wbuf = c->out;
        c->out = tmp;
        b = uv_buf_init((char *)keel_buf_rptr(&c->wbuf), (unsigned)keel_buf_unread(&c->wbuf));
        c->wreq.data = c;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write_done) != 0) {
            conn_close(c);
            return;
        }
        c->writing = true;
        update_deadline(c);
        return;
    }
    after_output(c);
}

static inline void bump(uint64_t *stat, keel_counter_t *c)
{
    ++*stat;
    if (c != NULL)
        keel_counter_inc(c);
}

static void count_status(keel_http_server_t *srv, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        bump(&srv->stats.responses_by_class[cls], srv->m.responses[cls]);
}

/* A response the server makes itself (parse errors, 404, 405, 408): JSON, then close if asked. */
static void write_error(keel_http_conn_t *c, int status, const char *message, bool close)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", status,
                     message);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    keel_http_header_t ct = {
        .name = "Content-Type", .name_len = 12, .value = "application/json", .value_len = 16};
    refresh_date(c->srv);
    unsigned flags = close ? KEEL_HTTP_W_CLOSE : 0;
    if (keel_http_write_response(&c->out, status, &ct, 1, body, (size_t)n, flags,
                                 c->srv->date_line) != 0) {
        conn_close(c);
        return;
    }
    count_status(c->srv, status);
    if (close)
        c->close_after_write = true;
}

/* ---- input ---------------------------------------------------------------------------------- */

static bool prefix_matches(const char *prefix, const char *path, size_t path_len)
{
    size_t n = strlen(prefix);
    if (n > path_len || memcmp(prefix, path, n) != 0)
        return false;
    return n == path_len || prefix[n - 1] == '/' || path[n] == '/';
}

static void dispatch(keel_http_conn_t *c)
{
    keel_http_server_t *srv = c->srv;
    const keel_http_msg_t *m = &c->msg;
    bump(&srv->stats.requests, srv->m.requests);
    bool path_seen = false;
    for (size_t i = 0; i < srv->routes_count; i++) {
        const keel_http_route_t *r = &srv->routes[i];
        if (!prefix_matches(r->path_prefix, m->path, m->path_len))
            continue;
        path_seen = true;
        if (r->method != KEEL_HTTP_ANY_METHOD && r->method != m->method &&
            !(m->method == HTTP_HEAD && r->method == HTTP_GET))
            continue;
        c->req.msg = m;
        c->req.server = srv;
        c->req.route_data = r->data;
        c->req.conn = c;
        c->req_pending = true;
        c->gone_fn = NULL;
        c->answer_fn = NULL;
        c->respond_fn = NULL;
        c->extra_name = NULL;
        r->handler(&c->req, r->data);
        return;
    }
    bool keep = m->keep_alive && !srv->draining;
    if (path_seen)
        write_error(c, 405, "method not allowed", !keep);
    else
        write_error(c, 404, "not found", !keep);
    if (srv->m.duration != NULL)
        keel_histogram_observe(srv->m.duration,
                               (double)((uint64_t)keel_clock_now_ns() - c->request_start_ns) / 1e9);
}

/* Parses buffered input and dispatches requests until one is pending or input runs out. */
static void process(keel_http_conn_t *c)
{
    if (c->processing || c->closing)
        return;
    c->processing = true;
    keel_http_server_t *srv = c->srv;
    while (!c->req_pending && !c->close_after_write && !c->lingering && !c->closing &&
           keel_buf_unread(&c->in) > 0 &&
           keel_buf_unread(&c->out) + keel_buf_unread(&c->wbuf) < srv->cfg.output_bytes_max) {
        if (!keel_http_parser_mid_message(&c->parser)) {
            c->request_start_ms = now_ms(c);
            if (srv->m.duration != NULL)
                c->request_start_ns = (uint64_t)keel_clock_now_ns();
        }
        size_t used = 0;
        int ev = keel_http_parser_feed(&c->parser, &c->msg, keel_buf_rptr(&c->in),
                                       keel_buf_unread(&c->in), &used);
        keel_buf_consume(&c->in, used);
        if (ev == KEEL_HTTP_ERROR) {
            bump(&srv->stats.parse_errors, srv->m.parse_errors);
            keel_log_debug("http request rejected", KF_INT("status", c->parser.error_status),
                           KF_STR("reason", c->parser.error_text));
            write_error(c, c->parser.error_status, c->parser.error_text, true);
            keel_buf_reset(&c->in);
            break;
        }
        if (ev == KEEL_HTTP_NEED_MORE) {
            const keel_http_msg_t *m = &c->msg;
            if (m->head_complete && m->expect_continue && !c->continue_sent &&
                m->version_minor >= 1 && m->content_length != 0) {
                c->continue_sent = true; /* RFC 9110 §10.1.1 */
                if (keel_http_write_continue(&c->out) != 0)
                    conn_close(c);
            }
            break;
        }
        c->continue_sent = false;
        dispatch(c);
    }
    c->processing = false;
    if (c->closing)
        return;
    flush(c);
    if (c->closing)
        return;
    if (c->peer_eof && !c->req_pending && !c->writing && keel_buf_unread(&c->out) == 0 &&
        !c->lingering) {
        conn_close(c); /* client finished sending and everything is answered */
        return;
    }
    bool want_read =
        !c->peer_eof && (c->lingering || (!c->close_after_write &&
                                          keel_buf_unread(&c->in) < srv->cfg.input_bytes_max));
    if (want_read && !c->reading) {
        read_start(c);
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    update_deadline(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    keel_http_conn_t *c = (keel_http_conn_t *)h;
    if (c->lingering)
        keel_buf_reset(&c->in);
    if (keel_buf_reserve(&c->in, READ_CHUNK_BYTES) != 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)keel_buf_wptr(&c->in), (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    keel_http_conn_t *c = (keel_http_conn_t *)s;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF || c->lingering || keel_http_parser_mid_message(&c->parser)) {
            conn_close(c); /* reset, linger done, or the client left mid-request */
            return;
        }
        c->peer_eof = true;
        uv_read_stop(s);
        c->reading = false;
        if (c->req_pending && c->gone_fn != NULL) { /* like nginx: EOF while waiting = abort */
            void (*fn)(keel_http_req_t *, void *) = c->gone_fn;
            c->gone_fn = NULL;
            fn(&c->req, c->gone_data);
        }
        process(c);
        return;
    }
    keel_buf_commit(&c->in, (size_t)nread);
    if (c->lingering) {
        keel_buf_reset(&c->in);
        return;
    }
    process(c);
}

static void read_start(keel_http_conn_t *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = true;
    else
        conn_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    keel_http_server_t *srv = listener->data;
    if (status != 0) { /* e.g. EMFILE: libuv sheds the connection; say so once a second */
        keel_ms_t now = keel_loop_now_ms(srv->loop);
        if (now - srv->accept_error_logged_ms >= 1000) {
            srv->accept_error_logged_ms = now;
            keel_log_warn("http accept failed", KF_STR("error", uv_strerror(status)));
        }
        return;
    }
    keel_http_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = srv;
    keel_list_init(&c->link);
    uv_tcp_init(&srv->loop->uv, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    bump(&srv->stats.connections_accepted, srv->m.accepted);
    keel_list_insert_head(&srv->conns, &c->link);
    srv->conns_count++;
    keel_http_parser_init(&c->parser, KEEL_HTTP_REQUEST, &srv->cfg.limits);
    keel_http_msg_init(&c->msg);
    keel_buf_init(&c->in, srv->cfg.input_bytes_max + READ_CHUNK_BYTES);
    keel_buf_init(&c->out, 0);
    keel_buf_init(&c->wbuf, 0);
    if (srv->conns_count > srv->cfg.connections_max || srv->draining) {
        bump(&srv->stats.connections_rejected, srv->m.rejected);
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    process(c); /* starts reading and sets the idle deadline */
}

/* ---- timers and shutdown ----------------------------------------------------------------- */

static void on_sweep(keel_timer_t *t, void *data)
{
    keel_http_server_t *srv = data;
    keel_ms_t now = keel_loop_now_ms(srv->loop);
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &srv->conns)
    {
        keel_http_conn_t *c = KEEL_LIST_ENTRY(it, keel_http_conn_t, link);
        if (c->closing || c->deadline_kind == DL_NONE || now < c->deadline_ms)
            continue;
        if (c->deadline_kind == DL_READ && !c->writing && !c->close_after_write) {
            bump(&srv->stats.timeouts, srv->m.timeouts);
            write_error(c, 408, "request timeout", true);
            c->deadline_kind = DL_NONE;
            flush(c);
            if (!c->closing && !c->lingering)
                conn_close(c);
            continue;
        }
        if (c->deadline_kind == DL_WRITE)
            bump(&srv->stats.timeouts, srv->m.timeouts);
        conn_close(c);
    }
}

static void free_routes(keel_http_server_t *srv)
{
    for (size_t i = 0; i < srv->routes_count; i++)
        free((char *)srv->routes[i].path_prefix);
    free(srv->routes);
    srv->routes = NULL;
    srv->routes_count = 0;
}

static double open_connections(void *data)
{
    return (double)((keel_http_server_t *)data)->conns_count;
}

/* Registers the server's series; labels are the caller's plus class="Nxx" for responses. */
static void register_metrics(keel_http_server_t *srv)
{
    keel_metrics_t *reg = srv->cfg.metrics;
    const char *l = srv->cfg.metrics_labels ? srv->cfg.metrics_labels : "";
    keel__http_server_metrics_t *m = &srv->m;
    m->accepted = keel_metrics_counter(reg, "keel_http_server_connections_accepted_total",
                                       "Connections accepted.", l);
    m->rejected = keel_metrics_counter(reg, "keel_http_server_connections_rejected_total",
                                       "Connections closed at once (limit or draining).", l);
    m->requests = keel_metrics_counter(reg, "keel_http_server_requests_total",
                                       "Requests dispatched or answered 404/405.", l);
    m->parse_errors = keel_metrics_counter(reg, "keel_http_server_parse_errors_total",
                                           "Requests rejected by the parser (400/413/414/431).", l);
    m->timeouts = keel_metrics_counter(reg, "keel_http_server_timeouts_total",
                                       "Read (408) and write timeouts.", l);
    for (int cls = 1; cls <= 5; cls++) {
        char labels[KEEL_METRICS_LABELS_BYTES_MAX];
        snprintf(labels, sizeof(labels), "%s%sclass=\"%dxx\"", l, l[0] ? "," : "", cls);
        m->responses[cls] = keel_metrics_counter(reg, "keel_http_server_responses_total",
                                                 "Responses by status class.", labels);
    }
    keel_metrics_gauge_fn(reg, "keel_http_server_connections_open", "Open connections.", l,
                          open_connections, srv);
    m->duration = keel_metrics_histogram(reg, "keel_http_server_request_duration_seconds",
                                         "First request byte to response queued (routed requests).",
                                         l, NULL, 0);
}

int keel_http_server_init(keel_http_server_t *srv, keel_loop_t *loop,
                          const keel_http_server_config_t *cfg, const keel_http_route_t *routes,
                          size_t routes_count, keel_errmsg_t *msg)
{
    memset(srv, 0, sizeof(*srv));
    keel_list_init(&srv->conns);
    int rc = keel_http_server_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    srv->loop = loop;
    srv->cfg = *cfg;
    srv->routes = calloc(routes_count ? routes_count : 1, sizeof(*srv->routes));
    if (srv->routes == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "routes");
    for (size_t i = 0; i < routes_count; i++) {
        assert(routes[i].handler != NULL && routes[i].path_prefix != NULL);
        srv->routes[i] = routes[i];
        srv->routes[i].path_prefix = strdup(routes[i].path_prefix);
        srv->routes_count = i + 1;
        if (srv->routes[i].path_prefix == NULL) {
            free_routes(srv);
            return keel_errf(msg, KEEL_ENOMEM, "routes");
        }
    }
    keel_timer_init(loop, &srv->sweep);
    keel_timer_init(loop, &srv->drain);
    srv->handles_open = 2;
    keel_ms_t smallest = keel_ms_min(keel_ms_min(cfg->read_timeout_ms, cfg->idle_timeout_ms),
                                     keel_ms_min(cfg->write_timeout_ms, cfg->drain_timeout_ms));
    if (cfg->linger_ms > 0)
        smallest = keel_ms_min(smallest, cfg->linger_ms);
    srv->sweep_ms = keel_ms_max(5, keel_ms_min(1000, smallest / 4));
    srv->date_unix_s = -1;
    srv->accept_error_logged_ms = INT64_MIN / 2;
    if (cfg->metrics != NULL)
        register_metrics(srv);
    return 0;
}

int keel_http_server_listen(keel_http_server_t *srv, const char *host_port, keel_errmsg_t *msg)
{
    assert(!srv->listening && !srv->draining);
    int rc =
        keel_tcp_listen(srv->loop, &srv->listener, host_port, srv->cfg.backlog, on_connection, msg);
    if (rc != 0)
        return rc;
    srv->listener.data = srv;
    srv->listening = true;
    srv->handles_open++;
    keel_timer_start(&srv->sweep, srv->sweep_ms, srv->sweep_ms, on_sweep, srv);
    return 0;
}

int keel_http_server_port(keel_http_server_t *srv)
{
    if (!srv->listening)
        return KEEL_EINVAL;
    return keel_tcp_local_port(&srv->listener);
}

static void on_handle_closed(uv_handle_t *h)
{
    keel_http_server_t *srv = h->data;
    srv->handles_open--;
    maybe_finish_shutdown(srv);
}

static void on_timer_closed(keel_timer_t *t)
{
    on_handle_closed((uv_handle_t *)&t->uv);
}

static void maybe_finish_shutdown(keel_http_server_t *srv)
{
    if (!srv->draining || srv->conns_count > 0)
        return;
    if (!uv_is_closing((uv_handle_t *)&srv->sweep.uv)) {
        srv->sweep.uv.data = srv;
        srv->drain.uv.data = srv;
        keel_timer_close(&srv->sweep, on_timer_closed);
        keel_timer_close(&srv->drain, on_timer_closed);
        return;
    }
    if (srv->handles_open > 0)
        return;
    free_routes(srv);
    if (srv->done)
        srv->done(srv, srv->done_data);
}

static void on_drain_timeout(keel_timer_t *t, void *data)
{
    keel_http_server_t *srv = data;
    keel_log_warn("http drain timeout, closing connections",
                  KF_INT("connections", (int64_t)srv->conns_count),
                  KF_INT("drain_timeout_ms", srv->cfg.drain_timeout_ms));
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &srv->conns)
    {
        keel_http_conn_t *c = KEEL_LIST_ENTRY(it, keel_http_conn_t, link);
        conn_close(c);
    }
}

static bool conn_idle(const keel_http_conn_t *c)
{
    return !c->req_pending && !c->writing && keel_buf_unread(&c->out) == 0 &&
           keel_buf_unread(&c->in) == 0 && !keel_http_parser_mid_message(&c->parser);
}

void keel_http_server_shutdown(keel_http_server_t *srv,
                               void (*done)(keel_http_server_t *srv, void *data), void *data)
{
    if (srv->draining)
        return;
    srv->draining = true;
    keel_log_info("http server draining", KF_INT("connections", (int64_t)srv->conns_count));
    srv->done = done;
    srv->done_data = data;
    if (srv->listening) {
        srv->listening = false;
        uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
    }
    keel_list_t *it, *tmp;
    KEEL_LIST_FOREACH_SAFE(it, tmp, &srv->conns)
    {
        keel_http_conn_t *c = KEEL_LIST_ENTRY(it, keel_http_conn_t, link);
        if (conn_idle(c))
            conn_close(c);
    }
    if (srv->conns_count > 0)
        keel_timer_start(&srv->drain, srv->cfg.drain_timeout_ms, 0, on_drain_timeout, srv);
    maybe_finish_shutdown(srv);
}

void keel_http_server_shutdown_hook(void *srv)
{
    keel_http_server_shutdown(srv, NULL, NULL);
}

/* ---- responding ------------------------------------------------------------------------- */

void keel_http_req_on_gone(keel_http_req_t *req, void (*fn)(keel_http_req_t *req, void *data),
                           void *data)
{
    assert(req->conn->req_pending);
    req->conn->gone_fn = fn;
    req->conn->gone_data = data;
}

void keel_http_req_on_answer(keel_http_req_t *req,
                             void (*fn)(keel_http_req_t *req, int status, void *data), void *data)
{
    assert(req->conn->req_pending);
    req->conn->answer_fn = fn;
    req->conn->answer_data = data;
}

int keel_http_req_set_response_field(keel_http_req_t *req, const char *name, const char *value)
{
    size_t n = strlen(value);
    if (n > KEEL_HTTP_EXTRA_VALUE_BYTES_MAX)
        return KEEL_ETOOBIG;
    memcpy(req->conn->extra_value, value, n + 1);
    req->conn->extra_name = name;
    return 0;
}

void keel_http_req_on_respond(keel_http_req_t *req, keel_http_respond_fn fn, void *data)
{
    assert(req->conn->req_pending);
    req->conn->respond_fn = fn;
    req->conn->respond_data = data;
}

bool keel_http_req_gone(const keel_http_req_t *req)
{
    return req->conn->closing || req->conn->peer_eof;
}

int keel_http_respond(keel_http_req_t *req, int status, const keel_http_header_t *headers,
                      size_t headers_count, const void *body, size_t body_len)
{
    keel_http_conn_t *c = req->conn;
    assert(c->req_pending && &c->req == req);
    if (c->respond_fn != NULL) { /* a filter takes the answer; it answers again, now or later */
        keel_http_respond_fn fn = c->respond_fn;
        c->respond_fn = NULL;
        return fn(req, status, headers, headers_count, body, body_len, c->respond_data);
    }
    if (c->answer_fn != NULL) { /* before anything can free the request */
        void (*fn)(keel_http_req_t *, int, void *) = c->answer_fn;
        c->answer_fn = NULL;
        fn(req, status, c->answer_data);
    }
    c->req_pending = false;
    if (c->closed) {
        conn_free(c);
        return KEEL_ECLOSED;
    }
    if (c->closing)
        return KEEL_ECLOSED;
    keel_http_server_t *srv = c->srv;
    const keel_http_msg_t *m = &c->msg;
    bool keep = m->keep_alive && !srv->draining;
    unsigned flags = keep ? (m->version_minor == 0 ? KEEL_HTTP_W_KEEPALIVE : 0) : KEEL_HTTP_W_CLOSE;
    if (m->method == HTTP_HEAD)
        flags |= KEEL_HTTP_W_HEAD;
    refresh_date(srv);
    /* the request's extra field goes after the handler's (a few fields on the stack, else a
       copy on the heap) */
    keel_http_header_t few[17], *all = NULL;
    if (c->extra_name != NULL) {
        all = headers_count < 16 ? few : malloc((headers_count + 1) * sizeof(*all));
        if (all != NULL) {
            if (headers_count > 0)
                memcpy(all, headers, headers_count * sizeof(*all));
            all[headers_count] = (keel_http_header_t){.name = c->extra_name,
                                                      .name_len = strlen(c->extra_name),
                                                      .value = c->extra_value,
                                                      .value_len = strlen(c->extra_value)};
            headers = all;
            headers_count++;
        }
        c->extra_name = NULL;
    }
    int rc = keel_http_write_response(&c->out, status, headers, headers_count, body, body_len,
                                      flags, srv->date_line);
    if (all != NULL && all != few)
        free(all);
    if (rc != 0) {
        write_error(c, 500, "response too large", true);
    } else {
        count_status(srv, status);
        if (srv->m.duration != NULL)
            keel_histogram_observe(srv->m.duration,
                                   (double)((uint64_t)keel_clock_now_ns() - c->request_start_ns) /
                                       1e9);
        if (!keep)
            c->close_after_write = true;
    }
    if (!c->processing)
        process(c);
    return rc;
}

int keel_http_respond_body(keel_http_req_t *req, int status, const char *content_type,
                           const void *body, size_t body_len)
{
    keel_http_header_t ct = {.name = "Content-Type",
                             .name_len = 12,
                             .value = content_type,
                             .value_len = strlen(content_type)};
    return keel_http_respond(req, status, &ct, 1, body, body_len);
}

int keel_http_respond_error(keel_http_req_t *req, int status, const char *message)
{
    /* the message is escaped (and cut at an escape boundary): the body is always valid JSON */
    char esc[384], body[512];
    size_t esc_len;
    keel_json_escape(esc, sizeof(esc), message, strlen(message), &esc_len);
    int n =
        snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", status, esc);
    return keel_http_respond_body(req, status, "application/json", body, (size_t)n);
}
