/* ap.c - the AP keyspace in keel server: placement, messages, the tick, start and stop. */
#include "server/ap_int.h"

#include "base/log.h"
#include "core/applace.h"
#include "proto/apmsg.h"
#include "runtime/apstore.h"
#include "runtime/clock.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- placement ------------------------------------------------------------------------ */

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The ring of the members in force; rebuilt (with the per-peer trees) when they change, and
 * then the keys that gained a home move (ap_move.c). The ids are sorted: a member promoted
 * from learner to voter reorders the directory, not the ring. A node removed from the
 * configuration leaves itself out even when its own directory still lists it (a peer told
 * it of the removal, whose entry it never got): it is then a leaver, and hands every key it
 * holds to the key's homes on that ring (ap_move.c).
 */
int keel__ap_ring_refresh(ap_t *ap)
{
    const keel_memberdir_t *d = keel_node_members(ap->srv->node);
    uint64_t me = keel__ap_self_id(ap);
    int out = keel_node_removed(ap->srv->node);
    uint64_t ids[KEEL_APPLACE_NODES_MAX];
    uint32_t n = 0;
    for (size_t i = 0; d && i < d->n && n < KEEL_APPLACE_NODES_MAX; i++)
        if (!out || d->m[i].id != me)
            ids[n++] = d->m[i].id;
    if (n == 0)
        return 0;
    qsort(ids, n, sizeof(ids[0]), id_cmp);
    if (n != ap->ids_n || memcmp(ids, ap->ids, n * sizeof(ids[0])) != 0) {
        if (keel_applace_build(&ap->place, ids, n) != 0)
            return 0;
        memcpy(ap->ids, ids, n * sizeof(ids[0]));
        ap->ids_n = n;
        keel__ap_trees_rebuild(ap);
        keel__ap_move_ring_changed(ap);
    }
    return (int)n;
}

/* The key's preference list on the current ring (no refresh): homes, then up to
 * AP_REPLICAS_MAX fallbacks. */
int keel__ap_prefs_now(const ap_t *ap, const uint8_t *key, size_t len, uint64_t *homes,
                       uint64_t *fallbacks, int *fallbacks_n)
{
    if (ap->ids_n == 0)
        return 0;
    uint32_t idx[2 * AP_REPLICAS_MAX];
    uint32_t k = keel_applace_prefs(&ap->place, keel_applace_key_hash(key, len), idx,
                                    fallbacks ? 2 * AP_REPLICAS_MAX : AP_REPLICAS_MAX);
    uint32_t nh = k < AP_REPLICAS_MAX ? k : AP_REPLICAS_MAX;
    for (uint32_t i = 0; i < nh; i++)
        homes[i] = ap->ids[idx[i]];
    if (fallbacks) {
        *fallbacks_n = (int)(k - nh);
        for (uint32_t i = nh; i < k; i++)
            fallbacks[i - nh] = ap->ids[idx[i]];
    }
    return (int)nh;
}

uint64_t keel__ap_self_id(const ap_t *ap)
{
    return keel_node_config(ap->srv->node)->id;
}

/* ---- messages ------------------------------------------------------------------------- */

/* 0, or KEEL_ENOTFOUND (no live connection to `to`: it is down), KEEL_EFULL. */
int keel__ap_send_msg(ap_t *ap, uint64_t to, const keel_apmsg_t *m)
{
    /* A state leaving this node may hold a dot this node just issued: the copy that holds it
       must be durable here first (ap_coord.c, "Group commit of the coordinator's copy"). */
    int state = m->value_len > 0 && m->type != KEEL_APMSG_FORWARD &&
                m->type != KEEL_APMSG_FORWARD_REPLY; /* those two carry no state, no dot */
    if (state && ap->held_n > 0 && keel__ap_own_flush(ap) != 0)
        return KEEL_EIO;
    keel_buf_reset(&ap->msg);
    int rc = keel_apmsg_encode(&ap->msg, m);
    return rc ? rc : keel_node_send_ap(ap->srv->node, to, ap->msg.data, ap->msg.len);
}

int keel__ap_send_state(ap_t *ap, uint8_t type, uint64_t to, uint64_t req, const uint8_t *key,
                        size_t key_len, const keel_apval_t *v)
{
    keel_buf_t val;
    keel_buf_init(&val, 0);
    int rc = keel_apval_encode(v, &val);
    if (rc == 0) {
        keel_apmsg_t m = {.type = type,
                          .req = req,
                          .key = key,
                          .key_len = key_len,
                          .value = val.data,
                          .value_len = val.len};
        rc = keel__ap_send_msg(ap, to, &m);
    }
    keel_buf_free(&val);
    return rc;
}

int keel__ap_send_write(ap_t *ap, uint64_t to, uint64_t req, const uint8_t *key, size_t key_len,
                        const keel_apval_t *v)
{
    return keel__ap_send_state(ap, KEEL_APMSG_WRITE, to, req, key, key_len, v);
}

/* ---- the tick ---------------------------------------------------------------------------- */

/*
 * Compaction of the replica store's log (runtime/apstore.h): the pass over the state runs on the
 * loop (the records encoded into memory as of the log's position: nothing changes meanwhile),
 * the file's write, fsync and rename on a thread of the store's while the loop goes on; a later
 * tick sees it done and puts it in force. Lazy replica writes not synced yet are synced by the
 * start, so their ACKs go out at the end of the turn as before. A failure leaves the old
 * snapshot and log in force; it is retried AP_COMPACT_RETRY_MS later.
 */
#define AP_COMPACT_RETRY_MS 60000

static void compact_failed(ap_t *ap, keel_ms_t now, const keel_errmsg_t *msg)
{
    ap->compact_next_ms = now + AP_COMPACT_RETRY_MS;
    keel_log_warn("ap: compaction of the replica store failed; the old log stays in force",
                  KF_STR("error", msg->text));
}

static void compact_step(ap_t *ap, keel_ms_t now)
{
    keel_errmsg_t msg;
    int rc;
    if (keel_apstore_compact_poll(ap->store, &rc, &msg)) {
        if (rc != 0) {
            compact_failed(ap, now, &msg);
        } else {
            keel_counter_inc(ap->m_compactions);
            keel_log_info("ap: replica store compacted",
                          KF_INT("log_bytes_before", (int64_t)ap->compact_before),
                          KF_INT("log_bytes_after", (int64_t)keel_apstore_log_bytes(ap->store)),
                          KF_INT("keys", (int64_t)keel_apstore_count(ap->store)),
                          KF_INT("loop_ms", (int64_t)ap->compact_loop_ms),
                          KF_INT("ms", (int64_t)(now - ap->compact_started_ms)));
        }
    }
    keel_gauge_set(ap->m_log_bytes, (int64_t)keel_apstore_log_bytes(ap->store));
    if (now < ap->compact_next_ms || !keel_apstore_compact_due(ap->store))
        return;
    ap->compact_before = keel_apstore_log_bytes(ap->store);
    keel_ms_t t0 = keel_clock_now_ms();
    rc = keel_apstore_compact_start(ap->store, &msg);
    ap->compact_loop_ms = keel_clock_now_ms() - t0;
    ap->compact_started_ms = t0;
    if (rc < 0)
        compact_failed(ap, now, &msg);
    else if (rc > 0) /* the loop's share: the pass over the state */
        keel_histogram_observe(ap->m_compact_seconds, (double)ap->compact_loop_ms / 1000.0);
}

static void on_tick(keel_timer_t *t, void *data)
{
    (void)t;
    ap_t *ap = data;
    keel_ms_t now = keel_clock_now_ms();
    (void)keel__ap_own_flush(ap);    /* normally done at the end of each turn; first: the ops
                                        walk below must not see a held write freed under it */
    (void)keel__ap_ring_refresh(ap); /* a node that learns it was removed starts to leave */
    uint32_t ae_ms = ap->srv->cfg.ap_antientropy_ms;
    if (ae_ms > 0 && now >= ap->ae_next_ms) {
        ap->ae_next_ms = now + ae_ms;
        keel__ap_ae_round(ap);
    }
    if (now >= ap->handoff_next_ms) {
        ap->handoff_next_ms = now + AP_HANDOFF_INTERVAL_MS;
        keel__ap_handoff_round(ap);
    }
    keel__ap_handoff_acks_flush(ap);
    keel__ap_write_acks_flush(ap); /* normally done at the end of each turn (node.h on_pass) */
    keel__ap_move_step(ap);
    keel__ap_clean_step(ap);
    compact_step(ap, now);
    keel_gauge_set(ap->m_drop_pending, (int64_t)keel__ap_clean_pending(ap));
    keel_gauge_set(ap->m_hints_pending, (int64_t)keel_apstore_hints(ap->store));
    keel_gauge_set(ap->m_move_pending, (int64_t)keel__ap_move_pending(ap));
    keel_gauge_set(ap->m_leaving, keel__ap_leaving(ap));
    int drained = keel__ap_drained(ap);
    keel_gauge_set(ap->m_drained, drained);
    if (drained && !ap->drained_said)
        keel_log_info("ap: drained: every AP key this node held reached its homes; it may be "
                      "stopped",
                      KF_INT("keys_here", (int64_t)keel_apstore_count(ap->store)));
    ap->drained_said = drained;
    keel_gauge_set(ap->m_keys, (int64_t)keel_apstore_count(ap->store));
    keel_gauge_set(ap->m_dropped_own, (int64_t)keel_apstore_dropped_count(ap->store));
    keel_gauge_set(ap->m_syncs, (int64_t)keel_apstore_syncs(ap->store));
    for (ap_op_t *o = ap->ops, *next; o; o = next) {
        next = o->next;
        if (!o->is_read && !o->sloppy_done && now >= o->sloppy_ms && keel__ap_go_sloppy(ap, o))
            continue;
        if (o->is_read && !o->sloppy_done && now >= o->sloppy_ms && o->slot)
            keel__ap_read_go_sloppy(ap, o); /* never frees o: a stand-in's answer frees nothing */
        if (now < o->deadline_ms)
            continue;
        if (keel__ap_op_open(o)) {
            keel_counter_inc(ap->m_noquorum);
            if (o->fwd_to)
                keel__ap_op_error(ap, o,
                                  "NOQUORUM no answer in %d ms from %s, the home this write was "
                                  "forwarded to: it may or may not be stored",
                                  AP_FORWARD_TIMEOUT_MS,
                                  keel_node_member_name(ap->srv->node, o->fwd_to));
            else
                keel__ap_op_error(ap, o, "NOQUORUM %d of %d replicas answered in %d ms",
                                  o->is_read ? keel__ap_read_replies(o) : keel__ap_homes_stored(o),
                                  o->need, AP_TIMEOUT_MS);
        }
        if (o->is_read)
            keel__ap_read_repair(ap, o);
        keel__ap_op_free(ap, o);
    }
}

/* ---- start and stop ------------------------------------------------------------------ */

int keel__srv_ap_start(server_t *s, keel_errmsg_t *msg)
{
    ap_t *ap = calloc(1, sizeof(*ap));
    if (!ap)
        return KEEL_ENOMEM;
    ap->srv = s;
    /* Request ids start from the wall clock, as the drop walk's sequence numbers (ap_clean.c):
       an ACK or FORWARD_REPLY a peer sends for a request of this node's earlier run cannot
       match one of this run's (a restart within a home's AP_TIMEOUT_MS would otherwise reuse
       ids from 1, and an old reply would answer a new write). */
    ap->next_req = (uint64_t)keel_clock_unix_ms() << 20;
    keel_buf_init(&ap->msg, 0);
    keel_buf_init(&ap->acks, 0);
    keel_buf_init(&ap->wacks, 0);
    ap->m_repaired =
        keel_metrics_counter(s->metrics, "keel_ap_keys_repaired_total",
                             "AP keys a read repair or anti-entropy push changed here.", NULL);
    ap->m_ae_rounds = keel_metrics_counter(s->metrics, "keel_ap_antientropy_rounds_total",
                                           "AP anti-entropy trees sent to a peer.", NULL);
    ap->m_ae_pushed = keel_metrics_counter(s->metrics, "keel_ap_antientropy_keys_pushed_total",
                                           "AP keys sent to a peer whose tree differed.", NULL);
    ap->m_noquorum = keel_metrics_counter(s->metrics, "keel_ap_noquorum_total",
                                          "AP requests answered NOQUORUM.", NULL);
    ap->m_ae_ranges = keel_metrics_counter(
        s->metrics, "keel_ap_antientropy_ranges_differing_total",
        "AP key ranges a peer's tree showed differing from this node's.", NULL);
    ap->m_hints_stored =
        keel_metrics_counter(s->metrics, "keel_ap_hints_stored_total",
                             "AP writes this node stored as a fallback, with a hint.", NULL);
    ap->m_hints_delivered =
        keel_metrics_counter(s->metrics, "keel_ap_hints_delivered_total",
                             "AP hints whose home acknowledged the handed-off state.", NULL);
    ap->m_handoffs_sent = keel_metrics_counter(s->metrics, "keel_ap_handoffs_sent_total",
                                               "AP hinted keys sent to their home.", NULL);
    ap->m_hints_pending = keel_metrics_gauge(s->metrics, "keel_ap_hints_pending",
                                             "AP hints this node holds for another.", NULL);
    ap->m_reads = keel_metrics_counter(s->metrics, "keel_ap_reads_total",
                                       "AP reads answered (R reached).", NULL);
    ap->m_read_siblings =
        keel_metrics_counter(s->metrics, "keel_ap_read_siblings_total",
                             "Live siblings in the answers of AP reads (divide by "
                             "keel_ap_reads_total: siblings per read).",
                             NULL);
    ap->m_policy_refused = keel_metrics_counter(
        s->metrics, "keel_ap_policy_refused_total",
        "AP states a peer sent of another kind than this node's --ap-policy gives the key "
        "(refused, not stored: the nodes' policy tables differ).",
        NULL);
    ap->m_move_keys = keel_metrics_counter(
        s->metrics, "keel_ap_move_keys_total",
        "AP keys this node queued for a home a ring change gave them (move hints; delivered "
        "by hinted handoff).",
        NULL);
    ap->m_move_batches =
        keel_metrics_counter(s->metrics, "keel_ap_move_batches_total",
                             "AP move walk steps (bounded batches of keys).", NULL);
    ap->m_move_passes = keel_metrics_counter(
        s->metrics, "keel_ap_move_rings_total",
        "AP ring changes whose walk finished (the ring recorded as moved for).", NULL);
    ap->m_move_pending = keel_metrics_gauge(
        s->metrics, "keel_ap_move_pending",
        "AP keys the move walk has not visited yet (0: no move under way; the queued keys "
        "count in keel_ap_hints_pending until delivered).",
        NULL);
    ap->m_hints_retargeted = keel_metrics_counter(
        s->metrics, "keel_ap_hints_retargeted_total",
        "AP hints for a member a configuration removed, replaced by hints for the key's homes "
        "now.",
        NULL);
    ap->m_leaving = keel_metrics_gauge(
        s->metrics, "keel_ap_leaving",
        "1: this node is out of the configuration in force and hands its AP keys to their "
        "homes on the ring without it (docs/ap.md, \"A leaving node\").",
        NULL);
    ap->m_drained = keel_metrics_gauge(
        s->metrics, "keel_ap_drained",
        "1: this node is leaving and every AP key it holds reached its homes (the walk is done "
        "and no hint is pending): it may be stopped. 0 otherwise.",
        NULL);
    ap->m_keys =
        keel_metrics_gauge(s->metrics, "keel_ap_keys", "AP keys this node holds a copy of.", NULL);
    ap->m_syncs = keel_metrics_gauge(s->metrics, "keel_ap_store_fdatasyncs",
                                     "fdatasyncs of this node's AP store since it started.", NULL);
    ap->m_dropped = keel_metrics_counter(
        s->metrics, "keel_ap_keys_dropped_total",
        "AP copies this node dropped: keys it is not a home of, once every home acknowledged "
        "holding the state (docs/ap.md).",
        NULL);
    ap->m_drop_pending = keel_metrics_gauge(
        s->metrics, "keel_ap_drop_pending",
        "AP copies of keys this node is not a home of, sent to the homes and waiting for "
        "their acknowledgements before they are dropped.",
        NULL);
    ap->m_compactions = keel_metrics_counter(
        s->metrics, "keel_ap_compactions_total",
        "Compactions of this node's AP replica store log (a snapshot of the live state replaces "
        "the log before it).",
        NULL);
    ap->m_log_bytes = keel_metrics_gauge(
        s->metrics, "keel_ap_store_log_bytes",
        "Bytes of this node's AP replica store a restart reads: the snapshot in use and the log "
        "records since.",
        NULL);
    ap->m_forwarded = keel_metrics_counter(
        s->metrics, "keel_ap_writes_forwarded_total",
        "AP writes this node, not a home of the key, handed to a home to coordinate.", NULL);
    ap->m_actor_renewals = keel_metrics_counter(
        s->metrics, "keel_ap_actor_renewals_total",
        "New actors (store incarnations) this node took before writing a key whose copy it had "
        "dropped while the copy held its old actor's dots (docs/ap.md).",
        NULL);
    ap->m_dropped_own = keel_metrics_gauge(
        s->metrics, "keel_ap_dropped_own_keys",
        "Keys whose copy this node dropped while it held its own dots, since its last new actor "
        "(writing one of them takes a new actor first).",
        NULL);
    ap->m_coord_off_home = keel_metrics_counter(
        s->metrics, "keel_ap_writes_coordinated_off_home_total",
        "AP writes this node coordinated although not a home of the key, because no home could "
        "be sent to (its copy then holds its dots: once every home holds it, it is dropped with "
        "the key's hash kept, docs/ap.md).",
        NULL);
    ap->m_compact_seconds = keel_metrics_histogram(
        s->metrics, "keel_ap_compaction_seconds",
        "How long each compaction of the AP replica store held the loop (its pass over the "
        "state; the file is written by a thread).",
        NULL, NULL, 0);
    if (!ap->m_forwarded || !ap->m_coord_off_home || !ap->m_actor_renewals || !ap->m_dropped_own ||
        !ap->m_compactions || !ap->m_log_bytes || !ap->m_compact_seconds || !ap->m_dropped ||
        !ap->m_drop_pending || !ap->m_repaired || !ap->m_ae_rounds || !ap->m_ae_pushed ||
        !ap->m_noquorum || !ap->m_ae_ranges || !ap->m_hints_stored || !ap->m_hints_delivered ||
        !ap->m_handoffs_sent || !ap->m_hints_pending || !ap->m_reads || !ap->m_read_siblings ||
        !ap->m_policy_refused || !ap->m_move_keys || !ap->m_move_batches || !ap->m_move_passes ||
        !ap->m_move_pending || !ap->m_keys || !ap->m_syncs || !ap->m_leaving || !ap->m_drained ||
        !ap->m_hints_retargeted) {
        free(ap);
        return KEEL_ENOMEM;
    }
    char dir[KEEL_NODE_PATH_BYTES + 8];
    snprintf(dir, sizeof(dir), "%s/ap", s->cfg.node.data_dir);
    int rc = keel_appolicy_parse(&ap->policy, s->cfg.ap_policy, strlen(s->cfg.ap_policy), msg);
    if (rc == 0)
        rc = keel_applace_init(&ap->place, KEEL_APPLACE_NODES_MAX, KEEL_APPLACE_VNODES_DEFAULT);
    if (rc == 0)
        rc = keel_apstore_open(&ap->store, dir, msg);
    if (rc == 0) {
        keel_apstore_observe(ap->store, keel__ap_observe, ap);
        keel_apstore_set_compaction(ap->store, s->cfg.ap_compact_log_bytes_min,
                                    s->cfg.ap_compact_ratio_pct);
    }
    if (rc == 0 && (rc = keel__ap_move_init(ap)) == 0)
        ap->move_inited = 1;
    if (rc == 0 && (rc = keel__ap_clean_init(ap)) == 0)
        ap->clean_inited = 1;
    if (rc == 0 && (rc = keel_timer_init(&s->loop, &ap->timer)) == 0) {
        ap->timer_inited = 1;
        rc = keel_timer_start(&ap->timer, AP_TICK_MS, AP_TICK_MS, on_tick, ap);
    }
    s->ap = ap;
    if (rc == 0)
        keel_log_info("ap keyspace ready", KF_INT("keys", (int64_t)keel_apstore_count(ap->store)),
                      KF_INT("replayed", (int64_t)keel_apstore_replayed(ap->store)),
                      KF_INT("log_bytes", (int64_t)keel_apstore_log_bytes(ap->store)),
                      KF_INT("policy_prefixes", (int64_t)ap->policy.n));
    return rc;
}

static void timer_closed(keel_timer_t *t)
{
    ap_t *ap = (ap_t *)((char *)t - offsetof(ap_t, timer));
    free(ap);
}

void keel__srv_ap_stop(server_t *s)
{
    ap_t *ap = s->ap;
    if (!ap)
        return;
    s->ap = NULL;
    while (ap->ops)
        keel__ap_op_free(ap, ap->ops);
    keel_apstore_close(ap->store);
    for (uint32_t i = 0; i < KEEL_APPLACE_NODES_MAX; i++)
        keel_merkle_free(&ap->tree[i]);
    keel_applace_free(&ap->place);
    if (ap->move_inited)
        keel__ap_move_free(ap);
    if (ap->clean_inited)
        keel__ap_clean_free(ap);
    keel_buf_free(&ap->msg);
    keel_buf_free(&ap->acks); /* not synced: not acknowledged (the senders hand off again) */
    keel_buf_free(&ap->wacks);
    if (ap->timer_inited)
        keel_timer_close(&ap->timer, timer_closed);
    else
        free(ap);
}
