/* test_proxy_h1.c - the proxy's HTTP/1.1 head parser and chunked decoder, smuggling included. */
#include "ktest.h"
#include "proxy/h1.h"

#include <string.h>

static const keel_h1_limits_t lim = {64, 1024, 8};
static keel_h1_head_t h;

static int req(const char *text)
{
    size_t scan = 0, n = strlen(text);
    size_t end = keel_h1_head_end(text, n, &scan);
    KT_CHECK(end > 0);
    return keel_h1_parse_request(text, end, &lim, &h);
}

static int resp(const char *text, bool head)
{
    size_t scan = 0, n = strlen(text);
    size_t end = keel_h1_head_end(text, n, &scan);
    KT_CHECK(end > 0);
    return keel_h1_parse_response(text, end, &lim, head, &h);
}

static void parses_a_request_head(void)
{
    const char *t =
        "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nExpect: 100-continue\r\n\r\nhello";
    KT_EQ_INT(req(t), 0);
    KT_EQ_INT(h.head_bytes, strlen(t) - 5);
    KT_CHECK(keel_h1_span_is(t, h.method, "post"));
    KT_EQ_INT(h.target.len, 6);
    KT_EQ_INT(h.body, KEEL_H1_BODY_LENGTH);
    KT_EQ_U64(h.content_length, 5);
    KT_CHECK(h.keep_alive);
    KT_CHECK(h.expect_continue);
    KT_EQ_INT(h.fields_count, 5);
    KT_EQ_INT(keel_h1_find(t, &h, "host"), 0);
    /* Connection and the fields it names are hop-by-hop */
    KT_CHECK(keel_h1_is_hop_by_hop(t, &h, h.fields[2].name));
    KT_CHECK(keel_h1_is_hop_by_hop(t, &h, h.fields[3].name));
    KT_CHECK(!keel_h1_is_hop_by_hop(t, &h, h.fields[0].name));
}

static void finds_a_head_fed_one_byte_at_a_time(void)
{
    const char *t = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET";
    size_t scan = 0, end = 0, n;
    for (n = 1; n <= strlen(t) && end == 0; n++)
        end = keel_h1_head_end(t, n, &scan);
    KT_EQ_INT(end, strlen(t) - 3);
    KT_EQ_INT(n - 1, end);
}

static void refuses_request_smuggling_shapes(void)
{
    /* both framings */
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n"),
              400);
    /* differing duplicate lengths; identical ones are one length */
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
              400);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
              0);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n"), 400);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n"), 400);
    /* obs-fold, whitespace before the colon, bare LF, control bytes */
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"), 400);
    /* chunked must be last, once; other codings are not implemented */
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
              400);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
    KT_EQ_INT(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    KT_EQ_INT(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_CHUNKED);
    /* Host: exactly one in HTTP/1.1 */
    KT_EQ_INT(req("GET / HTTP/1.1\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/1.0\r\n\r\n"), 0);
    KT_CHECK(!h.keep_alive);
    /* malformed request lines and versions */
    KT_EQ_INT(req("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    KT_EQ_INT(req("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 400);
    KT_EQ_INT(req("G(T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
}

static void answers_each_limit_with_its_status(void)
{
    char big[2048];
    snprintf(big, sizeof(big), "GET /%0100d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    KT_EQ_INT(req(big), 414);
    KT_EQ_INT(req("GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\n"
                  "f: 1\r\ng: 1\r\nh: 1\r\n\r\n"),
              431); /* 9 fields > 8 */
    /* an unfinished head is refused as soon as it is too long */
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    KT_EQ_INT(keel_h1_request_overflow(big, 200, &lim), 414);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    KT_EQ_INT(keel_h1_request_overflow(big, 1025, &lim), 431);
    KT_EQ_INT(keel_h1_request_overflow(big, 500, &lim), 0);
}

static void frames_responses_by_rfc_9112_section_6_3(void)
{
    KT_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_LENGTH);
    KT_EQ_INT(h.status, 200);
    KT_CHECK(keel_h1_span_is("HTTP/1.1 200 OK\r\n", h.reason, "ok"));
    KT_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_NONE); /* answer to HEAD */
    KT_EQ_INT(resp("HTTP/1.1 204 No Content\r\n\r\n", false), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_NONE);
    KT_EQ_INT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_CHUNKED);
    KT_EQ_INT(resp("HTTP/1.1 200 OK\r\n\r\n", false), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_CLOSE);
    KT_CHECK(!h.keep_alive);
    KT_EQ_INT(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false), 0);
    KT_CHECK(!h.keep_alive);
    KT_EQ_INT(resp("HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n", false), 0); /* no reason */
    KT_EQ_INT(resp("HTTP/1.1 100 Continue\r\n\r\n", false), 0);
    KT_EQ_INT(h.body, KEEL_H1_BODY_NONE);
    /* garbage and ambiguity are a bad gateway */
    KT_EQ_INT(resp("HTTP/1.1 2x0 OK\r\n\r\n", false), 502);
    KT_EQ_INT(resp("SSH-2.0-OpenSSH\r\n\r\n", false), 502);
    KT_EQ_INT(
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", false),
        502);
    KT_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", false),
              502);
}

/* Feeds body in pieces of `step` bytes; returns decoded bytes in out, the last result. */
static int decode(const char *body, size_t step, char *out, size_t *out_len, size_t *rest)
{
    keel_h1_chunked_t c;
    keel_h1_chunked_init(&c);
    size_t n = strlen(body), pos = 0;
    *out_len = 0;
    int ev = KEEL_H1_CK_MORE;
    while (pos < n) {
        size_t avail = n - pos < step ? n - pos : step, used, off, len;
        ev = keel_h1_chunked_feed(&c, (const uint8_t *)body + pos, avail, &used, &off, &len);
        if (ev == KEEL_H1_CK_BODY) {
            memcpy(out + *out_len, body + pos + off, len);
            *out_len += len;
        }
        pos += used;
        if (ev == KEEL_H1_CK_END || ev == KEEL_H1_CK_BAD)
            break;
        KT_CHECK(used > 0);
    }
    *rest = n - pos;
    return ev;
}

static void decodes_chunked_bodies_split_anywhere(void)
{
    const char *b = "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for (size_t step = 1; step <= strlen(b); step++) {
        char out[64];
        size_t len, rest;
        KT_EQ_INT(decode(b, step, out, &len, &rest), KEEL_H1_CK_END);
        KT_EQ_INT(len, 15);
        KT_EQ_MEM(out, "hello0123456789", 15);
        KT_EQ_INT(rest, 4); /* stops right after the body */
    }
}

static void refuses_bad_chunks(void)
{
    char out[64];
    size_t len, rest;
    KT_EQ_INT(decode("x\r\n", 3, out, &len, &rest), KEEL_H1_CK_BAD);
    KT_EQ_INT(decode("5\r\nhelloX\r\n", 64, out, &len, &rest), KEEL_H1_CK_BAD);      /* no CRLF */
    KT_EQ_INT(decode("1000000000000000\r\n", 64, out, &len, &rest), KEEL_H1_CK_BAD); /* 2^60 */
    KT_EQ_INT(decode("5\nhello\r\n", 64, out, &len, &rest), KEEL_H1_CK_BAD);         /* bare LF */
    KT_EQ_INT(decode("-1\r\n", 64, out, &len, &rest), KEEL_H1_CK_BAD);
    KT_EQ_INT(decode("0\r\n folded\r\n\r\n", 64, out, &len, &rest), KEEL_H1_CK_BAD);
    KT_EQ_INT(decode("fffffffffffffff\r\n", 64, out, &len, &rest), KEEL_H1_CK_MORE); /* 15 ok */
}

int main(void)
{
    KT_RUN(parses_a_request_head);
    KT_RUN(finds_a_head_fed_one_byte_at_a_time);
    KT_RUN(refuses_request_smuggling_shapes);
    KT_RUN(answers_each_limit_with_its_status);
    KT_RUN(frames_responses_by_rfc_9112_section_6_3);
    KT_RUN(decodes_chunked_bodies_split_anywhere);
    KT_RUN(refuses_bad_chunks);
    return kt_done();
}
