/* fuzz_req.h - the request the proxy fuzzers (fuzz_proxy_route, fuzz_proxy_cors) read from
   their input: `lines` lines (the method, the target, ...), then "name:value" lines as header
   fields, at most FUZZ_REQ_HEADERS_MAX of them. */
#ifndef KEEL_TESTS_FUZZ_REQ_H
#define KEEL_TESTS_FUZZ_REQ_H

#include "proxy/route.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FUZZ_REQ_HEADERS_MAX 16

/* Fills part[0..lines) and len[] ("" when the input ends first) and hv[0..*nh). */
static inline void fuzz_req_read(const uint8_t *data, size_t size, int lines, const char **part,
                                 size_t *len, keel_proxy_header_view_t *hv, size_t *nh)
{
    const char *p = (const char *)data, *end = p + size;
    for (int i = 0; i < lines; i++) {
        part[i] = "";
        len[i] = 0;
    }
    for (int i = 0; i < lines && p < end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        part[i] = p;
        len[i] = (size_t)((nl ? nl : end) - p);
        p = nl ? nl + 1 : end;
    }
    *nh = 0;
    while (p < end && *nh < FUZZ_REQ_HEADERS_MAX) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL)
            hv[(*nh)++] = (keel_proxy_header_view_t){p, (size_t)(colon - p), colon + 1,
                                                     (size_t)(le - colon - 1)};
        p = nl ? nl + 1 : end;
    }
}

#endif
