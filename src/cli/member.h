/* member.h - a blocking one-command RESP client, and the join of `keel server --join`. */
#ifndef KEEL_CLI_MEMBER_H
#define KEEL_CLI_MEMBER_H

#include "base/buf.h"
#include "proto/resp.h"
#include "server/memberdir.h"

#include <stddef.h>
#include <stdint.h>

typedef struct keel_cli_reply {
    keel_resp_value_t *v; /* points into raw */
    keel_buf_t raw;
} keel_cli_reply_t;

/* Sends one command to addr and reads its reply (10 s at most). 0, or -1 with err set. */
int keel_cli_resp_call(const char *addr, int argc, const char *const *argv, keel_cli_reply_t *out,
                       char *err, size_t err_cap);
void keel_cli_reply_free(keel_cli_reply_t *r);

typedef struct keel_cli_join {
    uint64_t id, cluster_id;
    keel_node_member_t members[KEEL_RAFT_MEMBERS_MAX];
    size_t members_n;
} keel_cli_join_t;

/* KEEL.CLUSTER JOIN name peer_addr client_addr at addr, retried for a while. 0 or -1. */
int keel_cli_join(const char *addr, const char *name, const char *peer_addr,
                  const char *client_addr, keel_cli_join_t *out, char *err, size_t err_cap);

int keel_cli_member(int argc, char **argv);

#endif
