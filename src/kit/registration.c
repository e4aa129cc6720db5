/* registration.c - one instance's registration: register, TTL heartbeats or reports,
 * deregister (registration.h). */
#include "kit/registration.h"

#include "base/list.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* REGISTER's arguments: fixed ones, TTL, tags, meta, weights, version, status. */
#define REG_ARGV_MAX                                                                               \
    (8 + 2 + 2 + KEEL_REGISTRATION_TAGS_MAX + 2 + 2 * KEEL_REGISTRATION_META_MAX + 3 + 2 + 2)

struct keel_registration {
    keel_loop_t *loop;
    keel_client_t cl;
    keel_timer_t timer; /* heartbeats, then the wait for DEREGISTER's answer */
    int open_handles;   /* the client and the timer, until their close callbacks */
    bool registered, reg_pending, beat_pending, deregistering, closing;
    keel_ms_t ttl_ms;
    keel_registration_status_t status;
    char output[KEEL_REGISTRATION_OUTPUT_BYTES_MAX];
    keel_registration_done_fn done;
    void *done_data;
    keel_counter_t *m_failures; /* may be NULL */
    /* REGISTER's arguments, pointing into text */
    const char *argv[REG_ARGV_MAX];
    size_t argc, status_arg; /* argv[status_arg] is the status value, 0: none yet */
    char *text;
    char id[KEEL_REGISTRATION_ID_BYTES_MAX];
    char seeds_text[512];
};

static const char *const status_names[] = {NULL, "passing", "warning", "critical"};
static const char *const report_verbs[] = {"HEARTBEAT", "PASS", "WARN", "FAIL"};

keel_registration_config_t keel_registration_config_default(void)
{
    return (keel_registration_config_t){.ttl_ms = 5000};
}

static void failed(keel_registration_t *r)
{
    if (r->m_failures != NULL)
        keel_counter_inc(r->m_failures);
}

static void on_registered(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_registration_t *r = ctx;
    if (status == KEEL_ECANCELED)
        return; /* closing: r may be going */
    r->reg_pending = false;
    r->registered = status == 0 && v->type == KEEL_RESP_INT && !r->deregistering;
    if (!r->registered && !r->deregistering)
        failed(r);
}

static void do_register(keel_registration_t *r)
{
    if (r->reg_pending || r->deregistering || r->closing)
        return;
    size_t argc = r->argc;
    if (r->status != KEEL_REGISTRATION_UNREPORTED) {
        r->argv[argc++] = "STATUS";
        r->argv[argc++] = status_names[r->status];
    }
    if (keel_client_command(&r->cl, argc, r->argv, NULL, on_registered, r) == 0)
        r->reg_pending = true;
}

static void on_beat(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_registration_t *r = ctx;
    if (status == KEEL_ECANCELED)
        return;
    r->beat_pending = false;
    if (r->deregistering)
        return;
    /* HEARTBEAT answers +OK, PASS/WARN/FAIL the status after damping */
    if (status == 0 && (v->type == KEEL_RESP_SIMPLE || v->type == KEEL_RESP_BULK))
        return;
    failed(r);
    /* lapsed or never acknowledged (the registry forgot it, or the registration was lost in
       a leader change): register again */
    if (status == 0 && v->type == KEEL_RESP_ERROR)
        r->registered = false;
    if (!r->registered)
        do_register(r);
}

/* A heartbeat, or the status last reported (which renews the TTL too). */
static void beat(keel_registration_t *r)
{
    if (r->deregistering || r->closing)
        return;
    if (!r->registered) {
        do_register(r);
        return;
    }
    const char *argv[4] = {"KEEL.REG", report_verbs[r->status], r->id, r->output};
    size_t argc = r->status == KEEL_REGISTRATION_UNREPORTED || r->output[0] == 0 ? 3 : 4;
    if (keel_client_command(&r->cl, argc, argv, NULL, on_beat, r) == 0)
        r->beat_pending = true;
}

static void tick(keel_timer_t *t, void *data)
{
    beat(data);
}

static void handle_closed(keel_registration_t *r)
{
    if (--r->open_handles > 0)
        return;
    free(r->text);
    free(r);
}

static void client_closed(keel_client_t *cl)
{
    handle_closed(KEEL_LIST_ENTRY(cl, keel_registration_t, cl));
}

static void timer_closed(keel_timer_t *t)
{
    handle_closed(KEEL_LIST_ENTRY(t, keel_registration_t, timer));
}

/* Copies the REGISTER arguments into one allocation. */
static int build_argv(keel_registration_t *r, const keel_registration_config_t *c)
{
    char port[16], ttl[24], ntags[16], nmeta[16], weight[16];
    snprintf(port, sizeof(port), "%d", c->port);
    snprintf(ttl, sizeof(ttl), "%lld", (long long)c->ttl_ms);
    snprintf(ntags, sizeof(ntags), "%u", c->tags_count);
    snprintf(nmeta, sizeof(nmeta), "%u", c->meta_count);
    snprintf(weight, sizeof(weight), "%u", c->weight);
    const char *src[REG_ARGV_MAX];
    size_t n = 0;
    const char *head[] = {"KEEL.REG", "REGISTER", c->service, r->id, c->address, port, "TTL", ttl};
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
        src[n++] = head[i];
    if (c->tags_count > 0) {
        src[n++] = "TAGS";
        src[n++] = ntags;
        for (uint32_t i = 0; i < c->tags_count; i++)
            src[n++] = c->tags[i];
    }
    if (c->meta_count > 0) {
        src[n++] = "META";
        src[n++] = nmeta;
        for (uint32_t i = 0; i < 2 * c->meta_count; i++)
            src[n++] = c->meta[i];
    }
    if (c->weight > 0) {
        src[n++] = "WEIGHTS";
        src[n++] = weight;
        src[n++] = "1";
    }
    if (c->version != NULL) {
        src[n++] = "VERSION";
        src[n++] = c->version;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += strlen(src[i]) + 1;
    if ((r->text = malloc(bytes)) == NULL)
        return KEEL_ENOMEM;
    char *p = r->text;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(src[i]) + 1;
        memcpy(p, src[i], len);
        r->argv[i] = p;
        p += len;
    }
    r->argc = n;
    return 0;
}

int keel_registration_start(keel_registration_t **out, keel_loop_t *loop,
                            const keel_registration_config_t *c, keel_errmsg_t *msg)
{
    *out = NULL;
    if (c->registry == NULL || c->service == NULL || c->instance_id == NULL || c->address == NULL ||
        c->ttl_ms <= 0 || c->port < 0 || c->port > 65535)
        return keel_errf(msg, KEEL_EINVAL,
                         "registration: registry, service, id, address, port and TTL needed");
    if (c->tags_count > KEEL_REGISTRATION_TAGS_MAX || c->meta_count > KEEL_REGISTRATION_META_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "registration: at most %u tags and %u meta pairs",
                         KEEL_REGISTRATION_TAGS_MAX, KEEL_REGISTRATION_META_MAX);
    if (strlen(c->instance_id) >= KEEL_REGISTRATION_ID_BYTES_MAX)
        return keel_errf(msg, KEEL_ETOOBIG, "registration: an id of at most %u bytes",
                         KEEL_REGISTRATION_ID_BYTES_MAX - 1);
    keel_registration_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return KEEL_ENOMEM;
    r->loop = loop;
    r->ttl_ms = c->ttl_ms;
    r->status = c->status;
    snprintf(r->id, sizeof(r->id), "%s", c->instance_id);
    int rc = build_argv(r, c);
    if (rc != 0)
        goto err_after_alloc;
    keel_client_config_t cc = keel_client_config_default();
    snprintf(r->seeds_text, sizeof(r->seeds_text), "%s", c->registry);
    rc = keel_client_config_seeds(&cc, r->seeds_text, "registration: registry", msg);
    if (rc != 0)
        goto err_after_alloc;
    keel_ms_t every = c->ttl_ms / 3 > 0 ? c->ttl_ms / 3 : 1;
    cc.request_timeout_ms = every;
    rc = keel_client_init(&r->cl, loop, &cc, msg);
    if (rc != 0)
        goto err_after_alloc;
    r->open_handles = 1;
    rc = keel_timer_init(loop, &r->timer);
    if (rc != 0) {
        keel_client_close(&r->cl, client_closed); /* frees r once closed */
        return rc;
    }
    r->open_handles = 2;
    if (c->metrics != NULL)
        r->m_failures =
            keel_metrics_counter(c->metrics, "keel_service_registry_failures_total",
                                 "Registrations and heartbeats the registry did not acknowledge.",
                                 c->labels ? c->labels : "");
    keel_timer_start(&r->timer, every, every, tick, r);
    do_register(r);
    *out = r;
    return 0;
err_after_alloc:
    free(r->text);
    free(r);
    return rc;
}

void keel_registration_report(keel_registration_t *r, keel_registration_status_t status,
                              const char *output)
{
    bool changed = status != r->status;
    r->status = status;
    snprintf(r->output, sizeof(r->output), "%s", output ? output : "");
    if (changed && !r->beat_pending) /* a beat in flight carries the old status: next tick */
        beat(r);
}

bool keel_registration_registered(const keel_registration_t *r)
{
    return r->registered;
}

static void deregister_finish(keel_registration_t *r)
{
    keel_registration_done_fn done = r->done;
    r->done = NULL;
    keel_timer_stop(&r->timer);
    if (done != NULL)
        done(r, r->done_data);
}

static void on_deregistered(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *v)
{
    keel_registration_t *r = ctx;
    if (status == KEEL_ECANCELED)
        return;
    r->registered = false;
    deregister_finish(r);
}

static void deregister_waited(keel_timer_t *t, void *data)
{
    deregister_finish(data); /* no answer in time: the TTL will remove it */
}

void keel_registration_deregister(keel_registration_t *r, keel_ms_t timeout_ms,
                                  keel_registration_done_fn done, void *data)
{
    if (r->deregistering || r->closing)
        return;
    r->deregistering = true;
    r->done = done;
    r->done_data = data;
    keel_timer_stop(&r->timer);
    const char *argv[] = {"KEEL.REG", "DEREGISTER", r->id};
    if (keel_client_command_timeout(&r->cl, 3, argv, NULL, timeout_ms, on_deregistered, r) != 0)
        timeout_ms = 0; /* not sent: done on the next loop turn */
    keel_timer_start(&r->timer, timeout_ms + 100, 0, deregister_waited, r);
}

void keel_registration_close(keel_registration_t *r)
{
    if (r->closing)
        return;
    r->closing = true;
    r->done = NULL;
    keel_timer_close(&r->timer, timer_closed);
    keel_client_close(&r->cl, client_closed);
}
