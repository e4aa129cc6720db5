/* lat.h - a latency histogram with bounded relative error: record, percentiles, merge. */
#ifndef KEEL_BASE_LAT_H
#define KEEL_BASE_LAT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Log-linear buckets, the HDR histogram's idea: values below 64 have a bucket each; above,
 * every power of two is split into 64 equal buckets, so a recorded value is known to within
 * 1/64 (1.6%) of itself, from 1 to 2^40 (in whatever unit the caller records: keel's tools
 * record microseconds, so up to 12 days). Fixed size (about 18 KiB), no allocation, no
 * clock: for load generators that keep one per second and one for the whole run.
 */
#define KEEL_LAT_SUB 64u
#define KEEL_LAT_MSB_MAX 40u
#define KEEL_LAT_BUCKETS (KEEL_LAT_SUB + (KEEL_LAT_MSB_MAX - 5u) * KEEL_LAT_SUB)

typedef struct keel_lat {
    uint64_t counts[KEEL_LAT_BUCKETS];
    uint64_t n, min, max, sum;
} keel_lat_t;

void keel_lat_reset(keel_lat_t *h);
/* Values past 2^41 - 1 are recorded as that. */
void keel_lat_record(keel_lat_t *h, uint64_t v);
/* The smallest recorded-bucket bound at or above fraction p (0..1) of the values; never above
 * the largest value recorded. 0 when empty. */
uint64_t keel_lat_percentile(const keel_lat_t *h, double p);
void keel_lat_merge(keel_lat_t *dst, const keel_lat_t *src);
double keel_lat_mean(const keel_lat_t *h);

#endif
