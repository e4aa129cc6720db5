/* twopc_view.c - two-phase commit decision logs in keel server, read for people
 * (twopc_view.h). */
#include "tx/twopc_view.h"
#include "tx/log_view.h"
#include "tx/twopc_int.h"

#include <assert.h>
#include <inttypes.h>
#include <string.h>

static const keel_twopc_state_t VIEW_STATES[] = {KEEL_TWOPC_PREPARING, KEEL_TWOPC_COMMITTING,
                                                 KEEL_TWOPC_ABORTING, KEEL_TWOPC_COMMITTED,
                                                 KEEL_TWOPC_ABORTED};
#define VIEW_STATES_N (sizeof(VIEW_STATES) / sizeof(VIEW_STATES[0]))

int keel_twopc_view_state_parse(const char *name, keel_twopc_state_t *out)
{
    for (size_t i = 0; i < VIEW_STATES_N; i++)
        if (strcmp(name, keel_twopc_state_name(VIEW_STATES[i])) == 0) {
            *out = VIEW_STATES[i];
            return 0;
        }
    return KEEL_EINVAL;
}

/* One log's records, in order, replayed into c (and passed one by one to each, when set,
 * with the record decoded). 0; KEEL_ENOTFOUND (no log); KEEL_ECORRUPT with why and *bad (the
 * damaged entry); or the failure of the request. */
typedef void (*each_fn)(FILE *out, const keel_twopc_rec_t *rec, const keel_twopc_coord_t *c);

static int replay_log(const char *const *seeds, size_t seeds_n, const char *id,
                      keel_twopc_coord_t *c, each_fn each, FILE *out, size_t *bad,
                      keel_errmsg_t *why, keel_errmsg_t *msg)
{
    keel_twopc_config_t cfg = keel_twopc_config_default();
    int rc = keel_twopc_coord_init_recover(c, &cfg, id, 1, msg);
    if (rc != 0)
        return rc;
    char key[KEEL_TWOPC_ID_BYTES_MAX + 16];
    snprintf(key, sizeof(key), "2pc:%s:log", id);
    const char *argv[] = {"XRANGE", key, "-", "+"};
    keel_client_reply_t r;
    rc = keel__view_call(seeds, seeds_n, 4, argv, &r, msg);
    if (rc != 0)
        return rc;
    if (r.v->type != KEEL_RESP_ARRAY || r.v->elems_len == 0) {
        keel_client_reply_free(&r);
        return keel_errf(msg, KEEL_ENOTFOUND, "no 2pc transaction %s", id);
    }
    for (size_t i = 0; i < r.v->elems_len; i++) {
        uint32_t seq = 0;
        const keel_resp_value_t *b = keel__twopc_entry_record(&r.v->elems[i], &seq);
        keel_twopc_rec_t rec;
        if (b == NULL) {
            keel_errf(why, KEEL_ECORRUPT, "entry %zu has no record", i);
        } else if (keel_twopc_rec_decode(b->str.ptr, b->str.len, &rec, why) == 0 &&
                   rec.seq != seq) {
            keel_errf(why, KEEL_ECORRUPT, "record seq %" PRIu32 " at entry 0-%" PRIu32, rec.seq,
                      seq);
        } else if (why->text[0] == '\0' &&
                   keel_twopc_coord_replay(c, b->str.ptr, b->str.len, why) == 0) {
            if (each)
                each(out, &rec, c);
            continue;
        }
        *bad = i;
        keel_client_reply_free(&r);
        return keel_errf(msg, KEEL_ECORRUPT, "2pc %s: entry %zu is damaged: %s", id, i, why->text);
    }
    keel_client_reply_free(&r);
    return 0;
}

static void print_names(FILE *out, const keel_twopc_coord_t *c)
{
    fputs("participants=", out);
    for (uint32_t i = 0; i < c->n; i++)
        fprintf(out, "%s%s", i ? "," : "", c->names[i]);
}

int keel_twopc_view_list(const char *const *seeds, size_t seeds_n, int state, FILE *out,
                         keel_errmsg_t *msg)
{
    assert(state >= -1 && state < KEEL_TWOPC__STATES);
    keel__view_keys_t ks = {0};
    int rc = keel__view_scan(seeds, seeds_n, "2pc:*:log", KEEL_TWOPC_VIEW_LOGS_MAX, &ks, msg);
    long by_state[KEEL_TWOPC__STATES] = {0}, damaged = 0;
    size_t listed = 0;
    const size_t pre = strlen("2pc:"), post = strlen(":log");
    for (size_t i = 0; rc == 0 && i < ks.n; i++) {
        size_t idl = strlen(ks.v[i]) - pre - post;
        char id[KEEL_TWOPC_ID_BYTES_MAX + 1];
        if (strlen(ks.v[i]) < pre + post || idl == 0 || idl > KEEL_TWOPC_ID_BYTES_MAX)
            continue; /* not a log the coordinator writes */
        memcpy(id, ks.v[i] + pre, idl);
        id[idl] = '\0';
        if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX))
            continue;
        keel_twopc_coord_t c;
        keel_errmsg_t why = {{0}};
        size_t bad = 0;
        rc = replay_log(seeds, seeds_n, id, &c, NULL, NULL, &bad, &why, msg);
        if (rc == KEEL_ENOTFOUND || rc == KEEL_EPROTO) { /* gone between SCAN and read */
            rc = 0;
        } else if (rc == KEEL_ECORRUPT) {
            rc = 0;
            if (state < 0) {
                char text[sizeof(why.text) + 32];
                int tl = snprintf(text, sizeof(text), "entry %zu: %s", bad, why.text);
                fprintf(out, "%s damaged ", id);
                keel__view_print_data(out, (const uint8_t *)text, (size_t)tl, sizeof(text));
                fputc('\n', out);
                damaged++;
                listed++;
            }
        } else if (rc == 0 && (state < 0 || (int)c.state == state)) {
            fprintf(out, "%s %s ", id, keel_twopc_state_name(c.state));
            print_names(out, &c);
            fputc('\n', out);
            by_state[c.state]++;
            listed++;
        }
    }
    if (rc == 0) {
        fprintf(out, "total %zu:", listed);
        for (size_t s = 0; s < VIEW_STATES_N; s++)
            if (by_state[VIEW_STATES[s]])
                fprintf(out, " %s %ld", keel_twopc_state_name(VIEW_STATES[s]),
                        by_state[VIEW_STATES[s]]);
        if (damaged)
            fprintf(out, " damaged %ld", damaged);
        fprintf(out, "\n");
    }
    keel__view_keys_free(&ks);
    return rc;
}

static void print_record(FILE *out, const keel_twopc_rec_t *rec, const keel_twopc_coord_t *c)
{
    fprintf(out, "%" PRIu32 " %" PRId64 " %s", rec->seq, rec->time_ms,
            keel_twopc_rec_type_name(rec->type));
    if (rec->type == KEEL_TWOPC_REC_BEGIN) {
        fputc(' ', out);
        print_names(out, c);
        fputs(" input=", out);
        keel__view_print_data(out, c->input, c->input_len, KEEL_TWOPC_VIEW_DATA_BYTES_MAX);
    } else if (rec->type == KEEL_TWOPC_REC_ABORT) {
        fputc(' ', out);
        keel__view_print_data(out, (const uint8_t *)c->reason, strlen(c->reason),
                              KEEL_TWOPC_REASON_BYTES_MAX);
    }
    fputc('\n', out);
}

int keel_twopc_view_show(const char *const *seeds, size_t seeds_n, const char *id, FILE *out,
                         keel_errmsg_t *msg)
{
    if (!keel_twopc_id_valid(id, KEEL_TWOPC_ID_BYTES_MAX))
        return keel_errf(msg, KEEL_EINVAL, "bad 2pc id '%s' (1 to %u bytes of [A-Za-z0-9_.-])", id,
                         (unsigned)KEEL_TWOPC_ID_BYTES_MAX);
    keel_twopc_coord_t c;
    keel_errmsg_t why = {{0}};
    size_t bad = 0;
    int rc = replay_log(seeds, seeds_n, id, &c, print_record, out, &bad, &why, msg);
    if (rc == KEEL_ECORRUPT)
        fprintf(out, "entry %zu: damaged: %s\n", bad, why.text);
    if (rc == 0)
        fprintf(out, "state %s\n", keel_twopc_state_name(c.state));
    return rc;
}
