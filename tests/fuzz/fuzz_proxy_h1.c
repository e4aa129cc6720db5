/* fuzz_proxy_h1.c - libFuzzer target: keel proxy's HTTP/1.1 head parser and chunked decoder,
 * and the upgrade check on a parsed request (proxy_tunnel.c). */
#include "base/buf.h"
#include "proxy/config.h"
#include "proxy/h1.h"
#include "proxy/proxy_conn_int.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Byte 0 picks request or response and a limits profile (small limits reach 414/431 from
 * short inputs); byte 1 the piece size for incremental feeding. The head is searched piece by
 * piece as a connection would; a parsed head's spans must lie inside it; what follows the head
 * goes through the chunked decoder piece by piece, and decoded spans must lie inside each piece.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool response = data[0] & 1;
    keel_h1_limits_t lim =
        (data[0] & 2) ? (keel_h1_limits_t){16, 128, 4} : (keel_h1_limits_t){8192, 16384, 100};
    size_t step = (size_t)data[1] + 1;
    const char *buf = (const char *)data + 2;
    size_t n = size - 2, scan = 0, end = 0;
    for (size_t have = step < n ? step : n; end == 0; have = have + step < n ? have + step : n) {
        end = keel_h1_head_end(buf, have, &scan);
        if (end == 0 && !response)
            (void)keel_h1_request_overflow(buf, have, &lim);
        if (have == n)
            break;
    }
    if (end == 0)
        return 0;
    assert(end <= n);
    static keel_h1_head_t h;
    int st = response ? keel_h1_parse_response(buf, end, &lim, data[0] & 4, &h)
                      : keel_h1_parse_request(buf, end, &lim, &h);
    if (st != 0) {
        assert(st == 400 || st == 414 || st == 431 || st == 501 || st == 502);
        return 0;
    }
    assert(h.fields_count <= lim.headers_count_max || response);
    for (uint32_t i = 0; i < h.fields_count; i++) {
        assert(h.fields[i].name.off + h.fields[i].name.len <= end);
        assert(h.fields[i].value.off + h.fields[i].value.len <= end);
        (void)keel_h1_is_hop_by_hop(buf, &h, h.fields[i].name);
    }
    if (!response) { /* a route that passes two protocols: an upgrade's fields go upstream */
        static char ws[] = "websocket", h2c[] = "h2c";
        static keel_proxy_route_t r = {.upgrades = {ws, h2c}, .upgrades_count = 2};
        const char *proto = keel__upgrade_requested(&r, buf, &h);
        assert(proto == NULL || proto == ws || proto == h2c);
        if (proto != NULL) {
            keel_buf_t o;
            keel_buf_init(&o, 0);
            if (keel__upgrade_append_fields(&o, buf, &h) == 0) { /* two whole lines */
                const char *p = (const char *)keel_buf_rptr(&o);
                size_t len = keel_buf_unread(&o), lines = 0;
                for (size_t i = 0; i < len; i++) {
                    assert(p[i] != '\0' && (p[i] != '\r' || (i + 1 < len && p[i + 1] == '\n')));
                    assert(p[i] != '\n' || (i > 0 && p[i - 1] == '\r'));
                    lines += p[i] == '\n';
                }
                assert(lines == 2 && len >= 2 && p[len - 1] == '\n');
            }
            keel_buf_free(&o);
        }
    }
    keel_h1_chunked_t c;
    keel_h1_chunked_init(&c);
    const uint8_t *body = (const uint8_t *)buf + end;
    size_t left = n - end;
    while (left > 0) {
        size_t piece = step < left ? step : left, used, off, len;
        int ev = keel_h1_chunked_feed(&c, body, piece, &used, &off, &len);
        assert(used <= piece);
        if (ev == KEEL_H1_CK_BODY)
            assert(off + len <= used);
        if (ev == KEEL_H1_CK_END || ev == KEEL_H1_CK_BAD)
            break;
        assert(used > 0);
        body += used;
        left -= used;
    }
    return 0;
}
