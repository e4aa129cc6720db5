/* test_router.c - the service kit's route table: specificity, parameters, 404/405, errors. */
#include "ktest.h"
#include "proto/router.h"

#include <string.h>

static keel_router_t r;
static int tags[16];

static int match(const char *method, const char *path, keel_route_match_t *m)
{
    return keel_router_match(&r, method, strlen(method), path, strlen(path), m);
}

/* The param named name, as a C string (into buf), or "" if absent. */
static const char *param(const keel_route_match_t *m, const char *name, char *buf)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->params[i].name_len == strlen(name) &&
            memcmp(m->params[i].name, name, m->params[i].name_len) == 0) {
            memcpy(buf, m->params[i].value, m->params[i].value_len);
            buf[m->params[i].value_len] = '\0';
            return buf;
        }
    return "";
}

static void the_most_specific_route_wins_whatever_the_order(void)
{
    keel_router_init(&r);
    keel_errmsg_t e = {{0}};
    KT_EQ_INT(keel_router_add(&r, "GET", "/orders/:id", &tags[0], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/static/*path", &tags[1], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/orders/new", &tags[2], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/orders/:id/items/:item", &tags[3], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/static/:file", &tags[4], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/", &tags[5], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "PUT", "/orders/:id", &tags[6], &e), 0);
    KT_EQ_INT(keel_router_add(&r, "*", "/health/live", &tags[7], &e), 0);
    keel_route_match_t m;
    char b[64];
    KT_EQ_INT(match("GET", "/orders/new", &m), 0);
    KT_CHECK(m.data == &tags[2] && m.n == 0);
    KT_EQ_INT(match("GET", "/orders/42", &m), 0);
    KT_CHECK(m.data == &tags[0]);
    KT_EQ_STR(param(&m, "id", b), "42");
    KT_EQ_INT(match("PUT", "/orders/42", &m), 0);
    KT_CHECK(m.data == &tags[6]);
    KT_EQ_INT(match("GET", "/orders/42/items/7", &m), 0);
    KT_EQ_STR(param(&m, "id", b), "42");
    KT_EQ_STR(param(&m, "item", b), "7");
    KT_EQ_INT(match("GET", "/static/app.js", &m), 0);
    KT_CHECK(m.data == &tags[4]); /* a parameter beats the wildcard */
    KT_EQ_INT(match("GET", "/static/js/app.js", &m), 0);
    KT_CHECK(m.data == &tags[1]);
    KT_EQ_STR(param(&m, "path", b), "js/app.js");
    KT_EQ_INT(match("GET", "/static/", &m), 0); /* the wildcard takes an empty rest */
    KT_EQ_STR(param(&m, "path", b), "");
    KT_EQ_INT(match("GET", "/", &m), 0);
    KT_CHECK(m.data == &tags[5]);
    KT_EQ_INT(match("DELETE", "/health/live", &m), 0);
    KT_CHECK(m.data == &tags[7]);
    /* not found: trailing slash, empty segment, longer, shorter, not absolute */
    const char *missing[] = {"/orders/42/", "/orders//items", "/orders/42/items/7/x",
                             "/orders",     "orders/42",      "",
                             "/nope"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
        if (match("GET", missing[i], &m) != KEEL_ENOTFOUND)
            KT_FAIL("%s should not match", missing[i]);
    /* a path that other methods take: 405 with Allow */
    KT_EQ_INT(match("POST", "/orders/42", &m), KEEL_EREJECTED);
    KT_EQ_STR(m.allow, "GET, PUT");
    keel_router_free(&r);
}

static void bad_patterns_and_conflicts_are_refused_with_why(void)
{
    keel_router_init(&r);
    keel_errmsg_t e = {{0}};
    const char *bad[][3] = {
        {"GET", "orders", "starts with /"},
        {"GET", "/a//b", "empty segment"},
        {"GET", "/a/", "does not end with /"},
        {"GET", "/a/:", "needs a name"},
        {"GET", "/a/*rest/b", "must be the last segment"},
        {"GET", "/a/:id/b/:id", "named twice"},
        {"GET", "/a/:i-d", "bad character"},
        {"get", "/a", "not upper case"},
        {"", "/a", "bad method"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        KT_EQ_INT(keel_router_add(&r, bad[i][0], bad[i][1], NULL, &e), KEEL_EINVAL);
        if (strstr(e.text, bad[i][2]) == NULL)
            KT_FAIL("%s: %s lacks %s", bad[i][1], e.text, bad[i][2]);
    }
    KT_EQ_INT(keel_router_add(&r, "GET", "/u/:id", NULL, &e), 0);
    KT_EQ_INT(keel_router_add(&r, "GET", "/u/:name", NULL, &e), KEEL_EINVAL);
    KT_CHECK(strstr(e.text, "conflicts with GET /u/:id (route 0)") != NULL);
    KT_EQ_INT(keel_router_add(&r, "POST", "/u/:name", NULL, &e), 0); /* another method */
    KT_EQ_INT(keel_router_add(&r, "GET", "/u/me", NULL, &e), 0);     /* more specific */
    char many[KEEL_ROUTER_SEGMENTS_MAX * 2 + 4] = "";
    for (unsigned i = 0; i <= KEEL_ROUTER_SEGMENTS_MAX; i++)
        strcat(many, "/a");
    KT_EQ_INT(keel_router_add(&r, "GET", many, NULL, &e), KEEL_EINVAL);
    keel_router_free(&r);
}

int main(void)
{
    KT_RUN(the_most_specific_route_wins_whatever_the_order);
    KT_RUN(bad_patterns_and_conflicts_are_refused_with_why);
    return kt_done();
}
