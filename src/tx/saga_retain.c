/* saga_retain.c - log retention: finished sagas' logs deleted cfg.log_retention_ms after
 * their last record. One pass: SCAN MATCH saga:*:log, the last record of each log read
 * (XREVRANGE key + - COUNT 1), and the logs that ended done or compensated long enough ago
 * unlinked in one command per SCAN page (one Raft entry for up to a page of logs, nothing on
 * a saga's own path). A log ending needs_attention is kept: a person has to look at it. */
#include "tx/saga_int.h"

#include "runtime/clock.h"

#include <stdlib.h>
#include <string.h>

#define SWEEP_COUNT "200"

static void sweep_step(keel_sagas_t *o);

static void sweep_end(keel_sagas_t *o)
{
    for (size_t i = 0; i < o->sweep_del_n; i++)
        free(o->sweep_del[i]);
    free(o->sweep_del);
    o->sweep_del = NULL;
    o->sweep_del_n = 0;
    o->sweeping = false;
}

static void on_unlinked(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    (void)cl;
    keel__saga_unref(o);
    if (status == 0 && v->type == KEEL_RESP_INT && v->integer > 0) {
        o->stats.logs_deleted += (uint64_t)v->integer;
        if (o->m_deleted)
            keel_counter_add(o->m_deleted, (uint64_t)v->integer);
    }
    for (size_t i = 0; i < o->sweep_del_n; i++)
        free(o->sweep_del[i]);
    o->sweep_del_n = 0;
    if (o->closing || status != 0 || strcmp(o->sweep_cursor, "0") == 0)
        sweep_end(o);
    else
        sweep_step(o);
    keel__saga_work_done(o);
}

/* Every last record of the page is in: unlink what expired, then the next page. */
static void page_done(keel_sagas_t *o)
{
    if (o->sweep_del_n > 0 && !o->closing) {
        const char **argv = malloc((o->sweep_del_n + 1) * sizeof(*argv));
        if (argv != NULL) {
            argv[0] = "UNLINK";
            for (size_t i = 0; i < o->sweep_del_n; i++)
                argv[i + 1] = o->sweep_del[i];
            int rc = keel_client_command(&o->cl, o->sweep_del_n + 1, argv, NULL, on_unlinked, o);
            free(argv);
            if (rc == 0) {
                o->handles++;
                o->work++;
                return;
            }
        }
        sweep_end(o); /* no room: the next pass tries again */
        return;
    }
    if (o->closing || strcmp(o->sweep_cursor, "0") == 0)
        sweep_end(o);
    else
        sweep_step(o);
}

typedef struct last_ctx {
    keel_sagas_t *o;
    char key[];
} last_ctx_t;

static void on_last(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    last_ctx_t *c = ctx;
    keel_sagas_t *o = c->o;
    (void)cl;
    keel__saga_unref(o);
    const keel_resp_value_t *b = NULL;
    if (status == 0 && v->type == KEEL_RESP_ARRAY && v->elems_len == 1)
        b = keel__saga_entry_record(&v->elems[0]);
    keel_saga_rec_t rec;
    keel_errmsg_t msg;
    if (b != NULL &&
        keel_saga_rec_decode((const uint8_t *)b->str.ptr, b->str.len, &rec, &msg) == 0 &&
        (rec.type == KEEL_SAGA_REC_DONE || rec.type == KEEL_SAGA_REC_COMPENSATED) &&
        rec.time_ms + o->cfg.log_retention_ms <= keel_clock_unix_ms()) {
        o->sweep_del[o->sweep_del_n++] = strdup(c->key);
        if (o->sweep_del[o->sweep_del_n - 1] == NULL)
            o->sweep_del_n--;
    }
    free(c);
    if (--o->sweep_pending == 0)
        page_done(o);
    keel__saga_work_done(o);
}

static void on_page(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_sagas_t *o = ctx;
    (void)cl;
    keel__saga_unref(o);
    if (o->closing || status != 0 || v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
        v->elems[0].type != KEEL_RESP_BULK || v->elems[1].type != KEEL_RESP_ARRAY ||
        v->elems[0].str.len >= sizeof(o->sweep_cursor)) {
        sweep_end(o); /* the next pass starts over */
        keel__saga_work_done(o);
        return;
    }
    memcpy(o->sweep_cursor, v->elems[0].str.ptr, v->elems[0].str.len);
    o->sweep_cursor[v->elems[0].str.len] = '\0';
    const keel_resp_value_t *keys = &v->elems[1];
    free(o->sweep_del);
    o->sweep_del = calloc(keys->elems_len ? keys->elems_len : 1, sizeof(char *));
    if (o->sweep_del == NULL) {
        sweep_end(o);
        keel__saga_work_done(o);
        return;
    }
    o->sweep_pending = 1; /* held until every read is sent */
    for (size_t i = 0; i < keys->elems_len; i++) {
        const keel_resp_value_t *k = &keys->elems[i];
        if (k->type != KEEL_RESP_BULK || k->str.len == 0 || k->str.len >= KEY_BYTES_MAX)
            continue;
        last_ctx_t *c = malloc(sizeof(*c) + k->str.len + 1);
        if (c == NULL)
            continue;
        c->o = o;
        memcpy(c->key, k->str.ptr, k->str.len);
        c->key[k->str.len] = '\0';
        const char *argv[] = {"XREVRANGE", c->key, "+", "-", "COUNT", "1"};
        if (keel_client_command(&o->cl, 6, argv, NULL, on_last, c) != 0) {
            free(c);
            continue;
        }
        o->sweep_pending++;
        o->handles++;
        o->work++;
    }
    if (--o->sweep_pending == 0)
        page_done(o);
    keel__saga_work_done(o);
}

static void sweep_step(keel_sagas_t *o)
{
    const char *argv[] = {"SCAN", o->sweep_cursor, "MATCH", "saga:*:log", "COUNT", SWEEP_COUNT};
    if (keel_client_command(&o->cl, 6, argv, NULL, on_page, o) != 0) {
        sweep_end(o);
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
    snprintf(o->sweep_cursor, sizeof(o->sweep_cursor), "0");
    sweep_step(o);
}
