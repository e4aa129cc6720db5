/* kv_txn.c - KEEL.TXN: a MULTI/EXEC transaction applied as one entry. */
#include "core/kv_cmd_int.h"

#include "base/num.h"
#include "proto/resp.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- transactions -------------------------------------------------------------------- */

/*
 * KEEL.TXN nwatch key1 ver1 ... ncmds argc1 arg... argc2 arg...: one entry
 * for Redis's WATCH/MULTI/EXEC. Each watched key's version (0: absent or
 * expired) must still be the one the client saw at WATCH, else the reply is
 * a null array (*-1) and nothing runs; then every queued command runs in
 * order and the reply is the array of their replies (a command that fails at
 * keel__kvc_run time puts its error in the array, as in Redis). Counts are decimal,
 * versions >= 0, argc >= 1; the argv must be consumed exactly.
 */
typedef struct txn {
    size_t nwatch, watch_at; /* watched pairs start at argv[watch_at] */
    size_t ncmds, cmds_at;   /* the first argc_i is argv[cmds_at] */
} txn_t;

static int count_arg(const call_t *c, size_t i, int64_t min, int64_t *out)
{
    return i < c->argc && keel_parse_i64(c->argv[i], c->lens[i], out) == 0 && *out >= min ? 0 : -1;
}

/* Parses the layout; with `check`, also that each queued command exists, has a right
 * number of arguments and may be queued. A syntax error is not judged here: it is the
 * command's own reply in the array (Redis 7.0's EXEC does the same). */
static int txn_parse(const call_t *c, txn_t *t, int check)
{
    int64_t v;
    if (count_arg(c, 1, 0, &v) != 0 || (uint64_t)v > (c->argc - 2) / 2)
        return r_err(c->reply, "ERR KEEL.TXN: bad watch count");
    t->nwatch = (size_t)v;
    t->watch_at = 2;
    for (size_t i = 0; i < t->nwatch; i++)
        if (count_arg(c, 3 + 2 * i, 0, &v) != 0)
            return r_err(c->reply, "ERR KEEL.TXN: bad watched version");
    size_t at = 2 + 2 * t->nwatch;
    if (count_arg(c, at, 0, &v) != 0 || (uint64_t)v > c->argc)
        return r_err(c->reply, "ERR KEEL.TXN: bad command count");
    t->ncmds = (size_t)v;
    t->cmds_at = ++at;
    for (size_t k = 0; k < t->ncmds; k++) {
        if (count_arg(c, at, 1, &v) != 0 || (uint64_t)v > c->argc - at - 1)
            return r_err(c->reply, "ERR KEEL.TXN: bad command length");
        if (check) {
            call_t in = keel__kvc_inner_call(c, at + 1);
            in.argc = (size_t)v;
            const cmd_t *cmd = keel__kvc_find_cmd(in.argv[0], in.lens[0]);
            if (cmd && (cmd->flags & CMD_NO_NEST))
                return r_err(c->reply, "ERR KEEL.TXN cannot queue this command");
            int rc = keel__kvc_precheck_arity(&in, KEEL_KV_ARGC_MAX, &cmd);
            if (rc != 0)
                return rc;
        }
        at += 1 + (size_t)v;
    }
    if (at != c->argc)
        return r_err(c->reply, "ERR KEEL.TXN: arguments after the last command");
    return 0;
}

int keel__kvc_txn_syntax(const call_t *c)
{
    txn_t t;
    return txn_parse(c, &t, 1);
}

int keel__kvc_cmd_txn(const call_t *c)
{
    keel_kv_t *kv = c->w;
    txn_t t;
    int rc = txn_parse(c, &t, 0);
    assert(rc == 0);
    for (size_t i = 0; i < t.nwatch; i++) {
        const uint8_t *key = c->argv[t.watch_at + 2 * i];
        size_t key_len = c->lens[t.watch_at + 2 * i];
        int64_t want = 0;
        keel_parse_i64(c->argv[t.watch_at + 2 * i + 1], c->lens[t.watch_at + 2 * i + 1], &want);
        const keel__kv_entry_t *e =
            keel__kv_find(kv, key, key_len, keel__kv_hash(kv, key, key_len), NULL);
        uint64_t cur = e && keel__kv_alive(kv, e, c->now) ? e->version : 0;
        if (cur != (uint64_t)want) {
            r_nil_array(c->reply);
            return 0;
        }
    }
    r_array(c->reply, t.ncmds);
    size_t at = t.cmds_at;
    for (size_t k = 0; k < t.ncmds; k++) {
        int64_t n = 0;
        keel_parse_i64(c->argv[at], c->lens[at], &n);
        call_t in = keel__kvc_inner_call(c, at + 1);
        in.argc = (size_t)n;
        const cmd_t *cmd = NULL;
        rc = keel__kvc_precheck(&in, kv->cfg.argc_max, &cmd);
        if (rc == 0)
            rc = keel__kvc_done(keel__kvc_run(cmd, &in));
        /* Out of memory part way: the commands before stay applied (the server
         * stops on any apply error; see docs/kv.md, "Transactions"). */
        if (rc < 0)
            return rc;
        at += 1 + (size_t)n;
    }
    return 0;
}
