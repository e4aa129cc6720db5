/* tx/twopc_http.c - two-phase commit's participants over HTTP: the server side and the
 * caller (tx/twopc.h). */
#include "tx/twopc_int.h"

#include "kit/call.h"
#include "kit/service.h"

#include <stdio.h>
#include <string.h>

/* ---- participants over HTTP ---------------------------------------------------------------- */

keel_loop_t *keel_twopcs_loop(keel_twopcs_t *t)
{
    return &t->loop;
}

#define TWOPC_ID_HEADER "x-keel-2pc-id"

static void serve_one(keel_service_req_t *req, void *data)
{
    const keel_twopc_route_t *route = data;
    keel_twopc_server_t *srv = route->srv;
    keel_twopc_msg_t m = route->msg;
    const keel_http_msg_t *hm = req->http->msg;
    size_t n = 0;
    const char *v = keel_http_msg_header(hm, TWOPC_ID_HEADER, &n);
    char id[KEEL_TWOPC_ID_BYTES_MAX + 1];
    if (v == NULL || n == 0 || n > KEEL_TWOPC_ID_BYTES_MAX) {
        keel_http_respond_error(req->http, 400, "missing or long " TWOPC_ID_HEADER);
        return;
    }
    memcpy(id, v, n);
    id[n] = '\0';
    if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX) ||
        hm->body_len > KEEL_TWOPC_INPUT_BYTES_MAX) {
        keel_http_respond_error(req->http, 400, "bad transaction id or input");
        return;
    }
    int err;
    keel_twopc_reply_t r = keel__twopc_part_message(&srv->cfg, keel_rand_u64(&srv->rand), &srv->p,
                                                    id, m, hm->body, hm->body_len, &err);
    const char *word = r == KEEL_TWOPC_REPLY_YES   ? "yes"
                       : r == KEEL_TWOPC_REPLY_NO  ? "no"
                       : r == KEEL_TWOPC_REPLY_ACK ? "ack"
                                                   : NULL;
    if (word)
        keel_http_respond_body(req->http, 200, "text/plain", word, strlen(word));
    else if (err == KEEL_EPROTO)
        keel_http_respond_error(req->http, 409, "decision contradicts the participant's state");
    else
        keel_http_respond_error(req->http, 503, "participant call failed");
}

int keel_twopc_serve(keel_twopc_server_t *srv, keel_service_t *svc, const char *prefix,
                     keel_twopc_participant_t p, const keel_twopc_config_t *cfg, keel_errmsg_t *msg)
{
    memset(srv, 0, sizeof(*srv));
    if (p.ops == NULL || p.ops->message || !p.ops->prepare || !p.ops->commit || !p.ops->abort ||
        !p.ops->state || strlen(prefix) > 48)
        return keel_errf(msg, KEEL_EINVAL, "2pc serve: a local participant and a short prefix");
    srv->p = p;
    srv->cfg = *cfg;
    keel_rand_seed(&srv->rand, (uint64_t)keel_clock_now_ns());
    static const char *const names[3] = {"prepare", "commit", "abort"};
    for (int i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof(path), "%s/%s", prefix, names[i]);
        srv->routes[i].srv = srv;
        srv->routes[i].msg = (keel_twopc_msg_t)(KEEL_TWOPC_MSG_PREPARE + i);
        int rc = keel_service_route(svc, "POST", path, serve_one, &srv->routes[i], msg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

typedef struct http_res {
    bool done;
    keel_twopc_reply_t reply;
} http_res_t;

static void http_answered(int err, const keel_http_msg_t *resp, void *data)
{
    http_res_t *r = data;
    r->done = true;
    r->reply = 0;
    if (err != 0 || resp->status != 200)
        return;
    if (resp->body_len == 3 && memcmp(resp->body, "yes", 3) == 0)
        r->reply = KEEL_TWOPC_REPLY_YES;
    else if (resp->body_len == 2 && memcmp(resp->body, "no", 2) == 0)
        r->reply = KEEL_TWOPC_REPLY_NO;
    else if (resp->body_len == 3 && memcmp(resp->body, "ack", 3) == 0)
        r->reply = KEEL_TWOPC_REPLY_ACK;
}

static keel_twopc_reply_t http_message(void *data, const char *id, keel_twopc_msg_t m,
                                       const uint8_t *input, size_t len)
{
    keel_twopc_http_t *h = data;
    char target[96];
    snprintf(target, sizeof(target), "%s/%s", h->prefix, keel_twopc_msg_name(m));
    keel_http_header_t hdr = {.name = TWOPC_ID_HEADER,
                              .name_len = strlen(TWOPC_ID_HEADER),
                              .value = id,
                              .value_len = strlen(id)};
    /* idempotent: every message is, by transaction id (the participant machine answers a
     * repeat with the first answer) */
    keel_call_t c = {.method = HTTP_POST,
                     .target = target,
                     .headers = &hdr,
                     .headers_count = 1,
                     .body = input,
                     .body_len = len,
                     .idempotent = true};
    http_res_t r = {0};
    if (keel_caller_call(h->caller, &c, http_answered, &r) != 0)
        return 0;
    while (!r.done)
        uv_run(&h->loop->uv, UV_RUN_ONCE);
    return r.reply;
}

keel_twopc_participant_t keel_twopc_http_participant(keel_twopc_http_t *h, const char *name,
                                                     keel_caller_t *caller, keel_loop_t *loop,
                                                     const char *prefix)
{
    memset(h, 0, sizeof(*h));
    h->caller = caller;
    h->loop = loop;
    snprintf(h->prefix, sizeof(h->prefix), "%s", prefix);
    h->ops.message = http_message;
    return (keel_twopc_participant_t){.name = name, .ops = &h->ops, .data = h};
}
