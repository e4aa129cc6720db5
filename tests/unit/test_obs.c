/* test_obs.c - structured logging, the bounded JSON writer, the hash map, metrics. */
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/map.h"
#include "base/metrics.h"
#include "base/rand.h"
#include "ktest.h"

#include <jansson.h>
#include <stdlib.h>

static char captured[8192];
static size_t captured_len;

static void capture_sink(void *data, const char *line, size_t len)
{
    if (captured_len + len < sizeof(captured)) {
        memcpy(captured + captured_len, line, len);
        captured_len += len;
        captured[captured_len] = '\0';
    }
}

static int64_t fixed_clock(void *data)
{
    return 1795348125123LL; /* 2026-11-22T11:48:45.123Z */
}

static json_t *parse_line(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DISABLE_EOF_CHECK, &e);
    if (j == NULL)
        fprintf(stderr, "bad json: %s (%s)\n", s, e.text);
    return j;
}

static void log_writes_one_json_object_per_line(void)
{
    captured_len = 0;
    keel_log_configure(KEEL_LOG_INFO, capture_sink, fixed_clock, NULL);
    keel_log_info("listening", KF_STR("addr", "127.0.0.1:7000"), KF_INT("port", 7000));
    keel_log_debug("hidden at info level");
    keel_log_set_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
    keel_log_warn("quote \" and \\ and \n newline");
    keel_log_set_trace_id(NULL);
    KT_CHECK(strchr(captured, '\n') != NULL);
    char *second = strchr(captured, '\n') + 1;
    KT_CHECK(strchr(second, '\n') == captured + captured_len - 1);

    json_t *a = parse_line(captured);
    KT_CHECK(a != NULL);
    KT_EQ_STR(json_string_value(json_object_get(a, "ts")), "2026-11-22T11:48:45.123Z");
    KT_EQ_STR(json_string_value(json_object_get(a, "level")), "info");
    KT_EQ_STR(json_string_value(json_object_get(a, "msg")), "listening");
    KT_EQ_STR(json_string_value(json_object_get(a, "addr")), "127.0.0.1:7000");
    KT_EQ_INT(json_integer_value(json_object_get(a, "port")), 7000);
    KT_CHECK(json_object_get(a, "trace_id") == NULL);
    json_decref(a);

    json_t *b = parse_line(second);
    KT_CHECK(b != NULL);
    KT_EQ_STR(json_string_value(json_object_get(b, "msg")), "quote \" and \\ and \n newline");
    KT_EQ_STR(json_string_value(json_object_get(b, "trace_id")),
              "4bf92f3577b34da6a3ce929d0e0e4736");
    json_decref(b);
    keel_log_configure(KEEL_LOG_OFF, NULL, NULL, NULL);
}

static void log_level_names_parse(void)
{
    keel_log_level_t l;
    KT_EQ_INT(keel_log_level_parse("debug", &l), 0);
    KT_EQ_INT(l, KEEL_LOG_DEBUG);
    KT_EQ_INT(keel_log_level_parse("warning", &l), 0);
    KT_EQ_INT(l, KEEL_LOG_WARN);
    KT_EQ_INT(keel_log_level_parse("loud", &l), KEEL_EINVAL);
}

static void json_writer_stays_valid_when_cut_at_every_size(void)
{
    char long_val[600];
    memset(long_val, 'v', sizeof(long_val) - 1);
    long_val[sizeof(long_val) - 1] = '\0';
    long_val[10] = '"';
    long_val[20] = '\n';
    for (size_t cap = 16; cap < 700; cap++) {
        char out[700];
        keel_jw_t w;
        keel_jw_init(&w, out, cap);
        keel_jw_raw(&w, "{");
        keel_jw_key(&w, "a");
        keel_jw_int(&w, -12345);
        keel_jw_key(&w, "long");
        keel_jw_str(&w, long_val);
        keel_jw_key(&w, "after");
        keel_jw_str(&w, "x");
        size_t n = keel_jw_close_object(&w);
        KT_CHECK(n < cap);
        KT_EQ_INT(strlen(out), n);
        json_error_t e;
        json_t *j = json_loads(out, 0, &e);
        if (j == NULL)
            KT_FAIL("cap %zu gave invalid JSON: %s", cap, out);
        json_decref(j);
    }
}

static void map_puts_gets_and_deletes_under_churn(void)
{
    keel_map_t m;
    KT_EQ_INT(keel_map_init(&m, 0, 0, 99), 0);
    keel_rand_t r;
    keel_rand_seed(&r, 5);
    KT_SEED(5);
    enum { KEYS = 5000 };
    static intptr_t model[KEYS]; /* 0 = absent, else value */
    for (int step = 0; step < 200000; step++) {
        int k = (int)keel_rand_below(&r, KEYS);
        char key[16];
        int kl = snprintf(key, sizeof(key), "k%d", k);
        int op = (int)keel_rand_below(&r, 3);
        if (op == 0) {
            intptr_t v = step + 1;
            void *old = NULL;
            int rc = keel_map_put(&m, key, (size_t)kl, (void *)v, &old);
            KT_EQ_INT(rc, model[k] ? 1 : 0);
            if (model[k])
                KT_EQ_INT((intptr_t)old, model[k]);
            model[k] = v;
        } else if (op == 1) {
            void *old = NULL;
            int rc = keel_map_del(&m, key, (size_t)kl, &old);
            KT_EQ_INT(rc, model[k] ? 0 : KEEL_ENOTFOUND);
            if (model[k])
                KT_EQ_INT((intptr_t)old, model[k]);
            model[k] = 0;
        } else {
            void **slot = keel_map_get(&m, key, (size_t)kl);
            KT_EQ_INT(slot != NULL, model[k] != 0);
            if (slot)
                KT_EQ_INT((intptr_t)*slot, model[k]);
        }
    }
    size_t live = 0, seen = 0, pos = 0, kl;
    for (int k = 0; k < KEYS; k++)
        live += model[k] != 0;
    KT_EQ_INT(m.count, live);
    const uint8_t *key;
    void *v;
    while (keel_map_next(&m, &pos, &key, &kl, &v))
        seen++;
    KT_EQ_INT(seen, live);
    keel_map_free(&m, NULL);
}

static void map_refuses_entries_past_its_limit(void)
{
    keel_map_t m;
    KT_EQ_INT(keel_map_init(&m, 0, 3, 1), 0);
    KT_EQ_INT(keel_map_put(&m, "a", 1, NULL, NULL), 0);
    KT_EQ_INT(keel_map_put(&m, "b", 1, NULL, NULL), 0);
    KT_EQ_INT(keel_map_put(&m, "", 0, NULL, NULL), 0);
    KT_EQ_INT(keel_map_put(&m, "d", 1, NULL, NULL), KEEL_EFULL);
    KT_EQ_INT(keel_map_put(&m, "a", 1, (void *)1, NULL), 1); /* replace still allowed */
    KT_CHECK(keel_map_get(&m, "", 0) != NULL);
    keel_map_free(&m, NULL);
}

static void metrics_render_in_prometheus_text_format(void)
{
    keel_metrics_t *reg = keel_metrics_new();
    keel_counter_t *get =
        keel_metrics_counter(reg, "keel_requests_total", "Requests by command.", "cmd=\"get\"");
    keel_counter_t *set =
        keel_metrics_counter(reg, "keel_requests_total", "Requests by command.", "cmd=\"set\"");
    KT_CHECK(get != set);
    KT_CHECK(keel_metrics_counter(reg, "keel_requests_total", "x", "cmd=\"get\"") == get);
    keel_counter_add(get, 41);
    keel_counter_inc(get);
    keel_gauge_t *g = keel_metrics_gauge(reg, "keel_connections", "Open connections.", NULL);
    keel_gauge_set(g, 5);
    keel_gauge_add(g, -2);
    double bounds[] = {0.001, 0.01, 0.1};
    keel_histogram_t *h =
        keel_metrics_histogram(reg, "keel_latency_seconds", "Latency.", "op=\"put\"", bounds, 3);
    keel_histogram_observe(h, 0.0005);
    keel_histogram_observe(h, 0.001); /* le is inclusive */
    keel_histogram_observe(h, 0.05);
    keel_histogram_observe(h, 7.0);
    keel_buf_t out;
    keel_buf_init(&out, 0);
    KT_EQ_INT(keel_metrics_render(reg, &out), 0);
    keel_buf_append(&out, "", 1);
    const char *text = (const char *)keel_buf_rptr(&out);
    const char *want = "# HELP keel_requests_total Requests by command.\n"
                       "# TYPE keel_requests_total counter\n"
                       "keel_requests_total{cmd=\"get\"} 42\n"
                       "keel_requests_total{cmd=\"set\"} 0\n"
                       "# HELP keel_connections Open connections.\n"
                       "# TYPE keel_connections gauge\n"
                       "keel_connections 3\n"
                       "# HELP keel_latency_seconds Latency.\n"
                       "# TYPE keel_latency_seconds histogram\n"
                       "keel_latency_seconds_bucket{op=\"put\",le=\"0.001\"} 2\n"
                       "keel_latency_seconds_bucket{op=\"put\",le=\"0.01\"} 2\n"
                       "keel_latency_seconds_bucket{op=\"put\",le=\"0.1\"} 3\n"
                       "keel_latency_seconds_bucket{op=\"put\",le=\"+Inf\"} 4\n"
                       "keel_latency_seconds_sum{op=\"put\"} 7.0515\n"
                       "keel_latency_seconds_count{op=\"put\"} 4\n";
    KT_EQ_STR(text, want);
    keel_buf_free(&out);
    keel_metrics_free(reg);
}

static void metric_names_and_label_values_are_checked_and_escaped(void)
{
    KT_CHECK(keel_metrics_name_valid("keel_x:y_total"));
    KT_CHECK(!keel_metrics_name_valid("9lives"));
    KT_CHECK(!keel_metrics_name_valid("has-dash"));
    KT_CHECK(!keel_metrics_name_valid(""));
    char out[32];
    KT_EQ_INT(keel_metrics_label_escape(out, sizeof(out), "a\"b\\c\nd"), 0);
    KT_EQ_STR(out, "a\\\"b\\\\c\\nd");
    KT_EQ_INT(keel_metrics_label_escape(out, 4, "abcd"), KEEL_ETOOBIG);
}

int main(void)
{
    KT_RUN(log_writes_one_json_object_per_line);
    KT_RUN(log_level_names_parse);
    KT_RUN(json_writer_stays_valid_when_cut_at_every_size);
    KT_RUN(map_puts_gets_and_deletes_under_churn);
    KT_RUN(map_refuses_entries_past_its_limit);
    KT_RUN(metrics_render_in_prometheus_text_format);
    KT_RUN(metric_names_and_label_values_are_checked_and_escaped);
    return kt_done();
}
