/* discovery.c - a service's passing instances from keel server's registry (KEEL.REG WAIT). */
#include "kit/discovery.h"

#include "base/list.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS_MIN 50
#define RETRY_MS_MAX 2000

static void ask(keel_discovery_t *d);

/* A field of an instance's flat field/value array, or NULL. */
static const keel_resp_value_t *field(const keel_resp_value_t *inst, const char *name)
{
    if (inst->type != KEEL_RESP_ARRAY)
        return NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i + 1 < inst->elems_len; i += 2) {
        const keel_resp_value_t *k = &inst->elems[i];
        if (k->type == KEEL_RESP_BULK && k->str.len == nl && memcmp(k->str.ptr, name, nl) == 0)
            return &inst->elems[i + 1];
    }
    return NULL;
}

static int copy_str(char *out, size_t cap, const keel_resp_value_t *v)
{
    if (v == NULL || v->type != KEEL_RESP_BULK || v->str.len >= cap)
        return -1;
    memcpy(out, v->str.ptr, v->str.len);
    out[v->str.len] = '\0';
    return 0;
}

static int64_t num(const keel_resp_value_t *v)
{
    return v != NULL && v->type == KEEL_RESP_INT ? v->integer : -1;
}

/* The value of key `name` in an instance's meta (a flat key, value array), or NULL. */
static const keel_resp_value_t *meta(const keel_resp_value_t *inst, const char *name)
{
    const keel_resp_value_t *m = field(inst, "meta");
    if (m == NULL || m->type != KEEL_RESP_ARRAY)
        return NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i + 1 < m->elems_len; i += 2) {
        const keel_resp_value_t *k = &m->elems[i];
        if (k->type == KEEL_RESP_BULK && k->str.len == nl && memcmp(k->str.ptr, name, nl) == 0)
            return &m->elems[i + 1];
    }
    return NULL;
}

/* *2 :index *n instance: the new list, or -1 for a reply of another shape. */
static int take_answer(keel_discovery_t *d, const keel_resp_value_t *r)
{
    if (r->type != KEEL_RESP_ARRAY || r->elems_len != 2 || r->elems[0].type != KEEL_RESP_INT ||
        r->elems[1].type != KEEL_RESP_ARRAY || r->elems[1].elems_len > KEEL_DISCOVERY_INSTANCES_MAX)
        return -1;
    const keel_resp_value_t *arr = &r->elems[1];
    keel_discovery_instance_t *list = calloc(arr->elems_len ? arr->elems_len : 1, sizeof(*list));
    if (list == NULL)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < arr->elems_len; i++) {
        const keel_resp_value_t *inst = &arr->elems[i];
        keel_discovery_instance_t *x = &list[n];
        int64_t port = num(field(inst, "port")), w = num(field(inst, "weight_passing"));
        if (copy_str(x->id, sizeof(x->id), field(inst, "id")) != 0 ||
            copy_str(x->address, sizeof(x->address), field(inst, "address")) != 0 || port <= 0 ||
            port > 65535)
            continue; /* a malformed instance is skipped, not fatal */
        x->port = (int)port;
        x->weight = w > 0 ? (uint32_t)w : 1;
        if (copy_str(x->zone, sizeof(x->zone), meta(inst, KEEL_DISCOVERY_ZONE_META)) != 0)
            x->zone[0] = '\0';
        n++;
    }
    uint64_t index = (uint64_t)r->elems[0].integer;
    int changed = !d->answered || index != d->index || n != d->n ||
                  (n > 0 && memcmp(list, d->list, n * sizeof(*list)) != 0);
    free(d->list);
    d->list = list;
    d->n = n;
    d->index = index;
    d->answered = true;
    if (changed) {
        d->changes++;
        if (d->on_change)
            d->on_change(d, d->data);
    }
    return 0;
}

static void retry_fire(keel_timer_t *t, void *data)
{
    ask(data);
}

static void on_reply(keel_client_t *cl, void *ctx, int status, const keel_resp_value_t *r)
{
    keel_discovery_t *d = ctx;
    if (d->closing)
        return;
    if (status == 0 && take_answer(d, r) == 0) {
        if (d->failing)
            keel_log_info("discovery: registry reachable again", KF_STR("service", d->service),
                          KF_INT("instances", d->n));
        d->failing = false;
        d->failures = 0;
        ask(d);
        return;
    }
    d->failures_total++;
    if (d->m_failures)
        keel_counter_inc(d->m_failures);
    if (!d->failing)
        keel_log_warn("discovery: registry unreachable; serving the last known instances",
                      KF_STR("service", d->service), KF_INT("instances", d->n),
                      KF_STR("error", status                       ? keel_strerror(status)
                                      : r->type == KEEL_RESP_ERROR ? "error reply"
                                                                   : "unexpected reply"));
    d->failing = true;
    uint32_t shift = d->failures < 6 ? d->failures : 6;
    keel_ms_t wait = (keel_ms_t)RETRY_MS_MIN << shift;
    if (wait > RETRY_MS_MAX)
        wait = RETRY_MS_MAX;
    d->failures++;
    keel_timer_start(&d->retry, wait, 0, retry_fire, d);
}

static void ask(keel_discovery_t *d)
{
    char index[24], wait[24];
    snprintf(index, sizeof(index), "%llu", (unsigned long long)(d->answered ? d->index : 0));
    snprintf(wait, sizeof(wait), "%d", KEEL_DISCOVERY_WAIT_MS);
    const char *argv[8] = {"KEEL.REG", "WAIT", d->service, index, wait, "PASSING", "TAG", d->tag};
    size_t argc = d->tag[0] ? 8 : 6;
    if (keel_client_command_timeout(d->cl, argc, argv, NULL, KEEL_DISCOVERY_WAIT_MS + 5000,
                                    on_reply, d) != 0)
        keel_timer_start(&d->retry, RETRY_MS_MAX, 0, retry_fire, d);
}

int keel_discovery_start(keel_discovery_t *d, keel_loop_t *loop, const char *registry,
                         const char *service, const char *tag, keel_discovery_fn on_change,
                         void *data, keel_metrics_t *metrics, keel_errmsg_t *msg)
{
    memset(d, 0, sizeof(*d));
    if (strlen(service) >= sizeof(d->service) || (tag && strlen(tag) >= sizeof(d->tag)))
        return keel_errf(msg, KEEL_EINVAL, "discovery: service or tag longer than %u bytes",
                         KEEL_DISCOVERY_ID_BYTES_MAX - 1);
    strcpy(d->service, service);
    if (tag)
        strcpy(d->tag, tag);
    d->loop = loop;
    d->on_change = on_change;
    d->data = data;
    keel_client_config_t cc = keel_client_config_default();
    snprintf(d->seeds_text, sizeof(d->seeds_text), "%s", registry);
    int rc = keel_client_config_seeds(&cc, d->seeds_text, "discovery: registry", msg);
    if (rc != 0)
        return rc;
    if (metrics != NULL) {
        char labels[160];
        snprintf(labels, sizeof(labels), "service=\"%s\"", d->service);
        d->m_failures = keel_metrics_counter(
            metrics, "keel_discovery_registry_failures_total",
            "Registry queries of discovery that failed (the last list was kept).", labels);
    }
    if ((d->cl = calloc(1, sizeof(*d->cl))) == NULL)
        return KEEL_ENOMEM;
    rc = keel_client_init(d->cl, loop, &cc, msg);
    if (rc == 0)
        rc = keel_timer_init(loop, &d->retry);
    if (rc != 0) {
        free(d->cl);
        d->cl = NULL;
        return rc;
    }
    ask(d);
    return 0;
}

const keel_discovery_instance_t *keel_discovery_instances(const keel_discovery_t *d, size_t *n)
{
    *n = d->n;
    return d->list;
}

static void client_closed(keel_client_t *cl)
{
    free(cl);
}

static void retry_closed(keel_timer_t *t)
{
    keel_discovery_t *d = KEEL_LIST_ENTRY(t, keel_discovery_t, retry);
    if (d->closed)
        d->closed(d); /* last: d may be freed there */
}

void keel_discovery_close(keel_discovery_t *d, void (*closed)(keel_discovery_t *d))
{
    if (d->closing)
        return;
    d->closing = true;
    d->closed = closed;
    if (d->cl)
        keel_client_close(d->cl, client_closed);
    d->cl = NULL;
    free(d->list);
    d->list = NULL;
    d->n = 0;
    keel_timer_close(&d->retry, retry_closed); /* d's memory is in use until retry_closed */
}
