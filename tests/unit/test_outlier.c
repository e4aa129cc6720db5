/* test_outlier.c - ejection triggers, ejection/return times, max ejection percent, success rate. */
#include "core/outlier.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

static char trace[2048];

static void on_change(void *data, uint32_t idx, bool ejected, keel_ms_t now_ms)
{
    (void)data;
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof(trace) - n, "%s%u@%lld ", ejected ? "out" : "in", idx,
             (long long)now_ms);
}

static void setup(keel_outlier_t *o, keel_outlier_config_t *c, uint32_t n)
{
    c->on_change = on_change;
    trace[0] = 0;
    keel_errmsg_t m;
    if (keel_outlier_init(o, c, 64, 0, &m))
        KT_FAIL("init: %s", m.text);
    uint64_t ids[64];
    for (uint32_t i = 0; i < n; i++)
        ids[i] = 1000 + i;
    KT_EQ_INT(keel_outlier_set_endpoints(o, ids, n), 0);
}

static void fail(keel_outlier_t *o, uint32_t idx, keel_ms_t now_ms, int times)
{
    for (int i = 0; i < times; i++)
        keel_outlier_record_status(o, idx, now_ms, 500);
}

static void ejects_after_consecutive_5xx_and_returns_after_base_time(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    keel_outlier_t o;
    setup(&o, &c, 10);
    fail(&o, 2, 100, 4);
    keel_outlier_record_status(&o, 2, 100, 200); /* breaks the run */
    fail(&o, 2, 100, 4);
    KT_CHECK(!keel_outlier_is_ejected(&o, 2));
    fail(&o, 2, 1234, 1);
    KT_CHECK(keel_outlier_is_ejected(&o, 2));
    KT_EQ_INT(o.ep[2].ejected_until_ms, 1234 + 30000);
    KT_EQ_INT(keel_outlier_next_deadline_ms(&o), 10000); /* the interval comes first */
    keel_outlier_tick(&o, 10000);
    keel_outlier_tick(&o, 20000);
    KT_EQ_INT(keel_outlier_next_deadline_ms(&o), 30000);
    keel_outlier_tick(&o, 30000);
    KT_EQ_INT(keel_outlier_next_deadline_ms(&o), 31234);
    keel_outlier_tick(&o, 31233);
    KT_CHECK(keel_outlier_is_ejected(&o, 2));
    keel_outlier_tick(&o, 31234);
    KT_CHECK(!keel_outlier_is_ejected(&o, 2));
    KT_EQ_STR(trace, "out2@1234 in2@31234 ");
    keel_outlier_free(&o);
}

/* Ejection k lasts min(base * k, max): 30, 60, 90, 100, 100 s with base 30 s and max 100 s. */
static void ejection_time_grows_with_each_ejection_and_is_capped(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    c.max_ejection_ms = 100000;
    c.interval_ms = 1000000; /* no interval tick in this test: no forgiveness */
    keel_outlier_t o;
    setup(&o, &c, 10);
    const keel_ms_t want_s[] = {30, 60, 90, 100, 100};
    keel_ms_t now = 5;
    for (int k = 0; k < 5; k++) {
        fail(&o, 7, now, 5);
        KT_CHECK(keel_outlier_is_ejected(&o, 7));
        KT_EQ_INT(o.ep[7].ejected_until_ms - now, want_s[k] * 1000);
        now = o.ep[7].ejected_until_ms;
        KT_EQ_INT(keel_outlier_next_deadline_ms(&o), now);
        keel_outlier_tick(&o, now);
        KT_CHECK(!keel_outlier_is_ejected(&o, 7));
    }
    keel_outlier_free(&o);
}

static void a_recovered_endpoint_is_forgiven_one_ejection_per_interval(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c); /* interval 10 s, base 30 s */
    keel_outlier_t o;
    setup(&o, &c, 10);
    fail(&o, 1, 0, 5);            /* k = 1, out until 30 s */
    keel_outlier_tick(&o, 30000); /* back at 30 s; the interval at 30 s does not forgive yet */
    KT_EQ_INT(o.ep[1].ejections, 1);
    fail(&o, 1, 30500, 5); /* fails again at once: k = 2, 60 s */
    KT_EQ_INT(o.ep[1].ejected_until_ms, 30500 + 60000);
    keel_outlier_tick(&o, 90500);
    for (keel_ms_t t = 100000; t <= 110000; t += 10000)
        keel_outlier_tick(&o, t); /* at 100 s only 9.5 s back; at 110 s forgiven once */
    KT_EQ_INT(o.ep[1].ejections, 1);
    keel_outlier_tick(&o, 120000);
    KT_EQ_INT(o.ep[1].ejections, 0);
    fail(&o, 1, 120001, 5);
    KT_EQ_INT(o.ep[1].ejected_until_ms, 120001 + 30000);
    keel_outlier_free(&o);
}

static void never_ejects_more_than_max_ejection_percent(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    c.max_ejection_pct = 30;
    keel_outlier_t o;
    setup(&o, &c, 10);
    for (uint32_t i = 0; i < 10; i++)
        fail(&o, i, 50, 10);
    KT_EQ_INT(o.ejected_n, 3);
    KT_EQ_STR(trace, "out0@50 out1@50 out2@50 ");
    KT_CHECK(o.ejections_blocked > 0);
    /* when one returns, another may go */
    keel_outlier_tick(&o, 30050);
    KT_EQ_INT(o.ejected_n, 0);
    fail(&o, 9, 30051, 5);
    KT_CHECK(keel_outlier_is_ejected(&o, 9));
    keel_outlier_free(&o);
}

static void ejects_one_endpoint_even_when_the_percent_rounds_to_zero(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c); /* 10% of 5 endpoints is half an endpoint */
    keel_outlier_t o;
    setup(&o, &c, 5);
    fail(&o, 0, 1, 5);
    fail(&o, 1, 1, 5);
    KT_CHECK(keel_outlier_is_ejected(&o, 0));
    KT_CHECK(!keel_outlier_is_ejected(&o, 1));
    keel_outlier_free(&o);
}

static void gateway_and_local_origin_runs_are_counted_separately(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    c.consecutive_5xx = 0;
    c.consecutive_gateway = 3;
    c.consecutive_local_origin = 2;
    c.max_ejection_pct = 100;
    keel_outlier_t o;
    setup(&o, &c, 4);
    keel_outlier_record_status(&o, 0, 1, 502);
    keel_outlier_record_status(&o, 0, 1, 503);
    keel_outlier_record_status(&o, 0, 1, 500); /* a 5xx, but not a gateway error */
    keel_outlier_record_status(&o, 0, 1, 504);
    KT_CHECK(!keel_outlier_is_ejected(&o, 0));
    keel_outlier_record_status(&o, 0, 1, 502);
    keel_outlier_record_status(&o, 0, 2, 503);
    KT_CHECK(keel_outlier_is_ejected(&o, 0));
    keel_outlier_record_local(&o, 1, 3, false);
    keel_outlier_record_local(&o, 1, 3, true); /* a connect success resets the run */
    keel_outlier_record_local(&o, 1, 3, false);
    KT_CHECK(!keel_outlier_is_ejected(&o, 1));
    keel_outlier_record_local(&o, 1, 4, false);
    KT_CHECK(keel_outlier_is_ejected(&o, 1));
    KT_EQ_STR(trace, "out0@2 out1@4 ");
    keel_outlier_free(&o);
}

/*
 * Nine endpoints answer 99% of requests and one 70%; every endpoint gets 200
 * requests in the interval. mean ~0.959, stdev ~0.087, bar = mean - 1.9 stdev
 * ~0.79: only the 70% one is ejected at the interval tick.
 */
static void success_rate_ejects_the_outlier_at_the_interval(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    c.consecutive_5xx = 0;
    c.consecutive_local_origin = 0;
    keel_outlier_t o;
    setup(&o, &c, 10);
    for (uint32_t i = 0; i < 10; i++) {
        int bad = i == 6 ? 60 : 2;
        for (int r = 0; r < 200; r++)
            keel_outlier_record_status(&o, i, 5000, r < bad ? 503 : 200);
    }
    /* below sr_request_volume: an endpoint with 50 requests, all failures, is not judged */
    keel_outlier_t o2;
    KT_EQ_INT(o.ejected_n, 0);
    keel_outlier_tick(&o, 9999);
    KT_EQ_INT(o.ejected_n, 0);
    keel_outlier_tick(&o, 10000);
    KT_EQ_STR(trace, "out6@10000 ");
    keel_outlier_free(&o);

    keel_outlier_config_default(&c);
    c.consecutive_5xx = 0;
    setup(&o2, &c, 10);
    for (uint32_t i = 0; i < 10; i++)
        for (int r = 0; r < (i == 3 ? 50 : 200); r++)
            keel_outlier_record_status(&o2, i, 5000, i == 3 ? 500 : 200);
    keel_outlier_tick(&o2, 10000);
    KT_EQ_INT(o2.ejected_n, 0);
    keel_outlier_free(&o2);
}

static void too_few_hosts_with_volume_means_no_success_rate_verdict(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c); /* sr_minimum_hosts 5 */
    c.consecutive_5xx = 0;
    keel_outlier_t o;
    setup(&o, &c, 4);
    for (uint32_t i = 0; i < 4; i++)
        for (int r = 0; r < 200; r++)
            keel_outlier_record_status(&o, i, 1, i == 0 && r < 150 ? 500 : 200);
    keel_outlier_tick(&o, 10000);
    KT_EQ_INT(o.ejected_n, 0);
    keel_outlier_free(&o);
}

static void endpoint_updates_keep_ejections_by_id(void)
{
    keel_outlier_config_t c;
    keel_outlier_config_default(&c);
    keel_outlier_t o;
    setup(&o, &c, 10);
    fail(&o, 4, 10, 5);
    uint64_t ids[] = {1009, 1004, 2000};
    KT_EQ_INT(keel_outlier_set_endpoints(&o, ids, 3), 0);
    KT_CHECK(keel_outlier_is_ejected(&o, 1));
    KT_CHECK(!keel_outlier_is_ejected(&o, 0) && !keel_outlier_is_ejected(&o, 2));
    KT_EQ_INT(o.ejected_n, 1);
    keel_outlier_free(&o);
}

int main(void)
{
    KT_RUN(ejects_after_consecutive_5xx_and_returns_after_base_time);
    KT_RUN(ejection_time_grows_with_each_ejection_and_is_capped);
    KT_RUN(a_recovered_endpoint_is_forgiven_one_ejection_per_interval);
    KT_RUN(never_ejects_more_than_max_ejection_percent);
    KT_RUN(ejects_one_endpoint_even_when_the_percent_rounds_to_zero);
    KT_RUN(gateway_and_local_origin_runs_are_counted_separately);
    KT_RUN(success_rate_ejects_the_outlier_at_the_interval);
    KT_RUN(too_few_hosts_with_volume_means_no_success_rate_verdict);
    KT_RUN(endpoint_updates_keep_ejections_by_id);
    return kt_done();
}
