/* prefer.c - a preferred leader (--preferred-leader NAME): the leader hands leadership to that
 * member whenever it is fit to lead, so that leadership comes back by itself to the node
 * beside the load (a region's primary, docs/shop.md "Regions") after it was killed,
 * restarted or cut off, with no operator. Kafka's preferred replica election does the same
 * for its partitions.
 *
 * Fit to lead: a voter of the configuration in force, its peer connection up, and its log
 * within promote_lag_entries_max of ours, continuously for KEEL_NODE_PREFER_STABLE_MS. Then
 * the leader starts a Raft leadership transfer (the target catches up, then campaigns at
 * once: thesis §3.10), at most once per KEEL_NODE_PREFER_RETRY_MS. Every node should be
 * given the same preference (only the leader acts on it); a transfer is an election, so
 * writes wait for it as for any leader change, a few heartbeats on a healthy network. */
#include "server/node_int.h"

#include "base/log.h"

#include <string.h>

/* The preferred member's id if it is a voter in force other than us; 0 otherwise. */
static uint64_t preferred_voter(const keel_node_t *n)
{
    uint64_t id = 0;
    for (size_t i = 0; i < n->members.n; i++)
        if (strcmp(n->members.m[i].name, n->cfg.preferred_leader) == 0)
            id = n->members.m[i].id;
    if (id == 0 || id == n->cfg.id)
        return 0;
    const keel_raft_conf_t *c = keel_raft_conf(n->raft);
    for (uint32_t i = 0; i < c->voters_n; i++)
        if (c->voters[i] == id)
            return id;
    return 0;
}

void keel__node_maybe_prefer(keel_node_t *n, keel_ms_t now)
{
    if (n->cfg.preferred_leader[0] == '\0')
        return;
    uint64_t to = keel_raft_leader(n->raft) == n->cfg.id ? preferred_voter(n) : 0;
    const peer_t *p = to ? keel__node_peer_by_id(n, to) : NULL;
    uint64_t match = to ? keel_raft_match_index(n->raft, to) : 0;
    if (p == NULL || !p->connected || match == 0 ||
        match + n->cfg.promote_lag_entries_max < keel_raft_last_index(n->raft)) {
        n->prefer_since_ms = 0;
        return;
    }
    if (n->prefer_since_ms == 0)
        n->prefer_since_ms = now;
    if (now - n->prefer_since_ms < KEEL_NODE_PREFER_STABLE_MS || now < n->prefer_next_ms)
        return;
    n->prefer_next_ms = now + KEEL_NODE_PREFER_RETRY_MS;
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0) {
        keel_log_info("handing leadership to the preferred leader",
                      KF_STR("to", n->cfg.preferred_leader), KF_INT("match", match));
        if (n->m_prefer_transfers)
            keel_counter_inc(n->m_prefer_transfers);
    } else {
        keel_log_warn("transfer to the preferred leader refused; tried again later",
                      KF_STR("to", n->cfg.preferred_leader), KF_STR("error", keel_strerror(rc)));
    }
}
