/* saga_view.c - orchestrated sagas' logs in keel server, read for people (saga_view.h). */
#include "tx/saga_view.h"
#include "tx/saga_int.h"

#include "client/blocking.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int keel_saga_state_parse(const char *name, keel_saga_state_t *out)
{
    for (int s = 0; s < KEEL_SAGA__STATES; s++)
        if (strcmp(name, keel_saga_state_name((keel_saga_state_t)s)) == 0) {
            *out = (keel_saga_state_t)s;
            return 0;
        }
    return KEEL_EINVAL;
}

/* One request; an error reply is a failure too (KEEL_EPROTO), worded in msg. */
static int call(const char *const *seeds, size_t seeds_n, size_t argc, const char *const *argv,
                keel_client_reply_t *r, keel_errmsg_t *msg)
{
    keel_errmsg_t why = {{0}};
    int rc = keel_client_call(seeds, seeds_n, argc, argv, KEEL_SAGA_VIEW_TIMEOUT_MS, r, &why);
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

typedef struct names {
    char **v;
    size_t n;
} names_t;

static void names_free(names_t *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    ns->v = NULL;
    ns->n = 0;
}

/* Every saga log key, sorted. */
static int scan_logs(const char *const *seeds, size_t seeds_n, names_t *ns, keel_errmsg_t *msg)
{
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN",  cursor, "MATCH", "saga:*:log",
                              "COUNT", "1000", "TYPE",  "stream"};
        keel_client_reply_t r;
        int rc = call(seeds, seeds_n, 8, argv, &r, msg);
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
        for (size_t i = 0; i < v->elems[1].elems_len && ns->n < KEEL_SAGA_VIEW_LOGS_MAX; i++) {
            const keel_resp_arg_t *k = &v->elems[1].elems[i].str;
            char **grown = realloc(ns->v, (ns->n + 1) * sizeof(*ns->v));
            char *s = grown ? strndup((const char *)k->ptr, k->len) : NULL;
            if (grown)
                ns->v = grown;
            if (s == NULL) {
                keel_client_reply_free(&r);
                return keel_errf(msg, KEEL_ENOMEM, "SCAN: out of memory");
            }
            ns->v[ns->n++] = s;
        }
        keel_client_reply_free(&r);
    } while (strcmp(cursor, "0") != 0);
    if (ns->n > 0)
        qsort(ns->v, ns->n, sizeof(*ns->v), cmp_str);
    return 0;
}

/* The state after a log's last record; *damaged when it does not decode. */
static int log_state(const char *const *seeds, size_t seeds_n, const char *key,
                     keel_saga_state_t *st, long *records, int *damaged, keel_errmsg_t *msg)
{
    const char *last[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
    const char *xlen[] = {"XLEN", key};
    keel_client_reply_t r, l;
    int rc = call(seeds, seeds_n, 6, last, &r, msg);
    if (rc != 0)
        return rc;
    rc = call(seeds, seeds_n, 2, xlen, &l, msg);
    if (rc != 0) {
        keel_client_reply_free(&r);
        return rc;
    }
    *records = (long)l.v->integer;
    keel_client_reply_free(&l);
    *st = KEEL_SAGA_NEW;
    *damaged = 0;
    if (r.v->type == KEEL_RESP_ARRAY && r.v->elems_len == 1) {
        const keel_resp_value_t *b = keel__saga_entry_record(&r.v->elems[0]);
        keel_saga_rec_t rec;
        if (b && keel_saga_rec_decode(b->str.ptr, b->str.len, &rec, NULL) == 0)
            *st = keel_saga_state_after(rec.type);
        else
            *damaged = 1;
    }
    keel_client_reply_free(&r);
    return 0;
}

int keel_saga_view_list(const char *const *seeds, size_t seeds_n, int state, FILE *out,
                        keel_errmsg_t *msg)
{
    assert(state >= -1 && state < KEEL_SAGA__STATES);
    names_t ns = {0};
    int rc = scan_logs(seeds, seeds_n, &ns, msg);
    long by_state[KEEL_SAGA__STATES] = {0};
    size_t listed = 0;
    for (size_t i = 0; rc == 0 && i < ns.n; i++) {
        keel_saga_state_t st;
        long records;
        int damaged;
        rc = log_state(seeds, seeds_n, ns.v[i], &st, &records, &damaged, msg);
        if (rc == KEEL_EPROTO) /* the log vanished or changed type between SCAN and read */
            rc = 0;
        else if (rc == 0 && (state < 0 || (int)st == state)) {
            size_t idl = strlen(ns.v[i]) - strlen("saga:") - strlen(":log");
            fprintf(out, "%.*s %s records=%ld%s\n", (int)idl, ns.v[i] + strlen("saga:"),
                    keel_saga_state_name(st), records, damaged ? " (last record damaged)" : "");
            by_state[st]++;
            listed++;
        }
    }
    if (rc == 0) {
        fprintf(out, "total %zu:", listed);
        for (int s = 0; s < KEEL_SAGA__STATES; s++)
            if (by_state[s])
                fprintf(out, " %s %ld", keel_saga_state_name((keel_saga_state_t)s), by_state[s]);
        fprintf(out, "\n");
    }
    names_free(&ns);
    return rc;
}

static void print_data(FILE *out, const uint8_t *p, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n && i < KEEL_SAGA_VIEW_DATA_BYTES_MAX; i++)
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
            fputc(p[i], out);
        else
            fprintf(out, "\\x%02x", p[i]);
    fputc('"', out);
}

int keel_saga_view_show(const char *const *seeds, size_t seeds_n, const char *id, FILE *out,
                        keel_errmsg_t *msg)
{
    char key[KEEL_SAGA_ID_BYTES_MAX + 16];
    if (!keel_saga_id_valid(id, KEEL_SAGA_ID_BYTES_MAX))
        return keel_errf(msg, KEEL_EINVAL, "bad saga id '%s' (1 to %u bytes of [A-Za-z0-9_.-])", id,
                         (unsigned)KEEL_SAGA_ID_BYTES_MAX);
    snprintf(key, sizeof(key), "saga:%s:log", id);
    const char *argv[] = {"XRANGE", key, "-", "+"};
    keel_client_reply_t r;
    int rc = call(seeds, seeds_n, 4, argv, &r, msg);
    if (rc != 0)
        return rc;
    if (r.v->type != KEEL_RESP_ARRAY || r.v->elems_len == 0) {
        keel_client_reply_free(&r);
        return keel_errf(msg, KEEL_ENOTFOUND, "no saga %s", id);
    }
    keel_saga_state_t st = KEEL_SAGA_NEW;
    for (size_t i = 0; i < r.v->elems_len; i++) {
        const keel_resp_value_t *b = keel__saga_entry_record(&r.v->elems[i]);
        keel_saga_rec_t rec;
        keel_errmsg_t why = {{0}};
        if (b == NULL || keel_saga_rec_decode(b->str.ptr, b->str.len, &rec, &why) != 0) {
            fprintf(out, "entry %zu: damaged: %s\n", i, b ? why.text : "no field r");
            rc = keel_errf(msg, KEEL_ECORRUPT, "saga %s: entry %zu is damaged", id, i);
            continue;
        }
        fprintf(out, "%" PRIu32 " %" PRId64 " %s %" PRIu32 " ", rec.seq, rec.time_ms,
                keel_saga_rec_type_name(rec.type), rec.step);
        if (rec.type == KEEL_SAGA_REC_STEP_FAILED && rec.data_len >= 1) {
            fprintf(out, "%s ", rec.data[0] == KEEL_SAGA_FAIL_BUSINESS ? "business" : "gave_up");
            print_data(out, rec.data + 1, rec.data_len - 1);
        } else {
            print_data(out, rec.data, rec.data_len);
        }
        fputc('\n', out);
        st = keel_saga_state_after(rec.type);
    }
    fprintf(out, "state %s\n", keel_saga_state_name(st));
    keel_client_reply_free(&r);
    return rc;
}
