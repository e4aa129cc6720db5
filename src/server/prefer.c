/* prefer.c - a preferred leader (--preferred-leader NAME): the leader hands leadership to that
 * member whenever it is fit to lead, so that leadership comes back by itself to the node
 * beside the load (a region's primary, docs/shop.md "Regions") after it was killed,
 * restarted or cut off, with no operator. Kafka's preferred replica election does the same
 * for its partitions.
 *
 * Fit to lead: a voter of the configuration in force, its peer connection up, a whole Raft
 * message from it within KEEL_NODE_PREFER_HEARD_MS (a stopped or hung process keeps its TCP
 * connection and its match index), and its log within promote_lag_entries_max of ours, all
 * continuously for KEEL_NODE_PREFER_STABLE_MS. Then the leader starts a Raft leadership
 * transfer (the target catches up, then campaigns at once: thesis §3.10), at most once per
 * KEEL_NODE_PREFER_RETRY_MS, doubled (up to 5 minutes) each time this node finds itself
 * still leading at the next try, and reset once it sees the preferred member lead. Every
 * node should be given the same preference (only the leader acts on it); a transfer is an
 * election, so writes wait for it as for any leader change, a few heartbeats on a healthy
 * network. A manual transfer away from the preferred member is undone after the 3 s. */
#include "server/node_int.h"

#include "base/log.h"

#include <string.h>

/* The preferred member's id if it is a voter in force other than us; 0 otherwise (said once
 * when the name is no member at all: a typo would otherwise change nothing, silently). */
static uint64_t preferred_voter(keel_node_t *n)
{
    uint64_t id = 0;
    for (size_t i = 0; i < n->members.n; i++)
        if (strcmp(n->members.m[i].name, n->cfg.preferred_leader) == 0)
            id = n->members.m[i].id;
    if (id == 0 && n->members.n > 0 && !n->prefer_warned) {
        n->prefer_warned = 1;
        keel_log_warn("--preferred-leader names no member; ignored while it does not",
                      KF_STR("name", n->cfg.preferred_leader));
    }
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
    if (n->prefer_retry_ms == 0)
        n->prefer_retry_ms = KEEL_NODE_PREFER_RETRY_MS;
    uint64_t leader = keel_raft_leader(n->raft);
    if (leader != 0 && leader != n->cfg.id &&
        strcmp(keel_node_member_name(n, leader), n->cfg.preferred_leader) == 0) {
        n->prefer_retry_ms = KEEL_NODE_PREFER_RETRY_MS; /* it leads: the next loss starts anew */
        n->prefer_next_ms = 0;
    }
    uint64_t to = leader == n->cfg.id ? preferred_voter(n) : 0;
    const peer_t *p = to ? keel__node_peer_by_id(n, to) : NULL;
    uint64_t match = to ? keel_raft_match_index(n->raft, to) : 0;
    if (p == NULL || !p->connected || now - p->heard_ms > KEEL_NODE_PREFER_HEARD_MS || match == 0 ||
        match + n->cfg.promote_lag_entries_max < keel_raft_last_index(n->raft)) {
        n->prefer_since_ms = 0;
        return;
    }
    if (n->prefer_since_ms == 0)
        n->prefer_since_ms = now;
    if (now - n->prefer_since_ms < KEEL_NODE_PREFER_STABLE_MS || now < n->prefer_next_ms)
        return;
    /* Still the leader at a retry: the last transfer (if any) did not hold, so wait longer
     * before the next (a preferred member that cannot keep the lead costs fewer elections). */
    if (n->prefer_next_ms != 0 && n->prefer_retry_ms < KEEL_NODE_PREFER_RETRY_MS_MAX)
        n->prefer_retry_ms *= 2;
    n->prefer_next_ms = now + n->prefer_retry_ms;
    int rc = keel_raft_transfer_leadership(n->raft, to);
    if (rc == 0) {
        keel_log_info("handing leadership to the preferred leader",
                      KF_STR("to", n->cfg.preferred_leader), KF_INT("match", match),
                      KF_INT("next_try_ms", n->prefer_retry_ms));
        if (n->m_prefer_transfers)
            keel_counter_inc(n->m_prefer_transfers);
    } else {
        keel_log_warn("transfer to the preferred leader refused; tried again later",
                      KF_STR("to", n->cfg.preferred_leader), KF_STR("error", keel_strerror(rc)));
    }
}
