/* ap_move.c - the AP keyspace in keel server: moving keys to their new homes on a ring change. */
#include "server/ap_int.h"

#include "base/log.h"
#include "core/applace.h"
#include "proto/resp.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stdlib.h>
#include <string.h>

/*
 * The ring comes from the Raft configuration (ap.c keel__ap_ring_refresh). When it changes,
 * a key's preference list changes only by the member that joined or left (core/applace.h):
 * about N/nodes of the keys gain one home, and only those move.
 *
 * Each node keeps the ring it last moved keys for (the base, recorded in the store). When
 * the ring in force differs from the base, the node walks its store in the background,
 * AP_MOVE_SCAN_BATCH keys every AP_MOVE_INTERVAL_MS, and for every key it is a base home of
 * queues each home the key gained (a member of the new ring's homes, not of the base's) as
 * a hint: a 'move hint'. Hinted handoff (ap_replica.c) delivers those like any other hint, in
 * its bounded rounds, and drops each once the new home acknowledged it durably. Reads and
 * writes go on meanwhile on the new ring; nothing waits for the move.
 *
 * Every base home that is still a member sends (not one chosen sender): a write
 * acknowledged by any W of the base homes reaches the new home from each of them, including
 * a base home that the change made a non-home (its copy is the only one a W=ONE write may
 * have). The cost is up to N sends per moved copy; a merge of a copy already held writes
 * nothing.
 *
 * Once the walk is done, the new ring is recorded as the base (one fdatasync, which makes
 * the hints queued durable too): a restart before that walks again; after it, handoff goes
 * on from the durable hints. A ring that changes again during a walk restarts the walk
 * from the base to the newest ring. A key map that grew during a walk (new keys) restarts
 * it too (its order changed); the hints already queued stay, each once.
 *
 * A leaving node (removed from the configuration, so out of its own ring: ap.c
 * keel__ap_ring_refresh) walks the same way, but queues every key it holds, whatever it was
 * a home of, for every home the key has on the ring without it: a write acknowledged by it
 * alone (W=ONE) has no other copy, and the homes that stay may lack it as much as the one
 * the key gained. It refuses replica writes from then on (ap_replica.c), so what it holds
 * stops changing and the walk covers all of it. It is drained (keel__ap_drained, the metric
 * keel_ap_drained) once the walk is done and every hint it holds was delivered; the
 * operator stops it then (docs/ap.md, "A leaving node").
 *
 * A hint for a member removed before it was delivered is retargeted by the handoff round
 * (ap_replica.c). The copies a node holds of keys it is no longer a home of are dropped
 * later, once every home acknowledged holding them (ap_clean.c).
 */
#define AP_MOVE_INTERVAL_MS 50
#define AP_MOVE_SCAN_BATCH 1024

static int has(const uint64_t *ids, int n, uint64_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static int same_ring(const uint64_t *a, uint32_t an, const uint64_t *b, uint32_t bn)
{
    return an == bn && memcmp(a, b, an * sizeof(a[0])) == 0;
}

/* The key's homes on the base ring. */
static int base_homes(const ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes)
{
    uint32_t idx[AP_REPLICAS_MAX];
    uint32_t k =
        keel_applace_prefs(&ap->mv.from, keel_applace_key_hash(key, len), idx, AP_REPLICAS_MAX);
    for (uint32_t i = 0; i < k; i++)
        homes[i] = ap->mv.base[idx[i]];
    return (int)k;
}

static int set_base(ap_t *ap, const uint64_t *ids, uint32_t n)
{
    if (n > 0 && keel_applace_build(&ap->mv.from, ids, n) != 0)
        return KEEL_ENOMEM;
    memcpy(ap->mv.base, ids, n * sizeof(ids[0]));
    ap->mv.base_n = n;
    return 0;
}

int keel__ap_move_init(ap_t *ap)
{
    int rc = keel_applace_init(&ap->mv.from, KEEL_APPLACE_NODES_MAX, KEEL_APPLACE_VNODES_DEFAULT);
    if (rc != 0)
        return rc;
    uint64_t ids[KEEL_APPLACE_NODES_MAX];
    uint32_t n = keel_apstore_moved_ring(ap->store, ids, KEEL_APPLACE_NODES_MAX);
    rc = set_base(ap, ids, n);
    if (rc != 0)
        keel_applace_free(&ap->mv.from); /* not inited: keel__ap_move_free will not run */
    return rc;
}

void keel__ap_move_free(ap_t *ap)
{
    keel_applace_free(&ap->mv.from);
}

/* The ring in force changed to ap->ids: start (or restart) the walk from the base to it. */
void keel__ap_move_ring_changed(ap_t *ap)
{
    keel_errmsg_t msg;
    if (ap->mv.base_n == 0 && !keel__ap_leaving(ap)) { /* no ring recorded: nothing to move */
        if (keel_apstore_set_moved_ring(ap->store, ap->ids, ap->ids_n, &msg) == 0)
            (void)set_base(ap, ap->ids, ap->ids_n);
        else
            keel_log_warn("ap: ring not recorded", KF_STR("why", msg.text));
        return;
    }
    ap->mv.active = !same_ring(ap->mv.base, ap->mv.base_n, ap->ids, ap->ids_n) ||
                    (ap->mv.base_n == 0 && keel__ap_leaving(ap));
    ap->mv.pos = 0;
    ap->mv.layout = keel_apstore_layout(ap->store);
    ap->mv.scanned = 0;
    ap->mv.queued = 0;
    if (ap->mv.active)
        keel_log_info(keel__ap_leaving(ap) ? "ap: leaving the ring, handing every key to its homes"
                                           : "ap: ring changed, moving keys",
                      KF_INT("members_before", ap->mv.base_n), KF_INT("members_now", ap->ids_n),
                      KF_INT("keys_here", (int64_t)keel_apstore_count(ap->store)));
}

typedef struct scan {
    ap_t *ap;
    uint64_t me;
    int leaving; /* out of the ring: every key goes to every home it has */
    int full;    /* a hint was refused (KEEL_APSTORE_MOVE_HINTS_MAX): rescan later */
    size_t visited;
} scan_t;

static void scan_key(void *arg, const uint8_t *key, size_t len)
{
    scan_t *sc = arg;
    ap_t *ap = sc->ap;
    sc->visited++;
    uint64_t was[AP_REPLICAS_MAX], now[AP_REPLICAS_MAX];
    int wn = 0;
    if (!sc->leaving) {
        wn = base_homes(ap, key, len, was);
        if (!has(was, wn, sc->me))
            return; /* a copy this node held as no home (a fallback's): not its to move */
    }
    int nn = keel__ap_prefs_now(ap, key, len, now, NULL, NULL);
    for (int i = 0; i < nn; i++) {
        if (now[i] == sc->me || has(was, wn, now[i]))
            continue;
        int rc = keel_apstore_hint_add(ap->store, now[i], key, len);
        if (rc == 1) { /* a new one (a walk that started over renews the ones it queued) */
            keel_counter_inc(ap->m_move_keys);
            ap->mv.queued++;
        } else if (rc < 0) {
            sc->full = 1;
        }
    }
}

/* One bounded step of the walk; the tick calls it every AP_MOVE_INTERVAL_MS. */
void keel__ap_move_step(ap_t *ap)
{
    keel_ms_t now = keel_clock_now_ms();
    if (!ap->mv.active || now < ap->mv.next_ms)
        return;
    ap->mv.next_ms = now + AP_MOVE_INTERVAL_MS;
    if (keel_apstore_layout(ap->store) != ap->mv.layout) { /* the key map grew: start over */
        ap->mv.layout = keel_apstore_layout(ap->store);
        ap->mv.pos = 0;
        ap->mv.scanned = 0;
    }
    scan_t sc = {ap, keel__ap_self_id(ap), keel__ap_leaving(ap), 0, 0};
    size_t before = ap->mv.pos;
    int done = keel_apstore_scan(ap->store, &ap->mv.pos, AP_MOVE_SCAN_BATCH, scan_key, &sc);
    keel_counter_inc(ap->m_move_batches);
    ap->mv.scanned += sc.visited;
    if (sc.full) { /* the hints are full: this batch again once handoff made room */
        ap->mv.pos = before;
        ap->mv.scanned -= sc.visited; /* not visited after all: keel_ap_move_pending counts it */
        ap->mv.next_ms = now + AP_HANDOFF_INTERVAL_MS;
        return;
    }
    if (!done)
        return;
    keel_errmsg_t msg;
    if (keel_apstore_set_moved_ring(ap->store, ap->ids, ap->ids_n, &msg) != 0) {
        keel_log_warn("ap: moved ring not recorded, walking again", KF_STR("why", msg.text));
        ap->mv.pos = 0;
        return;
    }
    (void)set_base(ap, ap->ids, ap->ids_n);
    ap->mv.active = 0;
    keel__ap_clean_soon(ap); /* copies of keys this node lost may be dropped (ap_clean.c) */
    keel_counter_inc(ap->m_move_passes);
    keel_log_info("ap: keys queued for their new homes", KF_INT("queued", (int64_t)ap->mv.queued),
                  KF_INT("keys_here", (int64_t)keel_apstore_count(ap->store)));
}

/* Keys of the walk not visited yet (0 when no walk is under way). */
size_t keel__ap_move_pending(const ap_t *ap)
{
    size_t n = keel_apstore_count(ap->store);
    return !ap->mv.active ? 0 : ap->mv.scanned >= n ? 1 : n - ap->mv.scanned;
}

int keel__ap_leaving(const ap_t *ap)
{
    uint64_t me = keel__ap_self_id(ap);
    return ap->ids_n > 0 && !has(ap->ids, (int)ap->ids_n, me);
}

int keel__ap_drained(const ap_t *ap)
{
    return keel__ap_leaving(ap) && !ap->mv.active && keel_apstore_hints(ap->store) == 0;
}

/*
 * KEEL.AP.STATUS: where this node's AP keys stand, for an operator (or `keel member remove
 * --wait-ap-drain`) waiting for a leaver to be done: a flat array of names and integers,
 * leaving, drained, move_pending, hints_pending, keys (the metrics of the same names).
 */
int keel__srv_cmd_ap_status(keel_resp_client_t *c, size_t argc, const keel_resp_arg_t *argv)
{
    (void)argc, (void)argv;
    ap_t *ap = keel__srv_of(c)->ap;
    (void)keel__ap_ring_refresh(ap);
    const char *name[] = {"leaving", "drained", "move_pending", "hints_pending", "keys"};
    int64_t val[] = {keel__ap_leaving(ap), keel__ap_drained(ap), (int64_t)keel__ap_move_pending(ap),
                     (int64_t)keel_apstore_hints(ap->store),
                     (int64_t)keel_apstore_count(ap->store)};
    keel_buf_t *out = keel_resp_client_out(c);
    int rc = keel_resp_write_array_header(out, 2 * 5);
    for (int i = 0; i < 5; i++) {
        rc = rc ?: keel_resp_write_bulk(out, name[i], strlen(name[i]));
        rc = rc ?: keel_resp_write_int(out, val[i]);
    }
    return rc;
}
