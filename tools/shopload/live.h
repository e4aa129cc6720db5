/* live.h - keel-shopload's live page and HTML report: the run as it goes, then as it went. */
#ifndef KEEL_TOOLS_SHOPLOAD_LIVE_H
#define KEEL_TOOLS_SHOPLOAD_LIVE_H

#include "runtime/http_client.h"
#include "runtime/loop.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * What it shows (page.html, compiled in): per second, orders ended by outcome, p50 and p99,
 * the order service's sagas by state (keel_sagas in each instance's /metrics, summed), the
 * read side's lag (the query service's /lag), the shipments by status (the shipment
 * service's /stats, asked of its next instance when one does not answer); the chaos
 * runner's kills as marks (lines
 * "<unix ms> <what>" appended to an events file by scripts/demo.sh); and per kill, the
 * orders that started between it and the next kill and missed their deadline, and how long
 * after the kill the last such order started (recovery). The live page polls /live.json
 * every second; the report is the same page with the final data written into it.
 */
#define LIVE_METRICS_MAX 16
#define LIVE_EVENTS_MAX 1000 /* kills kept from the events file */
#define LIVE_EVENT_BYTES 120 /* one event line's text */
#define LIVE_EVENTS_FILE_MAX (1 << 20)

typedef struct live_config {
    const char *listen;                    /* host:port of the live page, or NULL */
    const char *events_path;               /* the chaos runner's log, or NULL */
    const char *metrics[LIVE_METRICS_MAX]; /* order instances: their /metrics */
    int metrics_n;
    const char *query;                       /* the read side: its /lag, or NULL */
    const char *shipments[LIVE_METRICS_MAX]; /* the shipment instances: /stats */
    int shipments_n;
    int duration_s;
} live_config_t;

typedef struct live live_t;

/* state(data) returns a new JSON object with the run's totals and phase ("phase", "t",
 * "duration", "rate", "deadline_ms", "totals", "verdict"); seconds is the run's per-second
 * array (borrowed: live keeps a reference). NULL with err filled on failure. */
live_t *live_new(keel_loop_t *loop, keel_http_client_t *http, const live_config_t *cfg,
                 json_t *seconds, json_t *(*state)(void *data), void *data, char *err,
                 size_t err_cap);
/* The load starts now (the events file's times are made relative to it). */
void live_start(live_t *l, int64_t t0_unix_ms);
/* An order that was meant to start start_s seconds into the load ended, within its deadline
 * with a definitive answer (ok) or not. */
void live_order(live_t *l, double start_s, bool ok);
/* Adds the latest sagas, lag and shipments to the second's object, then asks for fresh ones. */
void live_second(live_t *l, json_t *sec);
/* Per kill: {"t", "what", "missed", "recovered_s"} (null when nothing was missed). */
json_t *live_recovery(live_t *l);
/* Writes the report (page.html with the final data in it). 0 or -1 (errno). */
int live_write_html(live_t *l, const char *path);
/* Stops the page's listener (the loop can end). */
void live_stop(live_t *l);
void live_free(live_t *l);

#endif
