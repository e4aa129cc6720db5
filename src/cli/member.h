/* member.h - `keel member`, one blocking command for the CLI, and the join of `keel server --join`.
 */
#ifndef KEEL_CLI_MEMBER_H
#define KEEL_CLI_MEMBER_H

#include "client/blocking.h"
#include "proto/resp.h"
#include "server/memberdir.h"

#include <stddef.h>
#include <stdint.h>

/* One command's answer must come within this; a membership change waits for a commit. */
#define KEEL_CLI_CALL_TIMEOUT_MS 10000

/* One command to addr through client/blocking.h (10 s at most). 0, or -1 with err set;
 * free the reply with keel_client_reply_free. */
int keel_cli_call(const char *addr, size_t argc, const char *const *argv, keel_client_reply_t *out,
                  char *err, size_t err_cap);

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
