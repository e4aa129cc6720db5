/* report.c - keel-shopload's output: progress every second, the live page's state, the report. */
#include "shopload.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const outcome_names[OUTCOMES] = {"confirmed", "released", "rejected", "failed",
                                                    "late"};

double secs_since(const run_t *r)
{
    return (double)(keel_clock_now_ns() - r->t0_ns) / 1e9;
}

void progress(run_t *r)
{
    uint64_t done = 0;
    for (int k = 0; k < OUTCOMES; k++)
        done += r->outcome_sec[k];
    printf("t=%3ds  orders %6" PRIu64 "/s  confirmed %6" PRIu64 "  released %5" PRIu64
           "  rejected %5" PRIu64 "  failed %4" PRIu64 "  late %4" PRIu64
           "  p50 %7.2f ms  p99 %7.2f ms  in flight %" PRIu64 "\n",
           r->second, done, r->outcome_sec[CONFIRMED], r->outcome_sec[RELEASED],
           r->outcome_sec[REJECTED], r->outcome_sec[FAILED], r->outcome_sec[LATE],
           (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0,
           (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0, r->inflight);
    fflush(stdout);
    if (r->seconds) {
        json_t *sec =
            json_pack("{s:i, s:I, s:I, s:I, s:f, s:f}", "t", r->second, "orders", (json_int_t)done,
                      "confirmed", (json_int_t)r->outcome_sec[CONFIRMED], "failed",
                      (json_int_t)(r->outcome_sec[FAILED] + r->outcome_sec[LATE]), "p50_ms",
                      (double)keel_lat_percentile(&r->sec, 0.5) / 1000.0, "p99_ms",
                      (double)keel_lat_percentile(&r->sec, 0.99) / 1000.0);
        if (r->live && sec)
            live_second(r->live, sec);
        json_array_append_new(r->seconds, sec);
    }
    memset(r->outcome_sec, 0, sizeof(r->outcome_sec));
    keel_lat_reset(&r->sec);
}

/* The run as the live page shows it (live.h's state). */
json_t *live_state(void *data)
{
    static const char *const phases[] = {"restocking", "load",      "draining",  "resolving",
                                         "checking",   "read side", "read side", "shipments",
                                         "shipments",  "done"};
    run_t *r = data;
    json_t *tot =
        json_pack("{s:I, s:I, s:I}", "finished", (json_int_t)r->finished, "inflight",
                  (json_int_t)r->inflight, "client_retries", (json_int_t)r->client_retries);
    for (int k = 0; k < OUTCOMES; k++)
        json_object_set_new(tot, outcome_names[k], json_integer((json_int_t)r->outcomes[k]));
    json_t *j = json_pack("{s:s, s:f, s:i, s:f, s:i, s:o}", "phase", phases[r->phase], "t",
                          r->phase >= LOAD ? secs_since(r) : 0.0, "duration", r->duration_s, "rate",
                          r->rate, "deadline_ms", r->deadline_ms, "totals", tot);
    if (r->phase == DONE) {
        char v[300];
        snprintf(v, sizeof(v), "%s%s%s", r->violations ? "BROKEN" : "held",
                 r->violations ? ": " : "", r->violations ? r->why : "");
        json_object_set_new(j, "verdict", json_string(v));
    }
    return j;
}

void report(run_t *r)
{
    uint64_t answered = r->outcomes[CONFIRMED] + r->outcomes[RELEASED] + r->outcomes[REJECTED];
    uint64_t total = r->finished ? r->finished : 1;
    printf("\norders: %" PRIu64 " scheduled over %d s (%.0f/s asked)\n", r->scheduled,
           r->duration_s, r->rate);
    for (int k = 0; k < OUTCOMES; k++)
        printf("  %-10s %8" PRIu64 "  %6.2f%%\n", outcome_names[k], r->outcomes[k],
               100.0 * (double)r->outcomes[k] / (double)total);
    printf("answered within the deadline (%d ms): %.4f%%\n", r->deadline_ms,
           100.0 * (double)answered / (double)total);
    printf("latency from intended start (ms): p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
           (double)keel_lat_percentile(&r->all, 0.5) / 1000.0,
           (double)keel_lat_percentile(&r->all, 0.99) / 1000.0,
           (double)keel_lat_percentile(&r->all, 0.999) / 1000.0, (double)r->all.max / 1000.0);
    if (r->fine.n > 0) /* the 2% slow cards wait 2 s at the processor by design */
        printf("latency of orders with a fine card (ms): p50 %.2f  p99 %.2f  p99.9 %.2f\n",
               (double)keel_lat_percentile(&r->fine, 0.5) / 1000.0,
               (double)keel_lat_percentile(&r->fine, 0.99) / 1000.0,
               (double)keel_lat_percentile(&r->fine, 0.999) / 1000.0);
    printf("throughput: %.0f answered orders/s\n", (double)answered / r->duration_s);
    printf("client retries (the same key after a 5xx or a broken connection): %" PRIu64 "\n",
           r->client_retries);
    printf("outcomes unknown to the client, asked afterwards: %zu\n", r->uncertain_n);
    if (r->query[0])
        printf("read side: caught up %" PRIu64 " ms after the write side was checked; sales per "
               "product equal the confirmed orders' units: %s\n",
               (uint64_t)r->converged_ms,
               r->sales_checked == r->products ? "checked" : "not checked");
    if (r->shipments_n)
        printf("shipments: caught up %" PRIu64 " ms after the checks above; of the run's %zu ended "
               "orders: %" PRIu64 " pending, %" PRIu64 " packed, %" PRIu64 " shipped, %" PRIu64
               " cancelled (%" PRIu64 " shipments of other orders); one per confirmed order and "
               "none for the others: %s\n",
               (uint64_t)r->ship_converged_ms, r->kept_orders, r->ship_status[0], r->ship_status[1],
               r->ship_status[2], r->ship_status[3], r->ship_others,
               r->ship_checked ? "checked" : "not checked");
    if (r->violations)
        printf("invariants: BROKEN (%d violation%s; the first: %s)\n", r->violations,
               r->violations > 1 ? "s" : "", r->why);
    else
        printf("invariants: held\n");
    if (r->json_path) {
        json_t *j = json_pack(
            "{s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:b, s:o}", "scheduled", (json_int_t)r->scheduled,
            "answered", (json_int_t)answered, "availability", (double)answered / (double)total,
            "p50_ms", (double)keel_lat_percentile(&r->all, 0.5) / 1000.0, "p99_ms",
            (double)keel_lat_percentile(&r->all, 0.99) / 1000.0, "p999_ms",
            (double)keel_lat_percentile(&r->all, 0.999) / 1000.0, "fine_card_p99_ms",
            (double)keel_lat_percentile(&r->fine, 0.99) / 1000.0, "invariants_held",
            r->violations == 0, "seconds", r->seconds);
        r->seconds = NULL;
        json_dump_file(j, r->json_path, JSON_INDENT(1));
        json_decref(j);
    }
}
