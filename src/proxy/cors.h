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

/* What keel_proxy_cors_origin() found: no allowed origin, one listed (1 + its index), one a
 * pattern matched (its Access-Control-Allow-Origin echoes the request's Origin), or "*". */
#define KEEL_PROXY_CORS_NONE 0u
#define KEEL_PROXY_CORS_ECHO (UINT32_MAX - 1u)
#define KEEL_PROXY_CORS_ANY UINT32_MAX

/* A request's Origin judged against a policy. Owned by the caller (an exchange embeds one, so
 * a pattern match costs no allocation); echo is bounded by KEEL_PROXY_CORS_ORIGIN_BYTES_MAX. */
typedef struct keel_proxy_cors_match {
    uint32_t match; /* KEEL_PROXY_CORS_NONE, 1 + a listed origin's index, _ECHO or _ANY */
    char echo[KEEL_PROXY_CORS_ORIGIN_BYTES_MAX]; /* ECHO: the request's Origin, NUL-terminated */
} keel_proxy_cors_match_t;

typedef enum keel_proxy_cors_verdict {
    KEEL_PROXY_CORS_ALLOWED,
    KEEL_PROXY_CORS_BAD_ORIGIN,  /* no Origin field, or one not allowed */
    KEEL_PROXY_CORS_BAD_METHOD,  /* Access-Control-Request-Method not allowed */
    KEEL_PROXY_CORS_BAD_HEADERS, /* an Access-Control-Request-Headers name not allowed */
    /* allowed, but it asked Access-Control-Request-Private-Network: true and the route does not
     * grant it: answered like ALLOWED (a 204) without Access-Control-Allow-Private-Network, as
     * Envoy does (docs/proxy.md says why it is not a 403) */
    KEEL_PROXY_CORS_PRIVATE_NETWORK_NOT_ALLOWED,
} keel_proxy_cors_verdict_t;

/* Whether a preflight with verdict v is answered 204 (with the allow fields), not 403. */
bool keel_proxy_cors_verdict_answered(keel_proxy_cors_verdict_t v);

/* Whether req is a preflight; *method (may be NULL) gets its Access-Control-Request-Method. */
bool keel_proxy_cors_is_preflight(const keel_proxy_req_view_t *req, const char **method,
                                  size_t *method_len);

/* Whether s[0..n) is a serialized origin a pattern may echo (the Fetch standard's, as browsers
 * send it): "http" or "https" (any case) "://", a host of DNS labels (letters, digits, '-',
 * '_'; 1..63 bytes each, dot-separated) or an IPv6 literal in brackets, an optional ":port"
 * (1..65535), nothing else; under KEEL_PROXY_CORS_ORIGIN_BYTES_MAX bytes. */
bool keel_proxy_cors_origin_valid(const char *s, size_t n);

/* The request's Origin against the policy, into *m (also returned as m->match): NONE; 1 + the
 * listed origin's index (an exact, byte-for-byte match); ECHO when a pattern matched a valid
 * origin (scheme and host compared in any case), the Origin copied into m->echo; or ANY ("*"
 * listed and nothing above matched). */
uint32_t keel_proxy_cors_origin(const keel_proxy_cors_t *co, const keel_proxy_req_view_t *req,
                                keel_proxy_cors_match_t *m);

/*
 * Judges a preflight and appends the answer's fields ("Name: value\r\n" lines) to out: on
 * ALLOWED Access-Control-Allow-Origin, -Allow-Methods (the listed methods; the requested one
 * when none are listed or "*" is), -Allow-Headers (the requested names, when there are any),
 * -Max-Age and -Allow-Credentials when set, and -Allow-Private-Network: true when the request
 * asks it (Access-Control-Request-Private-Network: true, any case; another value asks nothing)
 * and the policy allows it; always Vary: Origin. Asked of a policy that does not allow it, the
 * verdict is PRIVATE_NETWORK_NOT_ALLOWED with the same fields, the grant left out. A requested
 * method (a token) passes when listed, when "*" is listed, or when it is GET, HEAD or POST
 * (CORS-safelisted: a browser sends them anyway); each requested header name must be listed (or
 * "*" listed). A buffer error (out full) is returned through *rc (0 when none).
 */
keel_proxy_cors_verdict_t keel_proxy_cors_preflight(const keel_proxy_cors_t *co,
                                                    const keel_proxy_req_view_t *req,
                                                    keel_buf_t *out, int *rc);

/* Appends the fields of a non-preflight answer for m from keel_proxy_cors_origin: Vary: Origin
 * always, the rest when m->match is not KEEL_PROXY_CORS_NONE. 0 or a buffer error. */
int keel_proxy_cors_actual(const keel_proxy_cors_t *co, const keel_proxy_cors_match_t *m,
                           keel_buf_t *out);

/* The outcome label for /metrics (keel_proxy_cors_total{outcome}). */
const char *keel_proxy_cors_verdict_name(keel_proxy_cors_verdict_t v);

#endif
