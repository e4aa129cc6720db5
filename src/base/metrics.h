/* metrics.h - counters, gauges and histograms in a registry, rendered as Prometheus text. */
#ifndef KEEL_BASE_METRICS_H
#define KEEL_BASE_METRICS_H

#include "base/buf.h"

#include <stddef.h>
#include <stdint.h>

/*
 * A registry holds metric families (one name, one type, one help text), each
 * with series that differ by their labels. Registration happens at start-up,
 * on one thread; it returns the same series for the same (name, labels), so
 * callers may register lazily. Updating is lock-free (relaxed atomics) and
 * safe from any thread; rendering reads each value atomically (a scrape may
 * see a histogram's count and buckets a few observations apart, as Prometheus
 * clients allow).
 *
 * Exposition: Prometheus text format 0.0.4 (# HELP, # TYPE, name{labels} value;
 * histograms as cumulative _bucket{le="..."}, _sum and _count).
 *
 * Labels are passed preformatted, as they appear between the braces:
 *   keel_metrics_counter(reg, "keel_requests_total", "Requests.", "cmd=\"get\"")
 * keel_metrics_label_escape() escapes a label value.
 *
 * Histograms have fixed buckets chosen at registration; the default set is
 * log-scale for latencies in seconds: 50 µs doubling to ~26 s (20 buckets).
 */
typedef struct keel_metrics keel_metrics_t;

typedef struct keel_counter {
    uint64_t value;
} keel_counter_t;

typedef struct keel_gauge {
    int64_t value;
    double (*fn)(void *data); /* when set, the gauge's value is fn(data) at render time */
    void *fn_data;
} keel_gauge_t;

#define KEEL_HIST_BUCKETS_MAX 32

typedef struct keel_histogram {
    double bounds[KEEL_HIST_BUCKETS_MAX]; /* upper bounds, increasing; +Inf is implicit */
    size_t n_bounds;
    uint64_t counts[KEEL_HIST_BUCKETS_MAX + 1]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
} keel_histogram_t;

/* Registry limits: families and series per family. Over them, registration asserts. */
#define KEEL_METRICS_FAMILIES_MAX 512
#define KEEL_METRICS_SERIES_MAX 4096
#define KEEL_METRICS_NAME_BYTES_MAX 128
#define KEEL_METRICS_LABELS_BYTES_MAX 256

keel_metrics_t *keel_metrics_new(void);
void keel_metrics_free(keel_metrics_t *reg);

keel_counter_t *keel_metrics_counter(keel_metrics_t *reg, const char *name, const char *help,
                                     const char *labels);
keel_gauge_t *keel_metrics_gauge(keel_metrics_t *reg, const char *name, const char *help,
                                 const char *labels);
keel_gauge_t *keel_metrics_gauge_fn(keel_metrics_t *reg, const char *name, const char *help,
                                    const char *labels, double (*fn)(void *), void *data);
/* bounds NULL: the default latency buckets (seconds). n_bounds <= KEEL_HIST_BUCKETS_MAX. */
keel_histogram_t *keel_metrics_histogram(keel_metrics_t *reg, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds);

/* Renders every family in registration order. 0 or KEEL_ETOOBIG/KEEL_ENOMEM from the buffer. */
int keel_metrics_render(const keel_metrics_t *reg, keel_buf_t *out);

/* Escapes a label value (\\, \", \n) into out; returns 0 or KEEL_ETOOBIG. */
int keel_metrics_label_escape(char *out, size_t cap, const char *value);

/* True if name is a valid metric name: [a-zA-Z_:][a-zA-Z0-9_:]*. */
int keel_metrics_name_valid(const char *name);

static inline void keel_counter_add(keel_counter_t *c, uint64_t n)
{
    __atomic_fetch_add(&c->value, n, __ATOMIC_RELAXED);
}

static inline void keel_counter_inc(keel_counter_t *c)
{
    keel_counter_add(c, 1);
}

static inline void keel_gauge_set(keel_gauge_t *g, int64_t v)
{
    __atomic_store_n(&g->value, v, __ATOMIC_RELAXED);
}

static inline void keel_gauge_add(keel_gauge_t *g, int64_t d)
{
    __atomic_fetch_add(&g->value, d, __ATOMIC_RELAXED);
}

void keel_histogram_observe(keel_histogram_t *h, double v);

#endif
