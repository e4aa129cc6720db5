/* log_view.c - what the views of logs in keel server share (log_view.h). */
#include "tx/log_view.h"

#include <stdlib.h>
#include <string.h>

int keel__view_call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                    keel_client_reply_t *r, keel_errmsg_t *msg)
{
    keel_errmsg_t why = {{0}};
    int rc = keel_client_call(seeds, seeds_n, argc, argv, KEEL_LOG_VIEW_TIMEOUT_MS, r, &why);
    if (rc != 0)
        return keel_errf(msg, rc, "%s: %s: %s", argv[0], keel_strerror(rc), why.text);
    if (r->v->type == KEEL_RESP_ERROR) {
        rc = keel_errf(msg, KEEL_EPROTO, "%s: %.*s", argv[0], (int)r->v->str.len,
                       (const char *)r->v->str.ptr);
        keel_client_reply_free(r);
    }
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void keel__view_keys_free(keel__view_keys_t *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        free(ks->v[i]);
    free(ks->v);
    ks->v = NULL;
    ks->n = 0;
}

int keel__view_scan(const char *const *seeds, size_t seeds_n, const char *pattern, size_t max,
                    keel__view_keys_t *ks, keel_errmsg_t *msg)
{
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000", "TYPE", "stream"};
        keel_client_reply_t r;
        int rc = keel__view_call(seeds, seeds_n, 8, argv, &r, msg);
        if (rc != 0)
            return rc;
        const keel_resp_value_t *v = r.v;
        if (v->type != KEEL_RESP_ARRAY || v->elems_len != 2 ||
            v->elems[0].str.len >= sizeof(cursor)) {
            keel_client_reply_free(&r);
            return keel_errf(msg, KEEL_EPROTO, "SCAN: unexpected reply");
        }
        memcpy(cursor, v->elems[0].str.ptr, v->elems[0].str.len);
        cursor[v->elems[0].str.len] = '\0';
        for (size_t i = 0; i < v->elems[1].elems_len && ks->n < max; i++) {
            const keel_resp_arg_t *k = &v->elems[1].elems[i].str;
            char **grown = realloc(ks->v, (ks->n + 1) * sizeof(*ks->v));
            char *s = grown ? strndup((const char *)k->ptr, k->len) : NULL;
            if (grown)
                ks->v = grown;
            if (s == NULL) {
                keel_client_reply_free(&r);
                return keel_errf(msg, KEEL_ENOMEM, "SCAN: out of memory");
            }
            ks->v[ks->n++] = s;
        }
        keel_client_reply_free(&r);
    } while (strcmp(cursor, "0") != 0);
    if (ks->n > 0)
        qsort(ks->v, ks->n, sizeof(*ks->v), cmp_str);
    return 0;
}

void keel__view_print_data(FILE *out, const uint8_t *p, size_t n, size_t max)
{
    fputc('"', out);
    for (size_t i = 0; i < n && i < max; i++)
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            fputc(p[i], out);
        else
            fprintf(out, "\\x%02x", p[i]);
    fputc('"', out);
}
