/* fake.h - test_tx_saga's fake keel server (fake.c). */
#ifndef TEST_TX_SAGA_FAKE_H
#define TEST_TX_SAGA_FAKE_H

#include "base/buf.h"
#include "core/kv.h"
#include "proto/resp.h"
#include "runtime/loop.h"
#include "runtime/tcp.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * The fake keel: every command goes through keel_kv_check, then keel_kv_apply (writes, with
 * the Unix clock as the entry time, as a leader stamps it) or keel_kv_read_at (reads), so
 * locks, KEEL.FENCED, KEEL.TXN, streams and SCAN behave as in keel server, minus Raft.
 * Faults: `lose_xadd` makes the n-th fenced XADD (alone, or in the fenced transaction that
 * starts or ends a saga) apply and then lose its reply (the link
 * is closed, as a crashed leader's would be); `unknown_xadd` answers it -UNKNOWN instead.
 */
#define CONNS_MAX 32

typedef struct fake fake_t;
typedef struct fconn {
    fake_t *f;
    uv_tcp_t tcp;
    keel_buf_t in;
    keel_resp_parser_t parser;
    bool open;
    /* a KEEL.TXN's reply held for fake.txn_hold_ms (the connection answers
     * nothing else meanwhile, as keel server answers a connection in order) */
    bool paused;
    keel_timer_t hold;
    bool hold_init;
    char *held;
    size_t held_len;
} fconn_t;

struct fake {
    keel_loop_t *loop;
    uv_tcp_t listener;
    char addr[64];
    keel_kv_t kv;
    uint64_t index;
    fconn_t conns[CONNS_MAX];
    int accepted;
    int xadds, lose_xadd, unknown_xadd, fenced_refusals;
    int locks, unknown_lock;   /* the n-th KEEL.LOCK applies and answers -UNKNOWN */
    keel_ms_t txn_hold_ms;     /* a KEEL.TXN's reply comes this late: */
    int txns, txn_hold_nth;    /* the n-th only, or every one (0) */
    int all_txns, unknown_txn; /* the n-th KEEL.TXN applies and answers -UNKNOWN */
};

/* Listens on 127.0.0.1 (a free port, in f->addr) with an empty state. */
void fake_start(fake_t *f, keel_loop_t *loop);
void fake_stop(fake_t *f);
/* A read on the fake's state, for checks: the reply's integer, or -1. */
long long fake_int(fake_t *f, int argc, const char *const *args);
/* Applies one command to the fake's state, as a committed entry (arg_lens NULL: strlen). */
void fake_apply(fake_t *f, int argc, const char *const *args, const size_t *arg_lens);

#endif
