/* memberdir.h - the member directory a Raft configuration carries: ids, names, addresses. */
#ifndef KEEL_SERVER_MEMBERDIR_H
#define KEEL_SERVER_MEMBERDIR_H

#include "base/err.h"
#include "core/raft/raft.h"

#include <stddef.h>
#include <stdint.h>

/*
 * The Raft core knows members by id only. keel server needs, for each member, its name
 * (what operators type), its peer address (to connect) and its client address (what
 * clients and `keel status` use). These travel in the ctx of every configuration the
 * server proposes (keel_raft_conf_t.ctx), so a node that joins later, restarts, or
 * installs a snapshot learns them from the replicated log, never from its flags.
 *
 * ctx encoding (little endian):
 *   u8 version (1) | u64 next_id | u8 n |
 *   n x (u64 id | u8 len | name | u8 len | peer_addr | u8 len | client_addr)
 * next_id is the id the next added member gets: ids are never reused, so a removed node
 * that is still running can never be mistaken for a newer member.
 *
 * The bootstrap configuration (from --initial-cluster) has no ctx: its directory is the
 * flags' (ids 1..n in order), with client addresses unknown ("") until each node publishes
 * its own (KEEL.CLUSTER UPDATE, members.c keel__node_maybe_update_client_addr), which rewrites
 * it. The functions here are pure: they compute the next configuration; the node
 * proposes it.
 */
#define KEEL_NODE_NAME_BYTES 64
#define KEEL_NODE_ADDR_BYTES 128
#define KEEL_MEMBERDIR_VERSION 1

typedef struct keel_node_member {
    uint64_t id; /* 1..n in --initial-cluster order, then assigned by the leader */
    char name[KEEL_NODE_NAME_BYTES];
    char peer_addr[KEEL_NODE_ADDR_BYTES];
    char client_addr[KEEL_NODE_ADDR_BYTES]; /* "" when not known */
    int voter;                              /* 1 voter, 0 learner (as the conf says) */
} keel_node_member_t;

typedef struct keel_memberdir {
    keel_node_member_t m[KEEL_RAFT_MEMBERS_MAX];
    size_t n;
    uint64_t next_id;
} keel_memberdir_t;

/* Writes d into conf->ctx. KEEL_EINVAL if a field is too long or d too large. */
int keel_memberdir_encode(const keel_memberdir_t *d, keel_raft_conf_t *conf);
/* KEEL_EPROTO for a malformed ctx (conf->ctx_len 0 is malformed too: no directory). */
int keel_memberdir_decode(const keel_raft_conf_t *conf, keel_memberdir_t *d);
keel_node_member_t *keel_memberdir_find_name(keel_memberdir_t *d, const char *name, size_t len);
keel_node_member_t *keel_memberdir_find_id(keel_memberdir_t *d, uint64_t id);

/*
 * The directory of configuration c: its ctx's, or for a conf without ctx, the bootstrap
 * members (boot, ids from --initial-cluster) that c names. Members are listed in the order
 * voters, learners, with voter set accordingly; ids c names that the directory lacks get
 * name "?" and empty addresses.
 */
void keel_memberdir_of_conf(const keel_raft_conf_t *c, const keel_node_member_t *boot,
                            size_t boot_n, keel_memberdir_t *out);

/*
 * Next configurations. Each copies cur, applies one change, and writes the directory
 * (dir, changed) into next->ctx. Errors: KEEL_EEXIST (name or peer address taken),
 * KEEL_ENOTFOUND (no such member), KEEL_EFULL (KEEL_RAFT_MEMBERS_MAX or
 * KEEL_RAFT_VOTERS_MAX reached), KEEL_EINVAL (bad field, or removing the last voter);
 * msg says which.
 *   add:     the new member is a learner with id dir->next_id (returned in *id).
 *   remove:  drops a voter or a learner.
 *   promote: learner id becomes a voter.
 *   set_client: member id's client address becomes client_addr (the members stay as they
 *            are; the bootstrap directory has none, and --listen-client may change).
 */
int keel_memberdir_add(const keel_raft_conf_t *cur, const keel_memberdir_t *dir,
                       const keel_node_member_t *who, keel_raft_conf_t *next, uint64_t *id,
                       keel_errmsg_t *msg);
int keel_memberdir_remove(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                          keel_raft_conf_t *next, keel_errmsg_t *msg);
int keel_memberdir_promote(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                           keel_raft_conf_t *next, keel_errmsg_t *msg);
int keel_memberdir_set_client(const keel_raft_conf_t *cur, const keel_memberdir_t *dir, uint64_t id,
                              const char *client_addr, keel_raft_conf_t *next, keel_errmsg_t *msg);

#endif
