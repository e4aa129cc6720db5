/* membership.c - configurations: voters and learners, one-voter-at-a-time changes (thesis §4). */
#include <assert.h>
#include <string.h>

#include "base/bytes.h"
#include "core/raft/raft_int.h"

/* CONF entry encoding, little endian: u32 voters_n, u32 learners_n, then u64 ids, then
   the ctx bytes (whatever follows the ids; none in entries written before ctx existed). */
#define CONF_BYTES_MAX (8 + 8 * 2 * KEEL_RAFT_MEMBERS_MAX + KEEL_RAFT_CONF_CTX_BYTES_MAX)

static size_t conf_encode(const keel_raft_conf_t *c, uint8_t *buf)
{
    keel_put_u64(buf, (uint64_t)c->voters_n | ((uint64_t)c->learners_n << 32));
    size_t n = 8;
    for (uint32_t i = 0; i < c->voters_n; i++, n += 8)
        keel_put_u64(buf + n, c->voters[i]);
    for (uint32_t i = 0; i < c->learners_n; i++, n += 8)
        keel_put_u64(buf + n, c->learners[i]);
    assert(c->ctx_len <= KEEL_RAFT_CONF_CTX_BYTES_MAX);
    memcpy(buf + n, c->ctx, c->ctx_len);
    return n + c->ctx_len;
}

int keel__raft_conf_decode(const uint8_t *buf, size_t len, keel_raft_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    if (len < 8)
        return KEEL_EPROTO;
    uint64_t h = keel_get_u64(buf);
    uint64_t vn = h & 0xffffffffu, ln = h >> 32;
    if (vn + ln > KEEL_RAFT_MEMBERS_MAX || len < 8 + 8 * (vn + ln) ||
        len - 8 - 8 * (vn + ln) > KEEL_RAFT_CONF_CTX_BYTES_MAX)
        return KEEL_EPROTO;
    c->voters_n = (uint32_t)vn;
    c->learners_n = (uint32_t)ln;
    for (uint64_t i = 0; i < vn; i++)
        c->voters[i] = keel_get_u64(buf + 8 + 8 * i);
    for (uint64_t i = 0; i < ln; i++)
        c->learners[i] = keel_get_u64(buf + 8 + 8 * (vn + i));
    c->ctx_len = (uint32_t)(len - 8 - 8 * (vn + ln));
    memcpy(c->ctx, buf + 8 + 8 * (vn + ln), c->ctx_len);
    return keel__raft_conf_check(c) == 0 ? 0 : KEEL_EPROTO;
}

int keel_raft_conf_decode(const uint8_t *data, size_t len, keel_raft_conf_t *out)
{
    return keel__raft_conf_decode(data, len, out);
}

int keel__raft_conf_is_voter(const keel_raft_conf_t *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->voters_n; i++)
        if (c->voters[i] == id)
            return 1;
    return 0;
}

static int is_learner(const keel_raft_conf_t *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->learners_n; i++)
        if (c->learners[i] == id)
            return 1;
    return 0;
}

/* Ids nonzero and distinct, nobody both voter and learner, within the member limit. */
int keel__raft_conf_check(const keel_raft_conf_t *c)
{
    if (c->voters_n + c->learners_n > KEEL_RAFT_MEMBERS_MAX ||
        c->ctx_len > KEEL_RAFT_CONF_CTX_BYTES_MAX)
        return KEEL_EINVAL;
    uint64_t all[2 * KEEL_RAFT_MEMBERS_MAX];
    size_t n = 0;
    for (uint32_t i = 0; i < c->voters_n; i++)
        all[n++] = c->voters[i];
    for (uint32_t i = 0; i < c->learners_n; i++)
        all[n++] = c->learners[i];
    for (size_t i = 0; i < n; i++) {
        if (all[i] == 0)
            return KEEL_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (all[j] == all[i])
                return KEEL_EINVAL;
    }
    return 0;
}

static keel__raft_progress_t *slot_for(keel_raft_t *r, uint64_t id)
{
    keel__raft_progress_t *p = keel__raft_progress(r, id);
    if (p != NULL)
        return p;
    assert(r->prs_n < KEEL_RAFT_MEMBERS_MAX);
    p = &r->prs[r->prs_n++];
    uint64_t *il = p->infl_last, *ib = p->infl_bytes; /* the slot keeps its buffers */
    memset(p, 0, sizeof(*p));
    p->infl_last = il;
    p->infl_bytes = ib;
    p->id = id;
    p->is_self = id == r->cfg.id;
    p->recent_active = 1;
    keel__raft_become_probe(p, keel__raft_log_last(&r->log) + 1);
    return p;
}

/*
 * Makes c the configuration in force (entry `index`, 0 for the base): progress for
 * new members, none for departed ones (their slots are recycled), quorum of voters.
 */
void keel__raft_conf_set(keel_raft_t *r, const keel_raft_conf_t *c, uint64_t index)
{
    r->conf = *c;
    r->conf_index = index;
    for (size_t i = 0; i < r->prs_n; i++) {
        if (keel__raft_conf_is_voter(c, r->prs[i].id) || is_learner(c, r->prs[i].id))
            continue;
        keel__raft_progress_t t = r->prs[i];
        r->prs[i] = r->prs[r->prs_n - 1];
        r->prs[--r->prs_n] = t;
        i--;
    }
    for (uint32_t i = 0; i < c->voters_n; i++)
        slot_for(r, c->voters[i])->is_voter = 1;
    for (uint32_t i = 0; i < c->learners_n; i++)
        slot_for(r, c->learners[i])->is_voter = 0;
    r->quorum = c->voters_n / 2 + 1;
    r->self_voter = keel__raft_conf_is_voter(c, r->cfg.id);
}

/* The configuration as of `index`: its latest CONF entry at or before it, else the base. */
void keel__raft_conf_at(const keel_raft_t *r, uint64_t index, keel_raft_conf_t *out)
{
    size_t k;
    for (const keel_raft_entry_t *e = keel__raft_log_conf_at(&r->log, index, &k); e != NULL;
         e = keel__raft_log_conf_before(&r->log, &k))
        if (keel__raft_conf_decode(e->data, e->len, out) == 0)
            return;
    *out = r->base_conf;
}

/* After a truncation or at start: the latest configuration in the log wins. */
void keel__raft_conf_recompute(keel_raft_t *r)
{
    keel_raft_conf_t c;
    size_t k;
    for (const keel_raft_entry_t *e =
             keel__raft_log_conf_at(&r->log, keel__raft_log_last(&r->log), &k);
         e != NULL; e = keel__raft_log_conf_before(&r->log, &k))
        if (keel__raft_conf_decode(e->data, e->len, &c) == 0) {
            keel__raft_conf_set(r, &c, e->index);
            return;
        }
    keel__raft_conf_set(r, &r->base_conf, 0);
}

static uint32_t voters_changed(const keel_raft_conf_t *a, const keel_raft_conf_t *b)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->voters_n; i++)
        n += !keel__raft_conf_is_voter(b, a->voters[i]);
    for (uint32_t i = 0; i < b->voters_n; i++)
        n += !keel__raft_conf_is_voter(a, b->voters[i]);
    return n;
}

int keel_raft_propose_conf(keel_raft_t *r, const keel_raft_conf_t *next)
{
    assert(!r->ready_out);
    if (r->role != KEEL_RAFT_LEADER)
        return KEEL_ENOTLEADER;
    if (r->transfer_to != 0 || r->conf_index > r->commit)
        return KEEL_EBUSY;
    if (keel__raft_log_term(&r->log, r->commit) != r->term)
        return KEEL_EAGAIN;
    if (keel__raft_conf_check(next) != 0 || next->voters_n == 0 ||
        voters_changed(&r->conf, next) > 1)
        return KEEL_EINVAL;
    uint8_t buf[CONF_BYTES_MAX];
    size_t len = conf_encode(next, buf);
    int rc = keel__raft_log_append(&r->log, r->term, KEEL_RAFT_ENTRY_CONF, buf, len);
    if (rc != 0)
        return rc;
    /* A leader removing itself keeps leading, without counting itself, until the
       entry commits (thesis §4.2.2). */
    keel__raft_conf_set(r, next, keel__raft_log_last(&r->log));
    keel__raft_maybe_commit(r); /* the quorum may have shrunk */
    return 0;
}

const keel_raft_conf_t *keel_raft_conf(const keel_raft_t *r)
{
    return &r->conf;
}

void keel_raft_conf_at(const keel_raft_t *r, uint64_t index, keel_raft_conf_t *out)
{
    assert(index >= r->snap.index);
    keel__raft_conf_at(r, index, out);
}

uint64_t keel_raft_match_index(const keel_raft_t *r, uint64_t id)
{
    if (r->role != KEEL_RAFT_LEADER)
        return 0;
    for (size_t i = 0; i < r->prs_n; i++)
        if (r->prs[i].id == id)
            return r->prs[i].match;
    return 0;
}
