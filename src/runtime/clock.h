/* clock.h - the one real clock: monotonic time for deadlines, wall time for logs. */
#ifndef KEEL_RUNTIME_CLOCK_H
#define KEEL_RUNTIME_CLOCK_H

#include "base/ktime.h"

/* CLOCK_MONOTONIC: never jumps; use for timeouts, deadlines and latencies. */
keel_ms_t keel_clock_now_ms(void);
keel_us_t keel_clock_now_us(void);
keel_ns_t keel_clock_now_ns(void);
/* CLOCK_REALTIME in ms since the Unix epoch: for timestamps shown to people. */
keel_ms_t keel_clock_unix_ms(void);
/* CLOCK_REALTIME in microseconds since the Unix epoch (Zipkin span timestamps). */
keel_us_t keel_clock_unix_us(void);

#endif
