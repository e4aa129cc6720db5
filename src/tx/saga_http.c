/* saga_http.c - saga steps through the kit: an HTTP call per step (tx/saga.h's
   keel_saga_http_step and keel_saga_http_undo). */
#include "tx/saga_int.h"

#include "kit/call.h"

#include <http_parser.h>
#include <string.h>

static void http_done(int err, const keel_http_msg_t *resp, void *data)
{
    keel_saga_call_t *c = data;
    if (err != 0) {
        const char *why = keel_strerror(err);
        keel_saga_call_done(c, KEEL_SAGA_TRANSIENT, why, strlen(why));
        return;
    }
    int st = resp->status;
    keel_saga_outcome_t out = KEEL_SAGA_TRANSIENT;
    if (st >= 200 && st < 300)
        out = KEEL_SAGA_OK;
    else if (!c->undo && st >= 400 && st < 500 && st != 408 && st != 409 && st != 425 && st != 429)
        out = KEEL_SAGA_BUSINESS;
    keel_saga_call_done(c, out, resp->body, resp->body_len);
}

static void http_call(keel_saga_call_t *c, struct keel_caller *caller, const char *path)
{
    keel_http_header_t hdr[2] = {
        {.name = "Idempotency-Key", .name_len = 15, .value = c->key, .value_len = strlen(c->key)},
        {.name = "X-Keel-Saga",
         .name_len = 11,
         .value = c->saga_id,
         .value_len = strlen(c->saga_id)},
    };
    keel_call_t call = {.method = HTTP_POST,
                        .target = path,
                        .headers = hdr,
                        .headers_count = 2,
                        .body = c->input,
                        .body_len = c->input_len,
                        .deadline_ms = keel_loop_now_ms(c->loop) + c->timeout_ms,
                        .idempotent = true};
    int rc = keel_caller_call(caller, &call, http_done, c);
    if (rc != 0) {
        const char *why = keel_strerror(rc);
        keel_saga_call_done(c, KEEL_SAGA_TRANSIENT, why, strlen(why));
    }
}

void keel_saga_http_step(keel_saga_call_t *call, void *data)
{
    const keel_saga_http_t *h = data;
    http_call(call, h->caller, h->path);
}

void keel_saga_http_undo(keel_saga_call_t *call, void *data)
{
    const keel_saga_http_t *h = data;
    http_call(call, h->undo_caller ? h->undo_caller : h->caller, h->undo_path);
}
