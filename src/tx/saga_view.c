/* saga_view.c - orchestrated sagas' logs in keel server, read for people (saga_view.h). */
#include "tx/saga_view.h"
#include "tx/saga_int.h"

#include "tx/log_view.h"

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

/* The state after a log's last record; *damaged when it does not decode. */
static int log_state(const char *const *seeds, size_t seeds_n, const char *key,
                     keel_saga_state_t *st, long *records, int *damaged, keel_errmsg_t *msg)
{
    const char *last[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
    const char *xlen[] = {"XLEN", key};
    keel_client_reply_t r, l;
    int rc = keel__view_call(seeds, seeds_n, 6, last, &r, msg);
    if (rc != 0)
        return rc;
    rc = keel__view_call(seeds, seeds_n, 2, xlen, &l, msg);
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
    keel__view_keys_t ns = {0};
    int rc = keel__view_scan(seeds, seeds_n, "saga:*:log", KEEL_SAGA_VIEW_LOGS_MAX, &ns, msg);
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
    keel__view_keys_free(&ns);
    return rc;
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
    int rc = keel__view_call(seeds, seeds_n, 4, argv, &r, msg);
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
            keel__view_print_data(out, rec.data + 1, rec.data_len - 1,
                                  KEEL_SAGA_VIEW_DATA_BYTES_MAX);
        } else {
            keel__view_print_data(out, rec.data, rec.data_len, KEEL_SAGA_VIEW_DATA_BYTES_MAX);
        }
        fputc('\n', out);
        st = keel_saga_state_after(rec.type);
    }
    fprintf(out, "state %s\n", keel_saga_state_name(st));
    keel_client_reply_free(&r);
    return rc;
}
