/* cors.h - a route's CORS policy applied to a request: pure functions (no socket, clock, file). */
#ifndef KEEL_PROXY_CORS_H
#define KEEL_PROXY_CORS_H

#include "base/buf.h"
#include "proxy/config.h"
#include "proxy/route.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The CORS protocol of the Fetch standard, as Envoy's CORS filter applies it per route:
 *  - a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered by the
 *    proxy: allowed, a 204 with the Access-Control-Allow-* fields; refused, a 403 without them
 *    (docs/proxy.md says why). Nothing goes upstream either way.
 *  - any other request goes upstream as usual; when its Origin is allowed, the answer gets
 *    Access-Control-Allow-Origin (and -Allow-Credentials, -Expose-Headers). A refused origin
 *    gets nothing: the browser keeps the response from the page.
 * Every answer of a CORS route carries `Vary: Origin`, since it depends on the Origin field.
 */

/* What keel_proxy_cors_origin() found: no allowed origin, one listed (1 + its index), or "*". */
#define KEEL_PROXY_CORS_NONE 0u
#define KEEL_PROXY_CORS_ANY UINT32_MAX

typedef enum keel_proxy_cors_verdict {
    KEEL_PROXY_CORS_ALLOWED,
    KEEL_PROXY_CORS_BAD_ORIGIN,  /* no Origin field, or one not allowed */
    KEEL_PROXY_CORS_BAD_METHOD,  /* Access-Control-Request-Method not allowed */
    KEEL_PROXY_CORS_BAD_HEADERS, /* an Access-Control-Request-Headers name not allowed */
} keel_proxy_cors_verdict_t;

/* Whether req is a preflight; *method (may be NULL) gets its Access-Control-Request-Method. */
bool keel_proxy_cors_is_preflight(const keel_proxy_req_view_t *req, const char **method,
                                  size_t *method_len);

/* The request's Origin against the policy: KEEL_PROXY_CORS_NONE, 1 + the listed origin's index
 * (an exact, byte-for-byte match), or KEEL_PROXY_CORS_ANY ("*" listed and no exact match). */
uint32_t keel_proxy_cors_origin(const keel_proxy_cors_t *co, const keel_proxy_req_view_t *req);

/*
 * Judges a preflight and appends the answer's fields ("Name: value\r\n" lines) to out: on
 * ALLOWED Access-Control-Allow-Origin, -Allow-Methods (the listed methods; the requested one
 * when none are listed), -Allow-Headers (the requested names, when there are any),
 * -Max-Age and -Allow-Credentials when set; always Vary: Origin. A requested method passes
 * when listed, or when it is GET, HEAD or POST (CORS-safelisted: a browser sends them anyway);
 * each requested header name must be listed (or "*" listed). A buffer error (out full) is
 * returned through *rc (0 when none).
 */
keel_proxy_cors_verdict_t keel_proxy_cors_preflight(const keel_proxy_cors_t *co,
                                                    const keel_proxy_req_view_t *req,
                                                    keel_buf_t *out, int *rc);

/* Appends the fields of a non-preflight answer for an origin match from keel_proxy_cors_origin:
 * Vary: Origin always, the rest when match is not KEEL_PROXY_CORS_NONE. 0 or a buffer error. */
int keel_proxy_cors_actual(const keel_proxy_cors_t *co, uint32_t match, keel_buf_t *out);

/* The outcome label for /metrics (keel_proxy_cors_total{outcome}). */
const char *keel_proxy_cors_verdict_name(keel_proxy_cors_verdict_t v);

#endif
