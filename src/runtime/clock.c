/* clock.c - clock_gettime wrappers. */
#include "runtime/clock.h"

#include <time.h>

static keel_ns_t read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (keel_ns_t)ts.tv_sec * KEEL_NS_PER_S + ts.tv_nsec;
}

keel_ns_t keel_clock_now_ns(void)
{
    return read_ns(CLOCK_MONOTONIC);
}

keel_us_t keel_clock_now_us(void)
{
    return read_ns(CLOCK_MONOTONIC) / KEEL_NS_PER_US;
}

keel_ms_t keel_clock_now_ms(void)
{
    return read_ns(CLOCK_MONOTONIC) / KEEL_NS_PER_MS;
}

keel_ms_t keel_clock_unix_ms(void)
{
    return read_ns(CLOCK_REALTIME) / KEEL_NS_PER_MS;
}

keel_us_t keel_clock_unix_us(void)
{
    return read_ns(CLOCK_REALTIME) / KEEL_NS_PER_US;
}
