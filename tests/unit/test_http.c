/* test_http.c - the HTTP/1.1 codec: parsing any split, limits with their statuses, writers. */
#include "base/rand.h"
#include "proto/http.h"
#include "ktest.h"

#include <stdlib.h>

typedef struct fixture {
    keel_http_parser_t p;
    keel_http_msg_t m;
} fixture_t;

static void fx_init(fixture_t *f, keel_http_kind_t kind, const keel_http_limits_t *lim)
{
    keel_http_limits_t def = keel_http_limits_default();
    keel_http_parser_init(&f->p, kind, lim ? lim : &def);
    keel_http_msg_init(&f->m);
}

static void fx_free(fixture_t *f)
{
    keel_http_msg_free(&f->m);
}

/* Feeds s whole; returns the event and sets *used. */
static int feed_str(fixture_t *f, const char *s, size_t *used)
{
    size_t u;
    int ev = keel_http_parser_feed(&f->p, &f->m, (const uint8_t *)s, strlen(s), &u);
    if (used)
        *used = u;
    return ev;
}

static void parses_a_simple_get(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    const char *req = "GET /hello?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nUser-Agent: t\r\n\r\n";
    size_t used;
    KT_EQ_INT(feed_str(&f, req, &used), KEEL_HTTP_MESSAGE);
    KT_EQ_INT(used, strlen(req));
    KT_EQ_INT(f.m.method, HTTP_GET);
    KT_EQ_STR(f.m.url, "/hello?x=1&y=2");
    KT_EQ_INT(f.m.path_len, 6);
    KT_EQ_MEM(f.m.path, "/hello", 6);
    KT_EQ_INT(f.m.query_len, 7);
    KT_EQ_MEM(f.m.query, "x=1&y=2", 7);
    KT_EQ_INT(f.m.headers_count, 3);
    KT_EQ_STR(f.m.headers[0].name, "Host");
    KT_EQ_STR(f.m.headers[1].name, "X-Empty");
    KT_EQ_STR(f.m.headers[1].value, "");
    KT_EQ_STR(keel_http_msg_header(&f.m, "user-agent", NULL), "t");
    KT_CHECK(keel_http_msg_header(&f.m, "missing", NULL) == NULL);
    KT_CHECK(f.m.keep_alive);
    KT_EQ_INT(f.m.body_len, 0);
    fx_free(&f);
}

static void stops_after_each_pipelined_request(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    const char *one = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *two = "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    const char *three = "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char all[512];
    snprintf(all, sizeof(all), "%s%s%s", one, two, three);
    size_t off = 0, used, n = strlen(all);
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, (uint8_t *)all, n, &used), KEEL_HTTP_MESSAGE);
    KT_EQ_INT(used, strlen(one));
    KT_EQ_STR(f.m.url, "/a");
    off += used;
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, (uint8_t *)all + off, n - off, &used),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(used, strlen(two));
    KT_EQ_STR(f.m.url, "/b");
    KT_EQ_INT(f.m.body_len, 3);
    KT_EQ_MEM(f.m.body, "abc", 3);
    KT_CHECK(f.m.keep_alive);
    off += used;
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, (uint8_t *)all + off, n - off, &used),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(off + used, n);
    KT_EQ_STR(f.m.url, "/c");
    KT_CHECK(!f.m.keep_alive);
    fx_free(&f);
}

/* Feeds `in` in random pieces, collecting each message's url+body into out. */
static int feed_random_splits(keel_rand_t *r, const char *in, char *out, size_t out_max)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    size_t n = strlen(in), off = 0, w = 0;
    int messages = 0;
    size_t pending_end = 0;
    while (off < n) {
        if (pending_end <= off)
            pending_end = off + 1 + keel_rand_below(r, 9);
        if (pending_end > n)
            pending_end = n;
        size_t used;
        int ev =
            keel_http_parser_feed(&f.p, &f.m, (const uint8_t *)in + off, pending_end - off, &used);
        off += used;
        if (ev == KEEL_HTTP_ERROR) {
            fx_free(&f);
            return -1;
        }
        if (ev == KEEL_HTTP_MESSAGE) {
            messages++;
            w += (size_t)snprintf(out + w, out_max - w, "%s|%.*s|%s;", f.m.url, (int)f.m.body_len,
                                  (const char *)f.m.body,
                                  keel_http_msg_header(&f.m, "h", NULL) ?: "");
        }
    }
    fx_free(&f);
    return messages;
}

static void parses_identically_under_any_split(void)
{
    const char *in = "GET /one HTTP/1.1\r\nh: v1\r\n\r\n"
                     "POST /two HTTP/1.1\r\nTransfer-Encoding: chunked\r\nh: v2\r\n\r\n"
                     "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n"
                     "PUT /three HTTP/1.1\r\nContent-Length: 5\r\nh:   v3  \r\n\r\nhello";
    const char *want = "/one||v1;/two|abcdefg|v2;/three|hello|v3;";
    for (uint64_t seed = 1; seed <= 200; seed++) {
        KT_SEED(seed);
        keel_rand_t r;
        keel_rand_seed(&r, seed);
        char out[512];
        out[0] = 0;
        KT_EQ_INT(feed_random_splits(&r, in, out, sizeof(out)), 3);
        KT_EQ_STR(out, want);
    }
}

static void drops_trailer_fields_and_keeps_the_headers_intact(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    char req[4096];
    /* Enough trailer bytes that appending them to the head storage would have moved it. */
    int n = snprintf(req, sizeof(req),
                     "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: a\r\n\r\n"
                     "2\r\nhi\r\n0\r\nT1: %01000d\r\nT2: %01000d\r\n\r\n",
                     1, 2);
    size_t used;
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, (uint8_t *)req, (size_t)n, &used),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.headers_count, 2);
    KT_EQ_STR(f.m.url, "/t");
    KT_EQ_STR(keel_http_msg_header(&f.m, "x-a", NULL), "a");
    KT_CHECK(keel_http_msg_header(&f.m, "t1", NULL) == NULL);
    KT_EQ_MEM(f.m.body, "hi", 2);
    fx_free(&f);
}

static void answers_431_when_headers_exceed_their_limit(void)
{
    keel_http_limits_t lim = keel_http_limits_default();
    lim.headers_bytes_max = 256;
    lim.url_bytes_max = 64;
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    char req[1024];
    snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: %0300d\r\n\r\n", 0);
    KT_EQ_INT(feed_str(&f, req, NULL), KEEL_HTTP_ERROR);
    KT_EQ_INT(f.p.error_status, 431);
    KT_EQ_INT(f.p.error_code, KEEL_ETOOBIG);
    fx_free(&f);

    lim = keel_http_limits_default();
    lim.headers_count_max = 3;
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    KT_EQ_INT(feed_str(&f, "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n", NULL),
              KEEL_HTTP_ERROR);
    KT_EQ_INT(f.p.error_status, 431);
    fx_free(&f);
}

static void answers_414_when_the_url_is_too_long(void)
{
    keel_http_limits_t lim = keel_http_limits_default();
    lim.url_bytes_max = 32;
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    KT_EQ_INT(feed_str(&f, "GET /0123456789012345678901234567890123456789 HTTP/1.1\r\n", NULL),
              KEEL_HTTP_ERROR);
    KT_EQ_INT(f.p.error_status, 414);
    fx_free(&f);
}

static void answers_413_at_the_headers_when_content_length_is_too_big(void)
{
    keel_http_limits_t lim = keel_http_limits_default();
    lim.body_bytes_max = 10;
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    /* No body byte is sent: the decision comes from Content-Length alone. */
    KT_EQ_INT(feed_str(&f, "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", NULL), KEEL_HTTP_ERROR);
    KT_EQ_INT(f.p.error_status, 413);
    fx_free(&f);
    /* Chunked bodies are counted as they arrive. */
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    KT_EQ_INT(feed_str(&f, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n",
                       NULL),
              KEEL_HTTP_NEED_MORE);
    KT_EQ_INT(feed_str(&f, "8\r\n12345678\r\n", NULL), KEEL_HTTP_ERROR);
    KT_EQ_INT(f.p.error_status, 413);
    fx_free(&f);
    /* Exactly at the limit is fine. */
    fx_init(&f, KEEL_HTTP_REQUEST, &lim);
    KT_EQ_INT(feed_str(&f, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", NULL),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.body_len, 10);
    fx_free(&f);
}

static void answers_400_to_malformed_requests(void)
{
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fixture_t f;
        fx_init(&f, KEEL_HTTP_REQUEST, NULL);
        int ev = feed_str(&f, bad[i], NULL);
        if (ev != KEEL_HTTP_ERROR)
            KT_FAIL("case %zu: event %d, want error", i, ev);
        KT_EQ_INT(f.p.error_status, 400);
        KT_EQ_INT(f.p.error_code, KEEL_EPROTO);
        KT_CHECK(f.p.error_text != NULL);
        /* Dead after an error. */
        KT_EQ_INT(feed_str(&f, "GET / HTTP/1.1\r\n\r\n", NULL), KEEL_HTTP_ERROR);
        fx_free(&f);
    }
}

static void notes_expect_continue_before_the_body(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    KT_EQ_INT(
        feed_str(&f, "PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n", NULL),
        KEEL_HTTP_NEED_MORE);
    KT_CHECK(f.m.head_complete);
    KT_CHECK(f.m.expect_continue);
    KT_CHECK(keel_http_parser_mid_message(&f.p));
    KT_EQ_INT(feed_str(&f, "ok", NULL), KEEL_HTTP_MESSAGE);
    KT_CHECK(!keel_http_parser_mid_message(&f.p));
    fx_free(&f);
}

static void http10_closes_unless_keep_alive_is_asked(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    KT_EQ_INT(feed_str(&f, "GET / HTTP/1.0\r\n\r\n", NULL), KEEL_HTTP_MESSAGE);
    KT_CHECK(!f.m.keep_alive);
    KT_EQ_INT(f.m.version_minor, 0);
    fx_free(&f);
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    KT_EQ_INT(feed_str(&f, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", NULL),
              KEEL_HTTP_MESSAGE);
    KT_CHECK(f.m.keep_alive);
    fx_free(&f);
}

static void parses_responses_with_chunked_and_close_delimited_bodies(void)
{
    fixture_t f;
    fx_init(&f, KEEL_HTTP_RESPONSE, NULL);
    KT_EQ_INT(feed_str(&f,
                       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                       NULL),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.status, 200);
    KT_EQ_INT(f.m.body_len, 5);
    KT_CHECK(f.m.chunked);
    fx_free(&f);

    fx_init(&f, KEEL_HTTP_RESPONSE, NULL);
    KT_EQ_INT(feed_str(&f, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof", NULL),
              KEEL_HTTP_NEED_MORE);
    KT_EQ_INT(keel_http_parser_finish(&f.p, &f.m), KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.body_len, 9);
    fx_free(&f);

    fx_init(&f, KEEL_HTTP_RESPONSE, NULL);
    KT_EQ_INT(feed_str(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", NULL),
              KEEL_HTTP_NEED_MORE);
    KT_EQ_INT(keel_http_parser_finish(&f.p, &f.m), KEEL_HTTP_ERROR);
    fx_free(&f);

    /* A HEAD answer carries Content-Length but no body. */
    fx_init(&f, KEEL_HTTP_RESPONSE, NULL);
    keel_http_parser_expect_no_body(&f.p, true);
    KT_EQ_INT(feed_str(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", NULL),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.content_length, 10);
    KT_EQ_INT(f.m.body_len, 0);
    fx_free(&f);
}

static void writes_a_response_that_parses_back(void)
{
    keel_buf_t out;
    keel_buf_init(&out, 0);
    keel_http_header_t h[] = {
        {.name = "Content-Type", .name_len = 12, .value = "text/plain", .value_len = 10}};
    KT_EQ_INT(keel_http_write_response(&out, 404, h, 1, "nope", 4, KEEL_HTTP_W_CLOSE,
                                       "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
              0);
    const char *want = "HTTP/1.1 404 Not Found\r\nServer: keel\r\n"
                       "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n"
                       "Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope";
    KT_EQ_INT(keel_buf_unread(&out), strlen(want));
    KT_EQ_MEM(keel_buf_rptr(&out), want, strlen(want));

    fixture_t f;
    fx_init(&f, KEEL_HTTP_RESPONSE, NULL);
    size_t used;
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, keel_buf_rptr(&out), keel_buf_unread(&out), &used),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.status, 404);
    KT_EQ_MEM(f.m.body, "nope", 4);
    KT_CHECK(!f.m.keep_alive);
    fx_free(&f);

    keel_buf_reset(&out);
    KT_EQ_INT(
        keel_http_write_request(&out, HTTP_POST, "127.0.0.1:80", "/echo", NULL, 0, "xy", 2, 0), 0);
    fx_init(&f, KEEL_HTTP_REQUEST, NULL);
    KT_EQ_INT(keel_http_parser_feed(&f.p, &f.m, keel_buf_rptr(&out), keel_buf_unread(&out), &used),
              KEEL_HTTP_MESSAGE);
    KT_EQ_INT(f.m.method, HTTP_POST);
    KT_EQ_STR(keel_http_msg_header(&f.m, "host", NULL), "127.0.0.1:80");
    KT_EQ_MEM(f.m.body, "xy", 2);
    fx_free(&f);
    keel_buf_free(&out);
    KT_EQ_STR(keel_http_status_text(431), "Request Header Fields Too Large");
    KT_EQ_STR(keel_http_status_text(799), "Unknown");
}

static void writers_drop_framing_headers_passed_by_the_caller(void)
{
    keel_buf_t out;
    keel_buf_init(&out, 0);
    keel_http_header_t h[] = {
        {.name = "Content-Length", .name_len = 14, .value = "999", .value_len = 3},
        {.name = "transfer-encoding", .name_len = 17, .value = "chunked", .value_len = 7},
        {.name = "Connection", .name_len = 10, .value = "keep-alive", .value_len = 10},
        {.name = "X-Kept", .name_len = 6, .value = "yes", .value_len = 3},
        {.name = "HOST", .name_len = 4, .value = "evil", .value_len = 4},
    };
    KT_EQ_INT(keel_http_write_response(&out, 200, h, 5, "ab", 2, 0, NULL), 0);
    const char *want = "HTTP/1.1 200 OK\r\nServer: keel\r\nX-Kept: yes\r\n"
                       "Content-Length: 2\r\n\r\nab";
    KT_EQ_INT(keel_buf_unread(&out), strlen(want));
    KT_EQ_MEM(keel_buf_rptr(&out), want, strlen(want));
    keel_buf_reset(&out);
    KT_EQ_INT(keel_http_write_request(&out, HTTP_GET, "up:80", "/", h, 5, NULL, 0, 0), 0);
    want = "GET / HTTP/1.1\r\nHost: up:80\r\nX-Kept: yes\r\n\r\n";
    KT_EQ_INT(keel_buf_unread(&out), strlen(want));
    KT_EQ_MEM(keel_buf_rptr(&out), want, strlen(want));
    keel_buf_free(&out);
}

static void limits_are_validated(void)
{
    keel_http_limits_t lim = keel_http_limits_default();
    KT_EQ_INT(keel_http_limits_validate(&lim, NULL), 0);
    keel_errmsg_t m;
    lim.headers_bytes_max = 1 << 20;
    KT_EQ_INT(keel_http_limits_validate(&lim, &m), KEEL_EINVAL);
    KT_CHECK(strstr(m.text, "headers_bytes_max") != NULL);
    lim = keel_http_limits_default();
    lim.headers_count_max = 0;
    KT_EQ_INT(keel_http_limits_validate(&lim, NULL), KEEL_EINVAL);
}

int main(void)
{
    KT_RUN(parses_a_simple_get);
    KT_RUN(stops_after_each_pipelined_request);
    KT_RUN(parses_identically_under_any_split);
    KT_RUN(drops_trailer_fields_and_keeps_the_headers_intact);
    KT_RUN(answers_431_when_headers_exceed_their_limit);
    KT_RUN(answers_414_when_the_url_is_too_long);
    KT_RUN(answers_413_at_the_headers_when_content_length_is_too_big);
    KT_RUN(answers_400_to_malformed_requests);
    KT_RUN(notes_expect_continue_before_the_body);
    KT_RUN(http10_closes_unless_keep_alive_is_asked);
    KT_RUN(parses_responses_with_chunked_and_close_delimited_bodies);
    KT_RUN(writes_a_response_that_parses_back);
    KT_RUN(writers_drop_framing_headers_passed_by_the_caller);
    KT_RUN(limits_are_validated);
    return kt_done();
}
