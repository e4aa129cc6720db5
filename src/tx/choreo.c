/* choreo.c - a choreographed saga's participant on the loop: consumer group in, inbox and
 * outbox around each handler, relay out (choreo.h). */
#include "tx/choreo.h"

#include "base/log.h"
#include "tx/inbox.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

enum {
    OUT_APPLIED,
    OUT_REFUSED,
    OUT_COMPENSATED,
    OUT_DUPLICATE,
    OUT_IGNORED,
    OUT_MALFORMED,
    OUT_DEAD,
    OUTCOMES
};
static const char *const outcome_names[OUTCOMES] = {
    "applied", "refused", "compensated", "duplicate", "ignored", "malformed", "dead_lettered"};

int keel_choreo_emit(keel_db_t *db, const char *stream, const char *type, const char *saga,
                     const void *data, size_t data_len, keel_errmsg_t *msg)
{
    uint8_t buf[KEEL_CHOREO_EVENT_BYTES_MAX];
    size_t n = keel_choreo_event_encode(type, saga, data, data_len, buf, sizeof(buf));
    if (n == 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "choreo emit: bad type '%s' or saga id '%s', or data over %u bytes", type,
                         saga, KEEL_CHOREO_DATA_BYTES_MAX);
    return keel_outbox_add(db, stream, buf, n, NULL, msg);
}

keel_choreo_config_t keel_choreo_config_default(void)
{
    keel_choreo_config_t c;
    memset(&c, 0, sizeof(c));
    c.def.attempts_max = 5;
    c.def.backoff_base_ms = 50;
    c.def.backoff_cap_ms = 2000;
    c.def.retry_for_ms = 60000;
    c.batch_entries_max = 64;
    c.block_ms = 200;
    c.claim_idle_ms = 5000;
    c.claim_interval_ms = 1000;
    c.request_timeout_ms = 5000;
    c.relay_poll_ms = 20;
    return c;
}

static int config_check(const keel_choreo_config_t *cfg, keel_errmsg_t *msg)
{
    int rc = keel_choreo_def_validate(&cfg->def, msg);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < cfg->def.rules_n; i++)
        if (cfg->handlers[i] == NULL)
            return keel_errf(msg, KEEL_EINVAL, "choreo %s: rule %zu (on %s) has no handler",
                             cfg->def.name, i, cfg->def.rules[i].on);
    if (cfg->db == NULL || cfg->servers == NULL || cfg->stream == NULL || cfg->stream[0] == '\0' ||
        strlen(cfg->stream) > KEEL_OUTBOX_STREAM_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: db, servers and a stream are required",
                         cfg->def.name);
    if (cfg->consumer == NULL || !keel_choreo_saga_valid(cfg->consumer) ||
        strlen(cfg->consumer) > KEEL_CHOREO_NAME_BYTES_MAX * 2)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: bad consumer name", cfg->def.name);
    if (cfg->batch_entries_max == 0 || cfg->batch_entries_max > KEEL_CHOREO_BATCH_ENTRIES_MAX ||
        cfg->block_ms <= 0 || cfg->claim_idle_ms <= 0 || cfg->claim_interval_ms <= 0 ||
        cfg->request_timeout_ms <= 0 || cfg->relay_poll_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL,
                         "choreo %s: batch_entries_max 1..%u and positive times are required",
                         cfg->def.name, KEEL_CHOREO_BATCH_ENTRIES_MAX);
    return 0;
}

static void metrics_register(keel_choreo_t *c)
{
    keel_metrics_t *m = c->cfg.metrics;
    if (m == NULL)
        return;
    char l[KEEL_METRICS_LABELS_BYTES_MAX], who[96];
    keel_metrics_label_escape(who, sizeof(who), c->cfg.def.name);
    for (int i = 0; i < OUTCOMES; i++) {
        snprintf(l, sizeof(l), "participant=\"%s\",outcome=\"%s\"", who, outcome_names[i]);
        c->m_events[i] = keel_metrics_counter(
            m, "keel_choreo_events_total", "Saga events this participant handled, by outcome.", l);
    }
    snprintf(l, sizeof(l), "participant=\"%s\"", who);
    c->m_retries = keel_metrics_counter(m, "keel_choreo_retries_total",
                                        "Handler attempts that failed and will be retried.", l);
    c->m_claimed = keel_metrics_counter(m, "keel_choreo_claimed_total",
                                        "Entries taken over from other consumers (XAUTOCLAIM).", l);
}

int keel_choreo_init(keel_choreo_t *c, keel_loop_t *loop, const keel_choreo_config_t *cfg,
                     keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    int rc = config_check(cfg, msg);
    if (rc != 0)
        return rc;
    c->cfg = *cfg;
    c->loop = loop;
    snprintf(c->stream, sizeof(c->stream), "%s", cfg->stream);
    snprintf(c->consumer, sizeof(c->consumer), "%s", cfg->consumer);
    snprintf(c->dlq, sizeof(c->dlq), "%s" KEEL_CHOREO_DLQ_SUFFIX, cfg->stream);
    snprintf(c->attention, sizeof(c->attention), "%s" KEEL_CHOREO_ATTENTION_SUFFIX, cfg->stream);
    c->cfg.stream = c->stream;
    c->cfg.consumer = c->consumer;
    keel_rand_seed(&c->rand, cfg->seed);
    if ((rc = keel_inbox_init(cfg->db, msg)) != 0 || (rc = keel_outbox_init(cfg->db, msg)) != 0)
        return rc;
    keel_outbox_relay_config_t rc_cfg = keel_outbox_relay_config_default();
    rc_cfg.db = cfg->db;
    rc_cfg.servers = cfg->servers;
    rc_cfg.producer = cfg->producer ? cfg->producer : cfg->def.name;
    rc_cfg.poll_ms = cfg->relay_poll_ms;
    rc_cfg.seed = cfg->seed ^ 0x9e3779b97f4a7c15ull;
    rc_cfg.metrics = cfg->metrics;
    snprintf(c->relay_labels, sizeof(c->relay_labels), "choreo=\"%s\"", cfg->def.name);
    rc_cfg.metrics_labels = c->relay_labels; /* the def's name needs no escaping */
    keel_client_config_t cc = keel_client_config_default();
    snprintf(c->seeds_text, sizeof(c->seeds_text), "%s", cfg->servers);
    if ((rc = keel_client_config_seeds(&cc, c->seeds_text, "choreo servers", msg)) != 0)
        return rc;
    cc.request_timeout_ms = cfg->request_timeout_ms;
    cc.seed = cfg->seed;
    if ((rc = keel_outbox_relay_init(&c->relay, loop, &rc_cfg, msg)) != 0)
        return rc;
    if ((rc = keel_client_init(&c->client, loop, &cc, msg)) != 0) {
        keel_outbox_relay_close(&c->relay, NULL);
        return rc;
    }
    keel_timer_init(loop, &c->wait);
    keel_timer_init(loop, &c->claim);
    keel_buf_init(&c->out, KEEL_CHOREO_DATA_BYTES_MAX);
    c->handles_open = 4;
    snprintf(c->claim_cursor, sizeof(c->claim_cursor), "0-0");
    metrics_register(c);
    return 0;
}

const keel_choreo_stats_t *keel_choreo_stats(const keel_choreo_t *c)
{
    return &c->stats;
}

void keel_choreo_kick(keel_choreo_t *c)
{
    if (c->started && !c->closing)
        keel_outbox_relay_kick(&c->relay);
}

static void count(keel_choreo_t *c, int outcome)
{
    uint64_t *s[OUTCOMES] = {&c->stats.applied,      &c->stats.refused, &c->stats.compensated,
                             &c->stats.duplicates,   &c->stats.ignored, &c->stats.malformed,
                             &c->stats.dead_lettered};
    (*s[outcome])++;
    if (c->m_events[outcome])
        keel_counter_inc(c->m_events[outcome]);
}

/* ---- one event ------------------------------------------------------------------------- */

typedef enum { EV_ACK, EV_RETRY, EV_DEAD } ev_result_t;

/* The value of field `name` in an entry's field array, or NULL. */
static const keel_resp_value_t *field(const keel_resp_value_t *fields, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + 1 < fields->elems_len; i += 2)
        if (fields->elems[i].str.len == n && memcmp(fields->elems[i].str.ptr, name, n) == 0)
            return &fields->elems[i + 1];
    return NULL;
}

/* BEGIN; claim; then run fn (when given) and emit. 0 committed, KEEL_EEXISTS a duplicate
 * (committed, nothing else done), or the failure of the handler or of the database (rolled
 * back: nothing of the attempt is left). */
static int transact(keel_choreo_t *c, const keel_resp_value_t *mid, const keel_choreo_event_t *ev,
                    keel_choreo_fn fn, const char *emit, keel_errmsg_t *msg)
{
    keel_db_t *db = c->cfg.db;
    int rc = keel_db_begin(db, msg);
    if (rc != 0)
        return rc;
    rc = keel_inbox_claim(db, c->cfg.def.name, mid->str.ptr, mid->str.len, msg);
    if (rc == KEEL_EEXISTS) {
        int crc = keel_db_commit(db, msg);
        return crc == 0 ? KEEL_EEXISTS : crc;
    }
    keel_buf_reset(&c->out);
    if (rc == 0 && fn != NULL)
        rc = fn(db, ev, &c->out, c->cfg.handler_data, msg);
    if (rc == 0 && emit != NULL) {
        bool forward = fn == NULL || keel_buf_unread(&c->out) == 0;
        rc = keel_choreo_emit(db, c->stream, emit, ev->saga,
                              forward ? ev->data : keel_buf_rptr(&c->out),
                              forward ? ev->data_len : keel_buf_unread(&c->out), msg);
    }
    if (rc == 0)
        rc = keel_db_commit(db, msg);
    if (rc != 0 && keel_db_in_tx(db))
        keel_db_rollback(db);
    return rc;
}

static ev_result_t handle_event(keel_choreo_t *c, const char *entry_id,
                                const keel_resp_value_t *mid, const keel_choreo_event_t *ev,
                                const keel_choreo_rule_t *r)
{
    size_t ri = (size_t)(r - c->cfg.def.rules);
    bool again = strcmp(c->fail_id, entry_id) == 0;
    uint32_t attempts = again ? c->fail_attempts + 1 : 1;
    keel_ms_t now = keel_loop_now_ms(c->loop);
    keel_ms_t failing_ms = again && now > c->fail_since_ms ? now - c->fail_since_ms : 0;
    keel_errmsg_t msg = {{0}};
    int rc = transact(c, mid, ev, c->cfg.handlers[ri], r->emit_ok, &msg);
    if (rc == KEEL_EEXISTS) {
        count(c, OUT_DUPLICATE);
        return EV_ACK;
    }
    keel_choreo_verdict_t v = keel_choreo_verdict(&c->cfg.def, r, rc, attempts, failing_ms);
    if (v == KEEL_CHOREO_COMMIT_FAIL) {
        /* the effect was rolled back; the refusal and its event are committed with the claim */
        keel_log_info("choreo: action refused", KF_STR("participant", c->cfg.def.name),
                      KF_STR("saga", ev->saga), KF_STR("event", ev->type),
                      KF_STR("reason", msg.text), KF_INT("attempts", attempts));
        keel_errmsg_t m2 = {{0}};
        rc = transact(c, mid, ev, NULL, r->emit_fail, &m2);
        if (rc == KEEL_EEXISTS) {
            count(c, OUT_DUPLICATE);
            return EV_ACK;
        }
        if (rc == 0) {
            count(c, OUT_REFUSED);
            if (c->cfg.on_committed)
                c->cfg.on_committed(c, entry_id, ev, c->cfg.hook_data);
            return EV_ACK;
        }
        snprintf(msg.text, sizeof(msg.text), "%s", m2.text);
        v = keel_choreo_retry_expired(&c->cfg.def, r, failing_ms) ? KEEL_CHOREO_DEAD_LETTER
                                                                  : KEEL_CHOREO_RETRY;
    }
    if (v == KEEL_CHOREO_DEAD_LETTER) {
        keel_log_error("choreo: giving an event up: dead-lettered, saga needs attention",
                       KF_STR("participant", c->cfg.def.name), KF_STR("saga", ev->saga),
                       KF_STR("event", ev->type), KF_STR("entry", entry_id),
                       KF_STR("error", msg.text), KF_INT("attempts", attempts),
                       KF_INT("failing_ms", failing_ms));
        snprintf(c->dead_why, sizeof(c->dead_why), "%s %s %s %s", c->cfg.def.name, ev->type,
                 entry_id, msg.text);
        snprintf(c->dead_saga, sizeof(c->dead_saga), "%s", ev->saga);
        return EV_DEAD;
    }
    if (v == KEEL_CHOREO_RETRY) {
        if (!again) {
            c->fail_since_ms = now;
            c->fail_until_ms = now + keel_choreo_retry_for_ms(&c->cfg.def, r);
        }
        snprintf(c->fail_id, sizeof(c->fail_id), "%s", entry_id);
        c->fail_attempts = attempts;
        c->stats.retries++;
        if (c->m_retries)
            keel_counter_inc(c->m_retries);
        keel_log_warn("choreo: handler failed, will retry", KF_STR("participant", c->cfg.def.name),
                      KF_STR("saga", ev->saga), KF_STR("event", ev->type),
                      KF_STR("error", msg.text), KF_INT("attempts", attempts));
        return EV_RETRY;
    }
    count(c, r->kind == KEEL_CHOREO_ACTION ? OUT_APPLIED : OUT_COMPENSATED);
    if (c->cfg.on_committed)
        c->cfg.on_committed(c, entry_id, ev, c->cfg.hook_data);
    return EV_ACK;
}

/* One entry [id, fields]: EV_ACK when it is settled (applied, refused, a duplicate, ignored,
 * malformed), EV_RETRY when it must stay pending, EV_DEAD when it must be dead-lettered (its
 * saga's attention record in c->dead_why). */
static ev_result_t handle_entry(keel_choreo_t *c, const keel_resp_value_t *e, char *id_out,
                                size_t id_cap)
{
    if (e->type != KEEL_RESP_ARRAY || e->elems_len != 2 || e->elems[0].type != KEEL_RESP_BULK ||
        e->elems[0].str.len >= id_cap) {
        id_out[0] = '\0';
        return EV_ACK; /* nothing to acknowledge by */
    }
    memcpy(id_out, e->elems[0].str.ptr, e->elems[0].str.len);
    id_out[e->elems[0].str.len] = '\0';
    const keel_resp_value_t *fields = &e->elems[1];
    if (fields->type != KEEL_RESP_ARRAY) /* trimmed or deleted while pending */
        return EV_ACK;
    const keel_resp_value_t *mid = field(fields, "id"), *data = field(fields, "data");
    keel_choreo_event_t ev;
    keel_errmsg_t msg = {{0}};
    if (data == NULL || data->type != KEEL_RESP_BULK ||
        keel_choreo_event_decode(data->str.ptr, data->str.len, &ev, &msg) != 0) {
        count(c, OUT_MALFORMED);
        keel_log_error("choreo: malformed event acknowledged without effect",
                       KF_STR("participant", c->cfg.def.name), KF_STR("entry", id_out),
                       KF_STR("error", data ? msg.text : "no data field"));
        return EV_ACK;
    }
    const keel_choreo_rule_t *r = keel_choreo_rule_for(&c->cfg.def, ev.type);
    if (r == NULL) {
        count(c, OUT_IGNORED);
        return EV_ACK;
    }
    /* the outbox's message id, the same on every delivery; the entry id otherwise. One the
       inbox cannot hold would fail every attempt and block the participant for good. */
    if (mid == NULL)
        mid = &e->elems[0];
    if (mid->type != KEEL_RESP_BULK || mid->str.len == 0 ||
        mid->str.len > KEEL_INBOX_ID_BYTES_MAX) {
        count(c, OUT_MALFORMED);
        keel_log_error("choreo: event with an unusable id acknowledged without effect",
                       KF_STR("participant", c->cfg.def.name), KF_STR("entry", id_out));
        return EV_ACK;
    }
    return handle_event(c, id_out, mid, &ev, r);
}

/* ---- the read loop ---------------------------------------------------------------------- */

static void next(keel_choreo_t *c);

static void wait_done(keel_timer_t *t, void *data)
{
    keel_choreo_t *c = data;
    c->waiting = false;
    next(c);
}

static void wait_then_next(keel_choreo_t *c, uint32_t attempts)
{
    keel_ms_t ms =
        keel_choreo_backoff_ms(&c->cfg.def, attempts ? attempts : 1, keel_rand_double(&c->rand));
    c->waiting = true;
    keel_timer_start(&c->wait, ms, 0, wait_done, c);
}

/* The pause before the failing entry's next attempt: its backoff, but no later than the end
 * of its retry_for_ms, so that it is given up on time rather than up to a backoff late. */
static void retry_then_next(keel_choreo_t *c)
{
    keel_ms_t ms = keel_choreo_backoff_ms(&c->cfg.def, c->fail_attempts ? c->fail_attempts : 1,
                                          keel_rand_double(&c->rand));
    keel_ms_t left = c->fail_until_ms - keel_loop_now_ms(c->loop);
    if (c->fail_id[0] != '\0' && left < ms)
        ms = left > 0 ? left : 0;
    c->waiting = true;
    keel_timer_start(&c->wait, ms, 0, wait_done, c);
}

static void request_failed(keel_choreo_t *c, const char *what, int status,
                           const keel_resp_value_t *reply)
{
    c->stats.request_errors++;
    if (reply && keel_resp_error_contains(reply, "NOGROUP"))
        c->phase = KEEL_CHOREO__GROUP; /* the stream or group went away: create them again */
    else if (c->phase == KEEL_CHOREO__LIVE)
        /* a read whose answer was lost (a timeout, -UNKNOWN, a leader lost) may have delivered
           entries to us all the same: they are in our pending list, so read that first */
        c->phase = KEEL_CHOREO__HISTORY;
    keel_log_warn("choreo: request failed", KF_STR("participant", c->cfg.def.name),
                  KF_STR("request", what),
                  KF_STR("error", status ? keel_strerror(status) : "reply"));
    wait_then_next(c, 3);
}

static void on_acked(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_t *c = ctx;
    c->inflight = false;
    if (status == KEEL_ECANCELED || c->closing)
        return;
    /* a lost XACK leaves the entries pending: they come back and the inbox skips them */
    if (status != 0 || reply->type == KEEL_RESP_ERROR) {
        request_failed(c, "XACK", status, reply);
        return;
    }
    if (c->backoff_after_ack)
        retry_then_next(c);
    else
        next(c);
}

static void on_dead(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_t *c = ctx;
    c->inflight = false;
    if (status == KEEL_ECANCELED || c->closing)
        return;
    /* a lost reply leaves the entry pending: it fails again at once (its time is up) and the
       same transaction is sent again; each of its commands is idempotent */
    bool ok = status == 0 && reply->type == KEEL_RESP_ARRAY;
    for (size_t i = 0; ok && i < reply->elems_len; i++)
        ok = reply->elems[i].type != KEEL_RESP_ERROR;
    if (!ok) {
        request_failed(c, "KEEL.TXN (dead letter)", status, reply);
        return;
    }
    c->fail_id[0] = '\0';
    count(c, OUT_DEAD);
    next(c);
}

/* Gives the entry `id` up, in one KEEL.TXN: acknowledges the batch's settled entries (ack: the
 * XACK command with its n ids), records the saga in the attention hash, and moves the entry to
 * the dead-letter stream with keel's own dead letters: the group's MAXDELIVERIES is 1 only
 * inside this entry, so the NACK moves it (every pending entry was delivered at least once),
 * and no claim or NACK of anyone else ever sees that setting. */
static void give_up(keel_choreo_t *c, const char **ack, size_t n, const char *id)
{
    const char *group = c->cfg.def.name;
    const char *tail[] = {"4",
                          "HSET",
                          c->attention,
                          c->dead_saga,
                          c->dead_why,
                          "7",
                          "KEEL.XDEADLETTER",
                          c->stream,
                          group,
                          "MAXDELIVERIES",
                          "1",
                          "STREAM",
                          c->dlq,
                          "6",
                          "KEEL.XNACK",
                          c->stream,
                          group,
                          id,
                          "ERROR",
                          c->dead_why,
                          "4",
                          "KEEL.XDEADLETTER",
                          c->stream,
                          group,
                          "OFF"};
    enum { TAIL = sizeof(tail) / sizeof(tail[0]) };
    const char *argv[3 + 1 + 3 + KEEL_CHOREO_BATCH_ENTRIES_MAX + TAIL];
    char cmds_s[4], xack_n[16];
    size_t a = 0;
    snprintf(cmds_s, sizeof(cmds_s), "%d", n > 0 ? 5 : 4);
    argv[a++] = "KEEL.TXN";
    argv[a++] = "0";
    argv[a++] = cmds_s;
    if (n > 0) {
        snprintf(xack_n, sizeof(xack_n), "%zu", 3 + n);
        argv[a++] = xack_n;
        for (size_t i = 0; i < 3 + n; i++)
            argv[a++] = ack[i];
    }
    for (size_t i = 0; i < TAIL; i++)
        argv[a++] = tail[i];
    assert(a <= sizeof(argv) / sizeof(argv[0]));
    c->inflight = true;
    if (keel_client_command(&c->client, a, argv, NULL, on_dead, c) != 0) {
        c->inflight = false;
        request_failed(c, "KEEL.TXN (dead letter)", KEEL_EFULL, NULL);
    }
}

/* Handles the entries in order and acknowledges the settled ones; an entry to retry stops the
 * batch (the rest stay pending and are read again from our history, in order); so does one to
 * give up, which is dead-lettered with the acknowledgement of those before it. */
static void handle_entries(keel_choreo_t *c, const keel_resp_value_t *entries, bool *retry)
{
    const char *argv[3 + KEEL_CHOREO_BATCH_ENTRIES_MAX] = {"XACK", c->stream, c->cfg.def.name};
    char ids[KEEL_CHOREO_BATCH_ENTRIES_MAX][48];
    size_t n = 0;
    *retry = false;
    bool committed = false;
    for (size_t i = 0; i < entries->elems_len && n < KEEL_CHOREO_BATCH_ENTRIES_MAX; i++) {
        uint64_t before = c->stats.applied + c->stats.refused + c->stats.compensated;
        ev_result_t r = handle_entry(c, &entries->elems[i], ids[n], sizeof(ids[n]));
        if (r == EV_DEAD) {
            *retry = true; /* the rest of the batch is read again from our history */
            if (committed)
                keel_outbox_relay_kick(&c->relay);
            give_up(c, argv, n, ids[n]);
            return;
        }
        if (r == EV_RETRY) {
            *retry = true;
            break;
        }
        if (strcmp(c->fail_id, ids[n]) == 0)
            c->fail_id[0] = '\0';
        if (c->stats.applied + c->stats.refused + c->stats.compensated != before)
            committed = true;
        if (ids[n][0] != '\0') {
            argv[3 + n] = ids[n];
            n++;
        }
    }
    if (committed)
        keel_outbox_relay_kick(&c->relay);
    if (n == 0) {
        if (*retry)
            retry_then_next(c);
        else
            next(c);
        return;
    }
    c->inflight = true;
    c->backoff_after_ack = *retry;
    if (keel_client_command(&c->client, 3 + n, argv, NULL, on_acked, c) != 0) {
        c->inflight = false;
        request_failed(c, "XACK", KEEL_EFULL, NULL);
    }
}

static void on_read(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_t *c = ctx;
    c->inflight = false;
    if (status == KEEL_ECANCELED || c->closing)
        return;
    if (status != 0 || reply->type == KEEL_RESP_ERROR) {
        request_failed(c, "XREADGROUP", status, reply);
        return;
    }
    const keel_resp_value_t *entries = NULL;
    if (reply->type == KEEL_RESP_ARRAY && reply->elems_len == 1 &&
        reply->elems[0].type == KEEL_RESP_ARRAY && reply->elems[0].elems_len == 2)
        entries = &reply->elems[0].elems[1];
    if (entries == NULL || entries->elems_len == 0) {
        if (c->phase == KEEL_CHOREO__HISTORY)
            c->phase = KEEL_CHOREO__LIVE; /* nothing of ours is pending */
        next(c);
        return;
    }
    bool retry;
    handle_entries(c, entries, &retry);
    if (retry)
        c->phase = KEEL_CHOREO__HISTORY;
}

static void on_claimed(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_t *c = ctx;
    c->inflight = false;
    if (status == KEEL_ECANCELED || c->closing)
        return;
    /* [next cursor, [entries], [deleted ids]] */
    if (status != 0 || reply->type != KEEL_RESP_ARRAY || reply->elems_len < 2 ||
        reply->elems[0].type != KEEL_RESP_BULK || reply->elems[1].type != KEEL_RESP_ARRAY ||
        reply->elems[0].str.len >= sizeof(c->claim_cursor)) {
        c->claim_due = false;
        request_failed(c, "XAUTOCLAIM", status, reply);
        return;
    }
    memcpy(c->claim_cursor, reply->elems[0].str.ptr, reply->elems[0].str.len);
    c->claim_cursor[reply->elems[0].str.len] = '\0';
    if (strcmp(c->claim_cursor, "0-0") == 0)
        c->claim_due = false; /* a whole pass done */
    const keel_resp_value_t *entries = &reply->elems[1];
    c->stats.claimed += entries->elems_len;
    if (c->m_claimed)
        keel_counter_add(c->m_claimed, entries->elems_len);
    if (entries->elems_len == 0) {
        next(c);
        return;
    }
    bool retry;
    handle_entries(c, entries, &retry);
    if (retry) /* now ours: our history read finds it */
        c->phase = KEEL_CHOREO__HISTORY;
}

static void on_group(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *reply)
{
    keel_choreo_t *c = ctx;
    c->inflight = false;
    if (status == KEEL_ECANCELED || c->closing)
        return;
    if (status != 0 ||
        (reply->type == KEEL_RESP_ERROR && !keel_resp_error_contains(reply, "BUSYGROUP"))) {
        request_failed(c, "XGROUP CREATE", status, reply);
        return;
    }
    c->phase = KEEL_CHOREO__HISTORY;
    next(c);
}

static void send_req(keel_choreo_t *c, size_t argc, const char *const *argv, keel_ms_t timeout_ms,
                     keel_client_reply_fn fn)
{
    c->inflight = true;
    int rc = keel_client_command_timeout(&c->client, argc, argv, NULL, timeout_ms, fn, c);
    if (rc != 0) {
        c->inflight = false;
        request_failed(c, argv[0], rc, NULL);
    }
}

/* One request at a time: the blocking read holds the connection. */
static void next(keel_choreo_t *c)
{
    if (c->closing || c->inflight || c->waiting)
        return;
    char count_s[16], block_s[24], idle_s[24];
    snprintf(count_s, sizeof(count_s), "%" PRIu32, c->cfg.batch_entries_max);
    const char *group = c->cfg.def.name;
    keel_ms_t timeout_ms = c->cfg.request_timeout_ms;
    if (c->phase == KEEL_CHOREO__GROUP) {
        const char *argv[] = {"XGROUP", "CREATE", c->stream, group, "0", "MKSTREAM"};
        send_req(c, 6, argv, timeout_ms, on_group);
    } else if (c->claim_due) {
        snprintf(idle_s, sizeof(idle_s), "%" PRId64, c->cfg.claim_idle_ms);
        const char *argv[] = {"XAUTOCLAIM", c->stream,       group,   c->consumer,
                              idle_s,       c->claim_cursor, "COUNT", count_s};
        send_req(c, 8, argv, timeout_ms, on_claimed);
    } else if (c->phase == KEEL_CHOREO__HISTORY) {
        const char *argv[] = {"XREADGROUP", "GROUP",   group,     c->consumer, "COUNT",
                              count_s,      "STREAMS", c->stream, "0"};
        send_req(c, 9, argv, timeout_ms, on_read);
    } else {
        snprintf(block_s, sizeof(block_s), "%" PRId64, c->cfg.block_ms);
        const char *argv[] = {"XREADGROUP", "GROUP", group,     c->consumer, "COUNT", count_s,
                              "BLOCK",      block_s, "STREAMS", c->stream,   ">"};
        send_req(c, 11, argv, timeout_ms + c->cfg.block_ms, on_read);
    }
}

static void claim_tick(keel_timer_t *t, void *data)
{
    keel_choreo_t *c = data;
    c->claim_due = true;
    next(c);
}

void keel_choreo_start(keel_choreo_t *c)
{
    assert(!c->started && !c->closing);
    c->started = true;
    keel_outbox_relay_start(&c->relay);
    keel_timer_start(&c->claim, c->cfg.claim_interval_ms, c->cfg.claim_interval_ms, claim_tick, c);
    next(c);
}

/* ---- closing ------------------------------------------------------------------------------ */

static void handle_closed(keel_choreo_t *c)
{
    if (--c->handles_open > 0)
        return;
    keel_buf_free(&c->out);
    if (c->closed)
        c->closed(c);
}

static void wait_closed(keel_timer_t *t)
{
    handle_closed((keel_choreo_t *)((char *)t - offsetof(keel_choreo_t, wait)));
}

static void claim_closed(keel_timer_t *t)
{
    handle_closed((keel_choreo_t *)((char *)t - offsetof(keel_choreo_t, claim)));
}

static void client_closed(keel_client_t *cl)
{
    handle_closed((keel_choreo_t *)((char *)cl - offsetof(keel_choreo_t, client)));
}

static void relay_closed(keel_outbox_relay_t *r)
{
    handle_closed((keel_choreo_t *)((char *)r - offsetof(keel_choreo_t, relay)));
}

void keel_choreo_close(keel_choreo_t *c, void (*closed)(keel_choreo_t *c))
{
    assert(!c->closing);
    c->closing = true;
    c->closed = closed;
    keel_timer_close(&c->wait, wait_closed);
    keel_timer_close(&c->claim, claim_closed);
    keel_client_close(&c->client, client_closed);
    keel_outbox_relay_close(&c->relay, relay_closed);
}
