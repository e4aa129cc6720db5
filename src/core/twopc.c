/* twopc.c - two-phase commit's coordinator and participant state machines (core/twopc.h). */
#include "core/twopc.h"

#include "base/bytes.h"
#include "base/crc32c.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

keel_twopc_config_t keel_twopc_config_default(void)
{
    return (keel_twopc_config_t){.prepare_timeout_ms = 5000,
                                 .resend_base_ms = 50,
                                 .resend_cap_ms = 2000,
                                 .in_doubt_ms = 15000,
                                 .inquire_base_ms = 200,
                                 .inquire_cap_ms = 5000};
}

int keel_twopc_config_validate(const keel_twopc_config_t *cfg, keel_errmsg_t *msg)
{
    if (cfg->prepare_timeout_ms <= 0 || cfg->in_doubt_ms <= 0)
        return keel_errf(msg, KEEL_EINVAL, "prepare_timeout_ms and in_doubt_ms must be > 0");
    if (cfg->resend_base_ms <= 0 || cfg->resend_cap_ms < cfg->resend_base_ms)
        return keel_errf(msg, KEEL_EINVAL, "resend backoff needs 0 < base <= cap");
    if (cfg->inquire_base_ms <= 0 || cfg->inquire_cap_ms < cfg->inquire_base_ms)
        return keel_errf(msg, KEEL_EINVAL, "inquiry backoff needs 0 < base <= cap");
    return 0;
}

bool keel_twopc_id_valid(const char *s, size_t bytes_max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > bytes_max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return false;
    }
    return true;
}

static const char *const STATE_NAMES[KEEL_TWOPC__STATES] = {
    [KEEL_TWOPC_NEW] = "new",
    [KEEL_TWOPC_PREPARING] = "preparing",
    [KEEL_TWOPC_COMMITTING] = "committing",
    [KEEL_TWOPC_ABORTING] = "aborting",
    [KEEL_TWOPC_COMMITTED] = "committed",
    [KEEL_TWOPC_ABORTED] = "aborted",
    [KEEL_TWOPC_PREPARED] = "prepared",
};

const char *keel_twopc_state_name(keel_twopc_state_t st)
{
    return st < KEEL_TWOPC__STATES ? STATE_NAMES[st] : "?";
}

bool keel_twopc_state_final(keel_twopc_state_t st)
{
    return st == KEEL_TWOPC_COMMITTED || st == KEEL_TWOPC_ABORTED;
}

const char *keel_twopc_msg_name(keel_twopc_msg_t m)
{
    switch (m) {
    case KEEL_TWOPC_MSG_PREPARE:
        return "prepare";
    case KEEL_TWOPC_MSG_COMMIT:
        return "commit";
    case KEEL_TWOPC_MSG_ABORT:
        return "abort";
    }
    return "?";
}

/* ---- records ------------------------------------------------------------------------ */

static const char *const REC_NAMES[KEEL_TWOPC__REC_TYPES] = {
    [KEEL_TWOPC_REC_BEGIN] = "begin",
    [KEEL_TWOPC_REC_COMMIT] = "commit",
    [KEEL_TWOPC_REC_ABORT] = "abort",
    [KEEL_TWOPC_REC_END] = "end",
};

const char *keel_twopc_rec_type_name(keel_twopc_rec_type_t t)
{
    return t > 0 && t < KEEL_TWOPC__REC_TYPES ? REC_NAMES[t] : "?";
}

static uint32_t seq_of(keel_twopc_rec_type_t t)
{
    return t == KEEL_TWOPC_REC_BEGIN ? KEEL_TWOPC_SEQ_BEGIN
           : t == KEEL_TWOPC_REC_END ? KEEL_TWOPC_SEQ_END
                                     : KEEL_TWOPC_SEQ_DECISION;
}

int keel_twopc_rec_encode(const keel_twopc_rec_t *r, uint8_t *out, size_t cap)
{
    assert(r->type > 0 && r->type < KEEL_TWOPC__REC_TYPES);
    size_t n = KEEL_TWOPC_RECORD_HEADER_BYTES + r->data_len;
    if (n > cap || n > KEEL_TWOPC_RECORD_BYTES_MAX)
        return KEEL_ETOOBIG;
    out[4] = KEEL_TWOPC_RECORD_VERSION;
    out[5] = (uint8_t)r->type;
    keel_put_u16(out + 6, 0);
    keel_put_u32(out + 8, r->seq);
    keel_put_u64(out + 12, (uint64_t)r->time_ms);
    keel_put_u32(out + 20, (uint32_t)r->data_len);
    if (r->data_len)
        memmove(out + KEEL_TWOPC_RECORD_HEADER_BYTES, r->data, r->data_len);
    keel_put_u32(out, keel_crc32c(0, out + 4, n - 4));
    return (int)n;
}

int keel_twopc_rec_decode(const uint8_t *in, size_t len, keel_twopc_rec_t *r, keel_errmsg_t *msg)
{
    if (len < KEEL_TWOPC_RECORD_HEADER_BYTES || len > KEEL_TWOPC_RECORD_BYTES_MAX)
        return keel_errf(msg, KEEL_ECORRUPT, "2pc record of %zu bytes: out of range", len);
    if (keel_get_u32(in) != keel_crc32c(0, in + 4, len - 4))
        return keel_errf(msg, KEEL_ECORRUPT, "2pc record checksum mismatch");
    if (in[4] != KEEL_TWOPC_RECORD_VERSION)
        return keel_errf(msg, KEEL_ECORRUPT, "2pc record version %u unknown", in[4]);
    uint8_t type = in[5];
    if (type == 0 || type >= KEEL_TWOPC__REC_TYPES)
        return keel_errf(msg, KEEL_ECORRUPT, "2pc record type %u unknown", type);
    uint32_t seq = keel_get_u32(in + 8);
    if (keel_get_u16(in + 6) != 0 || seq != seq_of((keel_twopc_rec_type_t)type))
        return keel_errf(msg, KEEL_ECORRUPT, "2pc %s record with seq %u", REC_NAMES[type], seq);
    uint32_t data_len = keel_get_u32(in + 20);
    if ((size_t)data_len != len - KEEL_TWOPC_RECORD_HEADER_BYTES)
        return keel_errf(msg, KEEL_ECORRUPT, "2pc record says %u data bytes, has %zu", data_len,
                         len - KEEL_TWOPC_RECORD_HEADER_BYTES);
    r->type = (keel_twopc_rec_type_t)type;
    r->seq = seq;
    r->time_ms = (keel_ms_t)keel_get_u64(in + 12);
    r->data = data_len ? in + KEEL_TWOPC_RECORD_HEADER_BYTES : NULL;
    r->data_len = data_len;
    return 0;
}

int keel_twopc_abort_record(keel_ms_t now_ms, const char *reason, uint8_t *out, size_t cap)
{
    size_t n = reason ? strlen(reason) : 0;
    if (n > KEEL_TWOPC_REASON_BYTES_MAX)
        n = KEEL_TWOPC_REASON_BYTES_MAX;
    keel_twopc_rec_t r = {.type = KEEL_TWOPC_REC_ABORT,
                          .seq = KEEL_TWOPC_SEQ_DECISION,
                          .time_ms = now_ms,
                          .data = (const uint8_t *)reason,
                          .data_len = n};
    return keel_twopc_rec_encode(&r, out, cap);
}

/* ---- the coordinator ---------------------------------------------------------------- */

static int set_names(keel_twopc_coord_t *c, const char *const *names, uint32_t n,
                     keel_errmsg_t *msg)
{
    if (n == 0 || n > KEEL_TWOPC_PARTICIPANTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "a 2pc transaction has 1..%u participants",
                         KEEL_TWOPC_PARTICIPANTS_MAX);
    for (uint32_t i = 0; i < n; i++) {
        if (!keel_twopc_id_valid(names[i], KEEL_TWOPC_NAME_BYTES_MAX))
            return keel_errf(msg, KEEL_EINVAL,
                             "participant name %u must be 1..%u of "
                             "[A-Za-z0-9_.-]",
                             i, KEEL_TWOPC_NAME_BYTES_MAX);
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return keel_errf(msg, KEEL_EINVAL, "participant %s named twice", names[i]);
    }
    for (uint32_t i = 0; i < n; i++)
        snprintf(c->names[i], sizeof(c->names[i]), "%s", names[i]);
    c->n = n;
    return 0;
}

int keel_twopc_coord_init_recover(keel_twopc_coord_t *c, const keel_twopc_config_t *cfg,
                                  const char *id, uint64_t seed, keel_errmsg_t *msg)
{
    memset(c, 0, sizeof(*c));
    if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX))
        return keel_errf(msg, KEEL_EINVAL, "2pc id must be 1..%u of [A-Za-z0-9_.-]",
                         KEEL_TWOPC_ID_BYTES_MAX);
    int rc = keel_twopc_config_validate(cfg, msg);
    if (rc != 0)
        return rc;
    c->cfg = *cfg;
    snprintf(c->id, sizeof(c->id), "%s", id);
    keel_rand_seed(&c->rand, seed);
    c->state = KEEL_TWOPC_NEW;
    return 0;
}

int keel_twopc_coord_init(keel_twopc_coord_t *c, const keel_twopc_config_t *cfg, const char *id,
                          const char *const *names, uint32_t n, uint64_t seed, keel_errmsg_t *msg)
{
    int rc = keel_twopc_coord_init_recover(c, cfg, id, seed, msg);
    return rc != 0 ? rc : set_names(c, names, n, msg);
}

/* Parses BEGIN's data into names and input; checks them against what init gave, if any. */
static const char *parse_begin(keel_twopc_coord_t *c, const keel_twopc_rec_t *r, bool apply)
{
    const uint8_t *p = r->data, *end = r->data + r->data_len;
    if (r->data_len < 1)
        return "begin record without participants";
    uint32_t n = *p++;
    if (n == 0 || n > KEEL_TWOPC_PARTICIPANTS_MAX || (c->n != 0 && n != c->n))
        return "begin record names another set of participants";
    char names[KEEL_TWOPC_PARTICIPANTS_MAX][KEEL_TWOPC_NAME_BYTES_MAX + 1];
    const char *ptrs[KEEL_TWOPC_PARTICIPANTS_MAX];
    for (uint32_t i = 0; i < n; i++) {
        if (p >= end || *p == 0 || *p > KEEL_TWOPC_NAME_BYTES_MAX || (size_t)(end - p) < 1u + *p)
            return "begin record's participant names are malformed";
        memcpy(names[i], p + 1, *p);
        names[i][*p] = '\0';
        ptrs[i] = names[i];
        p += 1 + *p;
        if (c->n != 0 && strcmp(names[i], c->names[i]) != 0)
            return "begin record names another set of participants";
    }
    if ((size_t)(end - p) > KEEL_TWOPC_INPUT_BYTES_MAX)
        return "begin record's input is too long";
    if (!apply)
        return NULL;
    if (c->n == 0 && set_names(c, ptrs, n, NULL) != 0)
        return "begin record's participant names are invalid";
    c->input_len = (size_t)(end - p);
    if (c->input_len)
        memcpy(c->input, p, c->input_len);
    return NULL;
}

static const char *illegal(keel_twopc_coord_t *c, const keel_twopc_rec_t *r)
{
    if (r->seq != c->seq + 1)
        return "out of sequence";
    if (r->type == KEEL_TWOPC_REC_BEGIN)
        return parse_begin(c, r, false);
    if (r->type == KEEL_TWOPC_REC_END && c->state != KEEL_TWOPC_COMMITTING &&
        c->state != KEEL_TWOPC_ABORTING)
        return "end before a decision";
    return NULL;
}

static void apply(keel_twopc_coord_t *c, const keel_twopc_rec_t *r)
{
    c->seq = r->seq;
    switch (r->type) {
    case KEEL_TWOPC_REC_BEGIN:
        parse_begin(c, r, true);
        c->state = KEEL_TWOPC_PREPARING;
        c->begun_ms = r->time_ms;
        break;
    case KEEL_TWOPC_REC_COMMIT:
        c->state = KEEL_TWOPC_COMMITTING;
        c->decided_ms = r->time_ms;
        break;
    case KEEL_TWOPC_REC_ABORT: {
        size_t n =
            r->data_len < KEEL_TWOPC_REASON_BYTES_MAX ? r->data_len : KEEL_TWOPC_REASON_BYTES_MAX;
        if (n)
            memcpy(c->reason, r->data, n);
        c->reason[n] = '\0';
        c->state = KEEL_TWOPC_ABORTING;
        c->decided_ms = r->time_ms;
        break;
    }
    case KEEL_TWOPC_REC_END:
        c->state = c->state == KEEL_TWOPC_COMMITTING ? KEEL_TWOPC_COMMITTED : KEEL_TWOPC_ABORTED;
        break;
    default:
        assert(0);
    }
}

int keel_twopc_coord_replay(keel_twopc_coord_t *c, const uint8_t *rec, size_t len,
                            keel_errmsg_t *msg)
{
    keel_twopc_rec_t r = {0};
    int rc = keel_twopc_rec_decode(rec, len, &r, msg);
    if (rc != 0)
        return rc;
    const char *why = illegal(c, &r);
    if (why != NULL)
        return keel_errf(msg, KEEL_EPROTO, "2pc %s: %s record (seq %u): %s", c->id,
                         keel_twopc_rec_type_name(r.type), r.seq, why);
    apply(c, &r);
    return 0;
}

static void update_reset(const keel_twopc_coord_t *c, keel_twopc_coord_update_t *u)
{
    memset(u, 0, sizeof(*u));
    u->state = c->state;
}

static void want_log(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_rec_type_t type,
                     const char *reason, keel_twopc_coord_update_t *u)
{
    uint8_t data[KEEL_TWOPC_RECORD_BYTES_MAX];
    size_t len = 0;
    if (type == KEEL_TWOPC_REC_BEGIN) {
        data[len++] = (uint8_t)c->n;
        for (uint32_t i = 0; i < c->n; i++) {
            size_t nl = strlen(c->names[i]);
            data[len++] = (uint8_t)nl;
            memcpy(data + len, c->names[i], nl);
            len += nl;
        }
        memcpy(data + len, c->input, c->input_len);
        len += c->input_len;
    } else if (type == KEEL_TWOPC_REC_ABORT && reason) {
        len = strlen(reason);
        if (len > KEEL_TWOPC_REASON_BYTES_MAX)
            len = KEEL_TWOPC_REASON_BYTES_MAX;
        memcpy(data, reason, len);
    }
    keel_twopc_rec_t r = {
        .type = type, .seq = seq_of(type), .time_ms = now_ms, .data = data, .data_len = len};
    assert(r.seq == c->seq + 1);
    int n = keel_twopc_rec_encode(&r, c->rec_buf, sizeof(c->rec_buf));
    assert(n > 0);
    c->rec_len = (size_t)n;
    c->log_pending = true;
    c->want = type;
    u->action = KEEL_TWOPC_ACT_LOG;
    u->record = c->rec_buf;
    u->record_len = c->rec_len;
    u->seq = r.seq;
    u->rec_type = type;
}

static keel_ms_t backoff_ms(keel_rand_t *rnd, keel_ms_t base_ms, keel_ms_t cap_ms, uint32_t n)
{
    keel_ms_t cap = cap_ms;
    if (n < 30 && (base_ms << n) < cap_ms)
        cap = base_ms << n;
    return cap / 2 + (keel_ms_t)keel_rand_below(rnd, (uint64_t)(cap - cap / 2) + 1);
}

/* Whether participant i still needs the message of the phase. */
static bool needs(const keel_twopc_coord_t *c, uint32_t i)
{
    switch (c->phase_msg) {
    case KEEL_TWOPC_MSG_PREPARE:
        return c->p[i].vote == KEEL_TWOPC_VOTE_NONE;
    case KEEL_TWOPC_MSG_COMMIT:
        return !c->p[i].acked;
    case KEEL_TWOPC_MSG_ABORT: /* a no voter aborted itself: presumed abort skips it */
        return !c->p[i].acked && c->p[i].vote != KEEL_TWOPC_VOTE_NO;
    }
    return false;
}

/* Sends the phase's message to every participant that needs it, is not in flight and
 * whose backoff is over. */
static void want_sends(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_coord_update_t *u)
{
    uint32_t mask = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (!needs(c, i) || c->p[i].inflight || c->p[i].retry_ms > now_ms)
            continue;
        c->p[i].inflight = true;
        c->p[i].attempt++;
        u->attempt[i] = c->p[i].attempt;
        mask |= 1u << i;
    }
    if (mask) {
        u->action = KEEL_TWOPC_ACT_SEND;
        u->msg = c->phase_msg;
        u->to_mask = mask;
    }
}

static void start_phase(keel_twopc_coord_t *c, keel_twopc_msg_t m, keel_ms_t now_ms,
                        keel_twopc_coord_update_t *u)
{
    c->phase_msg = m;
    for (uint32_t i = 0; i < c->n; i++) {
        c->p[i].inflight = false; /* answers to the earlier phase are stale from now */
        c->p[i].acked = false;
        c->p[i].failures = 0;
        c->p[i].retry_ms = 0;
    }
    want_sends(c, now_ms, u);
}

/* With no log pending: what the durable and volatile state call for next. */
static void advance(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_coord_update_t *u)
{
    assert(!c->log_pending);
    switch (c->state) {
    case KEEL_TWOPC_PREPARING: {
        uint32_t yes = 0, missing = UINT32_MAX;
        char why[KEEL_TWOPC_REASON_BYTES_MAX];
        for (uint32_t i = 0; i < c->n; i++) {
            if (c->p[i].vote == KEEL_TWOPC_VOTE_NO) {
                snprintf(why, sizeof(why), "%s voted no", c->names[i]);
                want_log(c, now_ms, KEEL_TWOPC_REC_ABORT, why, u);
                return;
            }
            if (c->p[i].vote == KEEL_TWOPC_VOTE_YES)
                yes++;
            else if (missing == UINT32_MAX)
                missing = i;
        }
        if (yes == c->n) {
            want_log(c, now_ms, KEEL_TWOPC_REC_COMMIT, NULL, u);
        } else if (now_ms >= c->prepare_deadline_ms) {
            snprintf(why, sizeof(why), "no vote from %s by the prepare deadline",
                     c->names[missing]);
            want_log(c, now_ms, KEEL_TWOPC_REC_ABORT, why, u);
        } else {
            want_sends(c, now_ms, u);
        }
        return;
    }
    case KEEL_TWOPC_COMMITTING:
    case KEEL_TWOPC_ABORTING: {
        bool all = true;
        for (uint32_t i = 0; i < c->n; i++)
            all = all && !needs(c, i);
        if (all)
            want_log(c, now_ms, KEEL_TWOPC_REC_END, NULL, u);
        else
            want_sends(c, now_ms, u);
        return;
    }
    case KEEL_TWOPC_COMMITTED:
    case KEEL_TWOPC_ABORTED:
        u->action = KEEL_TWOPC_ACT_FINISH;
        return;
    default:
        assert(0);
    }
}

int keel_twopc_coord_begin(keel_twopc_coord_t *c, keel_ms_t now_ms, const void *input,
                           size_t input_len, keel_twopc_coord_update_t *u)
{
    update_reset(c, u);
    if (c->state != KEEL_TWOPC_NEW || c->log_pending || c->n == 0)
        return KEEL_EINVAL;
    if (input_len > KEEL_TWOPC_INPUT_BYTES_MAX)
        return KEEL_ETOOBIG;
    if (input_len)
        memcpy(c->input, input, input_len);
    c->input_len = input_len;
    want_log(c, now_ms, KEEL_TWOPC_REC_BEGIN, NULL, u);
    return 0;
}

int keel_twopc_coord_resume(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_coord_update_t *u)
{
    update_reset(c, u);
    if (c->state == KEEL_TWOPC_NEW)
        return KEEL_ENOTFOUND;
    if (c->log_pending)
        return KEEL_EINVAL;
    switch (c->state) {
    case KEEL_TWOPC_PREPARING: /* the votes died with the owner: presumed abort */
        want_log(c, now_ms, KEEL_TWOPC_REC_ABORT, "coordinator resumed before deciding", u);
        return 0;
    case KEEL_TWOPC_COMMITTING: /* who acknowledged died with the owner: tell everyone */
    case KEEL_TWOPC_ABORTING:
        start_phase(
            c, c->state == KEEL_TWOPC_COMMITTING ? KEEL_TWOPC_MSG_COMMIT : KEEL_TWOPC_MSG_ABORT,
            now_ms, u);
        if (u->action == KEEL_TWOPC_ACT_NONE)
            advance(c, now_ms, u);
        return 0;
    default:
        advance(c, now_ms, u);
        return 0;
    }
}

static int on_logged(keel_twopc_coord_t *c, keel_ms_t now_ms, keel_twopc_coord_update_t *u)
{
    keel_twopc_rec_t r = {0};
    int rc = keel_twopc_rec_decode(c->rec_buf, c->rec_len, &r, NULL);
    assert(rc == 0 && illegal(c, &r) == NULL);
    (void)rc;
    c->log_pending = false;
    apply(c, &r);
    u->state = c->state;
    switch (r.type) {
    case KEEL_TWOPC_REC_BEGIN:
        c->prepare_deadline_ms = now_ms + c->cfg.prepare_timeout_ms;
        start_phase(c, KEEL_TWOPC_MSG_PREPARE, now_ms, u);
        break;
    case KEEL_TWOPC_REC_COMMIT:
        start_phase(c, KEEL_TWOPC_MSG_COMMIT, now_ms, u);
        break;
    case KEEL_TWOPC_REC_ABORT:
        start_phase(c, KEEL_TWOPC_MSG_ABORT, now_ms, u);
        break;
    default:
        u->action = KEEL_TWOPC_ACT_FINISH;
        return 0;
    }
    if (u->action == KEEL_TWOPC_ACT_NONE) /* e.g. an abort nobody needs: end at once */
        advance(c, now_ms, u);
    return 0;
}

int keel_twopc_coord_step(keel_twopc_coord_t *c, const keel_twopc_coord_ev_t *ev,
                          keel_twopc_coord_update_t *u)
{
    update_reset(c, u);
    if (ev->type == KEEL_TWOPC_EV_LOGGED) {
        if (!c->log_pending)
            return KEEL_EINVAL;
        return on_logged(c, ev->now_ms, u);
    }
    if (ev->type == KEEL_TWOPC_EV_TICK) {
        if (!c->log_pending && !keel_twopc_state_final(c->state) && c->state != KEEL_TWOPC_NEW)
            advance(c, ev->now_ms, u);
        return 0;
    }
    uint32_t i = ev->participant;
    if (i >= c->n)
        return KEEL_EINVAL;
    /* a stale answer (an earlier attempt, an earlier phase's message): ignored */
    if (ev->msg != c->phase_msg || ev->attempt != c->p[i].attempt || !c->p[i].inflight)
        return 0;
    c->p[i].inflight = false;
    switch (ev->type) {
    case KEEL_TWOPC_EV_VOTE_YES:
    case KEEL_TWOPC_EV_VOTE_NO:
        if (ev->msg != KEEL_TWOPC_MSG_PREPARE)
            return KEEL_EINVAL;
        c->p[i].vote =
            ev->type == KEEL_TWOPC_EV_VOTE_YES ? KEEL_TWOPC_VOTE_YES : KEEL_TWOPC_VOTE_NO;
        break;
    case KEEL_TWOPC_EV_ACK:
        if (ev->msg == KEEL_TWOPC_MSG_PREPARE)
            return KEEL_EINVAL;
        c->p[i].acked = true;
        break;
    case KEEL_TWOPC_EV_SEND_FAILED:
        c->p[i].retry_ms = ev->now_ms + backoff_ms(&c->rand, c->cfg.resend_base_ms,
                                                   c->cfg.resend_cap_ms, c->p[i].failures++);
        break;
    default:
        return KEEL_EINVAL;
    }
    if (!c->log_pending)
        advance(c, ev->now_ms, u);
    return 0;
}

keel_ms_t keel_twopc_coord_next_deadline_ms(const keel_twopc_coord_t *c)
{
    if (c->log_pending || c->phase_msg == 0 || keel_twopc_state_final(c->state))
        return KEEL_MS_NEVER;
    keel_ms_t next = KEEL_MS_NEVER;
    if (c->state == KEEL_TWOPC_PREPARING)
        next = c->prepare_deadline_ms;
    for (uint32_t i = 0; i < c->n; i++)
        if (needs(c, i) && !c->p[i].inflight && c->p[i].retry_ms < next)
            next = c->p[i].retry_ms;
    return next;
}

size_t keel_twopc_coord_describe(const keel_twopc_coord_t *c, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "%s %s seq=%u n=%u input=%zu/%08x begun=%lld decided=%lld "
                     "reason=\"%s\"",
                     c->id, keel_twopc_state_name(c->state), c->seq, c->n, c->input_len,
                     keel_crc32c(0, c->input, c->input_len), (long long)c->begun_ms,
                     (long long)c->decided_ms, c->reason);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- the participant ---------------------------------------------------------------- */

void keel_twopc_part_init(keel_twopc_part_t *p, const keel_twopc_config_t *cfg, uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->cfg = *cfg;
    keel_rand_seed(&p->rand, seed);
    p->state = KEEL_TWOPC_NEW;
}

void keel_twopc_part_restore(keel_twopc_part_t *p, keel_twopc_state_t st, keel_ms_t now_ms)
{
    assert(st == KEEL_TWOPC_NEW || st == KEEL_TWOPC_PREPARED || keel_twopc_state_final(st));
    p->state = st;
    p->local = KEEL_TWOPC_PACT_NONE;
    p->request = 0;
    p->inquiring = false;
    p->inquiries = 0;
    p->inquire_ms = now_ms + p->cfg.in_doubt_ms;
}

static void reply(keel_twopc_part_t *p, keel_twopc_reply_t r, keel_twopc_part_update_t *u)
{
    p->request = 0;
    u->action = KEEL_TWOPC_PACT_REPLY;
    u->reply = r;
}

static void local(keel_twopc_part_t *p, keel_twopc_part_action_t a, keel_twopc_part_update_t *u)
{
    p->local = a;
    u->action = a;
}

/* A request, with no local action in progress. */
static int on_request(keel_twopc_part_t *p, keel_twopc_msg_t m, keel_twopc_part_update_t *u)
{
    p->request = m;
    switch (m) {
    case KEEL_TWOPC_MSG_PREPARE:
        if (p->state == KEEL_TWOPC_NEW)
            local(p, KEEL_TWOPC_PACT_PREPARE, u);
        else /* a repeat: the first answer again (committed: it had voted yes) */
            reply(p, p->state == KEEL_TWOPC_ABORTED ? KEEL_TWOPC_REPLY_NO : KEEL_TWOPC_REPLY_YES,
                  u);
        return 0;
    case KEEL_TWOPC_MSG_COMMIT:
        if (p->state == KEEL_TWOPC_PREPARED) {
            local(p, KEEL_TWOPC_PACT_COMMIT, u);
        } else if (p->state == KEEL_TWOPC_COMMITTED) {
            reply(p, KEEL_TWOPC_REPLY_ACK, u);
        } else {
            p->request = 0; /* commit without a promise: the protocol is broken */
            return KEEL_EPROTO;
        }
        return 0;
    case KEEL_TWOPC_MSG_ABORT:
        if (p->state == KEEL_TWOPC_PREPARED) {
            local(p, KEEL_TWOPC_PACT_ABORT, u);
        } else if (p->state == KEEL_TWOPC_NEW) {
            local(p, KEEL_TWOPC_PACT_TOMBSTONE, u);
        } else if (p->state == KEEL_TWOPC_ABORTED) {
            reply(p, KEEL_TWOPC_REPLY_ACK, u);
        } else {
            p->request = 0;
            return KEEL_EPROTO;
        }
        return 0;
    }
    p->request = 0;
    return KEEL_EINVAL;
}

/* A local action finished durably. */
static int on_local_done(keel_twopc_part_t *p, const keel_twopc_part_ev_t *ev,
                         keel_twopc_part_update_t *u)
{
    keel_twopc_part_action_t was = p->local;
    bool ok = false;
    switch (ev->type) {
    case KEEL_TWOPC_PEV_PREPARED:
        ok = was == KEEL_TWOPC_PACT_PREPARE;
        if (ok) {
            p->state = KEEL_TWOPC_PREPARED;
            p->inquire_ms = ev->now_ms + p->cfg.in_doubt_ms;
            p->inquiries = 0;
        }
        break;
    case KEEL_TWOPC_PEV_REFUSED:
        ok = was == KEEL_TWOPC_PACT_PREPARE;
        if (ok)
            p->state = KEEL_TWOPC_ABORTED;
        break;
    case KEEL_TWOPC_PEV_DONE:
        ok = was == KEEL_TWOPC_PACT_TOMBSTONE || was == KEEL_TWOPC_PACT_COMMIT ||
             was == KEEL_TWOPC_PACT_ABORT;
        if (ok)
            p->state = was == KEEL_TWOPC_PACT_COMMIT ? KEEL_TWOPC_COMMITTED : KEEL_TWOPC_ABORTED;
        break;
    default:
        break;
    }
    if (!ok)
        return KEEL_EINVAL;
    p->local = KEEL_TWOPC_PACT_NONE;
    u->state = p->state;
    if (p->request == KEEL_TWOPC_MSG_PREPARE)
        reply(p, p->state == KEEL_TWOPC_PREPARED ? KEEL_TWOPC_REPLY_YES : KEEL_TWOPC_REPLY_NO, u);
    else if (p->request != 0)
        reply(p, KEEL_TWOPC_REPLY_ACK, u);
    return 0;
}

int keel_twopc_part_step(keel_twopc_part_t *p, const keel_twopc_part_ev_t *ev,
                         keel_twopc_part_update_t *u)
{
    memset(u, 0, sizeof(*u));
    u->state = p->state;
    switch (ev->type) {
    case KEEL_TWOPC_PEV_REQUEST:
        if (p->local != KEEL_TWOPC_PACT_NONE || p->inquiring) {
            u->action = KEEL_TWOPC_PACT_REPLY; /* one thing at a time: try again */
            u->reply = KEEL_TWOPC_REPLY_BUSY;
            return 0;
        }
        return on_request(p, ev->msg, u);
    case KEEL_TWOPC_PEV_PREPARED:
    case KEEL_TWOPC_PEV_REFUSED:
    case KEEL_TWOPC_PEV_DONE:
        return on_local_done(p, ev, u);
    case KEEL_TWOPC_PEV_INQUIRED:
        if (!p->inquiring)
            return KEEL_EINVAL;
        p->inquiring = false;
        if (p->state != KEEL_TWOPC_PREPARED) /* resolved meanwhile: check it agrees */
            return (p->state == KEEL_TWOPC_COMMITTED) == ev->commit ? 0 : KEEL_EPROTO;
        local(p, ev->commit ? KEEL_TWOPC_PACT_COMMIT : KEEL_TWOPC_PACT_ABORT, u);
        return 0;
    case KEEL_TWOPC_PEV_INQUIRY_FAILED:
        if (!p->inquiring)
            return KEEL_EINVAL;
        p->inquiring = false;
        p->inquire_ms = ev->now_ms + backoff_ms(&p->rand, p->cfg.inquire_base_ms,
                                                p->cfg.inquire_cap_ms, p->inquiries++);
        return 0;
    case KEEL_TWOPC_PEV_TICK:
        if (p->state == KEEL_TWOPC_PREPARED && p->local == KEEL_TWOPC_PACT_NONE && !p->inquiring &&
            ev->now_ms >= p->inquire_ms) {
            p->inquiring = true;
            u->action = KEEL_TWOPC_PACT_INQUIRE;
        }
        return 0;
    }
    return KEEL_EINVAL;
}

keel_ms_t keel_twopc_part_next_deadline_ms(const keel_twopc_part_t *p)
{
    if (p->state != KEEL_TWOPC_PREPARED || p->local != KEEL_TWOPC_PACT_NONE || p->inquiring)
        return KEEL_MS_NEVER;
    return p->inquire_ms;
}
