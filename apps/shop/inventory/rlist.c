/* rlist.c - a product's open reservations as the reserve sees them in one read: the entries
 * of inv:rlist:P, told apart by inv:rdone:P (the orders confirmed or released since the last
 * reserve of P) and by the deadline each entry carries (docs/shop.md, "One read round").
 *
 * An entry is "O=qty@deadline_ms" (the deadline in the writing instance's Unix clock, never
 * later than its reservation keys' own expiry), or a bare "O" (written before 7 Dec: its
 * quantity and life are unknown). Each entry is one of:
 *   DONE   O is in rdone: its reservation was confirmed (the stock already took it) or
 *          released; not held, pruned.
 *   LIVE   not done, and its deadline is comfortably ahead of the clock: held (its quantity
 *          counts), kept. Counting a reservation that in fact expired as held only makes
 *          the stock look lower than it is; no clock error can make it look higher.
 *   CHECK  everything else (bare, near or past its deadline, or a deadline too far ahead to
 *          be believed): its reservation key is read (a second round, as every entry was
 *          read before 7 Dec), held if it lives, pruned if not. */
#include "inventory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct span {
    const char *p;
    size_t len;
} span_t;

static int span_cmp(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Splits a space-separated value into spans: count, or -1 past cap. */
static int split(const slot_t *s, span_t *out, size_t cap)
{
    size_t n = 0;
    if (!s->present)
        return 0;
    for (const char *p = s->val, *end = s->val + s->len; p < end;) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        size_t len = sp ? (size_t)(sp - p) : (size_t)(end - p);
        if (len > 0) {
            if (n == cap)
                return -1;
            out[n++] = (span_t){p, len};
        }
        p += len + 1;
    }
    return (int)n;
}

/* "O=qty@deadline": fills id, qty, deadline; bare "O": qty = deadline = -1. 0, or -1. */
static int entry_parse(span_t s, rentry_t *e)
{
    const char *eq = memchr(s.p, '=', s.len);
    e->text = s.p;
    e->len = s.len;
    e->id = s.p;
    e->id_len = eq ? (size_t)(eq - s.p) : s.len;
    e->qty = e->deadline_ms = -1;
    if (!shop_id_ok(e->id, e->id_len))
        return -1;
    if (eq == NULL)
        return 0;
    const char *num = eq + 1, *end = s.p + s.len;
    const char *at = memchr(num, '@', (size_t)(end - num));
    if (at == NULL || keel_parse_i64((const uint8_t *)num, (size_t)(at - num), &e->qty) != 0 ||
        e->qty < 1 || e->qty > QTY_MAX ||
        keel_parse_i64((const uint8_t *)at + 1, (size_t)(end - at - 1), &e->deadline_ms) != 0 ||
        e->deadline_ms < 0)
        return -1;
    return 0;
}

int rlist_view(const slot_t *list, const slot_t *done, int64_t now_ms, int64_t ttl_ms,
               rentry_t *out, size_t cap)
{
    static span_t entries[RLIST_READ_MAX], dones[RDONE_MAX];
    int n = split(list, entries, cap < RLIST_READ_MAX ? cap : RLIST_READ_MAX);
    int m = split(done, dones, RDONE_MAX);
    if (n < 0 || m < 0)
        return RLIST_TOO_MANY;
    for (int i = 0; i < m; i++)
        if (!shop_id_ok(dones[i].p, dones[i].len))
            return RLIST_CORRUPT;
    qsort(dones, (size_t)m, sizeof(dones[0]), span_cmp);
    for (int i = 0; i < n; i++) {
        rentry_t *e = &out[i];
        if (entry_parse(entries[i], e) != 0)
            return RLIST_CORRUPT;
        span_t id = {e->id, e->id_len};
        if (m > 0 && bsearch(&id, dones, (size_t)m, sizeof(dones[0]), span_cmp) != NULL)
            e->cls = RENTRY_DONE;
        else if (e->qty > 0 && e->deadline_ms - RLIST_TRUST_SKEW_MS > now_ms &&
                 e->deadline_ms <= now_ms + ttl_ms + RLIST_TRUST_SKEW_MS)
            e->cls = RENTRY_LIVE;
        else
            e->cls = RENTRY_CHECK;
    }
    return n;
}

/* Queues one MGET of the reservation keys of product's CHECK entries into the next slot (an
 * empty answer when there are none). */
void rlist_queue_checks(op_t *o, const char *product, const rentry_t *e, int n)
{
    static const char *argv[RLIST_READ_MAX + 1];
    static char keys[RLIST_READ_MAX][KEY_BYTES];
    size_t k = 0;
    for (int j = 0; j < n; j++) {
        if (e[j].cls != RENTRY_CHECK)
            continue;
        snprintf(keys[k], KEY_BYTES, "inv:resv:%s:%.*s", product, (int)e[j].id_len, e[j].id);
        argv[k + 1] = keys[k];
        k++;
    }
    if (k == 0) {
        o->n_slots++; /* nothing to read: an empty answer */
        return;
    }
    argv[0] = "MGET";
    read_mget(o, k + 1, argv);
}
