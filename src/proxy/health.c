/* health.c - active health checks: HTTP and TCP probes, healthy/unhealthy thresholds. */
#include "proxy/health.h"

#include "runtime/tcp.h"

#include <http_parser.h>
#include <stdlib.h>
#include <uv.h>

/* A TCP probe: connect, then close; a timer bounds the whole. */
typedef struct tcp_probe {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_timer_t timer;
    int open; /* handles not yet closed */
    int err;
    bool done;
    keel_proxy_probe_fn fn;
    void *data;
} tcp_probe_t;

static void probe_closed(uv_handle_t *h)
{
    tcp_probe_t *t = h->data;
    if (--t->open > 0)
        return;
    t->fn(t->err, 0, t->data);
    free(t);
}

static void probe_end(tcp_probe_t *t, int err)
{
    if (t->done)
        return;
    t->done = true;
    t->err = err;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, probe_closed);
    uv_close((uv_handle_t *)&t->tcp, probe_closed); /* a pending connect ends ECANCELED */
}

static void on_connect(uv_connect_t *req, int status)
{
    tcp_probe_t *t = req->data;
    probe_end(t, status == 0 ? 0 : keel_uv_err(status));
}

static void on_timeout(uv_timer_t *timer)
{
    probe_end(timer->data, KEEL_ETIMEDOUT);
}

static int tcp_probe(keel_loop_t *loop, const char *address, keel_ms_t timeout_ms,
                     keel_proxy_probe_fn fn, void *data)
{
    struct sockaddr_storage addr;
    int rc = keel_tcp_parse_addr(address, &addr, NULL);
    if (rc != 0)
        return rc;
    tcp_probe_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return KEEL_ENOMEM;
    t->fn = fn;
    t->data = data;
    uv_tcp_init(&loop->uv, &t->tcp);
    uv_timer_init(&loop->uv, &t->timer);
    t->tcp.data = t->timer.data = t->req.data = t;
    t->open = 2;
    uv_timer_start(&t->timer, on_timeout, (uint64_t)timeout_ms, 0);
    rc = uv_tcp_connect(&t->req, &t->tcp, (const struct sockaddr *)&addr, on_connect);
    if (rc != 0)
        probe_end(t, keel_uv_err(rc)); /* fn runs from the close callbacks */
    return 0;
}

typedef struct http_probe {
    keel_proxy_probe_fn fn;
    void *data;
} http_probe_t;

static void http_done(int err, const keel_http_msg_t *resp, void *data)
{
    http_probe_t hp = *(http_probe_t *)data;
    free(data);
    hp.fn(err, err == 0 ? resp->status : 0, hp.data);
}

int keel_proxy_probe(keel_loop_t *loop, keel_http_client_t *cli, const char *address,
                     const keel_proxy_health_t *h, keel_proxy_probe_fn fn, void *data)
{
    if (h->tcp)
        return tcp_probe(loop, address, h->timeout_ms, fn, data);
    if (cli == NULL)
        return KEEL_EINVAL;
    http_probe_t *hp = malloc(sizeof(*hp));
    if (hp == NULL)
        return KEEL_ENOMEM;
    *hp = (http_probe_t){fn, data};
    keel_http_client_request_t rq = {HTTP_GET, address, h->path, NULL, 0, NULL, 0, h->timeout_ms};
    int rc = keel_http_client_request(cli, &rq, http_done, hp, NULL);
    if (rc != 0)
        free(hp);
    return rc;
}

bool keel_proxy_probe_passed(int err, int status)
{
    return err == 0 && (status == 0 || (status >= 200 && status < 300));
}

bool keel_proxy_probe_warning(int err, int status)
{
    return err == 0 && status == 429;
}

int keel_proxy_health_judge(const keel_proxy_health_t *h, bool passed, uint32_t *ok_run,
                            uint32_t *fail_run, bool *healthy)
{
    if (passed) {
        (*ok_run)++;
        *fail_run = 0;
        if (!*healthy && *ok_run >= h->healthy_threshold) {
            *healthy = true;
            return 1;
        }
    } else {
        (*fail_run)++;
        *ok_run = 0;
        if (*healthy && *fail_run >= h->unhealthy_threshold) {
            *healthy = false;
            return -1;
        }
    }
    return 0;
}
