/* log.c - JSON-lines formatting and dispatch to the installed sink. */
#include "base/log.h"

#include "base/err.h"
#include "base/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Process-wide logger configuration, set once at start by the runtime. */
static struct {
    keel_log_level_t level;
    keel_log_sink_fn sink;
    keel_log_clock_fn clock;
    void *data;
} logger = {KEEL_LOG_INFO, NULL, NULL, NULL};

static _Thread_local char thread_trace_id[KEEL_LOG_TRACE_ID_BYTES + 1];
static _Thread_local char thread_request_id[KEEL_LOG_REQUEST_ID_BYTES + 1];

#define LOG_FIELDS_WITH_ID_MAX 32u

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void keel_log_configure(keel_log_level_t level, keel_log_sink_fn sink, keel_log_clock_fn clock,
                        void *data)
{
    logger.level = level;
    logger.sink = sink;
    logger.clock = clock;
    logger.data = data;
}

void keel_log_set_level(keel_log_level_t level)
{
    logger.level = level;
}

keel_log_level_t keel_log_get_level(void)
{
    return logger.sink == NULL ? KEEL_LOG_OFF : logger.level;
}

int keel_log_level_parse(const char *s, keel_log_level_t *out)
{
    for (int i = 0; i <= KEEL_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (keel_log_level_t)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = KEEL_LOG_WARN;
        return 0;
    }
    return KEEL_EINVAL;
}

const char *keel_log_level_name(keel_log_level_t level)
{
    return (unsigned)level <= KEEL_LOG_OFF ? level_names[level] : "?";
}

void keel_log_set_request_id(const char *request_id)
{
    snprintf(thread_request_id, sizeof(thread_request_id), "%s", request_id ? request_id : "");
}

void keel_log_set_trace_id(const char *trace_id_hex)
{
    if (trace_id_hex == NULL) {
        thread_trace_id[0] = '\0';
        return;
    }
    snprintf(thread_trace_id, sizeof(thread_trace_id), "%s", trace_id_hex);
}

/* Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil inverse). */
static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t yy = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

size_t keel_log_format(char *out, size_t size, int64_t unix_ms, keel_log_level_t level,
                       const char *msg, const keel_log_field_t *fields, size_t n_fields,
                       const char *trace_id)
{
    keel_jw_t w;
    keel_jw_init(&w, out, size - 1); /* room for '\n' */
    int64_t days = unix_ms >= 0 ? unix_ms / 86400000 : -((-unix_ms + 86399999) / 86400000);
    int64_t ms_of_day = unix_ms - days * 86400000;
    int y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", y, mo, d,
             (int)(ms_of_day / 3600000), (int)(ms_of_day / 60000 % 60),
             (int)(ms_of_day / 1000 % 60), (int)(ms_of_day % 1000));
    keel_jw_raw(&w, "{");
    keel_jw_key(&w, "ts");
    keel_jw_str(&w, ts);
    keel_jw_key(&w, "level");
    keel_jw_str(&w, keel_log_level_name(level));
    keel_jw_key(&w, "msg");
    keel_jw_str(&w, msg);
    for (size_t i = 0; i < n_fields; i++) {
        keel_jw_key(&w, fields[i].key ? fields[i].key : "?");
        if (fields[i].type == KEEL_LOG_F_INT)
            keel_jw_int(&w, fields[i].i);
        else
            keel_jw_str(&w, fields[i].s ? fields[i].s : "");
    }
    if (trace_id != NULL && trace_id[0] != '\0') {
        keel_jw_key(&w, "trace_id");
        keel_jw_str(&w, trace_id);
    }
    size_t n = keel_jw_close_object(&w);
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}

void keel__log(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
               size_t n_fields)
{
    if (logger.sink == NULL || level < logger.level)
        return;
    char line[KEEL_LOG_LINE_BYTES_MAX];
    int64_t now_ms = logger.clock ? logger.clock(logger.data) : 0;
    keel_log_field_t with_id[LOG_FIELDS_WITH_ID_MAX + 1];
    if (thread_request_id[0] != '\0' && n_fields <= LOG_FIELDS_WITH_ID_MAX) {
        if (n_fields > 0)
            memcpy(with_id, fields, n_fields * sizeof(*fields));
        with_id[n_fields++] = KF_STR("request_id", thread_request_id);
        fields = with_id;
    }
    size_t n =
        keel_log_format(line, sizeof(line), now_ms, level, msg, fields, n_fields, thread_trace_id);
    logger.sink(logger.data, line, n);
}
