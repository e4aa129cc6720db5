/* ktime.h - time types with their unit in the name. No clock lives here. */
#ifndef KEEL_BASE_KTIME_H
#define KEEL_BASE_KTIME_H

#include <stdint.h>

/*
 * Time in keel is an integer count with its unit last in the name of every
 * variable that holds one (timeout_ms, latency_us). Pure code never reads a
 * clock: the caller passes `now_ms`. The one real clock is in
 * runtime/clock.h; the simulator has its own.
 */
typedef int64_t keel_ms_t; /* milliseconds, monotonic unless named _unix_ms */
typedef int64_t keel_us_t; /* microseconds */
typedef int64_t keel_ns_t; /* nanoseconds */

#define KEEL_MS_PER_S 1000LL
#define KEEL_US_PER_MS 1000LL
#define KEEL_NS_PER_US 1000LL
#define KEEL_NS_PER_MS 1000000LL
#define KEEL_NS_PER_S 1000000000LL

/* A deadline that never expires. */
#define KEEL_MS_NEVER INT64_MAX

static inline keel_ms_t keel_ms_min(keel_ms_t a, keel_ms_t b)
{
    return a < b ? a : b;
}

static inline keel_ms_t keel_ms_max(keel_ms_t a, keel_ms_t b)
{
    return a > b ? a : b;
}

#endif
