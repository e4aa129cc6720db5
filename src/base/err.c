/* err.c - text for keel error codes. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const err_text[KEEL__EIDX_COUNT] = {
#define KEEL__ERR_TEXT(name, msg) [KEEL__EIDX_##name] = msg,
    KEEL_ERRNO_MAP(KEEL__ERR_TEXT)
#undef KEEL__ERR_TEXT
};

static const char *const err_names[KEEL__EIDX_COUNT] = {
#define KEEL__ERR_NAME(name, msg) [KEEL__EIDX_##name] = "KEEL_E" #name,
    KEEL_ERRNO_MAP(KEEL__ERR_NAME)
#undef KEEL__ERR_NAME
};

const char *keel_strerror(int err)
{
    if (err == 0)
        return "success";
    int idx = -err - 1;
    if (idx < 0 || idx >= KEEL__EIDX_COUNT)
        return "unknown error";
    return err_text[idx];
}

const char *keel_err_name(int err)
{
    if (err == 0)
        return "KEEL_OK";
    int idx = -err - 1;
    if (idx < 0 || idx >= KEEL__EIDX_COUNT)
        return "KEEL_EUNKNOWN";
    return err_names[idx];
}

int keel_errf(keel_errmsg_t *msg, int err, const char *fmt, ...)
{
    if (msg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg->text, sizeof(msg->text), fmt, ap);
        va_end(ap);
    }
    return err;
}
