/* aggregate.c - merging an aggregate route's JSON parts (aggregate.h). */
#include "proxy/aggregate.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *outcome_text(keel_proxy_part_outcome_t o)
{
    switch (o) {
    case KEEL_PROXY_PART_OK:
        return "status";
    case KEEL_PROXY_PART_TIMEOUT:
        return "timeout";
    case KEEL_PROXY_PART_CONNECT:
        return "connect-failed";
    case KEEL_PROXY_PART_RESET:
        return "upstream-reset";
    case KEEL_PROXY_PART_BAD_RESPONSE:
        return "upstream-bad-response";
    case KEEL_PROXY_PART_NO_HOST:
        return "no-healthy-upstream";
    case KEEL_PROXY_PART_BAD_PATH:
        return "bad-parameter";
    }
    return "error";
}

int keel_proxy_agg_merge(const keel_proxy_aggregate_t *agg, const keel_proxy_part_result_t *res,
                         char **out, size_t *out_len)
{
    json_t *o = json_object(), *errors = json_array();
    int status = 200;
    bool partial = false, oom = o == NULL || errors == NULL;
    for (uint32_t i = 0; i < agg->parts_count && !oom; i++) {
        const keel_proxy_agg_part_t *pt = &agg->parts[i];
        const keel_proxy_part_result_t *r = &res[i];
        json_t *v = NULL;
        const char *why = NULL;
        if (r->outcome != KEEL_PROXY_PART_OK)
            why = outcome_text(r->outcome);
        else if (r->status < 200 || r->status > 299)
            why = "status";
        else if (r->body_len > agg->part_bytes_max)
            why = "too-large";
        else if ((v = json_loadb(r->body ? r->body : "", r->body_len,
                                 JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL)) == NULL)
            why = "bad-json";
        if (why != NULL) {
            partial = true;
            json_t *e = json_pack("{s:s, s:s, s:i}", "part", pt->name, "error", why, "status",
                                  r->outcome == KEEL_PROXY_PART_OK ? r->status : 0);
            oom = e == NULL || json_array_append_new(errors, e) != 0;
            if (pt->required && status == 200) {
                if (r->outcome == KEEL_PROXY_PART_OK && r->status >= 400 && r->status <= 499)
                    status = r->status;
                else if (r->outcome == KEEL_PROXY_PART_TIMEOUT)
                    status = 504;
                else
                    status = 502;
            }
        }
        oom = oom || json_object_set_new(o, pt->name, v ? v : json_null()) != 0;
    }
    if (!oom)
        oom = json_object_set_new(o, "partial", json_boolean(partial)) != 0 ||
              json_object_set(o, "errors", errors) != 0;
    char *text = oom ? NULL : json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(errors);
    json_decref(o);
    if (text == NULL)
        return 0;
    *out = text;
    *out_len = strlen(text);
    return status;
}
