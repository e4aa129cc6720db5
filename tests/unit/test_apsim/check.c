/* check.c - test_apsim's checker: at the end of a run, convergence, no acknowledged write or
 * increment lost, reads that saw what an overlapping quorum wrote. */
#include "sim.h"

/* ---- the checker -------------------------------------------------------------------------- */
/*
 * The promise holds against lost disks as far as the copies go: a write acknowledged by W
 * replicas survives the loss of any W - 1 data directories (a hinted copy moves to its home
 * on handoff, so copies are never fewer than W). Writes with W or more nodes wiped after they
 * began are left out of the check, and counted.
 */
static int acked_and_safe(sim_t *s, const op_t *o)
{
    if (!o->ok)
        return 0;
    int wiped = 0;
    for (int n = 0; n < NODES; n++)
        wiped += s->wiped_at[n] > o->start;
    if (wiped >= o->w) {
        s->stat_exempt++;
        return 0;
    }
    return 1;
}

/* Every dot is issued once (docs/ap.md, "Why dots are safe"): an actor that issued a dot twice
 * for two writes makes a replica take the second for the first, and the checks below, which
 * know a write by its dot, cannot tell them apart. A quadratic pass over the writes that
 * issued one (a run has at most OPS_MAX operations). */
static int dots_unique(sim_t *s)
{
    for (int i = 0; i < s->ops_n; i++) {
        const op_t *a = &s->ops[i];
        if ((a->kind != OP_PUT && a->kind != OP_DEL) || !a->dot.counter)
            continue;
        for (int j = i + 1; j < s->ops_n; j++) {
            const op_t *b = &s->ops[j];
            if ((b->kind == OP_PUT || b->kind == OP_DEL) && b->key == a->key &&
                b->dot.actor == a->dot.actor && b->dot.counter == a->dot.counter)
                return FAIL(s,
                            "ops %d and %d (key %d) were both given dot (%" PRIx64 ",%" PRIu64 ")",
                            i, j, a->key, a->dot.actor, a->dot.counter);
        }
    }
    return 0;
}

int apsim_check(sim_t *s)
{
    if (dots_unique(s) != 0)
        return -1;
    /* convergence: the homes of every key hold the same state, and no hint is pending */
    for (int k = 0; k < NK; k++) {
        int h0 = (int)s->prefs[k][0];
        for (int i = 1; i < NREP; i++) {
            int h = (int)s->prefs[k][i];
            if (apsim_state_digest(&s->node[h], k) != apsim_state_digest(&s->node[h0], k))
                return FAIL(s, "key %d: homes %d and %d did not converge", k, h0, h);
        }
        for (int n = 0; n < NODES; n++)
            for (int h = 0; h < NODES; h++)
                if (s->node[n].hint_seq[k][h])
                    return FAIL(s, "node %d still holds a hint of key %d for %d", n, k, h);
    }
    for (int i = 0; i < s->ops_n; i++) {
        const op_t *o = &s->ops[i];
        const node_t *home = &s->node[s->prefs[o->key][0]];
        /* an acknowledged write had W homes' copies stored (by the home or its stand-in),
           as the replicas recorded them: what makes W - 1 lost disks survivable */
        if (o->kind != OP_GET && o->ok && o->held_at_ack < o->w)
            return FAIL(s, "op %d (key %d, W=%d, acked by %#x) acknowledged with %d homes' copies",
                        i, o->key, o->w, o->ackers, o->held_at_ack);
        if ((o->kind == OP_PUT || o->kind == OP_DEL) && acked_and_safe(s, o)) {
            const keel_apobj_t *f = &home->obj[o->key];
            s->stat_writes_checked++;
            if (keel_apobj_find(f, o->dot) >= 0)
                continue;
            int superseded = 0;
            for (int j = 0; j < s->ops_n && !superseded; j++) {
                const op_t *w = &s->ops[j];
                superseded = (w->kind == OP_PUT || w->kind == OP_DEL) && w->key == o->key &&
                             w->dot.counter && w->has_ctx && keel_vv_covers(&w->ctx, o->dot) &&
                             keel_vv_covers(&f->vv, w->dot);
            }
            if (!superseded)
                return FAIL(s,
                            "op %d (key %d, W=%d, acked by %#x) lost: dot (%" PRIx64 ",%" PRIu64
                            ") is neither a sibling nor superseded by a write that saw it",
                            i, o->key, o->w, o->ackers, o->dot.actor, o->dot.counter);
        }
        if (o->kind == OP_GET && o->ok && o->key < SKEYS) {
            /* a read at R after a write acknowledged by W homes, R + W > N, sees it */
            for (int j = 0; j < s->ops_n; j++) {
                const op_t *w = &s->ops[j];
                if ((w->kind != OP_PUT && w->kind != OP_DEL) || w->key != o->key || !w->ok ||
                    w->end >= o->start || __builtin_popcount(w->home_ackers) < w->w ||
                    o->r + w->w <= NREP)
                    continue;
                /* left out: a lost disk, or a ring change (a new home starts empty: the
                   Dynamo caveat, until anti-entropy has moved its ranges) */
                int wiped = s->ring_changed_at > w->start && s->ring_changed_at <= o->end;
                for (int n = 0; n < NODES; n++)
                    wiped |= s->wiped_at[n] > w->start;
                s->stat_reads_checked += !wiped;
                if (!wiped && !keel_vv_covers(&o->ctx, w->dot))
                    return FAIL(s, "read op %d (R=%d) missed write op %d (W=%d, acked by %#x)", i,
                                o->r, j, w->w, w->home_ackers);
            }
        }
        if (o->kind == OP_INCR && acked_and_safe(s, o)) {
            /* the actor's count in the final state includes this increment, as a prefix */
            const keel_pncounter_t *c = &home->cnt[o->key];
            s->stat_incrs_checked++;
            uint64_t have = keel_vv_get(o->delta > 0 ? &c->p.c : &c->n.c, o->actor);
            if (have < o->cum)
                return FAIL(s,
                            "increment op %d (key %d, %+" PRId64
                            ", W=%d) lost: actor count %" PRIu64 " < %" PRIu64,
                            i, o->key, o->delta, o->w, have, o->cum);
            int prefix = 0;
            for (int j = 0; j < s->ops_n && !prefix; j++) {
                const op_t *x = &s->ops[j];
                prefix = x->kind == OP_INCR && x->key == o->key && x->actor == o->actor &&
                         (x->delta > 0) == (o->delta > 0) && x->cum == have;
            }
            if (!prefix)
                return FAIL(
                    s, "counter key %d: actor count %" PRIu64 " is no prefix of its increments",
                    o->key, have);
        }
    }
    return 0;
}
