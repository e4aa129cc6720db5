/* config.h - keel proxy's configuration: a pure function from YAML text to a checked struct. */
#ifndef KEEL_PROXY_CONFIG_H
#define KEEL_PROXY_CONFIG_H

#include "base/ktime.h"
#include "core/rollout.h"

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * keel_proxy_config_parse() reads one YAML document (docs/proxy.md has the
 * full schema and an example) and either fills a keel_proxy_config_t or
 * collects every error it finds, each with the line it is on, so
 * `keel proxy --check` can list them all at once. It touches no file, socket
 * or clock (the fuzz target feeds it arbitrary bytes). Regular expressions are
 * compiled here (POSIX extended, regcomp), so a bad one is a config error and
 * matching never fails at run time.
 *
 * Every list has a named ceiling below; a config over one is refused.
 */

#define KEEL_PROXY_CONFIG_BYTES_MAX (1u << 20)
#define KEEL_PROXY_LISTENERS_MAX 16u
#define KEEL_PROXY_WORKERS_MAX 64u /* event-loop threads (`workers`) */
#define KEEL_PROXY_CLUSTERS_MAX 64u
#define KEEL_PROXY_HOSTS_MAX 64u /* per cluster */
#define KEEL_PROXY_ROUTES_MAX 256u
#define KEEL_PROXY_MATCH_FIELDS_MAX 8u /* header or query conditions per route */
#define KEEL_PROXY_METHODS_MAX 8u
#define KEEL_PROXY_HEADER_EDITS_MAX 8u /* per list (add or remove, request or response) */
#define KEEL_PROXY_WEIGHTED_MAX 8u     /* weighted clusters per route */
#define KEEL_PROXY_STATUSES_MAX 8u     /* retry_on status codes */
#define KEEL_PROXY_ATTEMPTS_MAX 10u    /* ceiling of retry.attempts_max (first try included) */
#define KEEL_PROXY_NAME_BYTES_MAX 64u
#define KEEL_PROXY_VALUE_BYTES_MAX 1024u /* any string value */
#define KEEL_PROXY_ERRORS_MAX 32u
#define KEEL_PROXY_ERROR_BYTES_MAX 200u
#define KEEL_PROXY_WEIGHT_MAX 10000u
#define KEEL_PROXY_JWT_PROVIDERS_MAX 8u
#define KEEL_PROXY_JWT_AUDIENCES_MAX 8u
#define KEEL_PROXY_JWT_CLAIM_HEADERS_MAX 8u /* claims_to_headers per provider */
#define KEEL_PROXY_JWT_FROM_MAX 4u          /* from_headers, and from_params, per provider */
#define KEEL_PROXY_JWT_SKEW_S_MAX 3600u
/* remote_jwks (Envoy's remote_jwks): the bounds of its settings, and their defaults. */
#define KEEL_PROXY_JWKS_TIMEOUT_MS_MAX 60000u /* timeout_ms: one fetch, whole */
#define KEEL_PROXY_JWKS_TIMEOUT_MS_DEFAULT 1000u
#define KEEL_PROXY_JWKS_CACHE_MS_MIN 1000u       /* cache_duration_ms: a refresh period */
#define KEEL_PROXY_JWKS_CACHE_MS_DEFAULT 300000u /* Envoy's cache_duration: 5 minutes */
#define KEEL_PROXY_JWKS_BACKOFF_MS_MIN 100u      /* retry_backoff_base_ms, _cap_ms */
#define KEEL_PROXY_JWKS_BACKOFF_MS_MAX 3600000u
#define KEEL_PROXY_JWKS_BACKOFF_BASE_MS_DEFAULT 1000u /* Envoy's failed_refetch_duration */
#define KEEL_PROXY_JWKS_BACKOFF_CAP_MS_DEFAULT 30000u
#define KEEL_PROXY_JWKS_PATH_BYTES_MAX 1024u /* remote_jwks.path, NUL included */
#define KEEL_PROXY_TEMPLATE_PARAMS_MAX 8u    /* {name} segments in a path template */
#define KEEL_PROXY_AGG_PARTS_MAX 8u          /* upstream calls of one aggregate route */
#define KEEL_PROXY_AGG_FORWARD_MAX 8u        /* client fields an aggregate forwards to its parts */
#define KEEL_PROXY_AGG_PART_BYTES_CEILING (4u << 20) /* ceiling of part_bytes_max */
#define KEEL_PROXY_AGG_PATH_BYTES_MAX 2048u          /* a part's path once its template is filled */
#define KEEL_PROXY_RETRY_BUFFER_BYTES_MAX (16u << 20) /* ceiling of limits.retry_buffer_bytes */
#define KEEL_PROXY_CORS_ORIGINS_MAX 16u /* allow_origins (origins and patterns) per route */
#define KEEL_PROXY_CORS_HEADERS_MAX 16u /* allow_headers, and expose_headers, per route */
/* an origin, a pattern, and a request's Origin echoed by a pattern match, NUL included:
 * "https://" + a DNS name (253) + ":65535" */
#define KEEL_PROXY_CORS_ORIGIN_BYTES_MAX 300u
#define KEEL_PROXY_CORS_MAX_AGE_S_MAX 86400u /* browsers cap it lower (Firefox 24 h) */
#define KEEL_PROXY_TRACE_BATCH_MAX 1000u     /* ceiling of tracing.batch_max (spans per POST) */
#define KEEL_PROXY_TRACE_QUEUE_MAX 100000u   /* ceiling of tracing.queue_max (per worker) */
#define KEEL_PROXY_TRACE_FLUSH_MS_MIN 100u   /* tracing.flush_ms: the housekeeping tick */
#define KEEL_PROXY_TRACE_FLUSH_MS_MAX 60000u
#define KEEL_PROXY_TRACE_PPM 1000000u /* sample_percent is kept in parts per million */

typedef struct keel_proxy_error {
    int line; /* 1-based; 0 when the error is not tied to a line */
    char text[KEEL_PROXY_ERROR_BYTES_MAX];
} keel_proxy_error_t;

typedef struct keel_proxy_errors {
    uint32_t count;   /* errors kept */
    uint32_t dropped; /* errors past KEEL_PROXY_ERRORS_MAX */
    keel_proxy_error_t e[KEEL_PROXY_ERRORS_MAX];
} keel_proxy_errors_t;

/* Adds an error at a line (past KEEL_PROXY_ERRORS_MAX it only counts it): for the checks made
 * after the file is read (the JWKS and TLS files it names). */
void keel_proxy_errors_add(keel_proxy_errors_t *errs, int line, const char *text);

/* Limits on what clients may send and how long they may take (each answered with its status). */
typedef struct keel_proxy_limits {
    uint32_t uri_bytes_max;             /* 414; default 8192 */
    uint32_t header_bytes_max;          /* whole head; 431; default 16384 */
    uint32_t header_count_max;          /* 431; default 100 */
    uint64_t body_bytes_max;            /* request body; 413; default 64 MiB; 0 = no limit */
    keel_ms_t header_timeout_ms;        /* first byte to end of head (slowloris); 408; 10000 */
    keel_ms_t client_idle_timeout_ms;   /* between keep-alive requests and while a body stalls;
                                           60000 */
    keel_ms_t upstream_idle_timeout_ms; /* a streaming upstream body that stalls; 60000 */
    uint32_t buffer_bytes_max;   /* unsent bytes queued toward one side before the other side's
                                    reads pause (backpressure); default 65536 */
    uint32_t connections_max;    /* client connections; over it new ones are closed; 10000 */
    uint32_t retry_buffer_bytes; /* a request body up to this size is kept while it goes
                                    upstream, so a failed attempt can be replayed on another
                                    host; larger bodies stream unkept and are not retried once
                                    sent; 0 keeps none; default 65536 */
} keel_proxy_limits_t;

/* TLS on a listener (docs/proxy.md, "TLS"): the proxy speaks HTTPS there with this certificate
 * chain and key, PEM files read by proxy/proxy_tls.h each time the config is loaded or reloaded
 * (the parser touches no file). */
typedef struct keel_proxy_tls_server {
    bool enabled;
    int line;                /* of the tls section */
    char *cert_file;         /* the certificate, then its intermediates */
    char *key_file;          /* its private key (unencrypted) */
    int cert_line, key_line; /* for errors found when the files load */
} keel_proxy_tls_server_t;

#define KEEL_PROXY_SERVER_NAME_BYTES_MAX 254u /* a DNS name (253) and the NUL */

/* TLS toward a cluster's hosts. */
typedef struct keel_proxy_tls_client {
    bool enabled;
    int line;
    char *ca_file; /* PEM CA certificates the hosts' certificates must chain to; NULL: the
                      system's */
    int ca_line;
    char *server_name; /* sent as SNI and required in the certificate; NULL: no SNI, and the
                          certificate must carry the host's IP address */
    bool verify;       /* default true; false accepts any certificate (tests, not production) */
} keel_proxy_tls_client_t;

typedef struct keel_proxy_listener {
    char *name;
    char *address; /* "127.0.0.1:8080" */
    int line;
    keel_proxy_tls_server_t tls;
} keel_proxy_listener_t;

typedef struct keel_proxy_host {
    char *address; /* "127.0.0.1:9001" */
    uint32_t weight;
} keel_proxy_host_t;

typedef enum keel_proxy_hash_on {
    KEEL_PROXY_HASH_NONE,
    KEEL_PROXY_HASH_HEADER,
    KEEL_PROXY_HASH_SOURCE,
} keel_proxy_hash_on_t;

typedef struct keel_proxy_health {
    bool enabled;
    bool tcp;   /* a TCP connect is the check (no request); else GET path */
    char *path; /* NULL with tcp */
    keel_ms_t interval_ms, timeout_ms;
    uint32_t healthy_threshold, unhealthy_threshold;
} keel_proxy_health_t;

typedef struct keel_proxy_cluster {
    char *name;
    int line;
    keel_proxy_host_t hosts[KEEL_PROXY_HOSTS_MAX];
    uint32_t hosts_count; /* 0 for a service cluster */
    /* A service cluster (instead of hosts): the passing instances of `service` (with `tag`)
     * in keel server's registry, followed without a reload (kit/discovery.h). registry is the
     * top-level `registry` seed list, copied here so a cluster's config is whole on its own. */
    char *service;
    char *tag;      /* NULL: any */
    char *registry; /* "host:port,host:port" */
    char *zone;     /* the top-level zone, for service clusters; NULL: none */
    char *balance;  /* a core/balance policy name */
    keel_proxy_hash_on_t hash_on;
    char *hash_header; /* lower-case, for HASH_HEADER */
    keel_ms_t connect_timeout_ms;
    /* pool */
    uint32_t idle_max;              /* idle connections kept per host */
    uint32_t requests_per_conn_max; /* 0: unlimited */
    keel_ms_t idle_timeout_ms;      /* an idle pooled connection is closed after it */
    uint32_t max_requests;          /* bulkhead: active requests; 0 = unlimited */
    /* breaker (core/breaker) */
    bool breaker_enabled;
    uint32_t breaker_failure_rate_pct, breaker_calls_min, breaker_window_calls,
        breaker_consecutive_failures, breaker_probes;
    keel_ms_t breaker_open_ms;
    uint32_t breaker_slow_call_rate_pct; /* 0: slow calls do not trip it */
    keel_ms_t breaker_slow_call_ms;
    /* outlier detection (core/outlier) */
    bool outlier_enabled;
    uint32_t outlier_consecutive_5xx, outlier_consecutive_gateway, outlier_consecutive_local,
        outlier_max_ejection_pct;
    keel_ms_t outlier_interval_ms, outlier_base_ejection_ms, outlier_max_ejection_ms;
    uint32_t outlier_sr_stdev_factor; /* thousandths; 0: no success-rate ejection */
    uint32_t outlier_sr_minimum_hosts, outlier_sr_request_volume;
    keel_proxy_health_t health;
    /* slow start (core/balance.h): a host that joins or comes back ramps up over window_ms */
    bool slow_start_enabled;
    keel_ms_t slow_start_window_ms; /* 0: off */
    uint32_t slow_start_min_weight_pct;
    uint32_t slow_start_aggression; /* thousandths; 1000: linear */
    int slow_start_line;            /* of the section, for errors found once the cluster is read */
    keel_proxy_tls_client_t tls;
} keel_proxy_cluster_t;

typedef enum keel_proxy_path_kind {
    KEEL_PROXY_PATH_ANY,
    KEEL_PROXY_PATH_EXACT,
    KEEL_PROXY_PATH_PREFIX,
    KEEL_PROXY_PATH_REGEX,
    KEEL_PROXY_PATH_TEMPLATE, /* "/orders/{id}/full": each {name} is one non-empty segment */
} keel_proxy_path_kind_t;

/* A condition on a header or query parameter: present, absent, equal to value, or matching. */
typedef struct keel_proxy_field_match {
    char *name;  /* headers: lower-case */
    char *value; /* NULL: presence only */
    bool absent; /* the field must not be there */
    bool has_regex;
    regex_t regex;
} keel_proxy_field_match_t;

typedef struct keel_proxy_header_edit {
    char *name;
    char *value; /* NULL in remove lists */
} keel_proxy_header_edit_t;

typedef struct keel_proxy_weighted {
    uint32_t cluster; /* index into clusters */
    uint32_t weight;
} keel_proxy_weighted_t;

typedef enum keel_proxy_action {
    KEEL_PROXY_ACTION_FORWARD,
    KEEL_PROXY_ACTION_DIRECT,
    KEEL_PROXY_ACTION_REDIRECT,
    KEEL_PROXY_ACTION_AGGREGATE,
} keel_proxy_action_t;

/* One upstream call of an aggregate route: its JSON body becomes the field `name`. */
typedef struct keel_proxy_agg_part {
    char *name;
    int line;
    char *cluster_name;
    uint32_t cluster;     /* index into clusters */
    char *path;           /* "/orders/{id}", {param} of the route's template or {header:NAME} */
    keel_ms_t timeout_ms; /* the whole call; default 1000 */
    bool required;        /* failing it fails the request (502, 504, or its own 4xx) */
} keel_proxy_agg_part_t;

/* An aggregate route: the parts are called at once and their bodies merged into one object. */
typedef struct keel_proxy_aggregate {
    keel_proxy_agg_part_t parts[KEEL_PROXY_AGG_PARTS_MAX];
    uint32_t parts_count;
    char *forward_headers[KEEL_PROXY_AGG_FORWARD_MAX]; /* lower-case client fields sent along */
    uint32_t forward_count;
    uint32_t part_bytes_max; /* a larger part body is a failed part; default 65536 */
} keel_proxy_aggregate_t;

#define KEEL_PROXY_RETRY_ON_CONNECT 1u
#define KEEL_PROXY_RETRY_ON_RESET 2u
#define KEEL_PROXY_RETRY_ON_TIMEOUT 4u
#define KEEL_PROXY_RETRY_ON_5XX 8u
#define KEEL_PROXY_RETRY_ON_GATEWAY 16u

typedef struct keel_proxy_retry {
    uint32_t attempts_max; /* first try included; 1 = no retries */
    unsigned retry_on;     /* KEEL_PROXY_RETRY_ON_* */
    int statuses[KEEL_PROXY_STATUSES_MAX];
    uint32_t statuses_count;
    bool idempotent_only;
    /* a request carrying this field (lower-case; NULL: none) is retried like an idempotent one:
     * the upstream deduplicates it by the key (Stripe's and the IETF draft's Idempotency-Key);
     * default "idempotency-key" */
    char *idempotency_header;
    keel_ms_t backoff_base_ms, backoff_cap_ms;
    uint32_t budget_pct; /* retries in flight <= pct% of active requests ... */
    uint32_t budget_min; /* ... or this many, whichever is larger; pct 0: no budget */
} keel_proxy_retry_t;

typedef enum keel_proxy_rl_key {
    KEEL_PROXY_RL_SOURCE,
    KEEL_PROXY_RL_HEADER,
    KEEL_PROXY_RL_CLAIM, /* a claim of the route's verified JWT */
} keel_proxy_rl_key_t;

/* A route's `upgrades:` (Envoy's upgrade_configs): at most this many protocols, each a token
 * shorter than KEEL_PROXY_UPGRADE_NAME_BYTES_MAX; a tunnel's idle timeout is at most a day. */
#define KEEL_PROXY_ROUTE_UPGRADES_MAX 4u
#define KEEL_PROXY_UPGRADE_NAME_BYTES_MAX 32u
#define KEEL_PROXY_UPGRADE_IDLE_TIMEOUT_MS_DEFAULT 3600000u

/* A route's rate limits (`rate_limit:` one mapping or a list of them): a request passes only
 * if every one has a token for it. */
#define KEEL_PROXY_ROUTE_RATE_LIMITS_MAX 4u

typedef struct keel_proxy_ratelimit {
    bool enabled;
    keel_proxy_rl_key_t key;
    char *header; /* lower-case, for RL_HEADER; the claim's name (as written) for RL_CLAIM */
    uint64_t requests_per_s;
    uint64_t burst;
    uint32_t keys_max;
} keel_proxy_ratelimit_t;

/* One claim of a verified token sent upstream as a request header (Envoy's claim_to_headers). */
typedef struct keel_proxy_claim_header {
    char *claim;  /* a top-level claim: a string, an integer or a boolean */
    char *header; /* lower-case field name */
} keel_proxy_claim_header_t;

/* Where a token may be (Envoy's JwtHeader): a field, its value after value_prefix. */
typedef struct keel_proxy_jwt_from_header {
    char *name;         /* lower case */
    char *value_prefix; /* NULL or "": the whole value */
} keel_proxy_jwt_from_header_t;

/*
 * A provider's keys fetched from a cluster (Envoy's remote_jwks: http_uri {uri, cluster,
 * timeout}, cache_duration, and async_fetch's failed_refetch_duration as the backoff): GET path
 * on a host the cluster's balancer picks, when the config loads and every cache_duration_ms;
 * a failed fetch keeps the keys in force and is tried again after retry_backoff_base_ms,
 * doubling up to retry_backoff_cap_ms (proxy/auth.h, keel_proxy_jwks_next_ms). Plain HTTP: a
 * cluster with tls is refused (the proxy's HTTP client does not speak TLS).
 */
typedef struct keel_proxy_remote_jwks {
    bool enabled;
    int line; /* of `cluster` (of the section until it is read) */
    char *cluster_name;
    uint32_t cluster;     /* index into clusters, resolved once every cluster is known */
    char *path;           /* the request target: "/" then no space, control character or '#' */
    keel_ms_t timeout_ms; /* default 1000, 1..KEEL_PROXY_JWKS_TIMEOUT_MS_MAX */
    keel_ms_t cache_duration_ms; /* default 300000 (Envoy's 5 min), at least 1000, a day most */
    keel_ms_t retry_backoff_base_ms, retry_backoff_cap_ms; /* defaults 1000 and 30000 */
} keel_proxy_remote_jwks_t;

/*
 * A JWT provider (Envoy's jwt_authn provider): who issues the tokens, for whom, and the keys
 * that verify them. Routes name a provider in their `jwt:` requirement. The keys are not read
 * by the parser (it touches no file): keel_proxy_auth_load() (proxy/auth.h) reads jwks_file,
 * or parses the inline jwks, each time the config is loaded or reloaded; a remote_jwks is
 * fetched by the running proxy (proxy_jwks.c), never by the parser or --check.
 */
typedef struct keel_proxy_jwt_provider {
    char *name;
    int line;
    char *issuer;                                  /* NULL: any "iss" */
    char *audiences[KEEL_PROXY_JWT_AUDIENCES_MAX]; /* "aud" must hold one of them; none: any */
    uint32_t audiences_count;
    char *jwks_file;                      /* a JWKS document (RFC 7517) read at load and reload */
    char *jwks;                           /* or the document inline */
    keel_proxy_remote_jwks_t remote_jwks; /* or fetched from a cluster */
    int jwks_line; /* where jwks_file, jwks or remote_jwks is, for errors found when keys load */
    uint32_t clock_skew_s; /* leeway on exp and nbf; default 60 (Envoy's) */
    bool require_exp;      /* a token without "exp" is refused; default true */
    bool forward;          /* Authorization goes upstream; default false (Envoy's) */
    keel_proxy_claim_header_t claims_to_headers[KEEL_PROXY_JWT_CLAIM_HEADERS_MAX];
    uint32_t claims_to_headers_count;
    /* Where the token is (Envoy's from_headers, from_params). Neither given: Envoy's default
       places, `Authorization: Bearer <token>` and the query parameter access_token. Given: only
       those. A request with a token in more than one place is refused. */
    keel_proxy_jwt_from_header_t from_headers[KEEL_PROXY_JWT_FROM_MAX];
    uint32_t from_headers_count;
    char *from_params[KEEL_PROXY_JWT_FROM_MAX];
    uint32_t from_params_count;
} keel_proxy_jwt_provider_t;

/* A route's requirement: a valid token of the provider; with required false, a request
 * without any token passes too (Envoy's allow_missing), but a bad token is still refused. */
typedef struct keel_proxy_jwt_req {
    bool enabled;
    uint32_t provider; /* index into jwt_providers */
    bool required;     /* default true */
} keel_proxy_jwt_req_t;

/*
 * A route's CORS policy (docs/proxy.md, "CORS"; the Fetch standard's CORS protocol): which
 * origins may read its responses, and the methods and headers a preflight may ask for. The
 * proxy answers a preflight itself and adds the Access-Control-* fields to the answers of the
 * others. Off (NULL in the route) unless the route has a `cors:` section or, without one, the
 * top level has one (the default every such route inherits; `cors: off` on a route opts out).
 */
typedef enum keel_proxy_cors_pattern_kind {
    KEEL_PROXY_CORS_SUBDOMAIN, /* scheme "://" "*.host" [":port"]: that scheme and port, a host
                                  under .host (one label or more before it) */
    KEEL_PROXY_CORS_PREFIX,    /* {prefix: ...}: the origin starts with text */
    KEEL_PROXY_CORS_SUFFIX,    /* {suffix: ...}: the origin ends with text */
    KEEL_PROXY_CORS_REGEX,     /* {regex: ...}: POSIX extended, the whole origin, any case */
} keel_proxy_cors_pattern_kind_t;

/* An allow_origins entry that matches more than one origin (Envoy's allow_origin_string_match).
 * A match answers with the request's own Origin, checked to be a serialized origin first. */
typedef struct keel_proxy_cors_pattern {
    keel_proxy_cors_pattern_kind_t kind;
    char *text; /* as written, lower-cased (REGEX: as written) */
    /* SUBDOMAIN: text is scheme, "://", '*', suffix, port; the suffix starts with '.' and port is
     * "" or ":digits" (the rest of text) */
    uint32_t scheme_len, suffix_off, suffix_len;
    regex_t regex; /* REGEX: text, compiled with REG_ICASE; a match spans the whole origin */
} keel_proxy_cors_pattern_t;

typedef struct keel_proxy_cors {
    int line;
    char *origins[KEEL_PROXY_CORS_ORIGINS_MAX]; /* serialized origins, "https://shop.example" */
    uint32_t origins_count;
    /* origins and patterns together: at most KEEL_PROXY_CORS_ORIGINS_MAX */
    keel_proxy_cors_pattern_t patterns[KEEL_PROXY_CORS_ORIGINS_MAX];
    uint32_t patterns_count;
    bool any_origin; /* "*" was listed: any origin (never with allow_credentials) */
    char *methods[KEEL_PROXY_METHODS_MAX]; /* upper-case tokens; GET, HEAD, POST always pass */
    uint32_t methods_count;
    bool any_method; /* "*" was listed: any method (a preflight's answer names the one asked) */
    char *allow_headers[KEEL_PROXY_CORS_HEADERS_MAX]; /* lower-case field names */
    uint32_t allow_headers_count;
    bool any_header;                                   /* "*" was listed: any requested field */
    char *expose_headers[KEEL_PROXY_CORS_HEADERS_MAX]; /* lower-case field names */
    uint32_t expose_headers_count;
    int64_t max_age_s; /* Access-Control-Max-Age; -1: not sent */
    bool allow_credentials;
    /* a preflight asking Access-Control-Request-Private-Network: true gets
     * Access-Control-Allow-Private-Network: true (the Private Network Access draft) */
    bool allow_private_network;
} keel_proxy_cors_t;

/*
 * A weighted route's progressive rollout (docs/proxy.md, "Progressive rollout"): the canary, one
 * of the route's weighted clusters, gets the weight of core/rollout's current step in percent;
 * the other clusters share the rest in the proportion of their configured weights. Steps and
 * ranges are checked with core/rollout's limits, so keel_rollout_init() accepts what loads.
 */
/*
 * Hedged requests (docs/proxy.md, "Hedged requests"; Envoy's hedge_policy, gRPC's hedging):
 * when the first attempt has no response head after delay_ms, a second attempt goes to another
 * host and the first head wins. At most one hedge per request; it is an attempt (counted
 * against retry.attempts_max) and a retry for the retry budget.
 */
#define KEEL_PROXY_HEDGE_DELAY_MS_MAX 60000u
typedef struct keel_proxy_hedge {
    bool enabled;
    int line;
    keel_ms_t delay_ms; /* 1..KEEL_PROXY_HEDGE_DELAY_MS_MAX, required */
} keel_proxy_hedge_t;

typedef struct keel_proxy_rollout {
    bool enabled; /* a `rollout:` section without `enabled: false` */
    int line;     /* of the section */
    char *canary_name;
    int canary_line;
    int steps_line;
    uint32_t canary;        /* its slot in the route's clusters */
    uint32_t others_weight; /* the configured weights of the route's other clusters, added */
    keel_rollout_config_t core;
} keel_proxy_rollout_t;

typedef struct keel_proxy_route {
    char *name;
    int line;
    /* match */
    char *listener;      /* the listener the request came in on (by name); NULL: any */
    uint32_t listener_1; /* 1 + its index, resolved; 0: any */
    char *host;          /* lower-case, no port; NULL: any */
    keel_proxy_path_kind_t path_kind;
    char *path;
    regex_t path_regex; /* PATH_REGEX */
    char *methods[KEEL_PROXY_METHODS_MAX];
    uint32_t methods_count;
    keel_proxy_field_match_t headers[KEEL_PROXY_MATCH_FIELDS_MAX];
    uint32_t headers_count;
    keel_proxy_field_match_t query[KEEL_PROXY_MATCH_FIELDS_MAX];
    uint32_t query_count;
    /* action */
    keel_proxy_action_t action;
    keel_proxy_weighted_t clusters[KEEL_PROXY_WEIGHTED_MAX]; /* one for `cluster:` */
    uint32_t clusters_count;
    uint32_t weight_total;
    char *rewrite_prefix; /* replaces a matched PATH_PREFIX */
    int direct_status;
    char *direct_body;
    char *direct_content_type;
    int redirect_status;
    char *redirect_location;
    keel_proxy_aggregate_t *aggregate; /* ACTION_AGGREGATE */
    keel_proxy_header_edit_t req_add[KEEL_PROXY_HEADER_EDITS_MAX];
    uint32_t req_add_count;
    keel_proxy_header_edit_t req_remove[KEEL_PROXY_HEADER_EDITS_MAX];
    uint32_t req_remove_count;
    keel_proxy_header_edit_t resp_add[KEEL_PROXY_HEADER_EDITS_MAX];
    uint32_t resp_add_count;
    keel_proxy_header_edit_t resp_remove[KEEL_PROXY_HEADER_EDITS_MAX];
    uint32_t resp_remove_count;
    /* policies */
    keel_ms_t timeout_ms;         /* request start to the response head; 0 = none */
    keel_ms_t per_try_timeout_ms; /* one attempt, connect to the response head; 0 = none */
    keel_proxy_retry_t retry;
    keel_proxy_ratelimit_t ratelimits[KEEL_PROXY_ROUTE_RATE_LIMITS_MAX];
    uint32_t ratelimits_count;
    keel_proxy_jwt_req_t jwt;
    keel_proxy_cors_t *cors; /* NULL: no CORS; the config's default when cors_inherited */
    bool cors_inherited;     /* cors is the config's (not the route's to free) */
    bool cors_off;           /* `cors: off`: no CORS, and no default either */
    keel_proxy_rollout_t rollout;
    keel_proxy_hedge_t hedge;
    /* HTTP/1.1 upgrades (docs/proxy.md, "Upgrades"): the protocols (tokens, lower-case) a GET
     * with `Connection: upgrade` may switch to; none: Upgrade is dropped, a 101 is a 502 */
    char *upgrades[KEEL_PROXY_ROUTE_UPGRADES_MAX];
    uint32_t upgrades_count;
    int upgrades_line;
    keel_ms_t upgrade_idle_timeout_ms; /* a tunnel with no byte either way ends; 3600000 */
} keel_proxy_route_t;

#define KEEL_PROXY_SIDECAR_TAGS_MAX 16u
#define KEEL_PROXY_SIDECAR_META_MAX 16u /* key/value pairs */

/*
 * Sidecar mode (docs/proxy.md, "Sidecar"): the proxy runs beside one app, registers it in keel
 * server's registry under `service`, checks it (health) and keeps the registration's TTL check
 * passing, warning or critical by the check's verdict, and deregisters it on SIGTERM before
 * the listeners close. Read at start: a reload may not change it.
 */
typedef struct keel_proxy_sidecar {
    bool enabled;
    int line;
    char *service; /* the registry's service name */
    char *id;      /* instance id; NULL: "<service>-<host>-<port>" of the advertised address */
    char *app;     /* "127.0.0.1:8081": the local app, where the health check goes */
    char *inbound; /* the listener in front of the app (its address is registered); NULL: the
                      first listener */
    uint32_t inbound_listener; /* its index, resolved */
    char *advertise; /* "host:port" registered instead of the inbound listener's address */
    char *tags[KEEL_PROXY_SIDECAR_TAGS_MAX];
    uint32_t tags_count;
    char *meta[2 * KEEL_PROXY_SIDECAR_META_MAX]; /* key, value, key, value ... */
    uint32_t meta_count;                         /* pairs */
    uint32_t weight;                             /* 0: the registry's default (1) */
    char *version;
    char *registry;               /* keel server seeds; NULL: the top-level registry's */
    keel_ms_t ttl_ms;             /* default 5000; heartbeats every ttl_ms / 3 */
    keel_ms_t deregister_wait_ms; /* SIGTERM waits this long for DEREGISTER; default 2000 */
    keel_ms_t drain_ms;           /* then keeps serving this long before closing; 1000 */
    keel_proxy_health_t health;   /* of the app; default a TCP connect every 5 s */
} keel_proxy_sidecar_t;

/*
 * Tracing (docs/proxy.md, "Tracing"): spans of sampled requests, exported as Zipkin v2 JSON to a
 * collector. Absent: no span is recorded (trace context is still propagated).
 */
typedef struct keel_proxy_tracing {
    bool enabled;
    int line;
    char *zipkin;         /* the collector's URL as written: http://host:port[/path] */
    char *zipkin_address; /* its "host:port" (numeric host, or localhost) */
    char *zipkin_path;    /* its path; default /api/v2/spans */
    char *service_name;   /* localEndpoint.serviceName; default "keel-proxy" */
    uint32_t sample_ppm;  /* sample_percent (0..100, to 4 decimals) in parts per million;
                             default 100% */
    uint32_t batch_max;   /* spans per POST, 1..KEEL_PROXY_TRACE_BATCH_MAX; default 100 */
    keel_ms_t flush_ms;   /* a partial batch waits at most this long; default 1000 */
    uint32_t queue_max;   /* spans waiting per worker, batch_max..KEEL_PROXY_TRACE_QUEUE_MAX;
                             default 10000; beyond it spans are dropped (counted) */
    keel_ms_t timeout_ms; /* one POST's deadline; default 5000 */
} keel_proxy_tracing_t;

typedef struct keel_proxy_config {
    keel_proxy_listener_t listeners[KEEL_PROXY_LISTENERS_MAX];
    uint32_t listeners_count;
    char *admin_address; /* NULL: no admin listener */
    keel_proxy_limits_t limits;
    keel_proxy_cluster_t clusters[KEEL_PROXY_CLUSTERS_MAX];
    uint32_t clusters_count;
    keel_proxy_route_t routes[KEEL_PROXY_ROUTES_MAX];
    uint32_t routes_count;
    keel_proxy_jwt_provider_t jwt_providers[KEEL_PROXY_JWT_PROVIDERS_MAX];
    uint32_t jwt_providers_count;
    char *registry;   /* keel server seeds for service clusters; NULL: none */
    char *via;        /* the Via pseudonym; default "keel" */
    char *zone;       /* this proxy's zone: service clusters prefer instances of it (registry meta
                       * zone), others only while none of it is usable; NULL or "": no preference */
    bool access_log;  /* one JSON line per request on the log (stderr); default off */
    uint32_t workers; /* event-loop threads, 1..KEEL_PROXY_WORKERS_MAX; 0 (absent): one per
                       * online core, decided when the proxy starts (docs/proxy.md) */
    keel_proxy_sidecar_t sidecar;
    keel_proxy_tracing_t tracing;
    /* top-level `cors:`: the policy of every route without its own (those routes point here);
     * NULL: none */
    keel_proxy_cors_t *cors;
} keel_proxy_config_t;

/*
 * Parses text[0..len) into *cfg (which the caller provides; it is large, so
 * allocate it). 0 on success: free with keel_proxy_config_free(). KEEL_EINVAL
 * with errs filled (count >= 1) on any error: cfg holds nothing to free then.
 */
int keel_proxy_config_parse(const char *text, size_t len, keel_proxy_config_t *cfg,
                            keel_proxy_errors_t *errs);
void keel_proxy_config_free(keel_proxy_config_t *cfg);
/* Index of the cluster called name, or -1. */
int keel_proxy_config_cluster(const keel_proxy_config_t *cfg, const char *name);

#endif
