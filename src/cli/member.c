/* member.c - `keel member list|add|remove|transfer` and the join of `keel server --join`. */
#include "cli/cli.h"
#include "cli/cluster.h"
#include "cli/member.h"

#include "client/blocking.h"
#include "proto/resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
/* --join keeps asking this long (the cluster may be electing a leader). */
#define JOIN_RETRY_MS 30000
#define JOIN_RETRY_PAUSE_MS 500
/* --wait-ap-drain takes at most this many seconds. */
#define DRAIN_WAIT_S_MAX 86400

int keel_cli_call(const char *addr, size_t argc, const char *const *argv, keel_client_reply_t *out,
                  char *err, size_t err_cap)
{
    keel_errmsg_t m;
    int rc = keel_client_call(&addr, 1, argc, argv, KEEL_CLI_CALL_TIMEOUT_MS, out, &m);
    if (rc != 0)
        snprintf(err, err_cap, "%s", m.text);
    return rc == 0 ? 0 : -1;
}

static int has_text(const keel_resp_value_t *v, const char *text)
{
    size_t n = strlen(text);
    for (size_t i = 0; i + n <= v->str.len; i++)
        if (memcmp(v->str.ptr + i, text, n) == 0)
            return 1;
    return 0;
}

static void copy_str(char *dst, size_t cap, const keel_resp_value_t *v)
{
    size_t n = v->type == KEEL_RESP_BULK ? v->str.len : 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v->str.ptr, n);
    dst[n] = '\0';
}

/* [id, cluster id, [[name, id, peer, client, role], ...]] -> out. */
static int parse_join(const keel_resp_value_t *v, keel_cli_join_t *out, char *err, size_t cap)
{
    if (v->type == KEEL_RESP_ERROR) {
        snprintf(err, cap, "%.*s", (int)v->str.len, (const char *)v->str.ptr);
        return -1;
    }
    if (v->type != KEEL_RESP_ARRAY || v->elems_len != 3 || v->elems[0].type != KEEL_RESP_INT ||
        v->elems[1].type != KEEL_RESP_BULK || v->elems[2].type != KEEL_RESP_ARRAY ||
        v->elems[2].elems_len > KEEL_RAFT_MEMBERS_MAX) {
        snprintf(err, cap, "unexpected reply to KEEL.CLUSTER JOIN");
        return -1;
    }
    char cid[32];
    copy_str(cid, sizeof(cid), &v->elems[1]);
    out->id = (uint64_t)v->elems[0].integer;
    out->cluster_id = strtoull(cid, NULL, 10);
    out->members_n = 0;
    for (size_t i = 0; i < v->elems[2].elems_len; i++) {
        const keel_resp_value_t *m = &v->elems[2].elems[i];
        if (m->type != KEEL_RESP_ARRAY || m->elems_len != 5 || m->elems[1].type != KEEL_RESP_INT) {
            snprintf(err, cap, "unexpected member in the reply to KEEL.CLUSTER JOIN");
            return -1;
        }
        keel_node_member_t *d = &out->members[out->members_n++];
        memset(d, 0, sizeof(*d));
        copy_str(d->name, sizeof(d->name), &m->elems[0]);
        d->id = (uint64_t)m->elems[1].integer;
        copy_str(d->peer_addr, sizeof(d->peer_addr), &m->elems[2]);
        copy_str(d->client_addr, sizeof(d->client_addr), &m->elems[3]);
        d->voter = m->elems[4].str.len == 5;
    }
    return 0;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*
 * Asks the member at addr to add this node (KEEL.CLUSTER JOIN, forwarded to the leader
 * by a follower); retries while the cluster has no leader or is busy with another change.
 * A refusal that retrying cannot fix (name taken by another address, cluster full) ends
 * it at once.
 */
int keel_cli_join(const char *addr, const char *name, const char *peer_addr,
                  const char *client_addr, keel_cli_join_t *out, char *err, size_t err_cap)
{
    const char *argv[] = {"KEEL.CLUSTER", "JOIN", name, peer_addr, client_addr};
    for (long waited = 0;; waited += JOIN_RETRY_PAUSE_MS) {
        keel_client_reply_t r;
        int rc = keel_cli_call(addr, 5, argv, &r, err, err_cap);
        if (rc == 0) {
            int transient = r.v->type == KEEL_RESP_ERROR &&
                            (r.v->str.len < 4 || memcmp(r.v->str.ptr, "ERR ", 4) != 0 ||
                             has_text(r.v, "shutting down"));
            if (!transient) {
                rc = parse_join(r.v, out, err, err_cap);
                keel_client_reply_free(&r);
                return rc;
            }
            snprintf(err, err_cap, "%.*s", (int)r.v->str.len, (const char *)r.v->str.ptr);
            keel_client_reply_free(&r);
        }
        if (waited >= JOIN_RETRY_MS)
            return -1;
        pause_ms(JOIN_RETRY_PAUSE_MS);
    }
}

/* ---- keel member ---------------------------------------------------------------------- */

static void member_usage(void)
{
    fprintf(stderr, "usage: keel member list|add|remove|transfer (--addr host:port | --cluster "
                    "DIR)\n"
                    "  list                               members, roles, the leader\n"
                    "  add NAME PEER_ADDR CLIENT_ADDR     add a learner (promoted to voter "
                    "once caught up)\n"
                    "  remove NAME [--wait-ap-drain S]    remove a member; with the flag, "
                    "then wait up to S\n"
                    "                                     seconds until it handed its AP keys "
                    "to their homes\n"
                    "                                     (KEEL.AP.STATUS drained 1): stop it "
                    "only then\n"
                    "  transfer NAME                      hand leadership to NAME\n");
}

/* The addresses to try: --addr, or every client address in DIR/cluster.json. */
static int targets(const char *addr, const char *dir, char list[][64], size_t *n, char *err,
                   size_t cap)
{
    *n = 0;
    if (addr) {
        snprintf(list[(*n)++], 64, "%s", addr);
        return 0;
    }
    keel_cluster_t cl;
    if (keel_cluster_load(dir, &cl, err, cap) != 0)
        return -1;
    for (size_t i = 0; i < cl.n; i++)
        snprintf(list[(*n)++], 64, "%s", cl.nodes[i].client);
    return 0;
}

static int print_members(const keel_resp_value_t *v)
{
    if (v->type != KEEL_RESP_ARRAY)
        return -1;
    printf("%-12s %4s  %-8s %-22s %-22s %s\n", "NAME", "ID", "ROLE", "PEER", "CLIENT", "LEADER");
    for (size_t i = 0; i < v->elems_len; i++) {
        const keel_resp_value_t *m = &v->elems[i];
        if (m->type != KEEL_RESP_ARRAY || m->elems_len != 6)
            return -1;
        printf("%-12.*s %4lld  %-8.*s %-22.*s %-22.*s %s\n", (int)m->elems[0].str.len,
               (const char *)m->elems[0].str.ptr, (long long)m->elems[1].integer,
               (int)m->elems[3].str.len, (const char *)m->elems[3].str.ptr,
               (int)m->elems[2].str.len, (const char *)m->elems[2].str.ptr,
               (int)m->elems[5].str.len, (const char *)m->elems[5].str.ptr,
               m->elems[4].integer ? "*" : "");
    }
    return 0;
}

/* The client address of member `name`, asked of the first target that answers; -1 with
 * err empty when it answered without one, with why in err when no target answered. */
static int member_client_addr(char list[][64], size_t n, const char *name, char *out, size_t cap,
                              char *err, size_t err_cap)
{
    const char *argv[] = {"KEEL.CLUSTER", "MEMBERS"};
    snprintf(err, err_cap, "no target");
    for (size_t i = 0; i < n; i++) {
        keel_client_reply_t r;
        if (keel_cli_call(list[i], 2, argv, &r, err, err_cap) != 0)
            continue;
        err[0] = '\0';
        int found = 0;
        for (size_t j = 0; r.v->type == KEEL_RESP_ARRAY && j < r.v->elems_len; j++) {
            const keel_resp_value_t *m = &r.v->elems[j];
            if (m->type == KEEL_RESP_ARRAY && m->elems_len == 6 &&
                m->elems[0].str.len == strlen(name) &&
                memcmp(m->elems[0].str.ptr, name, strlen(name)) == 0) {
                copy_str(out, cap, &m->elems[5]);
                found = out[0] != '\0';
            }
        }
        keel_client_reply_free(&r);
        return found ? 0 : -1;
    }
    return -1;
}

/* The integer after `name` in a KEEL.AP.STATUS reply, or -1. */
static long long status_field(const keel_resp_value_t *v, const char *name)
{
    for (size_t i = 0; v->type == KEEL_RESP_ARRAY && i + 1 < v->elems_len; i += 2)
        if (v->elems[i].str.len == strlen(name) &&
            memcmp(v->elems[i].str.ptr, name, strlen(name)) == 0 &&
            v->elems[i + 1].type == KEEL_RESP_INT)
            return v->elems[i + 1].integer;
    return -1;
}

/*
 * After a removal: asks the removed node (at addr) for KEEL.AP.STATUS every
 * DRAIN_POLL_MS until it says drained 1 (docs/ap.md, "A leaving node"), for at most
 * wait_s seconds. 0 once drained; 1 when the time ran out or it never answered.
 */
#define DRAIN_POLL_MS 200

static int wait_drained(const char *name, const char *addr, long wait_s)
{
    const char *argv[] = {"KEEL.AP.STATUS"};
    char err[256] = "no answer";
    long long moves = -1, hints = -1;
    for (long waited = 0; waited <= wait_s * 1000; waited += DRAIN_POLL_MS) {
        keel_client_reply_t r;
        if (keel_cli_call(addr, 1, argv, &r, err, sizeof(err)) == 0) {
            long long drained = status_field(r.v, "drained");
            moves = status_field(r.v, "move_pending"), hints = status_field(r.v, "hints_pending");
            keel_client_reply_free(&r);
            snprintf(err, sizeof(err), "none");
            if (drained == 1) {
                printf("%s drained: its AP keys reached their homes; it may be stopped\n", name);
                return 0;
            }
        }
        pause_ms(DRAIN_POLL_MS);
    }
    fprintf(stderr,
            "keel member: %s not drained after %ld s (move_pending %lld, hints_pending %lld; "
            "last error: %s); do not stop it yet\n",
            name, wait_s, moves, hints, err);
    return 1;
}

/* Sends the command to the first target that answers; TRANSFER to the one that leads. */
static int member_run(char list[][64], size_t n, int argc, const char *const *argv)
{
    char err[256] = "";
    for (size_t i = 0; i < n; i++) {
        keel_client_reply_t r;
        if (keel_cli_call(list[i], (size_t)argc, argv, &r, err, sizeof(err)) != 0)
            continue;
        const keel_resp_value_t *v = r.v;
        int is_transfer = strcmp(argv[1], "TRANSFER") == 0;
        if (v->type == KEEL_RESP_ERROR && is_transfer && has_text(v, "not the leader") &&
            i + 1 < n) {
            keel_client_reply_free(&r);
            continue; /* another target may lead */
        }
        int rc = 0;
        if (v->type == KEEL_RESP_ERROR) {
            fprintf(stderr, "keel member: %.*s\n", (int)v->str.len, (const char *)v->str.ptr);
            rc = 1;
        } else if (strcmp(argv[1], "MEMBERS") == 0) {
            rc = print_members(v) == 0 ? 0 : 1;
        } else if (v->type == KEEL_RESP_INT) {
            printf("added with id %lld (a learner until it catches up)\n", (long long)v->integer);
        } else {
            printf("OK\n");
        }
        keel_client_reply_free(&r);
        return rc;
    }
    fprintf(stderr, "keel member: no member answered (%s)\n", err);
    return 1;
}

int keel_cli_member(int argc, char **argv)
{
    const char *addr = NULL, *dir = NULL, *pos[5];
    size_t npos = 0;
    long wait_s = -1; /* --wait-ap-drain */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strcmp(argv[i], "--wait-ap-drain") == 0 && i + 1 < argc) {
            char *end;
            wait_s = strtol(argv[++i], &end, 10);
            if (*end != '\0' || wait_s < 0 || wait_s > DRAIN_WAIT_S_MAX) {
                fprintf(stderr, "keel member: --wait-ap-drain: seconds in 0..%d\n",
                        DRAIN_WAIT_S_MAX);
                return 2;
            }
        } else if (strcmp(argv[i], "--cluster") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            member_usage();
            return 0;
        } else if (argv[i][0] != '-' && npos < 5)
            pos[npos++] = argv[i];
        else {
            member_usage();
            return 2;
        }
    }
    if (npos == 0 || (addr == NULL) == (dir == NULL)) {
        member_usage();
        return 2;
    }
    const char *cmd[6] = {"KEEL.CLUSTER"};
    int cargc;
    if (strcmp(pos[0], "list") == 0 && npos == 1) {
        cmd[1] = "MEMBERS", cargc = 2;
    } else if (strcmp(pos[0], "add") == 0 && npos == 4) {
        cmd[1] = "ADD", cmd[2] = pos[1], cmd[3] = pos[2], cmd[4] = pos[3], cargc = 5;
    } else if ((strcmp(pos[0], "remove") == 0 || strcmp(pos[0], "transfer") == 0) && npos == 2) {
        cmd[1] = strcmp(pos[0], "remove") == 0 ? "REMOVE" : "TRANSFER", cmd[2] = pos[1];
        cargc = 3;
    } else {
        member_usage();
        return 2;
    }
    if (wait_s >= 0 && strcmp(pos[0], "remove") != 0) {
        member_usage();
        return 2;
    }
    char list[KEEL_CLUSTER_NODES_MAX][64], err[256];
    size_t n;
    if (targets(addr, dir, list, &n, err, sizeof(err)) != 0) {
        fprintf(stderr, "keel member: %s\n", err);
        return 1;
    }
    char leaver[64] = "";
    if (wait_s >= 0 &&
        member_client_addr(list, n, pos[1], leaver, sizeof(leaver), err, sizeof(err)) != 0) {
        if (err[0])
            fprintf(stderr, "keel member: no member answered (%s)\n", err);
        else
            fprintf(stderr, "keel member: %s: no member of that name with a client address\n",
                    pos[1]);
        return 1;
    }
    int rc = member_run(list, n, cargc, cmd);
    return rc != 0 || wait_s < 0 ? rc : wait_drained(pos[1], leaver, wait_s);
}
