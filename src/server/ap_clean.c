/* ap_clean.c - the AP keyspace in keel server: dropping copies of keys this node is no longer a
 * home of. */
#include "server/ap_int.h"

#include "base/log.h"
#include "core/apval.h"
#include "proto/apmsg.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stdlib.h>
#include <string.h>

/*
 * A copy this node holds of a key it is not a home of (an old home's after a ring change, a
 * stand-in's after its hint was delivered, a copy that a write sent under an old ring left)
 * takes disk and memory forever unless it is dropped. The rule (docs/ap.md, "Dropping the
 * copies of keys a node is no longer a home of"): the copy of key K, whose state hashes to D (its
 * Merkle item, keel_apstore_key_item), is dropped only when, all checked in one step of the loop,
 * with nothing in between:
 *
 *   1. this node is not one of K's homes on the ring in force, and is not leaving;
 *   2. if K's state holds dots this node's actor issued (keel_apval_has_actor), K's hash is
 *      logged and kept as it goes (keel_apstore_forget_own): the node issues its next dot for
 *      K from the state it holds, so with the state gone it would issue a dot again that the
 *      homes have seen (docs/ap.md, "Why dots are safe"); before it writes a key of such a
 *      hash again it takes a new actor (ap_cmds.c), which retires the old one's dots;
 *   3. no hint names K here (a stand-in's or a move's: those deliver the copy first);
 *   4. every home of K on the ring in force acknowledged a HANDOFF of this very state D
 *      (HANDOFF_ACK comes after the home's fdatasync of its merge), the homes being the same
 *      as when the state was sent;
 *   5. the state is still D (keel_apstore_forget compares the hash under the same call).
 *
 * A write that reaches K here between the sends and the drop changes the hash (5 fails:
 * the candidate starts over with the new state, and the homes get that too; if this node
 * coordinated it, the state holds its actor, and rule 2 keeps the key's hash at the drop). A
 * hinted write adds a hint (3). So a drop never loses a state no home holds, and never the only
 * copy: it needs at least one home, and every home, to hold it durably.
 *
 * The candidates (key -> hash, the homes, which acknowledged) live in memory: lost in a
 * restart, they are built again by the next pass. The walk: AP_CLEAN_SCAN_BATCH keys or
 * AP_CLEAN_SENDS_MAX sends per AP_CLEAN_STEP_MS step; a pass starts at start, when a move walk
 * ends, within AP_CLEAN_RETRY_MS after a hint was delivered (a stand-in's copy may go) or a pass
 * left candidates waiting, and AP_CLEAN_PERIOD_MS after one that left none. Nothing runs while a
 * move walk is under way (the walk's position in the key map must not shift under it), on a leaver
 * (it hands off and is stopped), or in a cluster of at most AP_REPLICAS_MAX members (every member
 * is a home of every key).
 */
#define AP_CLEAN_STEP_MS 50
#define AP_CLEAN_SCAN_BATCH 1024
#define AP_CLEAN_SENDS_MAX 256
#define AP_CLEAN_RETRY_MS 1000
#define AP_CLEAN_PERIOD_MS 60000
#define AP_CLEAN_CANDIDATES_MAX (1u << 16)

typedef struct cand {
    uint64_t hash, seq;
    uint64_t homes[AP_REPLICAS_MAX];
    int homes_n;
    uint32_t acked; /* bit i: homes[i] acknowledged the state of that hash */
    keel_ms_t sent_ms;
} cand_t;

int keel__ap_clean_init(ap_t *ap)
{
    /* Sequence numbers start from the wall clock: an acknowledgement of a candidate sent
       before a restart cannot match one of this run's (seq counts up from ms << 20). */
    ap->cl.seq = (uint64_t)keel_clock_unix_ms() << 20;
    return keel_map_init(&ap->cl.cand, 64, AP_CLEAN_CANDIDATES_MAX, 0x636c);
}

int keel__ap_clean_may_ack(ap_t *ap, const uint8_t *key, size_t len)
{
    if (keel__ap_leaving(ap))
        return 0;
    uint64_t homes[AP_REPLICAS_MAX], me = keel__ap_self_id(ap);
    int nh = keel__ap_prefs_now(ap, key, len, homes, NULL, NULL);
    for (int i = 0; i < nh; i++)
        if (homes[i] == me)
            return 1;
    return 0;
}

void keel__ap_clean_free(ap_t *ap)
{
    keel_map_free(&ap->cl.cand, free);
}

void keel__ap_clean_soon(ap_t *ap)
{
    if (!ap->cl.active)
        ap->cl.pass_ms = 0;
}

void keel__ap_clean_hint_delivered(ap_t *ap)
{
    keel_ms_t soon = keel_clock_now_ms() + AP_CLEAN_RETRY_MS;
    if (!ap->cl.active && ap->cl.pass_ms > soon)
        ap->cl.pass_ms = soon;
}

size_t keel__ap_clean_pending(const ap_t *ap)
{
    return ap->cl.cand.count;
}

static void cand_del(ap_t *ap, const uint8_t *key, size_t len)
{
    void *old;
    if (keel_map_del(&ap->cl.cand, key, len, &old) == 0)
        free(old);
}

static void cand_send(ap_t *ap, cand_t *c, const uint8_t *key, size_t len, const keel_apval_t *v,
                      keel_ms_t now)
{
    c->sent_ms = now;
    for (int i = 0; i < c->homes_n; i++)
        if (!(c->acked & (1u << i)) &&
            keel__ap_send_state(ap, KEEL_APMSG_HANDOFF, c->homes[i], AP_CLEAN_REQ_BIT | c->seq, key,
                                len, v) == 0)
            ap->cl.sends++;
}

typedef struct visit {
    ap_t *ap;
    uint64_t me, actor;
    keel_ms_t now;
    const uint8_t *drop_key; /* set when the key visited may be dropped now */
    size_t drop_len;
    uint64_t drop_hash;
    int drop_own; /* its state holds this node's dots (rule 2) */
} visit_t;

static void visit_key(void *arg, const uint8_t *key, size_t len)
{
    visit_t *vi = arg;
    ap_t *ap = vi->ap;
    const keel_apval_t *v = keel_apstore_get(ap->store, key, len);
    uint64_t homes[AP_REPLICAS_MAX];
    int nh = keel__ap_prefs_now(ap, key, len, homes, NULL, NULL), mine = 0;
    for (int i = 0; i < nh; i++)
        mine |= homes[i] == vi->me;
    if (!v || nh <= 0 || mine) {
        cand_del(ap, key, len); /* rule 1: kept */
        return;
    }
    if (keel_apstore_key_hints(ap->store, key, len) > 0)
        return; /* rule 3: its hints deliver it first; then it is visited again */
    uint64_t d = keel_apstore_key_item(ap->store, key, len); /* the state's hash, kept: O(1) */
    void **slot = keel_map_get(&ap->cl.cand, key, len);
    cand_t *c = slot ? *slot : NULL;
    if (c && c->hash == d && c->homes_n == nh &&
        memcmp(c->homes, homes, (size_t)nh * sizeof(homes[0])) == 0) {
        if (c->acked == (1u << nh) - 1) { /* rule 4; rule 5 is checked by the forget */
            vi->drop_key = key, vi->drop_len = len, vi->drop_hash = d;
            vi->drop_own = keel_apval_has_actor(v, vi->actor); /* rule 2 */
        } else if (vi->now >= c->sent_ms + AP_CLEAN_RETRY_MS) {
            cand_send(ap, c, key, len, v, vi->now); /* lost, or a home was down */
        }
        return;
    }
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c || keel_map_put(&ap->cl.cand, key, len, c, NULL) < 0) {
            free(c); /* full: a later pass takes it */
            return;
        }
    }
    /* New, or the state or the homes changed since it was sent: start over with this state. */
    c->hash = d;
    c->seq = ++ap->cl.seq;
    memcpy(c->homes, homes, (size_t)nh * sizeof(homes[0]));
    c->homes_n = nh;
    c->acked = 0;
    cand_send(ap, c, key, len, v, vi->now);
}

/* A home acknowledged a HANDOFF this walk sent (req: AP_CLEAN_REQ_BIT | the candidate's seq). */
void keel__ap_clean_acked(ap_t *ap, uint64_t from, const uint8_t *key, size_t len, uint64_t req)
{
    void **slot = keel_map_get(&ap->cl.cand, key, len);
    cand_t *c = slot ? *slot : NULL;
    if (!c || c->seq != (req & ~AP_CLEAN_REQ_BIT))
        return; /* an older state's acknowledgement: it proves nothing about this one */
    for (int i = 0; i < c->homes_n; i++)
        if (c->homes[i] == from)
            c->acked |= 1u << i;
}

static int should_run(ap_t *ap)
{
    if (ap->mv.active || keel__ap_leaving(ap) || ap->ids_n <= AP_REPLICAS_MAX) {
        if (ap->cl.active) /* interrupted: start over once it may run */
            ap->cl.active = 0, ap->cl.pass_ms = 0;
        return 0;
    }
    return 1;
}

/* One bounded step of the walk; the tick calls it. */
void keel__ap_clean_step(ap_t *ap)
{
    keel_ms_t now = keel_clock_now_ms();
    if (now < ap->cl.step_ms || !should_run(ap))
        return;
    ap->cl.step_ms = now + AP_CLEAN_STEP_MS;
    if (!ap->cl.active) {
        if (now < ap->cl.pass_ms)
            return;
        ap->cl.active = 1;
        ap->cl.pos = 0;
        ap->cl.layout = keel_apstore_layout(ap->store);
    }
    if (keel_apstore_layout(ap->store) != ap->cl.layout) { /* the key map grew: start over */
        ap->cl.layout = keel_apstore_layout(ap->store);
        ap->cl.pos = 0;
    }
    visit_t vi = {ap, keel__ap_self_id(ap), keel__ap_self_actor(ap), now, NULL, 0, 0, 0};
    ap->cl.sends = 0;
    int done = 0;
    for (int i = 0; i < AP_CLEAN_SCAN_BATCH && ap->cl.sends < AP_CLEAN_SENDS_MAX && !done; i++) {
        vi.drop_key = NULL;
        done = keel_apstore_scan(ap->store, &ap->cl.pos, 1, visit_key, &vi);
        if (!vi.drop_key)
            continue;
        /* Outside the scan's callback: the key's slot is freed. A drop can shift a later key
         * before the cursor (the map's backward shift): it waits for the next pass. */
        uint8_t key[KEEL_APSTORE_KEY_BYTES_MAX];
        size_t len = vi.drop_len;
        memcpy(key, vi.drop_key, len);
        keel_errmsg_t msg;
        int rc = vi.drop_own ? keel_apstore_forget_own(ap->store, key, len, vi.drop_hash, &msg)
                             : keel_apstore_forget(ap->store, key, len, vi.drop_hash, &msg);
        if (rc == 1) {
            keel_counter_inc(ap->m_dropped);
            cand_del(ap, key, len);
        } else if (rc < 0) {
            keel_log_warn("ap: copy not dropped", KF_STR("why", msg.text));
        }
    }
    if (!done)
        return;
    ap->cl.active = 0;
    ap->cl.pass_ms = now + (ap->cl.cand.count > 0 ? AP_CLEAN_RETRY_MS : AP_CLEAN_PERIOD_MS);
}
