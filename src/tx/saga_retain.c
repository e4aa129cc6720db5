/* saga_retain.c - log retention: finished sagas' logs deleted cfg.log_retention_ms after
 * their end. A saga that ends done or compensated while a retention is set is indexed in its
 * end's entry (ZADD saga:ended <end ms> <id>, saga_log.c); a pass reads the index's due part,
 * a page at a time (ZRANGEBYSCORE saga:ended -inf <now - retention> LIMIT 0 200), and unlinks
 * the page's logs and their index members in one entry (KEEL.TXN: UNLINK | ZREM), so a pass
 * costs what is due, not what is kept. A log ending needs_attention is not indexed: a person
 * has to look at it. */
#include "tx/saga_int.h"

#include "client/args.h"
#include "runtime/clock.h"
#include "tx/retain.h"

#include <string.h>

static void sweep_step(keel_sagas_t *o);

static void on_unlinked(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    (void)cl;
    keel__saga_unref(o);
    bool ok = status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == 2 &&
              v->elems[0].type == KEEL_RESP_INT;
    if (ok && v->elems[0].integer > 0) {
        o->stats.logs_deleted += (uint64_t)v->elems[0].integer;
        if (o->m_deleted)
            keel_counter_add(o->m_deleted, (uint64_t)v->elems[0].integer);
    }
    if (ok && o->sweep_more && !o->closing)
        sweep_step(o); /* a full page: more may be due */
    else
        o->sweeping = false; /* done, or failed: the next pass tries again */
    keel__saga_work_done(o);
}

/* One page of due ids: their logs and their index members go in one entry. */
static void on_due(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    (void)cl;
    keel__saga_unref(o);
    if (o->closing || status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len == 0) {
        o->sweeping = false;
        keel__saga_work_done(o);
        return;
    }
    keel_args_t a;
    keel_args_init(&a, 8 + 2 * v->elems_len, 0);
    keel_retain_page_args(&a, ENDED_KEY, "saga:", v, KEY_BYTES_MAX);
    o->sweep_more = v->elems_len >= KEEL_RETAIN_PAGE;
    int rc = keel_args_resolve(&a) == 0
                 ? keel_client_command(&o->cl, a.n, a.ptrs, a.lens, on_unlinked, o)
                 : KEEL_ENOMEM;
    keel_args_free(&a);
    if (rc == 0) {
        o->handles++;
        o->work++;
    } else {
        o->sweeping = false;
    }
    keel__saga_work_done(o);
}

static void sweep_step(keel_sagas_t *o)
{
    keel_args_t a;
    keel_args_init(&a, 8, 0);
    keel_retain_due_args(&a, ENDED_KEY, keel_clock_unix_ms() - o->cfg.log_retention_ms);
    int rc = keel_args_resolve(&a) == 0
                 ? keel_client_command(&o->cl, a.n, a.ptrs, a.lens, on_due, o)
                 : KEEL_ENOMEM;
    keel_args_free(&a);
    if (rc != 0) {
        o->sweeping = false;
        return;
    }
    o->handles++;
    o->work++;
}

void keel__saga_retain_tick(keel_sagas_t *o)
{
    keel_ms_t now = keel_clock_unix_ms(), ret = o->cfg.log_retention_ms;
    if (ret <= 0 || o->sweeping || o->closing || now < o->sweep_next_ms)
        return;
    o->sweep_next_ms = now + (ret / 4 < 60000 ? ret / 4 : 60000);
    o->sweeping = true;
    sweep_step(o);
}
