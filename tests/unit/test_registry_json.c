/* test_registry_json.c - Consul's registration JSON as KEEL.REG REGISTER (proto/reg_json). */
#include "ktest.h"
#include "proto/reg_json.h"

#include <stdio.h>
#include <string.h>

/* The argv joined with spaces, for comparing whole commands. */
static const char *joined(const keel_reg_json_t *j)
{
    static char out[4096];
    size_t n = 0;
    for (size_t i = 0; i < j->argc && n < sizeof(out) - 1; i++)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s%.*s", i ? " " : "", (int)j->lens[i],
                              (const char *)j->argv[i]);
    return out;
}

static const char *parse(const char *body, int *rc, keel_errmsg_t *msg)
{
    keel_reg_json_t j;
    *rc = keel_reg_json_parse((const uint8_t *)body, strlen(body), &j, msg);
    if (*rc != 0)
        return msg->text;
    const char *s = joined(&j);
    keel_reg_json_free(&j);
    return s;
}

static void a_full_registration_becomes_one_register_command(void)
{
    int rc;
    keel_errmsg_t m;
    const char *got = parse(
        "{\"Name\":\"orders\",\"ID\":\"o-1\",\"Address\":\"10.0.0.7\",\"Port\":8080,"
        "\"Tags\":[\"v2\",\"canary\"],\"Meta\":{\"zone\":\"a\"},\"Weights\":{\"Passing\":10,"
        "\"Warning\":2},\"Check\":{\"TTL\":\"10s\",\"DeregisterCriticalServiceAfter\":\"1m30s\","
        "\"Status\":\"passing\",\"SuccessBeforePassing\":2,\"FailuresBeforeCritical\":3},"
        "\"Version\":\"1.4\"}",
        &rc, &m);
    KT_EQ_INT(rc, 0);
    KT_EQ_STR(got, "KEEL.REG.WRITE REGISTER orders o-1 10.0.0.7 8080 VERSION 1.4 TAGS 2 v2 canary "
                   "META 1 zone a WEIGHTS 10 2 TTL 10000 DEREGISTER_CRITICAL_AFTER 90000 STATUS "
                   "passing SUCCESS_BEFORE_PASSING 2 FAILURES_BEFORE_CRITICAL 3");
}

static void consuls_defaults_apply(void)
{
    int rc;
    keel_errmsg_t m;
    /* ID defaults to the name; field names match without case; a check starts critical */
    KT_EQ_STR(parse("{\"name\":\"web\",\"check\":{\"ttl\":\"1.5s\"}}", &rc, &m),
              "KEEL.REG.WRITE REGISTER web web  0 TTL 1500 STATUS critical");
    KT_EQ_STR(parse("{\"Name\":\"web\",\"ID\":\"\"}", &rc, &m),
              "KEEL.REG.WRITE REGISTER web web  0");
}

static void malformed_bodies_are_refused_with_a_reason(void)
{
    static const struct {
        const char *body, *why;
    } bad[] = {
        {"", "not JSON"},
        {"[]", "JSON object"},
        {"{\"ID\":\"x\"}", "Name is required"},
        {"{\"Name\":7}", "Name must be a string"},
        {"{\"Name\":\"a\",\"Port\":-1}", "Port must be an integer in 0..65535"},
        {"{\"Name\":\"a\",\"Tags\":\"x\"}", "Tags must be an array"},
        {"{\"Name\":\"a\",\"Meta\":{\"k\":1}}", "Meta values must be strings"},
        {"{\"Name\":\"a\",\"Weights\":{\"Passing\":70000}}", "Passing"},
        {"{\"Name\":\"a\",\"Check\":{\"TTL\":\"10\"}}", "TTL is not a duration"},
        {"{\"Name\":\"a\",\"Name\":\"b\"}", "not JSON"}, /* duplicate keys */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc;
        keel_errmsg_t m;
        const char *got = parse(bad[i].body, &rc, &m);
        if (rc != KEEL_EINVAL || strstr(got, bad[i].why) == NULL)
            KT_FAIL("%s: rc %d, '%s' (wanted '%s')", bad[i].body, rc, got, bad[i].why);
    }
}

static void go_durations_parse_to_milliseconds_rounded_up(void)
{
    static const struct {
        const char *in;
        long long ms; /* -1: refused */
    } cases[] = {
        {"0", 0},       {"10s", 10000}, {"1m30s", 90000}, {"1.5h", 5400000},
        {"250ms", 250}, {"1us", 1},     {"1500ns", 1},    {"2h45m3s", 9903000},
        {"", -1},       {"10", -1},     {"s", -1},        {"-1s", -1},
        {"1.2.3s", -1}, {"1d", -1},     {"9999999h", -1}, {"1s ", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 0;
        int rc = keel_reg_duration_ms(cases[i].in, strlen(cases[i].in), &ms);
        if (cases[i].ms < 0 ? rc == 0 : (rc != 0 || (long long)ms != cases[i].ms))
            KT_FAIL("'%s': rc %d, %llu ms", cases[i].in, rc, (unsigned long long)ms);
    }
}

int main(void)
{
    KT_RUN(a_full_registration_becomes_one_register_command);
    KT_RUN(consuls_defaults_apply);
    KT_RUN(malformed_bodies_are_refused_with_a_reason);
    KT_RUN(go_durations_parse_to_milliseconds_rounded_up);
    return kt_done();
}
