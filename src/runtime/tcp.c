/* tcp.c - TCP listener helpers and a connector that reconnects with jittered exponential backoff.
 */
#include "runtime/tcp.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int keel_tcp_parse_addr(const char *host_port, struct sockaddr_storage *out, keel_errmsg_t *msg)
{
    char host[128];
    const char *colon = strrchr(host_port, ':');
    if (colon == NULL)
        return keel_errf(msg, KEEL_EINVAL, "address '%s' has no ':port'", host_port);
    size_t hlen = (size_t)(colon - host_port);
    if (hlen >= sizeof(host))
        return keel_errf(msg, KEEL_EINVAL, "host in '%s' too long", host_port);
    memcpy(host, host_port, hlen);
    host[hlen] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != 0 || end == colon + 1 || port < 0 || port > 65535)
        return keel_errf(msg, KEEL_EINVAL, "bad port in '%s'", host_port);
    memset(out, 0, sizeof(*out));
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host[hlen - 1] = 0;
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) != 0)
            return keel_errf(msg, KEEL_EINVAL, "bad IPv6 address in '%s'", host_port);
        return 0;
    }
    const char *ip = hlen == 0 ? "0.0.0.0" : strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)out) != 0)
        return keel_errf(msg, KEEL_EINVAL, "bad IPv4 address in '%s'", host_port);
    return 0;
}

int keel_tcp_listen(keel_loop_t *l, uv_tcp_t *srv, const char *host_port, int backlog,
                    uv_connection_cb on_connection, keel_errmsg_t *msg)
{
    struct sockaddr_storage ss;
    int rc = keel_tcp_parse_addr(host_port, &ss, msg);
    if (rc != 0)
        return rc;
    rc = uv_tcp_init(&l->uv, srv);
    if (rc != 0)
        return keel_errf(msg, keel_uv_err(rc), "uv_tcp_init: %s", uv_strerror(rc));
    rc = uv_tcp_bind(srv, (const struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)srv, backlog, on_connection);
    if (rc != 0) {
        uv_close((uv_handle_t *)srv, NULL);
        return keel_errf(msg, keel_uv_err(rc), "listen on %s: %s", host_port, uv_strerror(rc));
    }
    return 0;
}

int keel_tcp_listen_reuseport(keel_loop_t *l, uv_tcp_t *srv, const struct sockaddr *sa, int backlog,
                              uv_connection_cb on_connection, keel_errmsg_t *msg)
{
    socklen_t len =
        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return keel_errf(msg, keel_uv_err(-errno), "socket: %s", strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, sa, len) != 0) {
        int e = errno;
        close(fd);
        return keel_errf(msg, keel_uv_err(-e), "bind with SO_REUSEPORT: %s", strerror(e));
    }
    int rc = uv_tcp_init(&l->uv, srv);
    if (rc != 0) {
        close(fd);
        return keel_errf(msg, keel_uv_err(rc), "uv_tcp_init: %s", uv_strerror(rc));
    }
    rc = uv_tcp_open(srv, fd); /* the handle owns fd from here: uv_close closes it */
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)srv, backlog, on_connection);
    if (rc != 0) {
        if (uv_fileno((uv_handle_t *)srv, &(uv_os_fd_t){0}) != 0)
            close(fd); /* uv_tcp_open failed: fd is still ours */
        uv_close((uv_handle_t *)srv, NULL);
        return keel_errf(msg, keel_uv_err(rc), "listen: %s", uv_strerror(rc));
    }
    return 0;
}

int keel_tcp_local_port(const uv_tcp_t *h)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    int rc = uv_tcp_getsockname(h, (struct sockaddr *)&ss, &len);
    if (rc != 0)
        return keel_uv_err(rc);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

keel_ms_t keel_backoff_delay_ms(const keel_backoff_config_t *cfg, unsigned attempt,
                                keel_rand_t *rand)
{
    assert(cfg->base_ms > 0 && cfg->max_ms >= cfg->base_ms);
    keel_ms_t cap = cfg->base_ms;
    for (unsigned i = 0; i < attempt && cap < cfg->max_ms; i++)
        cap *= 2;
    if (cap > cfg->max_ms)
        cap = cfg->max_ms;
    return cap / 2 + (keel_ms_t)keel_rand_below(rand, (uint64_t)(cap - cap / 2) + 1);
}

keel_connector_config_t keel_connector_config_default(void)
{
    keel_connector_config_t cfg = {
        .backoff = {.base_ms = 100, .max_ms = 10000},
        .connect_timeout_ms = 3000,
        .seed = 1,
    };
    return cfg;
}

int keel_connector_config_validate(const keel_connector_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->backoff.base_ms <= 0 || cfg->backoff.max_ms < cfg->backoff.base_ms)
        return keel_errf(msg, KEEL_EINVAL, "backoff needs 0 < base_ms <= max_ms");
    if (cfg->connect_timeout_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "connect_timeout_ms must be > 0");
    return 0;
}

int keel_connector_init(keel_connector_t *c, keel_loop_t *l, const char *host_port,
                        const keel_connector_config_t *cfg, const keel_connector_callbacks_t *cb,
                        void *data, keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    int rc = keel_connector_config_validate(cfg, msg);
    if (rc == 0)
        rc = keel_tcp_parse_addr(host_port, &c->addr, msg);
    if (rc != 0)
        return rc;
    assert(cb->connected != NULL);
    c->loop = l;
    c->cfg = *cfg;
    c->cb = *cb;
    c->data = data;
    keel_rand_seed(&c->rand, cfg->seed);
    rc = keel_timer_init(l, &c->timer);
    if (rc != 0)
        return rc;
    c->state = KEEL_CONN_IDLE;
    return 0;
}

static void attempt(keel_connector_t *c);

static void on_backoff_done(keel_timer_t *t, void *data)
{
    attempt(data);
}

static void maybe_finish_close(keel_connector_t *c);

/* The tcp handle is closed: either schedule the next attempt or finish closing. */
static void on_tcp_closed(uv_handle_t *h)
{
    keel_connector_t *c = h->data;
    c->tcp_open = false;
    if (c->state == KEEL_CONN_CLOSING) {
        maybe_finish_close(c);
        return;
    }
    keel_ms_t delay_ms = keel_backoff_delay_ms(&c->cfg.backoff, c->attempt, &c->rand);
    c->attempt++;
    c->state = KEEL_CONN_BACKOFF;
    if (c->cb.failed)
        c->cb.failed(c, c->last_err, delay_ms, c->data);
    if (c->state == KEEL_CONN_BACKOFF)
        keel_timer_start(&c->timer, delay_ms, 0, on_backoff_done, c);
}

static void drop(keel_connector_t *c, int err)
{
    c->last_err = err;
    keel_timer_stop(&c->timer);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    keel_connector_t *c = req->data;
    if (c->state == KEEL_CONN_CLOSING)
        return; /* close() already closed the handle */
    if (status != 0) {
        drop(c, c->timed_out ? KEEL_ETIMEDOUT : keel_uv_err(status));
        return;
    }
    keel_timer_stop(&c->timer);
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = KEEL_CONN_CONNECTED;
    c->attempt = 0;
    c->connects++;
    c->cb.connected(c, c->data);
}

static void on_connect_timeout(keel_timer_t *t, void *data)
{
    keel_connector_t *c = data;
    c->timed_out = true;
    drop(c, KEEL_ETIMEDOUT); /* closing cancels the connect request */
}

static void attempt(keel_connector_t *c)
{
    c->state = KEEL_CONN_CONNECTING;
    c->timed_out = false;
    uv_tcp_init(&c->loop->uv, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->req.data = c;
    int rc = uv_tcp_connect(&c->req, &c->tcp, (const struct sockaddr *)&c->addr, on_connect);
    if (rc != 0) {
        drop(c, keel_uv_err(rc));
        return;
    }
    keel_timer_start(&c->timer, c->cfg.connect_timeout_ms, 0, on_connect_timeout, c);
}

int keel_connector_start(keel_connector_t *c)
{
    assert(c->state == KEEL_CONN_IDLE);
    attempt(c);
    return 0;
}

void keel_connector_lost(keel_connector_t *c)
{
    if (c->state != KEEL_CONN_CONNECTED)
        return;
    c->state = KEEL_CONN_CONNECTING; /* becomes BACKOFF once the handle is closed */
    drop(c, KEEL_ECONNRESET);
}

static void on_timer_closed(keel_timer_t *t)
{
    keel_connector_t *c = t->data;
    c->timer.data = NULL;
    maybe_finish_close(c);
}

static void maybe_finish_close(keel_connector_t *c)
{
    if (c->tcp_open || c->timer.data != NULL)
        return;
    c->state = KEEL_CONN_CLOSED;
    if (c->closed)
        c->closed(c);
}

void keel_connector_close(keel_connector_t *c, void (*closed)(keel_connector_t *c))
{
    assert(c->state != KEEL_CONN_CLOSING && c->state != KEEL_CONN_CLOSED);
    c->state = KEEL_CONN_CLOSING;
    c->closed = closed;
    c->timer.data = c; /* marks "timer still open" until its close callback */
    keel_timer_close(&c->timer, on_timer_closed);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}
