/* fuzz_http.c - libFuzzer target: arbitrary bytes through the HTTP request parser path. */
#include "proto/http.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The first two bytes choose a split point, a limits profile and request or response; the rest is
 * fed in two pieces the way a server's read loop would: every complete message
 * is consumed and the remainder fed again, until an error or no progress.
 * Small limits make the 413/414/431 paths reachable from short inputs.
 */
static void feed_all(keel_http_parser_t *p, keel_http_msg_t *m, const uint8_t *d, size_t n)
{
    while (n > 0) {
        size_t used = 0;
        int ev = keel_http_parser_feed(p, m, d, n, &used);
        if (ev == KEEL_HTTP_ERROR)
            return;
        if (ev == KEEL_HTTP_MESSAGE) {
            /* touch what a handler would read */
            volatile size_t sink = m->url_len + m->path_len + m->query_len + m->body_len;
            for (size_t i = 0; i < m->headers_count; i++)
                sink += m->headers[i].name_len + m->headers[i].value_len + (m->headers[i].name[0]);
            (void)sink;
            (void)keel_http_msg_header(m, "host", NULL);
        }
        if (used == 0 && ev != KEEL_HTTP_MESSAGE)
            return;
        d += used;
        n -= used;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = data[0];
    int profile = data[1] & 1, kind = data[1] & 2;
    data += 2;
    size -= 2;
    if (split > size)
        split = size;
    keel_http_limits_t lim = keel_http_limits_default();
    if (profile) {
        lim.url_bytes_max = 32;
        lim.headers_bytes_max = 128;
        lim.headers_count_max = 4;
        lim.body_bytes_max = 16;
    }
    keel_http_parser_t p;
    keel_http_msg_t m;
    keel_http_parser_init(&p, kind ? KEEL_HTTP_RESPONSE : KEEL_HTTP_REQUEST, &lim);
    keel_http_msg_init(&m);
    feed_all(&p, &m, data, split);
    feed_all(&p, &m, data + split, size - split);
    (void)keel_http_parser_finish(&p, &m);
    keel_http_msg_free(&m);
    return 0;
}
