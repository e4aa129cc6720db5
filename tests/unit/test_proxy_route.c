/* test_proxy_route.c - route matching, the weighted cluster picker and the retry budget. */
#include "ktest.h"
#include "base/rand.h"
#include "proxy/config.h"
#include "proxy/route.h"

#include <string.h>

static keel_proxy_config_t cfg;
static keel_proxy_errors_t errs;

static const char routes_yaml[] =
    "listeners: [{address: 127.0.0.1:1}]\n"
    "clusters:\n"
    "  - {name: v1, hosts: [127.0.0.1:2]}\n"
    "  - {name: v2, hosts: [127.0.0.1:3]}\n"
    "routes:\n"
    "  - name: health\n" /* 0 */
    "    match: {exact: /health}\n"
    "    direct_response: {status: 200, body: ok}\n"
    "  - name: admin-host\n" /* 1 */
    "    match: {host: Admin.Example.com, prefix: /}\n"
    "    cluster: v1\n"
    "  - name: item\n" /* 2 */
    "    match: {regex: \"^/items/[0-9]+$\", methods: [GET, HEAD]}\n"
    "    cluster: v1\n"
    "  - name: canary\n" /* 3 */
    "    match:\n"
    "      prefix: /api/\n"
    "      headers: [{name: x-canary, value: \"true\"}]\n"
    "    cluster: v2\n"
    "  - name: debug\n" /* 4 */
    "    match:\n"
    "      prefix: /api/\n"
    "      query: [{name: debug, value: \"1\"}, {name: trace}]\n"
    "    cluster: v2\n"
    "  - name: no-cookie\n" /* 5 */
    "    match:\n"
    "      prefix: /api/\n"
    "      headers: [{name: cookie, present: false}, {name: user-agent, regex: \"^curl/\"}]\n"
    "    cluster: v1\n"
    "  - name: api\n" /* 6 */
    "    match: {prefix: /api/}\n"
    "    weighted_clusters: [{cluster: v1, weight: 90}, {cluster: v2, weight: 10}]\n";

static void load(void)
{
    if (keel_proxy_config_parse(routes_yaml, strlen(routes_yaml), &cfg, &errs) != 0) {
        for (uint32_t i = 0; i < errs.count; i++)
            fprintf(stderr, "line %d: %s\n", errs.e[i].line, errs.e[i].text);
        KT_FAIL("routes_yaml does not load");
    }
}

/* Routes a request line plus headers ("name: value" strings). */
static int route(const char *method, const char *target, const char *host, const char **hdrs,
                 size_t nh)
{
    keel_proxy_header_view_t views[8];
    for (size_t i = 0; i < nh; i++) {
        const char *colon = strchr(hdrs[i], ':');
        views[i] = (keel_proxy_header_view_t){hdrs[i], (size_t)(colon - hdrs[i]), colon + 2,
                                              strlen(colon + 2)};
    }
    keel_proxy_req_view_t v;
    memset(&v, 0, sizeof(v));
    v.method = method;
    v.method_len = strlen(method);
    v.host = host;
    v.host_len = host ? strlen(host) : 0;
    KT_CHECK(keel_proxy_split_target(target, strlen(target), &v.path, &v.path_len, &v.query,
                                     &v.query_len));
    v.headers = views;
    v.headers_count = nh;
    return keel_proxy_route_match(&cfg, &v);
}

static void first_matching_route_wins(void)
{
    load();
    KT_EQ_INT(route("GET", "/health", "a", NULL, 0), 0);
    KT_EQ_INT(route("GET", "/health/x", "a", NULL, 0), -1); /* exact means exact */
    KT_EQ_INT(route("GET", "/health", "admin.example.com", NULL, 0), 0);
    KT_EQ_INT(route("GET", "/x", "ADMIN.example.COM:8080", NULL, 0), 1); /* port, case */
    KT_EQ_INT(route("GET", "/x", "admin.example.com.evil", NULL, 0), -1);
    KT_EQ_INT(route("GET", "/items/42", "a", NULL, 0), 2);
    KT_EQ_INT(route("GET", "/items/42?x=1", "a", NULL, 0), 2); /* the query is not the path */
    KT_EQ_INT(route("POST", "/items/42", "a", NULL, 0), -1);   /* method */
    KT_EQ_INT(route("GET", "/items/4x", "a", NULL, 0), -1);
    KT_EQ_INT(route("GET", "http://a/items/7", "a", NULL, 0), 2); /* absolute form */
    keel_proxy_config_free(&cfg);
}

static void header_routing_sends_canary_requests_to_v2(void)
{
    load();
    const char *canary[] = {"X-Canary: true", "cookie: c=1"};
    const char *not_canary[] = {"X-Canary: false", "cookie: c=1"};
    KT_EQ_INT(route("GET", "/api/a", "a", canary, 2), 3);
    KT_EQ_INT(route("GET", "/api/a", "a", not_canary, 2), 6);
    KT_EQ_STR(cfg.clusters[cfg.routes[3].clusters[0].cluster].name, "v2");
    keel_proxy_config_free(&cfg);
}

static void query_and_absence_conditions_hold(void)
{
    load();
    const char *ck[] = {"cookie: a=b"};
    const char *curl[] = {"User-Agent: curl/8.0"};
    const char *other[] = {"User-Agent: wget"};
    KT_EQ_INT(route("GET", "/api/a?debug=1&trace", "a", ck, 1), 4);
    KT_EQ_INT(route("GET", "/api/a?trace&debug=1", "a", ck, 1), 4);
    KT_EQ_INT(route("GET", "/api/a?debug=10&trace", "a", ck, 1), 6); /* value is exact */
    KT_EQ_INT(route("GET", "/api/a?debug=1", "a", ck, 1), 6);        /* trace is missing */
    KT_EQ_INT(route("GET", "/api/a", "a", curl, 1), 5);              /* no cookie, curl */
    KT_EQ_INT(route("GET", "/api/a", "a", other, 1), 6);
    keel_proxy_config_free(&cfg);
}

/* 90/10 over 100k picks lands within 1% of 10% (a seeded PRNG: the same run every time). */
static void weighted_split_is_ninety_ten_within_one_percent(void)
{
    load();
    const keel_proxy_route_t *r = &cfg.routes[6];
    keel_rand_t rand;
    uint64_t seed = 20261204;
    KT_SEED(seed);
    keel_rand_seed(&rand, seed);
    uint32_t n[2] = {0, 0};
    for (int i = 0; i < 100000; i++)
        n[keel_proxy_route_pick(r, keel_rand_u64(&rand))]++;
    KT_EQ_INT(n[0] + n[1], 100000);
    KT_NEAR((double)n[1] / 100000.0, 0.10, 0.01);
    /* and exactly: rnd at the midpoints of 1000 equal slices of [0, 2^64) gives 900/100 */
    uint32_t exact[2] = {0, 0};
    for (uint64_t i = 0; i < 1000; i++)
        exact[keel_proxy_route_pick(r,
                                    (uint64_t)(((unsigned __int128)(2 * i + 1) << 64) / 2000))]++;
    KT_EQ_INT(exact[0], 900);
    KT_EQ_INT(exact[1], 100);
    keel_proxy_config_free(&cfg);
}

static void a_zero_weight_cluster_never_gets_picked(void)
{
    keel_proxy_route_t r;
    memset(&r, 0, sizeof(r));
    r.clusters_count = 3;
    r.clusters[0].weight = 0;
    r.clusters[1].weight = 5;
    r.clusters[2].weight = 0;
    r.weight_total = 5;
    keel_rand_t rand;
    keel_rand_seed(&rand, 7);
    for (int i = 0; i < 10000; i++)
        KT_EQ_INT(keel_proxy_route_pick(&r, keel_rand_u64(&rand)), 1);
    KT_EQ_INT(keel_proxy_route_pick(&r, UINT64_MAX), 1);
    KT_EQ_INT(keel_proxy_route_pick(&r, 0), 1);
}

static void retry_budget_is_twenty_percent_of_active_with_a_floor_of_three(void)
{
    keel_proxy_retry_t rt;
    memset(&rt, 0, sizeof(rt));
    rt.budget_pct = 20;
    rt.budget_min = 3;
    KT_CHECK(keel_proxy_retry_budget_allows(&rt, 1, 0));
    KT_CHECK(keel_proxy_retry_budget_allows(&rt, 1, 2));
    KT_CHECK(!keel_proxy_retry_budget_allows(&rt, 1, 3)); /* the floor */
    KT_CHECK(keel_proxy_retry_budget_allows(&rt, 100, 19));
    KT_CHECK(!keel_proxy_retry_budget_allows(&rt, 100, 20)); /* 20% of 100 */
    rt.budget_pct = 0;                                       /* no budget */
    KT_CHECK(keel_proxy_retry_budget_allows(&rt, 1, 1000));
}

static void splits_targets_into_path_and_query(void)
{
    const char *p, *q;
    size_t pl, ql;
    KT_CHECK(keel_proxy_split_target("/a/b?x=1", 8, &p, &pl, &q, &ql));
    KT_EQ_INT(pl, 4);
    KT_EQ_INT(ql, 3);
    KT_CHECK(keel_proxy_split_target("/", 1, &p, &pl, &q, &ql));
    KT_EQ_INT(ql, 0);
    KT_CHECK(!keel_proxy_split_target("*", 1, &p, &pl, &q, &ql));
    KT_CHECK(!keel_proxy_split_target("a/b", 3, &p, &pl, &q, &ql));
    KT_CHECK(!keel_proxy_split_target("http://host", 11, &p, &pl, &q, &ql));
}

/* Envoy's rules for replaying a request (route.h): retry_on, the body, idempotency. */
static void retry_eligibility_follows_method_key_and_body(void)
{
    keel_proxy_retry_t rt = {0};
    rt.attempts_max = 3;
    rt.retry_on = KEEL_PROXY_RETRY_ON_CONNECT | KEEL_PROXY_RETRY_ON_RESET;
    rt.idempotent_only = true;
    keel_proxy_retry_req_t get = {true, false, false, true};
    keel_proxy_retry_req_t post = {false, false, true, true};
    keel_proxy_retry_req_t post_key = {false, true, true, true};
    keel_proxy_retry_req_t post_key_big = {false, true, true, false}; /* body outgrew the buffer */
    /* idempotent methods as before */
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_RESET, 0), KEEL_PROXY_RETRY_OK);
    /* a POST after a reset: only with an Idempotency-Key */
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post, KEEL_RETRY_FAIL_RESET, 0),
              KEEL_PROXY_RETRY_NOT_IDEMPOTENT);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post_key, KEEL_RETRY_FAIL_RESET, 0),
              KEEL_PROXY_RETRY_OK);
    /* connect failure: nothing was seen, any method goes again */
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post, KEEL_RETRY_FAIL_CONNECT, 0),
              KEEL_PROXY_RETRY_OK);
    /* ... unless body bytes of an earlier attempt went out and were not kept */
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post_key_big, KEEL_RETRY_FAIL_CONNECT, 0),
              KEEL_PROXY_RETRY_UNBUFFERED);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post_key_big, KEEL_RETRY_FAIL_RESET, 0),
              KEEL_PROXY_RETRY_UNBUFFERED);
    /* not in retry_on */
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_TIMEOUT, 0),
              KEEL_PROXY_RETRY_NOT_ON);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_NONE, 503),
              KEEL_PROXY_RETRY_NOT_ON);
    rt.retry_on |= KEEL_PROXY_RETRY_ON_GATEWAY;
    rt.statuses[0] = 429;
    rt.statuses_count = 1;
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_NONE, 503), KEEL_PROXY_RETRY_OK);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_NONE, 429), KEEL_PROXY_RETRY_OK);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_NONE, 500),
              KEEL_PROXY_RETRY_NOT_ON);
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post, KEEL_RETRY_FAIL_NONE, 503),
              KEEL_PROXY_RETRY_NOT_IDEMPOTENT);
    /* idempotent_only off: every method */
    rt.idempotent_only = false;
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &post, KEEL_RETRY_FAIL_RESET, 0), KEEL_PROXY_RETRY_OK);
}

/* A request on a stale pooled connection is sent again by the same rules as a retry after a
 * reset, without retry_on: a route with no retry section (attempts_max 1, nothing in retry_on)
 * still re-sends a GET. */
static void a_stale_resend_is_judged_by_body_and_idempotency_alone(void)
{
    keel_proxy_retry_t rt = {0};
    rt.attempts_max = 1;
    rt.idempotent_only = true;
    keel_proxy_retry_req_t get = {true, false, false, true};
    keel_proxy_retry_req_t put_unkept = {true, false, true, false}; /* no copy of its body */
    keel_proxy_retry_req_t post = {false, false, false, true};      /* even without a body */
    keel_proxy_retry_req_t post_key = {false, true, true, true};
    KT_EQ_INT(keel_proxy_retry_eligible(&rt, &get, KEEL_RETRY_FAIL_RESET, 0),
              KEEL_PROXY_RETRY_NOT_ON);
    KT_EQ_INT(keel_proxy_resend_safe(&rt, &get, KEEL_RETRY_FAIL_RESET), KEEL_PROXY_RETRY_OK);
    KT_EQ_INT(keel_proxy_resend_safe(&rt, &put_unkept, KEEL_RETRY_FAIL_RESET),
              KEEL_PROXY_RETRY_UNBUFFERED);
    KT_EQ_INT(keel_proxy_resend_safe(&rt, &post, KEEL_RETRY_FAIL_RESET),
              KEEL_PROXY_RETRY_NOT_IDEMPOTENT);
    KT_EQ_INT(keel_proxy_resend_safe(&rt, &post_key, KEEL_RETRY_FAIL_RESET), KEEL_PROXY_RETRY_OK);
    rt.idempotent_only = false; /* the route's own word that any method may go twice */
    KT_EQ_INT(keel_proxy_resend_safe(&rt, &post, KEEL_RETRY_FAIL_RESET), KEEL_PROXY_RETRY_OK);
}

/* The replay buffer keeps a body that fits and drops one that does not. */
/* A hedge (route.h): stricter than a retry (never a non-idempotent request without a key, whatever
 * idempotent_only says), only with the whole body read and held, within attempts_max and the
 * deadline. */
static void hedge_eligibility_follows_method_body_attempts_and_deadline(void)
{
    keel_proxy_hedge_t hg = {true, 1, 50};
    keel_proxy_retry_t rt = {0};
    rt.attempts_max = 2;
    rt.idempotent_only = false; /* a retry of a POST would be allowed; a hedge is not */
    keel_proxy_hedge_req_t get = {true, false, true, true, false, 1, 100, 1000};
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &get), KEEL_PROXY_HEDGE_OK);
    keel_proxy_hedge_req_t q = get;
    q.idempotent = false;
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_NOT_IDEMPOTENT);
    q.idempotency_key = true; /* a POST with an Idempotency-Key */
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_OK);
    q = get;
    q.body_read = false; /* still arriving from the client */
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_BODY);
    q = get;
    q.body_replayable = false; /* outgrew retry_buffer_bytes */
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_BODY);
    q = get;
    q.attempts = 2; /* the first try and a retry already: attempts_max 2 */
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_ATTEMPTS);
    rt.attempts_max = 3;
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_OK);
    q.now_ms = 1000; /* at the deadline */
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_DEADLINE);
    q = get;
    q.answered = true;
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &q), KEEL_PROXY_HEDGE_OFF);
    hg.enabled = false;
    KT_EQ_INT(keel_proxy_hedge_eligible(&hg, &rt, &get), KEEL_PROXY_HEDGE_OFF);
}

static void replay_buffer_keeps_bodies_within_its_limit(void)
{
    keel_proxy_replay_t r = {0};
    /* nothing sent yet: replayable */
    keel_proxy_replay_begin(&r, 16, 10);
    KT_CHECK(keel_proxy_replay_ok(&r));
    keel_proxy_replay_add(&r, "hello", 5);
    keel_proxy_replay_add(&r, "world", 5);
    KT_CHECK(r.sent);
    KT_CHECK(keel_proxy_replay_ok(&r));
    KT_EQ_INT(keel_buf_unread(&r.buf), 10);
    KT_EQ_MEM(keel_buf_rptr(&r.buf), "helloworld", 10);
    /* a chunked body (length unknown) kept until it passes the limit, then dropped */
    keel_proxy_replay_begin(&r, 16, UINT64_MAX);
    KT_CHECK(!r.sent);
    keel_proxy_replay_add(&r, "0123456789abcdef", 16); /* exactly the limit */
    KT_CHECK(keel_proxy_replay_ok(&r));
    keel_proxy_replay_add(&r, "x", 1);
    KT_CHECK(!keel_proxy_replay_ok(&r));
    KT_CHECK(r.buf.data == NULL); /* its memory is released at once */
    /* a Content-Length over the limit is never copied, but is fine until a byte is sent */
    keel_proxy_replay_begin(&r, 16, 17);
    KT_CHECK(keel_proxy_replay_ok(&r));
    keel_proxy_replay_add(&r, "a", 1);
    KT_CHECK(!keel_proxy_replay_ok(&r));
    KT_CHECK(r.buf.data == NULL);
    /* limit 0 (retry_buffer_bytes: 0, or a route without retries): today's streaming */
    keel_proxy_replay_begin(&r, 0, 3);
    KT_CHECK(keel_proxy_replay_ok(&r));
    keel_proxy_replay_add(&r, "abc", 3);
    KT_CHECK(!keel_proxy_replay_ok(&r));
    /* an empty add sends nothing */
    keel_proxy_replay_begin(&r, 8, 0);
    keel_proxy_replay_add(&r, "", 0);
    KT_CHECK(!r.sent);
    keel_proxy_replay_release(&r);
    KT_CHECK(r.buf.data == NULL);
}

/* A rollout's pick: the canary gets exactly its step's percent, the others the rest in the
 * proportion of their configured weights (3:1 here), whatever the canary's own weight. */
static void rollout_pick_gives_the_canary_its_step_and_the_rest_in_proportion(void)
{
    keel_proxy_route_t r;
    memset(&r, 0, sizeof(r));
    r.clusters_count = 3;
    r.clusters[0].weight = 3;
    r.clusters[1].weight = 50; /* the canary: its configured weight is not used */
    r.clusters[2].weight = 1;
    r.weight_total = 54;
    r.rollout.enabled = true;
    r.rollout.canary = 1;
    r.rollout.others_weight = 4;
    static const uint32_t pcts[] = {0, 1, 25, 99, 100};
    for (size_t k = 0; k < sizeof(pcts) / sizeof(pcts[0]); k++) {
        uint32_t n[3] = {0, 0, 0};
        /* rnd at the midpoints of 400 equal slices of [0, 2^64): exact shares */
        for (uint64_t i = 0; i < 400; i++)
            n[keel_proxy_route_pick_rollout(
                &r, pcts[k], (uint64_t)(((unsigned __int128)(2 * i + 1) << 64) / 800))]++;
        KT_EQ_INT(n[1], 4 * pcts[k]);
        KT_EQ_INT(n[0], 3 * (100 - pcts[k]));
        KT_EQ_INT(n[2], 1 * (100 - pcts[k]));
        KT_CHECK(keel_proxy_route_pick_rollout(&r, pcts[k], 0) < 3);
        KT_CHECK(keel_proxy_route_pick_rollout(&r, pcts[k], UINT64_MAX) < 3);
    }
    KT_EQ_INT(keel_proxy_route_pick_rollout(&r, 0, UINT64_MAX), 2);
    KT_EQ_INT(keel_proxy_route_pick_rollout(&r, 100, UINT64_MAX), 1);
    KT_EQ_INT(keel_proxy_route_pick_rollout(&r, 0, 0), 0);
}

int main(void)
{
    KT_RUN(first_matching_route_wins);
    KT_RUN(header_routing_sends_canary_requests_to_v2);
    KT_RUN(query_and_absence_conditions_hold);
    KT_RUN(weighted_split_is_ninety_ten_within_one_percent);
    KT_RUN(a_zero_weight_cluster_never_gets_picked);
    KT_RUN(rollout_pick_gives_the_canary_its_step_and_the_rest_in_proportion);
    KT_RUN(retry_budget_is_twenty_percent_of_active_with_a_floor_of_three);
    KT_RUN(splits_targets_into_path_and_query);
    KT_RUN(retry_eligibility_follows_method_key_and_body);
    KT_RUN(a_stale_resend_is_judged_by_body_and_idempotency_alone);
    KT_RUN(hedge_eligibility_follows_method_body_attempts_and_deadline);
    KT_RUN(replay_buffer_keeps_bodies_within_its_limit);
    return kt_done();
}
