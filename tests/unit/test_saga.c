/* test_saga.c - the saga core: traces of each path, records and their replay (the crash
 * explorer is test_saga_explore.c). */
#include "base/rand.h"
#include "core/saga.h"
#include "ktest.h"
#include "test_saga_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a driver that writes a readable trace ----------------------------------------------- */

static void trace_update(char *tr, size_t cap, const keel_saga_update_t *u)
{
    size_t n = strlen(tr);
    switch (u->action) {
    case KEEL_SAGA_ACT_LOG:
        snprintf(tr + n, cap - n, "log:%s/%u ", keel_saga_rec_type_name(u->rec_type), u->step);
        break;
    case KEEL_SAGA_ACT_DO:
    case KEEL_SAGA_ACT_UNDO:
        snprintf(tr + n, cap - n, "%s#%u ", u->key, u->attempt);
        break;
    case KEEL_SAGA_ACT_WAIT:
        snprintf(tr + n, cap - n, "wait ");
        break;
    case KEEL_SAGA_ACT_FINISH:
        snprintf(tr + n, cap - n, "finish:%s", keel_saga_state_name(u->state));
        break;
    default:
        snprintf(tr + n, cap - n, "? ");
    }
}

/* Scripted outcomes: for each call, in order, 'o' ok, 'b' business failure, 't' transient;
 * logs always succeed. Returns the trace. */
static void run_script(const char *script, keel_ms_t limit_ms, char *tr, size_t cap)
{
    def3(limit_ms);
    keel_saga_t s;
    init(&s, "s1", 1);
    keel_saga_update_t u;
    keel_ms_t now = 1000;
    tr[0] = '\0';
    KT_EQ_INT(keel_saga_begin(&s, now, "in", 2, &u), 0);
    for (int guard = 0; guard < 200; guard++) {
        trace_update(tr, cap, &u);
        if (u.action == KEEL_SAGA_ACT_FINISH)
            break;
        keel_saga_event_t ev = {.now_ms = ++now, .step = u.step};
        if (u.action == KEEL_SAGA_ACT_LOG) {
            ev.type = KEEL_SAGA_EV_LOGGED;
        } else if (u.action == KEEL_SAGA_ACT_WAIT) {
            now = u.wake_ms;
            ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_TICK, .now_ms = now};
        } else {
            char c = *script ? *script++ : 'o';
            bool undo = u.action == KEEL_SAGA_ACT_UNDO;
            ev.type = c == 'o'   ? (undo ? KEEL_SAGA_EV_UNDO_OK : KEEL_SAGA_EV_DO_OK)
                      : c == 'b' ? (undo ? KEEL_SAGA_EV_UNDO_FAILED : KEEL_SAGA_EV_DO_FAILED)
                                 : (undo ? KEEL_SAGA_EV_UNDO_FAILED : KEEL_SAGA_EV_DO_TRANSIENT);
            ev.data = (const uint8_t *)"r";
            ev.data_len = 1;
        }
        KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    }
    keel_saga_free(&s);
}

static void a_saga_whose_steps_succeed_logs_each_step_once_announcing_the_next(void)
{
    char tr[1024];
    run_script("ooo", 1000, tr, sizeof(tr));
    KT_EQ_STR(tr, "log:started/0 s1:reserve:do#1 log:step_done/0 s1:charge:do#1 "
                  "log:step_done/1 s1:ship:do#1 log:step_done/2 log:done/0 finish:done");
}

static void a_business_failure_compensates_the_completed_steps_newest_first(void)
{
    char tr[1024];
    run_script("oobooo", 1000, tr, sizeof(tr));
    KT_EQ_STR(tr, "log:started/0 s1:reserve:do#1 log:step_done/0 s1:charge:do#1 "
                  "log:step_done/1 s1:ship:do#1 log:step_failed/2 "
                  "s1:charge:undo#1 log:undone/1 s1:reserve:undo#1 log:undone/0 "
                  "log:compensated/0 finish:compensated");
}

static void a_step_that_keeps_failing_transiently_is_compensated_itself(void)
{
    char tr[1024];
    run_script("otttoo", 1000, tr, sizeof(tr));
    KT_EQ_STR(tr, "log:started/0 s1:reserve:do#1 log:step_done/0 "
                  "s1:charge:do#1 wait s1:charge:do#2 wait s1:charge:do#3 log:step_failed/1 "
                  "s1:charge:undo#1 log:undone/1 s1:reserve:undo#1 log:undone/0 "
                  "log:compensated/0 finish:compensated");
}

/* With retry_for_ms, a step's transient failures are retried while a retry would start
 * within that time of its first attempt, however many attempts that takes (up to
 * attempts_max), and no later: a stall of a known length is ridden out, not counted. */
static void retries_bounded_by_time_stop_at_the_time_not_the_count(void)
{
    def3(1000);
    DEF.steps[0].attempts_max = KEEL_SAGA_ATTEMPTS_MAX;
    DEF.steps[0].retry_for_ms = 300;
    keel_saga_t s;
    init(&s, "s5", 7);
    keel_saga_update_t u;
    KT_EQ_INT(keel_saga_begin(&s, 0, NULL, 0, &u), 0);
    keel_saga_event_t ev = {.type = KEEL_SAGA_EV_LOGGED, .now_ms = 1000};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    keel_ms_t first = 1000, last_start = 0;
    uint32_t attempts = 0;
    while (u.action == KEEL_SAGA_ACT_DO) {
        attempts++;
        last_start = ev.now_ms;
        ev = (keel_saga_event_t){
            .type = KEEL_SAGA_EV_DO_TRANSIENT, .now_ms = ev.now_ms + 5, .step = 0};
        KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
        if (u.action != KEEL_SAGA_ACT_WAIT)
            break;
        KT_CHECK(u.wake_ms <= first + 300);
        ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_TICK, .now_ms = u.wake_ms};
        KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    }
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_LOG);
    KT_EQ_INT(u.rec_type, KEEL_SAGA_REC_STEP_FAILED);
    KT_CHECK(attempts > 3);                      /* more than the default count */
    KT_CHECK(last_start + 5 + 40 > first + 300); /* gave up at the bound, not before */
    keel_saga_free(&s);
    /* a negative time is refused */
    def3(1000);
    DEF.steps[1].retry_for_ms = -1;
    keel_errmsg_t m;
    KT_EQ_INT(keel_saga_def_validate(&DEF, &m), KEEL_EINVAL);
}

static void a_call_without_an_outcome_by_its_deadline_times_out_on_a_tick(void)
{
    def3(1000);
    keel_saga_t s;
    init(&s, "s4", 1);
    keel_saga_update_t u;
    KT_EQ_INT(keel_saga_begin(&s, 0, NULL, 0, &u), 0);
    keel_saga_event_t ev = {.type = KEEL_SAGA_EV_LOGGED, .now_ms = 1};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0); /* started (step 0 begun): the call */
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_DO);
    KT_EQ_INT(u.deadline_ms, 1 + 100);
    KT_EQ_INT(keel_saga_next_deadline_ms(&s), 101);
    ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_TICK, .now_ms = 100};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_NONE); /* before the deadline: the call goes on */
    ev.now_ms = 101;
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_WAIT); /* a timeout: transient, retried after backoff */
    ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_DO_OK, .now_ms = 102, .step = 0};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), KEEL_EINVAL); /* the late answer is refused */
    ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_TICK, .now_ms = u.wake_ms};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_DO);
    KT_EQ_INT(u.attempt, 2);
    KT_EQ_STR(u.key, "s4:reserve:do");
    keel_saga_free(&s);
}

static void a_failing_first_step_compensates_nothing(void)
{
    char tr[1024];
    run_script("b", 1000, tr, sizeof(tr));
    KT_EQ_STR(tr, "log:started/0 s1:reserve:do#1 log:step_failed/0 "
                  "log:compensated/0 finish:compensated");
}

static void a_compensation_failing_past_the_time_limit_needs_attention(void)
{
    char tr[4096];
    /* charge fails; reserve's undo fails every time: retried with backoff, then given up */
    run_script("obbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 300, tr, sizeof(tr));
    KT_CHECK(strstr(tr, "s1:reserve:undo#2 ") != NULL);
    const char *end = "log:needs_attention/0 finish:needs_attention";
    KT_CHECK(strlen(tr) > strlen(end));
    KT_EQ_STR(tr + strlen(tr) - strlen(end), end);
}

static void a_step_without_compensation_is_skipped_when_compensating(void)
{
    def3(1000);
    DEF.steps[1].no_compensation = true;
    keel_saga_t s;
    init(&s, "s2", 1);
    keel_saga_update_t u;
    char tr[1024] = "";
    KT_EQ_INT(keel_saga_begin(&s, 1, NULL, 0, &u), 0);
    const char *script = "oob";
    for (int g = 0; g < 100 && u.action != KEEL_SAGA_ACT_FINISH; g++) {
        trace_update(tr, sizeof(tr), &u);
        keel_saga_event_t ev = {.now_ms = 2, .step = u.step, .type = KEEL_SAGA_EV_LOGGED};
        if (u.action == KEEL_SAGA_ACT_DO)
            ev.type = *script++ == 'o' ? KEEL_SAGA_EV_DO_OK : KEEL_SAGA_EV_DO_FAILED;
        else if (u.action == KEEL_SAGA_ACT_UNDO)
            ev.type = KEEL_SAGA_EV_UNDO_OK;
        KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    }
    KT_CHECK(strstr(tr, "charge:undo") == NULL);
    KT_CHECK(strstr(tr, "s2:reserve:undo#1") != NULL);
    KT_EQ_INT(u.state, KEEL_SAGA_COMPENSATED);
    keel_saga_free(&s);
}

static void an_event_that_is_not_the_pending_outcome_changes_nothing(void)
{
    def3(1000);
    keel_saga_t s;
    init(&s, "s3", 1);
    keel_saga_update_t u;
    KT_EQ_INT(keel_saga_begin(&s, 1, NULL, 0, &u), 0);
    keel_saga_event_t ev = {.type = KEEL_SAGA_EV_DO_OK, .now_ms = 2};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), KEEL_EINVAL); /* a log write is pending */
    ev.type = KEEL_SAGA_EV_LOGGED;
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0); /* started: step 0's call */
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_DO);
    ev = (keel_saga_event_t){.type = KEEL_SAGA_EV_DO_OK, .now_ms = 3, .step = 1};
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), KEEL_EINVAL); /* wrong step */
    ev.step = 0;
    KT_EQ_INT(keel_saga_step(&s, &ev, &u), 0);
    KT_EQ_INT(u.action, KEEL_SAGA_ACT_LOG);
    keel_saga_free(&s);
}

static void definitions_and_ids_are_checked(void)
{
    keel_errmsg_t m;
    keel_saga_def_t d;
    keel_saga_def_default(&d, "x");
    KT_EQ_INT(keel_saga_def_validate(&d, &m), KEEL_EINVAL); /* no steps */
    keel_saga_def_step(&d, "a");
    KT_EQ_INT(keel_saga_def_validate(&d, &m), 0);
    keel_saga_def_step(&d, "a");
    KT_EQ_INT(keel_saga_def_validate(&d, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "both named a") != NULL);
    d.steps[1].name = "b";
    d.steps[1].attempts_max = 0;
    KT_EQ_INT(keel_saga_def_validate(&d, &m), KEEL_EINVAL);
    KT_CHECK(keel_saga_id_valid("o-1.x_Y", KEEL_SAGA_ID_BYTES_MAX));
    KT_CHECK(!keel_saga_id_valid("a:b", KEEL_SAGA_ID_BYTES_MAX));
    KT_CHECK(!keel_saga_id_valid("", KEEL_SAGA_ID_BYTES_MAX));
    KT_CHECK(!keel_saga_id_valid("{x}", KEEL_SAGA_ID_BYTES_MAX));
}

/* ---- records and replay ----------------------------------------------------------------- */

/* Runs the scripted saga to its end, keeping every record written. */
static size_t collect_log(const char *script, logrec_t *out, size_t out_max, keel_saga_t *s)
{
    def3(1000);
    init(s, "s9", 7);
    keel_saga_update_t u;
    size_t n = 0;
    keel_ms_t now = 10;
    KT_EQ_INT(keel_saga_begin(s, now, "input", 5, &u), 0);
    for (int g = 0; g < 200 && u.action != KEEL_SAGA_ACT_FINISH; g++) {
        keel_saga_event_t ev = {.now_ms = ++now, .step = u.step, .type = KEEL_SAGA_EV_LOGGED};
        if (u.action == KEEL_SAGA_ACT_LOG) {
            KT_CHECK(n < out_max && u.record_len <= sizeof(out[0].b));
            memcpy(out[n].b, u.record, u.record_len);
            out[n++].n = u.record_len;
        } else if (u.action == KEEL_SAGA_ACT_WAIT) {
            now = u.wake_ms;
            ev.type = KEEL_SAGA_EV_TICK;
            ev.now_ms = now;
        } else {
            char c = *script ? *script++ : 'o';
            bool undo = u.action == KEEL_SAGA_ACT_UNDO;
            ev.type = undo       ? KEEL_SAGA_EV_UNDO_OK
                      : c == 'o' ? KEEL_SAGA_EV_DO_OK
                                 : (c == 'b' ? KEEL_SAGA_EV_DO_FAILED : KEEL_SAGA_EV_DO_TRANSIENT);
            ev.data = (const uint8_t *)"result-x";
            ev.data_len = 8;
        }
        KT_EQ_INT(keel_saga_step(s, &ev, &u), 0);
    }
    return n;
}

static void replaying_a_log_rebuilds_the_state_exactly(void)
{
    const char *scripts[] = {"ooo", "oob", "ottto", "b", "tttt"};
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
        logrec_t recs[64];
        keel_saga_t live, re;
        size_t n = collect_log(scripts[i], recs, 64, &live);
        init(&re, "s9", 99);
        keel_errmsg_t m;
        for (size_t k = 0; k < n; k++)
            if (keel_saga_replay(&re, recs[k].b, recs[k].n, &m) != 0)
                KT_FAIL("script %s record %zu: %s", scripts[i], k, m.text);
        char a[1024], b[1024];
        keel_saga_describe(&live, a, sizeof(a));
        keel_saga_describe(&re, b, sizeof(b));
        KT_EQ_STR(b, a);
        KT_CHECK(keel_saga_state_final(re.state));
        keel_saga_update_t u;
        KT_EQ_INT(keel_saga_resume(&re, 1000, &u), 0);
        KT_EQ_INT(u.action, KEEL_SAGA_ACT_FINISH);
        keel_saga_free(&live);
        keel_saga_free(&re);
    }
}

/* Logs written before step_done announced the next step have a begun record before each
 * call: they replay to the same state, and a saga stopped after one resumes with the call. */
static void a_log_with_begun_records_from_before_still_replays(void)
{
    logrec_t recs[64];
    keel_saga_t live;
    size_t n = collect_log("ooo", recs, 64, &live);
    KT_CHECK(n == 5);
    keel_saga_t re;
    init(&re, "s9", 7);
    keel_errmsg_t m;
    uint32_t seq = 0;
    for (size_t k = 0; k < n; k++) {
        keel_saga_rec_t r;
        KT_EQ_INT(keel_saga_rec_decode(recs[k].b, recs[k].n, &r, &m), 0);
        r.seq = ++seq; /* renumbered around the begun records put in */
        uint8_t b[256];
        int len = keel_saga_rec_encode(&r, b, sizeof(b));
        KT_CHECK(len > 0);
        KT_EQ_INT(keel_saga_replay(&re, b, (size_t)len, &m), 0);
        if (r.type == KEEL_SAGA_REC_DONE)
            break;
        uint32_t next = r.type == KEEL_SAGA_REC_STARTED ? 0 : r.step + 1;
        if (next == 3)
            continue;
        keel_saga_rec_t bg = {
            .type = KEEL_SAGA_REC_BEGUN, .step = next, .seq = ++seq, .time_ms = r.time_ms};
        len = keel_saga_rec_encode(&bg, b, sizeof(b));
        KT_EQ_INT(keel_saga_replay(&re, b, (size_t)len, &m), 0);
        if (next == 1) { /* stopped here: step 1 begun, its call is what comes next */
            keel_saga_update_t u;
            KT_EQ_INT(keel_saga_resume(&re, 2000, &u), 0);
            KT_EQ_INT(u.action, KEEL_SAGA_ACT_DO);
            KT_EQ_INT(u.step, 1);
        }
    }
    KT_EQ_INT(re.state, KEEL_SAGA_DONE);
    KT_EQ_INT(re.done_n, 3);
    /* a begun record for another step than the next is still refused */
    keel_saga_t bad;
    init(&bad, "s9", 7);
    KT_EQ_INT(keel_saga_replay(&bad, recs[0].b, recs[0].n, &m), 0);
    keel_saga_rec_t bg = {.type = KEEL_SAGA_REC_BEGUN, .step = 1, .seq = 2, .time_ms = 9};
    uint8_t b[64];
    int len = keel_saga_rec_encode(&bg, b, sizeof(b));
    KT_EQ_INT(keel_saga_replay(&bad, b, (size_t)len, &m), KEEL_EPROTO);
    KT_CHECK(strstr(m.text, "begun out of order") != NULL);
    keel_saga_free(&bad);
    keel_saga_free(&re);
    keel_saga_free(&live);
}

static void every_flipped_bit_and_truncation_of_a_record_is_refused(void)
{
    logrec_t recs[64];
    keel_saga_t live;
    size_t n = collect_log("oob", recs, 64, &live);
    keel_saga_free(&live);
    keel_errmsg_t m;
    size_t refused = 0;
    for (size_t k = 0; k < n; k++) {
        /* the records before k replayed, then a damaged record k: refused, state unchanged */
        keel_saga_t re;
        init(&re, "s9", 1);
        for (size_t j = 0; j < k; j++)
            KT_EQ_INT(keel_saga_replay(&re, recs[j].b, recs[j].n, &m), 0);
        char before[1024], after[1024];
        keel_saga_describe(&re, before, sizeof(before));
        for (size_t bit = 0; bit < recs[k].n * 8; bit++) {
            logrec_t bad = recs[k];
            bad.b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            KT_EQ_INT(keel_saga_replay(&re, bad.b, bad.n, &m), KEEL_ECORRUPT);
            refused++;
        }
        for (size_t len = 0; len < recs[k].n; len++) {
            KT_CHECK(keel_saga_replay(&re, recs[k].b, len, &m) != 0);
            refused++;
        }
        keel_saga_describe(&re, after, sizeof(after));
        KT_EQ_STR(after, before);
        keel_saga_free(&re);
    }
    KT_CHECK(refused > 1000);
}

static void records_out_of_order_repeated_or_of_another_saga_are_refused(void)
{
    logrec_t recs[64];
    keel_saga_t live, re;
    size_t n = collect_log("ooo", recs, 64, &live);
    keel_saga_free(&live);
    keel_errmsg_t m;
    init(&re, "s9", 1);
    KT_EQ_INT(keel_saga_replay(&re, recs[1].b, recs[1].n, &m), KEEL_EPROTO); /* a gap */
    KT_EQ_INT(keel_saga_replay(&re, recs[0].b, recs[0].n, &m), 0);
    KT_EQ_INT(keel_saga_replay(&re, recs[0].b, recs[0].n, &m), KEEL_EPROTO); /* repeated */
    KT_CHECK(strstr(m.text, "out of sequence") != NULL);
    /* a well-formed record that skips a step: step 1 done before step 0 */
    keel_saga_rec_t r = {.type = KEEL_SAGA_REC_STEP_DONE, .step = 1, .seq = 2, .time_ms = 5};
    uint8_t b[64];
    int len = keel_saga_rec_encode(&r, b, sizeof(b));
    KT_CHECK(len > 0);
    KT_EQ_INT(keel_saga_replay(&re, b, (size_t)len, &m), KEEL_EPROTO);
    KT_CHECK(strstr(m.text, "out of order") != NULL);
    keel_saga_free(&re);
    /* a log written by another definition */
    keel_saga_def_t other = DEF;
    other.name = "refund";
    keel_saga_t o;
    KT_EQ_INT(keel_saga_init(&o, &other, "s9", 1, &m), 0);
    KT_EQ_INT(keel_saga_replay(&o, recs[0].b, recs[0].n, &m), KEEL_EPROTO);
    KT_CHECK(strstr(m.text, "another saga definition") != NULL);
    keel_saga_free(&o);
    KT_CHECK(n == 5); /* started, three step_done, done */
}

int main(void)
{
    KT_RUN(a_saga_whose_steps_succeed_logs_each_step_once_announcing_the_next);
    KT_RUN(a_business_failure_compensates_the_completed_steps_newest_first);
    KT_RUN(a_step_that_keeps_failing_transiently_is_compensated_itself);
    KT_RUN(retries_bounded_by_time_stop_at_the_time_not_the_count);
    KT_RUN(a_call_without_an_outcome_by_its_deadline_times_out_on_a_tick);
    KT_RUN(a_failing_first_step_compensates_nothing);
    KT_RUN(a_compensation_failing_past_the_time_limit_needs_attention);
    KT_RUN(a_step_without_compensation_is_skipped_when_compensating);
    KT_RUN(an_event_that_is_not_the_pending_outcome_changes_nothing);
    KT_RUN(definitions_and_ids_are_checked);
    KT_RUN(replaying_a_log_rebuilds_the_state_exactly);
    KT_RUN(a_log_with_begun_records_from_before_still_replays);
    KT_RUN(every_flipped_bit_and_truncation_of_a_record_is_refused);
    KT_RUN(records_out_of_order_repeated_or_of_another_saga_are_refused);
    return kt_done();
}
