/* test_choreo.c - core/choreo.c, the pure part of choreographed sagas: events survive the
 * round trip and anything malformed is refused; a participant's rules are checked; an
 * action's outcome decides what is emitted, and a compensation is never given up. */
#include "base/err.h"
#include "core/choreo.h"
#include "ktest.h"

#include <stdio.h>
#include <string.h>

static void an_event_round_trips_with_its_data_bytes_untouched(void)
{
    uint8_t buf[KEEL_CHOREO_EVENT_BYTES_MAX];
    const char data[] = "item=7\nqty=2\0binary";
    size_t n =
        keel_choreo_event_encode("order.created", "o-42", data, sizeof(data), buf, sizeof(buf));
    KT_EQ_U64(n, keel_choreo_event_size(13, 4, sizeof(data)));
    KT_EQ_MEM(buf, "order.created o-42\n", 19);
    keel_choreo_event_t ev;
    keel_errmsg_t msg;
    KT_EQ_INT(keel_choreo_event_decode(buf, n, &ev, &msg), 0);
    KT_EQ_STR(ev.type, "order.created");
    KT_EQ_STR(ev.saga, "o-42");
    KT_EQ_U64(ev.data_len, sizeof(data));
    KT_EQ_MEM(ev.data, data, sizeof(data));
    /* no data at all is an event too */
    n = keel_choreo_event_encode("stock.released", "shop:o-1", NULL, 0, buf, sizeof(buf));
    KT_EQ_INT(keel_choreo_event_decode(buf, n, &ev, &msg), 0);
    KT_EQ_STR(ev.saga, "shop:o-1");
    KT_EQ_U64(ev.data_len, 0);
}

static void every_cut_header_and_bad_name_is_refused(void)
{
    const char *good = "payment.failed o-9\n";
    keel_choreo_event_t ev;
    keel_errmsg_t msg;
    for (size_t cut = 0; cut < strlen(good); cut++)
        KT_EQ_INT(keel_choreo_event_decode((const uint8_t *)good, cut, &ev, &msg), KEEL_EPROTO);
    const char *bad[] = {
        " o-9\n",                                  /* no type */
        "payment.failed \n",                       /* no saga */
        "pay ment o-9\n",                          /* the saga id would hold a space */
        "payment/failed o-9\n",                    /* '/' is not a type character */
        "payment.failed o 9\n",                    /* nor a space a saga character */
        "payment.failed o:9\r\n",                  /* CR is not either */
        "p23456789012345678901234567890123 o-9\n", /* a type of 33 bytes */
    };
    /* a NUL inside a name would end it early as a C string (found by fuzz_choreo) */
    static const uint8_t nul_saga[] = {'F', ' ', '2', 0, 0, 0, 0, '\n'};
    static const uint8_t nul_type[] = {'F', 0, 'x', ' ', '2', '\n'};
    KT_EQ_INT(keel_choreo_event_decode(nul_saga, sizeof(nul_saga), &ev, &msg), KEEL_EPROTO);
    KT_EQ_INT(keel_choreo_event_decode(nul_type, sizeof(nul_type), &ev, &msg), KEEL_EPROTO);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = keel_choreo_event_decode((const uint8_t *)bad[i], strlen(bad[i]), &ev, &msg);
        if (rc != KEEL_EPROTO)
            KT_FAIL("accepted %s", bad[i]);
    }
    char saga65[66];
    memset(saga65, 'a', 65);
    saga65[65] = '\0';
    uint8_t buf[256];
    KT_EQ_U64(keel_choreo_event_encode("t", saga65, NULL, 0, buf, sizeof(buf)), 0);
    saga65[64] = '\0';
    KT_CHECK(keel_choreo_event_encode("t", saga65, NULL, 0, buf, sizeof(buf)) > 0);
    KT_EQ_U64(keel_choreo_event_encode("t", "s", NULL, 0, buf, 3), 0); /* no room */
    KT_EQ_U64(
        keel_choreo_event_encode("t", "s", buf, KEEL_CHOREO_DATA_BYTES_MAX + 1, buf, sizeof(buf)),
        0);
}

static keel_choreo_def_t stock_def(void)
{
    keel_choreo_def_t d = {.name = "stock",
                           .attempts_max = 3,
                           .backoff_base_ms = 50,
                           .backoff_cap_ms = 1000,
                           .retry_for_ms = 60000};
    d.rules[0] = (keel_choreo_rule_t){"order.created", KEEL_CHOREO_ACTION, "stock.reserved",
                                      "stock.failed", 0};
    d.rules[1] =
        (keel_choreo_rule_t){"payment.failed", KEEL_CHOREO_COMPENSATION, "stock.released", NULL, 0};
    d.rules_n = 2;
    return d;
}

static void a_participants_rules_are_checked(void)
{
    keel_errmsg_t msg;
    keel_choreo_def_t d = stock_def();
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), 0);
    KT_CHECK(keel_choreo_rule_for(&d, "payment.failed") == &d.rules[1]);
    KT_CHECK(keel_choreo_rule_for(&d, "payment.charged") == NULL);

    d.rules[0].emit_fail = NULL; /* an action's refusal must say so */
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "emit_fail") != NULL);
    d = stock_def();
    d.rules[1].emit_fail = "stock.unreleased"; /* a compensation cannot fail */
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.rules[1].on = "order.created";
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "two rules") != NULL);
    d = stock_def();
    d.rules[0].emit_ok = "stock reserved";
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.attempts_max = 0;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.rules[0].kind = (keel_choreo_kind_t)7;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.rules_n = 0;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.name = "st/ock";
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.retry_for_ms = 0;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d.retry_for_ms = KEEL_CHOREO_RETRY_FOR_MS_MAX + 1;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    d = stock_def();
    d.rules[1].retry_for_ms = -1;
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), KEEL_EINVAL);
    KT_CHECK(strstr(msg.text, "retry_for_ms") != NULL);
    d = stock_def();
    d.rules[1].emit_ok = NULL; /* a compensation may end the chain */
    KT_EQ_INT(keel_choreo_def_validate(&d, &msg), 0);
}

static void an_action_is_refused_at_once_or_after_its_attempts_and_a_compensation_never(void)
{
    keel_choreo_def_t d = stock_def();
    const keel_choreo_rule_t *act = &d.rules[0], *comp = &d.rules[1];
    KT_EQ_INT(keel_choreo_verdict(&d, act, 0, 1, 0), KEEL_CHOREO_COMMIT_OK);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EREJECTED, 1, 0), KEEL_CHOREO_COMMIT_FAIL);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EIO, 1, 0), KEEL_CHOREO_RETRY);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EBUSY, 2, 100), KEEL_CHOREO_RETRY);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EBUSY, 3, 200), KEEL_CHOREO_COMMIT_FAIL);
    KT_EQ_INT(keel_choreo_verdict(&d, comp, 0, 9, 0), KEEL_CHOREO_COMMIT_OK);
    for (uint32_t a = 1; a < 1000; a += 37) { /* within retry_for_ms: retried, never refused */
        KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EIO, a, 59999), KEEL_CHOREO_RETRY);
        KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EREJECTED, a, 59999), KEEL_CHOREO_RETRY);
    }
}

static void an_event_failing_past_its_retry_time_is_dead_lettered_unless_refusable(void)
{
    keel_choreo_def_t d = stock_def();
    keel_choreo_rule_t *act = &d.rules[0], *comp = &d.rules[1];
    KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EIO, 2, 60000), KEEL_CHOREO_DEAD_LETTER);
    KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EREJECTED, 40, 90000), KEEL_CHOREO_DEAD_LETTER);
    KT_EQ_INT(keel_choreo_verdict(&d, comp, 0, 40, 90000), KEEL_CHOREO_COMMIT_OK); /* it applied */
    /* an action that can still be refused is refused, never dead-lettered */
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EREJECTED, 1, 90000), KEEL_CHOREO_COMMIT_FAIL);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EIO, 3, 90000), KEEL_CHOREO_COMMIT_FAIL);
    KT_EQ_INT(keel_choreo_verdict(&d, act, KEEL_EIO, 2, 90000), KEEL_CHOREO_DEAD_LETTER);
    /* a rule's own limit overrides the def's */
    comp->retry_for_ms = 500;
    KT_EQ_INT(keel_choreo_retry_for_ms(&d, comp), 500);
    KT_EQ_INT(keel_choreo_retry_for_ms(&d, act), 60000);
    KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EIO, 5, 499), KEEL_CHOREO_RETRY);
    KT_EQ_INT(keel_choreo_verdict(&d, comp, KEEL_EIO, 5, 500), KEEL_CHOREO_DEAD_LETTER);
    KT_CHECK(!keel_choreo_retry_expired(&d, act, 59999));
    KT_CHECK(keel_choreo_retry_expired(&d, act, 60000));
}

static void the_backoff_doubles_up_to_its_cap_with_equal_jitter(void)
{
    keel_choreo_def_t d = stock_def();
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 1, 0.0), 25);
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 1, 0.999), 49);
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 2, 0.0), 50);
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 4, 0.0), 200);
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 6, 0.0), 500); /* 1600 capped at 1000 */
    KT_EQ_INT(keel_choreo_backoff_ms(&d, 4000000000u, 0.5), 750);
}

static void a_sagas_deadline_is_its_first_entrys_time_plus_the_limit(void)
{
    keel_ms_t d = 0;
    const char *ok = "1733450000123-7";
    KT_EQ_INT(keel_choreo_deadline_of((const uint8_t *)ok, strlen(ok), 5000, &d), 0);
    KT_EQ_INT(d, 1733450005123);
    const char *big = "9223372036854775807-0";
    KT_EQ_INT(keel_choreo_deadline_of((const uint8_t *)big, strlen(big), 5000, &d), 0);
    KT_EQ_INT(d, INT64_MAX);
    const char *bad[] = {"", "-1", "12", "12-", "12-x", "a-1", "1 2-3", "99999999999999999999-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        KT_EQ_INT(keel_choreo_deadline_of((const uint8_t *)bad[i], strlen(bad[i]), 5000, &d),
                  KEEL_EPROTO);
}

int main(void)
{
    KT_RUN(an_event_round_trips_with_its_data_bytes_untouched);
    KT_RUN(every_cut_header_and_bad_name_is_refused);
    KT_RUN(a_participants_rules_are_checked);
    KT_RUN(an_action_is_refused_at_once_or_after_its_attempts_and_a_compensation_never);
    KT_RUN(an_event_failing_past_its_retry_time_is_dead_lettered_unless_refusable);
    KT_RUN(the_backoff_doubles_up_to_its_cap_with_equal_jitter);
    KT_RUN(a_sagas_deadline_is_its_first_entrys_time_plus_the_limit);
    return kt_done();
}
