/* bench_contend.h - `keel bench kv --workload cas|txn`: optimistic increments of hot counters. */
#ifndef KEEL_CLI_BENCH_CONTEND_H
#define KEEL_CLI_BENCH_CONTEND_H

#include "client/client.h"

#include <stddef.h>
#include <stdint.h>

/* True if argv asks for a contention workload (--workload cas or txn). */
int keel_bench_contend_wanted(int argc, char **argv);
/* Runs it; argv[0] is "kv". Exit status: 0, 1 (failed run or counter check), 2 (usage). */
int keel_bench_contend(int argc, char **argv);
/* The usage lines of the contention options, for `keel bench kv --help`. */
void keel_bench_contend_usage(void);
/* A bench connection's client: every address from addrs[first], no deadline and no
 * -TRYAGAIN resend (each outcome is the server's own), session-bound. */
keel_client_config_t keel_bench_client_config(const char (*addrs)[64], size_t n, size_t first,
                                              uint64_t seed);
/* keel_client_init, with the reason on stderr when it fails. 0 or -1. */
int keel_bench_client_open(keel_client_t *cl, keel_loop_t *loop, const keel_client_config_t *cfg);

#endif
