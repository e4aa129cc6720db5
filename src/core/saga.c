/* saga.c - one orchestrated saga as a sans-I/O state machine over its write-ahead log. */
#include "core/saga.h"

#include "base/bytes.h"
#include "base/crc32c.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_STEP UINT32_MAX

/* ---- definitions ---------------------------------------------------------------------- */

void keel_saga_def_default(keel_saga_def_t *def, const char *name)
{
    memset(def, 0, sizeof(*def));
    def->name = name;
    def->input_bytes_max = 1024;
    def->result_bytes_max = 1024;
    def->compensate_limit_ms = 5 * 60 * 1000;
    def->undo_backoff_base_ms = 100;
    def->undo_backoff_cap_ms = 5000;
}

int keel_saga_def_step(keel_saga_def_t *def, const char *name)
{
    if (def->steps_n >= KEEL_SAGA_STEPS_MAX)
        return KEEL_EFULL;
    keel_saga_step_def_t *st = &def->steps[def->steps_n];
    memset(st, 0, sizeof(*st));
    st->name = name;
    st->timeout_ms = 5000;
    st->attempts_max = 3;
    st->backoff_base_ms = 100;
    st->backoff_cap_ms = 2000;
    return (int)def->steps_n++;
}

bool keel_saga_id_valid(const char *s, size_t bytes_max)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, bytes_max + 1);
    if (n == 0 || n > bytes_max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

int keel_saga_def_validate(const keel_saga_def_t *def, keel_errmsg_t *msg)
{
    if (!keel_saga_id_valid(def->name, KEEL_SAGA_NAME_BYTES_MAX))
        return keel_errf(msg, KEEL_EINVAL, "saga name must be 1..%u of [A-Za-z0-9_.-]",
                         KEEL_SAGA_NAME_BYTES_MAX);
    if (def->steps_n == 0 || def->steps_n > KEEL_SAGA_STEPS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "a saga has 1..%u steps", KEEL_SAGA_STEPS_MAX);
    if (def->input_bytes_max > KEEL_SAGA_DATA_BYTES_MAX ||
        def->result_bytes_max > KEEL_SAGA_DATA_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "input_bytes_max and result_bytes_max are at most %u",
                         KEEL_SAGA_DATA_BYTES_MAX);
    if (def->compensate_limit_ms <= 0 || def->undo_backoff_base_ms <= 0 ||
        def->undo_backoff_cap_ms < def->undo_backoff_base_ms)
        return keel_errf(msg, KEEL_EINVAL,
                         "compensate_limit_ms and undo backoffs must be positive, cap >= base");
    for (uint32_t i = 0; i < def->steps_n; i++) {
        const keel_saga_step_def_t *st = &def->steps[i];
        if (!keel_saga_id_valid(st->name, KEEL_SAGA_NAME_BYTES_MAX))
            return keel_errf(msg, KEEL_EINVAL, "step %u: name must be 1..%u of [A-Za-z0-9_.-]", i,
                             KEEL_SAGA_NAME_BYTES_MAX);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(def->steps[j].name, st->name) == 0)
                return keel_errf(msg, KEEL_EINVAL, "steps %u and %u are both named %s", j, i,
                                 st->name);
        if (st->attempts_max == 0 || st->attempts_max > KEEL_SAGA_ATTEMPTS_MAX)
            return keel_errf(msg, KEEL_EINVAL, "step %s: attempts_max must be in 1..%u", st->name,
                             KEEL_SAGA_ATTEMPTS_MAX);
        if (st->retry_for_ms < 0)
            return keel_errf(msg, KEEL_EINVAL, "step %s: retry_for_ms must be >= 0", st->name);
        if (st->timeout_ms <= 0 || st->backoff_base_ms <= 0 ||
            st->backoff_cap_ms < st->backoff_base_ms)
            return keel_errf(msg, KEEL_EINVAL,
                             "step %s: timeout and backoff must be positive, cap >= base",
                             st->name);
    }
    return 0;
}

/* ---- records -------------------------------------------------------------------------- */

static const char *const REC_NAMES[KEEL_SAGA__REC_TYPES] = {
    [KEEL_SAGA_REC_STARTED] = "started",         [KEEL_SAGA_REC_BEGUN] = "begun",
    [KEEL_SAGA_REC_STEP_DONE] = "step_done",     [KEEL_SAGA_REC_STEP_FAILED] = "step_failed",
    [KEEL_SAGA_REC_UNDONE] = "undone",           [KEEL_SAGA_REC_DONE] = "done",
    [KEEL_SAGA_REC_COMPENSATED] = "compensated", [KEEL_SAGA_REC_ATTENTION] = "needs_attention",
};

const char *keel_saga_rec_type_name(keel_saga_rec_type_t t)
{
    return t > 0 && t < KEEL_SAGA__REC_TYPES ? REC_NAMES[t] : "?";
}

keel_saga_state_t keel_saga_state_after(keel_saga_rec_type_t last)
{
    switch (last) {
    case KEEL_SAGA_REC_STARTED:
    case KEEL_SAGA_REC_BEGUN:
    case KEEL_SAGA_REC_STEP_DONE:
        return KEEL_SAGA_RUNNING;
    case KEEL_SAGA_REC_STEP_FAILED:
    case KEEL_SAGA_REC_UNDONE:
        return KEEL_SAGA_COMPENSATING;
    case KEEL_SAGA_REC_DONE:
        return KEEL_SAGA_DONE;
    case KEEL_SAGA_REC_COMPENSATED:
        return KEEL_SAGA_COMPENSATED;
    case KEEL_SAGA_REC_ATTENTION:
        return KEEL_SAGA_NEEDS_ATTENTION;
    default:
        return KEEL_SAGA_NEW;
    }
}

size_t keel_saga_rec_size(const keel_saga_rec_t *r)
{
    return KEEL_SAGA_RECORD_HEADER_BYTES + r->data_len;
}

int keel_saga_rec_encode(const keel_saga_rec_t *r, uint8_t *out, size_t cap)
{
    assert(r->type > 0 && r->type < KEEL_SAGA__REC_TYPES);
    size_t n = keel_saga_rec_size(r);
    if (n > cap || r->data_len > UINT32_MAX || r->step > UINT16_MAX)
        return KEEL_ETOOBIG;
    out[4] = KEEL_SAGA_RECORD_VERSION;
    out[5] = (uint8_t)r->type;
    keel_put_u16(out + 6, (uint16_t)r->step);
    keel_put_u32(out + 8, r->seq);
    keel_put_u64(out + 12, (uint64_t)r->time_ms);
    keel_put_u32(out + 20, (uint32_t)r->data_len);
    if (r->data_len) /* memmove: the data may already sit in place (want_log) */
        memmove(out + KEEL_SAGA_RECORD_HEADER_BYTES, r->data, r->data_len);
    keel_put_u32(out, keel_crc32c(0, out + 4, n - 4));
    return (int)n;
}

int keel_saga_rec_decode(const uint8_t *in, size_t len, keel_saga_rec_t *r, keel_errmsg_t *msg)
{
    if (len < KEEL_SAGA_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_ECORRUPT, "saga record of %zu bytes is shorter than its header",
                         len);
    uint32_t crc = keel_get_u32(in);
    if (crc != keel_crc32c(0, in + 4, len - 4))
        return keel_errf(msg, KEEL_ECORRUPT, "saga record checksum mismatch");
    if (in[4] != KEEL_SAGA_RECORD_VERSION)
        return keel_errf(msg, KEEL_ECORRUPT, "saga record version %u unknown", in[4]);
    uint8_t type = in[5];
    uint32_t step = keel_get_u16(in + 6);
    uint32_t data_len = keel_get_u32(in + 20);
    if (type == 0 || type >= KEEL_SAGA__REC_TYPES)
        return keel_errf(msg, KEEL_ECORRUPT, "saga record type %u unknown", type);
    if (step >= KEEL_SAGA_STEPS_MAX)
        return keel_errf(msg, KEEL_ECORRUPT, "saga record step %u out of range", step);
    if ((size_t)data_len != len - KEEL_SAGA_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_ECORRUPT, "saga record says %u data bytes, has %zu", data_len,
                         len - KEEL_SAGA_RECORD_HEADER_BYTES);
    r->type = (keel_saga_rec_type_t)type;
    r->step = step;
    r->seq = keel_get_u32(in + 8);
    r->time_ms = (keel_ms_t)keel_get_u64(in + 12);
    r->data = data_len ? in + KEEL_SAGA_RECORD_HEADER_BYTES : NULL;
    r->data_len = data_len;
    return 0;
}

/* ---- the instance --------------------------------------------------------------------- */

static const char *const STATE_NAMES[KEEL_SAGA__STATES] = {
    [KEEL_SAGA_NEW] = "new",
    [KEEL_SAGA_RUNNING] = "running",
    [KEEL_SAGA_COMPENSATING] = "compensating",
    [KEEL_SAGA_DONE] = "done",
    [KEEL_SAGA_COMPENSATED] = "compensated",
    [KEEL_SAGA_NEEDS_ATTENTION] = "needs_attention",
};

const char *keel_saga_state_name(keel_saga_state_t st)
{
    return st < KEEL_SAGA__STATES ? STATE_NAMES[st] : "?";
}

bool keel_saga_state_final(keel_saga_state_t st)
{
    return st == KEEL_SAGA_DONE || st == KEEL_SAGA_COMPENSATED || st == KEEL_SAGA_NEEDS_ATTENTION;
}

static size_t record_cap(const keel_saga_def_t *def)
{
    size_t data = def->input_bytes_max + 1 + KEEL_SAGA_NAME_BYTES_MAX;
    if (def->result_bytes_max > data)
        data = def->result_bytes_max;
    if (1 + KEEL_SAGA_REASON_BYTES_MAX > data)
        data = 1 + KEEL_SAGA_REASON_BYTES_MAX;
    return KEEL_SAGA_RECORD_HEADER_BYTES + data;
}

static uint8_t *result_at(const keel_saga_t *s, uint32_t i)
{
    return s->arena + s->def->input_bytes_max + (size_t)i * s->def->result_bytes_max;
}

int keel_saga_init(keel_saga_t *s, const keel_saga_def_t *def, const char *id, uint64_t seed,
                   keel_errmsg_t *msg)
{
    memset(s, 0, sizeof(*s));
    if (!keel_saga_id_valid(id, KEEL_SAGA_ID_BYTES_MAX))
        return keel_errf(msg, KEEL_EINVAL, "saga id must be 1..%u of [A-Za-z0-9_.-]",
                         KEEL_SAGA_ID_BYTES_MAX);
    int rc = keel_saga_def_validate(def, msg);
    if (rc != 0)
        return rc;
    s->def = def;
    memcpy(s->id, id, strlen(id) + 1);
    keel_rand_seed(&s->rand, seed);
    s->rec_cap = record_cap(def);
    size_t arena = def->input_bytes_max + (size_t)def->steps_n * def->result_bytes_max;
    s->rec_buf = malloc(s->rec_cap);
    s->arena = malloc(arena ? arena : 1);
    if (s->rec_buf == NULL || s->arena == NULL) {
        keel_saga_free(s);
        return keel_errf(msg, KEEL_ENOMEM, "saga arena of %zu bytes", arena + s->rec_cap);
    }
    s->state = KEEL_SAGA_NEW;
    s->failed_step = NO_STEP;
    return 0;
}

void keel_saga_free(keel_saga_t *s)
{
    free(s->rec_buf);
    free(s->arena);
    s->rec_buf = NULL;
    s->arena = NULL;
}

const uint8_t *keel_saga_result(const keel_saga_t *s, uint32_t i, size_t *len)
{
    if (i >= s->done_n || i >= s->def->steps_n)
        return NULL;
    *len = s->result_len[i];
    return result_at(s, i);
}

const uint8_t *keel_saga_input(const keel_saga_t *s, size_t *len)
{
    *len = s->input_len;
    return s->arena;
}

/* The step whose compensation comes next, or NO_STEP when none is left. The failed step
 * itself is included when it gave up (it may have applied); steps without a compensation
 * and steps already undone are skipped. */
static uint32_t next_undo(const keel_saga_t *s)
{
    assert(s->state == KEEL_SAGA_COMPENSATING);
    uint32_t top = s->fail_kind == KEEL_SAGA_FAIL_GAVE_UP ? s->failed_step + 1 : s->failed_step;
    for (uint32_t k = top; k-- > 0;) {
        if (s->def->steps[k].no_compensation || (s->undone & (1u << k)))
            continue;
        return k;
    }
    return NO_STEP;
}

static void set_reason(keel_saga_t *s, const uint8_t *p, size_t n)
{
    if (n > KEEL_SAGA_REASON_BYTES_MAX)
        n = KEEL_SAGA_REASON_BYTES_MAX;
    if (n)
        memcpy(s->reason, p, n);
    s->reason[n] = '\0';
}

/* Whether record r may follow the records applied so far; NULL if so, else why not. */
static const char *illegal(const keel_saga_t *s, const keel_saga_rec_t *r)
{
    const keel_saga_def_t *def = s->def;
    if (r->seq != s->seq + 1)
        return "out of sequence";
    if (r->type != KEEL_SAGA_REC_STARTED && r->type != KEEL_SAGA_REC_DONE &&
        r->type != KEEL_SAGA_REC_COMPENSATED && r->step >= def->steps_n)
        return "step beyond the definition";
    switch (r->type) {
    case KEEL_SAGA_REC_STARTED:
        if (s->state != KEEL_SAGA_NEW)
            return "started twice";
        if (r->data_len < 1 || r->data_len < 1u + r->data[0])
            return "started record too short";
        if (r->data[0] != strlen(def->name) || memcmp(r->data + 1, def->name, r->data[0]) != 0)
            return "log of another saga definition";
        if (r->data_len - 1 - r->data[0] > def->input_bytes_max)
            return "input over input_bytes_max";
        return NULL;
    case KEEL_SAGA_REC_BEGUN: /* logs written before started/step_done announced the next step */
        return s->state != KEEL_SAGA_RUNNING || r->step != s->done_n ? "begun out of order" : NULL;
    case KEEL_SAGA_REC_STEP_DONE:
        if (s->state != KEEL_SAGA_RUNNING || r->step != s->done_n)
            return "step done out of order";
        return r->data_len > def->result_bytes_max ? "result over result_bytes_max" : NULL;
    case KEEL_SAGA_REC_STEP_FAILED:
        if (s->state != KEEL_SAGA_RUNNING || r->step != s->done_n)
            return "step failed out of order";
        return r->data_len < 1 || (r->data[0] != KEEL_SAGA_FAIL_BUSINESS &&
                                   r->data[0] != KEEL_SAGA_FAIL_GAVE_UP)
                   ? "step failed without a valid kind"
                   : NULL;
    case KEEL_SAGA_REC_UNDONE:
    case KEEL_SAGA_REC_ATTENTION:
        return s->state != KEEL_SAGA_COMPENSATING || r->step != next_undo(s)
                   ? "compensation out of order"
                   : NULL;
    case KEEL_SAGA_REC_DONE:
        return s->state != KEEL_SAGA_RUNNING || s->done_n != def->steps_n ? "done too early" : NULL;
    case KEEL_SAGA_REC_COMPENSATED:
        return s->state != KEEL_SAGA_COMPENSATING || next_undo(s) != NO_STEP
                   ? "compensated too early"
                   : NULL;
    default:
        return "unknown type";
    }
}

/* Applies a legal record to the durable state; the one place that state changes, for a
 * live saga (on EV_LOGGED) and a replayed one alike, which is why replay is exact. */
static void apply(keel_saga_t *s, const keel_saga_rec_t *r)
{
    assert(illegal(s, r) == NULL);
    s->seq = r->seq;
    switch (r->type) {
    case KEEL_SAGA_REC_STARTED: {
        size_t name = r->data[0];
        s->state = KEEL_SAGA_RUNNING;
        s->started_ms = r->time_ms;
        s->input_len = r->data_len - 1 - name;
        if (s->input_len)
            memcpy(s->arena, r->data + 1 + name, s->input_len);
        s->attempt = 0;
        break;
    }
    case KEEL_SAGA_REC_BEGUN:
        s->attempt = 0;
        break;
    case KEEL_SAGA_REC_STEP_DONE:
        s->result_len[r->step] = r->data_len;
        if (r->data_len)
            memcpy(result_at(s, r->step), r->data, r->data_len);
        s->done_n++;
        s->attempt = 0;
        break;
    case KEEL_SAGA_REC_STEP_FAILED:
        s->state = KEEL_SAGA_COMPENSATING;
        s->failed_step = r->step;
        s->fail_kind = r->data[0];
        s->compensate_from_ms = r->time_ms;
        set_reason(s, r->data + 1, r->data_len - 1);
        s->attempt = 0;
        break;
    case KEEL_SAGA_REC_UNDONE:
        s->undone |= 1u << r->step;
        s->attempt = 0;
        break;
    case KEEL_SAGA_REC_DONE:
        s->state = KEEL_SAGA_DONE;
        s->finished_ms = r->time_ms;
        break;
    case KEEL_SAGA_REC_COMPENSATED:
        s->state = KEEL_SAGA_COMPENSATED;
        s->finished_ms = r->time_ms;
        break;
    case KEEL_SAGA_REC_ATTENTION:
        s->state = KEEL_SAGA_NEEDS_ATTENTION;
        s->finished_ms = r->time_ms;
        set_reason(s, r->data, r->data_len);
        break;
    default:
        assert(0);
    }
}

int keel_saga_replay(keel_saga_t *s, const uint8_t *rec, size_t len, keel_errmsg_t *msg)
{
    keel_saga_rec_t r = {0};
    int rc = keel_saga_rec_decode(rec, len, &r, msg);
    if (rc != 0)
        return rc;
    const char *why = illegal(s, &r);
    if (why != NULL)
        return keel_errf(msg, KEEL_EPROTO, "saga %s record %" PRIu32 " (%s, step %" PRIu32 "): %s",
                         s->id, r.seq, keel_saga_rec_type_name(r.type), r.step, why);
    apply(s, &r);
    s->pending = KEEL_SAGA_ACT_NONE;
    return 0;
}

/* ---- deciding the next action ----------------------------------------------------------- */

static void update_reset(const keel_saga_t *s, keel_saga_update_t *u)
{
    memset(u, 0, sizeof(*u));
    u->state = s->state;
}

/* Asks for the record (type, step, data parts) to be logged. */
static void want_log(keel_saga_t *s, keel_ms_t now_ms, keel_saga_rec_type_t type, uint32_t step,
                     const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len,
                     keel_saga_update_t *u)
{
    /* the data is assembled behind the header in rec_buf, then encoded in place */
    uint8_t *data = s->rec_buf + KEEL_SAGA_RECORD_HEADER_BYTES;
    size_t room = s->rec_cap - KEEL_SAGA_RECORD_HEADER_BYTES;
    assert(a_len + b_len <= room);
    if (a_len)
        memmove(data, a, a_len);
    if (b_len)
        memmove(data + a_len, b, b_len);
    s->want = (keel_saga_rec_t){.type = type,
                                .step = step,
                                .seq = s->seq + 1,
                                .time_ms = now_ms,
                                .data = data,
                                .data_len = a_len + b_len};
    assert(illegal(s, &s->want) == NULL);
    int n = keel_saga_rec_encode(&s->want, s->rec_buf, s->rec_cap);
    assert(n > 0);
    s->pending = KEEL_SAGA_ACT_LOG;
    s->pending_step = step;
    u->action = KEEL_SAGA_ACT_LOG;
    u->step = step;
    u->record = s->rec_buf;
    u->record_len = (size_t)n;
    u->seq = s->want.seq;
    u->rec_type = type;
}

static void want_call(keel_saga_t *s, keel_saga_action_t act, uint32_t step, keel_ms_t now_ms,
                      keel_saga_update_t *u)
{
    const keel_saga_step_def_t *st = &s->def->steps[step];
    s->pending = act;
    s->pending_step = step;
    if (s->attempt++ == 0)
        s->first_try_ms = now_ms;
    s->deadline_ms = now_ms + st->timeout_ms;
    u->action = act;
    u->step = step;
    u->attempt = s->attempt;
    u->timeout_ms = st->timeout_ms;
    u->deadline_ms = s->deadline_ms;
    int n = snprintf(u->key, sizeof(u->key), "%s:%s:%s", s->id, st->name,
                     act == KEEL_SAGA_ACT_DO ? "do" : "undo");
    assert(n > 0 && (size_t)n < sizeof(u->key));
}

static void want_wait(keel_saga_t *s, keel_ms_t wake_ms, keel_saga_action_t after,
                      keel_saga_update_t *u)
{
    s->pending = KEEL_SAGA_ACT_WAIT;
    s->wake_ms = wake_ms;
    s->after_wait = after;
    u->action = KEEL_SAGA_ACT_WAIT;
    u->wake_ms = wake_ms;
    u->step = s->pending_step;
}

/* Capped exponential backoff with equal jitter for retry n (0 = first retry). */
static keel_ms_t backoff_ms(keel_saga_t *s, keel_ms_t base_ms, keel_ms_t cap_ms, uint32_t n)
{
    keel_ms_t c = cap_ms;
    if (n < 30 && (base_ms << n) < cap_ms)
        c = base_ms << n;
    return c / 2 + (keel_ms_t)keel_rand_below(&s->rand, (uint64_t)(c - c / 2) + 1);
}

/* With nothing pending: the next action the durable state calls for. */
static void decide(keel_saga_t *s, keel_ms_t now_ms, keel_saga_update_t *u)
{
    assert(s->pending == KEEL_SAGA_ACT_NONE);
    switch (s->state) {
    case KEEL_SAGA_RUNNING:
        if (s->done_n == s->def->steps_n)
            want_log(s, now_ms, KEEL_SAGA_REC_DONE, 0, NULL, 0, NULL, 0, u);
        else
            want_call(s, KEEL_SAGA_ACT_DO, s->done_n, now_ms, u);
        return;
    case KEEL_SAGA_COMPENSATING: {
        uint32_t k = next_undo(s);
        if (k == NO_STEP)
            want_log(s, now_ms, KEEL_SAGA_REC_COMPENSATED, 0, NULL, 0, NULL, 0, u);
        else
            want_call(s, KEEL_SAGA_ACT_UNDO, k, now_ms, u);
        return;
    }
    case KEEL_SAGA_DONE:
    case KEEL_SAGA_COMPENSATED:
    case KEEL_SAGA_NEEDS_ATTENTION:
        u->action = KEEL_SAGA_ACT_FINISH;
        return;
    default:
        assert(0);
    }
}

int keel_saga_begin(keel_saga_t *s, keel_ms_t now_ms, const void *input, size_t input_len,
                    keel_saga_update_t *u)
{
    update_reset(s, u);
    if (s->state != KEEL_SAGA_NEW || s->pending != KEEL_SAGA_ACT_NONE)
        return KEEL_EINVAL;
    if (input_len > s->def->input_bytes_max)
        return KEEL_ETOOBIG;
    uint8_t name[1 + KEEL_SAGA_NAME_BYTES_MAX];
    size_t name_len = strlen(s->def->name);
    name[0] = (uint8_t)name_len;
    memcpy(name + 1, s->def->name, name_len);
    want_log(s, now_ms, KEEL_SAGA_REC_STARTED, 0, name, 1 + name_len, input, input_len, u);
    return 0;
}

int keel_saga_resume(keel_saga_t *s, keel_ms_t now_ms, keel_saga_update_t *u)
{
    update_reset(s, u);
    if (s->state == KEEL_SAGA_NEW)
        return KEEL_ENOTFOUND;
    s->pending = KEEL_SAGA_ACT_NONE;
    s->attempt = 0;
    decide(s, now_ms, u);
    return 0;
}

static void on_do_transient(keel_saga_t *s, const keel_saga_event_t *ev, keel_saga_update_t *u)
{
    const keel_saga_step_def_t *st = &s->def->steps[ev->step];
    if (s->attempt < st->attempts_max) {
        keel_ms_t d = backoff_ms(s, st->backoff_base_ms, st->backoff_cap_ms, s->attempt - 1);
        if (st->retry_for_ms == 0 || ev->now_ms + d <= s->first_try_ms + st->retry_for_ms) {
            want_wait(s, ev->now_ms + d, KEEL_SAGA_ACT_DO, u);
            return;
        }
    }
    uint8_t kind = KEEL_SAGA_FAIL_GAVE_UP;
    size_t n =
        ev->data_len > KEEL_SAGA_REASON_BYTES_MAX ? KEEL_SAGA_REASON_BYTES_MAX : ev->data_len;
    want_log(s, ev->now_ms, KEEL_SAGA_REC_STEP_FAILED, ev->step, &kind, 1, ev->data, n, u);
}

static void on_undo_failed(keel_saga_t *s, const keel_saga_event_t *ev, keel_saga_update_t *u)
{
    const keel_saga_def_t *def = s->def;
    keel_ms_t limit_at = s->compensate_from_ms + def->compensate_limit_ms;
    size_t n =
        ev->data_len > KEEL_SAGA_REASON_BYTES_MAX ? KEEL_SAGA_REASON_BYTES_MAX : ev->data_len;
    if (ev->now_ms >= limit_at) {
        want_log(s, ev->now_ms, KEEL_SAGA_REC_ATTENTION, ev->step, ev->data, n, NULL, 0, u);
        return;
    }
    keel_ms_t wake = ev->now_ms + backoff_ms(s, def->undo_backoff_base_ms, def->undo_backoff_cap_ms,
                                             s->attempt - 1);
    want_wait(s, wake < limit_at ? wake : limit_at, KEEL_SAGA_ACT_UNDO, u);
}

/* Time passed: the end of a WAIT, or a call's deadline (a timeout: the call may have been
 * applied, so a transient failure, or a compensation failure). Before either, nothing. */
static void on_tick(keel_saga_t *s, const keel_saga_event_t *ev, keel_saga_update_t *u)
{
    if (s->pending == KEEL_SAGA_ACT_WAIT) {
        if (ev->now_ms < s->wake_ms) {
            u->action = KEEL_SAGA_ACT_WAIT;
            u->wake_ms = s->wake_ms;
            u->step = s->pending_step;
            return;
        }
        s->pending = KEEL_SAGA_ACT_NONE;
        want_call(s, s->after_wait, s->pending_step, ev->now_ms, u);
        return;
    }
    if (ev->now_ms < s->deadline_ms) {
        u->action = KEEL_SAGA_ACT_NONE; /* the call goes on */
        u->step = s->pending_step;
        return;
    }
    static const char why[] = "timed out";
    keel_saga_event_t t = {.type = s->pending == KEEL_SAGA_ACT_DO ? KEEL_SAGA_EV_DO_TRANSIENT
                                                                  : KEEL_SAGA_EV_UNDO_FAILED,
                           .now_ms = ev->now_ms,
                           .step = s->pending_step,
                           .data = (const uint8_t *)why,
                           .data_len = sizeof(why) - 1};
    if (t.type == KEEL_SAGA_EV_DO_TRANSIENT)
        on_do_transient(s, &t, u);
    else
        on_undo_failed(s, &t, u);
}

keel_ms_t keel_saga_next_deadline_ms(const keel_saga_t *s)
{
    switch (s->pending) {
    case KEEL_SAGA_ACT_WAIT:
        return s->wake_ms;
    case KEEL_SAGA_ACT_DO:
    case KEEL_SAGA_ACT_UNDO:
        return s->deadline_ms;
    default:
        return KEEL_MS_NEVER;
    }
}

/* Whether ev is the outcome of the action pending. */
static bool expected(const keel_saga_t *s, const keel_saga_event_t *ev)
{
    switch (ev->type) {
    case KEEL_SAGA_EV_LOGGED:
        return s->pending == KEEL_SAGA_ACT_LOG;
    case KEEL_SAGA_EV_DO_OK:
    case KEEL_SAGA_EV_DO_FAILED:
    case KEEL_SAGA_EV_DO_TRANSIENT:
        return s->pending == KEEL_SAGA_ACT_DO && ev->step == s->pending_step;
    case KEEL_SAGA_EV_UNDO_OK:
    case KEEL_SAGA_EV_UNDO_FAILED:
        return s->pending == KEEL_SAGA_ACT_UNDO && ev->step == s->pending_step;
    case KEEL_SAGA_EV_TICK:
        return s->pending == KEEL_SAGA_ACT_WAIT || s->pending == KEEL_SAGA_ACT_DO ||
               s->pending == KEEL_SAGA_ACT_UNDO;
    default:
        return false;
    }
}

int keel_saga_step(keel_saga_t *s, const keel_saga_event_t *ev, keel_saga_update_t *u)
{
    if (!expected(s, ev))
        return KEEL_EINVAL; /* u is left as it was, with the action still in flight */
    update_reset(s, u);
    uint32_t step = ev->step;
    switch (ev->type) {
    case KEEL_SAGA_EV_LOGGED:
        apply(s, &s->want);
        s->pending = KEEL_SAGA_ACT_NONE;
        u->state = s->state;
        decide(s, ev->now_ms, u);
        break;
    case KEEL_SAGA_EV_DO_OK:
        if (ev->data_len > s->def->result_bytes_max) {
            /* it applied, but its result cannot be kept: fail it as maybe applied */
            static const char why[] = "result over result_bytes_max";
            uint8_t kind = KEEL_SAGA_FAIL_GAVE_UP;
            want_log(s, ev->now_ms, KEEL_SAGA_REC_STEP_FAILED, step, &kind, 1, (const uint8_t *)why,
                     sizeof(why) - 1, u);
        } else {
            want_log(s, ev->now_ms, KEEL_SAGA_REC_STEP_DONE, step, ev->data, ev->data_len, NULL, 0,
                     u);
        }
        break;
    case KEEL_SAGA_EV_DO_FAILED: {
        uint8_t kind = KEEL_SAGA_FAIL_BUSINESS;
        size_t n =
            ev->data_len > KEEL_SAGA_REASON_BYTES_MAX ? KEEL_SAGA_REASON_BYTES_MAX : ev->data_len;
        want_log(s, ev->now_ms, KEEL_SAGA_REC_STEP_FAILED, step, &kind, 1, ev->data, n, u);
        break;
    }
    case KEEL_SAGA_EV_DO_TRANSIENT:
        on_do_transient(s, ev, u);
        break;
    case KEEL_SAGA_EV_UNDO_OK:
        want_log(s, ev->now_ms, KEEL_SAGA_REC_UNDONE, step, NULL, 0, NULL, 0, u);
        break;
    case KEEL_SAGA_EV_UNDO_FAILED:
        on_undo_failed(s, ev, u);
        break;
    case KEEL_SAGA_EV_TICK:
        on_tick(s, ev, u);
        break;
    default:
        assert(0);
    }
    return 0;
}

size_t keel_saga_describe(const keel_saga_t *s, char *out, size_t cap)
{
    char results[KEEL_SAGA_STEPS_MAX * 24] = "";
    size_t at = 0;
    for (uint32_t i = 0; i < s->done_n && i < s->def->steps_n; i++) {
        uint32_t crc = keel_crc32c(0, result_at(s, i), s->result_len[i]);
        int n = snprintf(results + at, sizeof(results) - at, "%s%zu:%08" PRIx32, i ? "," : "",
                         s->result_len[i], crc);
        if (n < 0 || (size_t)n >= sizeof(results) - at)
            break;
        at += (size_t)n;
    }
    int n = snprintf(out, cap,
                     "%s %s seq=%" PRIu32 " done=%" PRIu32 " failed=%d/%u undone=%#" PRIx32
                     " input=%zu:%08" PRIx32 " results=[%s] started=%" PRId64
                     " compensating=%" PRId64 " finished=%" PRId64 " reason=%s",
                     s->id, keel_saga_state_name(s->state), s->seq, s->done_n,
                     s->failed_step == NO_STEP ? -1 : (int)s->failed_step, s->fail_kind, s->undone,
                     s->input_len, keel_crc32c(0, s->arena, s->input_len), results, s->started_ms,
                     s->compensate_from_ms, s->finished_ms, s->reason);
    return n < 0 ? 0 : (size_t)n;
}
