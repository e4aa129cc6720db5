/* choreo_view.c - choreographed sagas in keel server, listed by state (choreo_view.h). */
#include "tx/choreo_view.h"

#include "client/blocking.h"
#include "tx/choreo.h"

#include <stdlib.h>
#include <string.h>

#define VIEW_TIMEOUT_MS 10000 /* per keel request */

typedef struct row {
    char *saga, *detail; /* owned */
    int state;           /* KEEL_SAGA_RUNNING or KEEL_SAGA_NEEDS_ATTENTION */
} row_t;

typedef struct rows {
    row_t *v;
    size_t n, running, attention;
} rows_t;

static void rows_free(rows_t *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->v[i].saga);
        free(rs->v[i].detail);
    }
    free(rs->v);
}

static int rows_add(rows_t *rs, const keel_resp_value_t *saga, const keel_resp_value_t *detail,
                    int state)
{
    row_t *grown = realloc(rs->v, (rs->n + 1) * sizeof(*rs->v));
    if (grown == NULL)
        return KEEL_ENOMEM;
    rs->v = grown;
    row_t *r = &rs->v[rs->n];
    r->saga = strndup((const char *)saga->str.ptr, saga->str.len);
    r->detail = malloc(detail->str.len + 1);
    if (r->saga == NULL || r->detail == NULL) {
        free(r->saga);
        free(r->detail);
        return KEEL_ENOMEM;
    }
    memcpy(r->detail, detail->str.ptr, detail->str.len);
    r->detail[detail->str.len] = '\0';
    r->state = state;
    rs->n++;
    *(state == KEEL_SAGA_RUNNING ? &rs->running : &rs->attention) += 1;
    return 0;
}

static int call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                keel_client_reply_t *r, keel_errmsg_t *msg)
{
    keel_errmsg_t why = {{0}};
    int rc = keel_client_call(seeds, seeds_n, argc, argv, VIEW_TIMEOUT_MS, r, &why);
    if (rc != 0)
        return keel_errf(msg, rc, "%s: %s: %s", argv[0], keel_strerror(rc), why.text);
    if (r->v->type != KEEL_RESP_ARRAY) {
        keel_client_reply_free(r);
        return keel_errf(msg, KEEL_EPROTO, "%s %s: unexpected reply (a key of another type?)",
                         argv[0], argv[1]);
    }
    return 0;
}

static int read_running(const char *const *seeds, size_t seeds_n, const char *key, rows_t *rs,
                        keel_errmsg_t *msg)
{
    char last[24];
    snprintf(last, sizeof(last), "%u", KEEL_CHOREO_VIEW_SAGAS_MAX - 1);
    const char *argv[] = {"ZRANGE", key, "0", last, "WITHSCORES"};
    keel_client_reply_t r;
    int rc = call(seeds, seeds_n, 5, argv, &r, msg);
    if (rc != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i + 1 < r.v->elems_len; i += 2)
        rc = rows_add(rs, &r.v->elems[i], &r.v->elems[i + 1], KEEL_SAGA_RUNNING);
    keel_client_reply_free(&r);
    return rc == 0 ? 0 : keel_errf(msg, rc, "out of memory");
}

static int read_attention(const char *const *seeds, size_t seeds_n, const char *key, rows_t *rs,
                          keel_errmsg_t *msg)
{
    char cursor[32] = "0";
    size_t n = 0;
    do {
        const char *argv[] = {"HSCAN", key, cursor, "COUNT", "1000"};
        keel_client_reply_t r;
        int rc = call(seeds, seeds_n, 5, argv, &r, msg);
        if (rc != 0)
            return rc;
        const keel_resp_value_t *v = r.v;
        if (v->elems_len != 2 || v->elems[0].str.len >= sizeof(cursor) ||
            v->elems[1].type != KEEL_RESP_ARRAY) {
            keel_client_reply_free(&r);
            return keel_errf(msg, KEEL_EPROTO, "HSCAN: unexpected reply");
        }
        memcpy(cursor, v->elems[0].str.ptr, v->elems[0].str.len);
        cursor[v->elems[0].str.len] = '\0';
        const keel_resp_value_t *kv = &v->elems[1];
        for (size_t i = 0; rc == 0 && i + 1 < kv->elems_len && n < KEEL_CHOREO_VIEW_SAGAS_MAX;
             i += 2, n++)
            rc = rows_add(rs, &kv->elems[i], &kv->elems[i + 1], KEEL_SAGA_NEEDS_ATTENTION);
        keel_client_reply_free(&r);
        if (rc != 0)
            return keel_errf(msg, rc, "out of memory");
    } while (strcmp(cursor, "0") != 0 && n < KEEL_CHOREO_VIEW_SAGAS_MAX);
    return 0;
}

static int cmp_row(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    int c = strcmp(x->saga, y->saga);
    return c != 0 ? c : x->state - y->state;
}

static void print_escaped(FILE *out, const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0' && i < KEEL_CHOREO_VIEW_WHY_BYTES_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    if (s[i] != '\0')
        fputs("...", out);
}

int keel_choreo_view_list(const char *const *seeds, size_t seeds_n, const char *stream, int state,
                          FILE *out, keel_errmsg_t *msg)
{
    if (state != -1 && state != KEEL_SAGA_RUNNING && state != KEEL_SAGA_NEEDS_ATTENTION)
        return keel_errf(msg, KEEL_EINVAL,
                         "a choreographed saga's state is running or needs_attention");
    if (stream == NULL || stream[0] == '\0' || strlen(stream) > KEEL_OUTBOX_STREAM_BYTES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "a stream of 1 to %u bytes",
                         KEEL_OUTBOX_STREAM_BYTES_MAX);
    char deadlines[KEEL_CHOREO_KEY_BYTES_MAX + 1], attention[KEEL_CHOREO_KEY_BYTES_MAX + 1];
    snprintf(deadlines, sizeof(deadlines), "%s" KEEL_CHOREO_DEADLINES_SUFFIX, stream);
    snprintf(attention, sizeof(attention), "%s" KEEL_CHOREO_ATTENTION_SUFFIX, stream);
    rows_t rs = {0};
    int rc = 0;
    if (state != KEEL_SAGA_NEEDS_ATTENTION)
        rc = read_running(seeds, seeds_n, deadlines, &rs, msg);
    if (rc == 0 && state != KEEL_SAGA_RUNNING)
        rc = read_attention(seeds, seeds_n, attention, &rs, msg);
    if (rc == 0) {
        if (rs.n > 0)
            qsort(rs.v, rs.n, sizeof(*rs.v), cmp_row);
        for (size_t i = 0; i < rs.n; i++) {
            print_escaped(out, rs.v[i].saga); /* ids are checked by writers, not by keel */
            if (rs.v[i].state == KEEL_SAGA_RUNNING) {
                fputs(" running deadline_ms=", out);
                print_escaped(out, rs.v[i].detail);
                fputc('\n', out);
            } else {
                fputs(" needs_attention \"", out);
                print_escaped(out, rs.v[i].detail);
                fputs("\"\n", out);
            }
        }
        fprintf(out, "total %zu: running %zu needs_attention %zu\n", rs.n, rs.running,
                rs.attention);
    }
    rows_free(&rs);
    return rc;
}
