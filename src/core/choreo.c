/* choreo.c - choreographed sagas, the pure part: the event codec, rule checks and verdicts. */
#include "core/choreo.h"

#include <assert.h>
#include <string.h>

/* n bytes of [A-Za-z0-9_.-] (and ':' when colon), 1..bytes_max of them. Checked on lengths,
 * not on a C string, so that a NUL inside a name is refused rather than ending it early. */
static bool name_valid_n(const char *s, size_t n, size_t bytes_max, bool colon)
{
    if (n == 0 || n > bytes_max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-' || (colon && c == ':');
        if (!ok)
            return false;
    }
    return true;
}

static bool name_valid(const char *s, size_t bytes_max, bool colon)
{
    return name_valid_n(s, strnlen(s, bytes_max + 1), bytes_max, colon);
}

bool keel_choreo_type_valid(const char *s)
{
    return s != NULL && name_valid(s, KEEL_CHOREO_TYPE_BYTES_MAX, false);
}

bool keel_choreo_saga_valid(const char *s)
{
    return s != NULL && name_valid(s, KEEL_CHOREO_SAGA_BYTES_MAX, true);
}

size_t keel_choreo_event_size(size_t type_len, size_t saga_len, size_t data_len)
{
    return type_len + 1 + saga_len + 1 + data_len;
}

size_t keel_choreo_event_encode(const char *type, const char *saga, const void *data,
                                size_t data_len, uint8_t *out, size_t cap)
{
    if (!keel_choreo_type_valid(type) || !keel_choreo_saga_valid(saga) ||
        data_len > KEEL_CHOREO_DATA_BYTES_MAX)
        return 0;
    size_t tl = strlen(type), sl = strlen(saga), n = keel_choreo_event_size(tl, sl, data_len);
    if (n > cap)
        return 0;
    memcpy(out, type, tl);
    out[tl] = ' ';
    memcpy(out + tl + 1, saga, sl);
    out[tl + 1 + sl] = '\n';
    if (data_len > 0)
        memcpy(out + tl + sl + 2, data, data_len);
    assert(n <= KEEL_CHOREO_EVENT_BYTES_MAX);
    return n;
}

/* Copies p[0..n) into out (cap bytes) as a C string if it is a valid name. */
static bool take_name(const uint8_t *p, size_t n, char *out, size_t cap, bool saga)
{
    size_t max = saga ? KEEL_CHOREO_SAGA_BYTES_MAX : KEEL_CHOREO_TYPE_BYTES_MAX;
    if (n >= cap || !name_valid_n((const char *)p, n, max, saga))
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

int keel_choreo_event_decode(const uint8_t *p, size_t n, keel_choreo_event_t *ev,
                             keel_errmsg_t *msg)
{
    memset(ev, 0, sizeof(*ev));
    const uint8_t *sp =
        memchr(p, ' ', n < KEEL_CHOREO_TYPE_BYTES_MAX + 1 ? n : KEEL_CHOREO_TYPE_BYTES_MAX + 1);
    if (sp == NULL || !take_name(p, (size_t)(sp - p), ev->type, sizeof(ev->type), false))
        return keel_errf(msg, KEEL_EPROTO, "choreo event: no valid type before the space");
    const uint8_t *s0 = sp + 1;
    size_t left = n - (size_t)(s0 - p);
    const uint8_t *lf = memchr(
        s0, '\n', left < KEEL_CHOREO_SAGA_BYTES_MAX + 1 ? left : KEEL_CHOREO_SAGA_BYTES_MAX + 1);
    if (lf == NULL || !take_name(s0, (size_t)(lf - s0), ev->saga, sizeof(ev->saga), true))
        return keel_errf(msg, KEEL_EPROTO, "choreo event %s: no valid saga id before the newline",
                         ev->type);
    ev->data = lf + 1;
    ev->data_len = n - (size_t)(ev->data - p);
    if (ev->data_len > KEEL_CHOREO_DATA_BYTES_MAX)
        return keel_errf(msg, KEEL_EPROTO, "choreo event %s: data of %zu bytes is over %u",
                         ev->type, ev->data_len, KEEL_CHOREO_DATA_BYTES_MAX);
    return 0;
}

static int rule_check(const keel_choreo_def_t *d, size_t i, keel_errmsg_t *msg)
{
    const keel_choreo_rule_t *r = &d->rules[i];
    if (!keel_choreo_type_valid(r->on))
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: rule %zu: bad event type", d->name, i);
    for (size_t j = 0; j < i; j++)
        if (strcmp(d->rules[j].on, r->on) == 0)
            return keel_errf(msg, KEEL_EINVAL, "choreo %s: two rules on %s", d->name, r->on);
    if (r->emit_ok != NULL && !keel_choreo_type_valid(r->emit_ok))
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: on %s: bad emit_ok", d->name, r->on);
    if (r->kind == KEEL_CHOREO_ACTION) {
        if (!keel_choreo_type_valid(r->emit_fail))
            return keel_errf(msg, KEEL_EINVAL,
                             "choreo %s: on %s: an action needs a valid emit_fail (its refusal "
                             "is what starts the compensations)",
                             d->name, r->on);
    } else if (r->kind == KEEL_CHOREO_COMPENSATION) {
        if (r->emit_fail != NULL)
            return keel_errf(msg, KEEL_EINVAL,
                             "choreo %s: on %s: a compensation cannot fail, so no emit_fail",
                             d->name, r->on);
    } else {
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: on %s: bad kind", d->name, r->on);
    }
    if (r->retry_for_ms < 0 || r->retry_for_ms > KEEL_CHOREO_RETRY_FOR_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL,
                         "choreo %s: on %s: retry_for_ms 0 (the default) or 1 to %lld", d->name,
                         r->on, (long long)KEEL_CHOREO_RETRY_FOR_MS_MAX);
    return 0;
}

int keel_choreo_def_validate(const keel_choreo_def_t *d, keel_errmsg_t *msg)
{
    if (d->name == NULL || !name_valid(d->name, KEEL_CHOREO_NAME_BYTES_MAX, false))
        return keel_errf(msg, KEEL_EINVAL,
                         "choreo: bad participant name (1 to %u bytes of "
                         "[A-Za-z0-9_.-])",
                         KEEL_CHOREO_NAME_BYTES_MAX);
    if (d->rules_n == 0 || d->rules_n > KEEL_CHOREO_RULES_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: %zu rules (1 to %u)", d->name, d->rules_n,
                         KEEL_CHOREO_RULES_MAX);
    if (d->attempts_max == 0 || d->attempts_max > KEEL_CHOREO_ATTEMPTS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: attempts_max %u (1 to %u)", d->name,
                         d->attempts_max, KEEL_CHOREO_ATTEMPTS_MAX);
    if (d->backoff_base_ms <= 0 || d->backoff_cap_ms < d->backoff_base_ms)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: backoff needs 0 < base <= cap", d->name);
    if (d->retry_for_ms <= 0 || d->retry_for_ms > KEEL_CHOREO_RETRY_FOR_MS_MAX)
        return keel_errf(msg, KEEL_EINVAL, "choreo %s: retry_for_ms 1 to %lld", d->name,
                         (long long)KEEL_CHOREO_RETRY_FOR_MS_MAX);
    for (size_t i = 0; i < d->rules_n; i++) {
        int rc = rule_check(d, i, msg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

const keel_choreo_rule_t *keel_choreo_rule_for(const keel_choreo_def_t *d, const char *type)
{
    for (size_t i = 0; i < d->rules_n; i++)
        if (strcmp(d->rules[i].on, type) == 0)
            return &d->rules[i];
    return NULL;
}

keel_ms_t keel_choreo_retry_for_ms(const keel_choreo_def_t *d, const keel_choreo_rule_t *r)
{
    return r->retry_for_ms > 0 ? r->retry_for_ms : d->retry_for_ms;
}

bool keel_choreo_retry_expired(const keel_choreo_def_t *d, const keel_choreo_rule_t *r,
                               keel_ms_t failing_ms)
{
    assert(failing_ms >= 0);
    return failing_ms >= keel_choreo_retry_for_ms(d, r);
}

keel_choreo_verdict_t keel_choreo_verdict(const keel_choreo_def_t *d, const keel_choreo_rule_t *r,
                                          int rc, uint32_t attempts, keel_ms_t failing_ms)
{
    assert(attempts >= 1);
    if (rc == 0)
        return KEEL_CHOREO_COMMIT_OK;
    if (r->kind == KEEL_CHOREO_ACTION && (rc == KEEL_EREJECTED || attempts >= d->attempts_max))
        return KEEL_CHOREO_COMMIT_FAIL;
    if (keel_choreo_retry_expired(d, r, failing_ms))
        return KEEL_CHOREO_DEAD_LETTER;
    return KEEL_CHOREO_RETRY;
}

keel_ms_t keel_choreo_backoff_ms(const keel_choreo_def_t *d, uint32_t attempts, double jitter_0_1)
{
    assert(attempts >= 1 && jitter_0_1 >= 0.0 && jitter_0_1 < 1.0);
    keel_ms_t t = d->backoff_base_ms;
    for (uint32_t i = 1; i < attempts && t < d->backoff_cap_ms; i++)
        t *= 2;
    if (t > d->backoff_cap_ms)
        t = d->backoff_cap_ms;
    return t / 2 + (keel_ms_t)((double)(t - t / 2) * jitter_0_1);
}

int keel_choreo_deadline_of(const uint8_t *id, size_t n, keel_ms_t saga_deadline_ms,
                            keel_ms_t *deadline_ms)
{
    assert(saga_deadline_ms > 0);
    keel_ms_t ms = 0;
    size_t i = 0;
    for (; i < n && id[i] >= '0' && id[i] <= '9'; i++) {
        if (ms > (INT64_MAX - (id[i] - '0')) / 10)
            return KEEL_EPROTO;
        ms = ms * 10 + (id[i] - '0');
    }
    if (i == 0 || i == n || id[i] != '-' || i + 1 == n)
        return KEEL_EPROTO;
    for (size_t j = i + 1; j < n; j++)
        if (id[j] < '0' || id[j] > '9')
            return KEEL_EPROTO;
    *deadline_ms = ms > INT64_MAX - saga_deadline_ms ? INT64_MAX : ms + saga_deadline_ms;
    return 0;
}
