/* sidecar.c - sidecar mode: the app's health checks, registration and deregistration. */
#include "proxy/sidecar.h"

#include "base/log.h"
#include "kit/registration.h"
#include "proxy/health.h"
#include "proxy/proxy_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIDECAR_OUTPUT_BYTES 200u

struct keel_sidecar {
    keel_loop_t *loop;
    keel_proxy_health_t health; /* path owned */
    char *app;                  /* "IP:port" of the app */
    char service[KEEL_PROXY_NAME_BYTES_MAX];
    char id[KEEL_REGISTRATION_ID_BYTES_MAX];
    char address[80];
    int port;
    keel_registration_config_t rc; /* strings point into cfg_copy */
    keel_proxy_config_t *cfg_copy; /* only its sidecar section is filled */
    keel_http_client_t http;       /* HTTP checks */
    bool http_on;
    keel_timer_t timer; /* probes, then the drain */
    int open_handles;
    bool probing, probed, stopping, closing;
    uint32_t ok_run, fail_run;
    bool healthy;
    keel_registration_status_t status;
    keel_registration_t *reg; /* after the first probe */
    void (*done)(void *data);
    void *done_data;
    keel_gauge_t *m_healthy;
    keel_metrics_t *metrics;
    char labels[KEEL_METRICS_LABELS_BYTES_MAX];
};

/* ---- copies of the config ------------------------------------------------------------------ */

static bool copy_str(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src == NULL || *dst != NULL;
}

static void sidecar_cfg_free(keel_proxy_config_t *c)
{
    if (c == NULL)
        return;
    keel_proxy_config_free(c); /* frees the sidecar's strings (the rest is empty) */
    free(c);
}

/* A config holding a copy of src's sidecar section alone. */
static keel_proxy_config_t *sidecar_cfg_copy(const keel_proxy_sidecar_t *src)
{
    keel_proxy_config_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    keel_proxy_sidecar_t *d = &c->sidecar;
    *d = *src;
    d->service = d->id = d->app = d->inbound = d->advertise = d->version = d->registry = NULL;
    d->health.path = NULL;
    d->tags_count = d->meta_count = 0;
    bool ok = copy_str(&d->service, src->service) && copy_str(&d->id, src->id) &&
              copy_str(&d->app, src->app) && copy_str(&d->inbound, src->inbound) &&
              copy_str(&d->advertise, src->advertise) && copy_str(&d->version, src->version) &&
              copy_str(&d->registry, src->registry) && copy_str(&d->health.path, src->health.path);
    for (uint32_t i = 0; ok && i < src->tags_count; i++, d->tags_count++)
        ok = copy_str(&d->tags[i], src->tags[i]);
    for (uint32_t i = 0; ok && i < src->meta_count; i++, d->meta_count++)
        ok = copy_str(&d->meta[2 * i], src->meta[2 * i]) &&
             copy_str(&d->meta[2 * i + 1], src->meta[2 * i + 1]);
    if (!ok) {
        sidecar_cfg_free(c);
        return NULL;
    }
    return c;
}

static bool s_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool keel_sidecar_same(const keel_proxy_sidecar_t *a, const keel_proxy_sidecar_t *b)
{
    if (a->enabled != b->enabled || !s_eq(a->service, b->service) || !s_eq(a->id, b->id) ||
        !s_eq(a->app, b->app) || !s_eq(a->inbound, b->inbound) ||
        !s_eq(a->advertise, b->advertise) || !s_eq(a->version, b->version) ||
        !s_eq(a->registry, b->registry) || !s_eq(a->health.path, b->health.path) ||
        a->tags_count != b->tags_count || a->meta_count != b->meta_count ||
        a->weight != b->weight || a->ttl_ms != b->ttl_ms ||
        a->deregister_wait_ms != b->deregister_wait_ms || a->drain_ms != b->drain_ms ||
        a->health.tcp != b->health.tcp || a->health.interval_ms != b->health.interval_ms ||
        a->health.timeout_ms != b->health.timeout_ms ||
        a->health.healthy_threshold != b->health.healthy_threshold ||
        a->health.unhealthy_threshold != b->health.unhealthy_threshold)
        return false;
    for (uint32_t i = 0; i < a->tags_count; i++)
        if (!s_eq(a->tags[i], b->tags[i]))
            return false;
    for (uint32_t i = 0; i < 2 * a->meta_count; i++)
        if (!s_eq(a->meta[i], b->meta[i]))
            return false;
    return true;
}

/* ---- teardown ------------------------------------------------------------------------------ */

static void handle_closed(keel_sidecar_t *sc)
{
    if (--sc->open_handles > 0)
        return;
    sidecar_cfg_free(sc->cfg_copy);
    free(sc);
}

static void timer_closed(keel_timer_t *t)
{
    handle_closed(KEEL_LIST_ENTRY(t, keel_sidecar_t, timer));
}

static void http_closed(keel_http_client_t *cli, void *data)
{
    handle_closed(data);
}

/* Everything closes; sc is freed once the last handle (or a probe in flight) is done. */
static void sidecar_close(keel_sidecar_t *sc)
{
    if (sc->closing)
        return;
    sc->closing = true;
    if (sc->reg != NULL) {
        keel_registration_close(sc->reg);
        sc->reg = NULL;
    }
    keel_timer_close(&sc->timer, timer_closed);
    if (sc->http_on)
        keel_http_client_close(&sc->http, http_closed, sc);
}

/* ---- probes -------------------------------------------------------------------------------- */

static keel_registration_status_t status_of(const keel_sidecar_t *sc, int err, int status)
{
    if (!sc->healthy)
        return KEEL_REGISTRATION_CRITICAL;
    return keel_proxy_probe_warning(err, status) ? KEEL_REGISTRATION_WARNING
                                                 : KEEL_REGISTRATION_PASSING;
}

static void describe(const keel_sidecar_t *sc, int err, int status, char *out, size_t cap)
{
    const char *what = sc->health.tcp ? "TCP connect" : "HTTP GET";
    if (err != 0)
        snprintf(out, cap, "%s %s%s: %s", what, sc->app, sc->health.tcp ? "" : sc->health.path,
                 keel_strerror(err));
    else if (sc->health.tcp)
        snprintf(out, cap, "%s %s: connected", what, sc->app);
    else
        snprintf(out, cap, "%s %s%s: %d", what, sc->app, sc->health.path, status);
}

static void probe_done(int err, int status, void *data)
{
    keel_sidecar_t *sc = data;
    sc->probing = false;
    if (sc->closing || sc->stopping || err == KEEL_ECANCELED) {
        handle_closed(sc); /* the probe held sc */
        return;
    }
    handle_closed(sc); /* still open: the timer and the client hold sc */
    bool passed = keel_proxy_probe_passed(err, status);
    char output[SIDECAR_OUTPUT_BYTES];
    describe(sc, err, status, output, sizeof(output));
    if (!sc->probed) { /* the first probe decides at once, as a Consul check run at start */
        sc->probed = true;
        sc->healthy = passed;
        sc->ok_run = passed ? 1 : 0;
        sc->fail_run = passed ? 0 : 1;
    } else {
        int turned =
            keel_proxy_health_judge(&sc->health, passed, &sc->ok_run, &sc->fail_run, &sc->healthy);
        if (turned != 0)
            keel_log_info(turned > 0 ? "sidecar: app healthy" : "sidecar: app unhealthy",
                          KF_STR("service", sc->service), KF_STR("check", output));
    }
    keel_gauge_set(sc->m_healthy, sc->healthy ? 1 : 0);
    keel_registration_status_t st = status_of(sc, err, status);
    if (sc->reg == NULL) {
        sc->rc.status = st;
        keel_errmsg_t msg;
        if (keel_registration_start(&sc->reg, sc->loop, &sc->rc, &msg) != 0) {
            keel_log_error("sidecar: cannot register the app", KF_STR("error", msg.text));
            return;
        }
        keel_log_info("sidecar: registering the app", KF_STR("service", sc->service),
                      KF_STR("id", sc->id), KF_STR("address", sc->address),
                      KF_INT("port", sc->port), KF_STR("check", output));
        sc->status = st;
        keel_registration_report(sc->reg, st, output); /* the output goes with the heartbeats */
        return;
    }
    if (st != sc->status)
        keel_log_info("sidecar: app status", KF_STR("service", sc->service),
                      KF_STR("status", st == KEEL_REGISTRATION_PASSING   ? "passing"
                                       : st == KEEL_REGISTRATION_WARNING ? "warning"
                                                                         : "critical"),
                      KF_STR("check", output));
    sc->status = st;
    keel_registration_report(sc->reg, st, output);
}

static void probe_tick(keel_timer_t *t, void *data)
{
    keel_sidecar_t *sc = data;
    if (sc->probing || sc->stopping)
        return;
    int rc = keel_proxy_probe(sc->loop, sc->http_on ? &sc->http : NULL, sc->app, &sc->health,
                              probe_done, sc);
    if (rc == 0) {
        sc->probing = true;
        sc->open_handles++; /* sc outlives the probe */
    } else {
        keel_log_warn("sidecar: cannot probe the app", KF_STR("app", sc->app),
                      KF_STR("error", keel_strerror(rc)));
    }
}

/* ---- start and stop ------------------------------------------------------------------------ */

/* The address callers use: `advertise`, else the inbound listener's host and bound port. */
static int advertised(keel_sidecar_t *sc, keel_proxy_t *p, const keel_proxy_config_t *cfg,
                      keel_errmsg_t *msg)
{
    const keel_proxy_sidecar_t *c = &cfg->sidecar;
    const char *hp = c->advertise;
    int port = 0;
    if (hp == NULL) {
        hp = cfg->listeners[c->inbound_listener].address;
        if ((port = keel_proxy_listener_port(p, c->inbound_listener)) < 0)
            return keel_errf(msg, port, "sidecar: the inbound listener has no port");
    }
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || (size_t)(colon - hp) >= sizeof(sc->address))
        return keel_errf(msg, KEEL_EINVAL, "sidecar: bad address %s", hp);
    snprintf(sc->address, sizeof(sc->address), "%.*s", (int)(colon - hp), hp);
    sc->port = port > 0 ? port : atoi(colon + 1);
    return 0;
}

int keel_sidecar_start(keel_sidecar_t **out, keel_loop_t *loop, keel_proxy_t *p,
                       const keel_proxy_config_t *cfg, keel_errmsg_t *msg)
{
    *out = NULL;
    const keel_proxy_sidecar_t *c = &cfg->sidecar;
    keel_sidecar_t *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return keel_errf(msg, KEEL_ENOMEM, "sidecar: out of memory");
    sc->loop = loop;
    int rc = advertised(sc, p, cfg, msg);
    if (rc != 0) {
        free(sc);
        return rc;
    }
    if ((sc->cfg_copy = sidecar_cfg_copy(c)) == NULL) {
        free(sc);
        return keel_errf(msg, KEEL_ENOMEM, "sidecar: out of memory");
    }
    const keel_proxy_sidecar_t *k = &sc->cfg_copy->sidecar;
    sc->health = k->health;
    sc->app = k->app;
    snprintf(sc->service, sizeof(sc->service), "%s", k->service);
    if (k->id != NULL)
        snprintf(sc->id, sizeof(sc->id), "%s", k->id);
    else if (snprintf(sc->id, sizeof(sc->id), "%.63s-%.80s-%d", k->service, sc->address,
                      sc->port) >= (int)sizeof(sc->id)) {
        sidecar_cfg_free(sc->cfg_copy);
        free(sc);
        return keel_errf(msg, KEEL_ETOOBIG, "sidecar: give an 'id' (the default is too long)");
    }
    sc->rc = keel_registration_config_default();
    sc->rc.registry = k->registry;
    sc->rc.service = sc->service;
    sc->rc.instance_id = sc->id;
    sc->rc.address = sc->address;
    sc->rc.port = sc->port;
    sc->rc.ttl_ms = k->ttl_ms;
    sc->rc.tags = (const char *const *)k->tags;
    sc->rc.tags_count = k->tags_count;
    sc->rc.meta = (const char *const *)k->meta;
    sc->rc.meta_count = k->meta_count;
    sc->rc.weight = k->weight;
    sc->rc.version = k->version;
    snprintf(sc->labels, sizeof(sc->labels), "service=\"%s\"", sc->service);
    sc->rc.metrics = p->metrics;
    sc->rc.labels = sc->labels;
    sc->m_healthy =
        keel_metrics_gauge(p->metrics, "keel_proxy_sidecar_app_healthy",
                           "1 while the sidecar's app passes its health check.", sc->labels);
    if (!sc->health.tcp) {
        keel_http_client_config_t hc = keel_http_client_config_default();
        if ((rc = keel_http_client_init(&sc->http, loop, &hc, msg)) != 0) {
            sidecar_cfg_free(sc->cfg_copy);
            free(sc);
            return rc;
        }
        sc->http_on = true;
        sc->open_handles++;
    }
    keel_timer_init(loop, &sc->timer);
    sc->open_handles++;
    keel_timer_start(&sc->timer, 1, sc->health.interval_ms, probe_tick, sc);
    *out = sc;
    return 0;
}

static void drained(keel_timer_t *t, void *data)
{
    keel_sidecar_t *sc = data;
    void (*done)(void *) = sc->done;
    void *done_data = sc->done_data;
    keel_log_info("sidecar: drained; closing", KF_STR("service", sc->service));
    sidecar_close(sc);
    if (done != NULL)
        done(done_data);
}

static void deregistered(keel_registration_t *r, void *data)
{
    keel_sidecar_t *sc = data;
    keel_log_info("sidecar: app deregistered; draining", KF_STR("service", sc->service),
                  KF_STR("id", sc->id),
                  KF_INT("drain_ms", (int64_t)sc->cfg_copy->sidecar.drain_ms));
    keel_timer_start(&sc->timer, sc->cfg_copy->sidecar.drain_ms, 0, drained, sc);
}

void keel_sidecar_stop(keel_sidecar_t *sc, void (*done)(void *data), void *data)
{
    if (sc->stopping)
        return;
    sc->stopping = true;
    sc->done = done;
    sc->done_data = data;
    keel_timer_stop(&sc->timer);
    if (sc->reg == NULL) { /* never registered: nothing to take back */
        keel_timer_start(&sc->timer, 0, 0, drained, sc);
        return;
    }
    keel_registration_deregister(sc->reg, sc->cfg_copy->sidecar.deregister_wait_ms, deregistered,
                                 sc);
}
