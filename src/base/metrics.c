/* metrics.c - metric registry and Prometheus text exposition. */
#include "base/metrics.h"

#include "base/err.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } mtype_t;

typedef struct series {
    char labels[KEEL_METRICS_LABELS_BYTES_MAX];
    union {
        keel_counter_t counter;
        keel_gauge_t gauge;
        keel_histogram_t hist;
    } u;
} series_t;

typedef struct family {
    char name[KEEL_METRICS_NAME_BYTES_MAX];
    char *help;
    mtype_t type;
    series_t **series;
    size_t n_series, cap_series;
} family_t;

struct keel_metrics {
    family_t *families[KEEL_METRICS_FAMILIES_MAX];
    size_t n_families;
};

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* 50 µs doubling: 0.00005 .. 26.2144 s. */
static const double default_bounds[] = {
    0.00005, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128,  0.0256,
    0.0512,  0.1024, 0.2048, 0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072, 26.2144,
};

int keel_metrics_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                 (p != name && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return strlen(name) < KEEL_METRICS_NAME_BYTES_MAX;
}

keel_metrics_t *keel_metrics_new(void)
{
    return calloc(1, sizeof(keel_metrics_t));
}

void keel_metrics_free(keel_metrics_t *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->n_families; i++) {
        family_t *f = reg->families[i];
        for (size_t j = 0; j < f->n_series; j++)
            free(f->series[j]);
        free(f->series);
        free(f->help);
        free(f);
    }
    free(reg);
}

static family_t *family_get(keel_metrics_t *reg, const char *name, const char *help, mtype_t t)
{
    assert(keel_metrics_name_valid(name));
    for (size_t i = 0; i < reg->n_families; i++) {
        family_t *f = reg->families[i];
        if (strcmp(f->name, name) == 0) {
            assert(f->type == t && "metric registered twice with different types");
            return f;
        }
    }
    assert(reg->n_families < KEEL_METRICS_FAMILIES_MAX);
    family_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->help = strdup(help ? help : "");
    f->type = t;
    if (f->help == NULL) {
        free(f);
        return NULL;
    }
    reg->families[reg->n_families++] = f;
    return f;
}

static series_t *series_get(keel_metrics_t *reg, const char *name, const char *help, mtype_t t,
                            const char *labels, int *created)
{
    family_t *f = family_get(reg, name, help, t);
    if (f == NULL)
        return NULL;
    labels = labels ? labels : "";
    assert(strlen(labels) < KEEL_METRICS_LABELS_BYTES_MAX);
    *created = 0;
    for (size_t i = 0; i < f->n_series; i++)
        if (strcmp(f->series[i]->labels, labels) == 0)
            return f->series[i];
    assert(f->n_series < KEEL_METRICS_SERIES_MAX);
    if (f->n_series == f->cap_series) {
        size_t ncap = f->cap_series ? f->cap_series * 2 : 4;
        series_t **ns = realloc(f->series, ncap * sizeof(*ns));
        if (ns == NULL)
            return NULL;
        f->series = ns;
        f->cap_series = ncap;
    }
    series_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    f->series[f->n_series++] = s;
    *created = 1;
    return s;
}

keel_counter_t *keel_metrics_counter(keel_metrics_t *reg, const char *name, const char *help,
                                     const char *labels)
{
    int created;
    series_t *s = series_get(reg, name, help, T_COUNTER, labels, &created);
    return s ? &s->u.counter : NULL;
}

keel_gauge_t *keel_metrics_gauge(keel_metrics_t *reg, const char *name, const char *help,
                                 const char *labels)
{
    int created;
    series_t *s = series_get(reg, name, help, T_GAUGE, labels, &created);
    return s ? &s->u.gauge : NULL;
}

keel_gauge_t *keel_metrics_gauge_fn(keel_metrics_t *reg, const char *name, const char *help,
                                    const char *labels, double (*fn)(void *), void *data)
{
    keel_gauge_t *g = keel_metrics_gauge(reg, name, help, labels);
    if (g != NULL) {
        g->fn = fn;
        g->fn_data = data;
    }
    return g;
}

keel_histogram_t *keel_metrics_histogram(keel_metrics_t *reg, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds)
{
    if (bounds == NULL) {
        bounds = default_bounds;
        n_bounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
    }
    assert(n_bounds >= 1 && n_bounds <= KEEL_HIST_BUCKETS_MAX);
    for (size_t i = 1; i < n_bounds; i++)
        assert(bounds[i] > bounds[i - 1]);
    int created;
    series_t *s = series_get(reg, name, help, T_HISTOGRAM, labels, &created);
    if (s == NULL)
        return NULL;
    if (created) {
        memcpy(s->u.hist.bounds, bounds, n_bounds * sizeof(double));
        s->u.hist.n_bounds = n_bounds;
    }
    return &s->u.hist;
}

void keel_histogram_observe(keel_histogram_t *h, double v)
{
    size_t lo = 0, hi = h->n_bounds; /* first bound >= v, or n_bounds (+Inf) */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    __atomic_fetch_add(&h->counts[lo], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    double old, upd;
    __atomic_load(&h->sum, &old, __ATOMIC_RELAXED);
    do {
        upd = old + v;
    } while (
        !__atomic_compare_exchange(&h->sum, &old, &upd, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

/* Shortest decimal that reads back as the same double; Prometheus-style +Inf/NaN. */
static void fmt_double(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static int render_help(const family_t *f, keel_buf_t *out)
{
    int rc = keel_buf_printf(out, "# HELP %s ", f->name);
    /* HELP text escapes only backslash and newline. */
    for (const char *p = f->help; rc == 0 && *p; p++) {
        if (*p == '\\')
            rc = keel_buf_append(out, "\\\\", 2);
        else if (*p == '\n')
            rc = keel_buf_append(out, "\\n", 2);
        else
            rc = keel_buf_append(out, p, 1);
    }
    if (rc == 0)
        rc = keel_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    return rc;
}

static int render_hist(const family_t *f, const series_t *s, keel_buf_t *out)
{
    const keel_histogram_t *h = &s->u.hist;
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cum = 0;
    char num[40];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i <= h->n_bounds; i++) {
        cum += __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
        if (i < h->n_bounds)
            fmt_double(num, sizeof(num), h->bounds[i]);
        else
            snprintf(num, sizeof(num), "+Inf");
        rc = keel_buf_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep, num,
                             (unsigned long long)cum);
    }
    double sum;
    __atomic_load(&h->sum, &sum, __ATOMIC_RELAXED);
    fmt_double(num, sizeof(num), sum);
    const char *lb = s->labels[0] ? "{" : "", *rb = s->labels[0] ? "}" : "";
    if (rc == 0)
        rc = keel_buf_printf(out, "%s_sum%s%s%s %s\n", f->name, lb, s->labels, rb, num);
    if (rc == 0)
        rc = keel_buf_printf(out, "%s_count%s%s%s %llu\n", f->name, lb, s->labels, rb,
                             (unsigned long long)cum);
    return rc;
}

static int render_series(const family_t *f, const series_t *s, keel_buf_t *out)
{
    if (f->type == T_HISTOGRAM)
        return render_hist(f, s, out);
    const char *lb = s->labels[0] ? "{" : "", *rb = s->labels[0] ? "}" : "";
    if (f->type == T_COUNTER)
        return keel_buf_printf(
            out, "%s%s%s%s %llu\n", f->name, lb, s->labels, rb,
            (unsigned long long)__atomic_load_n(&s->u.counter.value, __ATOMIC_RELAXED));
    char num[40];
    if (s->u.gauge.fn != NULL)
        fmt_double(num, sizeof(num), s->u.gauge.fn(s->u.gauge.fn_data));
    else
        snprintf(num, sizeof(num), "%lld",
                 (long long)__atomic_load_n(&s->u.gauge.value, __ATOMIC_RELAXED));
    return keel_buf_printf(out, "%s%s%s%s %s\n", f->name, lb, s->labels, rb, num);
}

int keel_metrics_render(const keel_metrics_t *reg, keel_buf_t *out)
{
    for (size_t i = 0; i < reg->n_families; i++) {
        const family_t *f = reg->families[i];
        int rc = render_help(f, out);
        for (size_t j = 0; rc == 0 && j < f->n_series; j++)
            rc = render_series(f, f->series[j], out);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int keel_metrics_label_escape(char *out, size_t cap, const char *value)
{
    size_t o = 0;
    for (const char *p = value; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        size_t k = rep ? 2 : 1;
        if (o + k + 1 > cap)
            return KEEL_ETOOBIG;
        memcpy(out + o, rep ? rep : p, k);
        o += k;
    }
    if (o + 1 > cap)
        return KEEL_ETOOBIG;
    out[o] = '\0';
    return 0;
}
