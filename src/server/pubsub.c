/* pubsub.c - channel and pattern subscriptions, per subscriber and per channel. */
#include "base/glob.h"
#include "server/pubsub.h"

#include "base/err.h"
#include "base/map.h"
#include "base/vec.h"
#include "core/kv.h"

#include <stdlib.h>
#include <string.h>

typedef struct name {
    uint8_t *s;
    size_t len;
    int pattern;
} name_t;

/* One subscriber's subscriptions. */
typedef struct subrec {
    name_t *v;
    size_t n, cap;
} subrec_t;

/* One channel's subscribers. */
typedef struct chan {
    void **v;
    size_t n, cap;
} chan_t;

typedef struct psub {
    uint8_t *pat;
    size_t len;
    void *sub;
} psub_t;

struct keel_pubsub {
    keel_map_t chans; /* channel -> chan_t */
    keel_map_t subs;  /* subscriber pointer -> subrec_t */
    psub_t *pats;
    size_t npats, cap_pats;
};

keel_pubsub_t *keel_pubsub_new(void)
{
    keel_pubsub_t *ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        return NULL;
    if (keel_map_init(&ps->chans, 64, 0, 7) != 0 || keel_map_init(&ps->subs, 64, 0, 11) != 0) {
        keel_pubsub_free(ps);
        return NULL;
    }
    return ps;
}

static void free_chan(void *v)
{
    chan_t *c = v;
    free(c->v);
    free(c);
}

static void free_subrec(void *v)
{
    subrec_t *r = v;
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].s);
    free(r->v);
    free(r);
}

void keel_pubsub_free(keel_pubsub_t *ps)
{
    if (ps == NULL)
        return;
    if (ps->chans.slots)
        keel_map_free(&ps->chans, free_chan);
    if (ps->subs.slots)
        keel_map_free(&ps->subs, free_subrec);
    for (size_t i = 0; i < ps->npats; i++)
        free(ps->pats[i].pat);
    free(ps->pats);
    free(ps);
}

static subrec_t *rec_of(const keel_pubsub_t *ps, void *sub)
{
    void **v = keel_map_get(&ps->subs, &sub, sizeof(sub));
    return v ? *v : NULL;
}

static size_t find_name(const subrec_t *r, const uint8_t *s, size_t len, int pattern)
{
    for (size_t i = 0; r && i < r->n; i++)
        if (r->v[i].pattern == pattern && r->v[i].len == len && memcmp(r->v[i].s, s, len) == 0)
            return i;
    return SIZE_MAX;
}

int keel_pubsub_subscribe(keel_pubsub_t *ps, void *sub, const uint8_t *name, size_t len,
                          int pattern)
{
    subrec_t *r = rec_of(ps, sub);
    if (find_name(r, name, len, pattern) != SIZE_MAX)
        return 0;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL || keel_map_put(&ps->subs, &sub, sizeof(sub), r, NULL) < 0) {
            free(r);
            return KEEL_ENOMEM;
        }
    }
    if (r->n >= KEEL_PUBSUB_SUBS_MAX)
        return KEEL_EFULL;
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL || keel_vec_grow(&r->v, &r->cap, r->n + 1, sizeof(name_t), 4) != 0) {
        free(copy);
        return KEEL_ENOMEM;
    }
    memcpy(copy, name, len);
    if (pattern) {
        uint8_t *pc = malloc(len ? len : 1);
        if (pc == NULL ||
            keel_vec_grow(&ps->pats, &ps->cap_pats, ps->npats + 1, sizeof(psub_t), 4)) {
            free(pc);
            free(copy);
            return KEEL_ENOMEM;
        }
        memcpy(pc, name, len);
        ps->pats[ps->npats++] = (psub_t){pc, len, sub};
    } else {
        void **cv = keel_map_get(&ps->chans, name, len);
        chan_t *c = cv ? *cv : calloc(1, sizeof(chan_t));
        if (c == NULL || (cv == NULL && keel_map_put(&ps->chans, name, len, c, NULL) < 0) ||
            keel_vec_grow(&c->v, &c->cap, c->n + 1, sizeof(void *), 4) != 0) {
            if (cv == NULL)
                free(c);
            free(copy);
            return KEEL_ENOMEM;
        }
        c->v[c->n++] = sub;
    }
    r->v[r->n++] = (name_t){copy, len, pattern};
    return 1;
}

static void unlink_sub(keel_pubsub_t *ps, void *sub, const uint8_t *name, size_t len, int pattern)
{
    if (pattern) {
        for (size_t i = 0; i < ps->npats; i++)
            if (ps->pats[i].sub == sub && ps->pats[i].len == len &&
                memcmp(ps->pats[i].pat, name, len) == 0) {
                free(ps->pats[i].pat);
                ps->pats[i] = ps->pats[--ps->npats];
                return;
            }
        return;
    }
    void **cv = keel_map_get(&ps->chans, name, len);
    if (cv == NULL)
        return;
    chan_t *c = *cv;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i] == sub) {
            c->v[i] = c->v[--c->n];
            break;
        }
    if (c->n == 0) {
        keel_map_del(&ps->chans, name, len, NULL);
        free_chan(c);
    }
}

int keel_pubsub_unsubscribe(keel_pubsub_t *ps, void *sub, const uint8_t *name, size_t len,
                            int pattern)
{
    subrec_t *r = rec_of(ps, sub);
    size_t i = find_name(r, name, len, pattern);
    if (i == SIZE_MAX)
        return 0;
    unlink_sub(ps, sub, name, len, pattern);
    free(r->v[i].s);
    r->v[i] = r->v[--r->n];
    if (r->n == 0) {
        keel_map_del(&ps->subs, &sub, sizeof(sub), NULL);
        free_subrec(r);
    }
    return 1;
}

size_t keel_pubsub_count(const keel_pubsub_t *ps, void *sub)
{
    subrec_t *r = rec_of(ps, sub);
    return r ? r->n : 0;
}

int keel_pubsub_nth(const keel_pubsub_t *ps, void *sub, int pattern, size_t i, const uint8_t **name,
                    size_t *len)
{
    subrec_t *r = rec_of(ps, sub);
    for (size_t k = 0; r && k < r->n; k++)
        if (r->v[k].pattern == pattern && i-- == 0) {
            *name = r->v[k].s;
            *len = r->v[k].len;
            return 0;
        }
    return KEEL_ENOTFOUND;
}

void keel_pubsub_drop(keel_pubsub_t *ps, void *sub)
{
    subrec_t *r = rec_of(ps, sub);
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++)
        unlink_sub(ps, sub, r->v[i].s, r->v[i].len, r->v[i].pattern);
    keel_map_del(&ps->subs, &sub, sizeof(sub), NULL);
    free_subrec(r);
}

/*
 * Matches are gathered first and delivered after: a delivery may close its subscriber
 * (an output limit), which drops that subscriber's subscriptions and would reshuffle the
 * arrays being walked. A subscriber gone by its turn is skipped.
 */
size_t keel_pubsub_publish(keel_pubsub_t *ps, const uint8_t *ch, size_t ch_len, const uint8_t *msg,
                           size_t msg_len, keel_pubsub_deliver_fn deliver, void *data)
{
    void **cv = keel_map_get(&ps->chans, ch, ch_len);
    chan_t *c = cv ? *cv : NULL;
    size_t max = (c ? c->n : 0) + ps->npats, n = 0;
    if (max == 0)
        return 0;
    psub_t *hits = malloc(max * sizeof(*hits));
    if (hits == NULL)
        return 0;
    for (size_t i = 0; c && i < c->n; i++)
        hits[n++] = (psub_t){NULL, 0, c->v[i]};
    for (size_t i = 0; i < ps->npats; i++)
        if (keel_glob_match(ps->pats[i].pat, ps->pats[i].len, ch, ch_len))
            hits[n++] = ps->pats[i];
    size_t delivered = 0;
    for (size_t i = 0; i < n; i++) {
        if (rec_of(ps, hits[i].sub) == NULL)
            continue; /* closed by an earlier delivery */
        deliver(data, hits[i].sub, hits[i].pat, hits[i].len, ch, ch_len, msg, msg_len);
        delivered++;
    }
    free(hits);
    return delivered;
}
