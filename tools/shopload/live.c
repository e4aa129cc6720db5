/* live.c - keel-shopload's live page and HTML report (live.h says what they show). */
#include "live.h"

#include "runtime/http_server.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char keel_page_html[]; /* tools/shopload/page.html, by CMakeLists.txt */
extern const size_t keel_page_html_len;

#define LIVE_SECONDS_SLACK 2 /* start seconds kept past the duration (rounding) */

typedef struct event {
    double t;
    char what[LIVE_EVENT_BYTES];
} event_t;

struct live {
    keel_loop_t *loop;
    keel_http_client_t *http;
    live_config_t cfg;
    json_t *seconds;
    json_t *(*state)(void *data);
    void *data;
    keel_http_server_t server;
    bool serving;
    int64_t t0_unix_ms;
    bool started;
    /* orders by the second they were meant to start: ended, and ended in time with an answer */
    uint64_t *ended, *ok;
    int slots;
    event_t *events;
    int events_n;
    json_t *sagas; /* the latest complete poll: {"running": n, ...}, or NULL */
    bool sagas_asking;
    int64_t lag; /* -1: unknown */
    bool lag_asking;
    json_t *shipments; /* the latest /stats: {"pending": n, ...}, or NULL */
    bool shipments_asking;
    int shipments_next; /* the instance asked next */
};

/* ---- the chaos runner's events ---------------------------------------------------------- */

static void read_events(live_t *l)
{
    if (l->cfg.events_path == NULL || !l->started)
        return;
    FILE *f = fopen(l->cfg.events_path, "r");
    if (f == NULL)
        return; /* none yet */
    char line[256];
    long read = 0;
    l->events_n = 0;
    while (l->events_n < LIVE_EVENTS_MAX && fgets(line, sizeof(line), f) != NULL) {
        read += (long)strlen(line);
        if (read > LIVE_EVENTS_FILE_MAX)
            break;
        char *end;
        long long ms = strtoll(line, &end, 10);
        if (end == line || *end != ' ')
            continue; /* not "<unix ms> <what>" */
        event_t *e = &l->events[l->events_n++];
        e->t = (double)(ms - l->t0_unix_ms) / 1000.0;
        snprintf(e->what, sizeof(e->what), "%s", end + 1);
        e->what[strcspn(e->what, "\r\n")] = '\0';
    }
    fclose(f);
}

/* ---- polls: the sagas by state, the read side's lag ------------------------------------- */

typedef struct sagas_poll {
    live_t *l;
    json_t *sums;
    int left;
} sagas_poll_t;

/* Adds keel_sagas{state="X"} N lines of a Prometheus text body to sums. */
static void add_sagas(json_t *sums, const char *body, size_t len)
{
    static const char prefix[] = "keel_sagas{state=\"";
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n > sizeof(prefix) && memcmp(p, prefix, sizeof(prefix) - 1) == 0) {
            const char *st = p + sizeof(prefix) - 1;
            const char *q = memchr(st, '"', (size_t)(le - st));
            if (q != NULL && q + 2 < le && q[1] == '}') {
                char name[32], num[32];
                snprintf(name, sizeof(name), "%.*s", (int)(q - st), st);
                snprintf(num, sizeof(num), "%.*s", (int)(le - q - 2), q + 2);
                double v = strtod(num, NULL);
                json_t *old = json_object_get(sums, name);
                json_object_set_new(
                    sums, name,
                    json_integer((json_int_t)(v + (old ? json_integer_value(old) : 0))));
            }
        }
        p = le + 1;
    }
}

static void on_metrics(int err, const keel_http_msg_t *resp, void *data)
{
    sagas_poll_t *sp = data;
    if (err == 0 && resp->status == 200)
        add_sagas(sp->sums, (const char *)resp->body, resp->body_len);
    if (--sp->left > 0)
        return;
    live_t *l = sp->l;
    json_decref(l->sagas);
    l->sagas = sp->sums; /* an instance that did not answer counts nothing */
    l->sagas_asking = false;
    free(sp);
}

static void on_lag(int err, const keel_http_msg_t *resp, void *data)
{
    live_t *l = data;
    l->lag_asking = false;
    json_t *j = err || resp->status != 200
                    ? NULL
                    : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_t *lag = json_object_get(j, "lag_events");
    l->lag = json_is_integer(lag) ? (int64_t)json_integer_value(lag) : -1;
    json_decref(j);
}

static void on_shipments(int err, const keel_http_msg_t *resp, void *data)
{
    live_t *l = data;
    l->shipments_asking = false;
    json_t *j = err || resp->status != 200
                    ? NULL
                    : json_loadb((const char *)resp->body, resp->body_len, 0, NULL);
    json_decref(l->shipments);
    l->shipments = NULL;
    if (j == NULL) { /* that instance is down: the next one next time */
        l->shipments_next++;
        return;
    }
    l->shipments = json_object();
    static const char *const states[] = {"pending", "packed", "shipped", "cancelled"};
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        json_t *n = json_object_get(j, states[i]);
        if (json_is_integer(n))
            json_object_set(l->shipments, states[i], n);
    }
    json_decref(j);
}

static int get(live_t *l, const char *host, const char *path, keel_http_client_cb cb, void *data)
{
    keel_http_client_request_t req = {
        .method = HTTP_GET, .host_port = host, .target = path, .timeout_ms = 900};
    return keel_http_client_request(l->http, &req, cb, data, NULL);
}

static void poll(live_t *l)
{
    if (l->cfg.metrics_n > 0 && !l->sagas_asking) {
        sagas_poll_t *sp = malloc(sizeof(*sp));
        if (sp != NULL) {
            *sp = (sagas_poll_t){l, json_object(), 1}; /* 1: ours, dropped below */
            l->sagas_asking = true;
            for (int i = 0; i < l->cfg.metrics_n; i++) {
                sp->left++;
                if (get(l, l->cfg.metrics[i], "/metrics", on_metrics, sp) != 0)
                    sp->left--;
            }
            on_metrics(KEEL_ECANCELED, NULL, sp);
        }
    }
    if (l->cfg.query != NULL && !l->lag_asking) {
        l->lag_asking = true;
        if (get(l, l->cfg.query, "/lag", on_lag, l) != 0)
            l->lag_asking = false;
    }
    if (l->cfg.shipments_n > 0 && !l->shipments_asking) {
        l->shipments_asking = true;
        const char *host = l->cfg.shipments[l->shipments_next % l->cfg.shipments_n];
        if (get(l, host, "/stats", on_shipments, l) != 0)
            l->shipments_asking = false;
    }
}

/* ---- the page and its data -------------------------------------------------------------- */

json_t *live_recovery(live_t *l)
{
    read_events(l);
    json_t *out = json_array();
    for (int i = 0; i < l->events_n; i++) {
        const event_t *e = &l->events[i];
        if (e->t < 0 || e->t >= l->cfg.duration_s)
            continue;
        double until = l->cfg.duration_s;
        for (int j = 0; j < l->events_n; j++)
            if (l->events[j].t > e->t && l->events[j].t < until)
                until = l->events[j].t;
        uint64_t missed = 0;
        int last = -1;
        /* the seconds from the one the kill fell in to the one before the next kill's */
        for (int s = (int)floor(e->t); s < l->slots && s < (int)floor(until); s++)
            if (l->ended[s] > l->ok[s]) {
                missed += l->ended[s] - l->ok[s];
                last = s;
            }
        json_array_append_new(
            out, json_pack("{s:f, s:s, s:I, s:o}", "t", e->t, "what", e->what, "missed",
                           (json_int_t)missed, "recovered_s",
                           last < 0 ? json_null() : json_real(fmax(0, last + 1 - e->t))));
    }
    return out;
}

static json_t *live_json(live_t *l, bool live)
{
    json_t *j = l->state(l->data);
    json_object_set(j, "seconds", l->seconds);
    read_events(l);
    json_t *ev = json_array();
    for (int i = 0; i < l->events_n; i++)
        json_array_append_new(
            ev, json_pack("{s:f, s:s}", "t", l->events[i].t, "what", l->events[i].what));
    json_object_set_new(j, "events", ev);
    json_object_set_new(j, "recovery", live_recovery(l));
    json_object_set_new(j, "live", json_boolean(live));
    return j;
}

static void h_json(keel_http_req_t *req, void *data)
{
    live_t *l = data;
    json_t *j = live_json(l, true);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        keel_http_respond_error(req, 500, "out of memory");
        return;
    }
    keel_http_header_t h[2] = {
        {.name = "Content-Type", .value = "application/json", .name_len = 12, .value_len = 16},
        {.name = "Cache-Control", .value = "no-store", .name_len = 13, .value_len = 8}};
    keel_http_respond(req, 200, h, 2, s, strlen(s));
    free(s);
}

static void h_page(keel_http_req_t *req, void *data)
{
    (void)data;
    if (strcmp(req->msg->path, "/") != 0) {
        keel_http_respond_error(req, 404, "the live page is /, its data /live.json");
        return;
    }
    keel_http_respond_body(req, 200, "text/html; charset=utf-8", keel_page_html,
                           keel_page_html_len);
}

int live_write_html(live_t *l, const char *path)
{
    json_t *j = live_json(l, false);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        errno = ENOMEM;
        return -1;
    }
    const char *page = (const char *)keel_page_html;
    const char *at = strstr(page, "<script>");
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        free(s);
        return -1;
    }
    size_t head = at ? (size_t)(at - page) : keel_page_html_len;
    fwrite(page, 1, head, f);
    fputs("<script>window.KEEL_DATA = ", f);
    for (const char *p = s; *p; p++) { /* "</" would end the script element */
        if (p[0] == '<' && p[1] == '/')
            fputs("<\\", f);
        else
            fputc(*p, f);
    }
    fputs(";</script>\n", f);
    fwrite(page + head, 1, keel_page_html_len - head, f);
    free(s);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- life -------------------------------------------------------------------------------- */

live_t *live_new(keel_loop_t *loop, keel_http_client_t *http, const live_config_t *cfg,
                 json_t *seconds, json_t *(*state)(void *data), void *data, char *err,
                 size_t err_cap)
{
    live_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    *l = (live_t){.loop = loop,
                  .http = http,
                  .cfg = *cfg,
                  .seconds = json_incref(seconds),
                  .state = state,
                  .data = data,
                  .lag = -1};
    l->slots = cfg->duration_s + LIVE_SECONDS_SLACK;
    l->ended = calloc((size_t)l->slots, sizeof(uint64_t));
    l->ok = calloc((size_t)l->slots, sizeof(uint64_t));
    l->events = calloc(LIVE_EVENTS_MAX, sizeof(event_t));
    if (l->ended == NULL || l->ok == NULL || l->events == NULL) {
        snprintf(err, err_cap, "out of memory");
        live_free(l);
        return NULL;
    }
    if (cfg->listen != NULL) {
        keel_http_route_t routes[] = {{HTTP_GET, "/live.json", h_json, l},
                                      {HTTP_GET, "/", h_page, l}};
        keel_http_server_config_t sc = keel_http_server_config_default();
        keel_errmsg_t msg = {{0}};
        if (keel_http_server_init(&l->server, loop, &sc, routes, 2, &msg) != 0) {
            snprintf(err, err_cap, "the live page: %s", msg.text);
            live_free(l);
            return NULL;
        }
        if (keel_http_server_listen(&l->server, cfg->listen, &msg) != 0) {
            /* the server's handles close with the loop: l stays (the caller exits) */
            snprintf(err, err_cap, "the live page on %s: %s", cfg->listen, msg.text);
            keel_http_server_shutdown(&l->server, NULL, NULL);
            return NULL;
        }
        l->serving = true;
    }
    return l;
}

void live_start(live_t *l, int64_t t0_unix_ms)
{
    l->t0_unix_ms = t0_unix_ms;
    l->started = true;
    poll(l);
}

void live_order(live_t *l, double start_s, bool ok)
{
    int s = (int)floor(start_s);
    if (s < 0 || s >= l->slots)
        return;
    l->ended[s]++;
    l->ok[s] += ok;
}

void live_second(live_t *l, json_t *sec)
{
    if (l->sagas != NULL)
        json_object_set(sec, "sagas", l->sagas);
    if (l->lag >= 0)
        json_object_set_new(sec, "lag_events", json_integer((json_int_t)l->lag));
    if (l->shipments != NULL)
        json_object_set(sec, "shipments", l->shipments);
    poll(l);
}

void live_stop(live_t *l)
{
    if (l->serving)
        keel_http_server_shutdown(&l->server, NULL, NULL);
    l->serving = false;
}

void live_free(live_t *l)
{
    if (l == NULL)
        return;
    json_decref(l->seconds);
    json_decref(l->sagas);
    json_decref(l->shipments);
    free(l->ended);
    free(l->ok);
    free(l->events);
    free(l);
}
