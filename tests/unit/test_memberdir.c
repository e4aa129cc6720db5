/* test_memberdir.c - the member directory in a configuration's ctx and one-change edits. */
#include "server/memberdir.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

static keel_node_member_t member(uint64_t id, const char *name, const char *peer,
                                 const char *client)
{
    keel_node_member_t m = {.id = id, .voter = 1};
    snprintf(m.name, sizeof(m.name), "%s", name);
    snprintf(m.peer_addr, sizeof(m.peer_addr), "%s", peer);
    snprintf(m.client_addr, sizeof(m.client_addr), "%s", client);
    return m;
}

/* The bootstrap cluster n1..n3 as --initial-cluster gives it (no ctx), and its directory. */
static void boot3(keel_node_member_t boot[3], keel_raft_conf_t *c, keel_memberdir_t *d)
{
    boot[0] = member(1, "n1", "127.0.0.1:7101", "");
    boot[1] = member(2, "n2", "127.0.0.1:7102", "");
    boot[2] = member(3, "n3", "127.0.0.1:7103", "");
    memset(c, 0, sizeof(*c));
    c->voters_n = 3;
    for (int i = 0; i < 3; i++)
        c->voters[i] = (uint64_t)(i + 1);
    keel_memberdir_of_conf(c, boot, 3, d);
}

static void bootstrap_conf_without_ctx_lists_the_flags_members(void)
{
    keel_node_member_t boot[3];
    static keel_raft_conf_t c;
    keel_memberdir_t d;
    boot3(boot, &c, &d);
    KT_EQ_INT(d.n, 3);
    KT_EQ_U64(d.next_id, 4);
    KT_EQ_STR(d.m[1].name, "n2");
    KT_EQ_INT(d.m[1].voter, 1);
}

static void add_then_promote_then_remove_round_trip_through_ctx(void)
{
    keel_node_member_t boot[3];
    static keel_raft_conf_t c, next, next2, next3;
    keel_memberdir_t d;
    boot3(boot, &c, &d);
    keel_node_member_t who = member(0, "n4", "127.0.0.1:7104", "127.0.0.1:7004");
    uint64_t id = 0;
    keel_errmsg_t m = {{0}};
    KT_EQ_INT(keel_memberdir_add(&c, &d, &who, &next, &id, &m), 0);
    KT_EQ_U64(id, 4);
    KT_EQ_INT(next.voters_n, 3);
    KT_EQ_INT(next.learners_n, 1);
    KT_EQ_U64(next.learners[0], 4);
    KT_CHECK(next.ctx_len > 0);
    /* a node that knows nothing but this conf finds every address in it */
    keel_memberdir_t d2;
    keel_memberdir_of_conf(&next, NULL, 0, &d2);
    KT_EQ_INT(d2.n, 4);
    KT_EQ_U64(d2.next_id, 5);
    KT_EQ_STR(d2.m[3].client_addr, "127.0.0.1:7004");
    KT_EQ_STR(d2.m[0].peer_addr, "127.0.0.1:7101");
    KT_EQ_INT(d2.m[3].voter, 0);
    KT_EQ_INT(keel_memberdir_promote(&next, &d2, 4, &next2, &m), 0);
    KT_EQ_INT(next2.voters_n, 4);
    KT_EQ_INT(next2.learners_n, 0);
    keel_memberdir_t d3;
    keel_memberdir_of_conf(&next2, NULL, 0, &d3);
    KT_EQ_INT(keel_memberdir_remove(&next2, &d3, 4, &next3, &m), 0);
    keel_memberdir_t d4;
    keel_memberdir_of_conf(&next3, NULL, 0, &d4);
    KT_EQ_INT(d4.n, 3);
    KT_EQ_U64(d4.next_id, 5); /* id 4 is never given out again */
    KT_CHECK(keel_memberdir_find_id(&d4, 4) == NULL);
    who = member(0, "n5", "127.0.0.1:7105", "");
    KT_EQ_INT(keel_memberdir_add(&next3, &d4, &who, &next, &id, &m), 0);
    KT_EQ_U64(id, 5);
}

static void add_refuses_taken_names_addresses_and_a_full_cluster(void)
{
    keel_node_member_t boot[3];
    static keel_raft_conf_t c, next;
    keel_memberdir_t d;
    boot3(boot, &c, &d);
    uint64_t id;
    keel_errmsg_t m = {{0}};
    keel_node_member_t who = member(0, "n2", "127.0.0.1:9999", "");
    KT_EQ_INT(keel_memberdir_add(&c, &d, &who, &next, &id, &m), KEEL_EEXISTS);
    KT_CHECK(strstr(m.text, "n2") != NULL);
    who = member(0, "x", "127.0.0.1:7103", "");
    KT_EQ_INT(keel_memberdir_add(&c, &d, &who, &next, &id, &m), KEEL_EEXISTS);
    who = member(0, "", "127.0.0.1:1", "");
    KT_EQ_INT(keel_memberdir_add(&c, &d, &who, &next, &id, &m), KEEL_EINVAL);
    static keel_raft_conf_t cur;
    cur = c;
    for (int i = 4; i <= KEEL_RAFT_MEMBERS_MAX; i++) {
        char name[8], peer[32];
        snprintf(name, sizeof(name), "n%d", i);
        snprintf(peer, sizeof(peer), "127.0.0.1:%d", 7100 + i);
        who = member(0, name, peer, "");
        KT_EQ_INT(keel_memberdir_add(&cur, &d, &who, &next, &id, &m), 0);
        cur = next;
        keel_memberdir_of_conf(&cur, NULL, 0, &d);
    }
    who = member(0, "one-too-many", "127.0.0.1:8000", "");
    KT_EQ_INT(keel_memberdir_add(&cur, &d, &who, &next, &id, &m), KEEL_EFULL);
    KT_CHECK(strstr(m.text, "members already") != NULL);
}

static void remove_refuses_unknown_ids_and_the_last_voter(void)
{
    static keel_raft_conf_t c, next;
    keel_node_member_t boot[1] = {member(1, "solo", "127.0.0.1:7101", "")};
    memset(&c, 0, sizeof(c));
    c.voters[0] = 1;
    c.voters_n = 1;
    keel_memberdir_t d;
    keel_memberdir_of_conf(&c, boot, 1, &d);
    keel_errmsg_t m = {{0}};
    KT_EQ_INT(keel_memberdir_remove(&c, &d, 7, &next, &m), KEEL_ENOTFOUND);
    KT_EQ_INT(keel_memberdir_remove(&c, &d, 1, &next, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "last voter") != NULL);
    KT_EQ_INT(keel_memberdir_promote(&c, &d, 1, &next, &m), KEEL_ENOTFOUND); /* not a learner */
}

static void set_client_fills_in_one_address_and_keeps_the_members(void)
{
    keel_node_member_t boot[3];
    static keel_raft_conf_t c, next;
    keel_memberdir_t d;
    boot3(boot, &c, &d);
    KT_EQ_STR(d.m[1].client_addr, ""); /* the flags give no client addresses */
    keel_errmsg_t m = {{0}};
    KT_EQ_INT(keel_memberdir_set_client(&c, &d, 2, "127.0.0.1:7002", &next, &m), 0);
    KT_EQ_INT(next.voters_n, 3);
    KT_EQ_INT(next.learners_n, 0);
    for (uint32_t i = 0; i < 3; i++)
        KT_EQ_U64(next.voters[i], c.voters[i]);
    keel_memberdir_t d2;
    keel_memberdir_of_conf(&next, NULL, 0, &d2);
    KT_EQ_INT(d2.n, 3);
    KT_EQ_U64(d2.next_id, 4);
    KT_EQ_STR(keel_memberdir_find_id(&d2, 2)->client_addr, "127.0.0.1:7002");
    KT_EQ_STR(keel_memberdir_find_id(&d2, 1)->client_addr, "");
    KT_EQ_STR(keel_memberdir_find_id(&d2, 3)->peer_addr, "127.0.0.1:7103");
    KT_EQ_INT(keel_memberdir_set_client(&c, &d, 9, "127.0.0.1:1", &next, &m), KEEL_ENOTFOUND);
    char longaddr[KEEL_NODE_ADDR_BYTES + 8];
    memset(longaddr, 'a', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    KT_EQ_INT(keel_memberdir_set_client(&c, &d, 2, longaddr, &next, &m), KEEL_EINVAL);
}

static void malformed_ctx_is_refused_at_every_cut(void)
{
    keel_node_member_t boot[3];
    static keel_raft_conf_t c, next, cut;
    keel_memberdir_t d;
    boot3(boot, &c, &d);
    uint64_t id;
    keel_node_member_t who = member(0, "n4", "127.0.0.1:7104", "127.0.0.1:7004");
    KT_EQ_INT(keel_memberdir_add(&c, &d, &who, &next, &id, NULL), 0);
    keel_memberdir_t out;
    KT_EQ_INT(keel_memberdir_decode(&next, &out), 0);
    for (uint32_t len = 0; len < next.ctx_len; len++) {
        cut = next;
        cut.ctx_len = len;
        KT_EQ_INT(keel_memberdir_decode(&cut, &out), KEEL_EPROTO);
    }
    cut = next;
    cut.ctx[0] = 2; /* a version this build does not know */
    KT_EQ_INT(keel_memberdir_decode(&cut, &out), KEEL_EPROTO);
    cut = next;
    cut.ctx[1] = 2; /* next_id 2 below the ids listed */
    for (int i = 2; i < 9; i++)
        cut.ctx[i] = 0;
    KT_EQ_INT(keel_memberdir_decode(&cut, &out), KEEL_EPROTO);
}

int main(void)
{
    KT_RUN(bootstrap_conf_without_ctx_lists_the_flags_members);
    KT_RUN(add_then_promote_then_remove_round_trip_through_ctx);
    KT_RUN(add_refuses_taken_names_addresses_and_a_full_cluster);
    KT_RUN(remove_refuses_unknown_ids_and_the_last_voter);
    KT_RUN(set_client_fills_in_one_address_and_keeps_the_members);
    KT_RUN(malformed_ctx_is_refused_at_every_cut);
    return kt_done();
}
