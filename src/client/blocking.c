/* blocking.c - one RESP command and its reply, blocking: the async client on a private loop. */
#include "client/blocking.h"

#include "client/client.h"
#include "runtime/loop.h"

#include <assert.h>
#include <string.h>

typedef struct call {
    keel_client_t cl;
    keel_client_reply_t *out;
    size_t seeds_n;
    int status;
    bool done;
    int last_err;
} call_t;

int keel_client_reply_copy(const keel_resp_value_t *v, keel_client_reply_t *out)
{
    memset(out, 0, sizeof(*out));
    keel_buf_init(&out->raw, 0);
    size_t used;
    int rc = keel_resp_write_value(&out->raw, v);
    if (rc == 0)
        rc = keel_resp_parse_reply(NULL, keel_buf_rptr(&out->raw), keel_buf_unread(&out->raw),
                                   &out->v, &used, NULL);
    if (rc != 0)
        keel_client_reply_free(out);
    return rc;
}

void keel_client_reply_free(keel_client_reply_t *r)
{
    keel_resp_value_free(r->v);
    r->v = NULL;
    keel_buf_free(&r->raw);
}

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    call_t *c = ctx;
    c->status = status == 0 ? keel_client_reply_copy(v, c->out) : status;
    if (!c->done) {
        c->done = true;
        keel_client_close(cl, NULL);
    }
}

/* Gives up once every seed has refused a connection once. */
static void on_event(keel_client_t *cl, int event, int err, void *data)
{
    call_t *c = data;
    if (event == KEEL_CLIENT_UP)
        return;
    c->last_err = err;
    if (event == KEEL_CLIENT_CONNECT_ERR && keel_client_stats(cl)->connect_failures >= c->seeds_n &&
        !c->done) {
        c->done = true;
        keel_client_close(cl, NULL); /* on_reply then says KEEL_ECANCELED */
    }
}

int keel_client_call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                     keel_ms_t timeout_ms, keel_client_reply_t *out, keel_errmsg_t *msg)
{
    memset(out, 0, sizeof(*out));
    if (seeds_n > KEEL_CLIENT_SEEDS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "at most %d addresses", KEEL_CLIENT_SEEDS_MAX);
    keel_client_config_t cfg = keel_client_config_default();
    for (size_t i = 0; i < seeds_n; i++)
        cfg.seeds[i] = seeds[i];
    cfg.seeds_n = seeds_n;
    cfg.request_timeout_ms = timeout_ms;
    cfg.connect_timeout_ms = timeout_ms > 0 ? timeout_ms : cfg.connect_timeout_ms;
    cfg.requests_max = cfg.inflight_max = 1;
    cfg.on_event = on_event;
    call_t c = {.out = out, .seeds_n = seeds_n, .status = KEEL_ECANCELED};
    cfg.data = &c;
    keel_loop_t loop;
    int rc = keel_loop_init(&loop);
    if (rc != 0)
        return keel_errf(msg, rc, "event loop: %s", keel_strerror(rc));
    rc = keel_client_init(&c.cl, &loop, &cfg, msg);
    if (rc == 0) {
        rc = keel_client_command(&c.cl, argc, argv, NULL, on_reply, &c);
        assert(rc == 0); /* one free slot, nothing queued */
        keel_loop_run(&loop);
        rc = c.status;
    }
    keel_loop_close(&loop);
    if (rc == KEEL_ECANCELED) /* every seed refused */
        return keel_errf(msg, KEEL_ECONNREFUSED, "%s: %s", seeds[seeds_n - 1],
                         keel_strerror(c.last_err ? c.last_err : KEEL_ECONNREFUSED));
    if (rc != 0 && rc != KEEL_EINVAL)
        keel_errf(msg, rc, "%s: %s", keel_client_addr(&c.cl), keel_strerror(rc));
    return rc;
}
