/* registry_json.c - the registry's HTTP answers in Consul's JSON shapes (registry_http.c). */
#include "server/server_int.h"

#include "core/registry.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_NAME_BYTES_MAX 512u /* as registry_http.c's: a check id's service id part */

/* A JSON string of arbitrary bytes: non-UTF-8 bytes become '?', so the answer stays JSON. */
json_t *keel__srv_reg_jstr(const uint8_t *p, size_t n)
{
    json_t *j = json_stringn((const char *)p, n);
    if (j != NULL)
        return j;
    char *c = malloc(n + 1);
    if (c == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        c[i] = p[i] < 0x80 && p[i] != 0 ? (char)p[i] : '?';
    j = json_stringn(c, n);
    free(c);
    return j;
}

static json_t *jrstr(const keel_reg_str_t *s)
{
    return keel__srv_reg_jstr(s->p, s->n);
}

/* One entry of /v1/health/service/:name, in Consul's shape (ServiceEntry). */
json_t *keel__srv_reg_health_entry(server_t *s, const keel_reg_instance_t *in)
{
    json_t *tags = json_array(), *meta = json_object();
    for (size_t i = 0; i < in->tags_n; i++)
        json_array_append_new(tags, jrstr(&in->tags[i]));
    for (size_t i = 0; i + 1 < in->meta_n; i += 2) {
        char *k = strndup((const char *)in->meta[i].p, in->meta[i].n);
        if (k != NULL)
            json_object_set_new(meta, k, jrstr(&in->meta[i + 1]));
        free(k);
    }
    json_t *svc = json_pack(
        "{s:o,s:o,s:o,s:o,s:I,s:o,s:{s:I,s:I},s:o,s:I,s:I}", "ID", jrstr(&in->id), "Service",
        jrstr(&in->svc->name), "Tags", tags, "Address", jrstr(&in->address), "Port",
        (json_int_t)in->port, "Meta", meta, "Weights", "Passing", (json_int_t)in->weight_passing,
        "Warning", (json_int_t)in->weight_warning, "Version", jrstr(&in->version), "CreateIndex",
        (json_int_t)in->create_index, "ModifyIndex", (json_int_t)in->modify_index);
    char check_id[REG_NAME_BYTES_MAX + 16];
    snprintf(check_id, sizeof(check_id), "service:%.*s", (int)in->id.n, (const char *)in->id.p);
    char check_name[REG_NAME_BYTES_MAX + 32];
    snprintf(check_name, sizeof(check_name), "Service '%.*s' check", (int)in->svc->name.n,
             (const char *)in->svc->name.p);
    json_t *check =
        json_pack("{s:s,s:o,s:o,s:s,s:o,s:o,s:o,s:s,s:I,s:I,s:I}", "Node", s->cfg.name, "CheckID",
                  keel__srv_reg_jstr((const uint8_t *)check_id, strlen(check_id)), "Name",
                  keel__srv_reg_jstr((const uint8_t *)check_name, strlen(check_name)), "Status",
                  keel_reg_status_name(in->status), "Output", jrstr(&in->output), "ServiceID",
                  jrstr(&in->id), "ServiceName", jrstr(&in->svc->name), "Type",
                  in->ttl_ms ? "ttl" : "", "Flips", (json_int_t)in->flips, "CreateIndex",
                  (json_int_t)in->create_index, "ModifyIndex", (json_int_t)in->modify_index);
    return json_pack("{s:{s:s,s:s},s:o,s:[o]}", "Node", "Node", s->cfg.name, "Address",
                     s->cfg.listen_http, "Service", svc, "Checks", check);
}

static int str_cmp(const void *a, const void *b)
{
    const keel_reg_str_t *x = *(const keel_reg_str_t *const *)a;
    const keel_reg_str_t *y = *(const keel_reg_str_t *const *)b;
    size_t m = x->n < y->n ? x->n : y->n;
    int r = m ? memcmp(x->p, y->p, m) : 0;
    return r ? r : (x->n > y->n) - (x->n < y->n);
}

/* {"service": ["tag", ...]}: services with a live instance, their tags sorted, once each. */
char *keel__srv_reg_render_catalog(server_t *s, uint64_t now)
{
    const keel_reg_t *reg = s->kv.kv.reg;
    json_t *obj = json_object();
    for (size_t i = 0; reg && i < reg->svc_n; i++) {
        const keel_reg_service_t *svc = reg->svc[i];
        size_t n = 0;
        for (size_t k = 0; k < svc->n; k++)
            n += keel_reg_alive(svc->inst[k], now) ? svc->inst[k]->tags_n + 1 : 0;
        if (n == 0)
            continue;
        const keel_reg_str_t **t = malloc(n * sizeof(*t));
        json_t *tags = json_array();
        size_t m = 0;
        for (size_t k = 0; t && k < svc->n; k++)
            for (size_t j = 0; keel_reg_alive(svc->inst[k], now) && j < svc->inst[k]->tags_n; j++)
                t[m++] = &svc->inst[k]->tags[j];
        if (t)
            qsort(t, m, sizeof(*t), str_cmp);
        for (size_t k = 0; t && k < m; k++)
            if (k == 0 || str_cmp(&t[k - 1], &t[k]) != 0)
                json_array_append_new(tags, jrstr(t[k]));
        free(t);
        char *name = strndup((const char *)svc->name.p, svc->name.n);
        if (name)
            json_object_set_new(obj, name, tags);
        else
            json_decref(tags);
        free(name);
    }
    char *text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(obj);
    return text;
}
